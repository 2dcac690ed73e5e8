# The built-in storage under hostile input and a full disk, over the network with our SCU:
# crafted UIDs never become paths outside DATA_DIR, and a C-STORE that finds the disk full
# fails with Out of Resources (0xA7xx) leaving no partial or temporary file behind.
from __future__ import annotations

import struct
import subprocess
from typing import TYPE_CHECKING

import pytest
from pydicom import config, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.dicomio import Part10, encode_dataset, read_part10
from node.dimse.status import StatusCategory, classify
from tests.synthetic import CT_IMAGE_STORAGE, ROOT, make_dataset
from tests.workers.network import archive, modality
from workers.store.files import FileStore, StoredObject
from workers.store.index import IndexedFileStore

if TYPE_CHECKING:
    from pathlib import Path

GOOD_STUDY = f"{ROOT}.8.1"
GOOD_SERIES = f"{ROOT}.8.1.1"
GOOD_SOP = f"{ROOT}.8.1.1.1"


def _element(group: int, element: int, vr: bytes, text: str, explicit: bool) -> bytes:
    value = text.encode("latin-1")
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if explicit:
        return struct.pack("<HH2sH", group, element, vr, len(value)) + value
    return struct.pack("<HHI", group, element, len(value)) + value


def raw_dataset(sop_instance: str, study: str, series: str, transfer_syntax: str) -> bytes:
    """A little endian data set made byte by byte: no library validates the UIDs on the way
    out, as a hostile peer's would not."""
    explicit = transfer_syntax != ImplicitVRLittleEndian
    return b"".join(
        _element(group, element, vr, text, explicit)
        for group, element, vr, text in (
            (0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE),
            (0x0008, 0x0018, b"UI", sop_instance),
            (0x0010, 0x0020, b"LO", "EVIL"),
            (0x0020, 0x000D, b"UI", study),
            (0x0020, 0x000E, b"UI", series),
        )
    )


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def store(tmp_path):
    files = IndexedFileStore(tmp_path / "root" / "data", fsync=False)
    yield files
    files.index.close()


def test_crafted_uids_are_refused_and_nothing_is_written_outside_the_data_dir(
    make_ae, store, tmp_path, monkeypatch
):
    import node.dimse.commands as commands

    # our SCU's encoder refuses a UID longer than 64 characters; a hostile SCU would not
    monkeypatch.setitem(commands._MAXIMUM_TEXT, commands._UI, 128)
    # pydicom warns (here: raises) when the response echoes the bad UID into a Dataset
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.IGNORE)
    absolute = str(tmp_path / "absolute")
    long_uid = "1." * 40 + "1"
    attacks = {
        "sop ../../etc/x": ("../../etc/x", GOOD_STUDY, GOOD_SERIES),
        "sop absolute": (absolute, GOOD_STUDY, GOOD_SERIES),
        "sop letters": ("1.2.abc", GOOD_STUDY, GOOD_SERIES),
        "sop 81 chars": (long_uid, GOOD_STUDY, GOOD_SERIES),
        "study ../../etc/x": (GOOD_SOP, "../../etc/x", GOOD_SERIES),
        "study absolute": (GOOD_SOP, absolute, GOOD_SERIES),
        "study 81 chars": (GOOD_SOP, long_uid, GOOD_SERIES),
        "study letters": (GOOD_SOP, "1.2.3a", GOOD_SERIES),
        "series ..": (GOOD_SOP, GOOD_STUDY, ".."),
        "series a/b": (GOOD_SOP, GOOD_STUDY, "1.2/3.4"),
        "series empty": (GOOD_SOP, GOOD_STUDY, ""),
    }
    before = files_under(tmp_path)
    scp = archive(make_ae, store)
    association = modality(make_ae).associate("127.0.0.1", scp.port, ae_title="ARCHIVE")
    assert association.is_established
    statuses = {}
    syntax = next(
        str(c.transfer_syntax)
        for c in association.accepted_contexts
        if c.abstract_syntax == CT_IMAGE_STORAGE
    )
    for name, (sop, study, series) in attacks.items():
        part10 = Part10(CT_IMAGE_STORAGE, sop, syntax, raw_dataset(sop, study, series, syntax))
        statuses[name] = int(association.send_c_store(part10).Status)
    good = make_dataset(8, 1, 1, 1)
    assert association.send_c_store(good).Status == 0x0000  # the association goes on
    association.release()

    for name, status in statuses.items():
        assert classify(status) is StatusCategory.FAILURE, f"{name}: 0x{status:04X}"
    created = files_under(tmp_path) - before
    assert all(store.root in path.parents for path in created), created
    objects = files_under(store.objects)
    assert [path.name for path in objects] == [f"{good.SOPInstanceUID}.dcm"]
    assert not (tmp_path / "absolute").exists()
    assert not (tmp_path / "root" / "etc").exists()
    assert store.index.counts()["instance"] == 1


# --- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root, or CAP_SYS_ADMIN): skipped with the reason if mount fails."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs here: {mounted.stderr.strip() or 'not root'}")
    yield folder
    if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def test_a_full_disk_fails_the_store_with_out_of_resources_and_leaves_no_partial_file(
    make_ae, small_disk
):
    store = IndexedFileStore(small_disk / "data", fsync=True)
    try:
        scp = archive(make_ae, store)
        association = modality(make_ae).associate("127.0.0.1", scp.port, ae_title="ARCHIVE")
        assert association.is_established
        sent = {}
        failure = None
        for n in range(1, 40):  # ~200 KiB each: the 2 MiB disk is full after about 9
            ds = make_dataset(9, 1, 1, n, size=320)
            status = int(association.send_c_store(ds).Status)
            if status != 0x0000:
                failure = (status, ds.SOPInstanceUID)
                break
            sent[ds.SOPInstanceUID] = ds
        assert association.send_c_echo().Status == 0x0000  # the node goes on
        association.release()
        assert store.index.counts()["instance"] == len(sent)
    finally:
        store.index.close()

    assert failure is not None, "the disk never filled up"
    status, refused = failure
    assert 0xA700 <= status <= 0xA7FF, f"status 0x{status:04X}"
    assert len(sent) >= 3
    files = files_under(small_disk / "data" / "objects")
    assert not [path for path in files if path.name.startswith(".") or path.suffix != ".dcm"]
    assert {path.stem for path in files} == set(sent), "a partial or unacknowledged file"
    assert refused not in {path.stem for path in files}
    for path in files:  # every acknowledged object is intact
        stored = dcmread(path)
        original = sent[path.stem]
        assert stored.PixelData == original.PixelData
        assert stored.SOPInstanceUID == original.SOPInstanceUID


def test_an_index_failure_removes_the_new_file_but_keeps_a_replaced_one(store, monkeypatch):
    from node.dimse.messages import CStoreRQ
    from node.dispatch import ServiceRequest
    from tests.workers.test_qr import ASSOCIATION, FakeChannel
    from workers.handlers.common import Handlers
    from workers.service import handle_request
    from workers.store.index import IndexDatabaseError

    def store_once(ds):
        command = CStoreRQ(
            message_id=1,
            affected_sop_class_uid=ds.SOPClassUID,
            affected_sop_instance_uid=ds.SOPInstanceUID,
        )
        data = encode_dataset(ds, ExplicitVRLittleEndian)
        request = ServiceRequest(
            ASSOCIATION, 1, ds.SOPClassUID, ExplicitVRLittleEndian, command, data
        )
        channel = FakeChannel()
        handle_request(request, channel, Handlers(file_store=store))
        return channel.final.status

    kept = make_dataset(7, 1, 1, 1)
    assert store_once(kept) == 0x0000

    def full(*args, **kwargs):
        raise IndexDatabaseError("database or disk is full")

    monkeypatch.setattr(store.index, "add", full)
    assert store_once(make_dataset(7, 1, 1, 2)) == 0xA700  # new: its file goes
    assert store_once(kept) == 0xA700  # a replacement: the earlier file stays
    assert [path.stem for path in files_under(store.objects)] == [kept.SOPInstanceUID]


def test_a_data_set_of_another_sop_class_is_refused_with_a900(store):
    from node.dimse.messages import CStoreRQ
    from node.dispatch import ServiceRequest
    from tests.workers.test_qr import ASSOCIATION, FakeChannel
    from workers.handlers.common import Handlers
    from workers.service import handle_request

    ds = make_dataset(9, 1, 1, 1)  # a CT image ...
    mr_storage = "1.2.840.10008.5.1.4.1.1.4"
    command = CStoreRQ(  # ... announced as MR
        message_id=1, affected_sop_class_uid=mr_storage, affected_sop_instance_uid=ds.SOPInstanceUID
    )
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    request = ServiceRequest(ASSOCIATION, 1, mr_storage, ExplicitVRLittleEndian, command, data)
    channel = FakeChannel()
    before = files_under(store.root)
    handle_request(request, channel, Handlers(file_store=store))
    assert channel.final.status == 0xA900
    assert str(ds.SOPClassUID) in (channel.final.error_comment or "")
    assert files_under(store.root) == before  # nothing written


def put(files: FileStore, sop_instance: str, data: bytes = b"\x08\x00") -> StoredObject:
    """Store `data` as one CT object of the good study and series."""
    return files.store(
        CT_IMAGE_STORAGE,
        sop_instance,
        ExplicitVRLittleEndian,
        data,
        "",
        study_and_series_uids=(GOOD_STUDY, GOOD_SERIES),
    )


def test_a_series_directory_removed_behind_the_store_is_made_again(tmp_path):
    files = FileStore(tmp_path, fsync=True)
    first = put(files, GOOD_SOP)
    directory = first.path.parent
    first.path.unlink()
    directory.rmdir()  # the store remembers it made this directory
    again = put(files, GOOD_SOP + ".2")
    assert again.path.parent == directory
    assert again.path.read_bytes().endswith(b"\x08\x00")
    assert [p.name for p in directory.iterdir()] == [again.path.name]  # no temporary left


def test_a_streamed_object_is_adopted_into_a_series_directory_removed_behind_the_store(tmp_path):
    from workers.store.spool import Spool

    files = FileStore(tmp_path, fsync=True)
    first = put(files, GOOD_SOP)
    first.path.unlink()
    first.path.parent.rmdir()  # remembered by the store, gone from the disk
    data = raw_dataset(GOOD_SOP + ".3", GOOD_STUDY, GOOD_SERIES, ExplicitVRLittleEndian)
    spool = Spool(files.spool_directory, CT_IMAGE_STORAGE, GOOD_SOP + ".3", ExplicitVRLittleEndian)
    spool.write(data)
    adopted = files.adopt(spool.close(), GOOD_SOP + ".3", ExplicitVRLittleEndian, len(spool.header))
    assert adopted.path.parent == first.path.parent
    assert read_part10(str(adopted.path)).data == data


@pytest.mark.parametrize("taken", [3, 1000])  # inside the file meta / inside the data set
def test_a_short_write_is_completed(tmp_path, monkeypatch, taken):
    import os

    real_writev = os.writev

    def short_writev(descriptor, buffers):
        joined = b"".join(bytes(b) for b in buffers)
        return real_writev(descriptor, [joined[:taken]])  # the kernel took `taken` bytes

    monkeypatch.setattr(os, "writev", short_writev)
    store = FileStore(tmp_path, fsync=False)
    data = bytes(range(256)) * 40
    stored = put(store, GOOD_SOP, data)
    assert read_part10(str(stored.path)).data == data


def test_a_series_directory_first_seen_has_its_entry_made_durable(tmp_path, monkeypatch):
    # Another process (or thread) made the directory and may not have fsynced its parents
    # yet: the first store here does it before relying on the directory.
    synced: list[str] = []
    monkeypatch.setattr(
        FileStore, "_fsync_directory", staticmethod(lambda d: synced.append(d.name))
    )
    put(FileStore(tmp_path), GOOD_SOP)
    synced.clear()
    other = FileStore(tmp_path)  # the directory exists already
    for number in (2, 3):
        put(other, f"{GOOD_SOP}.{number}")
    assert synced == [GOOD_STUDY, "objects", GOOD_SERIES, GOOD_SERIES]


def _record_fsync_and_rename(monkeypatch) -> list[str]:
    """What the store does to files, in order: ("fsync", "replace", "dir")."""
    import os

    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        steps.append("fsync")
        return real_fsync(descriptor)

    def replace(source, target):
        steps.append("replace")
        return real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(FileStore, "_fsync_directory", staticmethod(lambda d: steps.append("dir")))
    return steps


@pytest.mark.parametrize("streamed", [False, True])
def test_a_new_object_is_renamed_then_fsynced_and_a_replacement_fsynced_first(
    tmp_path, monkeypatch, streamed
):
    # New: one journal commit covers data and name (the fsync after the rename); a
    # replacement keeps fsync-before-rename so the earlier copy survives a power loss whole.
    from workers.store.spool import Spool

    files = FileStore(tmp_path, fsync=True)
    put(files, GOOD_SOP + ".0")  # the series directory exists: its fsyncs are not counted

    def store_one(sop: str) -> StoredObject:
        if not streamed:
            return put(files, sop)
        data = raw_dataset(sop, GOOD_STUDY, GOOD_SERIES, ExplicitVRLittleEndian)
        spool = Spool(files.spool_directory, CT_IMAGE_STORAGE, sop, ExplicitVRLittleEndian)
        spool.write(data)
        return files.adopt(spool.close(), sop, ExplicitVRLittleEndian, len(spool.header))

    steps = _record_fsync_and_rename(monkeypatch)
    new = store_one(GOOD_SOP)
    assert (steps, new.replaced) == (["replace", "fsync", "dir"], False)
    steps.clear()
    again = store_one(GOOD_SOP)
    assert (steps, again.replaced) == (["fsync", "replace", "dir"], True)


def test_a_new_object_whose_fsync_fails_is_removed_and_the_error_raised(tmp_path, monkeypatch):
    import os

    files = FileStore(tmp_path, fsync=True)
    put(files, GOOD_SOP + ".0")

    def failing_fsync(descriptor):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        put(files, GOOD_SOP)
    names = sorted(p.name for p in (tmp_path / "objects" / GOOD_STUDY / GOOD_SERIES).iterdir())
    assert names == [GOOD_SOP + ".0.dcm"]  # neither the new name nor a temporary is left
