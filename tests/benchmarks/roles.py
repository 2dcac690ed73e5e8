# Where `dicomnode serve`'s CPU per stored object goes (issue 15): user and system CPU of each
# role process (acceptor, broker, worker, the supervisor) per object stored, read from
# /proc/PID/stat before and after one DCMTK storescu run (TCP_NODELAY=1), for 8 KB and 0.5 MB
# objects over one association, durable and --no-fsync. The suite (tests.benchmarks.suite)
# gives the totals beside the peers; this splits them, so that a change to one role can be
# measured where it acts.
#
# Run: `python -m tests.benchmarks.roles [--quick] [--repeat N]`; writes
# tests/benchmarks/results/roles.md. Not a test: CI never runs it. Outputs are moved aside, not
# deleted, during the run (deleting files right before a run inflates ext4's inode allocation
# cost for the next one, see the suite).
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.benchmarks.proctree import children
from tests.benchmarks.suite import (
    Server,
    empty_trash,
    free_port,
    generate,
    machine,
    serve_command,
    storescu,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS = Path(__file__).resolve().parent / "results" / "roles.md"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    user: float  # seconds
    system: float


def role_of(pid: int) -> str:
    """The module after `-m` in a process's command line (`serve` for the supervisor)."""
    words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if b"-m" in words[:-1]:
        name = words[words.index(b"-m") + 1].decode()
        return "serve" if name == "node.cli" else name
    return words[0].decode(errors="replace")


def usage_by_role(root: int) -> dict[str, Usage]:
    """utime and stime (all threads) of `root` and its children, summed per role."""
    pids = [root, *children(root)]
    result: dict[str, Usage] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            role = role_of(pid)
        except OSError:
            continue
        before = result.get(role, Usage(0.0, 0.0))
        result[role] = Usage(
            before.user + int(fields[11]) / TICKS, before.system + int(fields[12]) / TICKS
        )
    return result


def measure(
    server: Server, work: Path, folder: Path, objects: int
) -> tuple[float, dict[str, Usage]]:
    """Objects/s and CPU seconds per object and role for one storescu run."""
    port = free_port()
    with server.running(port, work / f"out-{server.name}") as process:
        before = usage_by_role(process.pid)
        start = time.perf_counter()
        storescu(port, folder)
        elapsed = time.perf_counter() - start
        after = usage_by_role(process.pid)
    per_object = {
        role: Usage(
            (after[role].user - before.get(role, Usage(0, 0)).user) / objects,
            (after[role].system - before.get(role, Usage(0, 0)).system) / objects,
        )
        for role in after
    }
    return objects / elapsed, per_object


ROLES = ("node.acceptor", "broker", "workers", "serve")


def row(label: str, rate: float, usage: dict[str, Usage]) -> str:
    cells = []
    total = 0.0
    for role in ROLES:
        got = usage.get(role, Usage(0.0, 0.0))
        total += got.user + got.system
        cells.append(f"{got.user * 1000:.2f} + {got.system * 1000:.2f}")
    return f"| {label} | {rate:.0f}/s | " + " | ".join(cells) + f" | {total * 1000:.2f} |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.roles")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the lowest total is kept")
    parser.add_argument("--work", default=None, help="data folder (kept between runs)")
    args = parser.parse_args(argv)
    work = Path(args.work or (Path(tempfile.gettempdir()) / "dicomnode-bench-roles"))
    work.mkdir(parents=True, exist_ok=True)
    empty_trash(work, settle=True)
    n8k, nct = (500, 100) if args.quick else (3000, 500)
    loads = [
        (f"{n8k} x 8 KB", generate(work / f"8k-{n8k}", "8k", n8k), n8k),
        (f"{nct} x 0.5 MB CT", generate(work / f"ct-{nct}", "ct", nct), nct),
    ]
    serve = [*serve_command("{port}", "{out}"), "--workers", "1"]
    servers = [
        Server("durable", "serve --workers 1 (durable)", serve),
        Server("nofsync", "serve --workers 1 --no-fsync", [*serve, "--no-fsync"]),
    ]
    best: dict[tuple[str, str], tuple[float, dict[str, Usage]]] = {}
    for round_number in range(1, args.repeat + 1):
        for label, folder, count in loads:
            for server in servers:
                rate, usage = measure(server, work, folder, count)
                total = sum(u.user + u.system for u in usage.values())
                print(
                    f"[{round_number}/{args.repeat}] {label:18} {server.label:30} {rate:7.1f}/s "
                    f"{total * 1000:6.2f} ms CPU/object",
                    flush=True,
                )
                kept = best.get((label, server.name))
                if kept is None or total < sum(u.user + u.system for u in kept[1].values()):
                    best[(label, server.name)] = (rate, usage)
    empty_trash(work, settle=False)
    lines = [
        "# CPU per stored object, by role (issue 15)",
        "",
        f"Measured {machine()} with `python -m tests.benchmarks.roles`: DCMTK storescu -xs over "
        f"one association, TCP_NODELAY=1; the round with the lowest total of {args.repeat} is "
        "kept. Each role cell: user + system CPU in ms per object (all its threads).",
        "",
        "| workload, server | rate | acceptor | broker | worker | supervisor | total ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _folder, _count in loads:
        for server in servers:
            rate, usage = best[(label, server.name)]
            lines.append(row(f"{label}, {server.label}", rate, usage))
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
