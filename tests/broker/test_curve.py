# ZeroMQ CURVE between hosts (broker.curve): key files, the broker's allow-list, and proof
# that a peer with the right keys is served while one with an unknown key or the wrong broker
# key is not (it cannot impersonate a worker or an acceptor).
from __future__ import annotations

import logging
import stat
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from broker import wire
from broker.config import BrokerConfig, parse_args
from broker.curve import (
    AllowedClients,
    client_keys,
    client_role_keys,
    generate_keys,
    load_key_pair,
    load_public_key,
    server_keys,
    server_paths,
)
from broker.server import BrokerServer
from node import cli
from tests.broker.peers import Peers, request_fields
from tests.synthetic import PATIENCE, VERIFICATION, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.cluster

INTERVAL = 0.2


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """broker, client (allowed) and rogue (not allowed) key pairs; clients/ holds the allowed
    public keys."""
    folder = tmp_path / "keys"
    generate_keys(folder, ["broker", "client", "rogue", "impostor-broker"])
    allowed = folder / "clients"
    allowed.mkdir()
    (allowed / "client.key").write_bytes((folder / "client.key").read_bytes())
    return folder


def _endpoints() -> tuple[str, str]:
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"


@contextmanager
def running(config: BrokerConfig) -> Iterator[BrokerServer]:
    server = BrokerServer(config)
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


def _curve_peers(keys: Path, name: str, server: str = "broker") -> Peers:
    """Fake peers whose sockets are CURVE clients with key pair `name`."""
    peers = Peers(INTERVAL)
    public, secret = load_key_pair(keys / f"{name}.key_secret")
    peers.context.setsockopt(zmq.CURVE_PUBLICKEY, public)
    peers.context.setsockopt(zmq.CURVE_SECRETKEY, secret)
    peers.context.setsockopt(zmq.CURVE_SERVERKEY, load_public_key(keys / f"{server}.key"))
    return peers


def _wait_for_handshake(
    socket: zmq.Socket[bytes], wanted: set[int], limit: float = PATIENCE
) -> int:
    """The first of the `wanted` monitor events on `socket` (bounded wait)."""
    monitor = socket.get_monitor_socket()
    try:
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no handshake event among {wanted}"
            if monitor.poll(int(remaining * 1000)):
                event = int(recv_monitor_message(monitor)["event"])
                if event in wanted:
                    return event
    finally:
        socket.disable_monitor()
        monitor.close(0)


FAILED: set[int] = {
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH),
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL),
    int(zmq.EVENT_DISCONNECTED),
}


# --- key files ------------------------------------------------------------------------------


def test_generated_keys_load_and_refuse_to_be_overwritten(tmp_path):
    written = generate_keys(tmp_path / "k")
    assert sorted(p.name for p in written) == [
        "broker.key",
        "broker.key_secret",
        "client.key",
        "client.key_secret",
    ]
    assert stat.S_IMODE((tmp_path / "k" / "broker.key_secret").stat().st_mode) == 0o600
    public, secret = load_key_pair(tmp_path / "k" / "broker.key_secret")
    assert load_public_key(tmp_path / "k" / "broker.key") == public
    assert len(public) == len(secret) == 40
    keys = client_keys(tmp_path / "k" / "client.key_secret", tmp_path / "k" / "broker.key")
    assert keys["server"] == public
    assert server_keys(tmp_path / "k" / "broker.key_secret") == {"public": public, "secret": secret}
    with pytest.raises(ValueError, match="exists: remove it first"):
        generate_keys(tmp_path / "k", ["client"])


def test_unusable_key_files_are_named(tmp_path):
    generate_keys(tmp_path, ["broker"])
    with pytest.raises(ValueError, match="holds no CURVE secret key"):
        load_key_pair(tmp_path / "broker.key")
    with pytest.raises(ValueError, match=r"cannot read CURVE key file .*missing"):
        load_public_key(tmp_path / "missing")
    (tmp_path / "text").write_text("hello\n")
    with pytest.raises(ValueError, match="is not a ZeroMQ CURVE key file"):
        load_public_key(tmp_path / "text")
    (tmp_path / "short").write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(ValueError, match="no valid CURVE public key"):
        load_public_key(tmp_path / "short")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no public key file"):
        AllowedClients(tmp_path / "empty")


def test_options_by_directory_and_by_file(keys):
    folder = str(keys)
    assert server_paths(folder, None, None) == (f"{folder}/broker.key_secret", folder)
    assert server_paths(folder, "mine", "others") == ("mine", "others")
    assert server_paths(None, None, None) == (None, None)
    by_folder = client_role_keys(folder, None, None)
    assert by_folder == client_keys(keys / "client.key_secret", keys / "broker.key")
    explicit = client_role_keys(None, str(keys / "rogue.key_secret"), str(keys / "broker.key"))
    assert explicit is not None
    assert explicit["public"] == load_public_key(keys / "rogue.key")
    assert client_role_keys(None, None, None) is None
    with pytest.raises(ValueError, match="needs both"):
        client_role_keys(None, str(keys / "client.key_secret"), None)
    config = parse_args(
        ["--frontend", "tcp://*:1", "--backend", "tcp://*:2", "--curve-keys", folder]
    )
    assert (config.curve_secret, config.curve_clients) == (f"{folder}/broker.key_secret", folder)
    with pytest.raises(ValueError, match="needs --curve-secret"):
        BrokerConfig(frontend="tcp://*:1", backend="tcp://*:2", curve_clients=folder)


def test_cli_keys_generate(tmp_path, capsys):
    assert cli.main(["keys", "generate", str(tmp_path / "k"), "--name", "site-a"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "k" / "site-a.key"),
        str(tmp_path / "k" / "site-a.key_secret"),
    ]
    assert cli.main(["keys", "generate", str(tmp_path / "k"), "--name", "site-a"]) == 1
    assert "exists" in capsys.readouterr().err


def test_broker_with_a_bad_key_file_fails_at_start(tmp_path, caplog):
    from broker.__main__ import main

    code = main(["--frontend", "ipc://x", "--backend", "ipc://y", "--curve-secret", str(tmp_path)])
    assert code == 1
    assert "CURVE key file" in caplog.text


# --- on the wire ----------------------------------------------------------------------------


class Refusals(logging.Handler):
    """Sets `seen` when the broker's ZAP handler logs a refused key."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "refused" in record.getMessage():
            self.lines.append(record.getMessage())
            self.seen.set()


@pytest.fixture
def refusals() -> Iterator[Refusals]:
    handler = Refusals()
    logger = logging.getLogger("dicomnode.curve")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_only_allowed_keys_are_served(keys, refusals):
    frontend, backend = _endpoints()
    config = BrokerConfig(
        frontend=frontend,
        backend=backend,
        heartbeat_interval=INTERVAL,
        curve_secret=str(keys / "broker.key_secret"),
        curve_clients=str(keys / "clients"),
    )
    good = _curve_peers(keys, "client")
    rogue = _curve_peers(keys, "rogue")
    fooled = _curve_peers(keys, "client", server="impostor-broker")
    try:
        with running(config) as server:
            impostor = rogue.worker(backend, b"w-impostor")
            assert _wait_for_handshake(impostor.socket, FAILED) in FAILED
            assert refusals.seen.wait(PATIENCE)
            public = load_public_key(keys / "rogue.key").decode()
            assert any(public in line for line in refusals.lines)
            wrong_server = fooled.worker(backend, b"w-fooled")
            assert _wait_for_handshake(wrong_server.socket, FAILED) in FAILED
            rogue_acceptor = rogue.acceptor(frontend, "acc-rogue")
            assert _wait_for_handshake(rogue_acceptor.socket, FAILED) in FAILED

            acceptor = good.acceptor(frontend, "acc-1")
            assert _wait_for_handshake(acceptor.socket, {int(zmq.EVENT_HANDSHAKE_SUCCEEDED)})
            acceptor.send(wire.REQUEST, b"CMD", b"DATA", **request_fields(acceptor="acc-1"))
            good.wait_until(lambda: server.state.stats()["queue"] == 1)
            assert server.state.stats()["workers"] == 0  # neither impostor got in
            worker = good.worker(backend, b"w-1")
            _, envelope, parts = good.wait_for(worker, wire.REQUEST)
            assert (envelope["acceptor"], parts) == ("acc-1", [b"CMD", b"DATA"])
            worker.send(wire.REPLY, b"RSP", acceptor="acc-1", assoc_id=1, msg_id=1, final=True)
            _, envelope, parts = good.wait_for(acceptor, wire.REPLY)
            assert parts == [b"RSP"]
            stats = server.state.stats()
            assert (stats["workers"], stats["acceptors"], stats["replies"]) == (1, 1, 1)
            for outsider in (impostor, wrong_server, rogue_acceptor):
                assert outsider.socket.poll(0) == 0  # nothing ever reached them
    finally:
        for peers in (good, rogue, fooled):
            peers.close()


def test_acceptor_and_worker_with_keys_serve_an_echo(keys, make_ae):
    """The real ZmqDispatcher and Worker, CURVE clients of a broker with an allow-list."""
    from workers.handlers.common import Handlers
    from workers.runtime import Worker, WorkerConfig

    frontend, backend = _endpoints()
    config = BrokerConfig(
        frontend=frontend,
        backend=backend,
        heartbeat_interval=INTERVAL,
        curve_secret=str(keys / "broker.key_secret"),
        curve_clients=str(keys / "clients"),
    )
    curve: dict[str, Any] | None = client_role_keys(str(keys), None, None)
    with running(config) as server:
        worker = Worker(
            WorkerConfig(broker=backend, heartbeat_interval=INTERVAL, curve=curve), Handlers()
        )
        thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        thread.start()
        try:
            scp = make_ae("OURSCP")
            scp.add_supported_context(VERIFICATION)
            scp.start(block=False, broker=frontend, curve=curve)
            scu = make_ae("OURSCU")
            scu.add_requested_context(VERIFICATION)
            association = scu.associate("127.0.0.1", scp.port, ae_title="OURSCP")
            assert association.is_established
            assert association.send_c_echo().Status == 0x0000
            association.release()
            assert server.state.stats()["replies"] == 1
        finally:
            worker.stop()
            thread.join(PATIENCE)
        assert not thread.is_alive()
