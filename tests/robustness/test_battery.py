# Issue 7's malformed-input battery against a live `dicomnode serve` (in-process mode).
#
# Rules: ONE server for the module, its output in a log file, stopped at the end. Each case
# (tests/robustness/cases.py) goes over a raw socket; what came back must be one of the case's
# acceptable outcomes, and then the server must still be running and a normal C-ECHO
# association must succeed. At the end: no traceback in the log, RSS growth bounded, and
# connections left open on purpose were closed by the server's ARTIM timer (a short
# --acse-timeout) or its idle timer (--network-timeout) while the battery ran. No case waits
# for those timers: a case that leaves the server waiting for bytes half-closes instead.
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from node.ul.pdu import ReleaseRP
from tests.robustness.cases import all_cases
from tests.robustness.golden import ECHO_PDATA, ECHO_RQ, MAXIMUM_PDU, PROBE, RELEASE_RQ
from tests.robustness.wire import Answer, Lingering, Outcome, RawPeer
from tests.synthetic import PATIENCE, free_port, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.robustness.case import Case

pytestmark = pytest.mark.cluster

#: `serve --acse-timeout`: the ARTIM timer (PS3.8 9.1.5).
ARTIM = 3.0
#: `serve --network-timeout`: an established association idle this long is aborted.
NETWORK_TIMEOUT = 5.0
#: How late past its timer a lingering connection may be closed (timer granularity, load).
TIMER_SLACK = 3.0
#: RSS growth allowed over the whole battery, after warm-up.
RSS_GROWTH_LIMIT = 30 << 20
WARM_UP_ASSOCIATIONS = 30
ESTABLISHED_OUTCOMES = frozenset(
    {Outcome.ACCEPT, Outcome.ACCEPT_NONE, Outcome.FAILURE, Outcome.ANSWERED, Outcome.IGNORED}
)
CASES = all_cases()
RESULTS: dict[str, tuple[str, Answer]] = {}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    log: Path
    baseline_rss: int
    lingering: dict[str, Lingering]
    started: float


def rss(pid: int) -> int:
    """Resident set size of `pid` in bytes (/proc/<pid>/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def pdu_types(data: bytes | bytearray) -> list[int]:
    """The type of each PDU in a byte stream (a partial PDU at the end counts too)."""
    types = []
    offset = 0
    while offset + 6 <= len(data):
        types.append(data[offset])
        offset += 6 + int.from_bytes(data[offset + 2 : offset + 6], "big")
    return types


def echo_association(port: int) -> None:
    """A normal association: the echoscu A-ASSOCIATE-RQ, a C-ECHO, A-RELEASE."""
    with RawPeer(port) as peer:
        peer.associate(ECHO_RQ)
        peer.send(PROBE)
        answer = peer.collect(probe=True)
        assert answer.outcome is Outcome.IGNORED, f"C-ECHO association: {answer.describe()}"
        ending = peer.release(RELEASE_RQ)
        assert isinstance(ending, ReleaseRP), f"release answered with {ending!r}"


def run_case(port: int, case: Case) -> Answer:
    with RawPeer(port) as peer:
        if case.association is not None:
            peer.associate(case.association)
        for part in case.payload:
            peer.send(part)
        if case.probe:
            peer.send(PROBE)
        if case.half_close:
            peer.half_close()
        answer = peer.collect(probe=case.probe)
        if answer.outcome in ESTABLISHED_OUTCOMES and not peer.half_closed:
            ending = peer.release(RELEASE_RQ)
            assert isinstance(ending, ReleaseRP), (
                f"{case.id}: the association survived ({answer.describe()}) but A-RELEASE-RQ "
                f"was answered with {ending!r}"
            )
        return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("robustness")
    port = free_port()
    log = folder / "serve.log"
    command = [sys.executable, "-m", "node.cli", "serve", "--port", str(port)]
    command += ["--bind", "127.0.0.1", "--data-dir", str(folder / "data"), "--no-fsync"]
    command += ["--acse-timeout", str(ARTIM), "--network-timeout", str(NETWORK_TIMEOUT)]
    command += ["--drain-timeout", "2", "--max-pdu", str(MAXIMUM_PDU), "--workers", "0"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_port(process, port)
        for _ in range(WARM_UP_ASSOCIATIONS):
            echo_association(port)
        limit = NETWORK_TIMEOUT + TIMER_SLACK + 60.0
        lingering = {
            # Sta2, nothing sent: AE-5 started ARTIM at connection
            "silent": Lingering(port, b"", limit),
            # Sta2, a PDU never completed
            "partial-rq": Lingering(port, ECHO_RQ[:100], limit),
            # Sta13 after our A-ABORT (AA-1), the peer never closes
            "after-abort": Lingering(port, b"GET / HTTP/1.0\r\n\r\n", limit),
            # Sta13 after our A-RELEASE-RP (AR-4), the peer never closes
            "after-release": Lingering(port, ECHO_RQ + ECHO_PDATA + RELEASE_RQ, limit),
            # Sta6, the peer goes quiet: the network timeout aborts the association
            "idle-established": Lingering(port, ECHO_RQ, limit),
        }
        yield Server(process, port, folder, log, rss(process.pid), lingering, time.monotonic())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(PATIENCE)
        if process.poll() is None:
            process.kill()
            process.wait(PATIENCE)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_input(server: Server, case: Case) -> None:
    answer = run_case(server.port, case)
    RESULTS[case.id] = (case.category, answer)
    expected = ", ".join(sorted(outcome.value for outcome in case.expect))
    assert answer.outcome in case.expect, f"{case.id}: {answer.describe()} (expected {expected})"
    if case.statuses:
        assert set(answer.statuses) <= case.statuses, f"{case.id}: {answer.describe()}"
    assert server.process.poll() is None, f"the server died on {case.id}"
    echo_association(server.port)


def test_server_survived_the_battery(server: Server) -> None:
    """Runs after the cases: process up, log clean, RSS bounded, ARTIM closed the stragglers."""
    assert server.process.poll() is None
    echo_association(server.port)
    growth = rss(server.process.pid) - server.baseline_rss
    deadline = server.started + NETWORK_TIMEOUT + TIMER_SLACK
    closed = {
        name: connection.wait(max(deadline - time.monotonic(), 0.0) + 1.0)
        for name, connection in server.lingering.items()
    }
    received = {
        name: pdu_types(connection.received) for name, connection in server.lingering.items()
    }
    summary = {
        "cases": len(RESULTS),
        "rss_growth_bytes": growth,
        "artim_closed_after_seconds": closed,
        "outcomes": dict(Counter(answer.describe() for _, answer in RESULTS.values())),
        "by_category": {
            category: dict(Counter(a.outcome.value for c, a in RESULTS.values() if c == category))
            for category in sorted({category for category, _ in RESULTS.values()})
        },
        "slowest_case_seconds": max((a.seconds for _, a in RESULTS.values()), default=0.0),
        "per_case": {case_id: answer.describe() for case_id, (_, answer) in RESULTS.items()},
    }
    (server.folder / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({key: value for key, value in summary.items() if key != "per_case"}))
    log = server.log.read_text(errors="replace")
    for marker in ("Traceback", "Exception in callback", "exception was never retrieved"):
        assert marker not in log, f"{marker!r} in the server log:\n{log[-4000:]}"
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
    for name, seconds in closed.items():
        timer = NETWORK_TIMEOUT if name == "idle-established" else ARTIM
        assert seconds is not None, f"lingering connection {name!r} was never closed"
        assert timer - 0.5 <= seconds <= timer + TIMER_SLACK, f"{name!r} closed after {seconds} s"
    assert received == {
        "silent": [],
        "partial-rq": [],
        "after-abort": [0x07],
        "after-release": [0x02, 0x04, 0x06],
        "idle-established": [0x02, 0x07],
    }
    outside = sorted(
        p.name
        for p in server.folder.iterdir()
        if p.name not in ("data", "serve.log", "summary.json")
    )
    assert not outside, f"files written outside the data folder: {outside}"
    assert not list(server.folder.rglob("etc")), "a path made from a peer's UID was used"
