# The CPU budget of a simulated host (tests.multihost.cgroups): which hierarchy is found, what
# the quota files say, that a wrapped process and its children land in the group, that the
# group's CPU is counted and held to the quota, and that remove() leaves nothing behind.
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.multihost.cgroups import (
    PERIOD_MICROSECONDS,
    CgroupUnavailableError,
    CpuGroup,
    CpuGroups,
    Layout,
    cgroups_writable,
    detect_layout,
)
from tests.synthetic import PATIENCE, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
COMOUNTED = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"

#: A child that burns CPU until it has used this much of its own, then prints it.
BURN = (
    "import os, sys, time\n"
    "child = os.fork()\n"  # the grandchild inherits the group and burns too
    "limit = float(sys.argv[1])\n"
    "while time.process_time() < limit:\n"
    "    pass\n"
    "if child:\n"
    "    os.waitpid(child, 0)\n"
)


def test_v1_cpu_and_cpuacct_hierarchies_are_found_mounted_apart_or_together():
    layout = detect_layout(HYBRID)
    assert layout.version == 1
    assert str(layout.cpu_root) == "/sys/fs/cgroup/cpu"
    assert str(layout.accounting_root) == "/sys/fs/cgroup/cpuacct"
    together = detect_layout(COMOUNTED)
    assert together.cpu_root == together.accounting_root
    assert str(together.cpu_root) == "/sys/fs/cgroup/cpu,cpuacct"


def test_v2_is_used_when_its_controllers_offer_cpu(tmp_path: Path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    layout = detect_layout(f"cgroup2 {tmp_path} cgroup2 rw,nosuid 0 0\n")
    assert layout == Layout(2, tmp_path, tmp_path)
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CgroupUnavailableError, match="cpu controller"):
        detect_layout(f"cgroup2 {tmp_path} cgroup2 rw,nosuid 0 0\n")
    with pytest.raises(CgroupUnavailableError, match="without cpuacct"):
        detect_layout("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n")


def test_quota_files_in_v1_and_v2_formats(tmp_path: Path):
    v1 = tmp_path / "v1"
    v1.mkdir()
    group = CpuGroup("w1", Layout(1, tmp_path, tmp_path), (v1,))
    group.set_cores(0.25)
    assert (v1 / "cpu.cfs_quota_us").read_text() == str(PERIOD_MICROSECONDS // 4)
    assert (v1 / "cpu.cfs_period_us").read_text() == str(PERIOD_MICROSECONDS)
    assert group.quota_cores() == 0.25
    group.set_cores(None)
    assert (v1 / "cpu.cfs_quota_us").read_text() == "-1"
    assert group.quota_cores() is None

    v2 = tmp_path / "v2"
    v2.mkdir()
    group = CpuGroup("w1", Layout(2, tmp_path, tmp_path), (v2,))
    group.set_cores(1.5)
    assert (v2 / "cpu.max").read_text() == f"{PERIOD_MICROSECONDS * 3 // 2} {PERIOD_MICROSECONDS}"
    assert group.quota_cores() == 1.5
    (v2 / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nthrottled_usec 700\n")
    assert group.usage_seconds() == 2.5
    assert group.throttled_seconds() == 0.0007
    group.set_cores(None)
    assert (v2 / "cpu.max").read_text() == f"max {PERIOD_MICROSECONDS}"


def test_wrap_joins_every_hierarchy_then_execs_the_command():
    layout = Layout(1, Path("/cg/cpu"), Path("/cg/cpuacct"))
    group = CpuGroup("w1", layout, (Path("/cg/cpu/t/w1"), Path("/cg/cpuacct/t/w1")))
    assert group.wrap(["ip", "netns", "exec", "ns", "python3", 1]) == [
        "sh",
        "-c",
        'echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@"',
        "sh",
        "/cg/cpu/t/w1/cgroup.procs",
        "/cg/cpuacct/t/w1/cgroup.procs",
        "ip",
        "netns",
        "exec",
        "ns",
        "python3",
        "1",
    ]


@pytest.fixture
def groups() -> Iterator[CpuGroups]:
    reason = cgroups_writable()
    if reason is not None:
        pytest.skip(f"CPU cgroups not writable here: {reason}")
    made = CpuGroups(f"dntest{time.monotonic_ns()}")
    try:
        yield made
    finally:
        made.remove()


def test_a_capped_process_tree_is_held_to_its_quota_and_counted(groups: CpuGroups):
    group = groups.create("burner", 0.2)
    assert group.quota_cores() == pytest.approx(0.2)
    burn_each = 0.3  # CPU seconds, child and grandchild each
    started = time.monotonic()
    child = subprocess.Popen(
        group.wrap([sys.executable, "-I", "-c", BURN, burn_each]), stdin=subprocess.DEVNULL
    )
    try:
        # The shell puts itself (then the Python child, same PID) in the group before exec.
        wait_until(lambda: child.pid in group.members(), "the child to join its group")
        assert child.wait(PATIENCE) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(PATIENCE)
    wall = time.monotonic() - started
    used = group.usage_seconds()
    # Both processes' CPU was counted in the group (interpreter start-up on top).
    assert used >= 2 * burn_each
    # 0.6 CPU seconds of two busy processes at 0.2 core: an uncapped pair on 2 cores would
    # show a ratio near 2, a ratio well under 1 is the quota at work (bound generous: bursts,
    # the first period).
    assert used / wall < 0.2 * 2
    assert group.throttled_seconds() > 0
    assert group.members() == set()


def test_remove_deletes_the_groups_and_their_parent(groups: CpuGroups):
    group = groups.create("a", None)
    other = groups.create("b", 0.5)
    assert group.quota_cores() is None
    assert other.quota_cores() == pytest.approx(0.5)
    directories = [*group.directories, *other.directories]
    parents = {directory.parent for directory in directories}
    assert all(directory.is_dir() for directory in directories)
    groups.remove()
    assert not any(path.exists() for path in [*directories, *parents])
