# The index: add, replace (same SOP Instance UID), remove, rebuild from the files on disk, the
# `dicomnode index rebuild` command, concurrent writers and database failures.
from __future__ import annotations

import sqlite3
import threading

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from node import cli
from node.dicomio import encode_dataset
from tests.synthetic import PATIENCE
from tests.workers.archive import archive_dataset, archive_datasets
from workers.store.files import FileStore, StoredObject
from workers.store.index import (
    INDEX_FILE,
    Index,
    IndexDatabaseError,
    IndexedFileStore,
    SQLiteBackend,
)
from workers.store.matching import parse_identifier
from workers.store.schema import InstanceRecord

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def record(
    sop: str = "1.1.1.1",
    *,
    patient: str = "P1",
    study: str = "1.1",
    series: str = "1.1.1",
    path: str | None = None,
    **values: str,
) -> InstanceRecord:
    return InstanceRecord(
        sop,
        CT,
        ExplicitVRLittleEndian,
        path or f"objects/{sop}.dcm",
        {
            "PatientID": patient,
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series,
            **values,
        },
    )


@pytest.fixture
def index(open_index):
    """An index on each backend (SQLite, PostgreSQL: see conftest.open_index)."""
    return open_index(synchronous="OFF")


def study_row(index: Index, study: str) -> dict[str, object]:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    rows = list(index.find(parse_identifier(ds, STUDY_FIND)))
    assert len(rows) == 1
    return rows[0]


def store(data_dir, ds) -> tuple[FileStore, StoredObject]:
    files = FileStore(data_dir, fsync=False)
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    return files, files.store(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)


# --- add / replace / remove --------------------------------------------------------------------


def test_add_builds_the_hierarchy(index):
    for n in range(3):
        assert index.add(record(f"1.1.1.{n}", StudyDescription="CHEST")) is False
    index.add(record("1.2.1.1", study="1.2", series="1.2.1"))
    index.add(record("2.1.1.1", patient="P2", study="2.1", series="2.1.1"))
    assert index.counts() == {"patient": 2, "study": 3, "series": 3, "instance": 5}


def test_an_unchanged_patient_study_and_series_are_read_not_rewritten(tmp_path):
    with Index.open(tmp_path) as index:
        backend = index.backend
        assert isinstance(backend, SQLiteBackend)
        index.add(record("1.1.1.1", StudyDescription="CHEST"))
        written: list[str] = []
        with backend.connection() as connection:
            connection.set_trace_callback(written.append)
        try:
            index.add(record("1.1.1.2", StudyDescription="CHEST"))  # same hierarchy
            index.add(record("1.1.1.3", StudyDescription=""))  # empty: keeps CHEST
        finally:
            with backend.connection() as connection:
                connection.set_trace_callback(None)
        upserts = [s.split()[2] for s in written if s.startswith("INSERT INTO")]
        assert upserts == ["instance", "study_activity"] * 2
        index.add(record("1.1.1.4", StudyDescription="HEAD"))  # a change is written
        assert study_row(index, "1.1")["StudyDescription"] == "HEAD"
        assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 4}


def test_sqlite_index_is_a_wal_file_in_the_data_directory(tmp_path):
    with Index.open(tmp_path) as index:
        assert (tmp_path / INDEX_FILE).is_file()
        assert index.backend.fetch("PRAGMA journal_mode") == [("wal",)]


def test_only_instances_with_a_study_stamp_study_activity(index):
    index.add(record("1.1.1.1", study="", series="1.1.1"))
    assert index.backend.fetch("SELECT COUNT(*) FROM study_activity") == [(0,)]
    index.add(record("1.1.1.2", study="1.1", series="1.1.2"))
    assert index.backend.fetch("SELECT study_uid, stable_fired FROM study_activity") == [("1.1", 0)]


def test_stored_instances_looks_up_many_uids(index):
    index.add_many(record(f"1.1.1.{n}", path=f"objects/{n}.dcm") for n in range(250))
    wanted = [f"1.1.1.{n}" for n in range(0, 250, 2)] + ["9.9.9", "1.1.1.0"]
    found = index.stored_instances(wanted)
    assert set(found) == {f"1.1.1.{n}" for n in range(0, 250, 2)}
    assert found["1.1.1.4"].path == index.root / "objects/4.dcm"
    assert found["1.1.1.4"].sop_class_uid == CT
    assert index.stored_instances([]) == {}


def test_same_sop_instance_replaces_and_keeps_non_empty_values(index):
    index.add(record(StudyDescription="FIRST", AccessionNumber="A1"))
    replaced = index.add(record(StudyDescription="SECOND", AccessionNumber=""))
    assert replaced is True
    assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    row = study_row(index, "1.1")
    assert row["StudyDescription"] == "SECOND"
    assert row["AccessionNumber"] == "A1"  # an empty value does not wipe a known one


def test_replace_into_another_study_prunes_and_deletes_the_old_file(index, tmp_path):
    old = tmp_path / "objects" / "old.dcm"
    new = tmp_path / "objects" / "new.dcm"
    old.parent.mkdir()
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    index.add(record("9.9", patient="P1", study="1.1", series="1.1.1", path="objects/old.dcm"))
    index.add(record("9.9", patient="P2", study="2.1", series="2.1.1", path="objects/new.dcm"))
    assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    assert not old.exists()
    assert new.read_bytes() == b"new"
    assert study_row(index, "2.1")["PatientID"] == "P2"


def test_a_study_moving_to_another_patient_takes_its_series_along(index):
    index.add(record("1", patient="P1", study="1.1", series="1.1.1"))
    index.add(record("2", patient="P1", study="1.1", series="1.1.2"))
    index.add(record("2", patient="P9", study="1.1", series="1.1.2"))  # corrected patient
    assert study_row(index, "1.1")["PatientID"] == "P9"
    assert index.counts() == {"patient": 1, "study": 1, "series": 2, "instance": 2}


def test_a_series_moving_to_another_study_prunes_the_old_study(index):
    index.add(record("1", study="1.1", series="1.1.1"))
    index.add(record("1", study="1.2", series="1.1.1"))  # same series, new study
    assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}


def test_remove(index):
    index.add(record("1", study="1.1", series="1.1.1"))
    index.add(record("2", study="1.1", series="1.1.2"))
    assert index.remove("1") is True
    assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    assert index.remove("2") is True
    assert index.counts() == {"patient": 0, "study": 0, "series": 0, "instance": 0}
    assert index.remove("2") is False


def test_add_many_in_one_transaction(index, tmp_path):
    stale = tmp_path / "objects" / "a.dcm"
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    index.add(record("1", path="objects/a.dcm"))
    count = index.add_many(record(str(n), path=f"objects/{n}b.dcm") for n in range(1, 5))
    assert count == 4
    assert not stale.exists()
    assert index.counts()["instance"] == 4


def test_find_pages_through_results(index):
    index.add_many(record(f"{n}.1.1", study=f"{n}.1", series=f"{n}.1.1") for n in range(1, 7))
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    query = parse_identifier(ds, STUDY_FIND)
    for page_size in (1, 3, 4, 100):
        found = [row["StudyInstanceUID"] for row in index.find(query, page_size=page_size)]
        assert found == [f"{n}.1" for n in range(1, 7)]


def test_add_stored_outside_the_root_keeps_an_absolute_path(index, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    ds = archive_dataset(1, 1, 1, 1)
    _, stored = store(elsewhere, ds)
    data = encode_dataset(ds, ExplicitVRLittleEndian)
    index.add_stored(stored.path, data, ExplicitVRLittleEndian, CT, ds.SOPInstanceUID)
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ds.StudyInstanceUID
    (found,) = index.instances(parse_identifier(ident, STUDY_FIND, retrieve=True))
    assert found.path == stored.path


# --- concurrency and failures ------------------------------------------------------------------


def test_concurrent_writers_from_separate_connections(open_index, tmp_path):
    open_index()
    errors: list[BaseException] = []
    indexes = [open_index(synchronous="NORMAL") for _ in range(4)]

    def writer(worker: int) -> None:
        try:
            own = indexes[worker]
            for n in range(20):
                own.add(record(f"{worker}.{n}", study=f"{worker}.1", series=f"{worker}.1.1"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert not errors
    assert open_index().counts() == {"patient": 1, "study": 4, "series": 4, "instance": 80}


def test_a_writer_that_waits_too_long_gets_an_index_error(tmp_path):
    with Index.open(tmp_path) as index:
        impatient = Index(SQLiteBackend(tmp_path / INDEX_FILE, timeout=0.05), tmp_path)
        other = sqlite3.connect(tmp_path / INDEX_FILE, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(IndexDatabaseError, match="locked"):
                impatient.add(record())
        finally:
            other.execute("ROLLBACK")
            other.close()
            impatient.close()
        assert index.add(record()) is False


def test_an_exception_inside_a_transaction_rolls_back(index):
    def half_done() -> None:
        with index.backend.transaction() as cursor:
            cursor.execute("INSERT INTO meta (name, value) VALUES ('x', 'y')")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        half_done()
    assert index.backend.fetch("SELECT * FROM meta WHERE name = 'x'") == []


def test_a_database_error_inside_a_transaction_rolls_back(index):
    def broken() -> None:
        with index.backend.transaction() as cursor:
            cursor.execute("INSERT INTO meta (name, value) VALUES ('x', 'y')")
            cursor.execute("INSERT INTO meta (name, value) VALUES ('x', 'again')")

    with pytest.raises(IndexDatabaseError, match=r"(?i)unique"):
        broken()
    assert index.backend.fetch("SELECT * FROM meta WHERE name = 'x'") == []


def test_instances_page_through_results(index):
    index.add_many(record(f"1.1.1.{n}") for n in range(7))
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = "1.1"
    ds.SeriesInstanceUID = "1.1.1"
    query = parse_identifier(ds, "1.2.840.10008.5.1.4.1.2.2.3", retrieve=True)
    assert index.count_instances(query) == 7
    found = [i.sop_instance_uid for i in index.instances(query, page_size=3)]
    assert found == [f"1.1.1.{n}" for n in range(7)]


def test_read_errors_and_closed_index(index):
    with pytest.raises(IndexDatabaseError, match="read failed"):
        index.backend.fetch("SELECT nothing FROM nowhere")
    index.close()
    with pytest.raises(IndexDatabaseError, match="closed"):
        index.add(record())


def test_an_index_that_cannot_be_opened(tmp_path):
    (tmp_path / INDEX_FILE).mkdir()
    with pytest.raises(IndexDatabaseError, match="cannot open"):
        Index.open(tmp_path)


def test_schema_version_mismatch(open_index):
    with open_index().backend.transaction() as cursor:
        cursor.execute("UPDATE meta SET value = '0' WHERE name = 'schema_version'")
    with pytest.raises(IndexDatabaseError, match="schema version 0"):
        open_index()


def test_synchronous_must_be_a_sqlite_level(tmp_path):
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteBackend(tmp_path / "x", synchronous="SOMETIMES")


def test_indexed_file_store_opens_or_takes_an_index(tmp_path):
    store_ = IndexedFileStore(tmp_path / "a", fsync=False)
    assert store_.index.root == store_.root
    assert (store_.root / INDEX_FILE).is_file()
    store_.index.close()
    with Index.open(tmp_path / "b") as shared:
        assert IndexedFileStore(tmp_path / "c", index=shared, fsync=False).index is shared


# --- rebuild -----------------------------------------------------------------------------------


def fill(data_dir) -> list[str]:
    files = FileStore(data_dir, fsync=False)
    uids = []
    for ds in archive_datasets()[:12]:
        data = encode_dataset(ds, ExplicitVRLittleEndian)
        files.store(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, data)
        uids.append(ds.SOPInstanceUID)
    return uids


def test_rebuild_from_the_files(open_index, tmp_path):
    fill(tmp_path)
    with open_index() as index:
        index.add(record("7.7.7", path="objects/gone.dcm"))  # a row whose file is gone
        report = index.rebuild(batch=5)
        assert (report.indexed, report.removed, report.unreadable) == (12, 1, 0)
        assert index.counts() == {"patient": 1, "study": 2, "series": 4, "instance": 12}
        row = study_row(index, archive_dataset(1, 2, 1, 1).StudyInstanceUID)
        assert row["StudyTime"] == "141500.5"
        assert row["PatientName"] == "DOE^JOHN"
        again = index.rebuild()
        assert (again.indexed, again.removed) == (12, 0)


def test_rebuild_skips_unreadable_and_temporary_files(open_index, tmp_path):
    fill(tmp_path)
    broken = tmp_path / "objects" / "broken.dcm"
    broken.write_bytes(b"garbage")
    (tmp_path / "objects" / ".x.dcm").write_bytes(b"temporary")
    with open_index() as index:
        report = index.rebuild()
    assert (report.indexed, report.unreadable) == (12, 1)


def test_rebuild_of_an_empty_directory(open_index):
    with open_index() as index:
        assert index.rebuild().indexed == 0


def test_cli_index_rebuild(tmp_path, capsys):
    fill(tmp_path)
    assert cli.main(["index", "rebuild", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "indexed 12 files" in out
    assert "12 instance" in out
    (tmp_path / "objects" / "bad.dcm").write_bytes(b"nope")
    assert cli.main(["index", "rebuild", str(tmp_path)]) == cli.EXIT_FAILURE
    assert "1 unreadable" in capsys.readouterr().out


def test_cli_index_rebuild_needs_a_data_directory(tmp_path, capsys):
    assert cli.main(["index", "rebuild", str(tmp_path / "nothing")]) == cli.EXIT_FAILURE
    assert "not a data directory" in capsys.readouterr().err


# --- the PostgreSQL backend -------------------------------------------------------------------


def test_postgresql_that_cannot_be_reached(tmp_path):
    from tests.synthetic import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(IndexDatabaseError, match="cannot open the PostgreSQL index"):
        Index.open(tmp_path, database=url, timeout=2)


def test_postgresql_drops_a_broken_connection_and_reconnects(postgres, tmp_path):
    import psycopg

    with Index.open(tmp_path, database=postgres.new_schema()) as index:
        index.add(record("1.1.1.1"))
        (pid,) = index.backend.fetch("SELECT pg_backend_pid()")[0]
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(IndexDatabaseError, match="read failed"):
            index.backend.fetch("SELECT 1")
        assert index.backend.fetch("SELECT 1") == [(1,)]  # a new connection
        assert index.counts()["instance"] == 1
        index.backend.optimize()
