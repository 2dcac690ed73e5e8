# `dicomnode index rebuild`: the Query/Retrieve index again from the stored objects.
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import (
    EXIT_FAILURE,
    CommandError,
)


def command_index(args: argparse.Namespace) -> int:
    """`dicomnode index rebuild DATA_DIR`: the index again from the stored files."""
    from workers.store.index import Index

    data_dir = Path(args.data_dir)
    if not args.store and not (data_dir / "objects").is_dir():
        raise CommandError(f"{data_dir} has no objects/ folder: not a data directory")
    start = time.monotonic()
    with Index.open(data_dir, database=args.index) as index:
        if args.store:
            from workers.store.objects import ObjectStore

            ObjectStore(args.store, data_dir, index=index, create_bucket=False)
        report = index.rebuild()
        counts = index.counts()
    print(
        f"indexed {report.indexed} files in {time.monotonic() - start:.2f} s "
        f"({report.unreadable} unreadable, {report.removed} rows of missing files removed): "
        + ", ".join(f"{count} {table}" for table, count in counts.items())
    )
    return EXIT_FAILURE if report.unreadable else 0
