# `dicomnode serve` as a subprocess for the soak test, and what /proc says about a process:
# open file descriptors and resident memory.
#
# Rules: the server runs in its own session, logs to a file, and is always stopped (SIGTERM,
# then SIGKILL of its process group if it does not exit in time); waits are bounded polls on
# /proc or the port, never fixed sleeps.
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.synthetic import PATIENCE, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


def fd_count(pid: int) -> int:
    """Open file descriptors of `pid` (/proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def pids_running(module: str, marker: str) -> list[int]:
    """PIDs whose command line runs `python -m module` and mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parts = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in parts and any(marker.encode() in part for part in parts):
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    port: int
    runtime_dir: Path
    log: Path

    def accepts(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"serve exited with {self.process.returncode}: {self.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def acceptor_pid(self) -> int:
        """The process that owns the TCP connections: serve itself with --workers 0, else
        the `python -m node.acceptor` started for this serve's --runtime-dir."""
        found = pids_running("node.acceptor", str(self.runtime_dir))
        if not found:
            return self.process.pid
        if len(found) != 1:
            raise AssertionError(f"expected one acceptor process, found {found}")
        return found[0]

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


@contextlib.contextmanager
def serve(
    tmp_path: Path, port: int, workers: int, *options: str, start_limit: float = PATIENCE
) -> Iterator[Serve]:
    """Run `dicomnode serve --workers N` on loopback until the block ends."""
    runtime_dir = tmp_path / f"runtime-{port}"
    log = tmp_path / f"serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "node.cli",
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / f"data-{port}"),
        "--runtime-dir",
        str(runtime_dir),
        "--workers",
        str(workers),
        "--drain-timeout",
        "5",
        *options,
    ]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(ROOT)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    server = Serve(process, port, runtime_dir, log)
    try:
        wait_until(server.accepts, "dicomnode serve to listen", start_limit)
        if workers:
            wait_until(
                lambda: pids_running("node.acceptor", str(runtime_dir)),
                "the acceptor process",
                start_limit,
            )
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
