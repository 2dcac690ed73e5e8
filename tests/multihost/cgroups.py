# CPU budgets for simulated hosts: one control group per host with a CPU quota (a fraction of a
# core), so that processes of one "machine" cannot use more than that machine would have.
#
# Rules: cgroup v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`, usage from `cpuacct.usage`) and
# v2 (`cpu.max`, usage from `cpu.stat` usage_usec) are both supported, whichever has the cpu
# controller mounted. Every group is created under one parent named after the caller's tag, so
# remove() deletes exactly what create() made. A process joins its group before it execs (the
# wrap() prefix writes its own PID to cgroup.procs), so every child it forks inherits the budget.
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

#: The CFS period of every quota: 20 ms (the kernel default is 100 ms), so that a capped
#: host is held back in short slices, as a slower machine would be, not in long stalls.
PERIOD_MICROSECONDS = 20_000
MOUNTS = Path("/proc/self/mounts")


class CgroupUnavailableError(RuntimeError):
    """No writable cgroup with a cpu controller here (not root, read-only /sys/fs/cgroup...)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the cpu controller lives: v1 `cpu` (+ `cpuacct`) hierarchies, or a v2 one."""

    version: int
    cpu_root: Path
    accounting_root: Path  # v1: the cpuacct hierarchy (may be cpu_root); v2: cpu_root


def _mounts(text: str) -> list[tuple[str, Path, set[str]]]:
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            found.append((parts[2], Path(parts[1]), set(parts[3].split(","))))
    return found


def detect_layout(mounts_text: str | None = None) -> Layout:
    """The cpu controller's hierarchy from /proc/self/mounts: v1 when a `cgroup` mount carries
    the cpu option, else v2 when a `cgroup2` mount offers cpu in cgroup.controllers."""
    mounts = _mounts(MOUNTS.read_text() if mounts_text is None else mounts_text)
    v1_cpu = [path for kind, path, options in mounts if kind == "cgroup" and "cpu" in options]
    if v1_cpu:
        accounting = [
            path for kind, path, options in mounts if kind == "cgroup" and "cpuacct" in options
        ]
        if not accounting:
            raise CgroupUnavailableError("cgroup v1 cpu controller without cpuacct: no usage")
        return Layout(1, v1_cpu[0], accounting[0])
    for kind, path, _options in mounts:
        if kind != "cgroup2":
            continue
        with contextlib.suppress(OSError):
            if "cpu" in (path / "cgroup.controllers").read_text().split():
                return Layout(2, path, path)
    raise CgroupUnavailableError("no cgroup hierarchy with the cpu controller is mounted")


@dataclass
class CpuGroup:
    """One host's group: `cores` of CPU at most (None: no quota, usage still counted)."""

    name: str
    layout: Layout
    directories: tuple[Path, ...]  # the cpu group first, then cpuacct's when separate
    cores: float | None = None

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(directory / "cgroup.procs" for directory in self.directories)

    def set_cores(self, cores: float | None) -> None:
        """Cap the group at `cores` CPUs (None lifts the cap); takes effect at once."""
        quota = -1 if cores is None else max(1000, round(cores * PERIOD_MICROSECONDS))
        cpu = self.directories[0]
        if self.layout.version == 1:
            (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_MICROSECONDS))
            (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            limit = "max" if quota < 0 else str(quota)
            (cpu / "cpu.max").write_text(f"{limit} {PERIOD_MICROSECONDS}")
        self.cores = cores

    def quota_cores(self) -> float | None:
        """The quota as the kernel holds it, in cores (None when unlimited)."""
        cpu = self.directories[0]
        if self.layout.version == 1:
            quota = int((cpu / "cpu.cfs_quota_us").read_text())
            period = int((cpu / "cpu.cfs_period_us").read_text())
        else:
            limit, period_text = (cpu / "cpu.max").read_text().split()
            quota, period = (-1 if limit == "max" else int(limit)), int(period_text)
        return None if quota < 0 else quota / period

    def wrap(self, argv: Sequence[object]) -> list[str]:
        """`argv` prefixed by a shell that moves itself into this group, then execs argv (same
        PID, so the caller's Popen still is the process)."""
        files = self.procs_files
        joins = " && ".join(f'echo $$ > "${index}"' for index in range(1, len(files) + 1))
        script = f'{joins} && shift {len(files)} && exec "$@"'
        return ["sh", "-c", script, "sh", *(str(f) for f in files), *(str(a) for a in argv)]

    def members(self) -> set[int]:
        """PIDs in the group now (in its cpu hierarchy)."""
        text = self.procs_files[0].read_text()
        return {int(word) for word in text.split()}

    def usage_seconds(self) -> float:
        """CPU time (user + system) the group's processes used since it was created, the
        reaped ones included."""
        if self.layout.version == 1:
            accounting = self.directories[-1]
            return int((accounting / "cpuacct.usage").read_text()) / 1e9
        for line in (self.directories[0] / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise CgroupUnavailableError(f"{self.directories[0]}/cpu.stat has no usage_usec")

    def throttled_seconds(self) -> float:
        """How long the group was held back by its quota (cpu.stat)."""
        for line in (self.directories[0] / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":  # v1, nanoseconds
                return int(value) / 1e9
            if key == "throttled_usec":  # v2
                return int(value) / 1e6
        return 0.0


@dataclass
class CpuGroups:
    """The groups of one test network, under one parent per hierarchy named `tag`."""

    tag: str
    layout: Layout = field(default_factory=detect_layout)
    groups: dict[str, CpuGroup] = field(default_factory=dict)
    _parents: list[Path] = field(default_factory=list)

    def _roots(self) -> list[Path]:
        roots = [self.layout.cpu_root]
        if self.layout.accounting_root != self.layout.cpu_root:
            roots.append(self.layout.accounting_root)
        return roots

    def _make_parents(self) -> None:
        if self._parents:
            return
        for root in self._roots():
            parent = root / self.tag
            try:
                parent.mkdir()
            except OSError as error:
                self.remove()
                raise CgroupUnavailableError(f"cannot create {parent}: {error}") from error
            self._parents.append(parent)
            if self.layout.version == 2:  # hand the cpu controller down to our groups
                try:
                    for level in (root, parent):
                        (level / "cgroup.subtree_control").write_text("+cpu")
                except OSError as error:
                    self.remove()
                    raise CgroupUnavailableError(f"cannot enable cpu under {root}") from error

    def create(self, name: str, cores: float | None) -> CpuGroup:
        """A new group `name` capped at `cores` (None: counted, not capped)."""
        self._make_parents()
        group = CpuGroup(name, self.layout, tuple(parent / name for parent in self._parents))
        self.groups[name] = group
        try:
            for directory in group.directories:
                directory.mkdir()
            group.set_cores(cores)
        except OSError as error:
            self.remove()
            raise CgroupUnavailableError(f"cannot make the CPU group {name}: {error}") from error
        return group

    def remove(self, patience: float = 10.0) -> None:
        """Delete every group and the parents (their processes must have exited; a group whose
        last process is still being reaped is retried for up to `patience` seconds)."""
        directories = [d for group in self.groups.values() for d in group.directories]
        directories += list(self._parents)
        give_up = time.monotonic() + patience
        for directory in directories:
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > give_up:
                        break
                    for pid in _pids(directory):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, 9)
                    time.sleep(0.05)
        self.groups.clear()
        self._parents.clear()


def _pids(directory: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(word) for word in (directory / "cgroup.procs").read_text().split()]
    return []


def cgroups_writable() -> str | None:
    """None when CPU groups can be made here, else the reason why not."""
    try:
        groups = CpuGroups(f"dncheck{os.getpid()}")
        groups.create("probe", 0.5)
    except (CgroupUnavailableError, OSError) as error:
        return str(error)
    groups.remove()
    return None
