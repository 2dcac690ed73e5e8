# Storage Commitment results go back on the SAME association while it is open (PS3.4 J.3.3),
# in-process and through the cluster (wire kind event_report), after the N-ACTION-RSP; with no
# known AE configured for the requester, the report can only have come that way.
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node import evt
from tests.synthetic import CT_IMAGE_STORAGE, PATIENCE, free_port, make_dataset, wait_for_port
from tests.workers.network import archive, modality
from tests.workers.test_commitment import TRANSACTION, action
from workers.handlers.commitment import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH
from workers.store.index import IndexedFileStore

ROOT = Path(__file__).resolve().parents[2]


def _commit_two_objects(make_ae, port: int, called: str) -> tuple[int, Any, int]:
    reports: queue.Queue[tuple[int, Any, int]] = queue.Queue()

    def on_event_report(event: Any) -> int:
        reports.put(
            (event.request.event_type_id, event.event_information, event.assoc.requestor.port)
        )
        return 0x0000

    scu = modality(make_ae)  # not listening: no other way for the report to come back
    scu.bind(evt.EVT_N_EVENT_REPORT, on_event_report)
    association = scu.associate("127.0.0.1", port, ae_title=called)
    assert association.is_established
    datasets = [make_dataset(3, 1, 1, 1), make_dataset(3, 1, 1, 2)]
    for ds in datasets:
        assert association.send_c_store(ds).Status == 0x0000
    status, _ = association.send_n_action(
        action(*((CT_IMAGE_STORAGE, ds.SOPInstanceUID) for ds in datasets)),
        1,
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_INSTANCE,
    )
    assert status.Status == 0x0000
    report = reports.get(timeout=PATIENCE)  # while the association is still open
    association.release()
    return report


def test_report_on_the_same_association_in_process(make_ae, tmp_path):
    store = IndexedFileStore(tmp_path / "data", fsync=False)
    try:
        scp = archive(make_ae, store)  # no known AEs at all
        event_type, info, peer_port = _commit_two_objects(make_ae, scp.port, "ARCHIVE")
    finally:
        store.index.close()
    assert event_type == 1
    assert info.TransactionUID == TRANSACTION
    assert peer_port == scp.port  # it came from the SCP's listening side: our association


@pytest.mark.cluster
def test_report_on_the_same_association_through_the_cluster(make_ae, tmp_path):
    port = free_port()
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(ROOT)
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [
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
                "--workers",
                "1",
                "--no-fsync",
                "--runtime-dir",
                str(tmp_path / "rt"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        wait_for_port(serve, port)
        event_type, info, peer_port = _commit_two_objects(make_ae, port, "ARCHIVE")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(PATIENCE)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    assert event_type == 1
    assert info.TransactionUID == TRANSACTION
    assert peer_port == port
