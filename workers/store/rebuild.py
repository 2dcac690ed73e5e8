# `dicomnode index rebuild`: the Query/Retrieve index again from what is stored, part of
# workers.store.index.Index: every file under DATA_DIR/objects (or every object under the
# object store's prefix) is read and upserted in batches, then rows whose object is gone are
# dropped.
#
# Rules: safe while the node runs (rows are upserted, never dropped first); never deletes an
# object; an unreadable object is logged and counted, not fatal.
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workers.store.schema import record_from_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from workers.store.backend import Backend, Cursor
    from workers.store.index import StoredPath
    from workers.store.schema import InstanceRecord

log = logging.getLogger("dicomnode.index")


@dataclass(frozen=True, slots=True)
class RebuildReport:
    indexed: int
    removed: int
    unreadable: int


class IndexRebuild:
    """Rebuilding the index from the stored objects (mixed into Index)."""

    backend: Backend
    root: Path
    locate: Callable[[str], StoredPath]
    stored_records: Callable[[], Iterator[InstanceRecord | None]]

    if TYPE_CHECKING:  # provided by Index

        def _sql(self, sql: str) -> str: ...

        def _add(self, cursor: Cursor, record: InstanceRecord) -> tuple[bool, str | None]: ...

        def remove(self, sop_instance_uid: str) -> bool: ...

    def rebuild(self, *, batch: int = 500) -> RebuildReport:
        """Re-index every file under DATA_DIR/objects (or every object under the object
        store's prefix: `stored_records`), then drop rows whose file is gone.

        Safe while the node runs (rows are upserted, never dropped first) and never deletes a
        file: of two files with the same SOP Instance UID the index keeps the last one found.
        For a damaged database, delete index.sqlite and rebuild.
        """
        indexed = unreadable = 0
        pending: list[InstanceRecord] = []
        for record in self.stored_records():
            if record is None:
                unreadable += 1
                continue
            pending.append(record)
            if len(pending) >= batch:
                indexed += self._add_batch(pending)
        indexed += self._add_batch(pending)
        removed = self._drop_missing(batch)
        self.backend.optimize()
        return RebuildReport(indexed, removed, unreadable)

    def _file_records(self) -> Iterator[InstanceRecord | None]:
        for path in _walk(self.root / "objects"):
            try:
                yield record_from_file(path, self.root)
            except Exception as error:  # noqa: BLE001 - any unreadable file is skipped
                log.warning("index rebuild: skipping %s: %s", path, error)
                yield None

    def _add_batch(self, records: list[InstanceRecord]) -> int:
        with self.backend.transaction() as cursor:
            for record in records:
                self._add(cursor, record)
        count = len(records)
        records.clear()
        return count

    def _drop_missing(self, batch: int) -> int:
        removed = 0
        after = 0
        while True:
            rows = self.backend.fetch(
                self._sql(
                    "SELECT id, sop_instance_uid, path FROM instance WHERE id > ? "
                    "ORDER BY id LIMIT ?"
                ),
                (after, batch),
            )
            for _, sop_instance_uid, path in rows:
                if not self.locate(path).is_file():
                    removed += self.remove(sop_instance_uid)
            if len(rows) < batch:
                return removed
            after = int(rows[-1][0])


def _walk(objects: Path) -> Iterator[Path]:
    """The .dcm files under `objects`, in a stable order, one directory at a time."""
    for directory, subdirectories, files in os.walk(objects):
        subdirectories.sort()
        for name in sorted(files):
            if name.endswith(".dcm") and not name.startswith("."):
                yield Path(directory) / name
