# Service callbacks the cluster tests load into worker processes (`--handlers`).
#
# They keep their data in files under $DICOMNODE_TEST_DIR so the test (another process) can
# count which worker process served what, and serve Q/R from the Part 10 files in
# $DICOMNODE_TEST_ARCHIVE.
from __future__ import annotations

import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

PENDING = 0xFF00


def _record(kind: str, info: dict[str, Any], **extra: Any) -> None:
    folder = Path(os.environ["DICOMNODE_TEST_DIR"])
    line = {
        "kind": kind,
        "pid": os.getpid(),
        "acceptor": info["acceptor"].get("acceptor_id", ""),
        **extra,
    }
    with (folder / f"served-{os.getpid()}.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def _archive() -> list[Dataset]:
    folder = Path(os.environ["DICOMNODE_TEST_ARCHIVE"])
    return [dcmread(path) for path in sorted(folder.glob("*.dcm"))]


def _matching(query: Dataset) -> list[Dataset]:
    wanted = str(query.get("PatientID", "") or "*")
    return [ds for ds in _archive() if fnmatch.fnmatchcase(str(ds.PatientID), wanted)]


def on_c_echo(context: Any, info: dict[str, Any]) -> int:
    started = time.time()
    delay = float(os.environ.get("DICOMNODE_TEST_ECHO_DELAY", "0"))
    if delay:
        time.sleep(delay)
    _record("echo", info, start=started, end=time.time())
    return 0x0000


def on_c_store(dataset: Dataset, context: Any, info: dict[str, Any]) -> int:
    _record("store", info, sop=str(dataset.SOPInstanceUID))
    return 0x0000


def on_c_find(query: Dataset, context: Any, info: dict[str, Any]) -> Any:
    for ds in _matching(query):
        answer = Dataset()
        answer.QueryRetrieveLevel = query.QueryRetrieveLevel
        answer.PatientID = ds.PatientID
        answer.SOPInstanceUID = ds.SOPInstanceUID
        yield PENDING, answer
    _record("find", info)


def on_c_get(query: Dataset, context: Any, info: dict[str, Any]) -> Any:
    matches = _matching(query)
    yield len(matches)
    for ds in matches:
        yield PENDING, ds
    _record("get", info, count=len(matches))


def on_c_move(query: Dataset, destination: bytes, context: Any, info: dict[str, Any]) -> Any:
    matches = _matching(query)
    yield None, None  # the destination comes from the workers' known-AE table
    yield len(matches)
    for ds in matches:
        yield PENDING, ds
    _record("move", info, count=len(matches))


def on_n_action(dataset: Dataset, context: Any, info: dict[str, Any]) -> tuple[int, Dataset]:
    _record("action", info)
    reply = Dataset()
    reply.TransactionUID = dataset.get("TransactionUID", "1.2.3")
    return 0x0000, reply
