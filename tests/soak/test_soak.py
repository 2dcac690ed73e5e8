# Issue 7's soak test: many concurrent associations held by one acceptor process, then many
# sequential ones, with no file descriptor or memory leak.
#
# Full size (DICOMNODE_SOAK_FULL=1): 1000 concurrent associations held, then 10 000
# sequential ones (connect, A-ASSOCIATE, C-ECHO, A-RELEASE). The default run (CI) uses a
# smaller size so that it stays well under a minute; DICOMNODE_SOAK_CONCURRENT and
# DICOMNODE_SOAK_SEQUENTIAL set any other size. Measured on the acceptor process:
# /proc/PID/fd and VmRSS after a warm-up, while the associations are held, after they are
# released, and after the sequential run. Figures are printed (for the README).
#
# Rules: the server is `dicomnode serve` in a subprocess (--workers 0: everything in one
# process; --workers 1: the cluster, measured on its `node.acceptor` process); the client is
# raw asyncio sockets in this process; waits are bounded, never fixed sleeps.
from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from tests.soak.peer import RawAssociation
from tests.soak.server import fd_count, rss_bytes, serve
from tests.synthetic import free_port, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

FULL = os.environ.get("DICOMNODE_SOAK_FULL") == "1"
CONCURRENT = int(os.environ.get("DICOMNODE_SOAK_CONCURRENT", 1000 if FULL else 200))
SEQUENTIAL = int(os.environ.get("DICOMNODE_SOAK_SEQUENTIAL", 10_000 if FULL else 1000))
WARM_UP = 200
#: Associations being opened at once while building up the concurrent set.
OPENING = 100
#: Bounds: descriptors back within this many of the baseline, memory within this much.
FD_SLACK = 10
RSS_SLACK = 20 << 20
MIB = 1 << 20


@dataclass
class Sample:
    fds: int
    rss: int

    @classmethod
    def of(cls, pid: int) -> Sample:
        return cls(fd_count(pid), rss_bytes(pid))

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.rss / MIB:.1f} MiB RSS"


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    """The client side holds CONCURRENT sockets; the server inherits the same limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = CONCURRENT + 1024
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _settle(pid: int, ceiling: int, what: str) -> None:
    """Wait until the server has closed the sockets of released associations: its descriptor
    count is at most `ceiling` and the same in two looks in a row."""
    previous = [-1]

    def settled() -> bool:
        count = fd_count(pid)
        stable = count == previous[0]
        previous[0] = count
        return stable and count <= ceiling

    wait_until(settled, f"{what} (at most {ceiling})", step=0.1)


async def _sequential(port: int, count: int) -> float:
    """`count` associations one after the other; returns associations per second."""
    started = time.perf_counter()
    for _ in range(count):
        association = await asyncio.wait_for(RawAssociation.associate(port), 10)
        await asyncio.wait_for(association.echo(), 10)
        await asyncio.wait_for(association.release(), 10)
    return count / (time.perf_counter() - started)


async def _open_many(port: int, count: int) -> tuple[list[RawAssociation], float]:
    """`count` associations opened (OPENING at a time) and left open; also the rate."""
    gate = asyncio.Semaphore(OPENING)

    async def one() -> RawAssociation:
        async with gate:
            return await asyncio.wait_for(RawAssociation.associate(port), 30)

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    rate = count / (time.perf_counter() - started)
    held = [result for result in results if isinstance(result, RawAssociation)]
    failures = [result for result in results if not isinstance(result, RawAssociation)]
    if failures:
        await asyncio.gather(*(association.close() for association in held))
        raise AssertionError(f"{len(failures)} of {count} associations failed: {failures[0]!r}")
    return held, rate


async def _release_all(held: list[RawAssociation]) -> None:
    gate = asyncio.Semaphore(OPENING)

    async def one(association: RawAssociation) -> None:
        async with gate:
            await asyncio.wait_for(association.echo(), 30)
            await asyncio.wait_for(association.release(), 30)

    await asyncio.gather(*(one(association) for association in held))


async def _warm_up(port: int) -> None:
    await _sequential(port, WARM_UP // 2)
    held, _ = await _open_many(port, min(CONCURRENT, WARM_UP // 2))
    await _release_all(held)


@pytest.mark.timeout(1800 if FULL else 900)  # a hang guard, above PATIENCE
@pytest.mark.parametrize("workers", [0, 1], ids=["one-process", "cluster-acceptor"])
def test_soak_no_descriptor_or_memory_leak(
    tmp_path: Path, workers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    options = [
        "--max-associations",
        str(CONCURRENT + 16),
        "--network-timeout",
        "600",
        "--acse-timeout",
        "60",
    ]
    with serve(tmp_path, port, workers, *options) as server:
        pid = server.acceptor_pid()
        initial = Sample.of(pid)
        # warm-up: imports, caches and allocator pools reach their working size
        asyncio.run(_warm_up(port))
        _settle(pid, initial.fds + FD_SLACK, "descriptors after the warm-up")
        baseline = Sample.of(pid)

        async def hold() -> tuple[Sample, float]:
            held, rate = await _open_many(port, CONCURRENT)
            during = Sample.of(pid)
            await _release_all(held)  # each one still answers C-ECHO, then releases
            return during, rate

        during, open_rate = asyncio.run(hold())
        assert during.fds >= baseline.fds + CONCURRENT, f"not all held: {during}"
        _settle(pid, baseline.fds + FD_SLACK, "descriptors after the release")
        released = Sample.of(pid)
        sequential_rate = asyncio.run(_sequential(port, SEQUENTIAL))
        _settle(pid, baseline.fds + FD_SLACK, "descriptors after the sequential run")
        after = Sample.of(pid)
        log_tail = server.tail()
    report = (
        f"soak --workers {workers}: start {initial}; after warm-up {baseline}; "
        f"{CONCURRENT} held: {during} ({open_rate:.0f} associations/s opened); "
        f"released: {released}; after {SEQUENTIAL} sequential "
        f"({sequential_rate:.0f} associations/s): {after}"
    )
    with capsys.disabled():
        print("\n" + report)
    assert released.fds <= baseline.fds + FD_SLACK, report
    assert after.fds <= baseline.fds + FD_SLACK, report
    assert released.rss <= baseline.rss + RSS_SLACK, report
    assert after.rss <= baseline.rss + RSS_SLACK, report
    assert "Traceback" not in log_tail, log_tail
