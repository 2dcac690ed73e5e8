# The `dicomnode` command line: SCU tools against an in-process AE (through node.cli.main), and
# `dicomnode serve` as a real process fed by DCMTK's storescu.
#
# Rules: every subprocess has a timeout and is killed in `finally`; no sleeps.
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from node.cli import main
from node.dicomio import read_part10
from node.presets import QueryRetrievePresentationContexts
from tests.synthetic import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    PATIENCE,
    VERIFICATION,
    free_port,
    make_datasets,
    run_tool,
    tool_env,
    wait_for_port,
    write_datasets,
)

DICOMNODE = Path(sys.executable).with_name("dicomnode")


@pytest.fixture
def scp(make_ae):
    stored: list[Dataset] = []

    def on_c_store(ds, context, info):
        stored.append(ds)
        return 0x0000

    def on_c_find(ds, context, info):
        for index in range(2):
            match = Dataset()
            match.QueryRetrieveLevel = str(ds.QueryRetrieveLevel)
            match.PatientName = f"DOE^JOHN{index}"
            match.StudyInstanceUID = f"1.2.3.{index}"
            yield 0xFF00, match

    ae = make_ae("CLISCP")
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(CT_IMAGE_STORAGE)
    ae.add_supported_context(MR_IMAGE_STORAGE)
    for context in QueryRetrievePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    ae.on_c_store = on_c_store
    ae.on_c_find = on_c_find
    ae.require_calling_aet = [b"DICOMNODE"]
    ae.start(block=False)
    ae.stored = stored
    return ae


def _run(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_echo(scp, capsys):
    code, out, err = _run(capsys, "echo", "127.0.0.1", scp.port, "--repeat", 2)
    assert code == 0, err
    assert out.splitlines() == ["C-ECHO status: 0x0000"] * 2


def test_store_folder(scp, capsys, dicom_folder: Path, datasets):
    code, out, err = _run(capsys, "store", "127.0.0.1", scp.port, dicom_folder)
    assert code == 0, err
    assert "8 of 8 objects stored" in out
    assert "0 failed, 0 unreadable" in out
    assert sorted(str(ds.SOPInstanceUID) for ds in scp.stored) == sorted(
        str(ds.SOPInstanceUID) for ds in datasets
    )


def test_store_reports_unreadable_files(scp, capsys, dicom_folder: Path):
    (dicom_folder / "junk.dcm").write_bytes(b"not dicom at all")
    code, out, err = _run(capsys, "store", "127.0.0.1", scp.port, dicom_folder)
    assert code == 1
    assert "8 of 8 objects stored" in out
    assert "1 unreadable" in out
    assert "skipped" in err
    assert "junk.dcm" in err


def test_find_table_and_json(scp, capsys):
    code, out, err = _run(
        capsys,
        "find",
        "127.0.0.1",
        scp.port,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientName=DOE*",
        "-k",
        "StudyInstanceUID=",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["QueryRetrieveLevel", "PatientName", "StudyInstanceUID"]
    assert lines[1].split() == ["STUDY", "DOE^JOHN0", "1.2.3.0"]
    assert lines[2].split() == ["STUDY", "DOE^JOHN1", "1.2.3.1"]
    code, out, err = _run(capsys, "find", "127.0.0.1", scp.port, "--json", "-k", "PatientID=")
    assert code == 0, err
    assert '"PatientName": "DOE^JOHN1"' in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["find", "127.0.0.1", "{port}", "-k", "NoSuchKeyword=1"], "unknown query key"),
        (["store", "127.0.0.1", "{port}", "/no/such/file.dcm"], "no such file or folder"),
        (["echo", "127.0.0.1", "{port}", "--aet", "STRANGER"], "association rejected"),
        (["echo", "127.0.0.1", "{dead}"], "could not associate"),
        (["echo", "127.0.0.1", "{port}", "--aet", "A" * 17], "ae_title"),
    ],
)
def test_user_errors_are_one_line(scp, capsys, argv, message):
    values = {"port": scp.port, "dead": free_port()}
    code, _out, err = _run(capsys, *(a.format(**values) for a in argv))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dicomnode {argv[0]}: ")
    assert message in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["echo", "127.0.0.1", "notaport"], "not a port number"),
        (["echo", "127.0.0.1", "70000"], "port out of range"),
        (["echo", "127.0.0.1", "104", "--acse-timeout", "-1"], "must not be negative"),
        (["serve", "--known-ae", "nonsense"], "expected AET=HOST:PORT"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_error_line(capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    _out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1].startswith("dicomnode")
    assert message in err.strip().splitlines()[-1]
    assert "Traceback" not in err


def test_cli_subprocess_bad_argument():
    completed = subprocess.run(
        [str(DICOMNODE), "echo", "localhost", "port"],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert completed.returncode == 2
    assert "not a port number" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.interop
def test_serve_stores_what_storescu_sends(tmp_path: Path):
    datasets = make_datasets(patients=2, studies=2, series=2, instances=2)
    originals = write_datasets(datasets, tmp_path / "in")
    data_dir = tmp_path / "data"
    port = free_port()
    process = subprocess.Popen(
        [
            str(DICOMNODE),
            "serve",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--data-dir",
            str(data_dir),
            "--no-fsync",
            "--workers",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tool_env(),
    )
    try:
        wait_for_port(process, port, limit=PATIENCE)
        result = run_tool(
            ["storescu", "-aec", "DICOMNODE", "+sd", "127.0.0.1", port, tmp_path / "in"]
        )
        assert result.returncode == 0, result.output
        for original, dataset in zip(originals, datasets, strict=True):
            stored = (
                data_dir
                / "objects"
                / str(dataset.StudyInstanceUID)
                / str(dataset.SeriesInstanceUID)
                / f"{dataset.SOPInstanceUID}.dcm"
            )
            assert stored.is_file(), stored
            assert read_part10(str(stored)).data == read_part10(str(original)).data
            parsed = dcmread(stored)
            assert parsed.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
            assert parsed.PixelData == dataset.PixelData
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=PATIENCE)
        assert process.returncode == 0, stderr
        assert b"dicomnode serving DICOMNODE" in stdout
        assert b"Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=PATIENCE)


def test_get_and_move(make_ae, capsys, tmp_path: Path):
    datasets = make_datasets(patients=1, studies=1, series=1, instances=3)
    moved: list[str] = []
    destination = make_ae("CLIDEST")
    destination.add_supported_context(CT_IMAGE_STORAGE)

    def on_c_store(ds, context, info):
        moved.append(str(ds.SOPInstanceUID))
        return 0

    destination.on_c_store = on_c_store
    destination.start(block=False)

    def on_c_get(ds, context, info):
        yield len(datasets)
        for dataset in datasets:
            yield 0xFF00, dataset

    def on_c_move(ds, move_aet, context, info):
        yield "127.0.0.1", destination.port
        yield from on_c_get(ds, context, info)

    scp = make_ae("CLISCP")
    for uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        scp.add_supported_context(uid, scu_role=True, scp_role=True)
    for context in QueryRetrievePresentationContexts:
        scp.add_supported_context(context.abstract_syntax)
    scp.on_c_get = on_c_get
    scp.on_c_move = on_c_move
    scp.start(block=False)
    out = tmp_path / "got"
    code, stdout, err = _run(
        capsys, "get", "127.0.0.1", scp.port, "-k", "PatientID=PID001", "--out", out
    )
    assert code == 0, err
    assert "C-GET status 0x0000: completed 3, failed 0, warning 0" in stdout
    got = {p.name: dcmread(p) for p in out.iterdir()}
    assert sorted(got) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in datasets)
    for dataset in datasets:
        assert got[f"{dataset.SOPInstanceUID}.dcm"].PixelData == dataset.PixelData
    code, stdout, err = _run(capsys, "move", "127.0.0.1", scp.port, "--dest", "CLIDEST", "-S")
    assert code == 0, err
    assert "C-MOVE status 0x0000: completed 3, failed 0, warning 0" in stdout
    assert sorted(moved) == sorted(str(ds.SOPInstanceUID) for ds in datasets)


def test_find_failure_prints_the_status_meaning_and_the_peers_error_comment(make_ae, capsys):
    def on_c_find(ds, context, info):
        status = Dataset()
        status.Status = 0xA900
        status.ErrorComment = "SeriesInstanceUID missing"
        status.OffendingElement = [0x0020000E]
        yield status, None

    ae = make_ae("FAILSCP")
    for context in QueryRetrievePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    ae.on_c_find = on_c_find
    ae.start(block=False)
    code, _out, err = _run(
        capsys, "find", "127.0.0.1", ae.port, "-S", "-k", "QueryRetrieveLevel=IMAGE"
    )
    assert code == 1
    assert "C-FIND ended with status A900H Failure: " in err
    assert "SeriesInstanceUID missing (offending element (0020,000E))" in err
