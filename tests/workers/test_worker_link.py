# The worker's one socket to the broker (workers.runtime._Link): the main loop waits on its
# ZMQ_FD, handler threads reply on it under a lock, and whoever used it last wakes the main
# loop when a message waits, since ZMQ_FD is edge-triggered. A lost wake-up would leave a
# request unread until the poll times out: `late_reads` counts those, and must stay 0 while
# requests and replies cross all the time.
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import zmq

from broker import wire
from node.dimse.commands import decode_command, encode_command
from node.dimse.messages import CEchoRQ
from tests.synthetic import PATIENCE
from workers.handlers.common import Handlers
from workers.runtime import Worker, WorkerConfig, WorkerSet

if TYPE_CHECKING:
    from pathlib import Path

VERIFICATION = "1.2.840.10008.1.1"


def _echo(message_id: int) -> list[bytes]:
    envelope = wire.pack_envelope(
        wire.REQUEST,
        acceptor="acc",
        assoc_id=1,
        msg_id=message_id,
        command_field=0x0030,
        ctx_id=1,
        sop_class=VERIFICATION,
        ts_uid="1.2.840.10008.1.2",
        calling_aet="SCU",
        called_aet="SCP",
        deadline=None,
    )
    command = CEchoRQ(message_id=message_id, affected_sop_class_uid=VERIFICATION)
    return [b"", envelope, encode_command(command), b""]


def _router(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    """A ROUTER standing for a broker or an acceptor's routing, bound at `endpoint`."""
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as the routings: a reconnect keeps its identity
    router.bind(endpoint)
    return router


def _reply(router: zmq.Socket[bytes], what: str) -> tuple[wire.Envelope, list[bytes]]:
    """The next reply on `router` (heartbeats skipped): its envelope and frames."""
    while True:
        assert router.poll(int(PATIENCE * 1000)), what
        frames = router.recv_multipart()
        envelope = wire.unpack_envelope(frames[2])
        if envelope["kind"] == wire.REPLY:
            return envelope, frames


def test_requests_and_replies_crossing_on_the_shared_socket_lose_no_wake_up(tmp_path: Path):
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/backend"
    router = _router(context, endpoint)
    # a long heartbeat: the main loop's poll times out only every 5 s, so a lost wake-up
    # would be seen (late_reads) rather than hidden by a heartbeat arriving
    worker = Worker(WorkerConfig(broker=endpoint, threads=4, heartbeat_interval=10.0), Handlers())
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        identity, _, ready = router.recv_multipart()[:3]
        assert wire.unpack_envelope(ready)["kind"] == wire.READY
        total, window = 400, 8
        sent = answered = 0
        statuses: dict[int, int] = {}
        while answered < total:
            while sent < total and sent - answered < window:
                sent += 1
                router.send_multipart([identity, *_echo(sent)])
            assert router.poll(int(PATIENCE * 1000)), "the worker stopped answering"
            frames = router.recv_multipart()
            envelope = wire.unpack_envelope(frames[2])
            if envelope["kind"] != wire.REPLY:
                continue
            response = decode_command(frames[3])
            statuses[int(envelope["msg_id"])] = int(getattr(response, "status", -1))
            answered += 1
        assert statuses == dict.fromkeys(range(1, total + 1), 0)
        assert worker.late_reads == 0
    finally:
        worker.stop()
        thread.join(PATIENCE)
        router.close(0)
        context.term()
    assert not thread.is_alive()


def test_one_worker_process_serves_several_acceptors_each_on_its_own_socket(tmp_path: Path):
    # dicomnode serve --acceptors 2: each acceptor routes itself (broker.embedded) and the
    # worker process connects to both; a request's reply goes back where it came from.
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    routers = [_router(context, f"ipc://{tmp_path}/backend-{number}") for number in (0, 1)]
    configs = [
        WorkerConfig(broker=f"ipc://{tmp_path}/backend-{number}", threads=2) for number in (0, 1)
    ]
    workers = WorkerSet(configs, Handlers())
    thread = threading.Thread(target=workers.run, name="workers", daemon=True)
    thread.start()
    try:
        identities = []
        for router in routers:  # each acceptor hears READY with the worker's own credits
            identity, _, ready = router.recv_multipart()[:3]
            envelope = wire.unpack_envelope(ready)
            assert (envelope["kind"], envelope["credits"]) == (wire.READY, 2)
            identities.append(identity)
        for number, (router, identity) in enumerate(zip(routers, identities, strict=True)):
            router.send_multipart([identity, *_echo(10 + number)])
        for number, router in enumerate(routers):
            envelope, frames = _reply(router, "no reply on this acceptor's socket")
            assert envelope["msg_id"] == 10 + number  # its own request's reply, not the other's
            assert getattr(decode_command(frames[3]), "status", -1) == 0
        is_ready, detail = workers.readiness()
        assert is_ready, detail
        assert detail.count("ready:") == 2
    finally:
        workers.stop()
        thread.join(PATIENCE)
        for router in routers:
            router.close(0)
        context.term()
    assert not thread.is_alive()
    assert sum(worker.handled for worker in workers.workers) == 2


def test_a_worker_told_it_is_unknown_joins_again_at_once(tmp_path: Path):
    # A routing that restarted (an acceptor, a broker) answers the worker's messages with
    # `disconnect`: the worker reconnects and sends ready again now, instead of after its
    # heartbeat liveness (here 3 x 10 s, far beyond the wait below).
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/backend"
    router = _router(context, endpoint)
    worker = Worker(WorkerConfig(broker=endpoint, threads=3, heartbeat_interval=10.0), Handlers())
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        identity, _, first = router.recv_multipart()[:3]
        assert wire.unpack_envelope(first)["kind"] == wire.READY
        router.send_multipart([identity, b"", wire.pack_envelope(wire.DISCONNECT)])
        assert router.poll(5000), "no ready again within 5 s"
        again, _, second = router.recv_multipart()[:3]
        envelope = wire.unpack_envelope(second)
        assert (again, envelope["kind"], envelope["credits"]) == (identity, wire.READY, 3)
        assert worker.reconnects == 1
        router.send_multipart([identity, *_echo(7)])  # and it serves on the new socket
        _envelope, frames = _reply(router, "no reply after joining again")
        assert getattr(decode_command(frames[3]), "status", -1) == 0
    finally:
        worker.stop()
        thread.join(PATIENCE)
        router.close(0)
        context.term()
    assert not thread.is_alive()
