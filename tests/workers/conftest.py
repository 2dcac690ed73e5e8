# Fixtures of the worker tests: a real PostgreSQL server (one per test session) and an index
# factory parametrized over both backends (SQLite, PostgreSQL).
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.workers.postgres import PostgresServer, binaries, postgres_server
from workers.store.index import Index

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server; skipped only when PostgreSQL is not installed."""
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): no initdb/pg_ctl")
    with postgres_server() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Index]]:
    """Open an index of a data directory on this test's backend; all are closed at the end.
    On PostgreSQL every index a test opens shares one fresh schema (as workers share one
    database)."""
    database = None
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres").new_schema()
    opened: list[Index] = []

    def factory(data_dir: Path | None = None, **options: object) -> Index:
        index = Index.open(data_dir or tmp_path, database=database, **options)  # type: ignore[arg-type]
        opened.append(index)
        return index

    factory.backend = request.param  # type: ignore[attr-defined]
    factory.database = database  # type: ignore[attr-defined]
    yield factory
    for index in opened:
        index.close()
