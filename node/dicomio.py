# Data set bytes <-> pydicom Dataset, for a negotiated transfer syntax (PS3.5 section 10).
#
# Rules: used only where a handler needs a parsed data set (user callbacks, queries) or an SCU
# must encode one; the acceptor's hot path keeps data sets as opaque bytes.
from __future__ import annotations

import zlib

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian


def _encoding(transfer_syntax: str) -> tuple[bool, bool]:
    uid = UID(transfer_syntax)
    if uid.is_transfer_syntax:
        return bool(uid.is_implicit_VR), bool(uid.is_little_endian)
    return False, True  # unknown/private transfer syntaxes: explicit VR little endian


def decode_dataset(data: bytes, transfer_syntax: str) -> Dataset:
    """Parse a data set received with `transfer_syntax` (deflate undone first)."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    implicit, little = _encoding(transfer_syntax)
    return read_dataset(DicomBytesIO(data), implicit, little)  # type: ignore[arg-type]


def encode_dataset(dataset: Dataset, transfer_syntax: str) -> bytes:
    """Encode `dataset` for `transfer_syntax` (deflated when that syntax asks for it)."""
    implicit, little = _encoding(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit
    buffer.is_little_endian = little
    write_dataset(buffer, dataset)
    data = buffer.getvalue()
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data


def stored_transfer_syntax(dataset: Dataset) -> str | None:
    """The Transfer Syntax UID in a data set's file meta (how it was stored), if it has one."""
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return None
    return str(meta.TransferSyntaxUID)


def status_dataset(status: int, **fields: object) -> Dataset:
    """A status Dataset as pynetdicom returns it from send_c_*(): Status plus extra fields."""
    result = Dataset()
    result.Status = status
    for keyword, value in fields.items():
        if value is not None:
            setattr(result, keyword, value)
    return result


class Part10:
    """A DICOM Part 10 file split into what an SCU needs, without parsing the data set."""

    __slots__ = ("data", "sop_class_uid", "sop_instance_uid", "transfer_syntax")

    def __init__(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, data: bytes
    ) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax = transfer_syntax
        self.data = data


def read_part10(path: str) -> Part10:
    """Read a Part 10 file (PS3.10 7.1): file meta from group 0002, data set bytes as stored."""
    from pydicom.filereader import read_preamble

    with open(path, "rb") as handle:
        read_preamble(handle, force=False)
        meta = read_dataset(handle, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        offset = handle.tell()
        handle.seek(offset)
        data = handle.read()
    required = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    missing = [keyword for keyword in required if keyword not in meta]
    if missing:
        raise ValueError(f"{path}: file meta information lacks {', '.join(missing)}")
    return Part10(
        str(meta.MediaStorageSOPClassUID).rstrip("\0 "),
        str(meta.MediaStorageSOPInstanceUID).rstrip("\0 "),
        str(meta.TransferSyntaxUID).rstrip("\0 "),
        data,
    )
