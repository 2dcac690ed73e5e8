# What the broker's routing state (broker.routing) asks its I/O loop to do, the message parts
# those actions carry, and the envelope fields routing reads, checked (a bad one raises
# wire.WireError, which routing turns into a Fault).
#
# Rules: pure data and pure functions; no sockets, no clock, no logging.
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol

from broker import wire
from node.dimse.status import Status, StorageStatus


class Frame(Protocol):
    """A received message part: its length and its bytes (zmq.Frame qualifies)."""

    def __len__(self) -> int: ...

    @property
    def bytes(self) -> bytes: ...


#: An outgoing message part: a frame as received, or an envelope packed here.
Part = Frame | bytes

#: A request is named by (acceptor, assoc_id, msg_id) (DESIGN.md "Flows").
RequestKey = tuple[str, int | str, int]


#: Command fields whose services define 0xA700 "Refused: Out of Resources" (C-STORE, C-FIND).
_OUT_OF_RESOURCES_COMMANDS: Final = frozenset({0x0001, 0x0020})


def worker_lost_status(command_field: int) -> int:
    """The failure status for a request whose worker died and that cannot be repeated.

    C-STORE and C-FIND answer 0xA700 Refused: Out of Resources (PS3.4 B.2.3, C.4.1.1.4);
    everything else (C-ECHO, C-GET, C-MOVE, N-*) answers 0x0110 Processing failure (PS3.7 C.4.2).
    """
    if command_field in _OUT_OF_RESOURCES_COMMANDS:
        return StorageStatus.OUT_OF_RESOURCES
    return Status.PROCESSING_FAILURE


@dataclass(frozen=True, slots=True)
class SendToWorker:
    """Send `frames` (the body after the empty delimiter) to the worker `worker`."""

    worker: bytes
    frames: tuple[Part, ...]
    kind: str
    #: Set when the message is a request, so an undeliverable one can be queued again.
    request: RequestKey | None = None


@dataclass(frozen=True, slots=True)
class SendToAcceptor:
    """Send `frames` (the body after the empty delimiter) to the acceptor `acceptor`."""

    acceptor: bytes
    frames: tuple[Part, ...]
    kind: str


@dataclass(frozen=True, slots=True)
class Fault:
    """A message was rejected or lost; `kind` names the fault (already counted in `faults`)."""

    kind: str
    peer: bytes
    detail: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A rare event worth a log line (a worker joined or died, an acceptor was forgotten)."""

    text: str
    warning: bool = False


Action = SendToWorker | SendToAcceptor | Fault | Notice


def integer_field(
    envelope: wire.Envelope, key: str, minimum: int = 0, maximum: int = 1 << 63
) -> int:
    value = envelope[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise wire.WireError(f"{key} is not an integer")
    if not minimum <= value <= maximum:
        raise wire.WireError(f"{key} {value} out of range")
    return value


def request_key(envelope: wire.Envelope) -> RequestKey:
    acceptor = envelope["acceptor"]
    assoc_id = envelope["assoc_id"]
    if not isinstance(acceptor, str):
        raise wire.WireError("acceptor is not a string")
    if isinstance(assoc_id, bool) or not isinstance(assoc_id, int | str):
        raise wire.WireError("assoc_id is neither an integer nor a string")
    return acceptor, assoc_id, integer_field(envelope, "msg_id")


def deadline_of(envelope: wire.Envelope) -> float | None:
    value = envelope["deadline"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise wire.WireError("deadline is not a number")
    return float(value) if value > 0 else None


def repack(envelope: wire.Envelope, **changes: object) -> bytes:
    fields = {key: value for key, value in envelope.items() if key not in ("v", "kind")}
    fields.update(changes)
    return wire.pack_envelope(envelope["kind"], **fields)
