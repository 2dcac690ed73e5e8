# Matching rules of PS3.4 C.2.2.2 and the hierarchy checks of C.4.1.2 / C.4.2.2: each rule in
# isolation, the SQL it becomes, and the same rules run through a real index.
from __future__ import annotations

import re
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.dicomio import decode_dataset, encode_dataset
from tests.workers.archive import archive_datasets
from workers.store.index import Index
from workers.store.matching import (
    PATIENT_ROOT,
    POSTGRESQL,
    SQLITE,
    Condition,
    Match,
    MatchKind,
    QueryError,
    condition_for,
    condition_sql,
    count_instances,
    element_values,
    glob_pattern,
    like_pattern,
    match_for,
    parse_identifier,
    select_instances,
)
from workers.store.schema import BY_KEYWORD, DERIVED, Level, record_from_bytes

PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"
ROOT = "1.2.826.0.1.3680043.8.498.77"
DERIVED_BY_KEYWORD = {d.keyword: d for d in DERIVED}


def identifier(level: str | None = "STUDY", **keys: object) -> Dataset:
    """A request identifier; values are not validated (queries carry ranges, wild cards)."""
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    return ds


# --- single values -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", "*", "**"])
@pytest.mark.parametrize("vr", ["PN", "UI", "DA", "TM", "IS", "CS"])
def test_universal_matching(vr, value):
    assert match_for(vr, value) is None


@pytest.mark.parametrize(
    ("vr", "value", "kind", "values"),
    [
        ("PN", "DOE^JOHN", MatchKind.SINGLE, ("DOE^JOHN",)),
        ("PN", " DOE* ", MatchKind.WILDCARD, ("DOE*",)),
        ("LO", "P?D", MatchKind.WILDCARD, ("P?D",)),
        ("IS", "1*", MatchKind.SINGLE, ("1*",)),
        ("UI", "1.2.3", MatchKind.UID_LIST, ("1.2.3",)),
        ("DA", "20200101", MatchKind.SINGLE, ("20200101",)),
        ("DA", "2020.01.01", MatchKind.SINGLE, ("20200101",)),
        ("DA", "20200101-20201231", MatchKind.RANGE, ("20200101", "20201231")),
        ("DA", "-20201231", MatchKind.RANGE, ("", "20201231")),
        ("DA", "20200101-", MatchKind.RANGE, ("20200101", "")),
        ("DA", "2020-2021", MatchKind.RANGE, ("20200000", "20219999")),
        ("DA", "2020-01-01", MatchKind.NOTHING, ()),
        ("DA", "-", MatchKind.NOTHING, ()),
        ("DA", "yesterday", MatchKind.NOTHING, ()),
        ("DA", "x-", MatchKind.NOTHING, ()),
        ("TM", "0830", MatchKind.SINGLE, ("083000.000000",)),
        ("TM", "08-12", MatchKind.RANGE, ("080000.000000", "129999.999999")),
        ("TM", "-1200", MatchKind.RANGE, ("", "120099.999999")),
        ("TM", "0800-", MatchKind.RANGE, ("080000.000000", "")),
        ("TM", "noon", MatchKind.NOTHING, ()),
        ("TM", "-", MatchKind.NOTHING, ()),
        ("TM", "08-x", MatchKind.NOTHING, ()),
    ],
)
def test_match_for(vr, value, kind, values):
    assert match_for(vr, value) == Match(kind, values)


def test_condition_for_merges_uid_lists_and_or_s_other_values():
    study = BY_KEYWORD["StudyInstanceUID"]
    condition = condition_for(study, ["1.2", "1.3", "1.2"])
    assert condition == Condition(study, (Match(MatchKind.UID_LIST, ("1.2", "1.3")),))
    name = BY_KEYWORD["PatientName"]
    condition = condition_for(name, ["DOE*", "SMITH^ANNA"])
    assert condition is not None
    assert [m.kind for m in condition.matches] == [MatchKind.WILDCARD, MatchKind.SINGLE]
    assert condition_for(name, ["DOE*", ""]) is None  # one universal value: all match
    assert condition_for(name, []) is None


def test_element_values():
    assert element_values(DataElement(0x0020000D, "UI", "1.2\\1.3")) == ["1.2", "1.3"]
    assert element_values(DataElement(0x00100010, "PN", ["A^B", "C"])) == ["A^B", "C"]
    assert element_values(DataElement(0x00100010, "PN", None)) == []
    assert element_values(DataElement(0x00081110, "SQ", [])) == []
    assert element_values(DataElement(0x00091001, "UN", b"ab ")) == ["ab"]
    assert element_values(DataElement(0x00080060, "CS", " CT ")) == ["CT"]


def test_raw_elements_of_implicit_and_mislabelled_identifiers():
    ds = identifier("STUDY", StudyInstanceUID="")
    ds.add_new(0x00091010, "LO", "private")
    implicit = decode_dataset(encode_dataset(ds, ImplicitVRLittleEndian), ImplicitVRLittleEndian)
    query = parse_identifier(implicit, STUDY_FIND)
    assert {key.tag: key.vr for key in query.keys}[0x00091010] == "UN"
    mislabelled = identifier(None, StudyInstanceUID="")
    mislabelled.add_new(0x00080052, "OB", b"STUDY ")  # a binary VR: converted by pydicom
    raw = decode_dataset(
        encode_dataset(mislabelled, ExplicitVRLittleEndian), ExplicitVRLittleEndian
    )
    assert parse_identifier(raw, STUDY_FIND).level is Level.STUDY


def test_retrieve_at_the_lowest_level_needs_every_unique_key():
    ds = identifier(
        "IMAGE",
        PatientID="P",
        StudyInstanceUID="1",
        SeriesInstanceUID="1.1",
        SOPInstanceUID=["1.1.1", "1.1.2"],
    )
    query = parse_identifier(ds, PATIENT_GET, retrieve=True)
    assert len(query.conditions) == 4


# --- wild cards as SQL -------------------------------------------------------------------------


def dicom_wildcard(pattern: str, value: str) -> bool:
    """Reference: `*` any run, `?` any one character, everything else literal, case-sensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


TEXT = st.text(alphabet="aB*?[]%_\\^ -", max_size=8)


@given(pattern=TEXT, value=st.text(alphabet="aBb[]%_\\^ -", max_size=8))
def test_glob_and_like_translations_match_like_dicom(pattern, value):
    expected = dicom_wildcard(pattern, value)
    with sqlite3.connect(":memory:") as db:
        (globbed,) = db.execute("SELECT ? GLOB ?", (value, glob_pattern(pattern))).fetchone()
        db.execute("PRAGMA case_sensitive_like = ON")
        (liked,) = db.execute(
            "SELECT ? LIKE ? ESCAPE '\\'", (value, like_pattern(pattern))
        ).fetchone()
    assert bool(globbed) is expected
    assert bool(liked) is expected


def test_dialects_write_their_own_sql():
    name = condition_for(BY_KEYWORD["PatientName"], ["DO_E*"])
    assert name is not None
    assert condition_sql(name, SQLITE) == ("(patient.patient_name GLOB ?)", ["DO_E*"])
    assert condition_sql(name, POSTGRESQL) == (
        "(patient.patient_name LIKE %s ESCAPE '\\')",
        ["DO\\_E%"],
    )
    assert POSTGRESQL.distinct_list("x") == "string_agg(DISTINCT x, ',')"
    nothing = Condition(BY_KEYWORD["StudyDate"], (Match(MatchKind.NOTHING, ()),))
    assert condition_sql(nothing, SQLITE) == ("(1 = 0)", [])
    modalities = condition_for(DERIVED_BY_KEYWORD["ModalitiesInStudy"], ["CT"])
    assert modalities is not None
    sql, params = condition_sql(modalities, POSTGRESQL)
    assert sql.startswith("EXISTS (SELECT 1 FROM series d WHERE d.study_ref = study.id")
    assert params == ["CT"]


def test_retrieve_statements():
    query = parse_identifier(
        identifier("STUDY", StudyInstanceUID=["1.2", "1.3"]), STUDY_MOVE, retrieve=True
    )
    assert "IN (?, ?)" in count_instances(query, SQLITE).sql
    select = select_instances(query, POSTGRESQL, after=5, limit=10)
    assert select.params == ["1.2", "1.3", 5, 10]
    assert select.sql.endswith("ORDER BY instance.id LIMIT %s")


# --- identifiers -> queries (hierarchy, PS3.4 C.4.1.2.1 / C.4.2.2.1) ---------------------------


@pytest.mark.parametrize(
    ("sop_class", "ds", "offending"),
    [
        ("1.2.3", identifier("STUDY"), None),
        (STUDY_FIND, identifier(None), 0x00080052),
        (STUDY_FIND, identifier("PATIENT"), 0x00080052),
        (STUDY_FIND, identifier("FRAME"), 0x00080052),
        (PATIENT_STUDY_ONLY_FIND, identifier("SERIES", PatientID="X"), 0x00080052),
        (PATIENT_FIND, identifier("STUDY"), 0x00100020),
        (STUDY_FIND, identifier("SERIES"), 0x0020000D),
        (STUDY_FIND, identifier("SERIES", StudyInstanceUID="1.2*"), 0x0020000D),
        (STUDY_FIND, identifier("IMAGE", StudyInstanceUID="1.2"), 0x0020000E),
        (STUDY_FIND, identifier("IMAGE", StudyInstanceUID="", SeriesInstanceUID="?"), 0x0020000E),
    ],
)
def test_identifiers_that_do_not_match_the_model(sop_class, ds, offending):
    with pytest.raises(QueryError) as raised:
        parse_identifier(ds, sop_class)
    assert raised.value.status == 0xA900
    assert raised.value.offending_element == offending
    assert raised.value.comment


def test_unique_keys_above_the_level_are_matched_as_dcmqrscp_matches_them():
    """dcmqrscp's hierarchicalCompare needs each higher unique key present and matches its
    value like any key's: empty is universal, a UID list matches any, a Patient ID may have
    a wild card (issue 14 item 1)."""
    query = parse_identifier(
        identifier("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="", SOPInstanceUID=""),
        STUDY_FIND,
    )
    assert query.level is Level.IMAGE
    assert [c.target.keyword for c in query.conditions] == ["StudyInstanceUID"]
    query = parse_identifier(identifier("SERIES", StudyInstanceUID=["1.2", "1.3"]), STUDY_FIND)
    assert query.conditions == (
        Condition(BY_KEYWORD["StudyInstanceUID"], (Match(MatchKind.UID_LIST, ("1.2", "1.3")),)),
    )
    query = parse_identifier(identifier("STUDY", PatientID="PID*"), PATIENT_FIND)
    assert query.conditions == (
        Condition(BY_KEYWORD["PatientID"], (Match(MatchKind.WILDCARD, ("PID*",)),)),
    )
    assert not parse_identifier(identifier("STUDY", PatientID=""), PATIENT_FIND).conditions


def test_relational_queries_may_leave_out_the_unique_keys_above_the_level():
    """PS3.4 C.4.1.2.2: with relational queries agreed, any level's keys at or above the query
    level may be given, and the unique keys above it may be missing."""
    ds = identifier("IMAGE", PatientName="DOE*", Modality="MR")
    with pytest.raises(QueryError):
        parse_identifier(ds, STUDY_FIND)
    query = parse_identifier(ds, STUDY_FIND, relational=True)
    assert query.level is Level.IMAGE
    assert {c.target.keyword for c in query.conditions} == {"PatientName", "Modality"}
    partial = identifier("SERIES", PatientID="PID001", StudyInstanceUID="1.2*")
    with pytest.raises(QueryError) as raised:  # a wild card in a UID still matches nothing
        parse_identifier(partial, PATIENT_FIND, relational=True)
    assert raised.value.offending_element == 0x0020000D
    with pytest.raises(QueryError):  # a retrieve still names what it retrieves
        parse_identifier(identifier("STUDY"), STUDY_MOVE, retrieve=True, relational=True)


def test_retrieve_needs_the_unique_key_of_its_own_level_and_allows_a_list():
    with pytest.raises(QueryError) as raised:
        parse_identifier(identifier("STUDY", StudyInstanceUID=""), STUDY_MOVE, retrieve=True)
    assert raised.value.offending_element == 0x0020000D
    assert "at the STUDY level" in raised.value.comment
    query = parse_identifier(
        identifier("IMAGE", StudyInstanceUID="", SeriesInstanceUID="", SOPInstanceUID="1.2.3"),
        STUDY_MOVE,
        retrieve=True,
    )
    assert [c.target.keyword for c in query.conditions] == ["SOPInstanceUID"]
    query = parse_identifier(
        identifier("STUDY", StudyInstanceUID=["1.2", "1.3"], PatientName="X*"),
        STUDY_MOVE,
        retrieve=True,
    )
    assert [c.target.keyword for c in query.conditions] == ["StudyInstanceUID"]
    with pytest.raises(QueryError):
        parse_identifier(
            identifier("SERIES", PatientID="X", StudyInstanceUID="1"), PATIENT_GET, retrieve=True
        )


def test_query_keys_conditions_and_what_is_ignored():
    ds = identifier(
        "STUDY",
        PatientName="DOE*",
        StudyDate="",
        SeriesInstanceUID="1.2.3",  # below the level: returned empty, not matched
        ModalitiesInStudy=["CT", "MR"],
        NumberOfStudyRelatedSeries="5",  # a derived count is never matched
        SpecificCharacterSet="ISO_IR 100",
    )
    ds.add_new(0x00080000, "UL", 10)  # a group length is skipped
    ds.add_new(0x00091010, "LO", "private")
    query = parse_identifier(ds, STUDY_FIND)
    assert query.model.name == "Study Root"
    assert query.level is Level.STUDY
    assert [c.target.keyword for c in query.conditions] == ["ModalitiesInStudy", "PatientName"]
    sources = {key.tag: key.source for key in query.keys}
    assert 0x00080005 not in sources
    assert 0x00080052 not in sources
    assert 0x00080000 not in sources
    assert sources[0x00091010] is None
    assert query.provides(BY_KEYWORD["PatientName"])
    assert not query.provides(BY_KEYWORD["SeriesInstanceUID"])
    assert not query.provides(None)
    assert PATIENT_ROOT.top is Level.PATIENT


# --- the rules through a real index ------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive_index(request, tmp_path_factory):
    """The archive indexed on each backend (the same SQL through both dialects)."""
    root = tmp_path_factory.mktemp("matching")
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres").new_schema()
    with Index.open(root, synchronous="OFF", database=database) as index:
        index.add_many(
            record_from_bytes(
                encode_dataset(ds, ExplicitVRLittleEndian),
                ExplicitVRLittleEndian,
                ds.SOPClassUID,
                ds.SOPInstanceUID,
                f"objects/{ds.SOPInstanceUID}.dcm",
            )
            for ds in archive_datasets()
        )
        yield index


def uids(index: Index, sop_class: str, ds: Dataset) -> set[str]:
    query = parse_identifier(ds, sop_class)
    keyword = {
        Level.PATIENT: "PatientID",
        Level.STUDY: "StudyInstanceUID",
        Level.SERIES: "SeriesInstanceUID",
        Level.IMAGE: "SOPInstanceUID",
    }[query.level]
    return {row[keyword] for row in index.find(query, page_size=4)}


def studies(*pairs: tuple[int, int]) -> set[str]:
    return {f"{ROOT}.{p}.{s}" for p, s in pairs}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, studies((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2))),
        ({"PatientName": "DOE^JANE"}, studies((2, 1), (2, 2))),
        ({"PatientName": "doe^jane"}, set()),  # case-sensitive, as dcmqrscp
        ({"PatientName": "DOE*"}, studies((1, 1), (1, 2), (2, 1), (2, 2))),
        ({"PatientName": "*A*N?"}, studies((2, 1), (2, 2), (3, 1), (3, 2))),
        ({"PatientName": "D[E*"}, set()),
        ({"StudyDate": "20200101-20201231"}, studies((1, 1), (1, 2), (2, 1))),
        ({"StudyDate": "-20200105"}, studies((1, 1), (3, 1))),
        ({"StudyDate": "20210101-"}, studies((2, 2), (3, 2))),
        ({"StudyDate": "20200610"}, studies((1, 2))),
        ({"StudyDate": "2020-2020"}, studies((1, 1), (1, 2), (2, 1))),
        ({"StudyDate": "bad"}, set()),
        ({"StudyTime": "1200-"}, studies((1, 2), (2, 1), (3, 1))),
        ({"StudyTime": "-0830"}, studies((1, 1), (2, 2))),
        ({"StudyTime": "12"}, studies((3, 1))),  # 12 is 12:00:00.000000, as in dcmqrscp
        ({"StudyTime": "120000"}, studies((3, 1))),
        ({"StudyDate": "2020-", "StudyTime": "-1000"}, studies((1, 1), (2, 2))),
        ({"StudyInstanceUID": [f"{ROOT}.1.2", f"{ROOT}.3.1", "9.9"]}, studies((1, 2), (3, 1))),
        ({"ModalitiesInStudy": "MR"}, studies((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2))),
        (
            {"ModalitiesInStudy": ["US", "C?"]},
            studies((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)),
        ),
        ({"ModalitiesInStudy": "US"}, set()),
        ({"AccessionNumber": "ACC3*", "PatientSex": "F"}, studies((3, 1), (3, 2))),
    ],
)
def test_study_level_matching(archive_index, keys, expected):
    keys = {"StudyInstanceUID": "", **keys}
    assert uids(archive_index, STUDY_FIND, identifier("STUDY", **keys)) == expected


def test_each_level_of_patient_root(archive_index):
    patients = uids(archive_index, PATIENT_FIND, identifier("PATIENT", PatientID="PID00?"))
    assert patients == {"PID001", "PID002", "PID003"}
    born = identifier("PATIENT", PatientBirthDate="-1970")  # through the end of 1970
    assert uids(archive_index, PATIENT_FIND, born) == {"PID001", "PID002"}
    found = uids(archive_index, PATIENT_FIND, identifier("STUDY", PatientID="PID002"))
    assert found == studies((2, 1), (2, 2))
    series = uids(
        archive_index,
        PATIENT_FIND,
        identifier("SERIES", PatientID="PID002", StudyInstanceUID=f"{ROOT}.2.1", Modality="MR"),
    )
    assert series == {f"{ROOT}.2.1.2"}
    images = uids(
        archive_index,
        PATIENT_FIND,
        identifier(
            "IMAGE",
            PatientID="PID002",
            StudyInstanceUID=f"{ROOT}.2.1",
            SeriesInstanceUID=f"{ROOT}.2.1.2",
            InstanceNumber="3",
        ),
    )
    assert images == {f"{ROOT}.2.1.2.3"}
    # a study of another patient does not match at SERIES level
    assert not uids(
        archive_index,
        PATIENT_FIND,
        identifier("SERIES", PatientID="PID001", StudyInstanceUID=f"{ROOT}.2.1"),
    )


def test_universal_unique_keys_above_the_level_match_every_entity(archive_index):
    """The query of issue 14 item 1: every image of a study, whatever its series."""
    ds = identifier(
        "IMAGE", StudyInstanceUID=f"{ROOT}.2.1", SeriesInstanceUID="", SOPInstanceUID=""
    )
    images = {f"{ROOT}.2.1.{series}.{n}" for series in (1, 2) for n in (1, 2, 3)}
    assert uids(archive_index, STUDY_FIND, ds) == images
    rows = archive_index.find(parse_identifier(ds, STUDY_FIND))
    assert {row["SeriesInstanceUID"] for row in rows} == {f"{ROOT}.2.1.1", f"{ROOT}.2.1.2"}
    every = identifier("SERIES", PatientID="", StudyInstanceUID="", SeriesInstanceUID="")
    assert len(uids(archive_index, PATIENT_FIND, every)) == 12
    listed = identifier("SERIES", StudyInstanceUID=[f"{ROOT}.1.1", f"{ROOT}.3.2"])
    assert uids(archive_index, STUDY_FIND, listed) == {
        f"{ROOT}.{study}.{series}" for study in ("1.1", "3.2") for series in (1, 2)
    }
    wild = identifier("STUDY", PatientID="PID00[13]*", StudyInstanceUID="")
    assert uids(archive_index, PATIENT_FIND, wild) == set()  # `[` is literal in DICOM
    wild = identifier("STUDY", PatientID="PID00?", StudyInstanceUID="")
    assert len(uids(archive_index, PATIENT_FIND, wild)) == 6


def test_relational_query_through_a_real_index(archive_index):
    ds = identifier("IMAGE", PatientName="DOE^JANE", Modality="MR", InstanceNumber="2")
    query = parse_identifier(ds, STUDY_FIND, relational=True)
    rows = list(archive_index.find(query))
    assert {row["SOPInstanceUID"] for row in rows} == {f"{ROOT}.2.1.2.2", f"{ROOT}.2.2.2.2"}
    assert {row["StudyInstanceUID"] for row in rows} == {f"{ROOT}.2.1", f"{ROOT}.2.2"}


def test_derived_keys_are_computed(archive_index):
    ds = identifier(
        "PATIENT",
        PatientID="PID003",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
    )
    (row,) = archive_index.find(parse_identifier(ds, PATIENT_FIND))
    assert (
        row["NumberOfPatientRelatedStudies"],
        row["NumberOfPatientRelatedSeries"],
        row["NumberOfPatientRelatedInstances"],
    ) == (2, 4, 12)
    ds = identifier(
        "STUDY",
        StudyInstanceUID=f"{ROOT}.1.1",
        ModalitiesInStudy="",
        SOPClassesInStudy="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
    )
    (row,) = archive_index.find(parse_identifier(ds, STUDY_FIND))
    assert sorted(row["ModalitiesInStudy"].split(",")) == ["CT", "MR"]
    assert len(row["SOPClassesInStudy"].split(",")) == 2
    assert (row["NumberOfStudyRelatedSeries"], row["NumberOfStudyRelatedInstances"]) == (2, 6)
    ds = identifier("SERIES", StudyInstanceUID=f"{ROOT}.1.1", NumberOfSeriesRelatedInstances="")
    rows = list(archive_index.find(parse_identifier(ds, STUDY_FIND)))
    assert [r["NumberOfSeriesRelatedInstances"] for r in rows] == [3, 3]
