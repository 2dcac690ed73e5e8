# A real PostgreSQL server for the index tests, started in a temporary directory.
#
# Rules: uses the Debian postgresql binaries (initdb, pg_ctl); the server runs as the
# `postgres` user when we are root (PostgreSQL refuses to run as root), listens on 127.0.0.1
# on a free port with fsync off, and is stopped (immediate mode) and removed at teardown.
# Each test gets its own schema (search_path), so tests never see each other's rows.
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

START_TIMEOUT = 60


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "pg_ctl").is_file() and Path(folder, "initdb").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server: `url(schema)` names a database schema of it."""

    folder: Path
    port: int
    bin: Path
    user: str | None
    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()  # e.g. `ip netns exec NS`: where the server runs

    def _command(self, *args: str) -> list[str]:
        command = ["runuser", "-u", self.user, "--", *args] if self.user else list(args)
        return [*self.prefix, *command]

    def url(self, schema: str | None = None) -> str:
        base = f"postgresql://postgres@{self.address}:{self.port}/postgres"
        return f"{base}?options=-csearch_path%3D{schema}" if schema else base

    def new_schema(self) -> str:
        """A fresh, empty schema; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            self._command(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ),
            check=False,
            capture_output=True,
            timeout=START_TIMEOUT,
        )


@contextlib.contextmanager
def postgres_server(
    address: str = "127.0.0.1",
    *,
    prefix: tuple[str, ...] = (),
    trusted_network: str | None = None,
) -> Iterator[PostgresServer]:
    """Start a throw-away PostgreSQL server (RuntimeError with the reason if it cannot),
    listening on `address`, run under the command `prefix` (a network namespace's `ip netns
    exec NS`), trusting clients from `trusted_network` (a CIDR) beside the loopback ones."""
    folder_bin = binaries()
    if folder_bin is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    user = None
    folder = Path(tempfile.mkdtemp(prefix="dicomnode-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        user = "postgres"
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = PostgresServer(folder, _free_port(), folder_bin, user, address, prefix)
    data = folder / "data"
    try:
        initdb = subprocess.run(
            server._command(
                str(folder_bin / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        if trusted_network:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trusted_network} trust\n")
        options = (
            f"-p {server.port} -k {folder} -c listen_addresses={address} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            server._command(
                str(folder_bin / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "server.log"),
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 10,
            check=False,
        )
        if started.returncode != 0:
            log = (folder / "server.log").read_text(errors="replace")[-500:]
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} {log}")
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
