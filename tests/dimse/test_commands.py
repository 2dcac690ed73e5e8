# Tests of the command set codec (PS3.7 6.3.1, Annex E) and of the message classes.
from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.dimse.commands import (
    ELEMENT_TAG,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRSP,
    CGetRSP,
    CMoveRQ,
    CommandField,
    CommandSetError,
    CStoreRQ,
    CStoreRSP,
    NActionRQ,
    NGetRQ,
    NGetRSP,
    Priority,
    decode_command,
    encode_command,
    is_request,
    message_name,
)
from node.dimse.messages import MESSAGE_CLASS, RESPONSE_CLASS, DimseMessage
from node.ul.errors import AbortSource, LocalProtocolError, RemoteProtocolError
from tests.dimse.strategies import message_strategy, messages

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def element(number: int, value: bytes, group: int = 0) -> bytes:
    """One Implicit VR Little Endian element, built by hand."""
    return struct.pack("<HHI", group, number, len(value)) + value


def us(number: int, value: int) -> bytes:
    return element(number, struct.pack("<H", value))


def command_set(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return element(0x0000, struct.pack("<I", len(body))) + body


def store_rq_elements(**replace: bytes | None) -> list[bytes]:
    """A C-STORE-RQ as elements, each replaceable (or removable with None) by tag name."""
    parts = {
        "0002": element(0x0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
        "0100": us(0x0100, 0x0001),
        "0110": us(0x0110, 7),
        "0700": us(0x0700, 0),
        "0800": us(0x0800, 0x0001),
        "1000": element(0x1000, b"1.2.3.4\0"),
    }
    parts.update(replace)  # type: ignore[arg-type]
    return [value for value in parts.values() if value is not None]


def decode_error(data: bytes) -> CommandSetError:
    with pytest.raises(CommandSetError) as caught:
        decode_command(data)
    return caught.value


# --- round trips -------------------------------------------------------------------------


@given(messages)
def test_every_message_survives_a_round_trip(message: DimseMessage) -> None:
    data = encode_command(message)
    assert decode_command(data) == message
    assert len(data) % 2 == 0
    group_length = struct.unpack_from("<HHII", data)
    assert group_length == (0, 0, 4, len(data) - 12)


@pytest.mark.parametrize("cls", list(MESSAGE_CLASS.values()), ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_each_message_class_round_trips(cls: type[DimseMessage], data: st.DataObject) -> None:
    message = data.draw(message_strategy(cls))
    decoded = decode_command(encode_command(message))
    assert type(decoded) is cls
    assert decoded == message


# --- known byte layouts ------------------------------------------------------------------


def test_c_echo_rq_bytes_match_the_hand_computed_layout() -> None:
    expected = bytes.fromhex(
        "00000000"
        "04000000"
        "38000000"  # (0000,0000) UL 56
        "00000200"
        "12000000"
        "312e322e3834302e31303030382e312e3100"  # (0000,0002) UI + NUL
        "00000001"
        "02000000"
        "3000"  # (0000,0100) C-ECHO-RQ
        "00001001"
        "02000000"
        "0100"  # (0000,0110) Message ID 1
        "00000008"
        "02000000"
        "0101"  # (0000,0800) no data set
    )
    assert encode_command(CEchoRQ(message_id=1)) == expected
    assert decode_command(expected) == CEchoRQ(message_id=1)


def test_c_store_rsp_bytes_match_the_hand_computed_layout() -> None:
    response = CStoreRSP(
        message_id_being_responded_to=5,
        status=0x0000,
        affected_sop_class_uid=CT_IMAGE_STORAGE,
        affected_sop_instance_uid="1.2.3.4",
    )
    expected = bytes.fromhex(
        "00000000"
        "04000000"
        "5a000000"  # (0000,0000) UL 90
        "00000200"
        "1a000000"
        "312e322e3834302e31303030382e352e312e342e312e312e3200"
        "00000001"
        "02000000"
        "0180"  # (0000,0100) C-STORE-RSP
        "00002001"
        "02000000"
        "0500"  # (0000,0120) responding to 5
        "00000008"
        "02000000"
        "0101"  # (0000,0800) no data set
        "00000009"
        "02000000"
        "0000"  # (0000,0900) success
        "00000010"
        "08000000"
        "312e322e332e3400"  # (0000,1000) UI + NUL
    )
    assert encode_command(response) == expected
    assert decode_command(expected) == response


def test_data_set_present_is_encoded_as_0001h_like_dcmtk() -> None:
    data = encode_command(
        CFindRSP(message_id_being_responded_to=1, status=0xFF00, has_dataset=True)
    )
    assert us(0x0800, 0x0001) in data


def test_any_data_set_type_other_than_0101h_means_present() -> None:
    data = command_set(*store_rq_elements(**{"0800": us(0x0800, 0xFEFE)}))
    assert decode_command(data).has_dataset is True


def test_text_padding_is_space_for_ae_and_lo() -> None:
    move = encode_command(
        CMoveRQ(message_id=3, affected_sop_class_uid="1.2", move_destination="ABC")
    )
    assert element(0x0600, b"ABC ") in move
    response = encode_command(
        CEchoRSP(message_id_being_responded_to=3, status=0, error_comment="bad")
    )
    assert element(0x0902, b"bad ") in response


def test_attribute_lists_are_encoded_as_group_element_pairs() -> None:
    request = NGetRQ(
        message_id=2,
        requested_sop_class_uid="1.2",
        requested_sop_instance_uid="1.2.3",
        attribute_identifier_list=(0x00100010, 0x7FE00010),
    )
    data = encode_command(request)
    assert element(0x1005, bytes.fromhex("10001000e07f1000")) in data
    assert decode_command(data) == request


def test_error_comment_is_cut_to_64_characters() -> None:
    response = CStoreRSP(message_id_being_responded_to=1, status=0xC000, error_comment="x" * 80)
    decoded = decode_command(encode_command(response))
    assert isinstance(decoded, CStoreRSP)
    assert decoded.error_comment == "x" * 64


# --- decoding leniency -------------------------------------------------------------------


def test_padding_is_removed_from_text_values() -> None:
    data = command_set(
        element(0x0002, b"1.2.840.10008.5.1.4.1.1.2 "),  # space-padded UID, as some SCUs do
        us(0x0100, 0x0021),
        us(0x0110, 9),
        element(0x0600, b" DEST   "),
        us(0x0700, 0),
        us(0x0800, 0x0001),
    )
    decoded = decode_command(data)
    assert decoded == CMoveRQ(
        message_id=9, affected_sop_class_uid=CT_IMAGE_STORAGE, move_destination="DEST"
    )


def test_unknown_and_retired_group_0000_elements_are_ignored() -> None:
    elements = store_rq_elements()
    elements.insert(0, element(0x0001, struct.pack("<I", 1234)))  # retired Length to End
    elements.insert(6, element(0x0850, struct.pack("<H", 3)))  # retired Number of Matches
    decoded = decode_command(command_set(*elements))
    assert isinstance(decoded, CStoreRQ)
    assert decoded.message_id == 7


def test_known_elements_that_do_not_belong_to_the_message_are_ignored() -> None:
    data = command_set(
        element(0x0002, b"1.2.840.10008.1.1\0"),
        us(0x0100, 0x0030),
        us(0x0110, 4),
        us(0x0700, 2),  # Priority is not part of C-ECHO-RQ
        us(0x0800, 0x0101),
        us(0x0900, 0),  # nor is Status
    )
    assert decode_command(data) == CEchoRQ(message_id=4)


def test_command_group_length_value_is_not_trusted() -> None:
    data = bytearray(encode_command(CEchoRQ(message_id=1)))
    data[8:12] = struct.pack("<I", 9999)
    assert decode_command(bytes(data)) == CEchoRQ(message_id=1)


def test_a_command_set_without_group_length_decodes() -> None:
    data = b"".join(store_rq_elements())
    assert isinstance(decode_command(data), CStoreRQ)


# --- decoding errors ---------------------------------------------------------------------


def test_command_set_error_is_a_remote_protocol_error_from_the_service_user() -> None:
    error = decode_error(b"\x00\x00")
    assert isinstance(error, RemoteProtocolError)
    assert error.source == AbortSource.SERVICE_USER


def test_truncated_element_header() -> None:
    error = decode_error(command_set(*store_rq_elements()) + b"\x00\x00\x01\x00")
    assert error.status == 0x0110
    assert "truncated" in str(error)
    assert error.message_id == 7
    assert error.command_field == 0x0001
    assert error.has_dataset is True
    assert error.can_answer


def test_element_of_another_group() -> None:
    error = decode_error(command_set(*store_rq_elements(), element(0x0010, b"AB", group=8)))
    assert error.status == 0x0110
    assert "(0008,0010) is not in group 0000" in str(error)


def test_elements_out_of_order() -> None:
    elements = store_rq_elements()
    elements[0], elements[1] = elements[1], elements[0]
    error = decode_error(command_set(*elements))
    assert "out of ascending tag order" in str(error)
    assert error.message_id is None
    assert not error.can_answer


def test_duplicate_element() -> None:
    elements = store_rq_elements()
    error = decode_error(command_set(*elements[:3], elements[2], *elements[3:]))
    assert "(0000,0110) out of ascending tag order" in str(error)


def test_odd_length() -> None:
    error = decode_error(command_set(*store_rq_elements(**{"1000": element(0x1000, b"1.2")})))
    assert "odd length 3" in str(error)
    assert error.status == 0x0110


def test_undefined_length_is_refused() -> None:
    data = command_set(us(0x0100, 1)) + struct.pack("<HHI", 0, 0x1000, 0xFFFFFFFF)
    assert "odd length" in str(decode_error(data))


def test_length_past_the_end() -> None:
    data = command_set(*store_rq_elements()) + struct.pack("<HHI", 0, 0x1030, 16) + b"AB"
    error = decode_error(data)
    assert "runs past the end" in str(error)
    assert error.message_id == 7


@pytest.mark.parametrize("number", [0x0110, 0x0800])
def test_unsigned_short_of_the_wrong_length(number: int) -> None:
    replacement = element(number, b"\x01\x00\x00\x00")
    error = decode_error(command_set(*store_rq_elements(**{f"{number:04x}": replacement})))
    assert f"US element (0000,{number:04X}) has length 4" in str(error)
    assert error.status == 0x0110


def test_attribute_tag_of_the_wrong_length() -> None:
    data = command_set(
        us(0x0100, 0x8001),
        us(0x0120, 1),
        us(0x0800, 0x0101),
        us(0x0900, 0xC000),
        element(0x0901, b"\x10\x00"),
    )
    error = decode_error(data)
    assert "AT element (0000,0901) has length 2" in str(error)


def test_missing_command_field() -> None:
    error = decode_error(command_set(us(0x0110, 1), us(0x0800, 0x0101)))
    assert error.status == 0x0211
    assert "no Command Field" in str(error)
    assert error.message_id == 1
    assert error.command_field is None
    assert not error.can_answer


def test_empty_command_set() -> None:
    assert decode_error(b"").status == 0x0211


def test_unknown_command_field() -> None:
    error = decode_error(command_set(us(0x0100, 0x0042), us(0x0110, 12), us(0x0800, 0x0101)))
    assert error.status == 0x0211
    assert "unknown Command Field" in str(error)
    assert error.command_field == 0x0042
    assert error.message_id == 12
    assert not error.can_answer


def test_missing_mandatory_element() -> None:
    error = decode_error(command_set(*store_rq_elements(**{"1000": None})))
    assert error.status == 0x0120
    assert error.offending_element == (ELEMENT_TAG["affected_sop_instance_uid"],)
    assert "C-STORE-RQ lacks mandatory (0000,1000) Affected SOP Instance UID" in str(error)
    assert error.message_id == 7
    assert error.command_field == 0x0001
    assert error.has_dataset is True
    assert error.can_answer


def test_missing_data_set_type_and_priority_are_both_reported() -> None:
    error = decode_error(command_set(*store_rq_elements(**{"0700": None, "0800": None})))
    assert error.offending_element == (0x0700, 0x0800)
    assert error.has_dataset is None


def test_missing_message_id_leaves_the_error_unanswerable() -> None:
    error = decode_error(command_set(*store_rq_elements(**{"0110": None})))
    assert error.offending_element == (0x0110,)
    assert error.message_id is None
    assert not error.can_answer


def test_errors_in_responses_and_cancel_cannot_be_answered() -> None:
    response = decode_error(command_set(us(0x0100, 0x8030), us(0x0120, 3), us(0x0800, 0x0101)))
    assert response.offending_element == (0x0900,)
    assert not response.can_answer
    cancel = decode_error(command_set(us(0x0100, 0x0FFF), us(0x0800, 0x0101)))
    assert cancel.offending_element == (0x0120,)
    assert not cancel.can_answer


# --- encoding errors ---------------------------------------------------------------------


def test_encoding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str is not a DIMSE message"):
        encode_command("C-ECHO")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (CEchoRQ(message_id=70000), "message_id = 70000"),
        (CEchoRQ(message_id=1, affected_sop_class_uid="1." * 40), "longer than 64"),
        (CMoveRQ(message_id=1, affected_sop_class_uid="1", move_destination="A" * 17), "16"),
        (CEchoRQ(message_id=1, affected_sop_class_uid="1.\u0394"), "affected_sop_class_uid"),
        (
            NGetRSP(
                message_id_being_responded_to=1, status=0, attribute_identifier_list=(1 << 32,)
            ),
            "attribute_identifier_list",
        ),
    ],
)
def test_values_that_cannot_be_encoded(message: DimseMessage, problem: str) -> None:
    with pytest.raises(LocalProtocolError, match=problem):
        encode_command(message)


# --- message classes ---------------------------------------------------------------------


def test_command_fields_follow_ps3_7_annex_e() -> None:
    assert CStoreRQ.COMMAND_FIELD == 0x0001
    assert CCancelRQ.COMMAND_FIELD == 0x0FFF
    assert NActionRQ.COMMAND_FIELD == 0x0130
    for request_field, response_class in RESPONSE_CLASS.items():
        assert request_field | 0x8000 == response_class.COMMAND_FIELD
        assert MESSAGE_CLASS[request_field].is_request
        assert not response_class.is_request
    assert len(MESSAGE_CLASS) == len(CommandField) == 23


def test_is_request_and_names() -> None:
    assert is_request(CEchoRQ(message_id=1))
    assert not is_request(CEchoRSP(message_id_being_responded_to=1, status=0))
    assert is_request(CCancelRQ(message_id_being_responded_to=1))
    assert message_name(0x8021) == "C-MOVE-RSP"
    assert message_name(0x0FFF) == "C-CANCEL-RQ"
    assert message_name(0x1234) == "unknown command 0x1234"


def test_defaults_follow_the_common_use() -> None:
    store = CStoreRQ(message_id=1, affected_sop_class_uid="1", affected_sop_instance_uid="2")
    assert store.has_dataset
    assert store.priority == Priority.MEDIUM
    assert not CEchoRQ(message_id=1).has_dataset
    assert CEchoRQ(message_id=1).affected_sop_class_uid == "1.2.840.10008.1.1"
    assert not CGetRSP(message_id_being_responded_to=1, status=0xFF00).has_dataset


def test_messages_are_frozen_and_slotted() -> None:
    message = CEchoRQ(message_id=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.message_id = 2  # type: ignore[misc]
    assert not hasattr(message, "__dict__")
    assert dataclasses.replace(message, message_id=2).message_id == 2
