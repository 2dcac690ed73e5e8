# The broker's routing decisions: least-recently-used workers with credits, a bounded FIFO
# queue, in-flight tracking, heartbeats and failure handling (DESIGN.md "Flows",
# "Backpressure", "Failure"; the wire is broker/wire.py).
#
# Rules: no sockets, no clock, no logging. `now` is a parameter (unix time in seconds, the
# clock of the `deadline` key) and every input returns the list of actions the I/O loop
# (broker.server) performs, in order. Only the envelope frame is decoded: command and dataset
# frames are handed back as the very objects received (zero-copy forwarding). A message that
# breaks the wire protocol is counted in `faults` and reported as a Fault action, never raised.
# The broker knows nothing of DICOM beyond the envelope: the command field only decides
# whether a request may run twice (wire.IDEMPOTENT_COMMANDS) and which failure status fits.
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from broker import wire
from broker.actions import (
    Action,
    Fault,
    Frame,
    Notice,
    Part,
    RequestKey,
    SendToAcceptor,
    SendToWorker,
    deadline_of,
    integer_field,
    repack,
    request_key,
    worker_lost_status,
)
from node.dimse.status import Status, StorageStatus

#: The actions and their parts, re-exported for the I/O loop (broker.server) and the tests.
__all__ = [
    "Action",
    "BrokerState",
    "Fault",
    "Frame",
    "Notice",
    "SendToAcceptor",
    "SendToWorker",
    "worker_lost_status",
]

_MAX_CREDITS: Final = 1 << 20
_HEARTBEAT: Final = wire.pack_envelope(wire.HEARTBEAT)

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(slots=True)
class _Request:
    key: RequestKey
    acceptor: bytes
    envelope: wire.Envelope
    #: (envelope, command?, dataset?) as received; emptied once sent unless idempotent.
    parts: tuple[Part, ...]
    deadline: float | None
    idempotent: bool
    retry: int = 0
    worker: bytes | None = None
    cancelled: bool = False
    #: A streamed data set (wire.CHUNK): never repeated; chunks wait here while it is queued.
    stream: bool = False
    chunks: list[tuple[Part, ...]] = field(default_factory=list)


@dataclass(slots=True)
class _Worker:
    identity: bytes
    name: str
    credits: int
    expires: float
    paused: bool = False
    #: It announced 0 credits (stopping): finished requests give no credit back.
    draining: bool = False
    #: Requests in flight on this worker, in the order they were sent (a dict as ordered set).
    requests: dict[RequestKey, None] = field(default_factory=dict)


class BrokerState:
    """Everything the broker knows, and every routing decision it takes.

    Inputs: `on_frontend` (a message from an acceptor), `on_backend` (from a worker),
    `on_tick` (call at `timer()`: heartbeats, deaths, deadlines), `on_undeliverable` (a send
    failed). Each returns the actions to perform, in order.
    """

    def __init__(
        self,
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        max_queue: int = 10_000,
        now: float = 0.0,
    ) -> None:
        self._interval = heartbeat_interval
        self._patience = heartbeat_interval * heartbeat_liveness
        self._max_queue = max_queue
        self._workers: dict[bytes, _Worker] = {}
        #: Workers with credit, least recently used first.
        self._available: OrderedDict[bytes, None] = OrderedDict()
        #: Acceptor identity -> when it is forgotten unless heard from.
        self._acceptors: dict[bytes, float] = {}
        self._queue: OrderedDict[RequestKey, _Request] = OrderedDict()
        self._in_flight: dict[RequestKey, _Request] = {}
        self._next_tick = now + heartbeat_interval
        self.counters: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    # -- inputs ---------------------------------------------------------------------------

    def timer(self) -> float:
        """When `on_tick` is due next (unix time)."""
        return self._next_tick

    def on_frontend(self, identity: bytes, frames: Sequence[Part], now: float) -> list[Action]:
        """A message from the acceptor `identity`: `frames` follow its routing id (received
        frames, or the bytes an acceptor with the routing embedded passes: broker.embedded)."""
        parsed = self._parse(identity, frames)
        if isinstance(parsed, Fault):
            return [parsed]
        envelope, parts = parsed
        self._acceptors[identity] = now + self._patience
        kind = envelope["kind"]
        try:
            if kind == wire.REQUEST:
                return self._on_request(identity, envelope, parts, now)
            if kind == wire.CANCEL:
                return self._on_cancel(identity, envelope, parts)
            if kind == wire.SUBOPERATION_STATUS:
                return self._on_suboperation_status(identity, envelope, parts)
            if kind == wire.CHUNK:
                return self._on_chunk(identity, envelope, parts)
        except wire.WireError as error:
            return [self._fault("bad_field", identity, f"{kind}: {error}")]
        if kind == wire.HEARTBEAT:
            return []
        return [self._fault("unexpected_kind", identity, f"{kind} from an acceptor")]

    def on_backend(self, identity: bytes, frames: Sequence[Frame], now: float) -> list[Action]:
        """A message from the worker `identity`: `frames` follow its routing id."""
        parsed = self._parse(identity, frames)
        if isinstance(parsed, Fault):
            return [parsed]
        envelope, parts = parsed
        kind = envelope["kind"]
        try:
            if kind == wire.READY:
                return self._on_ready(identity, envelope, now)
            worker = self._workers.get(identity)
            if worker is None:  # a routing that restarted, or buried it: it must join again
                disconnect = wire.pack_envelope(wire.DISCONNECT)
                return [
                    self._fault("unknown_worker", identity, f"{kind} before ready"),
                    SendToWorker(identity, (disconnect,), wire.DISCONNECT),
                ]
            worker.expires = now + self._patience
            if kind == wire.CREDIT:
                worker.credits += integer_field(envelope, "credits", 1, _MAX_CREDITS)
                self._refresh(worker)
                return self._dispatch(now)
            if kind in (wire.REPLY, wire.ERROR):
                return self._on_reply(worker, envelope, parts, now)
            if kind == wire.SUBOPERATION:
                return self._on_suboperation(worker, envelope, parts)
            if kind == wire.CHUNK_ACK:
                return self._on_chunk_ack(worker, envelope, parts)
            if kind == wire.EVENT_REPORT:
                return self._on_event_report(worker, envelope, parts)
        except wire.WireError as error:
            return [self._fault("bad_field", identity, f"{kind}: {error}")]
        if kind == wire.HEARTBEAT:
            return []
        return [self._fault("unexpected_kind", identity, f"{kind} from a worker")]

    def on_tick(self, now: float) -> list[Action]:
        """Bury silent workers, forget silent acceptors, expire queued requests, heartbeat."""
        self._next_tick = now + self._interval
        actions: list[Action] = []
        for worker in [worker for worker in self._workers.values() if worker.expires <= now]:
            actions += self._bury(worker, "silent")
        for identity in [key for key, expires in self._acceptors.items() if expires <= now]:
            actions += self._forget(identity)
        for request in [r for r in self._queue.values() if self._expired(r, now)]:
            del self._queue[request.key]
            actions.append(self._timeout(request))
        for worker in self._workers.values():
            worker.paused = False
            self._refresh(worker)
            actions.append(SendToWorker(worker.identity, (_HEARTBEAT,), wire.HEARTBEAT))
        # Acceptors hear how many workers are alive (their readiness depends on it).
        beat = wire.pack_envelope(wire.HEARTBEAT, workers=len(self._workers))
        actions += [
            SendToAcceptor(identity, (beat,), wire.HEARTBEAT) for identity in self._acceptors
        ]
        return actions + self._dispatch(now)

    def on_undeliverable(
        self, actions: Sequence[SendToWorker | SendToAcceptor], now: float, *, busy: bool
    ) -> list[Action]:
        """Sends to one peer failed: it is gone (EHOSTUNREACH) or `busy` (EAGAIN).

        `actions` are the failed send and any later ones for the same peer that the I/O loop
        held back. Requests among them never left, so they go back to the front of the queue
        without counting a retry; a worker that is gone is dead (its other requests follow the
        failure rules); a busy worker gets nothing more until the next tick. Anything else is
        dropped and counted (heartbeats excepted).
        """
        first = actions[0]
        worker = self._workers.get(first.worker) if isinstance(first, SendToWorker) else None
        result: list[Action] = []
        returned: list[_Request] = []
        for action in actions:
            if isinstance(action, SendToWorker) and worker is not None and action.request:
                request = self._in_flight.get(action.request)
                if request is not None and request.worker == worker.identity:
                    request.parts = action.frames
                    returned.append(request)
                    continue
            if action.kind not in (wire.HEARTBEAT, wire.REQUEST):
                self.counters["dropped"] += 1
                peer = action.acceptor if isinstance(action, SendToAcceptor) else action.worker
                why = "busy" if busy else "gone"
                result.append(self._fault("undeliverable", peer, f"{action.kind}: peer {why}"))
        if worker is None:
            return result
        for request in reversed(returned):
            del self._in_flight[request.key]
            del worker.requests[request.key]
            worker.credits += 1
            request.worker = None
            if request.stream:  # its chunks went with it: it cannot be sent again
                status = worker_lost_status(request.envelope["command_field"])
                result.append(self._answer(request, status, "WorkerLost", "stream undeliverable"))
                continue
            self._queue[request.key] = request
            self._queue.move_to_end(request.key, last=False)
        if busy:
            worker.paused = True
            self._refresh(worker)
        else:
            result += self._bury(worker, "unreachable")
        return result + self._dispatch(now)

    def stats(self) -> dict[str, object]:
        """Queue depth, in-flight requests, credits, live peers, counters and faults."""
        return {
            "queue": len(self._queue),
            "in_flight": len(self._in_flight),
            "credits": sum(worker.credits for worker in self._workers.values()),
            "workers": len(self._workers),
            "acceptors": len(self._acceptors),
            **{
                name: self.counters[name]
                for name in (
                    "requests",
                    "replies",
                    "retries",
                    "dead_workers",
                    "dropped",
                    "timeouts",
                    "busy",
                    "cancelled",
                    "late_cancels",
                )
            },
            "faults": dict(self.faults),
        }

    # -- frontend -------------------------------------------------------------------------

    def _on_request(
        self, identity: bytes, envelope: wire.Envelope, parts: tuple[Part, ...], now: float
    ) -> list[Action]:
        key = request_key(envelope)
        deadline = deadline_of(envelope)
        command_field = integer_field(envelope, "command_field")
        if key[0].encode() != identity:
            return [self._fault("acceptor_mismatch", identity, f"request names {key[0]!r}")]
        if key in self._queue or key in self._in_flight:
            # PS3.7 C.5.x 0x0210 Duplicate invocation: answered, never silently dropped
            duplicate = _Request(key, identity, envelope, parts, None, False)
            return [
                self._fault("duplicate_request", identity, f"{key} is already pending"),
                self._answer(duplicate, 0x0210, "Duplicate", "message ID already in use"),
            ]
        self.counters["requests"] += 1
        stream = envelope.get("stream") is True
        request = _Request(
            key=key,
            acceptor=identity,
            envelope=envelope,
            parts=parts,
            deadline=deadline,
            idempotent=command_field in wire.IDEMPOTENT_COMMANDS and not stream,
            stream=stream,
        )
        if self._expired(request, now):
            return [self._timeout(request)]
        if len(self._queue) >= self._max_queue and not self._available:
            self.counters["busy"] += 1
            return [
                self._answer(request, StorageStatus.OUT_OF_RESOURCES, "Busy", "the queue is full")
            ]
        self._queue[key] = request
        return self._dispatch(now)

    def _on_cancel(
        self, identity: bytes, envelope: wire.Envelope, parts: tuple[Part, ...]
    ) -> list[Action]:
        key = request_key(envelope)
        if key[0].encode() != identity:
            return [self._fault("acceptor_mismatch", identity, f"cancel names {key[0]!r}")]
        queued = self._queue.pop(key, None)
        if queued is not None:
            self.counters["cancelled"] += 1
            return [self._answer(queued, Status.CANCEL, "Cancelled", "cancelled while queued")]
        request = self._in_flight.get(key)
        if request is None or request.worker is None:
            self.counters["late_cancels"] += 1
            return []
        request.cancelled = True
        return [SendToWorker(request.worker, parts, wire.CANCEL)]

    def _on_suboperation_status(
        self, identity: bytes, envelope: wire.Envelope, parts: tuple[Part, ...]
    ) -> list[Action]:
        name = envelope["worker"]
        if not isinstance(name, str):
            raise wire.WireError("worker is not a string")
        worker = name.encode()
        if worker not in self._workers:
            self.counters["dropped"] += 1
            return [self._fault("gone_worker", identity, f"status for lost worker {name!r}")]
        return [SendToWorker(worker, parts, wire.SUBOPERATION_STATUS)]

    def _on_chunk(
        self, identity: bytes, envelope: wire.Envelope, parts: tuple[Part, ...]
    ) -> list[Action]:
        key = request_key(envelope)
        if key[0].encode() != identity:
            return [self._fault("acceptor_mismatch", identity, f"chunk names {key[0]!r}")]
        request = self._in_flight.get(key)
        if request is not None and request.worker is not None and request.stream:
            return [SendToWorker(request.worker, parts, wire.CHUNK)]
        queued = self._queue.get(key)
        if queued is not None and queued.stream:
            queued.chunks.append(parts)
            return []
        self.counters["dropped"] += 1
        return [self._fault("stray_chunk", identity, f"no streamed request {key}")]

    # -- backend --------------------------------------------------------------------------

    def _on_ready(self, identity: bytes, envelope: wire.Envelope, now: float) -> list[Action]:
        credits = integer_field(envelope, "credits", 0, _MAX_CREDITS)
        try:
            name = identity.decode()
        except UnicodeDecodeError:
            return [self._fault("bad_identity", identity, "worker identity is not UTF-8")]
        actions: list[Action] = []
        worker = self._workers.get(identity)
        if worker is None:
            worker = self._workers[identity] = _Worker(identity, name, 0, now)
            actions.append(Notice(f"worker {name} joined with {credits} credits"))
        worker.expires = now + self._patience
        worker.draining = credits == 0
        worker.credits = max(0, credits - len(worker.requests))
        self._available.pop(identity, None)
        self._refresh(worker)
        return actions + self._dispatch(now)

    def _on_reply(
        self, worker: _Worker, envelope: wire.Envelope, parts: tuple[Part, ...], now: float
    ) -> list[Action]:
        final = envelope["kind"] == wire.ERROR or envelope["final"]
        if not isinstance(final, bool):
            raise wire.WireError("final is not a boolean")
        request = self._worker_request(worker, envelope)
        if isinstance(request, Fault):
            return [request]
        self.counters["replies"] += 1
        actions: list[Action] = [SendToAcceptor(request.acceptor, parts, envelope["kind"])]
        if final:
            del self._in_flight[request.key]
            del worker.requests[request.key]
            if not worker.draining:
                worker.credits += 1
            self._refresh(worker)
            actions += self._dispatch(now)
        return actions

    def _on_suboperation(
        self, worker: _Worker, envelope: wire.Envelope, parts: tuple[Part, ...]
    ) -> list[Action]:
        request = self._worker_request(worker, envelope)
        if isinstance(request, Fault):
            return [request]
        packed = repack(envelope, worker=worker.name)
        return [SendToAcceptor(request.acceptor, (packed, *parts[1:]), wire.SUBOPERATION)]

    def _on_event_report(
        self, worker: _Worker, envelope: wire.Envelope, parts: tuple[Part, ...]
    ) -> list[Action]:
        """A worker asks an acceptor to send an N-EVENT-REPORT on an association that may
        outlive the request it came from: routed by the envelope's acceptor, not in-flight."""
        acceptor = envelope["acceptor"]
        if not isinstance(acceptor, str) or acceptor.encode() not in self._acceptors:
            status = wire.pack_envelope(
                wire.SUBOPERATION_STATUS, worker=worker.name, sub_id=envelope["sub_id"], status=-1
            )
            return [SendToWorker(worker.identity, (status,), wire.SUBOPERATION_STATUS)]
        packed = repack(envelope, worker=worker.name)
        return [SendToAcceptor(acceptor.encode(), (packed, *parts[1:]), wire.EVENT_REPORT)]

    def _on_chunk_ack(
        self, worker: _Worker, envelope: wire.Envelope, parts: tuple[Part, ...]
    ) -> list[Action]:
        request = self._worker_request(worker, envelope)
        if isinstance(request, Fault):
            return [request]
        return [SendToAcceptor(request.acceptor, parts, wire.CHUNK_ACK)]

    def _worker_request(self, worker: _Worker, envelope: wire.Envelope) -> _Request | Fault:
        """The in-flight request a worker's message is about, or a stale_reply fault."""
        key = request_key(envelope)
        request = self._in_flight.get(key)
        if request is None or request.worker != worker.identity:
            return self._fault("stale_reply", worker.identity, f"no request {key} in flight")
        return request

    # -- routing --------------------------------------------------------------------------

    def _dispatch(self, now: float) -> list[Action]:
        """Send queued requests, oldest first, to the least recently used workers with credit."""
        actions: list[Action] = []
        while self._queue and self._available:
            _, request = self._queue.popitem(last=False)
            if self._expired(request, now):
                actions.append(self._timeout(request))
                continue
            identity = next(iter(self._available))
            worker = self._workers[identity]
            worker.credits -= 1
            self._available.move_to_end(identity)
            self._refresh(worker)
            worker.requests[request.key] = None
            request.worker = identity
            self._in_flight[request.key] = request
            parts = request.parts
            if not request.idempotent:
                request.parts = ()
            actions.append(SendToWorker(identity, parts, wire.REQUEST, request=request.key))
            actions += [SendToWorker(identity, chunk, wire.CHUNK) for chunk in request.chunks]
            request.chunks = []
        return actions

    def _refresh(self, worker: _Worker) -> None:
        if worker.credits > 0 and not worker.paused:
            self._available.setdefault(worker.identity)
        else:
            self._available.pop(worker.identity, None)

    def _bury(self, worker: _Worker, why: str) -> list[Action]:
        """A worker is dead: repeat its idempotent requests once, fail the others."""
        del self._workers[worker.identity]
        self._available.pop(worker.identity, None)
        self.counters["dead_workers"] += 1
        actions: list[Action] = [
            Notice(f"worker {worker.name} is dead ({why}), {len(worker.requests)} in flight", True)
        ]
        retries: list[_Request] = []
        for key in worker.requests:
            request = self._in_flight.pop(key)
            request.worker = None
            if request.acceptor not in self._acceptors:
                self.counters["dropped"] += 1
            elif request.cancelled:
                self.counters["cancelled"] += 1
                actions.append(self._answer(request, Status.CANCEL, "Cancelled", "worker lost"))
            elif request.idempotent and request.retry == 0 and request.parts:
                request.retry = 1
                request.envelope["retry"] = 1
                request.parts = (repack(request.envelope), *request.parts[1:])
                retries.append(request)
            else:
                status = worker_lost_status(request.envelope["command_field"])
                text = f"worker {worker.name} died while running the request"
                actions.append(self._answer(request, status, "WorkerLost", text))
        for request in reversed(retries):
            self.counters["retries"] += 1
            self._queue[request.key] = request
            self._queue.move_to_end(request.key, last=False)
        return actions

    def _forget(self, identity: bytes) -> list[Action]:
        """An acceptor went silent: drop its queued requests, cancel those in flight."""
        del self._acceptors[identity]
        actions: list[Action] = [Notice(f"acceptor {identity!r} is silent, forgotten", True)]
        for request in [r for r in self._queue.values() if r.acceptor == identity]:
            del self._queue[request.key]
            self.counters["dropped"] += 1
        for request in self._in_flight.values():
            if request.acceptor == identity and not request.cancelled and request.worker:
                request.cancelled = True
                acceptor, assoc_id, msg_id = request.key
                cancel = wire.pack_envelope(
                    wire.CANCEL, acceptor=acceptor, assoc_id=assoc_id, msg_id=msg_id
                )
                actions.append(SendToWorker(request.worker, (cancel,), wire.CANCEL))
        return actions

    # -- helpers --------------------------------------------------------------------------

    def _parse(
        self, identity: bytes, frames: Sequence[Part]
    ) -> tuple[wire.Envelope, tuple[Part, ...]] | Fault:
        if not frames or len(frames[0]) != 0:
            return self._fault("no_delimiter", identity, "message without the empty delimiter")
        if not 2 <= len(frames) <= 4:
            return self._fault("frame_count", identity, f"{len(frames) - 1} body frames")
        try:
            head = frames[1]
            envelope = wire.unpack_envelope(head if isinstance(head, bytes) else head.bytes)
        except wire.WireError as error:
            return self._fault("bad_envelope", identity, str(error))
        return envelope, tuple(frames[1:])

    def _fault(self, kind: str, peer: bytes, detail: str) -> Fault:
        self.faults[kind] += 1
        return Fault(kind, peer, detail)

    @staticmethod
    def _expired(request: _Request, now: float) -> bool:
        return request.deadline is not None and request.deadline <= now

    def _timeout(self, request: _Request) -> SendToAcceptor:
        self.counters["timeouts"] += 1
        return self._answer(
            request, StorageStatus.OUT_OF_RESOURCES, "Timeout", "deadline passed while queued"
        )

    def _answer(self, request: _Request, status: int, error_type: str, text: str) -> SendToAcceptor:
        envelope = wire.error_envelope(request.envelope, status, error_type, text)
        return SendToAcceptor(request.acceptor, (envelope,), wire.ERROR)
