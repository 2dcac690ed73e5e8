# DCMTK's SCU tools (echoscu, storescu, findscu, getscu, movescu) against our AE as SCP.
#
# Rules: our SCP runs in this process (block=False, port 0); DCMTK tools run with a timeout and
# TCP_NODELAY=1; the data is synthetic, made in tmp dirs; no sleeps.
from __future__ import annotations

import shutil
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
)

from node.presets import QueryRetrievePresentationContexts
from tests.synthetic import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, PATIENCE, VERIFICATION, run_tool

if TYPE_CHECKING:
    from pathlib import Path

    from tests.interop.conftest import Archive

pytestmark = pytest.mark.interop

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget
STORAGE = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)


def _scp(make_ae, title: str = "OURSCP", syntaxes: Any = None, **attributes: Any):
    ae = make_ae(title, **attributes)
    ae.add_supported_context(VERIFICATION)
    for uid in STORAGE:
        if syntaxes is None:
            ae.add_supported_context(uid, scu_role=True, scp_role=True)
        else:
            ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
    for context in QueryRetrievePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    return ae


class Received:
    """Collects what on_c_store was given; `done` is set once `expected` objects arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.items: list[tuple[Dataset, str]] = []
        self.done = threading.Event()
        self.lock = threading.Lock()

    def on_c_store(self, ds, context, info):
        with self.lock:
            self.items.append((ds, str(context.transfer_syntax)))
            if len(self.items) >= self.expected:
                self.done.set()
        return 0x0000


def _pixels(ds: Dataset, transfer_syntax: str) -> Any:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    return ds.pixel_array


def test_echoscu(make_ae):
    scp = _scp(make_ae)
    scp.start(block=False)
    result = run_tool(["echoscu", "-v", "-aec", "OURSCP", "127.0.0.1", scp.port])
    assert result.returncode == 0, result.output
    assert "Received Echo Response (Success)" in result.output


@pytest.mark.parametrize(
    ("option", "supported", "expected"),
    [
        pytest.param("-xi", None, ImplicitVRLittleEndian, id="implicit"),
        pytest.param("-xe", [ExplicitVRLittleEndian], ExplicitVRLittleEndian, id="explicit"),
        pytest.param("-xb", [ExplicitVRBigEndian], ExplicitVRBigEndian, id="big-endian"),
        pytest.param(
            "-xd", [DeflatedExplicitVRLittleEndian], DeflatedExplicitVRLittleEndian, id="deflated"
        ),
    ],
)
def test_storescu_folder_in_each_transfer_syntax(
    make_ae, archive: Archive, option, supported, expected
):
    received = Received(len(archive.datasets))
    scp = _scp(make_ae, syntaxes=supported)
    scp.on_c_store = received.on_c_store
    scp.start(block=False)
    folder = archive.paths[0].parent
    result = run_tool(["storescu", option, "-aec", "OURSCP", "+sd", "127.0.0.1", scp.port, folder])
    assert result.returncode == 0, result.output
    assert received.done.wait(WAIT)
    by_uid = {str(ds.SOPInstanceUID): (ds, syntax) for ds, syntax in received.items}
    assert sorted(by_uid) == sorted(str(ds.SOPInstanceUID) for ds in archive.datasets)
    for original in archive.datasets:
        ds, syntax = by_uid[str(original.SOPInstanceUID)]
        assert syntax == expected
        assert ds.PatientName == original.PatientName
        assert ds.StudyInstanceUID == original.StudyInstanceUID
        assert np.array_equal(_pixels(ds, syntax), original.pixel_array)


@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="dcmcjpeg not installed")
def test_storescu_jpeg_lossless_file(make_ae, archive: Archive, tmp_path: Path):
    compressed = tmp_path / "jpeg.dcm"
    converted = run_tool(["dcmcjpeg", "+e1", archive.paths[0], compressed])
    assert converted.returncode == 0, converted.output
    assert dcmread(compressed).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    received = Received(1)
    scp = _scp(make_ae, syntaxes=[JPEGLosslessSV1, ExplicitVRLittleEndian])
    scp.on_c_store = received.on_c_store
    scp.start(block=False)
    result = run_tool(["storescu", "-xs", "-aec", "OURSCP", "127.0.0.1", scp.port, compressed])
    assert result.returncode == 0, result.output
    assert received.done.wait(WAIT)
    ((ds, syntax),) = received.items
    assert syntax == JPEGLosslessSV1
    assert ds.SOPInstanceUID == archive.datasets[0].SOPInstanceUID
    assert ds["PixelData"].is_undefined_length
    assert ds.PixelData.startswith(b"\xfe\xff\x00\xe0")  # an encapsulated Item (PS3.5 A.4)


def _find_rows(folder: Path) -> list[Dataset]:
    return [dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


def _find_scp(make_ae, archive: Archive, queries: list[Dataset]):
    def on_c_find(ds, context, info):
        queries.append(ds)
        for match in archive.find(ds):
            yield 0xFF00, match

    scp = _scp(make_ae)
    scp.on_c_find = on_c_find
    scp.start(block=False)
    return scp


def test_findscu_study_root(make_ae, archive: Archive, tmp_path: Path):
    queries: list[Dataset] = []
    scp = _find_scp(make_ae, archive, queries)
    out = tmp_path / "find"
    out.mkdir()
    result = run_tool(
        [
            "findscu",
            "-v",
            "-S",
            "-aec",
            "OURSCP",
            "-X",
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=TEST^PATIENT1",
            "-k",
            "StudyInstanceUID",
            "-k",
            "StudyDescription",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    assert result.output.count("(Pending)") == 2
    assert "Received Final Find Response (Success)" in result.output
    rows = _find_rows(out)
    assert sorted(str(row.StudyInstanceUID) for row in rows) == sorted(
        {str(ds.StudyInstanceUID) for ds in archive.datasets if ds.PatientID == "PID001"}
    )
    assert {str(row.StudyDescription) for row in rows} == {
        "study 1 of patient 1",
        "study 2 of patient 1",
    }
    assert str(queries[0].PatientName) == "TEST^PATIENT1"


def test_findscu_patient_root(make_ae, archive: Archive, tmp_path: Path):
    queries: list[Dataset] = []
    scp = _find_scp(make_ae, archive, queries)
    out = tmp_path / "find"
    out.mkdir()
    result = run_tool(
        [
            "findscu",
            "-P",
            "-aec",
            "OURSCP",
            "-X",
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientName=TEST*",
            "-k",
            "PatientID",
            "-k",
            "PatientBirthDate",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    rows = _find_rows(out)
    assert sorted((str(r.PatientID), str(r.PatientName)) for r in rows) == [
        ("PID001", "TEST^PATIENT1"),
        ("PID002", "TEST^PATIENT2"),
    ]
    assert {str(r.PatientBirthDate) for r in rows} == {"19700101"}
    assert str(queries[0].QueryRetrieveLevel) == "PATIENT"


def test_getscu(make_ae, archive: Archive, tmp_path: Path):
    study = str(archive.datasets[0].StudyInstanceUID)
    expected = [ds for ds in archive.datasets if ds.StudyInstanceUID == study]

    def on_c_get(ds, context, info):
        matches = archive.instances(ds)
        yield len(matches)
        for match in matches:
            yield 0xFF00, match

    scp = _scp(make_ae)
    scp.on_c_get = on_c_get
    scp.start(block=False)
    out = tmp_path / "get"
    out.mkdir()
    result = run_tool(
        [
            "getscu",
            "-v",
            "-S",
            "-aec",
            "OURSCP",
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    files = sorted(out.iterdir())
    assert len(files) == len(expected) == 4
    got = {str(ds.SOPInstanceUID): ds for ds in (dcmread(path) for path in files)}
    for original in expected:
        ds = got[str(original.SOPInstanceUID)]
        assert ds.PixelData == original.PixelData
        assert ds.PatientName == original.PatientName
        assert ds.SeriesInstanceUID == original.SeriesInstanceUID


def test_movescu_to_dcmtk_storescp(make_ae, archive: Archive, storescp):
    destination_port, folder = storescp("STORESCP")
    patient = "PID002"
    expected = [ds for ds in archive.datasets if ds.PatientID == patient]
    destinations: list[bytes] = []

    def on_c_move(ds, move_aet, context, info):
        destinations.append(move_aet)
        yield "127.0.0.1", destination_port
        matches = archive.instances(ds)
        yield len(matches)
        for match in matches:
            yield 0xFF00, match

    scp = _scp(make_ae)
    scp.on_c_move = on_c_move
    scp.start(block=False)
    result = run_tool(
        [
            "movescu",
            "-v",
            "-P",
            "-aec",
            "OURSCP",
            "-aem",
            "STORESCP",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            f"PatientID={patient}",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    assert "Received Final Move Response (Success)" in result.output
    assert destinations == [b"STORESCP"]
    stored = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, folder.iterdir())}
    assert sorted(stored) == sorted(str(ds.SOPInstanceUID) for ds in expected)
    for original in expected:
        assert stored[str(original.SOPInstanceUID)].PixelData == original.PixelData


def test_movescu_to_our_second_ae_via_known_aes(make_ae, archive: Archive):
    received = Received(len(archive.datasets))
    destination = make_ae("OURDEST")
    for uid in STORAGE:
        destination.add_supported_context(uid)
    destination.on_c_store = received.on_c_store
    destination.start(block=False)

    def on_c_move(ds, move_aet, context, info):
        yield None, None  # let the AE's known_aes table resolve the destination
        yield len(archive.datasets)
        for match in archive.datasets:
            yield 0xFF00, match

    scp = _scp(make_ae)
    scp.known_aes = {"OURDEST": ("127.0.0.1", destination.port)}
    scp.on_c_move = on_c_move
    scp.start(block=False)
    result = run_tool(
        [
            "movescu",
            "-S",
            "-aec",
            "OURSCP",
            "-aem",
            "OURDEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    assert received.done.wait(WAIT)
    assert sorted(str(ds.SOPInstanceUID) for ds, _ in received.items) == sorted(
        str(ds.SOPInstanceUID) for ds in archive.datasets
    )


def test_wrong_called_ae_title_is_rejected(make_ae):
    scp = _scp(make_ae, require_called_aet=True)
    scp.start(block=False)
    result = run_tool(["echoscu", "-aec", "WRONG", "127.0.0.1", scp.port])
    assert result.returncode != 0
    assert "Association Rejected" in result.output
    assert "Rejected Permanent" in result.output
    assert "Called AE Title Not Recognized" in result.output


def test_maximum_associations_exceeded_is_transient_local_limit(make_ae):
    scp = _scp(make_ae, maximum_associations=1)
    scp.start(block=False)
    holder = make_ae("HOLDER")
    holder.add_requested_context(VERIFICATION)
    association = holder.associate("127.0.0.1", scp.port, ae_title="OURSCP")
    assert association.is_established
    result = run_tool(["echoscu", "-aec", "OURSCP", "127.0.0.1", scp.port])
    assert result.returncode != 0
    assert "Association Rejected" in result.output
    assert "Rejected Transient" in result.output
    assert "Local Limit Exceeded" in result.output
    association.release()
    again = run_tool(["echoscu", "-aec", "OURSCP", "127.0.0.1", scp.port])
    assert again.returncode == 0, again.output


def _signal_cancel(scp) -> threading.Event:
    """An event set once our SCP has passed a C-CANCEL-RQ to its dispatcher."""
    seen = threading.Event()
    dispatcher = scp._dispatcher
    original = dispatcher.cancel

    def cancel(assoc_id: int, message_id: int) -> None:
        original(assoc_id, message_id)
        seen.set()

    dispatcher.cancel = cancel
    return seen


def test_findscu_cancel(make_ae, archive: Archive):
    scp = _scp(make_ae)
    scp.start(block=False)
    cancel_seen = _signal_cancel(scp)
    results = archive.find(_level("IMAGE"))

    def on_c_find(ds, context, info):
        for number, match in enumerate(results):
            yield 0xFF00, match
            if number == 0:
                assert cancel_seen.wait(WAIT)

    scp.on_c_find = on_c_find  # set while running: the dispatcher picks it up
    result = run_tool(
        [
            "findscu",
            "-v",
            "-S",
            "--cancel",
            "1",
            "-aec",
            "OURSCP",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            "SOPInstanceUID",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    assert "Sending Cancel Request" in result.output
    assert "Find Response: 1 (Pending)" in result.output
    assert "Received Final Find Response (Cancel" in result.output, result.output
    assert "Find Response: 3" not in result.output


def _level(level: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.SOPInstanceUID = ""
    return query


def test_movescu_cancel(make_ae, archive: Archive, storescp):
    destination_port, folder = storescp("STORESCP")
    scp = _scp(make_ae)
    scp.start(block=False)
    cancel_seen = _signal_cancel(scp)

    def on_c_move(ds, move_aet, context, info):
        yield "127.0.0.1", destination_port
        yield len(archive.datasets)
        for number, match in enumerate(archive.datasets):
            yield 0xFF00, match
            if number == 0:
                assert cancel_seen.wait(WAIT)

    scp.on_c_move = on_c_move
    result = run_tool(
        [
            "movescu",
            "-v",
            "-S",
            "--cancel",
            "1",
            "-aec",
            "OURSCP",
            "-aem",
            "STORESCP",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=",
            "127.0.0.1",
            scp.port,
        ]
    )
    assert result.returncode == 0, result.output
    assert "Received Final Move Response (Cancel" in result.output, result.output
    assert 1 <= len(list(folder.iterdir())) <= 2


def test_many_files_small_pdus_two_storescu_at_once(make_ae, tmp_path: Path):
    from tests.synthetic import make_datasets, write_datasets

    datasets = make_datasets(patients=4, studies=2, series=2, instances=4, size=64)
    half = len(datasets) // 2
    first = write_datasets(datasets[:half], tmp_path / "first")
    write_datasets(datasets[half:], tmp_path / "second")
    assert len(first) == 32
    received = Received(len(datasets))
    scp = _scp(make_ae, maximum_pdu_size=4096, maximum_associations=2)
    scp.on_c_store = received.on_c_store
    scp.start(block=False)
    import subprocess

    from tests.synthetic import tool_env

    processes = [
        subprocess.Popen(
            [
                "storescu",
                "-xi",
                "--max-pdu",
                "8192",
                "-aec",
                "OURSCP",
                "+sd",
                "127.0.0.1",
                str(scp.port),
                str(tmp_path / name),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=tool_env(),
        )
        for name in ("first", "second")
    ]
    try:
        outputs = [process.communicate(timeout=PATIENCE)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=PATIENCE)
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert received.done.wait(WAIT)
    got = {str(ds.SOPInstanceUID): ds for ds, _ in received.items}
    assert len(got) == len(datasets)
    for original in datasets:
        assert got[str(original.SOPInstanceUID)].PixelData == original.PixelData


def test_user_identity_from_storescu(make_ae, archive: Archive):
    seen: list[tuple[int, bytes, bytes]] = []

    def on_user_identity(identity_type, primary, secondary, info):
        seen.append((identity_type, primary, secondary))
        return primary == b"alice" and secondary == b"secret", b"welcome"

    received = Received(1)
    scp = _scp(make_ae)
    scp.on_user_identity = on_user_identity
    scp.on_c_store = received.on_c_store
    scp.start(block=False)
    common = ["storescu", "-aec", "OURSCP", "-usr", "alice"]
    target = ["127.0.0.1", scp.port, archive.paths[0]]
    good = run_tool([*common, "-pwd", "secret", "-rsp", *target])
    assert good.returncode == 0, good.output
    assert received.done.wait(WAIT)
    bad = run_tool([*common, "-pwd", "wrong", *target])
    assert bad.returncode != 0
    assert "Association Rejected" in bad.output
    assert seen == [(2, b"alice", b"secret"), (2, b"alice", b"wrong")]
