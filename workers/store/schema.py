# What the index knows about a stored object: the Query/Retrieve levels, the attributes kept
# per level (PS3.4 C.6.1.1 / C.6.2.1 key tables), and the InstanceRecord extracted from a data
# set's header when it is stored or when the index is rebuilt.
#
# Rules: one table of attributes drives the SQL schema, the record extraction, the matching
# and the C-FIND identifiers, so they cannot drift apart. Values are kept as trimmed text
# (PS3.4 C.2.2.2: leading and trailing spaces are not significant), dates as YYYYMMDD, times
# with a sortable companion key. Pixel data is never parsed: reading stops after the last
# attribute the index needs.
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from workers.store import header

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import BinaryIO

    from pydicom.dataset import Dataset


class Level(IntEnum):
    """Query/Retrieve levels, top to bottom (PS3.4 C.3)."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3


#: The table holding each level's entities, and the column pointing at the parent entity.
TABLES: Final = {
    Level.PATIENT: "patient",
    Level.STUDY: "study",
    Level.SERIES: "series",
    Level.IMAGE: "instance",
}
PARENT_COLUMN: Final = {
    Level.STUDY: "patient_ref",
    Level.SERIES: "study_ref",
    Level.IMAGE: "series_ref",
}


@dataclass(frozen=True, slots=True)
class Attribute:
    """One indexed attribute: where it lives (level, column) and how it is matched (VR)."""

    keyword: str
    tag: int
    vr: str
    level: Level
    column: str
    unique: bool = False

    @property
    def table(self) -> str:
        return TABLES[self.level]

    @property
    def sort_column(self) -> str:
        """The column range matching compares (times get a zero-padded companion)."""
        return f"{self.column}_key" if self.vr == "TM" else self.column


#: Attributes stored per level (the Required, Unique and common Optional keys of PS3.4 C.6).
ATTRIBUTES: Final[tuple[Attribute, ...]] = (
    Attribute("PatientID", 0x00100020, "LO", Level.PATIENT, "patient_id", unique=True),
    Attribute("PatientName", 0x00100010, "PN", Level.PATIENT, "patient_name"),
    Attribute("IssuerOfPatientID", 0x00100021, "LO", Level.PATIENT, "issuer_of_patient_id"),
    Attribute("PatientBirthDate", 0x00100030, "DA", Level.PATIENT, "patient_birth_date"),
    Attribute("PatientSex", 0x00100040, "CS", Level.PATIENT, "patient_sex"),
    Attribute("StudyInstanceUID", 0x0020000D, "UI", Level.STUDY, "study_uid", unique=True),
    Attribute("StudyDate", 0x00080020, "DA", Level.STUDY, "study_date"),
    Attribute("StudyTime", 0x00080030, "TM", Level.STUDY, "study_time"),
    Attribute("AccessionNumber", 0x00080050, "SH", Level.STUDY, "accession_number"),
    Attribute("StudyID", 0x00200010, "SH", Level.STUDY, "study_id"),
    Attribute("StudyDescription", 0x00081030, "LO", Level.STUDY, "study_description"),
    Attribute("ReferringPhysicianName", 0x00080090, "PN", Level.STUDY, "referring_physician"),
    Attribute("PatientAge", 0x00101010, "AS", Level.STUDY, "patient_age"),
    Attribute("SeriesInstanceUID", 0x0020000E, "UI", Level.SERIES, "series_uid", unique=True),
    Attribute("Modality", 0x00080060, "CS", Level.SERIES, "modality"),
    Attribute("SeriesNumber", 0x00200011, "IS", Level.SERIES, "series_number"),
    Attribute("SeriesDescription", 0x0008103E, "LO", Level.SERIES, "series_description"),
    Attribute("SeriesDate", 0x00080021, "DA", Level.SERIES, "series_date"),
    Attribute("BodyPartExamined", 0x00180015, "CS", Level.SERIES, "body_part"),
    Attribute("SOPInstanceUID", 0x00080018, "UI", Level.IMAGE, "sop_instance_uid", unique=True),
    Attribute("SOPClassUID", 0x00080016, "UI", Level.IMAGE, "sop_class_uid"),
    Attribute("InstanceNumber", 0x00200013, "IS", Level.IMAGE, "instance_number"),
    Attribute("AvailableTransferSyntaxUID", 0x00083002, "UI", Level.IMAGE, "transfer_syntax_uid"),
)
BY_KEYWORD: Final = {a.keyword: a for a in ATTRIBUTES}
BY_TAG: Final = {a.tag: a for a in ATTRIBUTES}
UNIQUE_KEYS: Final = {a.level: a for a in ATTRIBUTES if a.unique}
#: Attributes read from the data set itself (the transfer syntax comes from the file meta).
FROM_DATASET: Final = tuple(a for a in ATTRIBUTES if a.keyword != "AvailableTransferSyntaxUID")
#: Reading a header stops after this tag (the highest one the index needs).
LAST_TAG: Final = max(a.tag for a in FROM_DATASET)


@dataclass(frozen=True, slots=True)
class DerivedKey:
    """A key computed from the index rather than stored (PS3.4 C.6.1.1.x counts and lists)."""

    keyword: str
    tag: int
    vr: str
    level: Level


DERIVED: Final[tuple[DerivedKey, ...]] = (
    DerivedKey("NumberOfPatientRelatedStudies", 0x00201200, "IS", Level.PATIENT),
    DerivedKey("NumberOfPatientRelatedSeries", 0x00201202, "IS", Level.PATIENT),
    DerivedKey("NumberOfPatientRelatedInstances", 0x00201204, "IS", Level.PATIENT),
    DerivedKey("ModalitiesInStudy", 0x00080061, "CS", Level.STUDY),
    DerivedKey("SOPClassesInStudy", 0x00080062, "UI", Level.STUDY),
    DerivedKey("NumberOfStudyRelatedSeries", 0x00201206, "IS", Level.STUDY),
    DerivedKey("NumberOfStudyRelatedInstances", 0x00201208, "IS", Level.STUDY),
    DerivedKey("NumberOfSeriesRelatedInstances", 0x00201209, "IS", Level.SERIES),
    # Same value for every match; their level is the lowest so that any query may ask.
    DerivedKey("RetrieveAETitle", 0x00080054, "AE", Level.PATIENT),
    DerivedKey("InstanceAvailability", 0x00080056, "CS", Level.PATIENT),
)
DERIVED_BY_TAG: Final = {d.tag: d for d in DERIVED}


# --- value normalisation (PS3.5 6.2 value formats) ---------------------------------------------


def normalize_date(value: str) -> str:
    """YYYYMMDD from a DA value (the ACR-NEMA form YYYY.MM.DD is accepted)."""
    return value.strip().replace(".", "")


def time_key(value: str, *, fill: str = "0") -> str:
    """A fixed-width, sortable HHMMSS.FFFFFF form of a TM value; `fill` pads missing digits
    ("0" for a value or a lower bound, "9" for an upper bound, which then covers its whole
    precision). '' for an empty value."""
    value = value.strip().replace(":", "")
    if not value:
        return ""
    whole, _, fraction = value.partition(".")
    return f"{whole[:6].ljust(6, fill)}.{fraction[:6].ljust(6, fill)}"


def text_of(value: Any) -> str:
    """An element value as the index stores it: text, multiple values joined by a backslash."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(item).strip() for item in value)
    return str(value).strip(" \0")


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One stored SOP instance as the index sees it (PS3.4 C.6 key attributes)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    #: The file's path relative to the data directory (as written by FileStore).
    path: str
    #: keyword -> text, for the attributes of ATTRIBUTES read from the data set.
    values: Mapping[str, str] = field(default_factory=dict)
    #: Bytes of the data set (the file without preamble and file meta).
    size: int = 0

    def value(self, keyword: str) -> str:
        return self.values.get(keyword, "")

    def columns(self, level: Level) -> dict[str, str]:
        """Column -> value for one level's table (times also get their sort key)."""
        columns: dict[str, str] = {}
        for attribute in ATTRIBUTES:
            if attribute.level is not level:
                continue
            if attribute.keyword == "SOPInstanceUID":
                value = self.sop_instance_uid
            elif attribute.keyword == "SOPClassUID":
                value = self.sop_class_uid
            elif attribute.keyword == "AvailableTransferSyntaxUID":
                value = self.transfer_syntax_uid
            else:
                value = self.value(attribute.keyword)
            columns[attribute.column] = value
            if attribute.vr == "TM":
                columns[attribute.sort_column] = time_key(value)
        return columns


def record_from_dataset(
    dataset: Dataset,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    path: str,
    size: int = 0,
) -> InstanceRecord:
    """The record of a parsed data set header (the SOP and transfer syntax UIDs are those of
    the C-STORE request / file meta, which name the stored file)."""
    values: dict[str, str] = {}
    for attribute in FROM_DATASET:
        element = dataset.get(attribute.tag)
        text = text_of(element.value) if element is not None else ""
        values[attribute.keyword] = normalize_date(text) if attribute.vr == "DA" else text
    return InstanceRecord(sop_instance_uid, sop_class_uid, transfer_syntax_uid, path, values, size)


_FAST_TAGS: Final = {attribute.tag: attribute.keyword for attribute in FROM_DATASET}
_FAST_WANTED: Final = frozenset(_FAST_TAGS)
_DATE_KEYWORDS: Final = frozenset(a.keyword for a in FROM_DATASET if a.vr == "DA")


def _fast_values(data: bytes, explicit: bool) -> dict[str, str] | None:
    """The indexed values by the raw scanner (workers.store.header), or None: use pydicom."""
    found = header.scan(data, explicit, _FAST_WANTED, LAST_TAG)
    if found is None:
        return None
    values = header.texts(found, _FAST_TAGS)
    if values is None:
        return None
    for keyword in _DATE_KEYWORDS:
        values[keyword] = normalize_date(values[keyword])
    return values


def _stop(tag: int, vr: str | None, length: int) -> bool:
    return tag > LAST_TAG


def _encoding(transfer_syntax_uid: str) -> tuple[bool, bool]:
    uid = UID(transfer_syntax_uid)
    if uid.is_transfer_syntax:
        return bool(uid.is_implicit_VR), bool(uid.is_little_endian)
    return False, True


def record_from_bytes(
    data: bytes, transfer_syntax_uid: str, sop_class_uid: str, sop_instance_uid: str, path: str
) -> InstanceRecord:
    """The record of data set bytes as received with `transfer_syntax_uid` (PS3.5 10)."""
    size = len(data)
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    implicit, little = _encoding(transfer_syntax_uid)
    if little and transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
        fast = _fast_values(data, not implicit)
        if fast is not None:
            return InstanceRecord(
                sop_instance_uid, sop_class_uid, transfer_syntax_uid, path, fast, size
            )
    dataset = read_dataset(DicomBytesIO(data), implicit, little, stop_when=_stop)  # type: ignore[arg-type]
    return record_from_dataset(
        dataset,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        path=path,
        size=size,
    )


#: How much of a spooled data set record_from_spool reads to find the indexed attributes.
SPOOL_HEAD = 64 << 10


def record_from_spool(
    path: Path, offset: int, transfer_syntax_uid: str, sop_class_uid: str, sop_instance_uid: str
) -> InstanceRecord:
    """The record of a spool (a Part 10 file whose data set starts at `offset`, its meta
    written from the request): the raw scanner over the data set's first SPOOL_HEAD bytes,
    or pydicom over the file when those do not hold every indexed attribute."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size - offset
        handle.seek(offset)
        head = handle.read(min(size, SPOOL_HEAD))
    implicit, little = _encoding(transfer_syntax_uid)
    if little and transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
        fast = _fast_values(head, not implicit)
        if fast is not None:
            return InstanceRecord(
                sop_instance_uid, sop_class_uid, transfer_syntax_uid, "", fast, size
            )
    return record_from_file(path, path.parent)


def record_from_file(path: Path, root: Path) -> InstanceRecord:
    """The record of a stored Part 10 file (PS3.10 7.1): the file meta group, then the data
    set header up to the last indexed attribute (the rest of the file is not read)."""
    with path.open("rb") as handle:
        return record_from_part10(
            handle, path.stat().st_size, path.relative_to(root).as_posix(), str(path)
        )


def record_from_part10(handle: BinaryIO, file_size: int, path: str, name: str) -> InstanceRecord:
    """The record of a Part 10 file read from `handle` (at its start; a file, or the bytes of
    an object in a bucket): `file_size` is the whole file's, `path` the row's, `name` for
    messages."""
    read_preamble(handle, force=False)
    meta = read_dataset(handle, False, True, stop_when=_not_meta)
    syntax = text_of(meta.get("TransferSyntaxUID", ""))
    sop_class = text_of(meta.get("MediaStorageSOPClassUID", ""))
    sop_instance = text_of(meta.get("MediaStorageSOPInstanceUID", ""))
    if not (syntax and sop_class and sop_instance):
        raise ValueError(f"{name}: file meta information is incomplete")
    size = file_size - handle.tell()
    if syntax == DeflatedExplicitVRLittleEndian:
        header = zlib.decompressobj(-zlib.MAX_WBITS).decompress(handle.read())
        stream: Any = DicomBytesIO(header)
    else:
        stream = handle
    implicit, little = _encoding(syntax)
    dataset = read_dataset(stream, implicit, little, stop_when=_stop)
    return record_from_dataset(
        dataset,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=syntax,
        path=path,
        size=size,
    )


def _not_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2
