# Group commit of index rows: concurrent add() calls share transactions, each returns only
# once its own row is committed, and a bad row fails alone.
from __future__ import annotations

import contextlib
import threading

from tests.workers.test_index import record
from workers.store.index import Index


def test_concurrent_adds_share_transactions_and_all_commit(tmp_path):
    index = Index.open(tmp_path)
    transactions = 0
    original = index.backend.transaction
    gate = threading.Event()

    @contextlib.contextmanager
    def counting():
        nonlocal transactions
        transactions += 1
        gate.wait(5)  # the first commit waits until every writer has queued its row
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
    for thread in threads:
        thread.start()
    release = threading.Timer(0.3, gate.set)  # by then every thread has queued its row
    release.start()
    for thread in threads:
        thread.join(10)
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
        gate.wait(5)
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
    for thread in threads:
        thread.start()
    release = threading.Timer(0.3, gate.set)
    release.start()
    for thread in threads:
        thread.join(10)
    release.join()
    assert isinstance(outcomes["1.2.bad"], ValueError)
    assert [outcomes[uid] for uid in ("1.2.1", "1.2.2", "1.2.3")] == [False, False, False]
    assert index.counts()["instance"] == 3
    index.close()
