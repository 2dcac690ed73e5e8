# The built-in archive against DCMTK: storescu in, findscu at every level, getscu and movescu
# back out byte for byte, and the same C-FIND matches as DCMTK's own archive, dcmqrscp.
#
# Rules: our AE runs in this process (workers=0, the AE's thread pool); DCMTK tools run with a
# timeout and TCP_NODELAY=1 (tests.synthetic.run_tool / running), servers are killed at teardown.
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from node import AE
from node.acceptor.main import build_server_ae
from node.dicomio import read_part10
from node.ul.items import SOPClassExtendedNegotiationSubItem
from tests.synthetic import free_port, run_tool, running, write_datasets
from tests.workers.archive import archive_datasets
from workers.store.index import IndexedFileStore

if TYPE_CHECKING:
    from pathlib import Path

    from node.acse.requestor import PeerAcceptance

pytestmark = pytest.mark.interop

ROOT = "1.2.826.0.1.3680043.8.498.77"
TITLE = "ARCHIVE"
STORESCP = "STORESCP"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


class Served:
    def __init__(self, ae: AE, files: list[Path], tmp: Path, move_port: int) -> None:
        self.ae = ae
        self.files = files
        self.tmp = tmp
        self.move_port = move_port
        self.originals = {
            read_part10(str(f)).sop_instance_uid: read_part10(str(f)).data for f in files
        }
        self.calls = 0

    def folder(self, name: str) -> Path:
        self.calls += 1
        folder = self.tmp / f"{name}{self.calls}"
        folder.mkdir()
        return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Our archive on a free port, after `storescu` sent it the 36-image archive."""
    tmp = tmp_path_factory.mktemp("qr")
    files = write_datasets(archive_datasets(), tmp / "in")
    ae = build_server_ae(TITLE, 0, "127.0.0.1", maximum_associations=8, maximum_pdu=16382)
    store = IndexedFileStore(tmp / "data", fsync=False)
    ae.file_store = store
    move_port = free_port()
    ae.known_aes = {STORESCP: ("127.0.0.1", move_port)}
    ae.start(block=False)
    try:
        result = run_tool(["storescu", "-aec", TITLE, "127.0.0.1", ae.port, *files])
        assert result.returncode == 0, result.output
        assert store.index.counts() == {"patient": 3, "study": 6, "series": 12, "instance": 36}
        yield Served(ae, files, tmp, move_port)
    finally:
        ae.stop()
        store.index.close()


def findscu(port: int, title: str, model: str, keys: dict[str, str], out: Path) -> set[str]:
    """Run findscu, extracting each response to a file; the level's unique key values."""
    level = keys["QueryRetrieveLevel"]
    unique = UNIQUE[level]
    arguments = [f"{k}={v}" if v else k for k, v in {unique: "", **keys}.items()]
    command = ["findscu", model, "-X", "-od", out, "-aec", title]
    for argument in arguments:
        command += ["-k", argument]
    result = run_tool([*command, "127.0.0.1", port])
    assert result.returncode == 0, result.output
    return {str(dcmread(path)[unique].value) for path in sorted(out.glob("rsp*.dcm"))}


def dataset_bytes(folder: Path) -> dict[str, bytes]:
    return {
        read_part10(str(p)).sop_instance_uid: read_part10(str(p)).data for p in folder.iterdir()
    }


def study(patient: int, number: int) -> str:
    return f"{ROOT}.{patient}.{number}"


# --- C-FIND at every level ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "keys", "expected"),
    [
        ("-P", {"QueryRetrieveLevel": "PATIENT", "PatientName": "DOE*"}, {"PID001", "PID002"}),
        (
            "-S",
            {"QueryRetrieveLevel": "STUDY", "StudyDate": "20200101-20201231"},
            {study(1, 1), study(1, 2), study(2, 1)},
        ),
        (
            "-S",
            {"QueryRetrieveLevel": "STUDY", "PatientName": "SMITH^A?NA", "StudyTime": "-1300"},
            {study(3, 1), study(3, 2)},
        ),
        (
            "-S",
            {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study(2, 2), "Modality": "M*"},
            {f"{study(2, 2)}.2"},
        ),
        (
            "-P",
            {
                "QueryRetrieveLevel": "IMAGE",
                "PatientID": "PID001",
                "StudyInstanceUID": study(1, 2),
                "SeriesInstanceUID": f"{study(1, 2)}.1",
                "InstanceNumber": "",
            },
            {f"{study(1, 2)}.1.{n}" for n in (1, 2, 3)},
        ),
    ],
)
def test_findscu_at_every_level(served, model, keys, expected):
    assert findscu(served.ae.port, TITLE, model, keys, served.folder("find")) == expected


def test_find_response_carries_the_requested_keys(served):
    out = served.folder("keys")
    keys = {
        "QueryRetrieveLevel": "STUDY",
        "StudyInstanceUID": study(2, 1),
        "PatientName": "",
        "StudyTime": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedSeries": "",
    }
    assert findscu(served.ae.port, TITLE, "-S", keys, out) == {study(2, 1)}
    (response,) = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert response.PatientName == "DOE^JANE"
    assert response.StudyTime == "235959"
    assert list(response.ModalitiesInStudy) == ["CT", "MR"]
    assert response.NumberOfStudyRelatedSeries == 2
    assert response.QueryRetrieveLevel == "STUDY"


def test_findscu_lists_a_study_s_images_with_a_universal_series_uid(served):
    """Issue 14 item 1: the query many viewers send to list a study's images; each response
    carries the actual Series Instance UID (as dcmqrscp and Orthanc answer)."""
    out = served.folder("images")
    result = run_tool(
        [
            "findscu", "-S", "-X", "-od", out, "-aec", TITLE,
            "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study(2, 1)}",
            "-k", "SeriesInstanceUID=", "-k", "SOPInstanceUID=",
            "127.0.0.1", served.ae.port,
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.output
    responses = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    assert {r.SOPInstanceUID for r in responses} == {
        f"{study(2, 1)}.{series}.{n}" for series in (1, 2) for n in (1, 2, 3)
    }
    for response in responses:
        assert response.SeriesInstanceUID == response.SOPInstanceUID.rsplit(".", 1)[0]
        assert response.StudyInstanceUID == study(2, 1)


def test_bad_identifier_answers_a900_to_our_scu(served):
    scu = AE(ae_title="SCU")
    scu.add_requested_context("1.2.840.10008.5.1.4.1.2.2.1")
    try:
        association = scu.associate("127.0.0.1", served.ae.port, ae_title=TITLE)
        assert association.is_established
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study(1, 1)
        ds.SOPInstanceUID = ""
        results = list(association.send_c_find(ds, query_model="S"))
        association.release()
    finally:
        scu.stop()
    ((status, identifier),) = results
    assert status.Status == 0xA900
    assert identifier is None
    assert "SeriesInstanceUID" in status.ErrorComment


def _find_with(
    port: int, ds: Dataset, ext_neg: list[object]
) -> tuple[PeerAcceptance, list[tuple[Dataset, Dataset | None]]]:
    """Our SCU's C-FIND (Study Root) on an association proposing `ext_neg`: the acceptance
    and the (status, identifier) results."""
    scu = AE(ae_title="SCU")
    scu.add_requested_context(STUDY_FIND)
    try:
        association = scu.associate("127.0.0.1", port, ae_title=TITLE, ext_neg=ext_neg)
        assert association.is_established
        results = list(association.send_c_find(ds, query_model="S"))
        association.release()
    finally:
        scu.stop()
    acceptance = association.acceptance
    assert acceptance is not None
    return acceptance, results


def test_relational_query_when_the_scu_negotiates_it(served):
    """PS3.4 C.4.1.2.2 / C.5.1: relational-queries proposed is agreed in the A-ASSOCIATE-AC,
    and an IMAGE query without Study or Series Instance UID then matches across studies."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.PatientName = "DOE^JANE"
    ds.Modality = "MR"
    ds.InstanceNumber = "2"
    ds.StudyInstanceUID = None
    ds.SOPInstanceUID = ""
    proposal = SOPClassExtendedNegotiationSubItem(STUDY_FIND, b"\x01\x01")
    acceptance, results = _find_with(served.ae.port, ds, [proposal])
    assert acceptance.sop_class_extended == (
        SOPClassExtendedNegotiationSubItem(STUDY_FIND, b"\x01\x00"),
    )
    *pending, (final, _) = results
    assert final.Status == 0x0000
    assert {status.Status for status, _ in pending} == {0xFF00}
    assert {(i.StudyInstanceUID, i.SOPInstanceUID) for _, i in pending if i} == {
        (study(2, 1), f"{study(2, 1)}.2.2"),
        (study(2, 2), f"{study(2, 2)}.2.2"),
    }
    acceptance, results = _find_with(served.ae.port, ds, [])  # hierarchical: refused
    assert acceptance.sop_class_extended == ()
    ((status, identifier),) = results
    assert status.Status == 0xA900
    assert identifier is None
    declined = SOPClassExtendedNegotiationSubItem(STUDY_FIND, b"\x00")
    acceptance, results = _find_with(served.ae.port, ds, [declined])
    assert acceptance.sop_class_extended == (declined,)
    assert results[0][0].Status == 0xA900


# --- C-GET / C-MOVE ----------------------------------------------------------------------------


def test_getscu_brings_back_identical_data_sets(served):
    out = served.folder("get")
    result = run_tool(
        [
            "getscu", "-S", "-od", out, "-aec", TITLE,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study(1, 1)}",
            "127.0.0.1", served.ae.port,
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.output
    received = dataset_bytes(out)
    assert len(received) == 6
    for sop_instance, data in received.items():
        assert data == served.originals[sop_instance]


def test_movescu_to_storescp_brings_identical_data_sets(served):
    out = served.folder("move")
    series = f"{study(2, 1)}.1\\{study(2, 1)}.2"
    with running(["storescp", "-od", out, "-aet", STORESCP, served.move_port], served.move_port):
        result = run_tool(
            [
                "movescu", "-P", "-aem", STORESCP, "-aec", TITLE,
                "-k", "QueryRetrieveLevel=SERIES", "-k", "PatientID=PID002",
                "-k", f"StudyInstanceUID={study(2, 1)}", "-k", f"SeriesInstanceUID={series}",
                "127.0.0.1", served.ae.port,
            ]
        )  # fmt: skip
    assert result.returncode == 0, result.output
    received = dataset_bytes(out)
    assert len(received) == 6
    for sop_instance, data in received.items():
        assert data == served.originals[sop_instance]


def test_movescu_to_an_unknown_destination(served):
    result = run_tool(
        [
            "movescu", "-S", "-aem", "NOWHERE", "-aec", TITLE,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study(1, 1)}",
            "127.0.0.1", served.ae.port,
        ]
    )  # fmt: skip
    assert result.returncode != 0
    assert "MoveDestinationUnknown" in result.output


# --- same matches as dcmqrscp ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcmqrscp(served):
    """DCMTK's archive serving the same files (registered with dcmqridx)."""
    storage = served.tmp / "dcmqrscp"
    storage.mkdir()
    result = run_tool(["dcmqridx", storage, *served.files])
    assert result.returncode == 0, result.output
    port = free_port()
    config = served.tmp / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nCOMMON {storage} RW (100, 64mb) ANY\nAETable END\n"
    )
    # dcmqrscp 3.6.7 crashes after the first release with --single-process: let it fork.
    with running(["dcmqrscp", "-c", config, port], port):
        yield port


COMPARED = [
    ("-P", {"QueryRetrieveLevel": "PATIENT", "PatientName": "DOE*"}),
    ("-P", {"QueryRetrieveLevel": "PATIENT", "PatientID": "PID00?"}),
    ("-P", {"QueryRetrieveLevel": "STUDY", "PatientID": "PID003", "StudyDate": "20200101-"}),
    ("-S", {"QueryRetrieveLevel": "STUDY", "StudyDate": "20200101-20201231"}),
    ("-S", {"QueryRetrieveLevel": "STUDY", "StudyDate": "-20200610", "StudyTime": "0800-1500"}),
    ("-S", {"QueryRetrieveLevel": "STUDY", "PatientName": "*A*N?"}),
    ("-S", {"QueryRetrieveLevel": "STUDY", "PatientName": "doe*"}),
    ("-S", {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "ACC2*", "PatientSex": "M"}),
    ("-S", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": f"{study(1, 2)}\\{study(3, 1)}"}),
    ("-S", {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study(3, 2), "Modality": "CT"}),
    (
        "-S",
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": study(1, 1),
            "SeriesInstanceUID": f"{study(1, 1)}.2",
            "InstanceNumber": "2",
        },
    ),
    # universal, listed and wild card unique keys above the level (issue 14 item 1)
    (
        "-S",
        {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study(2, 1), "SeriesInstanceUID": ""},
    ),
    ("-S", {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "", "Modality": "MR"}),
    ("-P", {"QueryRetrieveLevel": "SERIES", "PatientID": "", "StudyInstanceUID": study(3, 1)}),
    ("-P", {"QueryRetrieveLevel": "STUDY", "PatientID": "PID00?", "StudyDate": "-20200610"}),
    ("-S", {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": f"{study(1, 2)}\\{study(3, 1)}"}),
]


@pytest.mark.parametrize(("model", "keys"), COMPARED)
def test_same_matches_as_dcmqrscp(served, dcmqrscp, model, keys):
    ours = findscu(served.ae.port, TITLE, model, keys, served.folder("ours"))
    theirs = findscu(dcmqrscp, "COMMON", model, keys, served.folder("theirs"))
    assert ours == theirs
    assert ours or keys.get("PatientName") == "doe*"  # only the case-sensitive one is empty
