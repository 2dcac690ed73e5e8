# The PostgreSQL backend of the index (`--index postgresql://...`): the same statements as the
# SQLite backend, through psycopg 3, so that worker processes on several hosts share one index.
#
# Rules: implements workers.store.index.Backend. Connections come from a small pool of
# autocommit connections; a write is one `BEGIN ... COMMIT` (READ COMMITTED: the upserts with
# ON CONFLICT serialize on the unique keys), a read is one statement. Every database error
# becomes an IndexDatabaseError (so a C-STORE gets Out of Resources, never a traceback); a
# connection that broke is dropped instead of going back to the pool. psycopg is an optional
# dependency (`pip install dicomnode[postgres]`), imported only when this backend is used.
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from workers.store.backend import ConnectionPool, IndexDatabaseError
from workers.store.matching import POSTGRESQL, Dialect

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import psycopg

#: URL schemes that name a PostgreSQL database.
SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(database: str | None) -> bool:
    """True when `database` (an --index value) names a PostgreSQL database."""
    return bool(database) and str(database).startswith(SCHEMES)


class PostgresBackend(ConnectionPool["psycopg.Connection[Any]"]):
    """psycopg 3 connections to one PostgreSQL database (a small pool, autocommit)."""

    dialect: Dialect = POSTGRESQL
    id_column: str = "BIGSERIAL PRIMARY KEY"

    def __init__(self, conninfo: str, *, timeout: float = 30.0) -> None:
        try:
            import psycopg
        except ImportError as error:  # pragma: no cover - psycopg is a dev dependency
            raise IndexDatabaseError(
                "a PostgreSQL index needs psycopg: pip install 'dicomnode[postgres]'"
            ) from error
        self._psycopg = psycopg
        self.conninfo = conninfo
        self.timeout = timeout
        super().__init__()

    def _open(self) -> psycopg.Connection[Any]:
        try:
            connection = self._psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=max(2, int(self.timeout))
            )
            # wait for a row lock as long as SQLite waits for its write lock, then fail
            connection.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        except self._psycopg.Error as error:
            raise IndexDatabaseError(f"cannot open the PostgreSQL index: {error}") from error
        return connection

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for this thread until the block ends; back to the pool unless broken."""
        connection = self._checkout()
        try:
            yield connection
        finally:
            if connection.closed or connection.broken:
                with self._lock, contextlib.suppress(ValueError):  # gone if close() ran
                    self._all.remove(connection)
                connection.close()
            else:
                self._idle.put(connection)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """A write transaction committed when the block ends (rolled back on any error)."""
        with self.connection() as connection:
            try:
                with connection.transaction(), connection.cursor() as cursor:
                    yield cursor
            except self._psycopg.Error as error:
                raise IndexDatabaseError(f"index write failed: {error}") from error

    def fetch(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement to completion."""
        with self.connection() as connection:
            try:
                return connection.execute(sql, tuple(params)).fetchall()
            except self._psycopg.Error as error:
                raise IndexDatabaseError(f"index read failed: {error}") from error

    def optimize(self) -> None:
        """Refresh the planner's statistics (ANALYZE)."""
        with self.connection() as connection:
            connection.execute("ANALYZE")
