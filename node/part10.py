# Part 10 files (PS3.10 7.1) as bytes: the preamble and File Meta Information group written
# in front of a data set received on the wire, and the hand-off spool: a data set the acceptor
# wrote to a file on the workers' file system, so that its bytes need not cross the broker and
# the worker's socket (the worker fsyncs and renames it into place).
#
# Rules: no pydicom, no third-party: the acceptor writes these on its event loop thread; a
# hand-off spool is complete (written and closed) before its request leaves, never fsynced here.
from __future__ import annotations

import os
import struct
import uuid
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

_EXPLICIT_SHORT: Final = struct.Struct("<HH2sH")
_EXPLICIT_LONG: Final = struct.Struct("<HH2s2xI")
#: What the spool files' meta header names as their writer (as the file store's default).
IMPLEMENTATION_CLASS_UID: Final = "2.25.283479113923592446473716104451470361611"
IMPLEMENTATION_VERSION_NAME: Final = "DICOMNODE_010"
#: Hand-off spool names start so (then the acceptor's id): whose they are, and how to sweep.
HANDOFF_PREFIX: Final = "handoff-"


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return _EXPLICIT_LONG.pack(group, element, vr, len(value)) + value
    return _EXPLICIT_SHORT.pack(group, element, vr, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_class_uid: str,
    implementation_version_name: str,
    source_ae_title: str,
) -> bytes:
    """Preamble, 'DICM' and the File Meta Information group (PS3.10 7.1), explicit VR LE."""
    body = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", _ui(sop_class_uid)),
            _element(0x0002, 0x0003, b"UI", _ui(sop_instance_uid)),
            _element(0x0002, 0x0010, b"UI", _ui(transfer_syntax)),
            _element(0x0002, 0x0012, b"UI", _ui(implementation_class_uid)),
            _element(0x0002, 0x0013, b"SH", _text(implementation_version_name)),
            _element(0x0002, 0x0016, b"AE", _text(source_ae_title[:16]))
            if source_ae_title
            else b"",
        )
    )
    length = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body)))
    return bytes(128) + b"DICM" + length + body


def write_all(descriptor: int, header: bytes, dataset: bytes | memoryview) -> None:
    """Write the file meta and the data set with one system call when the kernel takes it
    all (it does for regular files below 2 GiB), then what is left, without copying."""
    written = os.writev(descriptor, [header, dataset])
    for part in (memoryview(header), memoryview(dataset)):
        if written >= len(part):
            written -= len(part)
            continue
        rest = part[written:]
        written = 0
        while rest:
            rest = rest[os.write(descriptor, rest) :]


def _create_handoff(directory: Path, owner: str) -> tuple[Path, int]:
    """A new, empty hand-off spool in `directory`, created exclusively, named for `owner`."""
    path = directory / f"{HANDOFF_PREFIX}{owner}-{uuid.uuid4().hex}.spool"
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _written(path: Path, descriptor: int, header: bytes, dataset: bytes | memoryview) -> None:
    """Write `header` + `dataset`; on failure the descriptor is closed and the file gone."""
    try:
        write_all(descriptor, header, dataset)
    except BaseException:
        os.close(descriptor)
        path.unlink(missing_ok=True)
        raise


def open_handoff(directory: Path, owner: str, header: bytes) -> tuple[Path, int]:
    """A new hand-off spool with `header` written: its path and an open descriptor for the
    data set that follows."""
    path, descriptor = _create_handoff(directory, owner)
    _written(path, descriptor, header, b"")
    return path, descriptor


def write_handoff(directory: Path, owner: str, header: bytes, dataset: bytes | memoryview) -> Path:
    """Write `header` + `dataset` to a new hand-off spool in `directory` (one writev; closed,
    not fsynced: the worker that adopts it makes it durable)."""
    path, descriptor = _create_handoff(directory, owner)
    _written(path, descriptor, header, dataset)
    os.close(descriptor)
    return path


def sweep_handoffs(directory: Path, older_than: float) -> int:
    """Delete hand-off spools last written before `older_than` (unix time): left by a request
    whose acceptor went away before its answer. Returns how many were deleted."""
    swept = 0
    try:
        candidates = list(directory.glob(f"{HANDOFF_PREFIX}*.spool"))
    except OSError:
        return 0
    for path in candidates:
        try:
            if path.stat().st_mtime < older_than:
                path.unlink()
                swept += 1
        except OSError:
            continue  # adopted or deleted meanwhile
    return swept
