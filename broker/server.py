# The broker's I/O loop: two ROUTER sockets, a poller and the heartbeat timer around the pure
# routing state (broker.routing.BrokerState).
#
# Rules: every decision is the state's; this module only moves frames. Received frames are
# kept as zmq.Frame objects (recv_multipart(copy=False)) and sent back as they are, so a
# dataset is never decoded nor copied. Sends never block (NOBLOCK + ROUTER_MANDATORY): a peer
# that is gone (EHOSTUNREACH) or full (EAGAIN) is reported to the state, which decides. A
# fresh ZeroMQ context per server; sockets close with linger 0. The clock is the wall clock,
# because request deadlines are unix times: a step backwards only triggers a tick early, a
# step forwards looks like silence (peers re-join with `ready`, as after a broker pause).
from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Final, cast

import zmq

from broker.routing import BrokerState, Fault, Notice, SendToAcceptor, SendToWorker

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from zmq.auth.thread import ThreadAuthenticator

    from broker.config import BrokerConfig
    from broker.routing import Action, Frame

    Handler = Callable[[bytes, Sequence[Frame], float], list[Action]]
logger = logging.getLogger("dicomnode.broker")

#: Messages read from one socket before the other gets its turn.
BATCH: Final = 256
#: Seconds between the periodic stats log lines (debug) and between two log lines of a fault kind.
STATS_INTERVAL: Final = 5.0
FAULT_LOG_INTERVAL: Final = 5.0


class BrokerServer:
    """The broker process: bind, then `run()` until `stop()` (thread- and signal-safe)."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        curve: dict[str, bytes] | None = None
        allowed = None
        if config.curve_secret is not None:  # keys first: a bad file fails before any socket
            from broker.curve import AllowedClients, server_keys

            curve = server_keys(config.curve_secret)
            if config.curve_clients is not None:
                allowed = AllowedClients(config.curve_clients)
        self._own_context = context is None
        self._context: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self.state = BrokerState(
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_liveness=config.heartbeat_liveness,
            max_queue=config.max_queue,
            now=clock(),
        )
        #: The ZAP handler checking CURVE client keys (broker.curve), when configured.
        self._authenticator: ThreadAuthenticator | None = None
        if allowed is not None:
            from broker.curve import start_authenticator

            self._authenticator = start_authenticator(self._context, allowed)
        self.frontend = self._router(curve)
        self.backend = self._router(curve)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._stopping = False
        #: Called with state.stats() after every tick (metrics), on the broker's thread.
        self.on_stats: Callable[[dict[str, object]], None] | None = None
        self._stats_wanted = False
        self._closed = False
        self._faults = FaultLog(clock)

    def _router(self, curve: dict[str, bytes] | None) -> zmq.Socket[bytes]:
        router = self._context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a peer that reconnects keeps its identity
        if curve is not None:
            from broker.curve import make_server

            make_server(router, curve)
        return router

    def bind(self) -> tuple[str, str]:
        """Bind both sockets; returns the bound (frontend, backend) endpoints."""
        self.frontend.bind(self.config.frontend)
        self.backend.bind(self.config.backend)
        return (
            self.frontend.getsockopt_string(zmq.LAST_ENDPOINT),
            self.backend.getsockopt_string(zmq.LAST_ENDPOINT),
        )

    def stop(self) -> None:
        """Ask `run()` to return; safe from another thread or a signal handler."""
        self._stopping = True
        self._wake()

    def request_stats(self) -> None:
        """Log the stats once at info level (SIGUSR1)."""
        self._stats_wanted = True
        self._wake()

    def _wake(self) -> None:
        # A full pipe means a wake-up is already pending; a closed one, that we stopped.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def close(self) -> None:
        """Close the sockets at once (linger 0) and end the context if it is ours."""
        if self._closed:
            return
        self._closed = True
        self.frontend.close(linger=0)
        self.backend.close(linger=0)
        self._wake_reader.close()
        self._wake_writer.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        if self._own_context:
            self._context.term()

    def run(self) -> None:
        """Serve until `stop()`."""
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        poller.register(self._wake_reader.fileno(), zmq.POLLIN)
        next_stats = self._clock() + STATS_INTERVAL
        logger.info("broker serving frontend %s backend %s", *self._endpoints())
        interval = self.config.heartbeat_interval
        while not self._stopping:
            timeout = min(interval, max(0.0, self.state.timer() - self._clock()))
            events = dict(poller.poll(math.ceil(timeout * 1000)))
            if self.frontend in events:
                self._drain(self.frontend, self.state.on_frontend)
            if self.backend in events:
                self._drain(self.backend, self.state.on_backend)
            if self._wake_reader.fileno() in events:
                self._wake_reader.recv(4096)
            now = self._clock()
            timer = self.state.timer()
            if now >= timer or timer - now > interval:  # due, or the wall clock stepped back
                self._perform(self.state.on_tick(now))
                if self.on_stats is not None:
                    self.on_stats(self.state.stats())
            if self._stats_wanted:
                self._stats_wanted = False
                logger.info("broker stats %s", self.state.stats())
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL
                logger.debug("broker stats %s", self.state.stats())
        logger.info("broker stopping: %s", self.state.stats())

    def _endpoints(self) -> tuple[str, str]:
        return (
            self.frontend.getsockopt_string(zmq.LAST_ENDPOINT),
            self.backend.getsockopt_string(zmq.LAST_ENDPOINT),
        )

    def _drain(self, router: zmq.Socket[bytes], handler: Handler) -> None:
        for _ in range(BATCH):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._perform(handler(frames[0].bytes, frames[1:], self._clock()))

    def _perform(self, actions: list[Action]) -> None:
        perform(self.state, actions, self._send, self._faults, self._clock)

    def _send(self, action: SendToWorker | SendToAcceptor) -> None:
        if isinstance(action, SendToWorker):
            router, peer = self.backend, action.worker
        else:
            router, peer = self.frontend, action.acceptor
        parts = cast("list[zmq.Frame | bytes]", [peer, b"", *action.frames])
        router.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)


class FaultLog:
    """Warning lines for faults, at most one per fault kind per FAULT_LOG_INTERVAL."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: Fault kind -> (when last logged, how many were not logged since).
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, fault: Fault) -> None:
        now = self._clock()
        last, suppressed = self._last.get(fault.kind, (-FAULT_LOG_INTERVAL, 0))
        if now - last < FAULT_LOG_INTERVAL:
            self._last[fault.kind] = (last, suppressed + 1)
            return
        self._last[fault.kind] = (now, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning("%s from %r: %s%s", fault.kind, fault.peer, fault.detail, more)


def perform(
    state: BrokerState,
    actions: list[Action],
    send: Callable[[SendToWorker | SendToAcceptor], None],
    faults: FaultLog,
    clock: Callable[[], float],
) -> None:
    """Carry out the state's actions in order; `send` raises zmq.ZMQError when a peer is
    gone (EHOSTUNREACH) or full (EAGAIN): the state decides what becomes of the sends to it."""
    pending = deque(actions)
    while pending:
        action = pending.popleft()
        if isinstance(action, Fault):
            faults.log(action)
            continue
        if isinstance(action, Notice):
            logger.log(logging.WARNING if action.warning else logging.INFO, "%s", action.text)
            continue
        try:
            send(action)
        except zmq.ZMQError as error:
            busy = error.errno == zmq.EAGAIN
            if not busy and error.errno != zmq.EHOSTUNREACH:
                logger.warning("sending %s failed: %s", action.kind, error)
            stranded, pending = split_stranded(action, pending)
            pending.extend(state.on_undeliverable(stranded, clock(), busy=busy))


def split_stranded(
    failed: SendToWorker | SendToAcceptor, pending: deque[Action]
) -> tuple[list[SendToWorker | SendToAcceptor], deque[Action]]:
    """The failed send plus the pending sends to the same peer, and the rest."""
    stranded: list[SendToWorker | SendToAcceptor] = [failed]
    rest: deque[Action] = deque()
    for action in pending:
        if (
            isinstance(action, SendToWorker)
            and isinstance(failed, SendToWorker)
            and action.worker == failed.worker
        ) or (
            isinstance(action, SendToAcceptor)
            and isinstance(failed, SendToAcceptor)
            and action.acceptor == failed.acceptor
        ):
            stranded.append(action)
        else:
            rest.append(action)
    return stranded, rest
