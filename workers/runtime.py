# The worker process: takes DIMSE requests from the broker and runs the service handlers.
#
# Rules: one ZeroMQ context and one DEALER socket per Worker (one Worker per broker or
# acceptor endpoint the process serves: WorkerSet), the socket shared by the Worker's
# main loop and its handler threads under one lock (a ZeroMQ socket may move between threads
# given a full memory barrier, which the lock is; nobody touches it without the lock). The
# main loop waits on the socket's ZMQ_FD with an OS poll, outside the lock, then receives
# under it; handler threads (as many as credits granted to the broker) send their replies on
# it directly, no hop through the main thread. Because ZMQ_FD is edge-triggered, whoever
# releases the lock after using the socket checks ZMQ_EVENTS and, when a message waits, wakes
# the main loop through a pipe. Heartbeats both ways (Paranoid Pirate): a silent broker makes
# the worker reconnect with a fresh socket and announce itself again. Every request ends with
# one final reply (workers.service guarantees it) or an `error`.
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import select
import socket
import stat
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from broker import wire
from broker.liveness import Liveness
from node.dimse.commands import decode_command, encode_command
from node.dimse.messages import Request, Response
from node.dimse.status import Status
from node.dispatch import AssociationInfo, QueuingChannel, ServiceRequest, StorageContext
from node.part10 import HANDOFF_PREFIX
from workers.service import handle_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.dimse.commands import DimseMessage
    from workers.handlers.common import Handlers

log = logging.getLogger("dicomnode.worker")

SUBOPERATION_TIMEOUT = 120.0


@dataclass
class WorkerConfig:
    """What a worker process needs (from `dicomnode worker` or `dicomnode serve`)."""

    broker: str
    threads: int = 4
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 3
    #: On stop, seconds the running requests get to finish (their replies still go out).
    drain_timeout: float = 30.0
    identity: str = field(
        default_factory=lambda: f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    curve: dict[str, bytes] | None = None


class _Link:
    """The DEALER socket to the broker, used by any thread under `lock`, and the pipe that
    wakes the main loop when a message waits that its poll on ZMQ_FD may not see."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.socket: zmq.Socket[Any] | None = None
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)

    @property
    def wake_fd(self) -> int:
        return self._wake_reader

    def send(self, frames: list[Any]) -> None:
        """Send one message (dropped once the link is closed), from any thread."""
        large = any(
            isinstance(f, bytes | memoryview) and len(f) > wire.ZERO_COPY_THRESHOLD for f in frames
        )
        with self.lock:
            sock = self.socket
            if sock is None:
                return
            sock.send_multipart(frames, copy=not large)
            waiting = bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
        if waiting:
            self.wake()

    def receive_all(self) -> list[list[zmq.Frame]]:
        """Every message waiting on the socket now (the main loop, after its poll)."""
        messages: list[list[zmq.Frame]] = []
        with self.lock:
            sock = self.socket
            while sock is not None and int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                messages.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
        return messages

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending already
            os.write(self._wake_writer, b"\0")

    def drain_wakes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_reader, 4096):
                pass

    def replace(self, sock: zmq.Socket[Any] | None) -> None:
        """Use `sock` from now on (a reconnect; None: closed); the old one is closed."""
        with self.lock:
            old, self.socket = self.socket, sock
        if old is not None:
            old.close(0)

    def close(self) -> None:
        self.replace(None)
        os.close(self._wake_reader)
        os.close(self._wake_writer)


class WorkerChannel(QueuingChannel):
    """The Channel of one request: replies, C-GET sub-operations, cancel."""

    def __init__(self, worker: Worker, envelope: wire.Envelope, request: ServiceRequest) -> None:
        super().__init__()
        self.worker = worker
        self.envelope = envelope
        self.request = request
        self.finished = False

    def respond(self, response: DimseMessage, dataset: bytes | None, final: bool) -> None:
        envelope = self.envelope
        header = wire.pack_envelope(
            wire.REPLY,
            acceptor=envelope["acceptor"],
            assoc_id=envelope["assoc_id"],
            msg_id=envelope["msg_id"],
            final=final,
            status=response.status if isinstance(response, Response) else 0,
        )
        command = encode_command(response)  # may raise: then nothing is marked finished
        self.worker.outbox.send([b"", header, command, dataset or b""])
        self.finished = self.finished or final

    def store_nowait(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> _RemoteSubOperation:
        """Queue a C-GET sub-operation at the acceptor; its status arrives later."""
        envelope = self.envelope
        return self._send_suboperation(
            wire.SUBOPERATION,
            dataset,
            deadline=time.time() + SUBOPERATION_TIMEOUT,  # the acceptor sends nothing later
            acceptor=envelope["acceptor"],
            assoc_id=envelope["assoc_id"],
            msg_id=envelope["msg_id"],
            sop_class=sop_class_uid,
            sop_instance=sop_instance_uid,
            ts_uid=transfer_syntax,
        )

    def _send_suboperation(
        self, kind: str, dataset: bytes, **fields: object
    ) -> _RemoteSubOperation:
        """Send `kind` through the acceptor; its suboperation_status wakes the result."""
        sub_id, waiter = self.worker.new_suboperation()
        header = wire.pack_envelope(kind, sub_id=sub_id, **fields)
        try:
            self.worker.outbox.send([b"", header, b"", dataset])
        except BaseException:
            self.worker.forget_suboperation(sub_id)
            raise
        return _RemoteSubOperation(self.worker, sub_id, waiter, str(fields.get("sop_instance", "")))

    def event_report(
        self, sop_class_uid: str, sop_instance_uid: str, event_type: int, dataset: bytes | None
    ) -> int | None:
        """N-EVENT-REPORT on the requesting association through its acceptor (wire kind
        event_report); None when the acceptor says it is gone or does not answer in time."""
        envelope = self.envelope
        status = self._send_suboperation(
            wire.EVENT_REPORT,
            dataset or b"",
            acceptor=envelope["acceptor"],
            assoc_id=envelope["assoc_id"],
            ctx_id=envelope["ctx_id"],
            event_type=event_type,
            sop_class=sop_class_uid,
            sop_instance=sop_instance_uid,
            ts_uid=envelope["ts_uid"],
        ).status(SUBOPERATION_TIMEOUT)
        return status if status is not None and status >= 0 else None


@dataclass
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    status: int = 0xA702


class _RemoteSubOperation:
    """A sub-operation sent to the acceptor (node.dispatch.SubOperation)."""

    def __init__(self, worker: Worker, sub_id: int, waiter: _Waiter, sop_instance: str) -> None:
        self.worker = worker
        self.sub_id = sub_id
        self.waiter = waiter
        self.sop_instance = sop_instance
        self.sent = time.monotonic()

    def done(self) -> bool:
        return self.waiter.event.is_set()

    def status(self, timeout: float) -> int | None:
        """The status the acceptor reported, or None when none came within `timeout` of
        sending (not of asking: several may be in flight)."""
        remaining = max(0.0, self.sent + timeout - time.monotonic())
        try:
            return self.waiter.status if self.waiter.event.wait(remaining) else None
        finally:
            self.worker.forget_suboperation(self.sub_id)

    def result(self) -> int:
        status = self.status(SUBOPERATION_TIMEOUT)
        if status is None:
            log.warning("C-GET sub-operation %s timed out", self.sop_instance)
            return 0xA702
        return status


def request_from_envelope(envelope: wire.Envelope, command: bytes, dataset: Any) -> ServiceRequest:
    """Rebuild the ServiceRequest the acceptor sent (PS3.7 command + opaque data set)."""
    storage = tuple(
        StorageContext(int(item[0]), str(item[1]), str(item[2]))
        for item in envelope.get("storage_contexts") or ()
    )
    association = AssociationInfo(
        assoc_id=int(envelope["assoc_id"]),
        calling_ae_title=str(envelope["calling_aet"]),
        called_ae_title=str(envelope["called_aet"]),
        peer_address=str(envelope.get("peer_address", "")),
        peer_port=int(envelope.get("peer_port", 0)),
        local_ae_title=str(envelope["called_aet"]),
        acceptor_id=str(envelope["acceptor"]),
        storage_contexts=storage,
        user_identity_type=envelope.get("user_identity_type"),
        username=envelope.get("username"),
        sop_class_extended=tuple(
            (str(item[0]), bytes(item[1])) for item in envelope.get("sop_class_extended") or ()
        ),
    )
    data = bytes(dataset) if dataset is not None and len(dataset) else None
    return ServiceRequest(
        association=association,
        context_id=int(envelope["ctx_id"]),
        abstract_syntax=str(envelope["sop_class"]),
        transfer_syntax=str(envelope["ts_uid"]),
        command=decode_command(command),
        dataset=data,
        deadline=envelope.get("deadline") or None,
    )


def handed_off(envelope: wire.Envelope, spool_directory: Path | None) -> tuple[str, int]:
    """The hand-off spool a request names (node.part10: a Part 10 file the acceptor wrote)
    and where its data set starts, after checking that it is one: a regular file named as a
    hand-off in this worker's own spool directory (an acceptor names no other file to adopt)."""
    if spool_directory is None:
        raise ValueError("this worker has no spool directory for a handed-off data set")
    path = Path(str(envelope["spool"]))
    offset = envelope.get("spool_offset")
    if (
        not path.name.startswith(HANDOFF_PREFIX)
        or path.suffix != ".spool"
        or os.path.realpath(path.parent) != os.path.realpath(spool_directory)
    ):
        raise ValueError(f"{path} is not a hand-off spool in {spool_directory}")
    info = os.lstat(path)  # the link itself, never what a symbolic link points to
    size = info.st_size if stat.S_ISREG(info.st_mode) else -1
    if not isinstance(offset, int) or not 0 < offset <= size:
        raise ValueError(f"{path} is not a regular file with a data set at {offset!r}")
    return str(path), offset


class Worker:
    """One worker process's loop (run() blocks until stop() or a signal)."""

    def __init__(self, config: WorkerConfig, handlers: Handlers) -> None:
        self.config = config
        self.handlers = handlers
        self.context: zmq.Context[Any] = zmq.Context()
        #: The socket to the broker, shared by the main loop and the handler threads.
        self.outbox = _Link()
        self.channels: dict[tuple[str, int, int], WorkerChannel] = {}
        self._suboperation_ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.handled = 0
        self.reconnects = 0
        #: Messages found only when the poll timed out: a wake-up was lost (must stay 0).
        self.late_reads = 0
        #: The broker said it does not know this worker (wire.DISCONNECT): join again.
        self.disconnected = False
        self.link = Liveness.starting(
            config.heartbeat_interval, config.heartbeat_liveness, time.monotonic()
        )
        #: Called once per finished request (the worker's request counter metric), or None.
        self.count_requests: Callable[[], None] | None = None
        #: Streamed requests still receiving chunks: key -> (envelope, command, spool).
        self.streams: dict[tuple[str, int, int], tuple[wire.Envelope, bytes, Any]] = {}

    # --- sub-operation bookkeeping (called from handler threads) ----------------------------

    def new_suboperation(self) -> tuple[int, _Waiter]:
        with self._lock:
            sub_id = next(self._suboperation_ids)
            waiter = _Waiter()
            self._waiters[sub_id] = waiter
            return sub_id, waiter

    def forget_suboperation(self, sub_id: int) -> None:
        with self._lock:
            self._waiters.pop(sub_id, None)

    def stop(self) -> None:
        self._stop.set()

    def readiness(self) -> tuple[bool, str]:
        """Ready while the broker has been heard from recently."""
        now = time.monotonic()
        if self.link.lost(now):
            return False, f"broker silent for {self.link.silent_for(now):.1f} s"
        return True, f"ready: {self.handled} requests handled"

    # --- the loop ---------------------------------------------------------------------------

    def _connect(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.config.identity.encode())
        sock.setsockopt(zmq.LINGER, 0)
        curve = self.config.curve
        if curve:
            sock.curve_secretkey = curve["secret"]
            sock.curve_publickey = curve["public"]
            sock.curve_serverkey = curve["server"]
        sock.connect(self.config.broker)
        self.outbox.replace(sock)
        self.outbox.send([b"", wire.pack_envelope(wire.READY, credits=self.config.threads)])
        return sock

    def run(self) -> None:
        config = self.config
        link_out = self.outbox
        sock = self._connect()
        pool = ThreadPoolExecutor(config.threads, thread_name_prefix="dicomnode-worker")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(link_out.wake_fd, select.POLLIN)
        interval = config.heartbeat_interval
        link = self.link = Liveness.starting(interval, config.heartbeat_liveness, time.monotonic())
        log.info("worker %s connected to %s", config.identity, config.broker)
        drain_until: float | None = None
        try:
            while True:
                if self._stop.is_set() and drain_until is None:
                    # Drain: keep forwarding replies until the running requests finish (their
                    # objects may already be durable: the SCU must hear so), within a bound.
                    drain_until = time.monotonic() + config.drain_timeout
                    log.info("worker stopping: %d request(s) to finish", len(self.channels))
                    # no credits left: the broker sends nothing new while we finish
                    link_out.send([b"", wire.pack_envelope(wire.READY, credits=0)])
                if drain_until is not None and (
                    (not self.channels and not self.streams) or time.monotonic() > drain_until
                ):
                    break
                woken = bool(poller.poll(int(interval * 1000 / 2)))
                if woken:
                    link_out.drain_wakes()
                now = time.monotonic()
                messages = link_out.receive_all()
                if messages:
                    link.heard(now)
                    self.late_reads += not woken
                for frames in messages:
                    if drain_until is None:
                        self._on_message(frames, pool)
                    else:  # draining: only cancels and sub-operation statuses still matter
                        self._on_message(frames, pool, draining=True)
                if link.heartbeat_due(now):
                    link_out.send([b"", wire.pack_envelope(wire.HEARTBEAT)])
                if self.disconnected or link.lost(now):
                    if self.disconnected:
                        log.warning("the broker does not know this worker: reconnecting")
                    else:
                        log.warning("broker silent for %.1f s: reconnecting", link.silent_for(now))
                    self.disconnected = False
                    poller.unregister(sock.fileno())
                    sock = self._connect()  # the link closes the old socket
                    poller.register(sock.fileno(), select.POLLIN)
                    self.reconnects += 1
                    link.reconnected(now)
        finally:
            for channel in list(self.channels.values()):
                channel.cancelled.set()
            for _envelope, _command, spool in self.streams.values():
                spool.discard()
            self.streams.clear()
            with self._lock:  # sub-operations still waiting for a status: none will come
                for waiter in self._waiters.values():
                    waiter.event.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.outbox.close()
            self.context.term()

    def _on_message(
        self, frames: list[zmq.Frame], pool: ThreadPoolExecutor, *, draining: bool = False
    ) -> None:
        try:
            _routing, envelope, command, dataset = wire.split_frames([f.buffer for f in frames])
        except wire.WireError as error:
            log.warning("dropped an invalid message from the broker: %s", error)
            return
        kind = envelope["kind"]
        if draining and kind == wire.REQUEST:
            # a request that arrives while this worker stops: answer it as data, at once
            self.outbox.send(
                [
                    b"",
                    wire.error_envelope(
                        envelope, 0xA700, "WorkerStopping", "the worker is shutting down"
                    ),
                ]
            )
            return
        if kind == wire.REQUEST and envelope.get("stream") is True:
            self._open_stream(envelope, command)
        elif kind == wire.REQUEST:
            self._start_request(envelope, command, dataset, pool)
        elif kind == wire.CHUNK:
            self._on_chunk(envelope, dataset, pool)
        elif kind == wire.CANCEL:
            key = (envelope["acceptor"], envelope["assoc_id"], envelope["msg_id"])
            channel = self.channels.get(key)
            if channel is not None:
                channel.cancelled.set()
            stream = self.streams.pop(key, None)
            if stream is not None:  # still receiving: answer it, so its credit comes back
                stream[2].discard()
                self.outbox.send(
                    [
                        b"",
                        wire.error_envelope(
                            stream[0], 0xFE00, "Cancelled", "cancelled while its data set arrived"
                        ),
                    ]
                )
        elif kind == wire.DISCONNECT:
            self.disconnected = True  # the loop reconnects and announces itself at once
        elif kind == wire.SUBOPERATION_STATUS:
            with self._lock:
                waiter = self._waiters.get(int(envelope["sub_id"]))
            if waiter is not None:
                waiter.status = int(envelope["status"])
                waiter.event.set()

    def _open_stream(self, envelope: wire.Envelope, command: bytes) -> None:
        """A streamed data set begins: spool it as a Part 10 file (workers.store.spool)."""
        from workers.store.spool import Spool

        key = (str(envelope["acceptor"]), int(envelope["assoc_id"]), int(envelope["msg_id"]))
        try:
            message = decode_command(command)
            store = self.handlers.file_store
            spool = Spool(
                store.spool_directory if store is not None else None,
                (message.sop_class_uid if isinstance(message, Request) else "")
                or str(envelope["sop_class"]),
                (message.sop_instance_uid if isinstance(message, Request) else None) or "1",
                str(envelope["ts_uid"]),
                str(envelope["calling_aet"]),
            )
        except Exception as error:  # noqa: BLE001 - answered as data
            self.outbox.send(
                [
                    b"",
                    wire.error_envelope(
                        envelope, Status.PROCESSING_FAILURE, type(error).__name__, str(error)
                    ),
                ]
            )
            return
        self.streams[key] = (envelope, command, spool)

    def _on_chunk(self, envelope: wire.Envelope, data: Any, pool: ThreadPoolExecutor) -> None:
        key = (str(envelope["acceptor"]), int(envelope["assoc_id"]), int(envelope["msg_id"]))
        entry = self.streams.get(key)
        if entry is None:
            return
        request_envelope, command, spool = entry
        try:
            if envelope["seq"] != spool.chunks:  # a chunk went missing on the way
                raise OSError(f"chunk {spool.chunks} never arrived (got {envelope['seq']})")
            spool.write(data)
            if envelope["last"] is True:
                spool.close()
        except OSError as error:  # disk full, lost chunk: fail this request, go on
            del self.streams[key]
            spool.discard()
            self.outbox.send(
                [
                    b"",
                    wire.error_envelope(
                        request_envelope,
                        0xA700,
                        "OutOfResources",
                        f"cannot spool the data set: {error}",
                    ),
                ]
            )
            return
        self.outbox.send(
            [
                b"",
                wire.pack_envelope(
                    wire.CHUNK_ACK,
                    acceptor=key[0],
                    assoc_id=key[1],
                    msg_id=key[2],
                    seq=envelope["seq"],
                    size=len(data),
                ),
            ]
        )
        if envelope["last"] is True:
            del self.streams[key]
            path = spool.close()
            self._start_request(
                request_envelope,
                command,
                None,
                pool,
                dataset_path=str(path),
                header_length=len(spool.header),
            )

    def _start_request(
        self,
        envelope: wire.Envelope,
        command: bytes,
        dataset: Any,
        pool: ThreadPoolExecutor,
        *,
        dataset_path: str | None = None,
        header_length: int = 0,
    ) -> None:
        key = (str(envelope["acceptor"]), int(envelope["assoc_id"]), int(envelope["msg_id"]))
        try:
            request = request_from_envelope(envelope, command, dataset)
            if dataset_path is None and envelope.get("spool") is not None:
                store = self.handlers.file_store
                dataset_path, header_length = handed_off(
                    envelope, store.spool_directory if store is not None else None
                )
            if dataset_path is not None:
                request = dataclasses.replace(
                    request, dataset_path=dataset_path, dataset_offset=header_length
                )
        except Exception as error:  # noqa: BLE001 - a bad request must not kill the worker
            self.outbox.send(
                [
                    b"",
                    wire.error_envelope(
                        envelope,
                        Status.PROCESSING_FAILURE,
                        type(error).__name__,
                        str(error),
                        traceback.format_exc(),
                    ),
                ]
            )
            return
        channel = WorkerChannel(self, envelope, request)
        self.channels[key] = channel
        pool.submit(self._run_request, key, request, channel)

    def _run_request(
        self, key: tuple[str, int, int], request: ServiceRequest, channel: WorkerChannel
    ) -> None:
        try:
            handle_request(request, channel, self.handlers)
        except Exception as error:
            log.exception("request %s failed", key)
            if not channel.finished:
                self.outbox.send(
                    [
                        b"",
                        wire.error_envelope(
                            channel.envelope,
                            Status.PROCESSING_FAILURE,
                            type(error).__name__,
                            str(error),
                            traceback.format_exc(),
                        ),
                    ]
                )
        finally:
            self.handled += 1
            if self.channels.get(key) is channel:  # not a newer request reusing the ID
                del self.channels[key]
            if self.count_requests is not None:
                self.count_requests()


class WorkerSet:
    """One Worker per endpoint in one process, sharing the handlers (file store, index):
    `dicomnode serve --acceptors N`, where every acceptor routes to the workers itself
    (broker.embedded) and each worker process serves all of them. Each Worker has its own
    socket, heartbeats, credits and handler threads; its replies, sub-operations and event
    reports go back through the endpoint its request came from."""

    def __init__(self, configs: list[WorkerConfig], handlers: Handlers) -> None:
        if not configs:
            raise ValueError("a worker needs at least one broker or acceptor endpoint")
        self.workers = [Worker(config, handlers) for config in configs]

    @property
    def count_requests(self) -> Callable[[], None] | None:
        return self.workers[0].count_requests

    @count_requests.setter
    def count_requests(self, count: Callable[[], None] | None) -> None:
        for worker in self.workers:
            worker.count_requests = count

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def readiness(self) -> tuple[bool, str]:
        """Ready while every endpoint has been heard from recently."""
        answers = [worker.readiness() for worker in self.workers]
        if len(answers) == 1:
            return answers[0]
        ready = all(ok for ok, _ in answers)
        detail = "; ".join(
            f"{worker.config.broker}: {text}"
            for worker, (_, text) in zip(self.workers, answers, strict=True)
        )
        return ready, detail

    def run(self) -> None:
        """Run every Worker until stop() (the first in this thread, for the signals); one
        that fails stops the others, and its error is raised once they have drained."""
        failures: list[BaseException] = []

        def run(worker: Worker) -> None:
            try:
                worker.run()
            except BaseException as error:  # noqa: BLE001 - raised again by run()
                failures.append(error)
                self.stop()

        threads = [
            threading.Thread(target=run, args=(worker,), name=f"dicomnode-link-{i}", daemon=True)
            for i, worker in enumerate(self.workers[1:], start=1)
        ]
        for thread in threads:
            thread.start()
        try:
            run(self.workers[0])
        finally:
            self.stop()
            for thread in threads:
                thread.join()
        if failures:
            raise failures[0]
