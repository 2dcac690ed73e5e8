# Same-host hand-off (issue 15): the acceptor writes a C-STORE data set as a Part 10 spool in
# the workers' spool directory (node.part10) and names it in the request; the worker checks
# that the name is a hand-off spool of its own directory, then adopts it (fsync, rename, index
# row) without the data set crossing a socket. A name the worker refuses, a spool nobody
# adopts and a data set of another SOP class leave nothing behind.
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from node.dicomio import encode_dataset
from node.dimse.messages import CStoreRQ
from node.dispatch import ServiceRequest
from node.part10 import (
    HANDOFF_PREFIX,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    file_meta,
    sweep_handoffs,
    write_handoff,
)
from tests.synthetic import make_dataset
from tests.workers.test_qr import ASSOCIATION, FakeChannel
from workers.handlers.common import Handlers
from workers.runtime import handed_off
from workers.service import handle_request
from workers.store.index import IndexedFileStore

if TYPE_CHECKING:
    from pathlib import Path

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def store(tmp_path: Path) -> IndexedFileStore:
    return IndexedFileStore(tmp_path / "data", fsync=True)


def _spool_of(store: IndexedFileStore, ds, sop_class: str | None = None) -> tuple[Path, int]:
    """What the acceptor writes: the meta header from the command, then the data set."""
    header = file_meta(
        sop_class or ds.SOPClassUID,
        ds.SOPInstanceUID,
        ExplicitVRLittleEndian,
        IMPLEMENTATION_CLASS_UID,
        IMPLEMENTATION_VERSION_NAME,
        "MODALITY",
    )
    store.spool_directory.mkdir(parents=True, exist_ok=True)
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    return write_handoff(store.spool_directory, "a-test", header, data), len(header)


def _handoff_request(ds, path: Path, offset: int, sop_class: str | None = None) -> ServiceRequest:
    sop_class = sop_class or ds.SOPClassUID
    command = CStoreRQ(
        message_id=1, affected_sop_class_uid=sop_class, affected_sop_instance_uid=ds.SOPInstanceUID
    )
    return ServiceRequest(
        ASSOCIATION,
        1,
        sop_class,
        ExplicitVRLittleEndian,
        command,
        None,
        dataset_path=str(path),
        dataset_offset=offset,
    )


def test_write_handoff_makes_a_part10_file_of_header_and_data_set(tmp_path: Path):
    header = file_meta("1.2.3", "1.2.3.4", ExplicitVRLittleEndian, "1.2", "X", "AE")
    first = write_handoff(tmp_path, "a-1", header, b"\x08\x00\x18\x00")
    second = write_handoff(tmp_path, "a-1", header, memoryview(b"\x08\x00"))
    assert first != second  # a fresh name each time, created exclusively
    assert first.name.startswith(f"{HANDOFF_PREFIX}a-1-")
    assert first.suffix == ".spool"
    assert first.read_bytes() == header + b"\x08\x00\x18\x00"
    assert second.read_bytes() == header + b"\x08\x00"


def test_sweep_removes_only_old_handoff_spools(tmp_path: Path):
    header = file_meta("1.2.3", "1.2.3.4", ExplicitVRLittleEndian, "1.2", "X", "")
    old = write_handoff(tmp_path, "a-1", header, b"")
    fresh = write_handoff(tmp_path, "a-1", header, b"")
    streamed = tmp_path / "0123abcd.spool"  # a worker's streaming spool: never swept here
    streamed.write_bytes(b"")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(streamed, (an_hour_ago, an_hour_ago))
    assert sweep_handoffs(tmp_path, time.time() - 600) == 1
    assert not old.exists()
    assert fresh.exists()
    assert streamed.exists()
    assert sweep_handoffs(tmp_path / "missing", time.time()) == 0


def test_a_handed_off_data_set_is_adopted_and_indexed(store: IndexedFileStore):
    ds = make_dataset(3, 1, 1, 1, size=200)  # 80 KB of pixel data
    path, offset = _spool_of(store, ds)
    channel = FakeChannel()
    handle_request(_handoff_request(ds, path, offset), channel, Handlers(file_store=store))
    assert channel.final.status == 0x0000
    assert not path.exists()  # renamed into place, not copied
    stored = list(store.objects.rglob("*.dcm"))
    assert [p.stem for p in stored] == [ds.SOPInstanceUID]
    copy = dcmread(stored[0])
    assert copy.PixelData == ds.PixelData
    assert copy.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert store.index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    row = store.index.stored_instances([ds.SOPInstanceUID])[ds.SOPInstanceUID]
    assert (store.root / str(row.path)).resolve() == stored[0].resolve()
    assert ds.SeriesInstanceUID in stored[0].as_posix()  # study and series read from the head


def test_a_handed_off_data_set_of_another_sop_class_is_refused_and_removed(
    store: IndexedFileStore,
):
    ds = make_dataset(9, 1, 1, 1, size=200)  # a CT image announced as MR
    path, offset = _spool_of(store, ds, sop_class=MR_STORAGE)
    channel = FakeChannel()
    request = _handoff_request(ds, path, offset, sop_class=MR_STORAGE)
    handle_request(request, channel, Handlers(file_store=store))
    assert channel.final.status == 0xA900
    assert not path.exists()  # a spool nobody adopted is removed
    assert not list(store.objects.rglob("*.dcm"))


def test_the_worker_adopts_only_handoff_spools_of_its_own_directory(
    store: IndexedFileStore, tmp_path: Path
):
    ds = make_dataset(4, 1, 1, 1)
    path, offset = _spool_of(store, ds)
    directory = store.spool_directory
    assert handed_off({"spool": str(path), "spool_offset": offset}, directory) == (
        str(path),
        offset,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / path.name
    outside.write_bytes(path.read_bytes())
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    link = directory / f"{HANDOFF_PREFIX}a-test-link.spool"
    link.symlink_to(secret)
    renamed = directory / "stored.dcm"
    renamed.write_bytes(path.read_bytes())
    refused: list[dict[str, object]] = [
        {"spool": str(outside), "spool_offset": offset},  # another directory
        {"spool": f"{directory}/../elsewhere/{path.name}", "spool_offset": offset},
        {"spool": str(renamed), "spool_offset": offset},  # not named as a hand-off
        {"spool": str(link), "spool_offset": 4},  # a symbolic link to another file
        {"spool": str(path), "spool_offset": 0},  # no meta header
        {"spool": str(path), "spool_offset": path.stat().st_size + 1},
        {"spool": str(path), "spool_offset": "132"},
    ]
    for envelope in refused:
        with pytest.raises(ValueError, match="is not a"):
            handed_off(envelope, directory)
    with pytest.raises(ValueError, match="no spool directory"):
        handed_off({"spool": str(path), "spool_offset": offset}, None)  # no store here
    with pytest.raises(FileNotFoundError):
        handed_off(
            {"spool": str(directory / f"{HANDOFF_PREFIX}gone.spool"), "spool_offset": 1}, directory
        )
    assert secret.read_bytes() == b"not yours"
