# The multi-host fixtures: a private network of namespaces (HAProxy, two acceptor hosts, a broker
# host, two worker hosts, a client; with a storage host for the object-store run) on one bridge;
# always torn down, processes included.
from __future__ import annotations

import contextlib
import shutil
from typing import TYPE_CHECKING

import pytest

from tests.multihost.netns import NamespaceUnavailableError, Network

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: host name -> last octet of its address on the test subnet (10.77.0.0/24).
HOSTS = {
    "lb": 2,
    "acceptor1": 11,
    "acceptor2": 12,
    "broker": 20,
    "worker1": 31,
    "worker2": 32,
    "client": 50,
}
#: The object-store run's hosts: the same, and one for SeaweedFS and PostgreSQL.
STORAGE_HOSTS = {**HOSTS, "storage": 40}


@contextlib.contextmanager
def _network(hosts: Mapping[str, int]) -> Iterator[Network]:
    """The test network; skipped (with the reason) where namespaces cannot be created."""
    if shutil.which("ip") is None:
        pytest.skip("network namespaces unavailable: iproute2 (`ip`) is not installed")
    net = Network(hosts)
    try:
        try:
            net.create()
        except NamespaceUnavailableError as error:
            pytest.skip(f"network namespaces unavailable (needs CAP_NET_ADMIN): {error}")
        yield net
    finally:
        net.destroy()


@pytest.fixture
def network() -> Iterator[Network]:
    with _network(HOSTS) as net:
        yield net


@pytest.fixture
def storage_network() -> Iterator[Network]:
    with _network(STORAGE_HOSTS) as net:
        yield net
