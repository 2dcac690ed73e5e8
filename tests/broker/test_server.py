# The broker's I/O loop on real ZeroMQ sockets (ipc:// in a temporary directory) with fake
# acceptors and workers; and its command line.
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq

from broker import wire
from broker.__main__ import main
from broker.config import BrokerConfig
from broker.routing import SendToAcceptor, SendToWorker
from broker.server import BrokerServer
from tests.broker.peers import Peers, request_fields
from tests.synthetic import PATIENCE

INTERVAL = 0.2
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def endpoints():
    folder = tempfile.mkdtemp(prefix="bk-", dir="/tmp")  # ipc paths must stay short
    yield f"ipc://{folder}/frontend", f"ipc://{folder}/backend"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def peers():
    fakes = Peers(INTERVAL)
    yield fakes
    fakes.close()


@contextmanager
def running(frontend: str, backend: str, **options):
    server = BrokerServer(
        BrokerConfig(frontend=frontend, backend=backend, heartbeat_interval=INTERVAL, **options)
    )
    server.bind()
    thread = threading.Thread(target=server.run, name="broker", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(PATIENCE)
        server.close()
    assert not thread.is_alive()


pytestmark = pytest.mark.cluster


def test_request_and_reply_cross_the_broker(endpoints, peers, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="dicomnode.broker")
    monkeypatch.setattr("broker.server.STATS_INTERVAL", INTERVAL / 2)
    frontend, backend = endpoints
    with running(frontend, backend) as server:
        workers = [peers.worker(backend, b"w-1"), peers.worker(backend, b"w-2")]
        acceptor = peers.acceptor(frontend, "acc-1")
        dataset = os.urandom(300_000)
        acceptor.send(wire.REQUEST, b"CMD", dataset, **request_fields(acceptor="acc-1"))
        worker, envelope, parts = peers.wait_for(workers, wire.REQUEST)
        assert (envelope["acceptor"], envelope["msg_id"]) == ("acc-1", 1)
        assert parts == [b"CMD", dataset]
        worker.send(wire.REPLY, b"RSP", acceptor="acc-1", assoc_id=1, msg_id=1, final=True)
        _, envelope, parts = peers.wait_for(acceptor, wire.REPLY)
        assert (envelope["msg_id"], envelope["final"], parts) == (1, True, [b"RSP"])
        peers.wait_until(lambda: acceptor.heartbeats and all(w.heartbeats for w in workers))
    stats = server.state.stats()
    assert (stats["requests"], stats["replies"], stats["workers"]) == (1, 1, 2)
    assert stats["credits"] == 2
    assert any(
        r.levelno == logging.DEBUG and "broker stats" in r.getMessage() for r in caplog.records
    )


def test_a_closed_worker_request_is_retried_on_the_other(endpoints, peers):
    frontend, backend = endpoints
    with running(frontend, backend) as server:
        workers = [peers.worker(backend, b"w-1"), peers.worker(backend, b"w-2")]
        acceptor = peers.acceptor(frontend, "acc-1")
        dataset = os.urandom(100_000)
        acceptor.send(wire.REQUEST, b"CMD", dataset, **request_fields(acceptor="acc-1"))
        first, envelope, _ = peers.wait_for(workers, wire.REQUEST)
        assert "retry" not in envelope
        first.close()
        other = next(worker for worker in workers if worker is not first)
        _, envelope, parts = peers.wait_for(other, wire.REQUEST)
        assert (envelope["msg_id"], envelope["retry"]) == (1, 1)
        assert parts == [b"CMD", dataset]
        other.send(wire.REPLY, b"RSP", acceptor="acc-1", assoc_id=1, msg_id=1, final=True)
        peers.wait_for(acceptor, wire.REPLY)
    stats = server.state.stats()
    assert (stats["dead_workers"], stats["retries"], stats["workers"]) == (1, 1, 1)


def test_a_closed_worker_move_fails_with_worker_lost(endpoints, peers):
    frontend, backend = endpoints
    with running(frontend, backend):
        worker = peers.worker(backend, b"w-1")
        acceptor = peers.acceptor(frontend, "acc-1")
        fields = request_fields(acceptor="acc-1", command_field=0x0021)
        acceptor.send(wire.REQUEST, b"CMD", b"", **fields)
        peers.wait_for(worker, wire.REQUEST)
        worker.close()
        _, envelope, _ = peers.wait_for(acceptor, wire.ERROR)
        assert (envelope["status"], envelope["type"]) == (0x0110, "WorkerLost")


def test_reply_to_a_vanished_acceptor_is_dropped_and_others_are_served(endpoints, peers):
    frontend, backend = endpoints
    with running(frontend, backend) as server:
        worker = peers.worker(backend, b"w-1")
        gone = peers.acceptor(frontend, "acc-gone")
        gone.send(wire.REQUEST, b"CMD", b"DATA", **request_fields(acceptor="acc-gone"))
        peers.wait_for(worker, wire.REQUEST)
        gone.close()
        _, envelope, _ = peers.wait_for(worker, wire.CANCEL)  # forgotten after 3 intervals
        assert (envelope["acceptor"], envelope["msg_id"]) == ("acc-gone", 1)
        worker.send(wire.REPLY, b"RSP", acceptor="acc-gone", assoc_id=1, msg_id=1, final=True)
        acceptor = peers.acceptor(frontend, "acc-2")
        acceptor.send(wire.REQUEST, b"CMD", b"DATA", **request_fields(acceptor="acc-2"))
        _, envelope, _ = peers.wait_for(worker, wire.REQUEST)
        assert envelope["acceptor"] == "acc-2"
        worker.send(wire.REPLY, b"RSP", acceptor="acc-2", assoc_id=1, msg_id=1, final=True)
        peers.wait_for(acceptor, wire.REPLY)
    stats = server.state.stats()
    assert stats["dropped"] == 1
    assert stats["faults"] == {"undeliverable": 1}


def test_heartbeats_go_on_when_the_clock_steps_back(endpoints, peers):
    frontend, backend = endpoints
    offset = [0.0]
    server = BrokerServer(
        BrokerConfig(frontend=frontend, backend=backend, heartbeat_interval=INTERVAL),
        clock=lambda: time.time() + offset[0],
    )
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        acceptor = peers.acceptor(frontend, "acc-1")
        peers.wait_until(lambda: acceptor.heartbeats > 0)
        offset[0] = -3600.0
        seen = acceptor.heartbeats
        peers.wait_until(lambda: acceptor.heartbeats >= seen + 2)
    finally:
        server.stop()
        thread.join(PATIENCE)
        server.close()
    assert server.state.stats()["acceptors"] == 1


def test_invalid_messages_are_counted_and_logged_once(endpoints, peers, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode.broker")
    frontend, backend = endpoints
    with running(frontend, backend) as server:
        worker = peers.worker(backend, b"w-1")
        acceptor = peers.acceptor(frontend, "acc-1")
        for _ in range(600):
            acceptor.send_raw([b"junk"])
        acceptor.send(wire.REQUEST, b"CMD", b"", **request_fields(acceptor="acc-1"))
        peers.wait_for(worker, wire.REQUEST)
    assert server.state.faults["no_delimiter"] == 600
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([r for r in warnings if "no_delimiter" in r.getMessage()]) == 1
    assert any("w-1 joined" in record.getMessage() for record in caplog.records)


def test_send_failures_are_handed_to_the_state(endpoints, caplog, monkeypatch):
    frontend, backend = endpoints
    server = BrokerServer(BrokerConfig(frontend=frontend, backend=backend))

    class Refusing:
        def __init__(self, errno):
            self.errno = errno
            self.sent = 0

        def send_multipart(self, parts, flags=0, copy=True):
            self.sent += 1
            raise zmq.ZMQError(self.errno)

    backend_socket, frontend_socket = Refusing(zmq.EAGAIN), Refusing(zmq.ENOTSUP)
    try:
        monkeypatch.setattr(server, "backend", backend_socket)
        monkeypatch.setattr(server, "frontend", frontend_socket)
        server.state.on_backend(b"w-1", [zmq.Frame(b""), zmq.Frame(_ready())], 0.0)
        server.state.on_backend(b"w-2", [zmq.Frame(b""), zmq.Frame(_ready())], 0.0)
        server._perform(
            [
                SendToWorker(b"w-1", (b"x",), wire.CANCEL),
                SendToWorker(b"w-2", (b"x",), wire.CANCEL),
                SendToWorker(b"w-1", (b"y",), wire.CANCEL),
                SendToAcceptor(b"acc", (b"z",), wire.REPLY),
            ]
        )
        assert backend_socket.sent == 2  # the second send to w-1 was held back with the first
        assert frontend_socket.sent == 1
        assert server.state.stats()["dropped"] == 4
        assert server.state.stats()["workers"] == 2  # busy, not dead
        assert "sending reply" in caplog.text
    finally:
        monkeypatch.undo()
        server.close()
    server.close()  # twice is harmless


def test_a_shared_context_is_left_open(endpoints):
    context = zmq.Context()
    frontend, backend = endpoints
    server = BrokerServer(BrokerConfig(frontend=frontend, backend=backend), context=context)
    assert server.bind() == (frontend, backend)
    server.close()
    assert not context.closed
    context.term()


def _ready() -> bytes:
    return wire.pack_envelope(wire.READY, credits=1)


# -- the command line ------------------------------------------------------------------


def test_main_reports_bad_arguments_and_bind_failures(capsys, caplog):
    assert main(["--frontend", "tcp://*:1"]) == 2
    assert main(["--frontend", "tcp://*:1", "--backend", "tcp://*:1"]) == 2
    assert "must differ" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--heartbeat-liveness" in capsys.readouterr().out
    assert main(["--frontend", "bogus://x", "--backend", "bogus://y"]) == 1
    assert "cannot bind" in caplog.text


def test_main_serves_until_sigterm_and_logs_stats_on_sigusr1(endpoints, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode.broker")
    frontend, backend = endpoints
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    seen: list[str] = []

    def drive() -> None:
        try:
            fakes = Peers(0.1)
            try:
                acceptor = fakes.acceptor(frontend, "acc-1")
                fakes.wait_until(lambda: acceptor.heartbeats > 0)
                seen.append("heartbeat")
                signal.pthread_kill(main_thread, signal.SIGUSR1)
                fakes.wait_until(lambda: "broker stats" in caplog.text)
                seen.append("stats")
            finally:
                fakes.close()
        finally:
            signal.pthread_kill(main_thread, signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    driver = threading.Thread(target=drive)
    driver.start()
    code = main(["--frontend", frontend, "--backend", backend, "--heartbeat-interval", "0.1"])
    driver.join(PATIENCE)
    assert code == 0
    assert seen == ["heartbeat", "stats"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_main_off_the_main_thread_installs_no_signal_handlers(endpoints, monkeypatch):
    class Quick(BrokerServer):
        def run(self) -> None:
            self.ran = True

    monkeypatch.setattr("broker.__main__.BrokerServer", Quick)
    frontend, backend = endpoints
    codes: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(
        target=lambda: codes.append(main(["--frontend", frontend, "--backend", backend]))
    )
    thread.start()
    thread.join(PATIENCE)
    assert codes == [0]
    assert signal.getsignal(signal.SIGTERM) is before


def test_python_dash_m_broker_runs_and_stops_on_sigterm(endpoints, peers):
    frontend, backend = endpoints
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "--frontend", frontend, "--backend", backend],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        worker = peers.worker(backend, b"w-1")
        acceptor = peers.acceptor(frontend, "acc-1")
        acceptor.send(wire.REQUEST, b"CMD", b"DATA", **request_fields(acceptor="acc-1"))
        peers.wait_for(worker, wire.REQUEST, timeout=PATIENCE)
        worker.send(wire.REPLY, b"RSP", acceptor="acc-1", assoc_id=1, msg_id=1, final=True)
        peers.wait_for(acceptor, wire.REPLY)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=PATIENCE) == 0  # no message left lingering holds it up
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read().decode() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert "broker stopping" in stderr
