# Study-stable detection: claims in the index database (both backends), the monitor thread,
# exactly one event per quiet study among several monitors, and the configuration paths.
from __future__ import annotations

import argparse
import queue
import threading
from typing import Any

import pytest

from node.observability import STUDIES_STABLE
from tests.synthetic import PATIENCE, make_dataset, wait_until
from tests.workers import stable_handlers
from tests.workers.network import archive, modality
from tests.workers.test_index import record
from workers.store.index import IndexedFileStore, now_ms
from workers.store.stable import StudyStableMonitor, claim_stable_studies, start_monitor

QUIET = 0.5


def test_a_quiet_study_is_claimed_once_and_rearmed_by_a_new_instance(open_index):
    index = open_index()
    index.add(record("1.1.1.1", study="1.1", series="1.1.1"))
    index.add(record("1.1.1.2", study="1.1", series="1.1.1"))
    index.add(record("1.1.2.1", study="1.1", series="1.1.2", patient="P1"))
    index.add(record("2.1.1.1", study="2.1", series="2.1.1", patient="P2"))
    start = now_ms()
    assert claim_stable_studies(index, 10, now=start) == []  # not quiet yet
    claimed = claim_stable_studies(index, 10, now=start + 10_001)
    assert sorted(study.study_instance_uid for study in claimed) == ["1.1", "2.1"]
    first = next(study for study in claimed if study.study_instance_uid == "1.1")
    assert (first.patient_id, first.number_of_series, first.number_of_instances) == ("P1", 2, 3)
    info = first.as_info()
    assert info["study_instance_uid"] == "1.1"
    assert info["quiet_seconds"] == 10
    assert abs(info["last_update"] - start / 1000) < 60
    assert claim_stable_studies(index, 10, now=start + 20_000) == []  # fired once
    index.add(record("1.1.1.3", study="1.1", series="1.1.1"))  # a late instance re-arms it
    assert claim_stable_studies(index, 10, now=now_ms()) == []
    again = claim_stable_studies(index, 10, now=now_ms() + 10_001)
    assert [(s.study_instance_uid, s.number_of_instances) for s in again] == [("1.1", 4)]


def test_a_study_gone_from_the_index_still_fires(open_index):
    index = open_index()
    index.add(record("1.1.1.1", study="1.1", series="1.1.1"))
    index.remove("1.1.1.1")
    (study,) = claim_stable_studies(index, 1, now=now_ms() + 1001)
    assert (study.patient_id, study.number_of_instances) == ("", 0)


def test_several_monitors_fire_exactly_once_per_study(open_index):
    writer = open_index()
    for n in range(20):
        writer.add(record(f"{n}.1.1.1", study=f"{n}.1", series=f"{n}.1.1"))
    fired: list[str] = []
    lock = threading.Lock()

    def callback(study: str, info: dict[str, Any]) -> None:
        with lock:
            fired.append(study)

    monitors = [StudyStableMonitor(open_index(), 0.001, callback) for _ in range(4)]
    start = threading.Barrier(len(monitors))

    def scan(monitor: StudyStableMonitor) -> None:
        start.wait(PATIENCE)
        for _ in range(3):
            monitor.check()

    threads = [threading.Thread(target=scan, args=(m,)) for m in monitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert sorted(fired) == sorted(f"{n}.1" for n in range(20))
    assert sum(m.fired for m in monitors) == 20


def test_the_monitor_thread_fires_once_per_quiet_period(tmp_path, caplog):
    caplog.set_level("INFO", logger="dicomnode.stable")
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    store = IndexedFileStore(tmp_path, fsync=False)
    before = STUDIES_STABLE._value.get()
    monitor = start_monitor(store.index, QUIET, lambda uid, info: events.put((uid, info)))
    try:
        assert monitor.start() is monitor  # already running: the same thread
        assert monitor.interval == pytest.approx(QUIET / 4)
        store.index.add(record("1.1.1.1", study="1.1", series="1.1.1"))
        study, info = events.get(timeout=PATIENCE)
        assert study == "1.1"
        assert info["number_of_instances"] == 1
        with pytest.raises(queue.Empty):
            events.get(timeout=QUIET * 2)  # quiet and already fired: nothing more
        store.index.add(record("1.1.1.2", study="1.1", series="1.1.1"))
        study, info = events.get(timeout=PATIENCE)
        assert (study, info["number_of_instances"]) == ("1.1", 2)
    finally:
        monitor.stop()
        store.index.close()
    assert STUDIES_STABLE._value.get() == before + 2
    assert "study stable: 1.1" in caplog.text
    monitor.stop()  # stopping twice is harmless


def test_a_failing_callback_or_database_is_logged_and_the_monitor_goes_on(open_index, caplog):
    index = open_index()
    index.add(record("1.1.1.1", study="1.1", series="1.1.1"))

    def broken(study: str, info: dict[str, Any]) -> None:
        raise RuntimeError("callback broke")

    monitor = StudyStableMonitor(index, 0.001, broken)
    wait_until(monitor.check, "the study to be claimed")
    assert "callback broke" in caplog.text
    silent = StudyStableMonitor(index, 0.001, None)
    assert silent.check() == []  # already fired
    index.add(record("1.1.1.2", study="1.1", series="1.1.1"))
    wait_until(silent.check, "the study to be claimed again, without a callback")
    assert silent.fired == 1
    index.close()
    assert monitor.check() == []
    assert "study-stable scan failed" in caplog.text


def test_the_quiet_period_must_be_positive(open_index):
    with pytest.raises(ValueError, match="positive"):
        StudyStableMonitor(open_index(), 0, None)
    assert StudyStableMonitor(open_index(), 3600, None).interval == 5.0


def test_study_stable_over_the_network_in_process(make_ae, tmp_path):
    events: queue.Queue[str] = queue.Queue()
    store = IndexedFileStore(tmp_path / "data", fsync=False)
    monitor = start_monitor(store.index, QUIET, lambda uid, info: events.put(uid))
    try:
        scp = archive(make_ae, store)
        association = modality(make_ae).associate("127.0.0.1", scp.port, ae_title="ARCHIVE")
        datasets = [make_dataset(3, study, 1, n) for study in (1, 2) for n in (1, 2)]
        for ds in datasets:
            assert association.send_c_store(ds).Status == 0x0000
        association.release()
        fired = sorted([events.get(timeout=PATIENCE), events.get(timeout=PATIENCE)])
        assert fired == sorted({ds.StudyInstanceUID for ds in datasets})
        with pytest.raises(queue.Empty):
            events.get(timeout=QUIET * 2)
    finally:
        monitor.stop()
        store.index.close()


# --- configuration -----------------------------------------------------------------------------


def test_worker_options_load_the_callback_and_the_index(tmp_path, postgres):
    from workers.__main__ import build_parser, load_handlers

    url = postgres.new_schema()
    args = build_parser().parse_args(
        [
            "--broker",
            "ipc:///nowhere",
            "--data-dir",
            str(tmp_path),
            "--handlers",
            "tests.workers.stable_handlers",
            "--study-stable-seconds",
            "0.5",
            "--index",
            url,
        ]
    )
    assert args.study_stable_seconds == 0.5
    handlers = load_handlers(args)
    try:
        assert handlers.on_study_stable is stable_handlers.on_study_stable
        assert handlers.index.dialect.name == "postgresql"
    finally:
        handlers.index.close()
    args = build_parser().parse_args(
        ["--broker", "x", "--callback", "on_study_stable=tests.workers.stable_handlers:events"]
    )
    assert load_handlers(args).on_study_stable is stable_handlers.events


def test_a_bad_index_url_is_refused(tmp_path):
    from workers.__main__ import build_parser, load_handlers

    args = build_parser().parse_args(
        ["--broker", "x", "--data-dir", str(tmp_path), "--index", "mysql://db"]
    )
    with pytest.raises(ValueError, match="postgresql://"):
        load_handlers(args)


def test_serve_passes_the_options_to_the_worker_processes(tmp_path):
    from node.cli import build_parser
    from node.cluster import Cluster, ClusterConfig

    args = build_parser().parse_args(
        ["serve", "--study-stable-seconds", "2.5", "--index", "postgresql://db/x"]
    )
    assert (args.study_stable_seconds, args.index) == (2.5, "postgresql://db/x")
    config = ClusterConfig(
        ae_title="A",
        port=0,
        bind="127.0.0.1",
        data_dir=str(tmp_path),
        workers=2,
        runtime_dir=str(tmp_path / "rt"),
        index="postgresql://db/x",
        study_stable_seconds=2.5,
    )
    commands = [role.command for role in Cluster(config)._commands() if "workers" in role.command]
    assert len(commands) == 2
    for command in commands:
        joined = " ".join(command)
        assert "--index postgresql://db/x" in joined
        assert "--study-stable-seconds 2.5" in joined
    plain = ClusterConfig(ae_title="A", port=0, bind="", data_dir=str(tmp_path), workers=1)
    assert "--index" not in str(Cluster(plain)._commands())
    assert isinstance(args, argparse.Namespace)
