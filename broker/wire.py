# The wire between dicomnode processes: frames and the msgpack envelope (DESIGN.md).
#
# Rules: a message is the frames `[routing ids..., b"", envelope, command, dataset]`: the
# envelope is a msgpack map with short snake_case keys; the command frame carries the DIMSE
# command set already encoded as group 0000 (implicit VR little endian, node.dimse encodes and
# decodes it, so no second representation exists); the dataset frame is raw bytes, possibly
# empty. A message with an unknown `v`, an unknown `kind` or missing keys is rejected with
# WireError (and counted by the caller), never guessed at. Errors cross processes as data
# (`kind: error` with type, message and traceback text), never as pickles.
#
# Kinds and directions (A = acceptor, B = broker, W = worker):
#   request              A -> B -> W   a DIMSE request (command + dataset)
#   reply                W -> B -> A   a response; `final` true on the last one
#   cancel               A -> B -> W   C-CANCEL for (assoc_id, msg_id)
#   suboperation         W -> B -> A   C-GET: send this data set as a C-STORE-RQ on the association
#   suboperation_status  A -> B -> W   the C-STORE-RSP status of that sub-operation
#   ready                W -> B        a worker joins, with its credits (concurrent requests)
#   credit               W -> B        more credits
#   heartbeat            both ways     liveness (Paranoid Pirate)
#   disconnect           B -> W        the broker does not know this worker (it restarted, or
#                                      buried the worker for silence): reconnect and send ready
#                                      now, not after the heartbeat liveness (Majordomo's)
#   error                B/W -> A      the request failed without a DIMSE response: final
#   chunk                A -> B -> W   part of a streamed data set (request with `stream`
#                                      true and an empty dataset frame, then chunks in `seq`
#                                      order, the last with `last` true), pinned to one worker
#   chunk_ack            W -> B -> A   the worker spooled that chunk (`size` bytes): the
#                                      acceptor's window for unacknowledged bytes reopens
#   event_report         W -> B -> A   send an N-EVENT-REPORT-RQ on association `assoc_id`
#                                      (still open?) on context `ctx_id`, after its request
#                                      ended (Storage Commitment, PS3.4 J.3.3); answered with
#                                      suboperation_status (status -1: not delivered)
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgpack

if TYPE_CHECKING:
    from collections.abc import Sequence

WIRE_VERSION: Final = 1

REQUEST: Final = "request"
REPLY: Final = "reply"
CANCEL: Final = "cancel"
SUBOPERATION: Final = "suboperation"
SUBOPERATION_STATUS: Final = "suboperation_status"
READY: Final = "ready"
CREDIT: Final = "credit"
HEARTBEAT: Final = "heartbeat"
ERROR: Final = "error"
CHUNK: Final = "chunk"
CHUNK_ACK: Final = "chunk_ack"
EVENT_REPORT: Final = "event_report"
DISCONNECT: Final = "disconnect"

#: Keys every message of a kind must carry (beyond `v` and `kind`).
REQUIRED_KEYS: Final[dict[str, tuple[str, ...]]] = {
    REQUEST: (
        "acceptor",
        "assoc_id",
        "msg_id",
        "command_field",
        "ctx_id",
        "sop_class",
        "ts_uid",
        "calling_aet",
        "called_aet",
        "deadline",
    ),
    REPLY: ("acceptor", "assoc_id", "msg_id", "final"),
    CANCEL: ("acceptor", "assoc_id", "msg_id"),
    SUBOPERATION: (
        "acceptor",
        "assoc_id",
        "msg_id",
        "sub_id",
        "sop_class",
        "sop_instance",
        "ts_uid",
    ),
    SUBOPERATION_STATUS: ("worker", "sub_id", "status"),
    READY: ("credits",),
    CREDIT: ("credits",),
    HEARTBEAT: (),
    DISCONNECT: (),
    ERROR: ("acceptor", "assoc_id", "msg_id", "status", "type", "message"),
    CHUNK: ("acceptor", "assoc_id", "msg_id", "seq", "last"),
    CHUNK_ACK: ("acceptor", "assoc_id", "msg_id", "seq", "size"),
    EVENT_REPORT: (
        "acceptor",
        "assoc_id",
        "ctx_id",
        "sub_id",
        "event_type",
        "sop_class",
        "sop_instance",
        "ts_uid",
    ),
}

#: Requests that are safe to run twice (C-ECHO, C-FIND, and C-STORE, idempotent by SOP
#: Instance UID): after a worker dies they are sent to another worker once.
IDEMPOTENT_COMMANDS: Final = frozenset({0x0030, 0x0020, 0x0001})

#: Frames larger than this are sent without copying (pyzmq copy=False).
ZERO_COPY_THRESHOLD: Final = 64 * 1024


class WireError(ValueError):
    """A message that does not follow this wire protocol."""


Envelope = dict[str, Any]


def pack_envelope(kind: str, **fields: Any) -> bytes:
    """Encode an envelope of `kind` with `fields` (checked against REQUIRED_KEYS)."""
    missing = [key for key in REQUIRED_KEYS.get(kind, ()) if key not in fields]
    if kind not in REQUIRED_KEYS or missing:
        raise WireError(f"cannot send {kind!r}: missing {missing}")
    fields["v"] = WIRE_VERSION
    fields["kind"] = kind
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def unpack_envelope(frame: bytes | memoryview) -> Envelope:
    """Decode and validate one envelope frame."""
    try:
        envelope = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as error:
        raise WireError(f"envelope is not msgpack: {error}") from None
    if not isinstance(envelope, dict):
        raise WireError("envelope is not a map")
    if envelope.get("v") != WIRE_VERSION:
        raise WireError(f"unknown wire version {envelope.get('v')!r}")
    kind = envelope.get("kind")
    required = REQUIRED_KEYS.get(kind) if isinstance(kind, str) else None
    if required is None:
        raise WireError(f"unknown kind {kind!r}")
    missing = [key for key in required if key not in envelope]
    if missing:
        raise WireError(f"{kind} without {', '.join(missing)}")
    return envelope


FrameData = bytes | memoryview


def split_frames(
    frames: Sequence[FrameData],
) -> tuple[list[FrameData], Envelope, bytes, FrameData]:
    """Split `[routing ids..., b"", envelope, command?, dataset?]`."""
    try:
        delimiter = list(frames).index(b"")
    except ValueError:
        raise WireError("message without the empty delimiter frame") from None
    routing = list(frames[:delimiter])
    body = frames[delimiter + 1 :]
    if not 1 <= len(body) <= 3:
        raise WireError(f"message with {len(body)} body frames")
    envelope = unpack_envelope(body[0])
    command = bytes(body[1]) if len(body) > 1 else b""
    dataset = body[2] if len(body) > 2 else b""
    return routing, envelope, command, dataset


def error_envelope(
    request: Envelope, status: int, error_type: str, message: str, traceback: str = ""
) -> bytes:
    """An `error` answer to `request`: the acceptor turns it into a final failure response."""
    return pack_envelope(
        ERROR,
        acceptor=request["acceptor"],
        assoc_id=request["assoc_id"],
        msg_id=request["msg_id"],
        status=status,
        type=error_type,
        message=message[:1000],
        traceback=traceback[-4000:],
    )
