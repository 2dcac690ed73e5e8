# Fake acceptors and workers for the broker's socket tests: DEALER sockets that heartbeat
# while the test waits for a message, so waiting never needs time.sleep.
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import zmq

from broker import wire
from tests.synthetic import PATIENCE

if TYPE_CHECKING:
    from collections.abc import Iterable


def request_fields(
    msg_id: int = 1, *, acceptor: str, command_field: int = 0x0001
) -> dict[str, Any]:
    return {
        "acceptor": acceptor,
        "assoc_id": 1,
        "msg_id": msg_id,
        "command_field": command_field,
        "ctx_id": 1,
        "sop_class": "1.2.840.10008.5.1.4.1.1.7",
        "ts_uid": "1.2.840.10008.1.2.1",
        "calling_aet": "SCU",
        "called_aet": "SCP",
        "deadline": None,
    }


class Peer:
    """One DEALER connected to the broker, with the messages it received (heartbeats aside)."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str, identity: bytes
    ) -> None:
        self.identity = identity
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.inbox: list[tuple[wire.Envelope, list[bytes]]] = []
        self.heartbeats = 0
        self.alive = True
        self.last_sent = 0.0

    def send(self, kind: str, *parts: bytes, **fields: Any) -> None:
        self.send_raw([b"", wire.pack_envelope(kind, **fields), *parts])

    def send_raw(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)
        self.last_sent = time.monotonic()

    def close(self) -> None:
        self.alive = False
        self.socket.close(linger=0)

    def take(self, kind: str) -> tuple[wire.Envelope, list[bytes]] | None:
        for index, (envelope, parts) in enumerate(self.inbox):
            if envelope["kind"] == kind:
                del self.inbox[index]
                return envelope, parts
        return None


class Peers:
    """The fake peers of one test; `wait_for` pumps all of them (and their heartbeats)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.context = zmq.Context()
        self.peers: list[Peer] = []

    def acceptor(self, endpoint: str, name: str) -> Peer:
        peer = Peer(self.context, endpoint, name.encode())
        peer.send(wire.HEARTBEAT)
        self.peers.append(peer)
        return peer

    def worker(self, endpoint: str, identity: bytes, credits: int = 1) -> Peer:
        peer = Peer(self.context, endpoint, identity)
        peer.send(wire.READY, credits=credits)
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            if peer.alive:
                peer.close()
        self.context.term()

    def pump(self, timeout: float) -> None:
        """Receive for up to `timeout` seconds, heartbeating every half interval."""
        poller = zmq.Poller()
        live = [peer for peer in self.peers if peer.alive]
        for peer in live:
            poller.register(peer.socket, zmq.POLLIN)
        ready = dict(poller.poll(max(1, int(timeout * 1000))))
        for peer in live:
            while peer.socket in ready:
                try:
                    frames = peer.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                assert frames[0] == b""
                envelope = wire.unpack_envelope(frames[1])
                if envelope["kind"] == wire.HEARTBEAT:
                    peer.heartbeats += 1
                else:
                    peer.inbox.append((envelope, frames[2:]))
            if time.monotonic() - peer.last_sent >= self.interval / 2:
                peer.send(wire.HEARTBEAT)

    def wait_for(
        self, peers: Peer | Iterable[Peer], kind: str, timeout: float = PATIENCE
    ) -> tuple[Peer, wire.Envelope, list[bytes]]:
        """The first message of `kind` that reaches one of `peers`."""
        candidates = [peers] if isinstance(peers, Peer) else list(peers)
        deadline = time.monotonic() + timeout
        while True:
            for peer in candidates:
                found = peer.take(kind)
                if found is not None:
                    return peer, *found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} for {[p.identity for p in candidates]}")
            self.pump(min(remaining, self.interval / 4))

    def wait_until(self, condition, timeout: float = PATIENCE) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("condition never held")
            self.pump(min(remaining, self.interval / 4))
