# The broker's routing inside an acceptor process: the acceptor binds the workers' socket
# itself and routes each request to a worker with one function call, so request and reply
# bytes go straight between acceptor and worker (ISSUE 15, direction 1: no broker process in
# the data path of a single-acceptor cluster such as `dicomnode serve`).
#
# Rules: every routing decision is broker.routing.BrokerState's, exactly as in the broker
# process (credits, least recently used worker, queue, heartbeats, deaths and retries,
# draining, cancel, sub-operations, chunks); this module only moves frames, on the acceptor's
# asyncio loop. Workers connect to `backend` as to a broker and cannot tell the difference.
# Messages for the acceptor are handed to `deliver` synchronously, as the frames
# `[b"", envelope, command?, dataset?]` a DEALER would have received. Sends never block
# (NOBLOCK + ROUTER_MANDATORY): a worker that is gone or full is reported to the state. The
# socket is a plain (not zmq.asyncio) socket used only on the loop's thread: the loop watches
# its ZMQ_FD (add_reader), and because that descriptor is edge-triggered every send is
# followed by a look at ZMQ_EVENTS, so a message the send let in is still read. No CURVE
# here: deployments that encrypt run a broker process.
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final, cast

import zmq

from broker.routing import BrokerState, SendToAcceptor, SendToWorker
from broker.server import FaultLog, perform

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from broker.actions import Action, Part

logger = logging.getLogger("dicomnode.broker.embedded")

#: Messages read from the workers' socket before the loop gets a turn.
BATCH: Final = 64


class EmbeddedBroker:
    """BrokerState behind a ROUTER socket the workers connect to, driven by asyncio."""

    def __init__(
        self,
        backend: str,
        deliver: Callable[[list[Any]], None],
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend_endpoint = backend
        self._deliver = deliver
        self._clock = clock
        self._interval = heartbeat_interval
        self.state = BrokerState(
            heartbeat_interval=heartbeat_interval,
            heartbeat_liveness=heartbeat_liveness,
            max_queue=max_queue,
            now=clock(),
        )
        #: Called with state.stats() after every tick (the broker gauges), or None.
        self.on_stats: Callable[[dict[str, object]], None] | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._backend: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: A read of the socket is scheduled or running: sends need not schedule another.
        self._reading = False
        self._tasks: list[asyncio.Task[None]] = []
        self._faults = FaultLog(clock)

    async def start(self) -> str:
        """Bind the workers' socket and start reading it; returns the bound endpoint."""
        self._context = zmq.Context()
        router = self._context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a worker that reconnects keeps its identity
        try:
            router.bind(self.backend_endpoint)
        except zmq.ZMQError:  # a bad or busy endpoint: nothing stays open behind it
            router.close(0)
            self._context.term()
            self._context = None
            raise
        self._backend = router
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(router.fileno(), self._read)
        self._tasks = [asyncio.create_task(self._tick_loop())]
        endpoint: str = router.getsockopt_string(zmq.LAST_ENDPOINT)
        logger.info("routing to workers on %s (embedded broker)", endpoint)
        return endpoint

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._backend is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._backend.fileno())
            self._backend.close(0)
            self._backend = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def send(self, identity: bytes, frames: Sequence[Part]) -> None:
        """A message from the acceptor `identity` (`[b"", envelope, ...]`, as a DEALER sends)."""
        self._perform(self.state.on_frontend(identity, frames, self._clock()))

    def _read(self) -> None:
        """Route what the workers sent, a batch at a time (the loop gets a turn between)."""
        router = self._backend
        self._reading = True
        try:
            for _ in range(BATCH):
                if router is None or not _waiting(router):
                    return
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                try:
                    self._perform(self.state.on_backend(frames[0].bytes, frames[1:], self._clock()))
                except Exception:
                    logger.exception("a message from a worker could not be routed")
            if self._loop is not None:  # more to read: after the loop's other work
                self._loop.call_soon(self._read)
                return
        finally:
            self._reading = False

    async def _tick_loop(self) -> None:
        while True:
            now = self._clock()
            timer = self.state.timer()
            if now >= timer or timer - now > self._interval:  # due, or the clock stepped back
                self._perform(self.state.on_tick(now))
                if self.on_stats is not None:
                    self.on_stats(self.state.stats())
                timer = self.state.timer()
            await asyncio.sleep(max(0.01, min(self._interval, timer - self._clock())))

    def _perform(self, actions: list[Action]) -> None:
        perform(self.state, actions, self._send, self._faults, self._clock)

    def _send(self, action: SendToWorker | SendToAcceptor) -> None:
        if isinstance(action, SendToAcceptor):
            self._deliver([b"", *(_buffer(part) for part in action.frames)])
            return
        router = self._backend
        if router is None:  # closed: the acceptor fails what is pending itself
            return
        parts: list[Any] = [action.worker, b"", *action.frames]
        try:
            router.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        finally:  # the send may have taken the descriptor's edge for a waiting message
            if not self._reading and self._loop is not None and _waiting(router):
                self._reading = True
                self._loop.call_soon(self._read)


def _waiting(router: zmq.Socket[bytes]) -> bool:
    return bool(int(router.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


def _buffer(part: Part) -> Any:
    """A frame's bytes without a copy (zmq.Frame.buffer), or the bytes packed here."""
    return part if isinstance(part, bytes) else cast("zmq.Frame", part).buffer
