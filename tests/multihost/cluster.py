# The dicomnode roles spread over the test network's hosts, HAProxy in front, and the
# observations the multi-host test makes: metrics scraped inside each namespace, HAProxy's
# server states from its stats socket, files and index rows in the shared data directory.
#
# Rules: every process is started through Network.start (so the network's teardown kills it);
# every wait is wait_until() (tests.synthetic): a bounded loop on observable state that fails the
# test with what it was waiting for.
from __future__ import annotations

import csv
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.synthetic import PATIENCE
from workers.store.index import Index

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Sequence

    from tests.multihost.netns import Network

REPO = Path(__file__).resolve().parents[2]
DICOM_PORT = 11112
FRONTEND_PORT = 5555
BACKEND_PORT = 5556
METRICS_PORT = 9100
DESTINATION_PORT = 11113
DESTINATION_AE = "STORESCP"
HAPROXY_CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"

# Runs inside a namespace: print the body of one HTTP GET (exit 1 on an error or a non-200).
_SCRAPE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    body = urllib.request.urlopen(sys.argv[1], timeout=3).read()\n"
    "except OSError as error:\n"
    "    sys.exit(str(error))\n"
    "sys.stdout.write(body.decode())\n"
)


# One tcplog line: client [accept date] frontend backend/server timers bytes ...
_SESSION = re.compile(r"\[(\d+/\w+/\d+:[\d:.]+)\] dicom dicomnode_acceptors/(\S+) ")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot (/proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and wanted <= set(sample_labels)
    )


def haproxy_config(bind: str, servers: dict[str, str], stats_socket: Path) -> str:
    """The deploy example (deploy/haproxy/haproxy.cfg) made to run here: its global, defaults,
    frontend and backend sections (balancing, DICOM health check) as written, with the test's
    bind address and servers (addresses, no DNS), faster checks and a stats socket; the DNS
    resolvers and the HTTP stats page are left out."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in HAPROXY_CONFIG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(line.strip())
    frontend, backend = "frontend dicom", "backend dicomnode_acceptors"
    for name in ("global", "defaults", frontend, backend):
        assert name in sections, f"{HAPROXY_CONFIG} has no `{name}` section"
    assert any(d.startswith("tcp-check send-binary 01") for d in sections[backend])
    assert any(d.startswith("tcp-check expect") for d in sections[backend])
    kept_backend = [
        d for d in sections[backend] if not d.startswith(("server ", "default-server "))
    ]
    kept_frontend = [d for d in sections[frontend] if not d.startswith("bind ")]
    lines = [
        "global",
        *sections["global"],
        f"stats socket {stats_socket} mode 600 level admin",
        "defaults",
        *sections["defaults"],
        frontend,
        f"bind {bind}",
        *kept_frontend,
        backend,
        *kept_backend,
        "default-server check inter 500ms fastinter 200ms fall 2 rise 1 maxconn 256",
        *(f"server {name} {address}" for name, address in servers.items()),
    ]
    return (
        "\n".join(
            line
            if line.split()[0] in ("global", "defaults", "frontend", "backend")
            else f"    {line}"
            for line in lines
        )
        + "\n"
    )


def storescu_acknowledged(output: str) -> set[str]:
    """Files (by stem, the SOP Instance UID) DCMTK `storescu -v` got a Success response for."""
    stored: set[str] = set()
    current = None
    for line in output.splitlines():
        sending = re.search(r"Sending file: (\S+)", line)
        if sending:
            current = Path(sending.group(1)).stem
        elif "Received Store Response (Success" in line and current is not None:
            stored.add(current)
            current = None
    return stored


@dataclass
class Cluster:
    """dicomnode on the test network: broker, workers and acceptors on their own hosts.

    By default the worker hosts share one data directory (objects and the SQLite index); with
    `store_url` (an s3:// object store) and `index_url` (PostgreSQL) they share only those, each
    worker host with a private data directory (spools) and `worker_env` (the S3 credentials)."""

    net: Network
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    store_url: str | None = None
    index_url: str | None = None
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def worker_data_dir(self, host: str) -> Path:
        """The data directory of worker `host`: the shared one, or its own with an object store."""
        return self.data_dir if self.store_url is None else self.root / f"{host}-data"

    @property
    def destination_dir(self) -> Path:
        return self.root / "destination"

    @property
    def haproxy_socket(self) -> Path:
        return self.root / "haproxy.sock"

    def _log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def _python(
        self, host: str, name: str, argv: Sequence[object], extra_env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, **(extra_env or {})}
        env["PYTHONPATH"] = str(REPO)
        self.processes[name] = self.net.start(
            host, [sys.executable, *argv], self._log(name), env=env, cwd=REPO
        )

    # --- starting the roles ---------------------------------------------------------------

    def start_broker(self) -> None:
        self._python(
            "broker",
            "broker",
            [
                "-m",
                "broker",
                "--frontend",
                f"tcp://*:{FRONTEND_PORT}",
                "--backend",
                f"tcp://*:{BACKEND_PORT}",
                "--metrics-port",
                METRICS_PORT,
            ],
        )

    def start_worker(self, host: str, *options: object) -> None:
        """A worker on `host`; `options` are added to its command line (e.g. --threads 2)."""
        shared = [
            *(["--store", self.store_url] if self.store_url else []),
            *(["--index", self.index_url] if self.index_url else []),
        ]
        self._python(
            host,
            host,
            [
                "-m",
                "workers",
                "--broker",
                f"tcp://{self.net.address('broker')}:{BACKEND_PORT}",
                "--data-dir",
                self.worker_data_dir(host),
                *shared,
                "--metrics-port",
                METRICS_PORT,
                "--known-ae",
                f"{DESTINATION_AE}={self.net.address('client')}:{DESTINATION_PORT}",
                *options,
            ],
            self.worker_env,
        )

    def start_acceptor(self, host: str) -> None:
        self._python(
            host,
            host,
            [
                "-m",
                "node.acceptor",
                "--broker",
                f"tcp://{self.net.address('broker')}:{FRONTEND_PORT}",
                "--port",
                DICOM_PORT,
                "--metrics-port",
                METRICS_PORT,
                "--drain-timeout",
                2,
            ],
        )

    def start_haproxy(self, acceptors: Sequence[str] = ("acceptor1", "acceptor2")) -> None:
        text = haproxy_config(
            f"{self.net.address('lb')}:{DICOM_PORT}",
            {host: f"{self.net.address(host)}:{DICOM_PORT}" for host in acceptors},
            self.haproxy_socket,
        )
        config = self.root / "haproxy.cfg"
        config.write_text(text)
        self.processes["haproxy"] = self.net.start(
            "lb", ["haproxy", "-db", "-f", config], self._log("haproxy")
        )

    def start_destination(self) -> None:
        self.destination_dir.mkdir()
        self.processes["storescp"] = self.net.start(
            "client",
            ["storescp", "-aet", DESTINATION_AE, "-od", self.destination_dir, DESTINATION_PORT],
            self._log("storescp"),
        )

    def kill(self, name: str) -> None:
        """SIGKILL one role process (a crashed host as far as its peers can tell)."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(PATIENCE)

    def terminate(self, name: str) -> subprocess.Popen[bytes]:
        """SIGTERM one role process (an orderly shutdown: it drains); returns it, still
        running perhaps, no longer watched by alive()."""
        process = self.processes.pop(name)
        process.terminate()
        return process

    # --- observing ------------------------------------------------------------------------

    def alive(self) -> None:
        """Fail at once, with its log, if a role process has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self._log(name).read_text(errors="replace")[-3000:]
                pytest.fail(f"{name} exited with {process.returncode}:\n{tail}")

    def http(self, host: str, path: str) -> str | None:
        """GET http://127.0.0.1:METRICS_PORT/path inside `host`'s namespace (None on failure)."""
        result = self.net.run(
            host,
            [sys.executable, "-I", "-c", _SCRAPE, f"http://127.0.0.1:{METRICS_PORT}{path}"],
            timeout=PATIENCE,
            capped=False,  # the observer's probe does not spend the host's CPU budget
        )
        return result.stdout if result.returncode == 0 else None

    def metrics(self, host: str) -> Samples:
        text = self.http(host, "/metrics")
        if text is None:
            pytest.fail(f"cannot scrape /metrics on {host}")
        return parse_metrics(text)

    def ready(self, host: str) -> bool:
        return self.http(host, "/readyz") is not None

    def haproxy_servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's `show stat` rows of the acceptor backend's servers, by server name."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.haproxy_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        return {
            row["svname"]: row
            for row in csv.DictReader(text.splitlines())
            if row["pxname"] == "dicomnode_acceptors" and row["svname"] != "BACKEND"
        }

    def haproxy_up(self) -> set[str]:
        if not self.haproxy_socket.exists():
            return set()
        try:
            servers = self.haproxy_servers()
        except OSError:
            return set()
        return {name for name, row in servers.items() if row["status"].startswith("UP")}

    def haproxy_sessions(self) -> list[tuple[datetime, str]]:
        """(accept time, server) of every association HAProxy logged (each when it ends)."""
        text = self._log("haproxy").read_text(errors="replace")
        return [
            (datetime.strptime(when, "%d/%b/%Y:%H:%M:%S.%f"), server)
            for when, server in _SESSION.findall(text)
        ]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each running role process has used so far."""
        used = {}
        for name, process in self.processes.items():
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        return used

    def echo(self) -> bool:
        """C-ECHO from the client through the load balancer."""
        result = self.net.run(
            "client",
            ["echoscu", "-to", 3, "-ta", 5, "-td", 5, self.net.address("lb"), DICOM_PORT],
            timeout=PATIENCE,
        )
        return result.returncode == 0

    def stored_files(self) -> dict[str, Path]:
        """SOP Instance UID -> file, for every object in the shared data directory."""
        objects = self.data_dir / "objects"
        return {path.stem: path for path in objects.rglob("*.dcm")} if objects.exists() else {}

    def temporary_files(self) -> list[Path]:
        objects = self.data_dir / "objects"
        return list(objects.rglob("*.tmp")) if objects.exists() else []

    def indexed(self) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """The index's row counts and its (SOP Instance UID, path) rows."""
        with Index.open(self.data_dir) as index:
            rows = index.backend.fetch("SELECT sop_instance_uid, path FROM instance")
            return index.counts(), [(str(uid), str(path)) for uid, path in rows]

    def destination_uids(self) -> set[str]:
        """SOP Instance UIDs received by the C-MOVE destination (storescp names files
        <modality>.<SOP Instance UID>)."""
        return {path.name.split(".", 1)[1] for path in self.destination_dir.iterdir()}


class StoreClient(threading.Thread):
    """An SCU that retries: sends its files through the load balancer with DCMTK storescu, one
    association per batch, and sends again every file not acknowledged with Success."""

    def __init__(
        self, net: Network, name: str, files: list[Path], *, batch: int, limit: float
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.net = net
        self.files = files
        self.batch = batch
        self.deadline = time.monotonic() + limit
        self.acknowledged: set[str] = set()
        self.associations = 0
        self.failed_runs: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._send_all()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            self.error = error

    def _send_all(self) -> None:
        pending = list(self.files)
        while pending and time.monotonic() < self.deadline and len(self.failed_runs) < 40:
            batch = pending[: self.batch]
            self.associations += 1
            result = self.net.run(
                "client",
                [
                    "storescu",
                    "-v",
                    "-aet",
                    self.name.upper(),
                    "-aec",
                    "DICOMNODE",
                    "-to",
                    5,
                    "-ta",
                    10,
                    "-td",
                    30,
                    self.net.address("lb"),
                    DICOM_PORT,
                    *batch,
                ],
                timeout=PATIENCE,
            )
            output = result.stdout + result.stderr
            stored = storescu_acknowledged(output)
            self.acknowledged |= stored
            if result.returncode != 0 or len(stored) < len(batch):
                self.failed_runs.append(output[-1500:])
            pending = [path for path in pending if path.stem not in self.acknowledged]


class ClientRun:
    """`clients` retrying SCUs sending `files` concurrently (each its share), in the background."""

    def __init__(
        self, net: Network, name: str, files: list[Path], *, clients: int, batch: int, limit: float
    ) -> None:
        self.files = files
        self.limit = limit
        self.group = [
            StoreClient(net, f"{name}{index}", files[index::clients], batch=batch, limit=limit)
            for index in range(clients)
        ]
        self.started_at = datetime.now()
        self.started = time.monotonic()
        for client in self.group:
            client.start()

    def wait(self) -> float:
        """Wait for every client to finish (bounded); returns the wall time of the run."""
        for client in self.group:
            client.join(self.limit + 100)
        elapsed = time.monotonic() - self.started
        for client in self.group:
            if client.error is not None:
                raise client.error
            assert not client.is_alive(), f"{client.name} did not finish"
        return elapsed

    @property
    def acknowledged(self) -> set[str]:
        return set().union(*(client.acknowledged for client in self.group))

    @property
    def associations(self) -> int:
        return sum(client.associations for client in self.group)

    @property
    def failed_runs(self) -> int:
        """storescu runs that ended with files not stored (each followed by a retry)."""
        return sum(len(client.failed_runs) for client in self.group)
