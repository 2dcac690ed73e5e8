# The database layer under the index: the Backend protocol every index database implements,
# the SQLite backend (the default), and the error every backend raises.
#
# Rules: a Backend runs statements and nothing else; the Index (workers.store.index) owns the
# SQL, written once for every backend through the Dialect (workers.store.matching). SQLite is
# used in WAL mode from a small connection pool; several worker processes and threads write it
# at once, so each write is one short BEGIN IMMEDIATE transaction that waits (busy timeout)
# rather than fails when another writer holds the lock. Database errors surface as
# IndexDatabaseError (an OSError: a C-STORE answers Out of Resources). PostgreSQL lives in
# workers.store.postgres.
from __future__ import annotations

import abc
import contextlib
import queue
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from workers.store.matching import SQLITE, Dialect

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Iterator


class IndexDatabaseError(OSError):
    """The index database could not be read or written (locked too long, disk full...)."""


def now_ms() -> int:
    """The wall clock in integer milliseconds (shared by every worker, on any host)."""
    return int(time.time() * 1000)


class Cursor(Protocol):
    """The DB-API cursor calls the Index uses (sqlite3 and psycopg 3 both have them)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def fetchone(self) -> Any: ...


class Backend(Protocol):
    """What the Index needs from a database: a PostgreSQL backend (psycopg 3, a connection
    pool, plain BEGIN, `%s` placeholders through its Dialect) implements the same five calls;
    every statement the Index and matching write is portable SQL (upsert with ON CONFLICT ...
    RETURNING, correlated subqueries, keyset paging)."""

    dialect: Dialect
    #: The column type of the tables' `id` (an auto-incremented integer key).
    id_column: str

    def transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        """A write transaction, committed when the block ends; yields its cursor."""
        ...

    def fetch(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement to completion."""
        ...

    def optimize(self) -> None:
        """Refresh the planner's statistics."""
        ...

    def close(self) -> None: ...


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class ConnectionPool(abc.ABC, Generic[C]):
    """A backend's connections: an idle one is reused, a new one opened when none is idle,
    every one closed by close() (the SQLite and PostgreSQL backends share it)."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[C] = queue.SimpleQueue()
        self._all: list[C] = []
        self._lock = threading.Lock()
        self._closed = False

    @abc.abstractmethod
    def _open(self) -> C:
        """A new connection (IndexDatabaseError when the database cannot be reached)."""

    def _checkout(self) -> C:
        if self._closed:
            raise IndexDatabaseError("the index is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            connection = self._open()
        with self._lock:
            self._all.append(connection)
        return connection

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()


class SQLiteBackend(ConnectionPool[sqlite3.Connection]):
    """SQLite connections (a small pool), WAL mode, a busy timeout, immediate transactions."""

    dialect: Dialect = SQLITE
    id_column: str = "INTEGER PRIMARY KEY"

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "FULL", timeout: float = 30.0
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous}")
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.timeout = timeout
        super().__init__()

    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous}")
            connection.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as error:
            raise IndexDatabaseError(f"cannot open {self.path}: {error}") from error
        return connection

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for this thread's use until the block ends, then back to the pool."""
        connection = self._checkout()
        try:
            yield connection
        finally:
            self._idle.put(connection)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock at once (waiting up to
        the busy timeout), so concurrent writers queue instead of deadlocking."""
        with self.connection() as connection:
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                cursor.execute("COMMIT")
            except BaseException as error:
                connection.rollback()  # a no-op when BEGIN itself failed
                if isinstance(error, sqlite3.Error):
                    raise IndexDatabaseError(f"index write failed: {error}") from error
                raise
            finally:
                cursor.close()

    def fetch(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement to completion (its own implicit read transaction)."""
        with self.connection() as connection:
            try:
                return connection.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as error:
                raise IndexDatabaseError(f"index read failed: {error}") from error

    def optimize(self) -> None:
        """Refresh the planner's statistics (after bulk changes)."""
        with self.connection() as connection:
            connection.execute("PRAGMA optimize")
