# Bounded memory on the object store's ingest path (issue 17): one large object (256 MiB here;
# DICOMNODE_LARGE_OBJECT_MIB=1024 for the 1 GiB run recorded in tests/benchmarks/results/)
# stored with DCMTK storescu through `dicomnode serve --workers 1 --store s3://...` (acceptor
# streaming to the broker, the worker spooling, then a multipart upload to SeaweedFS). Every
# process of the server keeps its peak resident set (VmHWM) far below the object's size, and
# the object read back from the bucket, streamed, has the data set's SHA-256.
#
# Rules: the object is written and hashed a MiB at a time (tests.workers.large_object); the
# servers are stopped at teardown; skipped only when the weed binary is missing.
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.benchmarks.proctree import scan, tree
from tests.synthetic import PATIENCE, free_port, run_tool, tool_env, wait_for_port
from tests.workers.large_object import dataset_digest, write_large_object
from tests.workers.seaweed import SeaweedServer, running_seaweed
from workers.store.objects import ObjectStore

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.interop, pytest.mark.cluster]

TITLE = "OBJECTS"
MIB = 1 << 20
OBJECT_MIB = int(os.environ.get("DICOMNODE_LARGE_OBJECT_MIB", "256"))
#: The most any server process may hold at its peak: the bound the streamed path promises
#: (a few multipart parts and stream chunks over the interpreter's own ~100 MB), far below the
#: object as soon as the object is large.
PEAK_LIMIT = 200 * MIB


def peak_resident(pid: int) -> int:
    """VmHWM (peak resident set size) of `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def role(pid: int) -> str:
    """The role a server process plays: the module after `-m` (serve itself: node.cli)."""
    words = [
        w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    name = words[words.index("-m") + 1] if "-m" in words[:-1] else words[0]
    return f"{name}[{pid}]"


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    with running_seaweed(tmp_path / "seaweed", volumes=OBJECT_MIB // 64 + 20) as server:
        yield server


def test_a_large_object_goes_to_the_bucket_in_bounded_memory(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    path, sent_digest, sent_length = write_large_object(tmp_path / "in", OBJECT_MIB * MIB)
    port = free_port()
    data = tmp_path / "data"
    url = seaweed.url("dicomnode", "large")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "serve",
            "--workers",
            "1",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--data-dir",
            str(data),
            "--store",
            url,
            "--no-fsync",
            "--ae-title",
            TITLE,
        ],
        env=tool_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(serve, port)
        processes = [process.pid for process in tree(serve.pid, scan())]
        idle = {role(pid): peak_resident(pid) for pid in processes}
        stored = run_tool(["storescu", "-aec", TITLE, "127.0.0.1", port, path])
        assert stored.returncode == 0, stored.output
        peaks = {role(pid): peak_resident(pid) for pid in processes}
        print(
            f"{OBJECT_MIB} MiB object: peak RSS (idle peak before the store) "
            + ", ".join(
                f"{name} {peak / MIB:.0f} MiB ({idle[name] / MIB:.0f})"
                for name, peak in sorted(peaks.items())
            )
        )
        assert any(name.startswith("workers") for name in peaks), peaks
        assert any(name.startswith("node.acceptor") for name in peaks), peaks
        assert all(peak < PEAK_LIMIT for peak in peaks.values()), peaks
        # What the object added to any process's peak is a fraction of the object:
        assert all(peaks[name] - idle[name] < OBJECT_MIB * MIB // 2 for name in peaks), peaks
        assert not (data / "objects").exists()
        assert [p for p in (data / "spool").rglob("*") if p.is_file()] == []

        client = ObjectStore(url, tmp_path / "probe").client
        (item,) = list(client.list_objects("dicomnode", prefix="large/", recursive=True))
        response = client.get_object("dicomnode", item.object_name)
        try:
            back_digest, back_length = dataset_digest(response.stream(MIB))
        finally:
            response.close()
            response.release_conn()
        assert (back_length, back_digest) == (sent_length, sent_digest)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(PATIENCE)
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
            log.close()
