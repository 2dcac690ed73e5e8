# The index over the stored objects: patient / study / series / instance rows in SQL, so that
# C-FIND matches without reading files and C-GET/C-MOVE find the files to send (PS3.4 C.6).
#
# Rules: SQLite at DATA_DIR/index.sqlite by default, or PostgreSQL (`--index postgresql://`,
# workers.store.postgres) shared by workers on many hosts; the database layer is
# workers.store.backend. All SQL is written once through workers.store.matching's Dialect
# (placeholders, pattern operator, list aggregate) and runs on both. `add` commits before it
# returns: the C-STORE success that follows is only sent once the row is durable; the same
# transaction stamps the study's activity (study-stable detection, workers.store.stable). The
# database also holds the MPPS steps (workers.store.mpps).
# Same SOP Instance UID again = replace: the row takes the new file, patient/study/series
# attributes take the new non-empty values, entities left empty are deleted, and the earlier
# file is removed when its path differs. Reads page through results by id (keyset paging),
# each page its own statement, so no read transaction stays open while results stream out.
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from workers.store.backend import (
    Backend,
    Cursor,
    IndexDatabaseError,
    SQLiteBackend,
    now_ms,
)
from workers.store.files import FileStore
from workers.store.matching import (
    Query,
    count_instances,
    select_instances,
    select_matches,
)
from workers.store.rebuild import IndexRebuild, RebuildReport
from workers.store.schema import (
    ATTRIBUTES,
    PARENT_COLUMN,
    TABLES,
    UNIQUE_KEYS,
    InstanceRecord,
    Level,
    record_from_bytes,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from workers.store.matching import Select

log = logging.getLogger("dicomnode.index")

#: The backend layer, re-exported: importers of workers.store.index keep working.
__all__ = [
    "INDEX_FILE",
    "Backend",
    "Cursor",
    "Index",
    "IndexDatabaseError",
    "IndexedFileStore",
    "RebuildReport",
    "SQLiteBackend",
    "StoredInstance",
    "StoredPath",
    "now_ms",
    "schema_statements",
]

SCHEMA_VERSION: Final = "1"
INDEX_FILE: Final = "index.sqlite"
PAGE_SIZE: Final = 200


# --- schema ------------------------------------------------------------------------------------


def _columns(level: Level) -> list[str]:
    names: list[str] = []
    for attribute in ATTRIBUTES:
        if attribute.level is level:
            names.append(attribute.column)
            if attribute.vr == "TM":
                names.append(attribute.sort_column)
    return names


def schema_statements(id_column: str = "INTEGER PRIMARY KEY") -> list[str]:
    """CREATE statements for the four level tables, their UID and parent indexes."""
    statements = ["CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"]
    for level, table in TABLES.items():
        unique = UNIQUE_KEYS[level].column
        columns = [f"id {id_column}"]
        if level in PARENT_COLUMN:
            parent = TABLES[Level(level - 1)]
            columns.append(f"{PARENT_COLUMN[level]} INTEGER NOT NULL REFERENCES {parent}(id)")
        columns += [f"{name} TEXT NOT NULL DEFAULT ''" for name in _columns(level)]
        if level is Level.IMAGE:
            columns += ["path TEXT NOT NULL", "size INTEGER NOT NULL DEFAULT 0"]
        columns.append(f"UNIQUE ({unique})")
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})")
        if level in PARENT_COLUMN:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {table}_parent ON {table} ({PARENT_COLUMN[level]})"
            )
    for name, table, column in (
        ("patient_name", "patient", "patient_name"),
        ("study_date", "study", "study_date"),
        ("study_accession", "study", "accession_number"),
    ):
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")
    statements += SERVICE_TABLES
    return statements


#: Tables of the other services kept in the index database: study activity (study-stable
#: detection, workers.store.stable) and Modality Performed Procedure Steps (workers.store.mpps).
#: Times are integer milliseconds since the epoch (portable: no REAL/float4 pitfalls).
SERVICE_TABLES: Final = [
    "CREATE TABLE IF NOT EXISTS study_activity (study_uid TEXT PRIMARY KEY, "
    "last_update_ms BIGINT NOT NULL, stable_fired INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS study_activity_quiet ON study_activity "
    "(stable_fired, last_update_ms)",
    "CREATE TABLE IF NOT EXISTS mpps (sop_instance_uid TEXT PRIMARY KEY, status TEXT NOT NULL, "
    "attributes TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)",
]


# --- the index ---------------------------------------------------------------------------------


class StoredPath(Protocol):
    """Where a stored object lives: a pathlib.Path in the file store, an object in a bucket
    (workers.store.objects.ObjectPath). Readers use only these calls."""

    def is_file(self) -> bool: ...

    def unlink(self, missing_ok: bool = False) -> None: ...

    def read_bytes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """A C-GET/C-MOVE sub-operation: one indexed file."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: StoredPath


@dataclass(eq=False)
class _PendingRow:
    """One add() waiting for a group commit."""

    record: InstanceRecord
    wake: threading.Event = field(default_factory=threading.Event)
    committed: bool = False
    replaced: bool = False
    stale: str | None = None
    error: BaseException | None = None


class Index(IndexRebuild):
    """The Query/Retrieve index of one data directory (paths are stored relative to it)."""

    def __init__(self, backend: Backend, root: str | os.PathLike[str]) -> None:
        self.backend = backend
        self.root = Path(root).resolve()
        self.dialect = backend.dialect
        self._group_lock = threading.Lock()
        self._group: list[_PendingRow] = []
        self._committing = False
        self._statements: dict[tuple[str, Level, tuple[str, ...]], str] = {}
        #: A row's path (relative to the store) -> where the object is; the object store
        #: (workers.store.objects) replaces it with its bucket's.
        self.locate: Callable[[str], StoredPath] = self.root.joinpath
        #: The records `rebuild` indexes (None, logged, for an unreadable object); the object
        #: store replaces it with a listing of its bucket.
        self.stored_records: Callable[[], Iterator[InstanceRecord | None]] = self._file_records
        self._create_schema()

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        timeout: float = 30.0,
        database: str | None = None,
    ) -> Index:
        """The index of DATA_DIR: SQLite at DATA_DIR/index.sqlite (created when missing), or
        the PostgreSQL database `database` names (a postgresql:// URL or libpq conninfo)."""
        root = Path(data_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        backend: Backend
        if database:
            from workers.store.postgres import PostgresBackend, is_postgresql

            if not is_postgresql(database):
                raise ValueError(f"the index database must be a postgresql:// URL: {database!r}")
            backend = PostgresBackend(database, timeout=timeout)
        else:
            backend = SQLiteBackend(root / INDEX_FILE, synchronous=synchronous, timeout=timeout)
        try:
            return cls(backend, root)
        except BaseException:
            backend.close()
            raise

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.dialect.placeholder)

    def _create_schema(self) -> None:
        with self.backend.transaction() as cursor:
            if self.dialect.name == "postgresql":  # workers starting together: one at a time
                cursor.execute("SELECT pg_advisory_xact_lock(6180017)")
            for statement in schema_statements(self.backend.id_column):
                cursor.execute(statement)
            found = cursor.execute(
                self._sql("SELECT value FROM meta WHERE name = ?"), ("schema_version",)
            ).fetchone()
            if found is None:
                cursor.execute(
                    self._sql("INSERT INTO meta (name, value) VALUES (?, ?)"),
                    ("schema_version", SCHEMA_VERSION),
                )
            elif found[0] != SCHEMA_VERSION:
                raise IndexDatabaseError(
                    f"index schema version {found[0]} (expected {SCHEMA_VERSION}): "
                    "delete it and run `dicomnode index rebuild`"
                )

    # --- writes --------------------------------------------------------------------------------

    def add(self, record: InstanceRecord) -> bool:
        """Index one stored instance (PS3.4 B.2.3: success follows the commit); True when it
        replaced an earlier copy of the same SOP Instance UID.

        Group commit: callers that arrive while another thread is committing are written
        together in its next transaction (one commit for the batch); each returns only once
        its own row is committed. A failing batch is retried row by row, so one bad record
        fails alone."""
        entry = _PendingRow(record)
        with self._group_lock:
            self._group.append(entry)
            leader = not self._committing
            self._committing = True
        if not leader:
            entry.wake.wait()  # committed by a leader, or handed the lead
            leader = not entry.committed
        if leader:
            self._lead()
        if entry.error is not None:
            raise entry.error
        self._remove_stale(entry.stale, record.path)
        return entry.replaced

    def _lead(self) -> None:
        """Commit every waiting row (this thread's among them) in one batch, then hand the
        lead to the next waiter if any: no caller waits for more than one foreign batch."""
        with self._group_lock:
            batch, self._group = self._group, []
        try:
            self._commit_batch(batch)
        except Exception:  # noqa: BLE001 - retried one by one: only the bad row fails
            for entry in batch:
                try:
                    self._commit_batch([entry])
                except Exception as error:  # noqa: BLE001 - reported to its own caller
                    entry.error = error
        for entry in batch:
            entry.committed = True
            entry.wake.set()
        with self._group_lock:
            if self._group:
                self._group[0].wake.set()  # its thread leads the next batch
            else:
                self._committing = False

    def _commit_batch(self, batch: list[_PendingRow]) -> None:
        with self.backend.transaction() as cursor:
            for entry in batch:
                record = entry.record
                entry.replaced, entry.stale = self._add(cursor, record)
                if record.value("StudyInstanceUID"):
                    self._touch_study(cursor, record.value("StudyInstanceUID"))

    def _touch_study(self, cursor: Cursor, study_uid: str) -> None:
        """A new instance of `study_uid` now: (re)arm its study-stable event."""
        cursor.execute(
            self._sql(
                "INSERT INTO study_activity (study_uid, last_update_ms, stable_fired) "
                "VALUES (?, ?, 0) ON CONFLICT (study_uid) DO UPDATE SET "
                "last_update_ms = excluded.last_update_ms, stable_fired = 0"
            ),
            (study_uid, now_ms()),
        )

    def add_stored(
        self,
        path: Path,
        dataset: bytes,
        transfer_syntax_uid: str,
        sop_class_uid: str,
        sop_instance_uid: str,
    ) -> bool:
        """Index a file FileStore just wrote from these data set bytes (parsed up to the last
        indexed attribute); commits before returning. True when it replaced an earlier copy."""
        relative = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        record = record_from_bytes(
            dataset, transfer_syntax_uid, sop_class_uid, sop_instance_uid, relative.as_posix()
        )
        return self.add(record)

    def add_many(self, records: Iterable[InstanceRecord]) -> int:
        """Index several instances in one transaction (bulk loads); returns the count."""
        with self.backend.transaction() as cursor:
            done = [(self._add(cursor, record)[1], record.path) for record in records]
        for stale, path in done:
            self._remove_stale(stale, path)
        return len(done)

    def _remove_stale(self, stale: str | None, current: str) -> None:
        if stale and stale != current:
            with contextlib.suppress(OSError):
                self.locate(stale).unlink()

    def _upsert(
        self, cursor: Cursor, level: Level, values: dict[str, str], parent: int | None
    ) -> int:
        """Insert or update one entity by its unique key; returns its id."""
        columns = dict(values)
        if parent is not None:
            columns[PARENT_COLUMN[level]] = str(parent)
        names = tuple(columns)
        sql = self._statement("upsert", level, names, lambda: self._upsert_sql(level, names))
        row = cursor.execute(sql, [columns[name] for name in names]).fetchone()
        return int(row[0])

    @staticmethod
    def _upsert_sql(level: Level, names: tuple[str, ...]) -> str:
        table = TABLES[level]
        unique = UNIQUE_KEYS[level].column
        updates = [
            f"{name} = excluded.{name}"  # a number (the file size): always the new one
            if name == "size"
            else f"{name} = COALESCE(NULLIF(excluded.{name}, ''), {table}.{name})"
            for name in names
            if name != unique and name != PARENT_COLUMN.get(level)
        ]
        if PARENT_COLUMN.get(level) in names:
            updates.append(f"{PARENT_COLUMN[level]} = excluded.{PARENT_COLUMN[level]}")
        return (
            f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 - schema names only
            f"VALUES ({', '.join('?' for _ in names)}) "
            f"ON CONFLICT ({unique}) DO UPDATE SET {', '.join(updates)} RETURNING id"
        )

    def _statement(
        self, kind: str, level: Level, names: tuple[str, ...], build: Callable[[], str]
    ) -> str:
        """The SQL of a per-row statement, built once per shape (not per stored object)."""
        key = (kind, level, names)
        sql = self._statements.get(key)
        if sql is None:
            sql = self._statements[key] = self._sql(build())
        return sql

    def _ensure(
        self, cursor: Cursor, level: Level, values: dict[str, str], parent: int | None
    ) -> tuple[int, int | None]:
        """(id, parent before this call) of one entity, upserted only when the row is missing
        or this record changes it: the patient, study and series of the previous instance are
        read, not rewritten (fewer statements, fewer pages in the journal)."""
        unique = UNIQUE_KEYS[level].column
        names = tuple(name for name in values if name != unique)
        sql = self._statement("read", level, names, lambda: self._read_sql(level, names))
        row = cursor.execute(sql, (values[unique],)).fetchone()
        old_parent = None if row is None or row[1] is None else int(row[1])
        # unchanged: the upsert would keep every stored value (an empty new one keeps it too)
        if (
            row is not None
            and (parent is None or old_parent == parent)
            and all(
                values[name] in ("", stored) for name, stored in zip(names, row[2:], strict=True)
            )
        ):
            return int(row[0]), old_parent
        return self._upsert(cursor, level, values, parent), old_parent

    def _read_sql(self, level: Level, names: tuple[str, ...]) -> str:
        table, unique = TABLES[level], UNIQUE_KEYS[level].column
        selected = ["id", PARENT_COLUMN.get(level) or "NULL", *names]
        sql = f"SELECT {', '.join(selected)} FROM {table} WHERE {unique} = ?"  # noqa: S608
        if self.dialect.name == "postgresql":
            # keep the row until commit, as the upsert's lock did: another worker's prune
            # cannot delete it under this instance (SQLite transactions are IMMEDIATE already)
            sql += " FOR KEY SHARE"
        return sql

    def _add(self, cursor: Cursor, record: InstanceRecord) -> tuple[bool, str | None]:
        old = cursor.execute(
            self._sql("SELECT series_ref, path FROM instance WHERE sop_instance_uid = ?"),
            (record.sop_instance_uid,),
        ).fetchone()
        patient, _ = self._ensure(cursor, Level.PATIENT, record.columns(Level.PATIENT), None)
        study, old_patient = self._ensure(cursor, Level.STUDY, record.columns(Level.STUDY), patient)
        series, old_study = self._ensure(cursor, Level.SERIES, record.columns(Level.SERIES), study)
        instance = record.columns(Level.IMAGE)
        instance["path"] = record.path
        instance["size"] = str(record.size)
        self._upsert(cursor, Level.IMAGE, instance, series)
        emptied: list[tuple[Level, int]] = []
        if old is not None and old[0] != series:
            emptied.append((Level.SERIES, int(old[0])))
        if old_study is not None and old_study != study:
            emptied.append((Level.STUDY, old_study))
        if old_patient is not None and old_patient != patient:
            emptied.append((Level.PATIENT, old_patient))
        if emptied:
            self._prune(cursor, emptied)
        return old is not None, None if old is None else str(old[1])

    def _prune(self, cursor: Cursor, candidates: list[tuple[Level, int]]) -> None:
        """Delete entities left without children, bottom-up (series, study, then patient)."""
        pending = sorted(candidates, key=lambda item: -item[0])
        while pending:
            level, entity = pending.pop(0)
            table, child = TABLES[level], TABLES[Level(level + 1)]
            parent = None
            if level in PARENT_COLUMN:
                row = cursor.execute(
                    self._sql(f"SELECT {PARENT_COLUMN[level]} FROM {table} WHERE id = ?"),  # noqa: S608
                    (entity,),
                ).fetchone()
                parent = None if row is None else int(row[0])
            deleted = cursor.execute(
                self._sql(
                    f"DELETE FROM {table} WHERE id = ? AND NOT EXISTS "  # noqa: S608
                    f"(SELECT 1 FROM {child} WHERE {PARENT_COLUMN[Level(level + 1)]} = ?)"
                ),
                (entity, entity),
            ).rowcount
            if deleted and parent is not None:
                pending.append((Level(level - 1), parent))
                pending.sort(key=lambda item: -item[0])

    def remove(self, sop_instance_uid: str) -> bool:
        """Forget one instance (its file is left alone); empty parents go too."""
        with self.backend.transaction() as cursor:
            row = cursor.execute(
                self._sql("SELECT id, series_ref FROM instance WHERE sop_instance_uid = ?"),
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                return False
            cursor.execute(self._sql("DELETE FROM instance WHERE id = ?"), (row[0],))
            self._prune(cursor, [(Level.SERIES, int(row[1]))])
        return True

    # --- reads ---------------------------------------------------------------------------------

    def find(self, query: Query, *, page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """The entities matching a C-FIND query (PS3.4 C.4.1.3.1), one dict keyword -> value
        per match, read a page at a time so that any number of matches streams in bounded
        memory."""
        for select, row in self._pages(
            lambda after: select_matches(query, self.dialect, after=after, limit=page_size),
            page_size,
        ):
            yield dict(zip(select.names, row[1:], strict=True))

    def count_instances(self, query: Query) -> int:
        """How many instances a retrieve query names."""
        select = count_instances(query, self.dialect)
        return int(self.backend.fetch(select.sql, select.params)[0][0])

    def instances(self, query: Query, *, page_size: int = PAGE_SIZE) -> Iterator[StoredInstance]:
        """The instances a C-GET/C-MOVE identifier names (PS3.4 C.4.2.3.1), a page at a
        time."""
        for _select, row in self._pages(
            lambda after: select_instances(query, self.dialect, after=after, limit=page_size),
            page_size,
        ):
            yield StoredInstance(row[1], row[2], row[3], self.locate(row[4]))

    def _pages(
        self, select_after: Callable[[int], Select], page_size: int
    ) -> Iterator[tuple[Select, tuple[Any, ...]]]:
        """Rows of a keyset-paged select (its first column is the id it pages by), a page of
        `page_size` at a time."""
        after = 0
        while True:
            select = select_after(after)
            rows = self.backend.fetch(select.sql, select.params)
            for row in rows:
                yield select, row
            if len(rows) < page_size:
                return
            after = int(rows[-1][0])

    def stored_instances(self, sop_instance_uids: Sequence[str]) -> dict[str, StoredInstance]:
        """The indexed instances among `sop_instance_uids` (Storage Commitment, PS3.4 J.3.3),
        by SOP Instance UID; looked up a page of UIDs at a time."""
        found: dict[str, StoredInstance] = {}
        unique = list(dict.fromkeys(sop_instance_uids))
        for start in range(0, len(unique), PAGE_SIZE):
            page = unique[start : start + PAGE_SIZE]
            marks = ", ".join("?" for _ in page)
            rows = self.backend.fetch(
                self._sql(
                    "SELECT sop_class_uid, sop_instance_uid, transfer_syntax_uid, path "  # noqa: S608
                    f"FROM instance WHERE sop_instance_uid IN ({marks})"
                ),
                page,
            )
            for row in rows:
                found[row[1]] = StoredInstance(row[0], row[1], row[2], self.locate(row[3]))
        return found

    def counts(self) -> dict[str, int]:
        """Rows per table (for reports and tests)."""
        return {
            table: int(self.backend.fetch(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608
            for table in TABLES.values()
        }


class IndexedFileStore(FileStore):
    """A FileStore that carries its index, so that whatever takes the store as the built-in
    storage (AE.file_store) also gets the index (stored objects are indexed, Q/R is served)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        index: Index | None = None,
        fsync: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(root, fsync=fsync, **options)
        self.index = index if index is not None else Index.open(self.root, synchronous="NORMAL")


class _HoldsAnIndex(Protocol):
    index: Any
    file_store: Any


def index_of(holder: _HoldsAnIndex) -> Index | None:
    """The index a worker answers from (Q/R, commitment, MPPS): the holder's own (a worker's
    Handlers), else its file store's; None without either."""
    if holder.index is not None:
        return holder.index  # type: ignore[no-any-return]
    return getattr(holder.file_store, "index", None)
