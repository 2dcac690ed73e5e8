# Synthetic DICOM objects and small process/network helpers for the AE, CLI and interop tests.
#
# Rules: everything is made here with pydicom, small (8x8 pixels), with deterministic UIDs under
# a test root so that tests can predict paths and compare bytes. No sleeps: servers are waited
# for by connecting, with the wait bounded by the server process's own exit.
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

ROOT = "1.2.826.0.1.3680043.8.498.77"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
#: The longest any test waits for something that should happen: a process to listen or exit,
#: an event, an answer, a tool to finish. Generous on purpose: CI machines are shared and load
#: can stretch a second into minutes; a working test never waits this long and a hung one still
#: fails after it. DICOMNODE_TEST_PATIENCE overrides it (seconds).
PATIENCE = float(os.environ.get("DICOMNODE_TEST_PATIENCE", "180"))
TOOL_TIMEOUT = PATIENCE


def make_dataset(
    patient: int = 1,
    study: int = 1,
    series: int = 1,
    instance: int = 1,
    *,
    modality: str = "CT",
    size: int = 8,
) -> Dataset:
    """A small CT or MR image with file meta (explicit VR little endian) and predictable UIDs."""
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    study_uid = f"{ROOT}.{patient}.{study}"
    series_uid = f"{study_uid}.{series}"
    sop_uid = f"{series_uid}.{instance}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(f"{ROOT}.0")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = f"2024010{patient % 10}"
    ds.Modality = modality
    ds.PatientName = f"TEST^PATIENT{patient}"
    ds.PatientID = f"PID{patient:03d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(study)
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.AccessionNumber = f"ACC{patient}{study}"
    ds.StudyDescription = f"study {study} of patient {patient}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(
        (patient * 31 + study * 7 + series * 3 + instance + i) % 251 for i in range(size * size * 2)
    )
    return ds


def make_datasets(
    patients: int = 2, studies: int = 2, series: int = 1, instances: int = 2, *, size: int = 8
) -> list[Dataset]:
    """A little archive: patients x studies x series x instances, CT for odd patients, MR else."""
    return [
        make_dataset(p, st, se, i, modality="CT" if p % 2 else "MR", size=size)
        for p in range(1, patients + 1)
        for st in range(1, studies + 1)
        for se in range(1, series + 1)
        for i in range(1, instances + 1)
    ]


def write_datasets(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    """Write each data set as a Part 10 file <SOPInstanceUID>.dcm in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def free_port() -> int:
    """A TCP port free on loopback right now (for DCMTK servers, which cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


@dataclass
class ToolResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_tool(args: Sequence[object], timeout: float = TOOL_TIMEOUT) -> ToolResult:
    """Run a DCMTK command line tool to completion (killed after `timeout`)."""
    completed = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=tool_env(),
        check=False,
    )
    return ToolResult(completed.returncode, completed.stdout, completed.stderr)


def wait_until(
    condition: Callable[[], Any], what: str, limit: float = PATIENCE, step: float = 0.05
) -> Any:
    """Evaluate `condition` until it is truthy (returned); fail after `limit` seconds.

    For conditions that look at other processes (files, ports, metrics, /proc), which offer
    nothing to wait on: the pause between looks is bounded and never decides the outcome.
    """
    deadline = time.monotonic() + limit
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        pause.wait(step)


def wait_for_port(process: subprocess.Popen[bytes], port: int, limit: float = PATIENCE) -> None:
    """Wait until `process` accepts TCP connections on `port` (fails if it exits first)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            # the bounded wait on the process itself paces the retries
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.05)
    raise TimeoutError(f"{process.args!r} did not listen on port {port} within {limit} s")


@contextlib.contextmanager
def running(
    args: Sequence[object], port: int, **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait for its port, always kill it on exit."""
    process = subprocess.Popen(  # type: ignore[call-overload]
        [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=tool_env(),
        **kwargs,
    )
    try:
        wait_for_port(process, port)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=PATIENCE)
