# `dicomnode acceptor --processes N` and `dicomnode worker --processes N`: N copies of the role
# supervised by one parent, acceptors sharing one port (SO_REUSEPORT).
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.benchmarks.proctree import children
from tests.synthetic import PATIENCE, free_port, run_tool

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.cluster, pytest.mark.interop]


def _until(condition, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        pause.wait(0.1)


def test_two_acceptor_and_two_worker_processes_from_one_command(tmp_path: Path):
    frontend = f"ipc://{tmp_path}/frontend"
    backend = f"ipc://{tmp_path}/backend"
    port = free_port()
    python = sys.executable
    commands = [
        [python, "-m", "broker", "--frontend", frontend, "--backend", backend],
        [python, "-m", "workers", "--broker", backend, "--processes", "2"],
        [
            python,
            "-m",
            "node.acceptor",
            "--broker",
            frontend,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--processes",
            "2",
            "--local-echo",
        ],
    ]
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in commands
    ]
    try:
        _until(lambda: len(children(processes[2].pid)) == 2, 30, "two acceptor processes")
        _until(lambda: len(children(processes[1].pid)) == 2, 30, "two worker processes")
        _until(lambda: run_tool(["echoscu", "127.0.0.1", port]).returncode == 0, 30, "C-ECHO")
        results = [run_tool(["echoscu", "127.0.0.1", port]) for _ in range(8)]
        assert all(result.returncode == 0 for result in results)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        codes = []
        for process in reversed(processes):
            try:
                codes.append(process.wait(PATIENCE))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
    assert codes == [0, 0, 0]


def test_a_broker_restarted_at_its_endpoints_serves_the_same_acceptor_and_worker(tmp_path: Path):
    # The multi-host topology (dicomnode broker): when the broker process dies and a new one
    # binds the same endpoints (Kubernetes restarts it), the acceptor and the worker find it
    # again by their heartbeats, without being restarted themselves, and stores go through.
    from tests.synthetic import make_datasets, write_datasets

    frontend = f"ipc://{tmp_path}/frontend"
    backend = f"ipc://{tmp_path}/backend"
    port = free_port()
    python = sys.executable
    broker_command = [python, "-m", "broker", "--frontend", frontend, "--backend", backend]

    def start(command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    worker = [python, "-m", "workers", "--broker", backend, "--data-dir", str(tmp_path / "data")]
    acceptor = [python, "-m", "node.acceptor", "--broker", frontend, "--port", str(port)]
    acceptor += ["--bind", "127.0.0.1"]
    roles = [start(worker), start(acceptor)]
    broker = start(broker_command)
    folder = tmp_path / "in"
    paths = write_datasets(make_datasets(patients=1, studies=1, series=1, instances=6), folder)

    def stores(batch: list[Path]) -> bool:
        return run_tool(["storescu", "127.0.0.1", port, *batch]).returncode == 0

    try:
        _until(lambda: stores(paths[:3]), 30, "C-STORE through the first broker")
        broker.kill()
        broker.wait()
        broker = start(broker_command)
        _until(lambda: stores(paths[3:]), 30, "C-STORE through the restarted broker")
        assert [role.poll() for role in roles] == [None, None]  # neither was restarted
        stored = {p.stem for p in (tmp_path / "data" / "objects").rglob("*.dcm")}
        assert {path.stem for path in paths} <= stored
    finally:
        for process in [*reversed(roles), broker]:
            process.send_signal(signal.SIGTERM)
        for process in [*reversed(roles), broker]:
            try:
                process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
