# The acceptor side of the ZeroMQ link: a Dispatcher that sends requests through the broker.
#
# Rules: one DEALER socket per acceptor process, identity = acceptor id, driven by the
# acceptor's event loop (zmq.asyncio). Requests go out as [b"", envelope, command, dataset]
# (broker.wire); the dataset frame is sent without copying above 64 KiB. Every request has a
# deadline: past it, or when the broker is lost (heartbeats, Paranoid Pirate), the request
# gets a final failure response here, so an SCU never waits forever. Nothing in this module
# knows the asyncio transport: it talks to the association only through ReplySink.
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from broker import wire
from broker.embedded import EmbeddedBroker
from broker.liveness import Liveness
from node.dimse.commands import decode_command, encode_command
from node.dimse.messages import CommandField, CStoreRQ, failure_response
from node.dimse.status import Status, StorageStatus
from node.observability import HANDOFFS, set_broker_gauges
from node.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    file_meta,
    open_handoff,
    sweep_handoffs,
    write_all,
    write_handoff,
)

if TYPE_CHECKING:
    from node.dispatch import ReplySink, ServiceRequest

log = logging.getLogger("dicomnode.acceptor.bridge")

#: Deadline for requests when the AE has no dimse_timeout: nothing waits forever.
DEFAULT_REQUEST_TIMEOUT = 600.0


#: C-STORE data sets of at least this size go to the workers as a hand-off spool file (when
#: the acceptor shares their file system: `handoff_directory`) instead of through the sockets.
HANDOFF_THRESHOLD = 64 << 10

#: Unacknowledged streamed bytes per stream before the acceptor stops reading that socket.
STREAM_WINDOW = 8 << 20


class BridgeStream:
    """A data set streamed to one worker in chunks (wire.CHUNK), with an ack window."""

    def __init__(self, dispatcher: ZmqDispatcher, request: ServiceRequest, sink: ReplySink) -> None:
        self.dispatcher = dispatcher
        self.request = request
        self.sink = sink
        self.sequence = 0
        self.unacknowledged = 0
        self.paused = False
        self.failed = False

    def write(self, data: bytes, last: bool) -> bool:
        """Send one chunk; True when the caller should stop reading until resumed."""
        if self.failed:
            return False
        association = self.request.association
        envelope = wire.pack_envelope(
            wire.CHUNK,
            acceptor=self.dispatcher.acceptor_id,
            assoc_id=association.assoc_id,
            msg_id=self.request.message_id,
            seq=self.sequence,
            last=last,
        )
        self.sequence += 1
        self.unacknowledged += len(data)
        self.dispatcher.send_frames([b"", envelope, b"", data])
        self.paused = self.unacknowledged > STREAM_WINDOW and not last
        return self.paused

    def discard(self) -> None:
        """The acceptor refused the request mid-stream (it answered it already): forget it
        here too; the cancel the acceptor sent makes the worker drop its spool."""
        self.failed = True
        key = (self.request.association.assoc_id, self.request.message_id)
        self.dispatcher.streams.pop(key, None)
        self.dispatcher.pending.pop(key, None)

    def acknowledged(self, size: int) -> None:
        self.unacknowledged = max(0, self.unacknowledged - size)
        if self.paused and self.unacknowledged <= STREAM_WINDOW // 2:
            self.paused = False
            resume = getattr(self.sink, "resume_stream", None)
            if resume is not None:
                resume()


class HandoffStream:
    """A streamed C-STORE data set written into a hand-off spool as it arrives (never held
    whole); its request leaves, naming the spool, once the last chunk is written."""

    def __init__(
        self,
        dispatcher: ZmqDispatcher,
        request: ServiceRequest,
        sink: ReplySink,
        path: Path,
        descriptor: int,
        header_length: int,
    ) -> None:
        self.dispatcher = dispatcher
        self.request = request
        self.sink = sink
        self.path = path
        self.descriptor: int | None = descriptor
        self.header_length = header_length
        self.submitted = False

    def write(self, data: bytes, last: bool) -> bool:
        """Append one chunk (an OSError, e.g. a full disk, refuses the request); never asks
        the caller to pause: the write is done when this returns."""
        if self.descriptor is None:
            return False
        write_all(self.descriptor, b"", data)
        if last:
            os.close(self.descriptor)
            self.descriptor = None
            self.submitted = True
            self.dispatcher.submit_spooled(self.request, self.sink, (self.path, self.header_length))
        return False

    def discard(self) -> None:
        """Refused or cut off before its last chunk: the spool is nobody's."""
        if self.submitted:  # its request is out: the spool is the worker's now
            return
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None
        with contextlib.suppress(OSError):
            self.path.unlink()


class ZmqDispatcher:
    """Dispatcher over ZeroMQ: acceptor -> broker -> workers (DESIGN.md flows), or, with
    `workers_endpoint` instead of `broker`, acceptor -> workers with the broker's routing in
    this process (broker.embedded: the workers connect to that endpoint)."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        workers_endpoint: str | None = None,
        acceptor_id: str | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        curve: dict[str, bytes] | None = None,
        handoff_directory: str | os.PathLike[str] | None = None,
        handoff_threshold: int = HANDOFF_THRESHOLD,
    ) -> None:
        if (broker is None) == (workers_endpoint is None):
            raise ValueError("give a broker endpoint or a workers endpoint, not both")
        if workers_endpoint is not None and curve:
            raise ValueError("CURVE needs a broker process: the embedded routing has no keys")
        self.broker = broker
        self.workers_endpoint = workers_endpoint
        self.acceptor_id = acceptor_id or (
            f"a-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self._identity = self.acceptor_id.encode()
        #: The broker's routing in this process (with workers_endpoint), once started.
        self.embedded: EmbeddedBroker | None = None
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self.link = Liveness.starting(heartbeat_interval, heartbeat_liveness, time.monotonic())
        self.request_timeout = request_timeout
        self.curve = curve
        #: Where C-STORE data sets are handed to the workers as files (None: by socket).
        self.handoff_directory = Path(handoff_directory) if handoff_directory else None
        self.handoff_threshold = handoff_threshold
        #: The hand-off spool of each request in flight that has one.
        self.handoffs: dict[tuple[int, int], Path] = {}
        self.context: zmq.asyncio.Context | None = None
        self.socket: zmq.asyncio.Socket | None = None
        self.pending: dict[tuple[int, int], tuple[ServiceRequest, ReplySink, float]] = {}
        self.streams: dict[tuple[int, int], BridgeStream] = {}
        #: assoc_id -> its sink, for messages that outlive a request (event_report).
        self.associations: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self.invalid_messages = 0
        self.reconnects = 0
        #: Workers alive, as the broker's last heartbeat said (None: not heard yet).
        self.live_workers: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.handoff_directory is not None:
            self._prepare_handoff(self.handoff_directory)
        if self.workers_endpoint is not None:
            self.embedded = EmbeddedBroker(
                self.workers_endpoint,
                self._deliver,
                heartbeat_interval=self.heartbeat_interval,
                heartbeat_liveness=self.heartbeat_liveness,
            )
            self.embedded.on_stats = set_broker_gauges
            await self.embedded.start()
            self._tasks = [asyncio.create_task(self._heartbeat_loop())]
            return
        self.context = zmq.asyncio.Context()
        self.socket = self._connect()
        self._tasks = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._heartbeat_loop()),
        ]

    def _connect(self) -> zmq.asyncio.Socket:
        assert self.context is not None  # noqa: S101 - start() creates it
        assert self.broker is not None  # noqa: S101 - only without the embedded routing
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self._identity)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve:
            sock.curve_secretkey = self.curve["secret"]
            sock.curve_publickey = self.curve["public"]
            sock.curve_serverkey = self.curve["server"]
        sock.connect(self.broker)
        self.link.reconnected(time.monotonic())
        return sock

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(Status.PROCESSING_FAILURE, "acceptor shutting down")
        if self.embedded is not None:
            await self.embedded.close()
        if self.socket is not None:
            self.socket.close(0)
        if self.context is not None:
            self.context.term()

    def _prepare_handoff(self, directory: Path) -> None:
        """Make the hand-off directory and sweep spools whose requests are long over (every
        request ends by its deadline); without the directory, data sets go by socket."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log.warning("no hand-off directory %s (%s): data sets go by socket", directory, error)
            self.handoff_directory = None
            return
        swept = sweep_handoffs(directory, time.time() - self.request_timeout - 60.0)
        if swept:
            log.info("removed %d stale hand-off spool(s) from %s", swept, directory)

    def readiness(self) -> tuple[bool, str]:
        """Ready when the broker was heard recently and reports at least one live worker."""
        now = time.monotonic()
        if self.link.lost(now):
            return False, f"broker silent for {self.link.silent_for(now):.1f} s"
        if not self.live_workers:
            return False, "no live worker"
        return True, f"ready: {self.live_workers} worker(s)"

    # --- Dispatcher -------------------------------------------------------------------------

    def submit(self, request: ServiceRequest, sink: ReplySink) -> None:
        self._submit(request, sink, stream=False)

    def submit_spooled(
        self, request: ServiceRequest, sink: ReplySink, spool: tuple[Path, int]
    ) -> None:
        """Send a request whose data set is in the hand-off spool (path, header length)."""
        self._submit(request, sink, stream=False, spool=spool)

    def open_stream(self, request: ServiceRequest, sink: ReplySink) -> BridgeStream | HandoffStream:
        """Start a request whose data set follows in chunks (DESIGN.md "Large datasets"):
        into a hand-off spool when there is a hand-off directory (the request leaves with the
        last chunk), else to a worker in chunks through the broker."""
        spool = self._open_handoff(request)
        if spool is not None:
            return HandoffStream(self, request, sink, *spool)
        stream = BridgeStream(self, request, sink)
        self.streams[(request.association.assoc_id, request.message_id)] = stream
        self._submit(request, sink, stream=True)
        return stream

    def _submit(
        self,
        request: ServiceRequest,
        sink: ReplySink,
        *,
        stream: bool,
        spool: tuple[Path, int] | None = None,
    ) -> None:
        association = request.association
        self.associations[association.assoc_id] = sink
        key = (association.assoc_id, request.message_id)
        now = time.time()
        timeout = self.request_timeout
        if request.deadline is not None:
            timeout = max(0.0, request.deadline - asyncio.get_running_loop().time())
        deadline = now + timeout
        envelope = wire.pack_envelope(
            wire.REQUEST,
            acceptor=self.acceptor_id,
            assoc_id=association.assoc_id,
            msg_id=request.message_id,
            command_field=request.command.COMMAND_FIELD,
            ctx_id=request.context_id,
            sop_class=request.abstract_syntax,
            ts_uid=request.transfer_syntax,
            calling_aet=association.calling_ae_title,
            called_aet=association.called_ae_title,
            peer_address=association.peer_address,
            peer_port=association.peer_port,
            deadline=deadline,
            storage_contexts=self._storage_contexts(request),
            user_identity_type=association.user_identity_type,
            username=association.username,
            sop_class_extended=[list(item) for item in association.sop_class_extended],
            stream=stream,
            **self._handoff(key, request, spool),
        )
        dataset = b"" if key in self.handoffs else request.dataset or b""
        self.pending[key] = (request, sink, time.monotonic() + timeout)
        self.send_frames([b"", envelope, encode_command(request.command), dataset])

    @staticmethod
    def _storage_contexts(request: ServiceRequest) -> list[list[object]]:
        """The association's storage contexts, for a C-GET only (its sub-operations go out
        on them): an SCU proposing every storage class (pynetdicom's default list: 128) would
        make every other request's envelope 6 KB to pack, route and unpack (~80 us per
        request in a microbenchmark)."""
        if request.command.COMMAND_FIELD != CommandField.C_GET_RQ:
            return []
        return [
            [c.context_id, c.abstract_syntax, c.transfer_syntax]
            for c in request.association.storage_contexts
        ]

    def _handoff(
        self, key: tuple[int, int], request: ServiceRequest, spool: tuple[Path, int] | None
    ) -> dict[str, object]:
        """The envelope fields naming the request's hand-off spool (a Part 10 file the worker
        fsyncs and renames into place): `spool`, streamed there already, or a C-STORE data set
        of at least handoff_threshold bytes written now; none: the data set goes by socket."""
        dataset = request.dataset
        if spool is None and dataset is not None and len(dataset) >= self.handoff_threshold:
            header = self._handoff_header(request)
            if header is not None and self.handoff_directory is not None:
                try:
                    path = write_handoff(self.handoff_directory, self.acceptor_id, header, dataset)
                except OSError as error:  # e.g. disk full: the socket still works
                    log.warning("hand-off spool not written (%s): data set goes by socket", error)
                else:
                    spool = (path, len(header))
        if spool is None:
            return {}
        self.handoffs[key] = spool[0]
        HANDOFFS.inc()
        return {"spool": str(spool[0]), "spool_offset": spool[1]}

    def _handoff_header(self, request: ServiceRequest) -> bytes | None:
        """The Part 10 meta header of a C-STORE data set's hand-off spool, None for other
        requests or without a hand-off directory."""
        command = request.command
        if self.handoff_directory is None or not isinstance(command, CStoreRQ):
            return None
        try:
            return file_meta(
                command.affected_sop_class_uid,
                command.affected_sop_instance_uid,
                request.transfer_syntax,
                IMPLEMENTATION_CLASS_UID,
                IMPLEMENTATION_VERSION_NAME,
                request.association.calling_ae_title,
            )
        except UnicodeError:  # a UID that is not ASCII: the worker answers it by socket
            return None

    def _open_handoff(self, request: ServiceRequest) -> tuple[Path, int, int] | None:
        """A new hand-off spool for a streamed C-STORE data set: (path, descriptor, header
        length), its meta header written; None when there is none to be had."""
        header = self._handoff_header(request)
        if header is None or self.handoff_directory is None:
            return None
        try:
            path, descriptor = open_handoff(self.handoff_directory, self.acceptor_id, header)
        except OSError as error:
            log.warning("hand-off spool not opened (%s): data set streams by socket", error)
            return None
        return path, descriptor, len(header)

    def _drop_handoff(self, key: tuple[int, int]) -> None:
        """The request ended here, not at a worker: its spool, if any, is nobody's."""
        path = self.handoffs.pop(key, None)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def cancel(self, assoc_id: int, message_id: int) -> None:
        if (assoc_id, message_id) not in self.pending:
            return
        self.send_frames(
            [
                b"",
                wire.pack_envelope(
                    wire.CANCEL, acceptor=self.acceptor_id, assoc_id=assoc_id, msg_id=message_id
                ),
            ]
        )

    # --- plumbing ---------------------------------------------------------------------------

    def send_frames(self, frames: list[bytes]) -> None:
        if self.embedded is not None:  # routed here: queued by the state when no worker has credit
            self.embedded.send(self._identity, frames)
            return
        sock = self.socket
        if sock is None:
            return
        large = len(frames[-1]) > wire.ZERO_COPY_THRESHOLD
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=not large)
        except zmq.Again:
            log.warning("broker link full: request answered with out of resources")
            envelope = wire.unpack_envelope(frames[1])
            if envelope["kind"] == wire.CHUNK:  # the worker would miss it: give up the stream
                key = (envelope["assoc_id"], envelope["msg_id"])
                self.cancel(*key)
                self._fail(key, StorageStatus.OUT_OF_RESOURCES, "broker link is full")
            elif envelope["kind"] == wire.REQUEST:
                self._fail(
                    (envelope["assoc_id"], envelope["msg_id"]),
                    StorageStatus.OUT_OF_RESOURCES,
                    "broker link is full",
                )

    def _fail(self, key: tuple[int, int], status: int, comment: str) -> None:
        self._drop_handoff(key)
        stream = self.streams.pop(key, None)
        if stream is not None:
            stream.failed = True
        entry = self.pending.pop(key, None)
        if entry is None:
            return
        request, sink, _deadline = entry
        sink.send_response(request, failure_response(request.command, status, comment), None, True)

    def _fail_all(self, status: int, comment: str) -> None:
        for key in list(self.pending):
            self._fail(key, status, comment)

    async def _read_loop(self) -> None:
        while True:
            sock = self.socket
            if sock is None:
                await asyncio.sleep(self.heartbeat_interval)
                continue
            try:
                frames = await sock.recv_multipart(copy=False)
            except asyncio.CancelledError:
                # closing a socket cancels its pending receive: after a reconnect, read the
                # new socket; only our own cancellation (close()) ends the loop
                if self._closing or sock is self.socket:
                    raise
                continue
            except zmq.ZMQError as error:
                if self._closing:
                    return
                log.warning("broker link error: %s", error)
                await asyncio.sleep(0.1)
                continue
            self._deliver([frame.buffer for frame in frames])

    def _deliver(self, frames: list[Any]) -> None:
        """A message from the broker (or the embedded routing): `[b"", envelope, ...]`."""
        self.link.heard(time.monotonic())
        try:
            self._on_message(frames)
        except wire.WireError as error:
            self.invalid_messages += 1
            log.warning("invalid message from the broker: %s", error)
        except Exception:
            self.invalid_messages += 1
            log.exception("message from the broker could not be handled")

    def _on_message(self, frames: list[memoryview]) -> None:
        _routing, envelope, command, dataset = wire.split_frames(frames)
        kind = envelope["kind"]
        if kind == wire.HEARTBEAT:
            workers = envelope.get("workers")
            if isinstance(workers, int):
                self.live_workers = workers
            return
        key = (int(envelope.get("assoc_id", -1)), int(envelope.get("msg_id", -1)))
        if kind == wire.REPLY:
            entry = self.pending.get(key)
            if entry is None:
                return
            request, sink, _deadline = entry
            final = bool(envelope["final"])
            if final:
                del self.pending[key]
                self.streams.pop(key, None)
                self.handoffs.pop(key, None)  # the worker adopted or removed it
            data = bytes(dataset) if len(dataset) else None
            sink.send_response(request, decode_command(command), data, final)
        elif kind == wire.ERROR:
            log.warning(
                "request %s failed in the cluster: %s: %s",
                key,
                envelope["type"],
                envelope["message"],
            )
            self._fail(key, int(envelope["status"]), f"{envelope['type']}: {envelope['message']}")
        elif kind == wire.CHUNK_ACK:
            stream = self.streams.get(key)
            if stream is not None:
                stream.acknowledged(int(envelope["size"]))
        elif kind == wire.EVENT_REPORT:
            asyncio.get_running_loop().create_task(self._event_report(envelope, bytes(dataset)))
        elif kind == wire.SUBOPERATION:
            entry = self.pending.get(key)
            if entry is None:  # its request is over here: the worker must not wait for it
                self._suboperation_status(envelope, 0xA702)
                return
            asyncio.get_running_loop().create_task(
                self._suboperation(entry[0], entry[1], envelope, bytes(dataset))
            )

    async def _suboperation(
        self, request: ServiceRequest, sink: ReplySink, envelope: wire.Envelope, dataset: bytes
    ) -> None:
        deadline = None
        if isinstance(envelope.get("deadline"), int | float):  # the worker's, in unix time
            loop = asyncio.get_running_loop()
            deadline = loop.time() + float(envelope["deadline"]) - time.time()
        try:
            status = await sink.store_suboperation(
                request,
                str(envelope["sop_class"]),
                str(envelope["sop_instance"]),
                str(envelope["ts_uid"]),
                dataset,
                deadline,
            )
        except Exception as error:  # noqa: BLE001 - any failure is a failed sub-operation
            log.warning("C-GET sub-operation failed: %s", error)
            status = 0xA702
        self._suboperation_status(envelope, status)

    def _suboperation_status(self, envelope: wire.Envelope, status: int) -> None:
        self.send_frames(
            [
                b"",
                wire.pack_envelope(
                    wire.SUBOPERATION_STATUS,
                    worker=envelope.get("worker", ""),
                    sub_id=envelope["sub_id"],
                    status=status,
                    acceptor=self.acceptor_id,
                ),
            ]
        )

    async def _event_report(self, envelope: wire.Envelope, dataset: bytes) -> None:
        """Send a worker's N-EVENT-REPORT on its association if that is still open."""
        status: int | None = None
        sink = self.associations.get(int(envelope["assoc_id"]))
        sender = getattr(sink, "send_event_report", None)
        if sender is not None:
            try:
                status = await sender(
                    int(envelope["ctx_id"]),
                    str(envelope["sop_class"]),
                    str(envelope["sop_instance"]),
                    int(envelope["event_type"]),
                    dataset or None,
                )
            except Exception as error:  # noqa: BLE001 - not delivered: the worker falls back
                log.warning("N-EVENT-REPORT on association failed: %s", error)
        self._suboperation_status(envelope, -1 if status is None else status)

    async def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.send_frames([b"", wire.pack_envelope(wire.HEARTBEAT, acceptor=self.acceptor_id)])
            for key, (_request, _sink, deadline) in list(self.pending.items()):
                if now > deadline:
                    self.cancel(*key)
                    self._fail(
                        key, Status.PROCESSING_FAILURE, "no response from the cluster in time"
                    )
            if self.link.lost(now) and self.embedded is None:
                log.warning("broker silent for %.1f s: reconnecting", self.link.silent_for(now))
                self._fail_all(Status.PROCESSING_FAILURE, "broker connection lost")
                if self.socket is not None:
                    self.socket.close(0)
                self.socket = self._connect()
                self.reconnects += 1
