# A large Part 10 object written and hashed in bounded memory, for the object store's
# bounded-memory test and benchmark: a multi-frame 16-bit image whose Pixel Data is streamed to
# disk a MiB at a time (random blocks, each frame's first bytes its number, so no two are equal).
#
# Rules: nothing here holds more than CHUNK bytes of pixels; the hash is of the data set (what
# follows the file meta), which the store must keep byte for byte whatever file meta it writes.
from __future__ import annotations

import hashlib
import os
import struct
from typing import TYPE_CHECKING, BinaryIO, Final

from tests.synthetic import make_dataset

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

CHUNK: Final = 1 << 20
FRAME_SIDE: Final = 1024  # 1024 x 1024 x 16 bit: 2 MiB a frame
FRAME_BYTES: Final = FRAME_SIDE * FRAME_SIDE * 2
PIXEL_DATA_OW: Final = b"\xe0\x7f\x10\x00OW\x00\x00"  # (7FE0,0010) OW, explicit VR LE


def write_large_object(folder: Path, size: int, patient: int = 80) -> tuple[Path, str, int]:
    """A Part 10 file with about `size` bytes of Pixel Data (whole frames); returns its path, the
    SHA-256 of its data set and the data set's length."""
    frames = max(1, size // FRAME_BYTES)
    ds = make_dataset(patient, 1, 1, 1)
    del ds.PixelData
    ds.Rows = ds.Columns = FRAME_SIDE
    ds.NumberOfFrames = frames
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    with path.open("rb") as handle:
        meta_end = dataset_offset(handle)
        digest = hashlib.sha256(handle.read())
    length = path.stat().st_size - meta_end
    block = os.urandom(CHUNK)
    with path.open("ab") as handle:
        pixels = frames * FRAME_BYTES
        head = PIXEL_DATA_OW + struct.pack("<I", pixels)
        handle.write(head)
        digest.update(head)
        for index in range(pixels // CHUNK):
            chunk = struct.pack("<Q", index) + block[8:]
            handle.write(chunk)
            digest.update(chunk)
        length += len(head) + pixels
    return path, digest.hexdigest(), length


def dataset_offset(handle: BinaryIO) -> int:
    """Where the data set starts in a Part 10 stream positioned at its start (after the
    preamble, DICM and the group 0002 elements, from File Meta Information Group Length);
    the stream is left there."""
    head = handle.read(128 + 4 + 12)
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 stream starting with (0002,0000)")
    (group_length,) = struct.unpack("<I", head[140:144])
    offset = 144 + int(group_length)
    handle.seek(offset)
    return offset


def dataset_digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    """SHA-256 and length of the data set of a Part 10 object given as a stream of chunks."""
    digest = hashlib.sha256()
    length = 0
    pending = b""
    in_dataset = False
    for chunk in chunks:
        if not in_dataset:
            pending += chunk
            if len(pending) < 144:
                continue
            (group_length,) = struct.unpack("<I", pending[140:144])
            if len(pending) < 144 + group_length:
                continue
            chunk, pending, in_dataset = pending[144 + group_length :], b"", True
        digest.update(chunk)
        length += len(chunk)
    return digest.hexdigest(), length
