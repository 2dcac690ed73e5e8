# Issue 16: horizontal scale on CPU-capped simulated hosts, functionally (the numbers are the
# benchmark's: python -m tests.benchmarks.scaleout). Two worker hosts, each in its own CPU
# cgroup, take an ingest through HAProxy and one acceptor host: both do work (their metrics and
# their CPU counters say so) and every object is stored exactly once. Then, in one ongoing
# ingest, a third worker host joins and works, and the first leaves by SIGTERM (drain, exit 0)
# while the others carry on: every acknowledged object is stored, each once.
#
# Rules: as tests/multihost: namespaces and groups made here and removed at teardown, waits are
# bounded polls on observable state; nothing is timed.
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from tests.multihost.cgroups import cgroups_writable
from tests.multihost.cluster import ClientRun, Cluster, metric
from tests.multihost.netns import NamespaceUnavailableError, Network
from tests.multihost.scaling import (
    SCALE_HOSTS,
    Ingest,
    add_worker,
    apply_budget,
    check_stored_exactly_once,
    cpu_usage,
    drain_worker,
    start_roles,
    worker_requests,
    write_objects,
)
from tests.synthetic import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

HOSTS = ("lb", "acceptor1", "broker", "worker1", "worker2", "worker3", "client")
WORKER_CORES = 0.2
WORKER_OPTIONS = ("--threads", 2)
FIRST_OBJECTS = 160
POOL = 3000  # the ongoing ingest's objects: far more than it gets through before it is stopped


@pytest.fixture
def network() -> Iterator[Network]:
    if shutil.which("ip") is None:
        pytest.skip("network namespaces unavailable: iproute2 (`ip`) is not installed")
    reason = cgroups_writable()
    if reason is not None:
        pytest.skip(f"CPU cgroups not writable here: {reason}")
    net = Network({name: SCALE_HOSTS[name] for name in HOSTS})
    try:
        try:
            net.create()
        except NamespaceUnavailableError as error:
            pytest.skip(f"network namespaces unavailable (needs CAP_NET_ADMIN): {error}")
        yield net
    finally:
        net.destroy()


def test_capped_worker_hosts_share_the_ingest_and_come_and_go(network: Network, tmp_path: Path):
    apply_budget(network, dict.fromkeys(("worker1", "worker2", "worker3"), WORKER_CORES))
    cluster = Cluster(network, tmp_path)
    start_roles(cluster, ["acceptor1"], ["worker1", "worker2"], WORKER_OPTIONS)
    for host in ("worker1", "worker2"):
        group = network.cpu_group(host)
        assert group is not None
        assert group.quota_cores() == pytest.approx(WORKER_CORES)
        assert cluster.processes[host].pid in group.members()

    # Both capped worker hosts take part in one ingest.
    first = write_objects(tmp_path / "first", FIRST_OBJECTS)
    cpu_before = cpu_usage(network)
    run = ClientRun(network, "first", first, clients=4, batch=FIRST_OBJECTS // 4, limit=120)
    run.wait()
    expected = {path.stem for path in first}
    assert run.acknowledged == expected
    check_stored_exactly_once(cluster, expected)
    work = {host: worker_requests(cluster, host) for host in ("worker1", "worker2")}
    print(f"requests per capped worker host: {work}")
    assert all(count > 0 for count in work.values()), work
    assert sum(work.values()) >= FIRST_OBJECTS  # plus the C-ECHOs of start_roles
    stores = metric(
        cluster.metrics("acceptor1"), "dicomnode_dimse_requests_total", command="CStore"
    )
    assert stores == FIRST_OBJECTS
    cpu = cpu_usage(network)
    assert all(cpu[host] > cpu_before[host] for host in ("worker1", "worker2")), cpu

    # One ongoing ingest: worker3 joins, then worker1 leaves with SIGTERM.
    pool = write_objects(tmp_path / "pool", POOL, first_patient=100)
    ingest = Ingest(network, pool, clients=4, batch=20, name="elastic")
    try:
        wait_until(lambda: len(cluster.stored_files()) >= FIRST_OBJECTS + 40, "the ingest to run")
        add_worker(cluster, "worker3", WORKER_OPTIONS)
        assert cluster.processes["worker3"].pid in network.cpu_group("worker3").members()  # type: ignore[union-attr]
        wait_until(lambda: worker_requests(cluster, "worker3") >= 20, "worker3 to take work")
        assert drain_worker(cluster, "worker1") == 0
        carrying_on = {host: worker_requests(cluster, host) for host in ("worker2", "worker3")}
        wait_until(
            lambda: all(
                worker_requests(cluster, host) >= count + 20 for host, count in carrying_on.items()
            ),
            "worker2 and worker3 to carry on without worker1",
        )
        assert not ingest.finished  # all of the above happened mid-ingest
    finally:
        ingest.stop()
        ingest.wait()
    cluster.alive()
    attempted = ingest.attempted
    print(f"ongoing ingest: {len(attempted)} objects, {ingest.failed_runs} storescu runs retried")
    assert len(attempted) < POOL
    assert ingest.acknowledged == attempted  # the clients' retries got every object in
    assert ingest.acknowledged <= cluster.stored_files().keys()  # nothing acknowledged is lost
    check_stored_exactly_once(cluster, expected | attempted)
