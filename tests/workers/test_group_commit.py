# Group commit of index rows: concurrent add() calls share transactions, each returns only
# once its own row is committed, and a bad row fails alone.
from __future__ import annotations

import contextlib
import threading
import time

from tests.synthetic import PATIENCE
from tests.workers.test_index import record
from workers.store.index import Index


def release_when_queued(index: Index, rows: int, gate: threading.Event) -> threading.Thread:
    """Open `gate` once all `rows` are either in the batch held at the gate or queued behind
    it (an observed state, not a fixed delay that a loaded machine can outlast)."""
    held = [0]
    commit_batch = index._commit_batch

    def counted(batch):
        held[0] = max(held[0], len(batch))
        commit_batch(batch)

    index._commit_batch = counted  # type: ignore[method-assign]

    def watch() -> None:
        deadline = time.monotonic() + PATIENCE
        while held[0] + len(index._group) < rows and time.monotonic() < deadline:
            gate.wait(0.001)
        gate.set()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_concurrent_adds_share_transactions_and_all_commit(tmp_path):
    index = Index.open(tmp_path)
    transactions = 0
    original = index.backend.transaction
    gate = threading.Event()

    @contextlib.contextmanager
    def counting():
        nonlocal transactions
        transactions += 1
        gate.wait(PATIENCE)  # the first commit waits until every writer has queued its row
        with original() as cursor:
            yield cursor

    index.backend.transaction = counting  # type: ignore[method-assign]
    rows = [record(f"1.2.{n}", study=f"1.{n % 3}", series=f"1.{n % 3}.1") for n in range(16)]
    errors: list[BaseException] = []

    def add(row):
        try:
            index.add(row)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=add, args=(row,)) for row in rows]
    release = release_when_queued(index, len(rows), gate)  # before any commit starts
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    release.join()
    assert errors == []
    assert index.counts()["instance"] == 16
    assert transactions < 16  # grouped: far fewer commits than rows
    index.close()


def test_a_bad_row_in_a_batch_fails_alone(tmp_path):
    index = Index.open(tmp_path)
    original_add = index._add
    original_transaction = index.backend.transaction
    gate = threading.Event()

    def add_or_fail(cursor, row):
        if row.sop_instance_uid == "1.2.bad":
            raise ValueError("this row is bad")
        return original_add(cursor, row)

    @contextlib.contextmanager
    def gated():
        gate.wait(PATIENCE)
        with original_transaction() as cursor:
            yield cursor

    index._add = add_or_fail  # type: ignore[method-assign]
    index.backend.transaction = gated  # type: ignore[method-assign]
    outcomes: dict[str, object] = {}

    def add(row):
        try:
            outcomes[row.sop_instance_uid] = index.add(row)
        except ValueError as error:
            outcomes[row.sop_instance_uid] = error

    rows = [record("1.2.1"), record("1.2.bad"), record("1.2.2"), record("1.2.3")]
    threads = [threading.Thread(target=add, args=(row,)) for row in rows]
    release = release_when_queued(index, len(rows), gate)  # before any commit starts
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    release.join()
    assert isinstance(outcomes["1.2.bad"], ValueError)
    assert [outcomes[uid] for uid in ("1.2.1", "1.2.2", "1.2.3")] == [False, False, False]
    assert index.counts()["instance"] == 3
    index.close()
