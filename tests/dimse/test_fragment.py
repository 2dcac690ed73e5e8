# Tests of fragmentation into P-DATA-TF PDUs and of message reassembly
# (PS3.7 6.3.1, PS3.8 9.3.5 and Annex E).
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.dimse.commands import (
    CEchoRQ,
    CFindRSP,
    CStoreRQ,
    NSetRQ,
    encode_command,
)
from node.dimse.errors import (
    CommandSetError,
    DatasetTooLargeError,
    MessageAssemblyError,
)
from node.dimse.fragment import (
    MAXIMUM_FRAGMENT,
    DatasetChunk,
    DatasetStreamStarted,
    DimseMessageReceived,
    MessageAssembler,
    fragment_command,
    fragment_dataset_chunk,
    fragment_message,
    fragment_size,
    iter_pdata,
)
from node.ul.errors import AbortReason, AbortSource, RemoteProtocolError
from node.ul.pdu import PDataTF, PresentationDataValueItem, decode_pdu
from tests.dimse.strategies import messages

STORE = CStoreRQ(
    message_id=3,
    affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    affected_sop_instance_uid="1.2.826.0.1.3680043.2.1143.3",
)
STORE_COMMAND = encode_command(STORE)
ECHO_COMMAND = encode_command(CEchoRQ(message_id=1))


def pdvs(pdus: list[bytes]) -> list[PresentationDataValueItem]:
    """Decode PDUs with the UL codec, checking each holds exactly one PDV."""
    items: list[PresentationDataValueItem] = []
    for raw in pdus:
        pdu = decode_pdu(raw)
        assert isinstance(pdu, PDataTF)
        assert len(pdu.items) == 1
        items.extend(pdu.items)
    return items


def pdv(
    data: bytes, *, command: bool, last: bool, context_id: int = 1
) -> PresentationDataValueItem:
    return PresentationDataValueItem(context_id, command, last, data)


def idle(assembler: MessageAssembler) -> bool:
    """`is_idle`, read through a call so that mypy does not narrow it between feeds."""
    return assembler.is_idle


def feed(assembler: MessageAssembler, pdus: list[bytes]) -> list[object]:
    events: list[object] = []
    for raw in pdus:
        pdu = decode_pdu(raw)
        assert isinstance(pdu, PDataTF)
        events.extend(assembler.add(pdu))
    return events


# --- fragment sizes ----------------------------------------------------------------------


def test_fragment_size() -> None:
    assert fragment_size(0) == MAXIMUM_FRAGMENT == 0xFFFFFFF9
    assert fragment_size(7) == 1
    assert fragment_size(16384) == 16378
    assert fragment_size(1 << 40) == MAXIMUM_FRAGMENT
    with pytest.raises(ValueError, match="no room"):
        fragment_size(6)


# --- fragmentation -----------------------------------------------------------------------


def test_unlimited_length_sends_one_pdv_per_part() -> None:
    dataset = bytes(range(256)) * 100
    items = pdvs(fragment_message(5, STORE_COMMAND, dataset, 0))
    assert [(item.context_id, item.is_command, item.is_last) for item in items] == [
        (5, True, True),
        (5, False, True),
    ]
    assert items[0].data == STORE_COMMAND
    assert items[1].data == dataset


def test_exact_multiple_of_the_fragment_size() -> None:
    dataset = b"ab" * 30  # 60 bytes, fragments of 20
    items = pdvs(fragment_message(1, STORE_COMMAND, dataset, 26))
    data_items = [item for item in items if not item.is_command]
    assert [len(item.data) for item in data_items] == [20, 20, 20]
    assert [item.is_last for item in data_items] == [False, False, True]


def test_one_byte_leftover() -> None:
    dataset = bytes(41)
    data_items = [
        item for item in pdvs(fragment_message(1, b"", dataset, 26)) if not item.is_command
    ]
    assert [len(item.data) for item in data_items] == [20, 20, 1]
    assert [item.is_last for item in data_items] == [False, False, True]


def test_command_fragments_come_first_and_only_the_last_is_flagged() -> None:
    items = pdvs(fragment_message(3, STORE_COMMAND, b"xyz", 16))
    commands = [item for item in items if item.is_command]
    assert items[: len(commands)] == commands
    assert all(len(item.data) <= 10 for item in items)
    assert [item.is_last for item in commands] == [False] * (len(commands) - 1) + [True]
    assert b"".join(item.data for item in commands) == STORE_COMMAND
    assert b"".join(item.data for item in items[len(commands) :]) == b"xyz"


def test_pdu_length_fields_respect_the_peer_maximum() -> None:
    for raw in fragment_message(1, STORE_COMMAND, bytes(1000), 64):
        assert len(raw) - 6 <= 64
        assert int.from_bytes(raw[2:6], "big") == len(raw) - 6


def test_no_dataset_sends_only_the_command() -> None:
    items = pdvs(fragment_message(1, ECHO_COMMAND, None, 0))
    assert len(items) == 1
    assert items[0].is_command
    assert items[0].is_last


def test_empty_dataset_is_one_empty_last_fragment() -> None:
    items = pdvs(fragment_message(1, STORE_COMMAND, b"", 100))
    assert items[-1] == PresentationDataValueItem(1, False, True, b"")


def test_streaming_chunks() -> None:
    first = fragment_dataset_chunk(7, b"a" * 25, False, 16)
    assert [item.is_last for item in pdvs(first)] == [False, False, False]
    assert fragment_dataset_chunk(7, b"", False, 16) == []
    last = pdvs(fragment_dataset_chunk(7, b"", True, 16))
    assert last == [PresentationDataValueItem(7, False, True, b"")]
    tail = pdvs(fragment_dataset_chunk(7, b"bc", True, 16))
    assert tail == [PresentationDataValueItem(7, False, True, b"bc")]


def test_iter_pdata_builds_pdus_lazily_from_bytes() -> None:
    iterator = iter_pdata(1, b"abcdef", is_command=True, is_last=False, maximum_length=9)
    assert pdvs([next(iterator)]) == [PresentationDataValueItem(1, True, False, b"abc")]
    assert pdvs(list(iterator)) == [PresentationDataValueItem(1, True, False, b"def")]


def test_fragment_command() -> None:
    items = pdvs(fragment_command(9, ECHO_COMMAND, 0))
    assert items == [PresentationDataValueItem(9, True, True, ECHO_COMMAND)]


# --- reassembly, buffered ----------------------------------------------------------------


def test_message_without_dataset() -> None:
    assembler = MessageAssembler()
    events = feed(assembler, fragment_message(1, ECHO_COMMAND, None, 0))
    assert events == [DimseMessageReceived(1, CEchoRQ(message_id=1), None)]
    assert idle(assembler)


def test_fragmented_message_fed_pdv_by_pdv() -> None:
    dataset = bytes(range(256)) * 10
    assembler = MessageAssembler()
    items = pdvs(fragment_message(3, STORE_COMMAND, dataset, 64))
    for item in items[:-1]:
        assert assembler.add_pdv(item) is None
        assert not idle(assembler)
    assert assembler.add_pdv(items[-1]) == DimseMessageReceived(3, STORE, dataset)
    assert idle(assembler)


def test_several_pdvs_in_one_pdu_and_two_messages() -> None:
    assembler = MessageAssembler()
    pdata = PDataTF(
        (
            pdv(ECHO_COMMAND, command=True, last=True),
            pdv(STORE_COMMAND[:10], command=True, last=False, context_id=3),
            pdv(STORE_COMMAND[10:], command=True, last=True, context_id=3),
            pdv(b"DATA", command=False, last=False, context_id=3),
            pdv(b"SET", command=False, last=True, context_id=3),
        )
    )
    assert assembler.add(pdata) == [
        DimseMessageReceived(1, CEchoRQ(message_id=1), None),
        DimseMessageReceived(3, STORE, b"DATASET"),
    ]


def test_empty_dataset_is_received_as_empty_bytes() -> None:
    assembler = MessageAssembler()
    events = feed(assembler, fragment_message(1, STORE_COMMAND, b"", 0))
    assert events == [DimseMessageReceived(1, STORE, b"")]


@settings(max_examples=150, deadline=None)
@given(
    message=messages,
    dataset=st.binary(max_size=600),
    maximum_length=st.integers(8, 300) | st.just(0),
    context_id=st.integers(1, 255).filter(lambda value: value % 2 == 1),
)
def test_fragment_then_reassemble_gives_the_message_back(
    message: object, dataset: bytes, maximum_length: int, context_id: int
) -> None:
    command = encode_command(message)  # type: ignore[arg-type]
    has_dataset = message.has_dataset  # type: ignore[attr-defined]
    sent = dataset if has_dataset else None
    events = feed(MessageAssembler(), fragment_message(context_id, command, sent, maximum_length))
    assert events == [DimseMessageReceived(context_id, message, sent)]  # type: ignore[arg-type]


# --- reassembly, streaming ---------------------------------------------------------------


def test_streaming_starts_once_the_threshold_is_passed() -> None:
    dataset = bytes(range(100))
    assembler = MessageAssembler(stream_threshold=25)
    events = feed(assembler, fragment_message(1, STORE_COMMAND, dataset, 16))  # 10-byte pieces
    assert events[0] == DatasetStreamStarted(1, STORE, dataset[:30])
    assert events[1:] == [
        DatasetChunk(1, dataset[start : start + 10], start == 90) for start in range(30, 100, 10)
    ]
    assert idle(assembler)


def test_streaming_from_the_first_fragment_and_then_a_buffered_message() -> None:
    assembler = MessageAssembler(stream_threshold=0)
    events = feed(assembler, fragment_message(1, STORE_COMMAND, b"abcdef", 10))
    assert events == [
        DatasetStreamStarted(1, STORE, b"abcd"),
        DatasetChunk(1, b"ef", True),
    ]
    events = feed(assembler, fragment_message(1, ECHO_COMMAND, None, 10))
    assert events == [DimseMessageReceived(1, CEchoRQ(message_id=1), None)]


def test_dataset_that_ends_before_the_threshold_is_passed_stays_buffered() -> None:
    assembler = MessageAssembler(stream_threshold=30)
    events = feed(assembler, fragment_message(1, STORE_COMMAND, bytes(40), 16))
    assert events == [DimseMessageReceived(1, STORE, bytes(40))]


# --- size limits -------------------------------------------------------------------------


def test_dataset_over_the_maximum_is_refused_and_the_rest_dropped() -> None:
    assembler = MessageAssembler(maximum_dataset_size=25)
    pdus = fragment_message(1, STORE_COMMAND, bytes(60), 16)
    items = pdvs(pdus)
    first_data = next(index for index, item in enumerate(items) if not item.is_command)
    for item in items[: first_data + 2]:
        assert assembler.add_pdv(item) is None
    with pytest.raises(DatasetTooLargeError) as caught:
        assembler.add_pdv(items[first_data + 2])
    error = caught.value
    assert error.status == 0xA700
    assert error.command == STORE
    assert isinstance(error, RemoteProtocolError)
    assert "exceeds 25 bytes" in str(error)
    assert not idle(assembler)
    for item in items[first_data + 3 :]:
        assert assembler.add_pdv(item) is None
    assert idle(assembler)
    assert feed(assembler, fragment_message(1, ECHO_COMMAND, None, 16)) == [
        DimseMessageReceived(1, CEchoRQ(message_id=1), None)
    ]


def test_dataset_over_the_maximum_on_its_last_fragment() -> None:
    command = encode_command(
        NSetRQ(message_id=4, requested_sop_class_uid="1", requested_sop_instance_uid="2")
    )
    assembler = MessageAssembler(maximum_dataset_size=5, stream_threshold=2)
    with pytest.raises(DatasetTooLargeError) as caught:
        feed(assembler, fragment_message(1, command, b"abcdef", 0))
    assert caught.value.status == 0x0213
    assert idle(assembler)


def test_maximum_applies_while_streaming() -> None:
    assembler = MessageAssembler(maximum_dataset_size=12, stream_threshold=4)
    items = pdvs(fragment_message(1, STORE_COMMAND, bytes(30), 11))
    third_data = len(items) - 4  # six data fragments of 5 bytes: the third passes 12
    events = [assembler.add_pdv(item) for item in items[:third_data]]
    with pytest.raises(DatasetTooLargeError):
        assembler.add_pdv(items[third_data])
    assert [event for event in events if event is not None] == [
        DatasetStreamStarted(1, STORE, bytes(5)),
        DatasetChunk(1, bytes(5), False),
    ]


def test_command_set_over_the_maximum() -> None:
    assembler = MessageAssembler(maximum_command_size=20)
    with pytest.raises(MessageAssemblyError, match="command set exceeds 20 bytes"):
        feed(assembler, fragment_message(1, STORE_COMMAND, b"", 16))


def test_constructor_checks_its_limits() -> None:
    with pytest.raises(ValueError, match="stream_threshold"):
        MessageAssembler(stream_threshold=-1)
    with pytest.raises(ValueError, match="maximum_dataset_size"):
        MessageAssembler(maximum_dataset_size=-1)


# --- ordering errors ---------------------------------------------------------------------


def assembly_error(assembler: MessageAssembler, *items: PresentationDataValueItem) -> str:
    for item in items[:-1]:
        assembler.add_pdv(item)
    with pytest.raises(MessageAssemblyError) as caught:
        assembler.add_pdv(items[-1])
    error = caught.value
    assert error.reason == AbortReason.UNEXPECTED_PDU_PARAMETER
    assert error.source == AbortSource.SERVICE_PROVIDER
    return str(error)


def test_dataset_fragment_before_the_command_is_complete() -> None:
    message = assembly_error(
        MessageAssembler(),
        pdv(STORE_COMMAND[:20], command=True, last=False),
        pdv(b"data", command=False, last=True),
    )
    assert "before the last fragment of the command set" in message


def test_dataset_fragment_without_any_command() -> None:
    message = assembly_error(MessageAssembler(), pdv(b"data", command=False, last=True))
    assert "no command announcing a data set" in message


def test_dataset_fragment_after_a_command_without_dataset() -> None:
    message = assembly_error(
        MessageAssembler(),
        pdv(ECHO_COMMAND, command=True, last=True),
        pdv(b"data", command=False, last=True),
    )
    assert "after C-ECHO-RQ whose Command Data Set Type (0000,0800) is 0101H" in message


def test_dataset_fragment_after_a_complete_message_with_dataset() -> None:
    assembler = MessageAssembler()
    feed(assembler, fragment_message(1, STORE_COMMAND, b"x", 0))
    message = assembly_error(assembler, pdv(b"data", command=False, last=True))
    assert "no command announcing a data set" in message


def test_new_command_while_a_dataset_is_expected() -> None:
    message = assembly_error(
        MessageAssembler(),
        pdv(STORE_COMMAND, command=True, last=True),
        pdv(b"half", command=False, last=False),
        pdv(ECHO_COMMAND, command=True, last=True),
    )
    assert "while the data set of C-STORE-RQ is expected" in message


def test_other_presentation_context_in_the_middle_of_a_message() -> None:
    message = assembly_error(
        MessageAssembler(),
        pdv(STORE_COMMAND, command=True, last=True, context_id=1),
        pdv(b"data", command=False, last=True, context_id=3),
    )
    assert "presentation context 3 in the middle of a message on context 1" in message


def test_other_presentation_context_between_command_fragments() -> None:
    message = assembly_error(
        MessageAssembler(),
        pdv(STORE_COMMAND[:8], command=True, last=False, context_id=1),
        pdv(STORE_COMMAND[8:], command=True, last=True, context_id=5),
    )
    assert "context 5" in message


# --- command set errors ------------------------------------------------------------------


def broken_store_command() -> bytes:
    """A C-STORE-RQ without its Affected SOP Instance UID (announces a data set)."""
    return encode_command(dataclasses.replace(STORE, affected_sop_instance_uid=None))  # type: ignore[arg-type]


def test_answerable_command_error_drops_the_dataset_that_follows() -> None:
    assembler = MessageAssembler()
    with pytest.raises(CommandSetError) as caught:
        assembler.add_pdv(pdv(broken_store_command(), command=True, last=True))
    assert caught.value.can_answer
    assert caught.value.status == 0x0120
    assert not idle(assembler)
    assert assembler.add_pdv(pdv(b"part", command=False, last=False)) is None
    assert assembler.add_pdv(pdv(b"rest", command=False, last=True)) is None
    assert idle(assembler)
    assert feed(assembler, fragment_message(1, ECHO_COMMAND, None, 0)) == [
        DimseMessageReceived(1, CEchoRQ(message_id=1), None)
    ]


def test_command_while_dropping_a_refused_dataset() -> None:
    assembler = MessageAssembler()
    with pytest.raises(CommandSetError):
        assembler.add_pdv(pdv(broken_store_command(), command=True, last=True))
    message = assembly_error(assembler, pdv(ECHO_COMMAND, command=True, last=True))
    assert "data set of a refused message is still arriving" in message


def test_command_error_without_dataset_leaves_the_assembler_idle() -> None:
    assembler = MessageAssembler()
    with pytest.raises(CommandSetError) as caught:
        assembler.add_pdv(pdv(b"\x00\x00", command=True, last=True))
    assert caught.value.has_dataset is None
    assert idle(assembler)
    response = encode_command(CFindRSP(message_id_being_responded_to=2, status=0))
    assert assembler.add_pdv(pdv(response, command=True, last=True)) == DimseMessageReceived(
        1, CFindRSP(message_id_being_responded_to=2, status=0), None
    )
