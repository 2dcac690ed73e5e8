# Our AE as SCU against DCMTK's SCPs: storescp (C-STORE) and dcmqrscp (C-FIND, C-GET, C-MOVE).
#
# Rules: DCMTK servers run on free ports with TCP_NODELAY=1 and are always killed at teardown;
# dcmqrscp forks per association (its --single-process mode crashes in 3.6.7 after a released
# association); the data is synthetic; no sleeps.
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from node import build_role, evt
from node.presets import QueryRetrievePresentationContexts
from tests.synthetic import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    PATIENCE,
    VERIFICATION,
    free_port,
    run_tool,
    running,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.interop.conftest import Archive

pytestmark = pytest.mark.interop

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget
STORAGE = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)
QR_TITLE = "QRSCP"


def _scu(make_ae, title: str = "OURSCU"):
    ae = make_ae(title)
    ae.add_requested_context(VERIFICATION)
    for uid in STORAGE:
        ae.add_requested_context(uid)
    for context in QueryRetrievePresentationContexts[:6]:
        ae.add_requested_context(context.abstract_syntax)
    return ae


def test_store_to_storescp(make_ae, archive: Archive, storescp):
    port, folder = storescp("STORESCP")
    association = _scu(make_ae).associate("127.0.0.1", port, ae_title="STORESCP")
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    half = len(archive.datasets) // 2
    for dataset in archive.datasets[:half]:
        assert association.send_c_store(dataset).Status == 0x0000
    for path in archive.paths[half:]:
        assert association.send_c_store(path).Status == 0x0000
    association.release()
    assert association.is_released
    stored = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, folder.iterdir())}
    assert sorted(stored) == sorted(str(ds.SOPInstanceUID) for ds in archive.datasets)
    for original in archive.datasets:
        copy = stored[str(original.SOPInstanceUID)]
        assert copy.PixelData == original.PixelData
        assert copy.PatientName == original.PatientName


class QRServer:
    """A dcmqrscp with one storage area, loaded with the archive through storescu."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder


@pytest.fixture
def dcmqrscp(tmp_path: Path, archive: Archive, storescp) -> Iterator[dict[str, Any]]:
    destination_port, destination_folder = storescp("STORESCP")
    our_port = free_port()
    port = free_port()
    storage = tmp_path / "qrdb"
    storage.mkdir()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"""NetworkTCPPort  = {port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
storescp = (STORESCP, 127.0.0.1, {destination_port})
ourscp = (OURSCP, 127.0.0.1, {our_port})
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{QR_TITLE}   {storage}   RW   (100, 64mb)   ANY
AETable END
"""
    )
    with running(["dcmqrscp", "-c", config, port], port):
        loaded = run_tool(["storescu", "-aec", QR_TITLE, "127.0.0.1", port, *archive.paths])
        assert loaded.returncode == 0, loaded.output
        yield {
            "port": port,
            "destination_folder": destination_folder,
            "our_port": our_port,
        }


def _study_query(study: str = "") -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    query.PatientID = ""
    query.StudyDescription = ""
    return query


def test_find_on_dcmqrscp(make_ae, archive: Archive, dcmqrscp):
    association = _scu(make_ae).associate("127.0.0.1", dcmqrscp["port"], ae_title=QR_TITLE)
    assert association.is_established
    responses = list(association.send_c_find(_study_query(), query_model="S"))
    patient = Dataset()
    patient.QueryRetrieveLevel = "PATIENT"
    patient.PatientID = "PID002"
    patient.PatientName = ""
    patients = list(association.send_c_find(patient, query_model="P"))
    association.release()
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses[-1] == 0x0000
    assert set(statuses[:-1]) == {0xFF00}
    found = {str(identifier.StudyInstanceUID) for _, identifier in responses[:-1]}
    assert found == {str(ds.StudyInstanceUID) for ds in archive.datasets}
    assert [str(identifier.PatientName) for _, identifier in patients[:-1]] == ["TEST^PATIENT2"]
    assert int(patients[-1][0].Status) == 0x0000


@pytest.mark.parametrize("style", ["callback", "event"])
def test_get_from_dcmqrscp_with_role_selection(make_ae, archive: Archive, dcmqrscp, style):
    study = str(archive.datasets[0].StudyInstanceUID)
    expected = sorted(
        str(ds.SOPInstanceUID) for ds in archive.datasets if ds.StudyInstanceUID == study
    )
    received: list[Dataset] = []

    def on_c_store(ds, context, info):
        received.append(ds)
        return 0x0000

    def handle_store(event):
        received.append(event.dataset)
        return 0x0000

    scu = _scu(make_ae)
    handlers: list[Any] = []
    if style == "callback":
        scu.on_c_store = on_c_store
    else:
        handlers = [(evt.EVT_C_STORE, handle_store)]
    roles = [build_role(uid, scp_role=True) for uid in STORAGE]
    association = scu.associate(
        "127.0.0.1", dcmqrscp["port"], ae_title=QR_TITLE, ext_neg=roles, evt_handlers=handlers
    )
    assert association.is_established
    responses = [
        status for status, _ in association.send_c_get(_study_query(study), query_model="S")
    ]
    association.release()
    final = responses[-1]
    assert int(final.Status) == 0x0000
    assert final.NumberOfCompletedSuboperations == len(expected)
    assert final.NumberOfFailedSuboperations == 0
    assert sorted(str(ds.SOPInstanceUID) for ds in received) == expected
    originals = {str(ds.SOPInstanceUID): ds for ds in archive.datasets}
    for ds in received:
        assert ds.PixelData == originals[str(ds.SOPInstanceUID)].PixelData


def test_move_from_dcmqrscp_to_storescp(make_ae, archive: Archive, dcmqrscp):
    patient = "PID001"
    expected = sorted(str(ds.SOPInstanceUID) for ds in archive.datasets if ds.PatientID == patient)
    association = _scu(make_ae).associate("127.0.0.1", dcmqrscp["port"], ae_title=QR_TITLE)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = patient
    responses = [
        status for status, _ in association.send_c_move(query, "STORESCP", query_model="P")
    ]
    association.release()
    final = responses[-1]
    assert int(final.Status) == 0x0000
    assert final.NumberOfCompletedSuboperations == len(expected)
    folder = dcmqrscp["destination_folder"]
    assert sorted(str(dcmread(path).SOPInstanceUID) for path in folder.iterdir()) == expected


def test_move_from_dcmqrscp_to_our_own_scp(make_ae, archive: Archive, dcmqrscp):
    study = str(archive.datasets[-1].StudyInstanceUID)
    expected = sorted(
        str(ds.SOPInstanceUID) for ds in archive.datasets if ds.StudyInstanceUID == study
    )
    received: list[str] = []
    all_arrived = threading.Event()

    def on_c_store(ds, context, info):
        received.append(str(ds.SOPInstanceUID))
        if len(received) == len(expected):
            all_arrived.set()
        return 0x0000

    ours = make_ae("OURSCP", port=dcmqrscp["our_port"])
    for uid in STORAGE:
        ours.add_supported_context(uid)
    ours.on_c_store = on_c_store
    ours.start(block=False)
    association = _scu(make_ae).associate("127.0.0.1", dcmqrscp["port"], ae_title=QR_TITLE)
    responses = [
        status
        for status, _ in association.send_c_move(_study_query(study), "OURSCP", query_model="S")
    ]
    association.release()
    assert int(responses[-1].Status) == 0x0000
    assert all_arrived.wait(WAIT)
    assert sorted(received) == expected
