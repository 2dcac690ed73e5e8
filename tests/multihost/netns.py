# A private test network made of Linux network namespaces: one namespace per "host", each with
# one veth interface plugged into a bridge that lives in its own switch namespace.
#
# Rules: everything is created inside namespaces this module makes (nothing is added to the
# caller's namespace, no route leads outside: each host knows only the test subnet), names are
# unique per test process, and destroy() always kills every process left in the namespaces (by
# PID, from `ip netns pids`) and deletes the namespaces, whatever state they are in.
# A host may get a CPU budget (limit_cpu: a cgroup with a quota, tests.multihost.cgroups): every
# process started on it then joins that group before entering the namespace, and destroy()
# deletes the groups after the processes are gone.
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.multihost.cgroups import CpuGroup, CpuGroups
from tests.synthetic import PATIENCE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

SUBNET_PREFIX = "10.77.0"
PREFIX_LENGTH = 24
HOST_INTERFACE = "eth0"
BRIDGE = "br0"


class NamespaceUnavailableError(RuntimeError):
    """Network namespaces cannot be created here (no iproute2, or no CAP_NET_ADMIN/SYS_ADMIN)."""


@dataclass(frozen=True, slots=True)
class Host:
    """One simulated machine: a network namespace with one address on the test subnet."""

    name: str
    namespace: str
    address: str
    port_name: str  # the veth end on the bridge, in the switch namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=PATIENCE, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Network:
    """Hosts on one bridge; `hosts` maps a host name to its last address octet."""

    hosts_wanted: Mapping[str, int]
    tag: str = field(default_factory=lambda: f"dnmh{os.getpid()}{uuid.uuid4().hex[:4]}")
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    cpu: CpuGroups | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def switch(self) -> str:
        return f"{self.tag}-switch"

    def _add_namespace(self, name: str) -> None:
        result = _ip("netns", "add", name, check=False)
        if result.returncode != 0:
            raise NamespaceUnavailableError(
                f"`ip netns add` failed: {result.stderr.strip() or result.returncode}"
            )
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def create(self) -> None:
        """Build the switch namespace with its bridge, then every host plugged into it."""
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for index, (name, octet) in enumerate(self.hosts_wanted.items()):
            namespace = f"{self.tag}-{name}"
            self._add_namespace(namespace)
            host = Host(name, namespace, f"{SUBNET_PREFIX}.{octet}", f"p{index}")
            # Both veth ends are born in our namespaces: the switch port and the host's eth0.
            _ip(
                "-n",
                self.switch,
                "link",
                "add",
                host.port_name,
                "type",
                "veth",
                "peer",
                "name",
                HOST_INTERFACE,
                "netns",
                namespace,
            )
            _ip("-n", self.switch, "link", "set", host.port_name, "master", BRIDGE, "up")
            _ip(
                "-n",
                namespace,
                "addr",
                "add",
                f"{host.address}/{PREFIX_LENGTH}",
                "dev",
                HOST_INTERFACE,
            )
            _ip("-n", namespace, "link", "set", HOST_INTERFACE, "up")
            self.hosts[name] = host

    def address(self, host: str) -> str:
        return self.hosts[host].address

    def limit_cpu(self, host: str, cores: float | None) -> CpuGroup:
        """Give `host` its own CPU group capped at `cores` (None: counted only); processes
        started on it from now on run in the group. Raises CgroupUnavailableError."""
        if self.cpu is None:
            self.cpu = CpuGroups(self.tag)
        group = self.cpu.groups.get(host)
        if group is None:
            return self.cpu.create(host, cores)
        group.set_cores(cores)
        return group

    def cpu_group(self, host: str) -> CpuGroup | None:
        return None if self.cpu is None else self.cpu.groups.get(host)

    def command(self, host: str, argv: Sequence[object], *, capped: bool = True) -> list[str]:
        """`argv` as run on `host` (ip netns exec NAMESPACE ...), inside the host's CPU group
        when it has one and `capped` (joined before `ip netns exec`, whose private /sys hides
        the cgroup mounts; it execs, so the PID stays the same)."""
        command = ["ip", "netns", "exec", self.hosts[host].namespace, *(str(a) for a in argv)]
        group = self.cpu_group(host)
        return group.wrap(command) if group is not None and capped else command

    def start(
        self,
        host: str,
        argv: Sequence[object],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process on `host`, output to `log`; killed by destroy()."""
        with log.open("ab") as handle:
            process = subprocess.Popen(
                self.command(host, argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        with self._lock:
            self.processes.append(process)
        return process

    def run(
        self,
        host: str,
        argv: Sequence[object],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        capped: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command on `host` to completion (killed after `timeout` seconds); with
        `capped` False outside the host's CPU group (an observer's probe, not the host's work)."""
        return subprocess.run(
            self.command(host, argv, capped=capped),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def set_link(self, host: str, up: bool) -> None:
        """Plug `host`'s network cable in or out (its eth0 goes up or down)."""
        _ip("-n", self.hosts[host].namespace, "link", "set", HOST_INTERFACE, "up" if up else "down")

    def pids(self, host: str) -> list[int]:
        """Processes running in `host`'s namespace now."""
        return self._namespace_pids(self.hosts[host].namespace)

    @staticmethod
    def _namespace_pids(namespace: str) -> list[int]:
        result = _ip("netns", "pids", namespace, check=False)
        return [int(word) for word in result.stdout.split() if word.isdigit()]

    def destroy(self) -> None:
        """Kill every process we started and anything still inside our namespaces, then delete
        the namespaces (which removes the veth pairs and the bridge with them)."""
        with self._lock:
            processes = list(self.processes)
        for process in processes:
            if process.poll() is None:
                process.kill()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(PATIENCE)
        for namespace in self.namespaces:
            for pid in self._namespace_pids(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for namespace in reversed(self.namespaces):
            _ip("netns", "del", namespace, check=False)
        self.namespaces.clear()
        if self.cpu is not None:
            self.cpu.remove()
