# The cluster with real processes: `dicomnode serve --workers N` (broker, workers, acceptors)
# driven by the DCMTK tools and our SCU. Issue 5's proof.
#
# Rules: every server is a subprocess whose output goes to a log file in tmp_path and which is
# stopped in teardown; waits are bounded polls on observable state (files, ports, echo), never
# fixed sleeps.
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from node import AE
from node.ul.items import AsynchronousOperationsWindowSubItem, SOPClassExtendedNegotiationSubItem
from tests.synthetic import (
    CT_IMAGE_STORAGE,
    PATIENCE,
    PATIENT_ROOT_FIND,
    VERIFICATION,
    free_port,
    make_datasets,
    run_tool,
    running,
    tool_env,
    wait_until,
    write_datasets,
)
from tests.workers.large_object import dataset_digest, write_large_object

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.cluster, pytest.mark.interop]

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    runtime_dir: Path
    served_dir: Path
    log: Path

    def pids(self, module: str) -> list[int]:
        """PIDs of this cluster's role processes running `python -m module`."""
        found = []
        marker = str(self.runtime_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parts = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if module.encode() in parts and any(marker in part for part in parts):
                found.append(int(entry.name))
        return sorted(found)

    def echo_ok(self) -> bool:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "node.cli",
                "echo",
                "127.0.0.1",
                str(self.port),
                "--acse-timeout",
                "5",
                "--dimse-timeout",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=False,
        )
        return result.returncode == 0

    def served(self) -> list[dict[str, Any]]:
        lines = []
        for path in self.served_dir.glob("served-*.jsonl"):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line]
        return lines

    def stored_files(self) -> dict[str, Path]:
        return {p.stem: p for p in (self.data_dir / "objects").rglob("*.dcm")}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(
        workers: int = 2, acceptors: int = 1, *extra: str, env: dict[str, str] | None = None
    ) -> Serve:
        port = free_port()
        index = len(started)
        data_dir = tmp_path / f"data{index}"
        runtime_dir = tmp_path / f"rt{index}"
        served_dir = tmp_path / f"served{index}"
        served_dir.mkdir()
        log = tmp_path / f"serve{index}.log"
        environment = dict(os.environ)
        environment["DICOMNODE_TEST_DIR"] = str(served_dir)
        environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        environment.update(env or {})
        command = [
            sys.executable,
            "-m",
            "node.cli",
            "serve",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--data-dir",
            str(data_dir),
            "--workers",
            str(workers),
            "--acceptors",
            str(acceptors),
            "--runtime-dir",
            str(runtime_dir),
            *extra,
        ]
        with log.open("wb") as handle:
            process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, env=environment
            )
        cluster = Serve(process, port, data_dir, runtime_dir, served_dir, log)
        started.append(cluster)
        wait_until(cluster.echo_ok, "the cluster to answer C-ECHO")
        wait_until(lambda: len(cluster.pids("workers")) >= workers, "worker processes")
        return cluster

    yield start
    for cluster in started:
        if cluster.process.poll() is None:
            cluster.process.send_signal(signal.SIGTERM)
            try:
                assert cluster.process.wait(PATIENCE) == 0
            finally:
                if cluster.process.poll() is None:
                    cluster.process.kill()
                    cluster.process.wait()


def storescu_stored(output: str) -> set[str]:
    """Files DCMTK storescu -v reports as stored (a Success response to that file)."""
    stored: set[str] = set()
    current = None
    for line in output.splitlines():
        sending = re.search(r"Sending file: (\S+)", line)
        if sending:
            current = sending.group(1)
        elif "Received Store Response (Success" in line and current:
            stored.add(Path(current).stem)
    return stored


def test_storescu_500_files_all_durable_on_disk(serve: Callable[..., Serve], tmp_path: Path):
    cluster = serve(workers=2)
    datasets = make_datasets(patients=5, studies=2, series=5, instances=10)
    assert len(datasets) == 500
    folder = tmp_path / "in"
    paths = write_datasets(datasets, folder)
    result = run_tool(
        ["storescu", "-v", "127.0.0.1", cluster.port, "+sd", folder], timeout=PATIENCE
    )
    assert result.returncode == 0, result.output[-2000:]
    stored = storescu_stored(result.output)
    assert len(stored) == 500
    on_disk = cluster.stored_files()
    assert stored <= on_disk.keys()
    for path in paths[::50]:  # the data set bytes are kept exactly as sent
        original = path.read_bytes()
        copy = on_disk[path.stem].read_bytes()
        assert copy[-len(datasets[0].PixelData) :] == original[-len(datasets[0].PixelData) :]


def test_large_data_sets_reach_the_workers_as_handoff_files(
    serve: Callable[..., Serve], tmp_path: Path
):
    # issue 15: serve's workers share the acceptor's data directory, so a data set of 64 KiB
    # and more is written once, by the acceptor, into DATA_DIR/spool, and the worker fsyncs
    # and renames it into place: the bytes never cross the broker; small ones go by socket.
    metrics_port = free_port()
    cluster = serve(2, 1, "--metrics-port", str(metrics_port))
    large = make_datasets(patients=2, studies=1, series=2, instances=10, size=200)  # 80 KB
    small = make_datasets(patients=2, studies=1, series=1, instances=5)
    small = [ds for ds in small if ds.SOPInstanceUID not in {d.SOPInstanceUID for d in large}]
    folder = tmp_path / "in"
    paths = write_datasets(large, folder / "large") + write_datasets(small, folder / "small")
    result = run_tool(
        ["storescu", "-v", "127.0.0.1", cluster.port, "+sd", "+r", folder], timeout=PATIENCE
    )
    assert result.returncode == 0, result.output[-2000:]
    stored = storescu_stored(result.output)
    assert len(stored) == len(paths) == 40 + len(small)
    on_disk = cluster.stored_files()
    assert stored <= on_disk.keys()
    for path in paths:  # everything after the file meta is byte for byte what was sent
        original = dcmread(path)
        copy = dcmread(on_disk[path.stem])
        assert copy.PixelData == original.PixelData
        assert copy.SOPInstanceUID == original.SOPInstanceUID
    spool = cluster.data_dir / "spool"
    assert not list(spool.glob("*.spool"))  # every hand-off adopted, none left behind
    assert _handoffs_counted(metrics_port) == 40  # the large ones, and only those


def _handoffs_counted(metrics_port: int) -> float:
    """The acceptor's dicomnode_handoff_spools_total."""
    return _metric(metrics_port, "dicomnode_handoff_spools_total")


def _metric(metrics_port: int, name: str) -> float:
    """One unlabelled metric of the acceptor's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, text[-2000:]
    return float(found.group(1))


def test_a_streamed_object_is_written_into_a_handoff_spool_as_it_arrives(
    serve: Callable[..., Serve], tmp_path: Path
):
    # above the stream threshold (4 MiB) the acceptor never holds the data set whole: it
    # appends each chunk to the spool and the request leaves with the last one
    metrics_port = free_port()
    cluster = serve(1, 1, "--metrics-port", str(metrics_port))
    path, digest, length = write_large_object(tmp_path / "in", 12 << 20)
    result = run_tool(["storescu", "-v", "127.0.0.1", cluster.port, path], timeout=PATIENCE)
    assert result.returncode == 0, result.output[-2000:]
    assert "Received Store Response (Success" in result.output
    (stored,) = cluster.stored_files().values()
    with stored.open("rb") as handle:
        assert dataset_digest(iter(lambda: handle.read(1 << 20), b"")) == (digest, length)
    assert _handoffs_counted(metrics_port) == 1
    assert not list((cluster.data_dir / "spool").glob("*.spool"))


@pytest.mark.parametrize("size", [64, 200], ids=["by-socket", "handed-off"])
def test_worker_killed_mid_run_loses_nothing_acknowledged(
    serve: Callable[..., Serve], tmp_path: Path, size: int
):
    cluster = serve(workers=2)
    folder = tmp_path / "in"
    write_datasets(make_datasets(patients=5, studies=2, series=5, instances=10, size=size), folder)
    log = tmp_path / "storescu.log"
    with log.open("w") as handle:
        storescu = subprocess.Popen(
            ["storescu", "-v", "127.0.0.1", str(cluster.port), "+sd", str(folder)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=tool_env(),
        )
    try:
        wait_until(lambda: len(cluster.stored_files()) >= 50, "the first 50 objects")
        victim = cluster.pids("workers")[0]
        os.kill(victim, signal.SIGKILL)
        assert storescu.wait(PATIENCE) is not None  # storescu finishes: no hang
    finally:
        if storescu.poll() is None:
            storescu.kill()
    output = log.read_text()
    stored = storescu_stored(output)
    on_disk = cluster.stored_files()
    assert stored <= on_disk.keys()  # zero files acknowledged but missing
    assert len(stored) >= 50
    failures = 500 - len(stored)
    assert failures == 0 or "Store Response (" in output  # failures arrive as statuses
    # every request was answered: its hand-off spool adopted or removed, by worker or acceptor
    assert not list((cluster.data_dir / "spool").glob("*.spool"))
    wait_until(
        lambda: victim not in cluster.pids("workers") and len(cluster.pids("workers")) == 2,
        "the supervisor to replace the killed worker",
    )


def _stores_every_file(cluster: Serve, folder: Path, patients: int) -> None:
    """storescu sends 10 objects per patient: each acknowledged and on disk."""
    paths = write_datasets(
        make_datasets(patients=patients, studies=1, series=1, instances=10), folder
    )
    result = run_tool(
        ["storescu", "-v", "127.0.0.1", cluster.port, "+sd", folder], timeout=PATIENCE
    )
    assert result.returncode == 0, result.output[-2000:]
    assert storescu_stored(result.output) == {path.stem for path in paths}
    assert {path.stem for path in paths} <= cluster.stored_files().keys()


def test_an_acceptor_killed_is_restarted_and_the_workers_find_it_again(
    serve: Callable[..., Serve], tmp_path: Path
):
    # The acceptor holds the routing (broker.embedded): when it dies the supervisor starts a
    # new one on the same endpoint, which answers the workers it does not know with
    # `disconnect`; they connect again and announce themselves: stores go through.
    cluster = serve(workers=2)
    workers = cluster.pids("workers")
    (victim,) = cluster.pids("node.acceptor")
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: cluster.pids("node.acceptor") not in ([], [victim]), "a new acceptor process"
    )
    wait_until(cluster.echo_ok, "C-ECHO from the new acceptor")
    _stores_every_file(cluster, tmp_path / "in", patients=1)
    assert cluster.pids("workers") == workers  # the workers were not restarted


@pytest.mark.parametrize("acceptors", [1, 2])
def test_the_acceptors_route_to_the_workers_themselves(
    serve: Callable[..., Serve], tmp_path: Path, acceptors: int
):
    # issue 15, direction 1: no broker process in the data path; every acceptor runs the
    # broker's routing on its own endpoint (and exports its gauges), and every worker
    # process connects to all of them
    metrics_port = free_port()
    cluster = serve(2, acceptors, "--metrics-port", str(metrics_port))
    assert cluster.pids("broker") == []
    assert len(cluster.pids("workers")) == 2
    assert len(cluster.pids("node.acceptor")) == acceptors
    _stores_every_file(cluster, tmp_path / "in", patients=2)

    def live_workers(number: int) -> Callable[[], bool]:  # acceptor i: metrics at base + i
        return lambda: _metric(metrics_port + number, "dicomnode_broker_live_workers") == 2

    for number in range(acceptors):
        wait_until(live_workers(number), f"acceptor {number}'s routing to count both workers")


@pytest.fixture
def qr_archive(tmp_path: Path) -> tuple[Path, list[Dataset]]:
    datasets = make_datasets(patients=2, studies=1, series=1, instances=3)
    folder = tmp_path / "archive"
    write_datasets(datasets, folder)
    return folder, datasets


def test_find_get_move_cancel_and_n_action_across_processes(
    serve: Callable[..., Serve], tmp_path: Path, qr_archive: tuple[Path, list[Dataset]]
):
    folder, _datasets = qr_archive
    destination_port = free_port()
    destination_dir = tmp_path / "moved"
    destination_dir.mkdir()
    cluster = serve(
        2,
        1,
        "--handlers",
        "tests.cluster.handlers",
        "--known-ae",
        f"STORESCP=127.0.0.1:{destination_port}",
        env={"DICOMNODE_TEST_ARCHIVE": str(folder)},
    )
    find = run_tool(
        [
            "findscu",
            "-v",
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=PID001",
            "127.0.0.1",
            cluster.port,
        ]
    )
    assert find.returncode == 0, find.output
    assert find.output.count("Find Response") == 4  # 3 pending + final
    cancelled = run_tool(
        [
            "findscu",
            "-v",
            "-P",
            "--cancel",
            "1",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=*",
            "127.0.0.1",
            cluster.port,
        ]
    )
    assert cancelled.returncode == 0, cancelled.output
    assert "Cancel" in cancelled.output
    out = tmp_path / "got"
    out.mkdir()
    get = run_tool(
        [
            "getscu",
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=PID002",
            "-od",
            out,
            "127.0.0.1",
            cluster.port,
        ]
    )
    assert get.returncode == 0, get.output
    assert len(list(out.iterdir())) == 3
    with running(
        ["storescp", "-aet", "STORESCP", "-od", destination_dir, destination_port], destination_port
    ):
        move = run_tool(
            [
                "movescu",
                "-P",
                "-aem",
                "STORESCP",
                "-k",
                "QueryRetrieveLevel=PATIENT",
                "-k",
                "PatientID=PID001",
                "127.0.0.1",
                cluster.port,
            ]
        )
        assert move.returncode == 0, move.output
        wait_until(lambda: len(list(destination_dir.iterdir())) == 3, "moved files")
    ae = AE(ae_title=b"ACTIONSCU")
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
    try:
        association = ae.associate("127.0.0.1", cluster.port)
        assert association.is_established
        request = Dataset()
        request.TransactionUID = "1.2.826.0.1.3680043.8.498.77.99"
        status, reply = association.send_n_action(
            request, 1, STORAGE_COMMITMENT_PUSH, "1.2.840.10008.1.20.1.1"
        )
        assert status.Status == 0
        assert reply is not None
        assert reply.TransactionUID == request.TransactionUID
        association.release()
    finally:
        ae.stop()
    kinds = {entry["kind"] for entry in cluster.served()}
    assert {"find", "get", "move", "action"} <= kinds
    assert {entry["pid"] for entry in cluster.served()} <= set(cluster.pids("workers"))


def test_builtin_archive_lists_a_study_s_images_with_a_universal_series_uid(
    serve: Callable[..., Serve], tmp_path: Path
):
    """Issue 14 item 1 through `dicomnode serve`: the built-in archive's C-FIND at IMAGE
    level with Series Instance UID empty answers every image of the study."""
    files = write_datasets(make_datasets(patients=1, studies=1, series=2, instances=2), tmp_path)
    cluster = serve(1, 1)
    stored = run_tool(["storescu", "127.0.0.1", cluster.port, *files])
    assert stored.returncode == 0, stored.output
    out = tmp_path / "found"
    out.mkdir()
    study = files[0].stem.rsplit(".", 2)[0]
    find = run_tool(
        [
            "findscu", "-S", "-X", "-od", out, "-aec", "DICOMNODE",
            "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
            "-k", "SeriesInstanceUID=", "-k", "SOPInstanceUID=",
            "127.0.0.1", cluster.port,
        ]
    )  # fmt: skip
    assert find.returncode == 0, find.output
    responses = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    assert {(r.SeriesInstanceUID, r.SOPInstanceUID) for r in responses} == {
        (f"{study}.{series}", f"{study}.{series}.{n}") for series in (1, 2) for n in (1, 2)
    }
    # relational queries (PS3.4 C.4.1.2.2): agreed by the acceptor, carried to the worker
    ae = AE(ae_title=b"RELATIONAL")
    ae.add_requested_context(STUDY_ROOT_FIND)
    relational = SOPClassExtendedNegotiationSubItem(STUDY_ROOT_FIND, b"\x01")
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.PatientID = "PID001"
    ds.InstanceNumber = "2"
    ds.SOPInstanceUID = ""
    try:
        association = ae.associate("127.0.0.1", cluster.port, ext_neg=[relational])
        assert association.is_established
        assert association.acceptance.sop_class_extended == (relational,)
        results = list(association.send_c_find(ds, query_model="S"))
        association.release()
    finally:
        ae.stop()
    *pending, (final, _) = results
    assert final.Status == 0x0000
    assert {i.SOPInstanceUID for _, i in pending if i} == {f"{study}.1.2", f"{study}.2.2"}


def test_two_acceptors_two_workers_eight_associations(serve: Callable[..., Serve], tmp_path: Path):
    cluster = serve(2, 2, "--handlers", "tests.cluster.handlers")
    assert cluster.pids("broker") == []  # each acceptor routes to both workers itself
    folders = []
    for number in range(8):
        folder = tmp_path / f"client{number}"
        # the same 10 objects per client: the test handler counts, it does not store
        write_datasets(make_datasets(patients=1, studies=1, series=1, instances=10), folder)
        folders.append(folder)
    clients = [
        subprocess.Popen(
            ["storescu", "127.0.0.1", str(cluster.port), "+sd", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=tool_env(),
        )
        for folder in folders
    ]
    try:
        codes = [client.wait(PATIENCE) for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
    assert codes == [0] * 8
    stores = [entry for entry in cluster.served() if entry["kind"] == "store"]
    assert len(stores) == 80
    per_worker: dict[int, int] = {}
    for entry in stores:
        per_worker[entry["pid"]] = per_worker.get(entry["pid"], 0) + 1
    assert len(per_worker) == 2, per_worker  # both workers did work
    assert min(per_worker.values()) >= 10, per_worker


def test_async_window_spreads_one_association_over_workers(serve: Callable[..., Serve]):
    cluster = serve(
        2, 1, "--handlers", "tests.cluster.handlers", env={"DICOMNODE_TEST_ECHO_DELAY": "0.5"}
    )
    readiness_echoes = len([e for e in cluster.served() if e["kind"] == "echo"])
    ae = AE(ae_title=b"ASYNCSCU")
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT_IMAGE_STORAGE)
    ae.add_requested_context(PATIENT_ROOT_FIND)

    async def main() -> list[int]:
        association = await ae.associate_async(
            "127.0.0.1", cluster.port, ext_neg=[AsynchronousOperationsWindowSubItem(4, 4)]
        )
        assert association.is_established
        assert association.acceptance.operations_invoked == 4
        statuses = await asyncio.gather(*(association.send_c_echo() for _ in range(4)))
        await association.release()
        return [int(status.Status) for status in statuses]

    try:
        assert asyncio.run(main()) == [0, 0, 0, 0]
    finally:
        ae.stop()
    echoes = sorted(
        (entry for entry in cluster.served() if entry["kind"] == "echo"),
        key=lambda entry: entry["start"],
    )[readiness_echoes:]
    assert len(echoes) == 4
    assert len({entry["pid"] for entry in echoes}) == 2  # served by both workers
    overlapping = any(
        a["pid"] != b["pid"] and a["start"] < b["end"] and b["start"] < a["end"]
        for a in echoes
        for b in echoes
    )
    assert overlapping  # at the same time, not one after the other
