# The durable file store: DICOM Part 10 files at DATA_DIR/objects/<study>/<series>/<sop>.dcm.
#
# Rules: path parts are UIDs validated as digits and dots (at most 64 characters, PS3.5 9.1),
# never raw peer text, so nothing lands outside DATA_DIR. A file is written under a temporary
# name, renamed atomically, fsynced (a replacement: before its rename) and its directory
# fsynced: only then may success be reported (PS3.4 B.2.3 leaves durability to us; we choose
# acknowledged = on disk; FileStore._place says why in that order). The data
# set bytes are stored as received, after a file meta group we build (PS3.10 7.1).
from __future__ import annotations

import contextlib
import itertools
import os
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from node.part10 import file_meta, write_all

_UID: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
_EXPLICIT_SHORT: Final = struct.Struct("<HH2sH")
_EXPLICIT_LONG: Final = struct.Struct("<HH2s2xI")
STUDY_INSTANCE_UID: Final = 0x0020000D
SERIES_INSTANCE_UID: Final = 0x0020000E
_UID_TAGS: Final = frozenset({STUDY_INSTANCE_UID, SERIES_INSTANCE_UID})
#: Transfer syntaxes whose data set is little endian and not deflated (the raw scanner's).
_FAST_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        *(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93)),
        "1.2.840.10008.1.2.5",
    }
)


class InvalidUIDError(ValueError):
    """A UID that must not become a path part."""


def checked_uid(value: str, what: str) -> str:
    """Return `value` if it is a UID of digits and dots, at most 64 characters."""
    value = value.rstrip("\0 ")
    if len(value) > 64 or not _UID.fullmatch(value):
        raise InvalidUIDError(f"{what} {value[:80]!r} is not a valid UID")
    return value


def study_and_series(dataset: bytes | BinaryIO, transfer_syntax: str) -> tuple[str, str]:
    """Read Study and Series Instance UID from the start of a data set (bytes, or a file
    positioned at its first element), parsing no further."""
    source: Any = dataset
    if isinstance(dataset, bytes) and transfer_syntax in _FAST_SYNTAXES:
        from workers.store import header

        explicit = transfer_syntax != "1.2.840.10008.1.2"
        found = header.scan(dataset, explicit, _UID_TAGS, SERIES_INSTANCE_UID)
        if found is not None:
            values = header.texts(
                found, {STUDY_INSTANCE_UID: "study", SERIES_INSTANCE_UID: "series"}
            )
            if values is not None:
                return values["study"], values["series"]
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        import zlib

        head = dataset if isinstance(dataset, bytes) else dataset.read(1 << 22)
        source = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, 1 << 20)
    if isinstance(source, bytes):
        source = DicomBytesIO(source)
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    implicit = bool(uid.is_implicit_VR) if uid.is_transfer_syntax else False
    little = bool(uid.is_little_endian) if uid.is_transfer_syntax else True
    parsed = read_dataset(
        source,
        implicit,
        little,
        stop_when=lambda tag, vr, length: tag > SERIES_INSTANCE_UID,
    )
    return (
        str(parsed.get("StudyInstanceUID", "")),
        str(parsed.get("SeriesInstanceUID", "")),
    )


def spool_study_and_series(
    spool: Path, transfer_syntax: str, header_length: int, known: tuple[str, str] | None
) -> tuple[str, str]:
    """A spool's Study and Series Instance UID: `known` when the caller parsed them already,
    else read from its data set (after `header_length` bytes of file meta)."""
    checked_uid(transfer_syntax, "Transfer Syntax UID")
    if known is not None:
        return known
    with spool.open("rb") as handle:
        handle.seek(header_length)
        return study_and_series(handle, transfer_syntax)


@dataclass(frozen=True, slots=True)
class StoredObject:
    path: Path
    study_instance_uid: str
    series_instance_uid: str
    replaced: bool


#: Numbers for temporary names, unique within the process (next() is atomic under the GIL),
#: after a random token: processes on several hosts (all PID 1 in containers) may share the
#: data directory.
_WRITES: Final = itertools.count(1)
_TOKEN = uuid.uuid4().hex[:12]


def _new_token() -> None:
    global _TOKEN  # a forked child must not reuse its parent's names
    _TOKEN = uuid.uuid4().hex[:12]


os.register_at_fork(after_in_child=_new_token)
#: Series directories remembered per store before the memory starts over.
_KNOWN_DIRECTORIES: Final = 4096


#: A temporary file is always a new one: O_EXCL, so two writers can never share it.
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL


class FileStore:
    """Part 10 files under `root/objects`, written durably."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        implementation_class_uid: str = "2.25.283479113923592446473716104451470361611",
        implementation_version_name: str = "DICOMNODE_010",
    ) -> None:
        self.root = Path(root).resolve()
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.implementation_class_uid = implementation_class_uid
        self.implementation_version_name = implementation_version_name
        #: Series directories known to exist (a set add is atomic for the handler threads).
        self._directories: set[Path] = set()

    def path_for(self, study: str, series: str, sop_instance: str) -> Path:
        parts = (
            checked_uid(study, "Study Instance UID"),
            checked_uid(series, "Series Instance UID"),
            checked_uid(sop_instance, "SOP Instance UID") + ".dcm",
        )
        # Each part is digits and dots with no empty component (so never "..", "." or "/"):
        # the path stays below objects/.
        return self.objects.joinpath(*parts)

    def store(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        source_ae_title: str = "",
        *,
        study_and_series_uids: tuple[str, str] | None = None,
    ) -> StoredObject:
        """Write one object durably (replacing an earlier copy of the same SOP instance).

        Pass `study_and_series_uids` when the caller already parsed them (no second parse)."""
        checked_uid(sop_class_uid, "SOP Class UID")
        checked_uid(transfer_syntax, "Transfer Syntax UID")
        study, series = study_and_series_uids or study_and_series(dataset, transfer_syntax)
        path = self.path_for(study, series, sop_instance_uid)
        directory = path.parent
        self._make_directory(directory)
        header = file_meta(
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
            self.implementation_class_uid,
            self.implementation_version_name,
            source_ae_title,
        )
        # unique per write: several threads and processes may store the same SOP instance
        temporary = f"{directory}/.{path.name}.{_TOKEN}.{next(_WRITES)}.tmp"
        replaced = os.path.exists(path)
        try:
            descriptor = os.open(temporary, _CREATE, 0o644)
        except FileNotFoundError:  # the directory went away since we made it: again
            self._directories.discard(directory)
            self._make_directory(directory)
            descriptor = os.open(temporary, _CREATE, 0o644)
        try:
            try:
                write_all(descriptor, header, dataset)
                self._place(descriptor, temporary, path, replaced)
            finally:
                os.close(descriptor)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        if self.fsync:
            self._fsync_directory(directory)
        return StoredObject(path, study, series, replaced)

    def adopt(
        self,
        spool: Path,
        sop_instance_uid: str,
        transfer_syntax: str,
        header_length: int,
        study_and_series_uids: tuple[str, str] | None = None,
    ) -> StoredObject:
        """Move a finished spool (a Part 10 file, workers.store.spool) into place durably,
        without copying it (same filesystem): fsync, atomic rename, directory fsync."""
        study, series = spool_study_and_series(
            spool, transfer_syntax, header_length, study_and_series_uids
        )
        path = self.path_for(study, series, sop_instance_uid)
        directory = path.parent
        self._make_directory(directory)
        replaced = path.exists()
        descriptor = os.open(spool, os.O_RDONLY) if self.fsync else None  # only to fsync
        try:
            try:
                self._place(descriptor, str(spool), path, replaced)
            except FileNotFoundError:
                if not spool.exists():
                    raise
                self._directories.discard(directory)  # it went away since we made it: again
                self._make_directory(directory)
                self._place(descriptor, str(spool), path, replaced)
        finally:
            if descriptor is not None:
                os.close(descriptor)
        if self.fsync:
            self._fsync_directory(directory)
        return StoredObject(path, study, series, replaced)

    def _place(self, descriptor: int | None, written: str, path: Path, replaced: bool) -> None:
        """Rename the finished file `written` (open as `descriptor`; None without fsync) to
        `path`, its data durable when this returns (the caller then fsyncs the directory).

        A new object is renamed first and fsynced after: on ext4 (and XFS, btrfs) the fsync
        then commits the data and the new name in one journal commit, where fsync-then-rename
        needs a second for the rename (measured on ext4: 0.45-0.58 instead of 0.71-1.09 ms
        per 8 KB object). A power loss before the fsync returns may leave a partial file
        under the new name: it has no index row (the row is written after), no success was
        sent, and the SCU's next attempt replaces it. An object that replaces an earlier
        copy is fsynced before its rename, so a power loss keeps one whole copy or the other."""
        if descriptor is None or not self.fsync:
            os.replace(written, path)
            return
        if replaced:
            os.fsync(descriptor)
            os.replace(written, path)
            return
        os.replace(written, path)
        try:
            os.fsync(descriptor)
        except BaseException:
            with contextlib.suppress(OSError):  # still ours: nothing else may keep it
                if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                    os.unlink(path)
            raise

    def _make_directory(self, directory: Path) -> None:
        """Make the series `directory` (and its study directory) and, the first time this
        store sees it, make their entries durable (fsync of the study and objects
        directories) before remembering it: a thread that finds it remembered may rely on
        that, even while another thread is still writing the first file into it."""
        if directory in self._directories:
            return
        directory.mkdir(parents=True, exist_ok=True)
        if self.fsync:  # made here or by another thread or process: durable either way
            self._fsync_directory(directory.parent)
            self._fsync_directory(directory.parent.parent)
        if len(self._directories) >= _KNOWN_DIRECTORIES:
            self._directories.clear()
        self._directories.add(directory)

    @property
    def spool_directory(self) -> Path:
        """Where streamed data sets are spooled: on the same filesystem as the objects."""
        return self.root / "spool"

    @staticmethod
    def _fsync_directory(directory: Path) -> None:
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
