# The benchmark suite's process-tree CPU counter (tests/benchmarks/proctree.py) against real
# processes: a grandchild that burns a known amount of CPU is counted while it lives and, once
# its parent has waited for it, through the parent's cutime/cstime. Not timed: the processes
# report when they are done, and the bounds allow for clock-tick rounding.
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.benchmarks.proctree import parse_stat, scan, tree, tree_cpu_seconds

BURN = 0.3  # CPU seconds the grandchild uses

# The child starts a grandchild that burns BURN seconds of CPU and says so; with `reap`, the
# grandchild then exits and the child waits for it. Then the child says "ready" and blocks on
# stdin, so the tree is quiet while the test reads it.
CHILD = textwrap.dedent(
    f"""
    import subprocess, sys
    burn = "import sys, time\\nwhile time.process_time() < {BURN}: pass\\n"
    burn += "print('burnt', flush=True)\\n"
    burn += "sys.stdin.read() if sys.argv[1] == 'stay' else None\\n"
    grandchild = subprocess.Popen(
        [sys.executable, "-c", burn, sys.argv[1]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert grandchild.stdout.readline() == "burnt\\n"
    if sys.argv[1] == "reap":
        grandchild.wait()
    print(grandchild.pid, flush=True)
    sys.stdin.read()
    """
)


def _start(mode: str) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def _stop(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.close()
    child.stdout.close()
    assert child.wait(30) == 0


@pytest.mark.parametrize("mode", ["stay", "reap"])
def test_tree_includes_the_grandchild(mode):
    child, grandchild = _start(mode)
    try:
        processes = scan()
        pids = {process.pid for process in tree(child.pid, processes)}
        alone = processes[child.pid].own
        total = tree_cpu_seconds(child.pid)
    finally:
        _stop(child)
    if mode == "stay":
        assert grandchild in pids
    else:
        assert grandchild not in pids
        assert processes[child.pid].reaped >= BURN - 0.05
    # the grandchild's burn, whether it lives or was reaped, beyond the child's own CPU
    assert total - alone >= BURN - 0.05


def test_missing_root_and_odd_command_names():
    with pytest.raises(ProcessLookupError):
        tree(-1, scan())
    stat = "42 (a b) c)) S 7 42 42 0 -1 0 0 0 0 0 150 50 20 10 20 0 1 0 0 0 0"
    process = parse_stat(stat, 100)
    assert (process.pid, process.parent) == (42, 7)
    assert process.own == pytest.approx(2.0)
    assert process.reaped == pytest.approx(0.3)
