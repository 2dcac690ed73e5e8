# Every error branch of the PDU codec (node/ul/items.py, node/ul/pdu.py; PS3.8 9.3): bad peer
# bytes raise RemoteProtocolError naming the A-ABORT reason (PS3.8 Table 9-26), and never any
# other exception, whatever the bytes.
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.ul.errors import (
    AbortReason,
    AbortSource,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from node.ul.items import (
    ApplicationContextItem,
    ImplementationClassUIDSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    UnknownSubItem,
    UserInformationItem,
    decode_presentation_context_ac,
    decode_presentation_context_rq,
    decode_user_information,
    iter_items,
)
from node.ul.pdu import (
    MAXIMUM_ASSOCIATE_PDU_LENGTH,
    PDU,
    UNLIMITED_PDU_CEILING,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
    decode_pdu,
    pdu_length,
)
from tests.fixtures import dcmtk_pdus

if TYPE_CHECKING:
    from collections.abc import Callable

INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER
UNRECOGNIZED = AbortReason.UNRECOGNIZED_PDU_PARAMETER
FIXTURES = dcmtk_pdus()
PDU_TYPES = (AssociateRQ, AssociateAC, AssociateRJ, PDataTF, ReleaseRQ, ReleaseRP, Abort)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
APPLICATION = ApplicationContextItem().encode()
USER = UserInformationItem((MaximumLengthSubItem(16384),)).encode()
CONTEXT_RQ = PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT_VR_LE,)).encode()
CONTEXT_AC = PresentationContextItemAC(1, 0, IMPLICIT_VR_LE).encode()


def item(item_type: int, body: bytes, first_reserved: int = 0) -> bytes:
    return bytes((item_type, first_reserved)) + struct.pack(">H", len(body)) + body


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxI", pdu_type, len(body)) + body


def associate(pdu_type: int, *items: bytes, version: int = 1) -> bytes:
    fixed = struct.pack(">HH16s16s32x", version, 0, b"CALLED".ljust(16), b"CALLING".ljust(16))
    return pdu(pdu_type, fixed + b"".join(items))


def u16(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def expect(reason: AbortReason, match: str, call: Callable[..., object], *args: object) -> None:
    """Assert that call(*args) raises RemoteProtocolError(reason) matching `match`."""
    with pytest.raises(RemoteProtocolError, match=match) as caught:
        call(*args)
    assert caught.value.reason == reason
    assert caught.value.source == AbortSource.SERVICE_PROVIDER


# --- errors.py -------------------------------------------------------------------------------


def test_remote_protocol_error_defaults_and_hierarchy() -> None:
    error = RemoteProtocolError("bad")
    assert str(error) == "bad"
    assert error.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert error.source == AbortSource.SERVICE_PROVIDER
    custom = RemoteProtocolError("odd", AbortReason.UNEXPECTED_PDU, AbortSource.SERVICE_USER)
    assert (custom.reason, custom.source) == (AbortReason.UNEXPECTED_PDU, AbortSource.SERVICE_USER)
    assert isinstance(error, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)


def test_abort_enums_follow_table_9_26() -> None:
    assert [int(s) for s in AbortSource] == [0, 1, 2]
    assert [int(r) for r in AbortReason] == list(range(7))


# --- PDU header (pdu_length) ------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x05\x00\x00\x00\x00"])
def test_pdu_header_truncated(data: bytes) -> None:
    expect(INVALID, "header truncated", decode_pdu, data)


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0x10, 0x50, 0xFF])
def test_unrecognized_pdu_type(pdu_type: int) -> None:
    header = struct.pack(">BxI", pdu_type, 4)
    expect(AbortReason.UNRECOGNIZED_PDU, f"0x{pdu_type:02X}", pdu_length, header, 0)
    expect(AbortReason.UNRECOGNIZED_PDU, "unrecognized PDU type", decode_pdu, header + bytes(4))


def test_pdata_larger_than_our_maximum_is_refused_from_the_header() -> None:
    header = struct.pack(">BxI", 0x04, 4097)
    assert pdu_length(struct.pack(">BxI", 0x04, 4096), 4096) == 4096
    expect(INVALID, "exceeds the maximum length 4096", pdu_length, header, 4096)
    expect(INVALID, "exceeds the maximum", decode_pdu, header, 4096)


def test_unlimited_maximum_still_has_a_ceiling() -> None:
    assert pdu_length(struct.pack(">BxI", 0x04, UNLIMITED_PDU_CEILING), 0) == UNLIMITED_PDU_CEILING
    header = struct.pack(">BxI", 0x04, UNLIMITED_PDU_CEILING + 1)
    expect(INVALID, f"maximum length {UNLIMITED_PDU_CEILING}", pdu_length, header, 0)
    expect(INVALID, "exceeds", pdu_length, struct.pack(">BxI", 0x04, 0xFFFF_FFFF), 0)


@pytest.mark.parametrize("pdu_type", [0x01, 0x02])
def test_associate_over_one_mebibyte_is_refused_from_the_header(pdu_type: int) -> None:
    limit = MAXIMUM_ASSOCIATE_PDU_LENGTH
    assert limit == 1 << 20
    assert pdu_length(struct.pack(">BxI", pdu_type, limit), 16384) == limit
    header = struct.pack(">BxI", pdu_type, limit + 1)
    expect(INVALID, "A-ASSOCIATE PDU of", pdu_length, header, 16384)
    expect(INVALID, "A-ASSOCIATE PDU of", decode_pdu, header)


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("length", [0, 3, 5, 0xFFFF_FFFF])
def test_fixed_length_pdus_must_be_four(pdu_type: int, length: int) -> None:
    header = struct.pack(">BxI", pdu_type, length)
    expect(INVALID, "expected 4", pdu_length, header, 0)
    expect(INVALID, "expected 4", decode_pdu, header + bytes(min(length, 8)))


@pytest.mark.parametrize("extra", [-1, 1, 100])
def test_pdu_length_must_match_the_bytes_present(extra: int) -> None:
    whole = ReleaseRQ().encode()
    data = whole[:extra] if extra < 0 else whole + bytes(extra)
    expect(INVALID, "length field says 4 bytes", decode_pdu, data)


def test_reserved_fields_are_not_tested() -> None:
    assert decode_pdu(bytes.fromhex("05ff00000004ffffffff")) == ReleaseRQ()
    assert decode_pdu(bytes.fromhex("06ff00000004ffffffff")) == ReleaseRP()
    assert decode_pdu(bytes.fromhex("07ff00000004ffff0206")) == Abort(2, 6)
    assert decode_pdu(bytes.fromhex("03ff00000004ff020203")) == AssociateRJ(2, 2, 3)


# --- P-DATA-TF --------------------------------------------------------------------------------


def pdv(length: int, context_id: int = 1, control: int = 3, data: bytes = b"") -> bytes:
    return struct.pack(">IBB", length, context_id, control) + data


def test_empty_pdata() -> None:
    expect(INVALID, "without any presentation data value", decode_pdu, pdu(0x04, b""))


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x00\x00\x02", b"\x00\x00\x00\x02\x01"])
def test_pdv_header_truncated(tail: bytes) -> None:
    expect(INVALID, "PDV item header truncated", decode_pdu, pdu(0x04, tail))
    whole = pdv(4, data=b"ab")
    expect(INVALID, "PDV item header truncated", decode_pdu, pdu(0x04, whole + tail))


@pytest.mark.parametrize("length", [0, 1])
def test_pdv_length_below_two(length: int) -> None:
    expect(INVALID, f"PDV item length {length} is below 2", decode_pdu, pdu(0x04, pdv(length)))


def test_pdv_length_past_the_pdu() -> None:
    expect(INVALID, "runs past the PDU", decode_pdu, pdu(0x04, pdv(5, data=b"ab")))
    second = pdv(3, data=b"a") + pdv(10, data=b"bc")
    expect(INVALID, "runs past the PDU", decode_pdu, pdu(0x04, second))


def test_pdv_of_two_bytes_is_an_empty_fragment() -> None:
    decoded = decode_pdu(pdu(0x04, pdv(2, 7, 0xFC)))
    assert isinstance(decoded, PDataTF)
    [value] = decoded.items
    assert (value.context_id, value.is_command, value.is_last, value.data) == (7, False, False, b"")


# --- A-ASSOCIATE fixed fields and item order --------------------------------------------------


@pytest.mark.parametrize("pdu_type", [0x01, 0x02])
@pytest.mark.parametrize("size", [0, 4, 67])
def test_associate_shorter_than_fixed_fields(pdu_type: int, size: int) -> None:
    expect(INVALID, "shorter than its fixed fields", decode_pdu, pdu(pdu_type, bytes(size)))


@pytest.mark.parametrize("version", [0, 2, 0xFFFE])
def test_protocol_version_without_bit_zero_is_decoded_for_the_acceptor_to_reject(
    version: int,
) -> None:
    # PS3.8 Table 9-21: the answer is A-ASSOCIATE-RJ (protocol version not supported), which
    # node.acse.negotiation sends; the decoder must not abort instead.
    decoded = decode_pdu(associate(0x01, APPLICATION, CONTEXT_RQ, USER, version=version))
    assert isinstance(decoded, AssociateRQ)
    assert decoded.protocol_version == version


def test_protocol_version_with_bit_zero_and_more_is_accepted() -> None:
    decoded = decode_pdu(associate(0x01, APPLICATION, USER, version=3))
    assert isinstance(decoded, AssociateRQ)
    assert decoded.protocol_version == 3


def test_ae_titles_are_stripped_of_padding_only() -> None:
    decoded = decode_pdu(associate(0x02, APPLICATION, USER))
    assert isinstance(decoded, AssociateAC)
    assert (decoded.called_ae_title, decoded.calling_ae_title) == ("CALLED", "CALLING")
    assert decoded.presentation_contexts == ()


@pytest.mark.parametrize(
    ("pdu_type", "items", "item_type"),
    [
        (0x01, (APPLICATION, APPLICATION, USER), 0x10),
        (0x01, (CONTEXT_RQ, APPLICATION, USER), 0x20),
        (0x01, (APPLICATION, CONTEXT_RQ, APPLICATION, USER), 0x10),
        (0x01, (USER, APPLICATION), 0x50),
        (0x01, (APPLICATION, USER, CONTEXT_RQ), 0x20),
        (0x01, (APPLICATION, USER, USER), 0x50),
        (0x01, (APPLICATION, USER, APPLICATION), 0x10),
        (0x02, (APPLICATION, USER, CONTEXT_AC), 0x21),
        (0x02, (CONTEXT_AC, APPLICATION, USER), 0x21),
    ],
)
def test_duplicate_or_out_of_order_items(
    pdu_type: int, items: tuple[bytes, ...], item_type: int
) -> None:
    message = f"item 0x{item_type:02X} out of order or repeated"
    expect(UNEXPECTED, message, decode_pdu, associate(pdu_type, *items))


@pytest.mark.parametrize(
    ("pdu_type", "stray"),
    [
        (0x01, CONTEXT_AC),
        (0x02, CONTEXT_RQ),
        (0x01, item(0x30, b"1.2")),
        (0x01, item(0x51, bytes(4))),
        (0x02, item(0x00, b"")),
        (0x02, item(0xFF, b"x")),
    ],
)
def test_unknown_items_in_associate(pdu_type: int, stray: bytes) -> None:
    message = f"unrecognized item 0x{stray[0]:02X}"
    expect(UNRECOGNIZED, message, decode_pdu, associate(pdu_type, APPLICATION, stray, USER))


@pytest.mark.parametrize("pdu_type", [0x01, 0x02])
def test_missing_application_context(pdu_type: int) -> None:
    expect(INVALID, "no application context item", decode_pdu, associate(pdu_type))


@pytest.mark.parametrize(
    ("pdu_type", "context"), [(0x01, CONTEXT_RQ), (0x02, CONTEXT_AC), (0x01, b"")]
)
def test_missing_user_information(pdu_type: int, context: bytes) -> None:
    data = associate(pdu_type, APPLICATION, context)
    expect(INVALID, "no user information item", decode_pdu, data)


@pytest.mark.parametrize(
    "tail",
    [b"\x50", b"\x50\x00\x00", item(0x50, b"")[:-1] + b"\x01", APPLICATION[:-1]],
)
def test_item_run_truncated_inside_associate(tail: bytes) -> None:
    expect(INVALID, "A-ASSOCIATE: item", decode_pdu, associate(0x01, APPLICATION, tail))


# --- iter_items and the u16-prefixed fields ---------------------------------------------------


def test_iter_items_splits_and_checks_lengths() -> None:
    data = memoryview(item(0x51, b"abcd", 7) + item(0x99, b""))
    split = [(t, r, bytes(body)) for t, r, body in iter_items(data, "x")]
    assert split == [(0x51, 7, b"abcd"), (0x99, 0, b"")]
    assert iter_items(memoryview(b""), "x") == []
    expect(INVALID, "x: item header truncated at offset 8", iter_items, data[:-1], "x")
    expect(INVALID, "x: item 0x51 length 4 runs past the end", iter_items, data[:7], "x")


# --- Presentation context items ---------------------------------------------------------------

ABSTRACT = item(0x30, VERIFICATION.encode())
TRANSFER = item(0x40, IMPLICIT_VR_LE.encode())


@pytest.mark.parametrize(
    "decoder", [decode_presentation_context_rq, decode_presentation_context_ac]
)
@pytest.mark.parametrize("size", [0, 1, 3])
def test_presentation_context_too_short(decoder: Callable[..., object], size: int) -> None:
    expect(INVALID, "presentation context item too short", decoder, memoryview(bytes(size)))


@pytest.mark.parametrize(
    ("sub_items", "reason", "match"),
    [
        (ABSTRACT + ABSTRACT + TRANSFER, UNEXPECTED, "context 1: two abstract syntaxes"),
        (ABSTRACT + TRANSFER + item(0x50, b""), UNRECOGNIZED, "unexpected sub-item 0x50"),
        (item(0x21, b"") + ABSTRACT + TRANSFER, UNRECOGNIZED, "unexpected sub-item 0x21"),
        (ABSTRACT, INVALID, "needs one abstract and 1\\+ transfer syntaxes"),
        (TRANSFER, INVALID, "needs one abstract"),
        (b"", INVALID, "needs one abstract"),
        (ABSTRACT + TRANSFER[:-1], INVALID, "presentation context: item 0x40 length"),
        (ABSTRACT + b"\x40\x00", INVALID, "presentation context: item header truncated"),
    ],
)
def test_presentation_context_rq_errors(sub_items: bytes, reason: AbortReason, match: str) -> None:
    body = memoryview(bytes((1, 0, 0, 0)) + sub_items)
    expect(reason, match, decode_presentation_context_rq, body)


def test_presentation_context_rq_keeps_transfer_syntax_order() -> None:
    body = memoryview(
        bytes((9, 0, 0xFF, 0)) + TRANSFER + ABSTRACT + item(0x40, b"1.2.840.10008.1.2.1\0")
    )
    decoded = decode_presentation_context_rq(body)
    assert decoded == PresentationContextItemRQ(
        9, VERIFICATION, (IMPLICIT_VR_LE, "1.2.840.10008.1.2.1")
    )


@pytest.mark.parametrize(
    ("sub_items", "match"),
    [
        (TRANSFER + TRANSFER, "context 3: unexpected sub-item 0x40"),
        (ABSTRACT, "unexpected sub-item 0x30"),
        (TRANSFER + ABSTRACT, "unexpected sub-item 0x30"),
    ],
)
def test_presentation_context_ac_errors(sub_items: bytes, match: str) -> None:
    body = memoryview(bytes((3, 0, 0, 0)) + sub_items)
    expect(UNEXPECTED, match, decode_presentation_context_ac, body)


def test_presentation_context_ac_without_transfer_syntax() -> None:
    decoded = decode_presentation_context_ac(memoryview(bytes((3, 0, 3, 0))))
    assert decoded == PresentationContextItemAC(3, 3, None)
    assert decoded.encode() == item(0x21, bytes((3, 0, 3, 0)))


def test_presentation_context_errors_surface_through_decode_pdu() -> None:
    bad_rq = item(0x20, bytes((1, 0, 0, 0)) + ABSTRACT + ABSTRACT + TRANSFER)
    expect(
        UNEXPECTED, "two abstract syntaxes", decode_pdu, associate(0x01, APPLICATION, bad_rq, USER)
    )
    bad_ac = item(0x21, bytes((1, 0, 0, 0)) + TRANSFER + TRANSFER)
    expect(
        UNEXPECTED, "unexpected sub-item", decode_pdu, associate(0x02, APPLICATION, bad_ac, USER)
    )


# --- User information sub-items ---------------------------------------------------------------


def user(*subs: bytes) -> memoryview:
    return memoryview(b"".join(subs))


@pytest.mark.parametrize(
    ("sub", "match"),
    [
        (item(0x51, bytes(3)), "maximum length sub-item: length 3, expected 4"),
        (item(0x51, bytes(5)), "maximum length sub-item: length 5, expected 4"),
        (item(0x53, bytes(2)), "asynchronous operations window sub-item: length 2"),
        (item(0x53, bytes(6)), "asynchronous operations window sub-item: length 6"),
        (item(0x54, b""), "SCP/SCU role selection: length field truncated"),
        (item(0x54, b"\x00"), "SCP/SCU role selection: length field truncated"),
        (item(0x54, u16(b"1.2")[:-1]), "role selection: length 3 runs past the end"),
        (item(0x54, u16(b"1.2") + b"\x01"), "role selection roles: length 1, expected 2"),
        (item(0x54, u16(b"1.2") + b"\x01\x01\x00"), "roles: length 3, expected 2"),
        (item(0x56, b"\x00"), "SOP class extended negotiation: length field truncated"),
        (item(0x56, u16(b"1.2")[:-2]), "SOP class extended negotiation: length 3 runs past"),
        (item(0x57, u16(b"1.2")), "common extended negotiation: length field truncated"),
        (item(0x57, u16(b"1.2") + u16(b"1.3")), "common extended negotiation: length field"),
        (item(0x57, u16(b"1") + u16(b"2") + u16(b"") + b"\x00"), "1 trailing bytes"),
        (item(0x57, u16(b"1") + u16(b"2") + u16(u16(b"3")[:-1])), "length 1 runs past"),
        (item(0x57, u16(b"1") + u16(b"2") + u16(b"\x00")), "length field truncated"),
        (item(0x58, b""), "user identity negotiation: item too short"),
        (item(0x58, b"\x01"), "user identity negotiation: item too short"),
        (item(0x58, b"\x01\x00"), "user identity negotiation: length field truncated"),
        (item(0x58, b"\x01\x00" + u16(b"bob")), "user identity negotiation: length field"),
        (item(0x58, b"\x02\x00" + u16(b"bob")[:-1]), "length 3 runs past the end"),
        (item(0x58, b"\x02\x00" + u16(b"bob") + u16(b"pw") + b"!"), "1 trailing bytes"),
        (item(0x59, b""), "user identity response: length field truncated"),
        (item(0x59, u16(b"ok") + b"!!"), "user identity response: 2 trailing bytes"),
        (item(0x51, bytes(4)) + b"\x52\x00\x00", "user information: item header truncated"),
        (item(0x52, b"1.2")[:-1], "user information: item 0x52 length 3 runs past the end"),
    ],
)
def test_user_information_errors(sub: bytes, match: str) -> None:
    expect(INVALID, match, decode_user_information, user(sub))
    data = associate(0x01, APPLICATION, item(0x50, sub))
    expect(INVALID, match, decode_pdu, data)


@pytest.mark.parametrize("item_type", [0x00, 0x50, 0x5A, 0x5F, 0xFF])
def test_unknown_sub_items_are_kept(item_type: int) -> None:
    sub = item(item_type, b"\x01\x02\x03", first_reserved=9)
    decoded = decode_user_information(user(item(0x52, b"1.2"), sub))
    assert decoded == UserInformationItem(
        (ImplementationClassUIDSubItem("1.2"), UnknownSubItem(item_type, b"\x01\x02\x03", 9))
    )
    assert decoded.encode() == item(0x50, item(0x52, b"1.2") + sub)


def test_text_fields_drop_nul_padding_only() -> None:
    decoded = decode_user_information(user(item(0x52, b"1.2.3\0"), item(0x55, b"NAME \0\0")))
    assert decoded.implementation_class_uid == "1.2.3"
    assert decoded.implementation_version_name == "NAME "


def test_role_selection_nonzero_bytes_are_true() -> None:
    decoded = decode_user_information(user(item(0x54, u16(b"1.2") + b"\x02\xff")))
    [role] = decoded.role_selections
    assert (role.scu_role, role.scp_role) == (True, True)
    assert decoded.role_selections[0].encode() == item(0x54, u16(b"1.2") + b"\x01\x01")


# --- Local (encoding) errors ------------------------------------------------------------------


def test_item_body_over_65535_bytes_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="item 0x52 body of 65536 bytes exceeds 65535"):
        ImplementationClassUIDSubItem("1" * 65536).encode()
    assert len(ImplementationClassUIDSubItem("1" * 65535).encode()) == 65539


def test_ae_title_over_16_characters_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="longer than 16 characters"):
        AssociateRQ("A" * 17, "B", ()).encode()
    assert decode_pdu(AssociateRQ("A" * 16, "B", ()).encode()) == AssociateRQ("A" * 16, "B", ())


# --- Truncation of captured PDUs and fuzzing -------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_truncated_capture_raises_at_every_offset(name: str) -> None:
    raw = FIXTURES[name]
    for end in range(len(raw)):
        with pytest.raises(RemoteProtocolError):
            decode_pdu(raw[:end])


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_truncated_body_with_a_consistent_length_raises_at_every_offset(name: str) -> None:
    """Cut the body and fix the PDU-length field, so the inner parsers meet the truncation."""
    raw = FIXTURES[name]
    for end in range(6, len(raw)):
        with pytest.raises(RemoteProtocolError):
            decode_pdu(pdu(raw[0], raw[6:end]))


def _is_pdu(value: object) -> bool:
    return isinstance(value, PDU_TYPES)


def _decode_or_error(data: bytes) -> PDU | RemoteProtocolError:
    try:
        return decode_pdu(data)
    except RemoteProtocolError as error:
        return error


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    result = _decode_or_error(data)
    assert isinstance(result, RemoteProtocolError) or _is_pdu(result)


@given(st.integers(1, 7), st.binary(max_size=400))
def test_arbitrary_body_with_a_valid_header(pdu_type: int, body: bytes) -> None:
    result = _decode_or_error(pdu(pdu_type, body))
    assert isinstance(result, RemoteProtocolError) or _is_pdu(result)


@given(
    st.sampled_from(sorted(FIXTURES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_captures_decode_or_raise_remote_protocol_error(
    name: str, changes: list[tuple[int, int]]
) -> None:
    data = bytearray(FIXTURES[name])
    for position, value in changes:
        data[6 + position % (len(data) - 6)] = value
    result = _decode_or_error(bytes(data))
    assert isinstance(result, RemoteProtocolError) or _is_pdu(result)


@given(st.sampled_from(sorted(FIXTURES)), st.binary(min_size=1, max_size=40), st.data())
def test_bytes_spliced_into_captures(name: str, insert: bytes, data: st.DataObject) -> None:
    raw = FIXTURES[name]
    at = data.draw(st.integers(6, len(raw)))
    spliced = raw[:at] + insert + raw[at:]
    result = _decode_or_error(pdu(raw[0], spliced[6:]))
    assert isinstance(result, RemoteProtocolError) or _is_pdu(result)
