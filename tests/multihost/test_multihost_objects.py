# Issue 17: worker hosts that share no file system. The network of test_multihost (HAProxy, two
# acceptor hosts, a broker host, two worker hosts, a client) plus a storage host running
# SeaweedFS (S3) and PostgreSQL: the two worker hosts share only the bucket and the index
# database, each with its own private data directory (spools). DCMTK storescu stores through
# HAProxy -> acceptors -> broker -> both worker hosts (one object above the acceptor's stream
# threshold, spooled on a worker host and uploaded from there); then every object must be in the
# bucket exactly once and indexed in PostgreSQL, nothing may be left in a worker's data
# directory, and C-GET and C-MOVE through the load balancer must read every object back, byte
# for byte, from the bucket (no worker host has a copy).
#
# Rules: every process runs inside a namespace and is killed at teardown (tests.multihost.netns);
# the bucket and the index are observed from inside the storage host (tests.multihost.probe);
# waits are bounded polls on observable state.
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

from node.dicomio import read_part10
from tests.multihost.cluster import DICOM_PORT, ClientRun, Cluster
from tests.multihost.storage import shared_storage
from tests.multihost.test_multihost import (
    ACCEPTORS,
    WORKERS,
    broker_gauge,
    dimse_requests,
    move_patient,
    report,
    stems,
    worker_requests,
    write_patients,
)
from tests.synthetic import PATIENCE, make_dataset, wait_until, write_datasets

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.multihost.netns import Network
    from tests.multihost.storage import SharedStorage

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

PATIENTS = 6  # 240 objects of 8 KiB
CLIENTS = 4
BATCH = 20  # objects per association: a new balancing choice each batch
CLIENT_LIMIT = 120.0
BIG_PATIENT = 90  # one 1536 x 1536 x 16 bit image (4.5 MiB): above the 4 MiB stream threshold


@pytest.fixture
def storage(storage_network: Network, tmp_path: Path) -> Iterator[SharedStorage]:
    with shared_storage(storage_network, tmp_path / "storage") as shared:
        yield shared


def start_cluster(net: Network, root: Path, storage: SharedStorage) -> Cluster:
    """Broker, both worker hosts on the shared bucket and index, both acceptor hosts, HAProxy
    and the C-MOVE destination."""
    cluster = Cluster(
        net,
        root,
        store_url=storage.store_url,
        index_url=storage.index_url,
        worker_env=storage.environment,
    )
    cluster.start_broker()
    for host in WORKERS:
        cluster.start_worker(host)
    for host in ACCEPTORS:
        cluster.start_acceptor(host)
    cluster.start_haproxy()
    cluster.start_destination()

    def all_ready() -> bool:
        cluster.alive()
        return all(cluster.ready(host) for host in ("broker", *WORKERS, *ACCEPTORS))

    wait_until(all_ready, "broker, both workers and both acceptors to be ready")
    wait_until(lambda: broker_gauge(cluster, "live_workers") == 2, "the broker to see 2 workers")
    wait_until(
        lambda: cluster.haproxy_up() == set(ACCEPTORS),
        "HAProxy's DICOM health check to pass on both acceptors",
    )
    wait_until(cluster.echo, "C-ECHO through the load balancer")
    return cluster


def originals(files: list[Path]) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes (without the file meta) of each file sent."""
    return {path.stem: read_part10(str(path)).data for path in files}


def retrieved(folder: Path) -> dict[str, bytes]:
    parts = [read_part10(str(path)) for path in folder.iterdir()]
    return {part.sop_instance_uid: part.data for part in parts}


def assert_in_bucket_and_index_once(storage: SharedStorage, expected: set[str]) -> None:
    """Each SOP instance is one object in the bucket and one PostgreSQL row naming that key."""
    keys = storage.objects()
    per_uid = Counter(key.rsplit("/", 1)[-1].removesuffix(".dcm") for key in keys)
    assert set(per_uid) == expected
    assert [uid for uid, count in per_uid.items() if count != 1] == []
    assert all(key.startswith("objects/") and key.endswith(".dcm") for key in keys)
    counts, rows = storage.indexed()
    assert counts["instance"] == len(expected)
    assert sorted(uid for uid, _ in rows) == sorted(expected)
    assert {path for _, path in rows} == set(keys)
    assert all(path.endswith(f"/{uid}.dcm") for uid, path in rows)


def assert_nothing_on_worker_disks(cluster: Cluster) -> None:
    """No object (nor a spool left behind) in any worker host's private data directory."""
    for host in WORKERS:
        folder = cluster.worker_data_dir(host)
        assert folder != cluster.data_dir
        assert folder.is_dir()  # the worker did open it (its spools live there)
        assert not (folder / "objects").exists()
        left = [path for path in folder.rglob("*") if path.is_file()]
        assert left == [], f"{host} left files in its data directory: {left}"


def get_patient(cluster: Cluster, patient: int, folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    result = cluster.net.run(
        "client",
        [
            "getscu",
            "-P",
            "-aec",
            "DICOMNODE",
            "-od",
            folder,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            f"PatientID=PID{patient:03d}",
            cluster.net.address("lb"),
            DICOM_PORT,
        ],
        timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return retrieved(folder)


def patient_files(files: list[Path], patient: int) -> list[Path]:
    return [path for path in files if f".77.{patient}.1." in path.stem]


def test_worker_hosts_share_only_the_object_store_and_postgresql(
    storage: SharedStorage, storage_network: Network, tmp_path: Path
) -> None:
    cluster = start_cluster(storage_network, tmp_path, storage)
    files = write_patients(tmp_path / "in", 1, PATIENTS)
    files += write_datasets([make_dataset(BIG_PATIENT, 1, 1, 1, size=1536)], tmp_path / "big")
    sent = originals(files)

    run = ClientRun(
        storage_network, "objects", files, clients=CLIENTS, batch=BATCH, limit=CLIENT_LIMIT
    )
    elapsed = run.wait()
    report(
        f"object-store ingest: {len(files)} objects in {elapsed:.1f} s through HAProxy, "
        f"{run.associations} associations, {run.failed_runs} storescu runs retried"
    )
    assert run.acknowledged == stems(files)
    assert run.failed_runs == 0

    work = {host: worker_requests(cluster, host) for host in WORKERS}
    stores = {host: dimse_requests(cluster, host, command="CStore") for host in ACCEPTORS}
    report(f"requests per worker host: {work}; C-STORE requests per acceptor host: {stores}")
    assert all(count > 0 for count in work.values()), work
    assert sum(stores.values()) == len(files)

    expected = stems(files)
    assert_in_bucket_and_index_once(storage, expected)
    assert_nothing_on_worker_disks(cluster)

    # C-GET back through the load balancer: the workers read the bucket.
    for patient in (1, BIG_PATIENT):
        back = get_patient(cluster, patient, tmp_path / f"get{patient}")
        wanted = stems(patient_files(files, patient))
        assert set(back) == wanted
        assert all(back[uid] == sent[uid] for uid in wanted)

    # C-MOVE to the storescp on the client host: a worker host connects to it.
    moves_before = sum(dimse_requests(cluster, host, command="CMove") for host in ACCEPTORS)
    move_patient(cluster, 2)
    wanted = stems(patient_files(files, 2))
    wait_until(
        lambda: wanted <= cluster.destination_uids(), "patient 2's objects at the move destination"
    )
    moved = retrieved(cluster.destination_dir)
    assert all(moved[uid] == sent[uid] for uid in wanted)
    assert sum(dimse_requests(cluster, host, command="CMove") for host in ACCEPTORS) == (
        moves_before + 1
    )

    # Retrieval added nothing: still one object per instance, nothing on the worker disks.
    assert_in_bucket_and_index_once(storage, expected)
    assert_nothing_on_worker_disks(cluster)
    cluster.alive()
