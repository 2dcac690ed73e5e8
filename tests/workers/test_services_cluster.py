# Storage commitment, MPPS and study-stable across real processes: `dicomnode serve --workers 2`
# with a PostgreSQL index, driven by our SCU. Two workers scan for quiet studies; each study
# must raise exactly one event.
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from node import evt
from tests.synthetic import PATIENCE, free_port, make_dataset, wait_until
from tests.workers.network import modality
from tests.workers.stable_handlers import events
from tests.workers.test_commitment import action
from tests.workers.test_mpps import step
from workers.handlers.commitment import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH
from workers.handlers.mpps import MODALITY_PERFORMED_PROCEDURE_STEP

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

pytestmark = [pytest.mark.cluster]

QUIET = 0.5


@pytest.fixture
def cluster(tmp_path, postgres):
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str, workers: int = 2, index: bool = True) -> int:
        port = free_port()
        environment = dict(os.environ)
        environment["DICOMNODE_TEST_DIR"] = str(tmp_path)
        environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        command = [
            sys.executable,
            "-m",
            "node.cli",
            "serve",
            "--ae-title",
            "ARCHIVE",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path / "data"),
            "--runtime-dir",
            str(tmp_path / "rt"),
            "--workers",
            str(workers),
            "--no-fsync",
            *(["--index", postgres.new_schema()] if index else []),
            "--study-stable-seconds",
            str(QUIET),
            "--handlers",
            "tests.workers.stable_handlers",
            *extra,
        ]
        with (tmp_path / "serve.log").open("wb") as log:
            started.append(
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
            )
        return port

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(PATIENCE)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_commitment_mpps_and_study_stable_across_worker_processes(make_ae, cluster, tmp_path):
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_event_report(event: Any) -> int:
        reports.put((event.request.event_type_id, event.event_information))
        return 0x0000

    scu = modality(make_ae, listen=True)
    scu.bind(evt.EVT_N_EVENT_REPORT, on_event_report)
    scu.start(block=False)
    port = cluster("--known-ae", f"MODALITY=127.0.0.1:{scu.port}")

    def connected() -> Any:
        association = scu.associate("127.0.0.1", port, ae_title="ARCHIVE")
        if association.is_established and association.send_c_echo().Status == 0x0000:
            return association
        return None

    association = wait_until(connected, "the cluster to answer C-ECHO")
    datasets = [make_dataset(5, study, 1, n) for study in (1, 2) for n in (1, 2)]
    for ds in datasets:
        assert association.send_c_store(ds).Status == 0x0000
    status, _ = association.send_n_action(
        action(*[(ds.SOPClassUID, ds.SOPInstanceUID) for ds in datasets]),
        1,
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_INSTANCE,
    )
    assert status.Status == 0x0000
    instance = "1.2.826.0.1.3680043.8.498.77.5.9"
    mpps = MODALITY_PERFORMED_PROCEDURE_STEP
    assert association.send_n_create(step(), mpps, instance)[0].Status == 0x0000
    assert association.send_n_set(step("COMPLETED"), mpps, instance)[0].Status == 0x0000
    refused = association.send_n_set(step("COMPLETED"), mpps, instance)[0]
    assert (refused.Status, refused.ErrorID) == (0x0110, 0xA710)
    association.release()

    event_type, info = reports.get(timeout=PATIENCE)
    assert event_type == 1
    assert len(info.ReferencedSOPSequence) == 4

    fired = wait_until(lambda: len(events(tmp_path)) >= 2 and events(tmp_path), "2 stable events")
    assert sorted(e["study"] for e in fired) == sorted({ds.StudyInstanceUID for ds in datasets})
    assert all(e["number_of_instances"] == 2 for e in fired)
    threading.Event().wait(QUIET * 3)  # both workers scanned many times since: still two
    assert len(events(tmp_path)) == 2


def test_study_stable_in_one_process_serve(make_ae, cluster, tmp_path):
    port = cluster(workers=0, index=False)

    def connected() -> Any:
        association = modality(make_ae).associate("127.0.0.1", port, ae_title="ARCHIVE")
        return association if association.is_established else None

    association = wait_until(connected, "the node to accept an association")
    ds = make_dataset(6, 1, 1, 1)
    assert association.send_c_store(ds).Status == 0x0000
    association.release()
    (fired,) = wait_until(lambda: events(tmp_path), "the stable event")
    assert (fired["study"], fired["number_of_instances"]) == (ds.StudyInstanceUID, 1)
    assert (tmp_path / "data" / "index.sqlite").is_file()
