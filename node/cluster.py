# `dicomnode serve --workers N`: the embedded cluster on one host (workers, acceptors).
#
# Rules: every role is its own process (`python -m workers|node.acceptor`), talking over
# ipc:// endpoints in a private runtime directory: each acceptor binds one and routes to the
# workers itself (broker.embedded), each worker connects to every acceptor's. No broker
# process (that is for several hosts). The supervisor restarts a role process that dies, and
# on SIGTERM/SIGINT stops acceptors first (they finish their associations), then workers,
# and exits 0.
from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from node import evt
from node.observability import WORKER_RESTARTS, HealthEndpoint

log = logging.getLogger("dicomnode.serve")


@dataclass
class ClusterConfig:
    ae_title: str
    port: int
    bind: str
    data_dir: str
    workers: int
    acceptors: int = 1
    threads: int = 4
    max_associations: int = 64
    max_pdu: int = 16382
    known_aes: list[tuple[str, tuple[str, int]]] = field(default_factory=list)
    fsync: bool = True
    verbose: int = 0
    #: --log-format of every role process (node.logs: "text" or "json").
    log_format: str = "text"
    handlers_module: str | None = None
    runtime_dir: str | None = None
    acse_timeout: float = 30.0
    network_timeout: float = 60.0
    dimse_timeout: float | None = None
    #: The first acceptor serves metrics here, the broker on +1, workers on +2, +3, ...
    metrics_port: int | None = None
    drain_timeout: float = 30.0
    require_called_aet: bool = False
    require_calling_aet: list[str] = field(default_factory=list)
    #: The index database of the workers (a postgresql:// URL), None for DATA_DIR's SQLite.
    index: str | None = None
    #: The workers' object store (an s3:// URL, workers.store.objects), None for DATA_DIR.
    store: str | None = None
    #: Quiet period (s) after which a study raises on_study_stable, None for never.
    study_stable_seconds: float | None = None
    #: More acceptor options, as node.acceptor.forwarded_access_arguments() writes them
    #: (network bindings, per-AE limits, users file, TLS).
    acceptor_arguments: list[str] = field(default_factory=list)


@dataclass
class _Role:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0


def _custom_echo(module_name: str | None) -> bool:
    """Whether the workers' handlers module answers C-ECHO itself."""
    if not module_name:
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return True  # cannot tell: let the workers answer
    events = {item[0] for item in getattr(module, "evt_handlers", ())}
    return hasattr(module, "on_c_echo") or evt.EVT_C_ECHO in events


class Cluster:
    """Starts and supervises the role processes of one host."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.runtime_dir = config.runtime_dir or tempfile.mkdtemp(prefix="dicomnode-")
        os.makedirs(self.runtime_dir, exist_ok=True)
        #: Each acceptor routes to the workers itself (broker.embedded) on its own endpoint;
        #: every worker process connects to all of them (workers.runtime.WorkerSet).
        self.backends = [
            f"ipc://{self.runtime_dir}/backend-{i}" for i in range(max(1, config.acceptors))
        ]
        self.roles: list[_Role] = []
        self._stopping = False

    def _commands(self) -> list[_Role]:
        """The workers, then the acceptors, with their metrics ports (no broker process:
        the acceptors route; the broker process is for several hosts, `dicomnode broker`)."""
        config = self.config
        base = config.metrics_port
        worker = self._worker_command()
        roles = [
            _Role(
                f"worker-{i}",
                worker + (["--metrics-port", str(base + config.acceptors + 1 + i)] if base else []),
            )
            for i in range(config.workers)
        ]
        roles += [
            _Role(
                f"acceptor-{i}",
                self._acceptor_command(backend)
                + (["--metrics-port", str(base + i)] if base else []),
            )
            for i, backend in enumerate(self.backends)
        ]
        return roles

    def _role_command(self, module: str, *arguments: str) -> list[str]:
        """`python -m module arguments` with the logging options every role takes."""
        config = self.config
        verbose = ["-v"] * config.verbose + ["--log-format", config.log_format]
        return [sys.executable, "-m", module, *arguments, *verbose]

    def _worker_command(self) -> list[str]:
        config = self.config
        worker = self._role_command(
            "workers",
            *("--broker", *self.backends, "--data-dir", config.data_dir),
            *("--threads", str(config.threads), "--ae-title", config.ae_title),
            *("--max-pdu", str(config.max_pdu)),
        )
        for title, (host, port) in config.known_aes:
            worker += ["--known-ae", f"{title}={host}:{port}"]
        if not config.fsync:
            worker.append("--no-fsync")
        for option, value in (
            ("--handlers", config.handlers_module),
            ("--index", config.index),
            ("--store", config.store),
            ("--study-stable-seconds", config.study_stable_seconds),
        ):
            if value:
                worker += [option, str(value)]
        return worker

    def _acceptor_command(self, backend: str) -> list[str]:
        config = self.config
        acceptor = self._role_command(
            "node.acceptor",
            *("--workers-endpoint", backend),
            *("--port", str(config.port), "--bind", config.bind),
            *("--ae-title", config.ae_title, "--max-associations", str(config.max_associations)),
            *("--acse-timeout", str(config.acse_timeout)),
            *("--network-timeout", str(config.network_timeout)),
            *("--max-pdu", str(config.max_pdu)),
        )
        if config.acceptors > 1:
            acceptor.append("--reuse-port")
        if config.dimse_timeout is not None:
            acceptor += ["--dimse-timeout", str(config.dimse_timeout)]
        acceptor += ["--drain-timeout", str(config.drain_timeout)]
        # the workers share this host's data directory: data sets go to them as files
        acceptor += ["--handoff-dir", os.path.join(config.data_dir, "spool")]
        if not _custom_echo(config.handlers_module):
            acceptor.append("--local-echo")  # built-in Verification: the acceptor answers
        if config.require_called_aet:
            acceptor.append("--require-called-aet")
        for title in config.require_calling_aet:
            acceptor += ["--require-calling-aet", title]
        return acceptor + config.acceptor_arguments

    def start(self) -> None:
        os.makedirs(self.config.data_dir, exist_ok=True)
        self.roles = self._commands()
        for role in self.roles:
            role.process = subprocess.Popen(role.command)

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def _terminate(self, prefix: str, grace: float) -> None:
        chosen = [r for r in self.roles if r.name.startswith(prefix) and r.process is not None]
        for role in chosen:
            if role.process is not None and role.process.poll() is None:
                role.process.terminate()
        deadline = time.monotonic() + grace
        for role in chosen:
            assert role.process is not None  # noqa: S101 - filtered above
            try:
                role.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                role.process.kill()
                role.process.wait()

    def run(self) -> int:
        """Supervise until stopped; returns the exit code."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.start()
        health = None
        if self.config.metrics_port:
            # the supervisor's own endpoint, after the roles' ports: role restarts
            health = HealthEndpoint(
                self.config.metrics_port + self.config.acceptors + self.config.workers + 1
            )
        while not self._stopping:
            for role in self.roles:
                process = role.process
                if process is not None and process.poll() is not None and not self._stopping:
                    role.restarts += 1
                    WORKER_RESTARTS.labels(role.name.split("-")[0]).inc()
                    log.warning(
                        "%s exited with %s: restarting (restart %d)",
                        role.name,
                        process.returncode,
                        role.restarts,
                    )
                    role.process = subprocess.Popen(role.command)
            time.sleep(0.2)
        self._terminate("acceptor", self.config.drain_timeout + 5.0)
        self._terminate("worker", 30.0)
        if health is not None:
            health.close()
        return 0


def importable_name(function: Any, what: str) -> str:
    """MODULE:QUALNAME of `function`, checked to import back to the same object; ValueError
    naming `what` when a worker process could not import it (lambda, closure, __main__)."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    problem = None
    if not module or not qualname:
        problem = "it has no module-level name"
    elif "<" in qualname:
        problem = f"{qualname!r} is a lambda or a nested function"
    elif module == "__main__":
        problem = "it is defined in the __main__ script, which workers cannot import"
    else:
        try:
            value: Any = importlib.import_module(module)
            for part in qualname.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as error:
            problem = f"importing {module}:{qualname} fails ({error})"
        else:
            if value is not function:
                problem = f"{module}:{qualname} is a different object"
    if problem is not None:
        raise ValueError(
            f"{what} {function!r} cannot run in a worker process: {problem}. Define it at module "
            "level in an importable module, or start the AE with workers=0."
        )
    return f"{module}:{qualname}"


class LocalCluster:
    """N worker processes on this host, for `AE.start(workers=N)`: they connect to `backend`,
    which the AE binds (it routes to them itself: broker.embedded)."""

    def __init__(
        self,
        workers: int,
        *,
        callbacks: dict[str, str],
        events: dict[str, str],
        data_dir: str | None,
        ae_title: str,
        known_aes: dict[str, tuple[str, int]],
        threads: int = 4,
    ) -> None:
        self.runtime_dir = tempfile.mkdtemp(prefix="dicomnode-ae-")
        self.backend = f"ipc://{self.runtime_dir}/backend"
        python = sys.executable
        worker = [
            python,
            "-m",
            "workers",
            "--broker",
            self.backend,
            "--threads",
            str(threads),
            "--ae-title",
            ae_title,
        ]
        if data_dir:
            worker += ["--data-dir", data_dir]
        for name, target in callbacks.items():
            worker += ["--callback", f"{name}={target}"]
        for name, target in events.items():
            worker += ["--event", f"{name}={target}"]
        for title, (host, port) in known_aes.items():
            worker += ["--known-ae", f"{title}={host}:{port}"]
        self.commands = [worker] * workers
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        env = dict(os.environ)
        path = os.pathsep.join(p for p in sys.path if p)
        env["PYTHONPATH"] = path
        self.processes = [subprocess.Popen(command, env=env) for command in self.commands]

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
