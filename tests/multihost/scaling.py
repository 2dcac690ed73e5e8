# Horizontal scale on one machine (issue 16): a cluster whose simulated hosts each have a CPU
# budget (tests.multihost.cgroups through Network.limit_cpu), an ingest that keeps going while
# hosts come and go, and the accounting that says which host used how much of its budget.
# Shared by the functional test (tests/multihost/test_scaleout.py) and the benchmark
# (tests/benchmarks/scaleout.py).
#
# Rules: as tests.multihost.cluster: processes only through Network.start, waits only through
# wait_until; a host's CPU is its group's counter (every process it ever ran, reaped included).
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.multihost.cluster import (
    DICOM_PORT,
    Cluster,
    metric,
    storescu_acknowledged,
)
from tests.synthetic import PATIENCE, make_dataset, wait_until, write_datasets

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from tests.multihost.netns import Network

#: host name -> last octet on the test subnet: room for two acceptor and four worker hosts.
SCALE_HOSTS = {
    "lb": 2,
    "acceptor1": 11,
    "acceptor2": 12,
    "broker": 20,
    "worker1": 31,
    "worker2": 32,
    "worker3": 33,
    "worker4": 34,
    "client": 50,
}


def write_objects(folder: Path, count: int, *, first_patient: int = 1) -> list[Path]:
    """`count` 8 KiB CT images (64 x 64), 100 per patient; file stems are SOP Instance UIDs."""
    datasets = [
        make_dataset(
            first_patient + index // 100, 1, 1 + index % 100 // 50, 1 + index % 50, size=64
        )
        for index in range(count)
    ]
    return write_datasets(datasets, folder)


def apply_budget(net: Network, budget: Mapping[str, float | None]) -> None:
    """Put each named host in its own CPU group with that many cores (None: counted only)."""
    for host, cores in budget.items():
        net.limit_cpu(host, cores)


def start_roles(
    cluster: Cluster,
    acceptors: Sequence[str],
    workers: Sequence[str],
    worker_options: Sequence[object] = (),
) -> None:
    """Broker, the worker and acceptor hosts, HAProxy over the acceptors; waits until the
    broker sees every worker and HAProxy every acceptor, then a C-ECHO goes through."""
    cluster.data_dir.mkdir()
    cluster.start_broker()
    for host in workers:
        cluster.start_worker(host, *worker_options)
    for host in acceptors:
        cluster.start_acceptor(host)
    cluster.start_haproxy(acceptors)

    def all_ready() -> bool:
        cluster.alive()
        return all(cluster.ready(host) for host in ("broker", *workers, *acceptors))

    wait_until(all_ready, "broker, workers and acceptors to be ready")
    wait_until(
        lambda: live_workers(cluster) == len(workers), f"the broker to see {len(workers)} workers"
    )
    wait_until(lambda: cluster.haproxy_up() == set(acceptors), "HAProxy to pass every acceptor")
    wait_until(cluster.echo, "C-ECHO through the load balancer")


def live_workers(cluster: Cluster) -> float:
    return metric(cluster.metrics("broker"), "dicomnode_broker_live_workers")


def worker_requests(cluster: Cluster, host: str) -> float:
    return metric(cluster.metrics(host), "dicomnode_worker_requests_total")


def cpu_usage(net: Network) -> dict[str, float]:
    """CPU seconds each host with a CPU group has used so far."""
    return {
        name: group.usage_seconds() for name, group in (net.cpu.groups if net.cpu else {}).items()
    }


def add_worker(cluster: Cluster, host: str, options: Sequence[object] = ()) -> None:
    """Start one more worker host on the running cluster; returns once the broker routes to it."""
    before = live_workers(cluster)
    cluster.start_worker(host, *options)
    wait_until(lambda: cluster.ready(host), f"{host} to be ready")
    wait_until(lambda: live_workers(cluster) > before, f"the broker to see {host}")


def drain_worker(cluster: Cluster, host: str) -> int:
    """SIGTERM one worker host and wait for it to finish its requests and exit (its code)."""
    process = cluster.terminate(host)
    return process.wait(PATIENCE)


@dataclass
class Usage:
    """One host's CPU over an interval, against its budget."""

    host: str
    seconds: float
    wall: float
    cores: float | None

    @property
    def cores_used(self) -> float:
        return self.seconds / self.wall if self.wall > 0 else 0.0

    @property
    def share(self) -> float | None:
        """Fraction of the budget used (None when the host has no cap)."""
        return None if not self.cores else self.cores_used / self.cores


def usage_between(
    net: Network, before: Mapping[str, float], after: Mapping[str, float], wall: float
) -> list[Usage]:
    return [
        Usage(host, after[host] - before.get(host, 0.0), wall, net.cpu_group(host).cores)  # type: ignore[union-attr]
        for host in after
    ]


def saturated(usages: Sequence[Usage], threshold: float = 0.75) -> list[Usage]:
    """The capped hosts that used at least `threshold` of their budget, busiest first."""
    return sorted(
        (u for u in usages if u.share is not None and u.share >= threshold),
        key=lambda u: -(u.share or 0.0),
    )


@dataclass(eq=False)
class IngestClient(threading.Thread):
    """One SCU on the client host: DCMTK storescu runs of `batch` files from `files` through the
    load balancer, each file sent again until acknowledged with Success; takes no new file once
    `stop` is set (the ones it started are still seen through)."""

    net: Network
    title: str
    files: list[Path]
    batch: int
    stop: threading.Event
    limit: float = PATIENCE
    acknowledged: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)
    runs: int = 0
    failed_runs: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name=self.title, daemon=True)

    def run(self) -> None:
        try:
            self._send()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            self.error = error

    def _send(self) -> None:
        deadline = time.monotonic() + self.limit
        fresh = list(self.files)
        retry: list[Path] = []
        while time.monotonic() < deadline:
            if self.failed_runs > 40:
                raise AssertionError(f"{self.title}: more than 40 storescu runs failed")
            batch = retry[: self.batch]
            if not self.stop.is_set():
                room = self.batch - len(batch)
                batch, fresh = batch + fresh[:room], fresh[room:]
            if not batch:
                break
            self.attempted |= {path.stem for path in batch}
            self.runs += 1
            result = self.net.run(
                "client",
                [
                    "storescu",
                    "-v",
                    "-aet",
                    self.title.upper()[:16],
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
            stored = storescu_acknowledged(result.stdout + result.stderr)
            self.acknowledged |= stored
            if result.returncode != 0 or len(stored & {p.stem for p in batch}) < len(batch):
                self.failed_runs += 1
            retry = [p for p in dict.fromkeys(retry + batch) if p.stem not in self.acknowledged]


class Ingest:
    """`clients` IngestClients sharing `files`, started at once, in the background."""

    def __init__(
        self, net: Network, files: list[Path], *, clients: int, batch: int, name: str = "scu"
    ) -> None:
        self.stop_event = threading.Event()
        self.group = [
            IngestClient(net, f"{name}{index}", files[index::clients], batch, self.stop_event)
            for index in range(clients)
        ]
        self.started = time.monotonic()
        for client in self.group:
            client.start()

    def stop(self) -> None:
        """No new files from now on; what was started is still sent until acknowledged."""
        self.stop_event.set()

    def wait(self) -> float:
        """Wait for every client (bounded); the wall time since the start."""
        for client in self.group:
            client.join(PATIENCE + 60)
        elapsed = time.monotonic() - self.started
        for client in self.group:
            if client.error is not None:
                raise client.error
            assert not client.is_alive(), f"{client.title} did not finish"
        return elapsed

    @property
    def acknowledged(self) -> set[str]:
        return set().union(*(client.acknowledged for client in self.group))

    @property
    def attempted(self) -> set[str]:
        return set().union(*(client.attempted for client in self.group))

    @property
    def failed_runs(self) -> int:
        return sum(client.failed_runs for client in self.group)

    @property
    def finished(self) -> bool:
        return not any(client.is_alive() for client in self.group)


def check_stored_exactly_once(cluster: Cluster, expected: set[str]) -> None:
    """Files and index rows: each of `expected` once, the row pointing at the file, no
    temporary file left; AssertionError naming what differs."""
    on_disk = cluster.stored_files()
    if set(on_disk) != expected:
        extra, missing = set(on_disk) - expected, expected - set(on_disk)
        raise AssertionError(f"stored files: {len(missing)} missing, {len(extra)} unexpected")
    counts, rows = cluster.indexed()
    uids = sorted(uid for uid, _ in rows)
    if counts["instance"] != len(expected) or uids != sorted(expected):
        raise AssertionError(f"index: {counts['instance']} rows for {len(expected)} objects")
    for uid, path in rows:
        if (cluster.data_dir / path).resolve() != on_disk[uid].resolve():
            raise AssertionError(f"index row of {uid} points at {path}, not its file")
    leftovers = cluster.temporary_files()
    if leftovers:
        raise AssertionError(f"temporary files left: {leftovers[:3]}")
