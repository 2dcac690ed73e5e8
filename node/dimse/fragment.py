# DIMSE message fragmentation into P-DATA-TF PDUs and reassembly from PDVs
# (PS3.7 section 6.3.1, PS3.8 section 9.3.5 and Annex E).
#
# Rules: sending, one PDV per PDU as DCMTK does; command fragments first, the last one with
# the last-fragment bit, then the data set fragments; each PDU is built with a single join
# over a memoryview slice. Receiving, MessageAssembler is a small state machine fed PDVs; it
# emits events, keeps one message in progress at a time, joins fragments once at the end and,
# in streaming mode, never holds more than the threshold of a data set. Peer faults raise
# typed errors from node.dimse.errors. No I/O, no clock, stdlib only.
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from node.dimse.commands import decode_command
from node.dimse.errors import CommandSetError, DatasetTooLargeError, MessageAssemblyError
from node.dimse.messages import CommandField, DimseMessage, message_name
from node.ul.pdu import P_DATA_TF, PDU_HEADER, PDV_HEADER, PDataTF, PresentationDataValueItem

if TYPE_CHECKING:
    from collections.abc import Iterator

#: PDU header followed by the PDV item header: type, length, PDV length, context, control.
PDATA_HEADER: Final = struct.Struct(PDU_HEADER.format + PDV_HEADER.format.lstrip(">"))
#: Bytes of a one-PDV P-DATA-TF that are not fragment: PDV length, context ID, control header.
PDV_OVERHEAD: Final = 6
#: Largest fragment that fits the 32-bit PDU length field when the peer sets no limit.
MAXIMUM_FRAGMENT: Final = 0xFFFFFFFF - PDV_OVERHEAD
#: Default cap on a command set being reassembled: real ones are a few hundred bytes.
DEFAULT_MAXIMUM_COMMAND_SIZE: Final = 1 << 20

_COMMAND: Final = 0x01
_LAST: Final = 0x02


def fragment_size(maximum_length: int) -> int:
    """Largest fragment one PDV may carry when it is alone in a P-DATA-TF, PS3.8 Annex D.1.

    `maximum_length` is the peer's Maximum Length (PS3.8 D.1: the largest P-DATA-TF
    variable field it accepts, i.e. PDU length field); 0 means no limit. A PDV item adds
    6 bytes (item length, context ID, control header), so 7 is the least usable value.
    """
    if maximum_length == 0:
        return MAXIMUM_FRAGMENT
    if maximum_length <= PDV_OVERHEAD:
        raise ValueError(f"maximum length {maximum_length} leaves no room for a fragment")
    return min(maximum_length - PDV_OVERHEAD, MAXIMUM_FRAGMENT)


def iter_pdata(
    context_id: int, data: bytes, *, is_command: bool, is_last: bool, maximum_length: int
) -> Iterator[bytes]:
    """Yield P-DATA-TF PDUs, one PDV each, carrying `data` in order (PS3.8 9.3.5, Annex E).

    The last-fragment bit is set on the final PDV only when `is_last`. Empty `data` yields
    one empty PDV when `is_last` (an empty last fragment is legal) and nothing otherwise.
    """
    step = fragment_size(maximum_length)
    control = _COMMAND if is_command else 0
    total = len(data)
    if total == 0:
        if is_last:
            yield PDATA_HEADER.pack(P_DATA_TF, PDV_OVERHEAD, 2, context_id, control | _LAST)
        return
    view = memoryview(data)
    pack = PDATA_HEADER.pack
    last_start = (total - 1) // step * step
    for start in range(0, last_start, step):
        yield b"".join(
            (pack(P_DATA_TF, step + 6, step + 2, context_id, control), view[start : start + step])
        )
    size = total - last_start
    if is_last:
        control |= _LAST
    yield b"".join((pack(P_DATA_TF, size + 6, size + 2, context_id, control), view[last_start:]))


def fragment_command(context_id: int, command: bytes, maximum_length: int) -> list[bytes]:
    """The P-DATA-TF PDUs of an encoded command set, the last one flagged last (PS3.7 6.3.1)."""
    return list(
        iter_pdata(
            context_id, command, is_command=True, is_last=True, maximum_length=maximum_length
        )
    )


def fragment_message(
    context_id: int, command: bytes, dataset: bytes | None, maximum_length: int
) -> list[bytes]:
    """The P-DATA-TF PDUs of a whole DIMSE message, ready for the socket (PS3.7 6.3.1).

    Command fragments first, then data set fragments (none when `dataset` is None; one empty
    last fragment when it is b""), one PDV per PDU, each PDV at most `maximum_length` - 6
    bytes of fragment (`maximum_length` is the peer's Maximum Length, 0 = unlimited). The
    command's Command Data Set Type must agree with `dataset`; that is the caller's job.
    """
    pdus = fragment_command(context_id, command, maximum_length)
    if dataset is not None:
        pdus.extend(
            iter_pdata(
                context_id, dataset, is_command=False, is_last=True, maximum_length=maximum_length
            )
        )
    return pdus


def fragment_dataset_chunk(
    context_id: int, chunk: bytes, is_last: bool, maximum_length: int
) -> list[bytes]:
    """The P-DATA-TF PDUs of one chunk of a data set that arrives in pieces (PS3.7 6.3.1).

    Send the command with `fragment_command` first, then each chunk as it comes; only the
    final PDV of the chunk passed with `is_last=True` is flagged last. Chunk boundaries need
    not match fragment boundaries (a short chunk makes a short PDV, which is legal).
    """
    return list(
        iter_pdata(
            context_id, chunk, is_command=False, is_last=is_last, maximum_length=maximum_length
        )
    )


@dataclass(frozen=True, slots=True)
class DimseMessageReceived:
    """A complete DIMSE message: its command and, if it has one, its whole data set."""

    context_id: int
    command: DimseMessage
    dataset: bytes | None


@dataclass(frozen=True, slots=True)
class DatasetStreamStarted:
    """The data set of `command` outgrew the stream threshold: `first_chunk` is what has
    arrived so far; DatasetChunk events follow until one with `is_last`."""

    context_id: int
    command: DimseMessage
    first_chunk: bytes


@dataclass(frozen=True, slots=True)
class DatasetChunk:
    """The next piece of a streamed data set (one PDV's fragment)."""

    context_id: int
    data: bytes
    is_last: bool


AssemblerEvent = DimseMessageReceived | DatasetStreamStarted | DatasetChunk


def _too_large_status(command: DimseMessage) -> int:
    # C-STORE and C-FIND have "Refused: Out of Resources" (PS3.4 B.2.3, C.4.1.1.4); the other
    # services use the general Resource limitation (PS3.7 C.5.21).
    if command.COMMAND_FIELD in (CommandField.C_STORE_RQ, CommandField.C_FIND_RQ):
        return 0xA700
    return 0x0213


class MessageAssembler:
    """Reassembles DIMSE messages from PDVs, PS3.7 section 6.3.1 and PS3.8 Annex E.

    Feed every P-DATA-TF with `add` (or each PDV with `add_pdv`) and act on the events:
    DimseMessageReceived for a complete message; in streaming mode (`stream_threshold` set)
    a data set that outgrows the threshold before its last fragment comes out as one
    DatasetStreamStarted then DatasetChunk events instead, the assembler holding nothing.
    Errors: MessageAssemblyError for PDVs out of order (a data set fragment before the last
    command fragment or with no command expecting one, a command fragment while a data set
    is expected, another presentation context in the middle of a message); CommandSetError
    from decode_command; DatasetTooLargeError past `maximum_dataset_size`. After a
    CommandSetError whose command announced a data set, or a DatasetTooLargeError, the rest
    of that data set is dropped silently, so the caller may answer and carry on.
    `add` stops at the first error; use `add_pdv` to keep events of earlier PDVs.
    """

    __slots__ = (
        "_command",
        "_command_fragments",
        "_command_size",
        "_context_id",
        "_dataset_fragments",
        "_dataset_size",
        "_discarding",
        "_last_without_dataset",
        "_maximum_command_size",
        "_maximum_dataset_size",
        "_stream_threshold",
        "_streaming",
    )

    def __init__(
        self,
        *,
        stream_threshold: int | None = None,
        maximum_dataset_size: int | None = None,
        maximum_command_size: int = DEFAULT_MAXIMUM_COMMAND_SIZE,
    ) -> None:
        if stream_threshold is not None and stream_threshold < 0:
            raise ValueError("stream_threshold must be None or >= 0")
        if maximum_dataset_size is not None and maximum_dataset_size < 0:
            raise ValueError("maximum_dataset_size must be None or >= 0")
        self._stream_threshold = stream_threshold
        self._maximum_dataset_size = maximum_dataset_size
        self._maximum_command_size = maximum_command_size
        #: Presentation context of the message in progress, None when idle.
        self._context_id: int | None = None
        self._command_fragments: list[bytes] = []
        self._command_size = 0
        #: Decoded command whose data set is being received.
        self._command: DimseMessage | None = None
        self._dataset_fragments: list[bytes] = []
        self._dataset_size = 0
        self._streaming = False
        self._discarding = False
        self._last_without_dataset: DimseMessage | None = None

    @property
    def is_idle(self) -> bool:
        """True between messages (no fragment of an unfinished message held or expected)."""
        return self._context_id is None

    def add(self, pdata: PDataTF) -> list[AssemblerEvent]:
        """Take every PDV of a P-DATA-TF in order; return the events they complete."""
        events: list[AssemblerEvent] = []
        for pdv in pdata.items:
            event = self.add_pdv(pdv)
            if event is not None:
                events.append(event)
        return events

    def add_pdv(self, pdv: PresentationDataValueItem) -> AssemblerEvent | None:
        """Take one PDV (PS3.8 9.3.5.1, Annex E); return the event it completes, if any."""
        if self._context_id is not None and pdv.context_id != self._context_id:
            raise MessageAssemblyError(
                f"PDV for presentation context {pdv.context_id} in the middle of a message on "
                f"context {self._context_id} (PS3.7 6.3.1: one context per message)"
            )
        if pdv.is_command:
            return self._add_command(pdv)
        return self._add_dataset(pdv)

    def _add_command(self, pdv: PresentationDataValueItem) -> AssemblerEvent | None:
        if self._discarding:
            raise MessageAssemblyError(
                "command fragment received while the data set of a refused message is still "
                "arriving"
            )
        if self._command is not None:
            raise MessageAssemblyError(
                "command fragment received while the data set of "
                f"{message_name(self._command.COMMAND_FIELD)} is expected"
            )
        self._context_id = pdv.context_id
        self._last_without_dataset = None
        self._command_fragments.append(pdv.data)
        self._command_size += len(pdv.data)
        if self._command_size > self._maximum_command_size:
            raise MessageAssemblyError(
                f"command set exceeds {self._maximum_command_size} bytes without its last fragment"
            )
        if not pdv.is_last:
            return None
        data = b"".join(self._command_fragments)
        self._command_fragments = []
        self._command_size = 0
        try:
            command = decode_command(data)
        except CommandSetError as error:
            if error.has_dataset:
                self._discarding = True
            else:
                self._context_id = None
            raise
        if command.has_dataset:
            self._command = command
            return None
        self._context_id = None
        self._last_without_dataset = command
        return DimseMessageReceived(pdv.context_id, command, None)

    def _add_dataset(self, pdv: PresentationDataValueItem) -> AssemblerEvent | None:
        command = self._command
        if command is None:
            if self._discarding:
                if pdv.is_last:
                    self._discarding = False
                    self._context_id = None
                return None
            raise MessageAssemblyError(self._unexpected_dataset())
        data = pdv.data
        size = self._dataset_size + len(data)
        self._dataset_size = size
        if self._maximum_dataset_size is not None and size > self._maximum_dataset_size:
            self._finish()
            if not pdv.is_last:
                self._context_id = pdv.context_id
                self._discarding = True
            raise DatasetTooLargeError(
                f"data set of {message_name(command.COMMAND_FIELD)} exceeds "
                f"{self._maximum_dataset_size} bytes",
                command,
                _too_large_status(command),
            )
        if self._streaming:
            if pdv.is_last:
                self._finish()
            return DatasetChunk(pdv.context_id, data, pdv.is_last)
        fragments = self._dataset_fragments
        fragments.append(data)
        if pdv.is_last:
            dataset = b"".join(fragments)
            self._finish()
            return DimseMessageReceived(pdv.context_id, command, dataset)
        if self._stream_threshold is not None and size > self._stream_threshold:
            self._dataset_fragments = []
            self._streaming = True
            return DatasetStreamStarted(pdv.context_id, command, b"".join(fragments))
        return None

    def _finish(self) -> None:
        self._context_id = None
        self._command = None
        self._dataset_fragments = []
        self._dataset_size = 0
        self._streaming = False
        self._last_without_dataset = None

    def _unexpected_dataset(self) -> str:
        if self._command_fragments:
            return "data set fragment before the last fragment of the command set"
        previous = self._last_without_dataset
        if previous is not None:
            return (
                f"data set fragment after {message_name(previous.COMMAND_FIELD)} whose "
                "Command Data Set Type (0000,0800) is 0101H (no data set)"
            )
        return "data set fragment with no command announcing a data set"
