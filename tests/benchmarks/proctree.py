# CPU time of a process tree, read from /proc (Linux), for the benchmark suite's CPU per stored
# object (issue 15). Stdlib only; no import from `node`.
#
# Rules: a tree is a root PID and every process whose parent chain (field 4 of /proc/PID/stat)
# leads to it, zombies included. Each process counts utime + stime (all its threads) plus
# cutime + cstime: the CPU of its children that have exited *and been waited for*. So a server
# that forks per association and reaps its children (DCMTK storescp --fork) is counted whole,
# the reaped children through their parent's cumulative fields and the live or not yet reaped
# ones through their own, never both (cutime holds only waited-for children). The one gap: a
# child reaped between the read of its parent and its own read in one scan is missed, so sample
# when no child is exiting (before a workload starts and after it ends).
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """One process's line of /proc/PID/stat, the fields that matter here, in seconds."""

    pid: int
    parent: int
    own: float  # utime + stime
    reaped: float  # cutime + cstime of waited-for children


def parse_stat(text: str, ticks: int) -> ProcessCpu:
    """Parse /proc/PID/stat (proc(5)); the command name may hold spaces and parentheses."""
    head, rest = text.rsplit(")", 1)
    fields = rest.split()
    # fields[0] is field 3 (state): parent is field 4, utime..cstime fields 14..17
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return ProcessCpu(
        pid=int(head.split("(", 1)[0]),
        parent=int(fields[1]),
        own=(utime + stime) / ticks,
        reaped=(cutime + cstime) / ticks,
    )


def scan(proc: Path = PROC) -> dict[int, ProcessCpu]:
    """Every process visible in `proc` by PID (processes that vanish mid-scan are skipped)."""
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        process = parse_stat(text, ticks)
        result[process.pid] = process
    return result


def tree(root: int, processes: dict[int, ProcessCpu]) -> list[ProcessCpu]:
    """`root` and its descendants among `processes`; ProcessLookupError if `root` is absent."""
    if root not in processes:
        raise ProcessLookupError(root)
    children: dict[int, list[int]] = {}
    for process in processes.values():
        children.setdefault(process.parent, []).append(process.pid)
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(processes[pid])
        pending.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int, proc: Path = PROC) -> float:
    """CPU seconds (user + system) used so far by `root`'s whole tree, as the module says."""
    return sum(process.own + process.reaped for process in tree(root, scan(proc)))


def children(parent: int, proc: Path = PROC) -> list[int]:
    """The PIDs whose parent is `parent` (direct children only)."""
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found
