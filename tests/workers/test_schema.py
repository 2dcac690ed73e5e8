# The index record: what is read from a data set header (and what is not), value normalisation.
from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.dicomio import encode_dataset
from tests.workers.archive import archive_dataset
from workers.store.schema import (
    ATTRIBUTES,
    LAST_TAG,
    InstanceRecord,
    Level,
    normalize_date,
    record_from_bytes,
    record_from_file,
    text_of,
    time_key,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_every_level_has_one_unique_key_and_columns_are_distinct():
    for level in Level:
        assert sum(1 for a in ATTRIBUTES if a.level is level and a.unique) == 1
    columns = [(a.table, a.column) for a in ATTRIBUTES]
    assert len(columns) == len(set(columns))
    assert LAST_TAG < 0x7FE00010


@pytest.mark.parametrize(
    ("value", "fill", "expected"),
    [
        ("", "0", ""),
        ("08", "0", "080000.000000"),
        ("0830", "0", "083000.000000"),
        ("083000.5", "0", "083000.500000"),
        ("08:30:00", "0", "083000.000000"),
        ("12", "9", "129999.999999"),
        ("1200", "9", "120099.999999"),
        (" 235959.123456789 ", "0", "235959.123456"),
    ],
)
def test_time_key(value, fill, expected):
    assert time_key(value, fill=fill) == expected


@given(st.times())
def test_time_key_orders_like_the_times(moment):
    text = moment.strftime("%H%M%S.%f")
    later = moment.replace(microsecond=min(moment.microsecond + 1, 999999))
    assert time_key(text) <= time_key(later.strftime("%H%M%S.%f"))
    assert (
        time_key(moment.strftime("%H%M"))
        <= time_key(text)
        <= time_key(moment.strftime("%H%M"), fill="9")
    )


def test_normalize_date_and_text_of():
    assert normalize_date(" 2020.01.31 ") == "20200131"
    assert text_of(None) == ""
    assert text_of(MultiValue(str, ["CT ", "MR"])) == "CT\\MR"
    assert text_of("1.2.3\0") == "1.2.3"
    assert text_of(7) == "7"


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_record_from_bytes_in_every_uncompressed_syntax(syntax):
    ds = archive_dataset(2, 1, 2, 3)
    data = encode_dataset(ds, syntax)
    record = record_from_bytes(data, syntax, CT, "9.9.9", "objects/a.dcm")
    assert record.sop_instance_uid == "9.9.9"  # the command's UIDs name the stored object
    assert record.sop_class_uid == CT
    assert record.transfer_syntax_uid == syntax
    assert record.size == len(data)
    assert record.value("PatientName") == "DOE^JANE"
    assert record.value("PatientID") == "PID002"
    assert record.value("StudyTime") == "235959"
    assert record.value("Modality") == "MR"
    assert record.value("SeriesNumber") == "2"
    assert record.value("InstanceNumber") == "3"
    assert record.value("StudyInstanceUID") == ds.StudyInstanceUID


def test_record_from_bytes_in_an_unknown_syntax_reads_explicit_little_endian():
    ds = archive_dataset(1, 1, 1, 1)
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    record = record_from_bytes(data, "1.2.3.4.5", CT, "1.2", "p")
    assert record.value("PatientName") == "DOE^JOHN"


def test_record_reading_stops_before_pixel_data():
    ds = archive_dataset(1, 1, 1, 1)
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    start = data.index(b"\xe0\x7f\x10\x00")
    broken = data[:start] + b"\xe0\x7f\x10\x00OW\0\0\xff\xff\xff\x7f" + b"x" * 10
    record = record_from_bytes(broken, ExplicitVRLittleEndian, CT, "1.2", "p")
    assert record.value("InstanceNumber") == "1"


def test_record_columns_per_level():
    record = InstanceRecord(
        "1.2.3",
        CT,
        ExplicitVRLittleEndian,
        "p",
        {"StudyTime": "0830", "StudyDate": "20200101", "PatientID": "X"},
    )
    study = record.columns(Level.STUDY)
    assert study["study_time"] == "0830"
    assert study["study_time_key"] == "083000.000000"
    assert study["study_date"] == "20200101"
    assert record.columns(Level.PATIENT)["patient_id"] == "X"
    image = record.columns(Level.IMAGE)
    assert image == {
        "sop_instance_uid": "1.2.3",
        "sop_class_uid": CT,
        "instance_number": "",
        "transfer_syntax_uid": ExplicitVRLittleEndian,
    }


def test_record_from_file(tmp_path):
    ds = archive_dataset(3, 2, 1, 2)
    path = tmp_path / "objects" / "x.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    record = record_from_file(path, tmp_path)
    assert record.path == "objects/x.dcm"
    assert record.sop_instance_uid == ds.SOPInstanceUID
    assert record.transfer_syntax_uid == ExplicitVRLittleEndian
    assert record.value("StudyDate") == "20220202"
    assert 0 < record.size < path.stat().st_size


def test_record_from_deflated_file(tmp_path):
    ds = archive_dataset(1, 2, 2, 1)
    data = encode_dataset(ds, DeflatedExplicitVRLittleEndian)
    from node.part10 import file_meta

    path = tmp_path / "d.dcm"
    path.write_bytes(
        file_meta(CT, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian, "1.2", "X", "") + data
    )
    record = record_from_file(path, tmp_path)
    assert record.value("StudyTime") == "141500.5"
    assert zlib.decompress(data, -zlib.MAX_WBITS)  # really deflated


def test_record_from_file_with_incomplete_meta(tmp_path):
    path = tmp_path / "bare.dcm"
    version = struct.pack("<HH2s2xI", 2, 1, b"OB", 2) + b"\0\1"
    path.write_bytes(
        bytes(128) + b"DICM" + version + encode_dataset(Dataset(), "1.2.840.10008.1.2")
    )
    with pytest.raises(ValueError, match="file meta"):
        record_from_file(path, tmp_path)


def test_record_from_a_file_that_is_not_part10(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not dicom" * 30)
    with pytest.raises(InvalidDicomError):
        record_from_file(path, tmp_path)
