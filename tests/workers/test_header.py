# The raw header scanner must agree with pydicom on every data set it accepts, and decline
# (return None) the ones it cannot read simply.
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from workers.store import header
from workers.store.schema import FROM_DATASET, LAST_TAG, record_from_bytes

WANTED = frozenset(a.tag for a in FROM_DATASET)
TAGS = {a.tag: a.keyword for a in FROM_DATASET}


def encode(ds: Dataset, *, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit
    buffer.is_little_endian = True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def sample(name: str = "DOE^JOHN", charset: str | None = None) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyDate = "20240102"
    ds.Modality = "CT"
    ds.PatientName = name
    ds.PatientID = "PID1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SeriesNumber = "7"
    ds.InstanceNumber = "12"
    return ds


@pytest.mark.parametrize("implicit", [True, False])
def test_agrees_with_pydicom_including_sequences_of_undefined_length(implicit: bool):
    ds = sample()
    item = Dataset()
    item.CodeValue = "X"
    inner = Dataset()
    inner.CodeMeaning = "nested"
    item.ConceptCodeSequence = Sequence([inner])
    ds.ProcedureCodeSequence = Sequence([item, Dataset()])  # (0008,1032), before the UIDs
    ds.ProcedureCodeSequence.is_undefined_length = True
    for each in ds.ProcedureCodeSequence:
        each.is_undefined_length_sequence_item = True
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    data = encode(ds, implicit=implicit)
    found = header.scan(data, not implicit, WANTED, LAST_TAG)
    assert found is not None
    values = header.texts(found, TAGS)
    assert values is not None
    assert values["PatientName"] == "DOE^JOHN"
    assert values["SeriesInstanceUID"] == "1.2.3.4"
    assert values["InstanceNumber"] == "12"


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(
        st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\\"), max_size=20
    ),
    implicit=st.booleans(),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192"]),
)
def test_record_values_equal_the_pydicom_path(name: str, implicit: bool, charset: str | None):
    if charset is None and any(ord(c) > 127 for c in name):
        charset = "ISO_IR 192"
    if charset == "ISO_IR 100" and any(ord(c) > 255 for c in name):
        charset = "ISO_IR 192"
    ds = sample(name, charset)
    data = encode(ds, implicit=implicit)
    syntax = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    fast = record_from_bytes(data, syntax, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "")
    fallback = header.scan  # force the pydicom path by making the scanner decline
    try:
        header.scan = lambda *args, **kwargs: None
        slow = record_from_bytes(data, syntax, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "")
    finally:
        header.scan = fallback
    assert fast.values == slow.values


def test_declines_what_it_cannot_read_simply():
    data = encode(sample(charset="ISO_IR 144"), implicit=False)
    found = header.scan(data, True, WANTED, LAST_TAG)
    assert found is not None
    assert header.texts(found, TAGS) is None  # Cyrillic: pydicom decodes that
    truncated = encode(sample(), implicit=False)[:-3]
    assert header.scan(truncated, True, WANTED, LAST_TAG) is None
    implicit_data = encode(sample(), implicit=True)
    assert header.scan(implicit_data, True, WANTED, LAST_TAG) is None  # claimed explicit
    assert header.scan(b"\x08\x00\x18\x00UI\x04\x001.2\x00" * 2, True, WANTED, LAST_TAG) is None
