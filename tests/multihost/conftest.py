# The multi-host fixture: a private network of namespaces (HAProxy, two acceptor hosts, a broker
# host, two worker hosts, a client) on one bridge; always torn down, processes included.
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from tests.multihost.netns import NamespaceUnavailableError, Network

if TYPE_CHECKING:
    from collections.abc import Iterator

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


@pytest.fixture
def network() -> Iterator[Network]:
    """The test network; skipped (with the reason) where namespaces cannot be created."""
    if shutil.which("ip") is None:
        pytest.skip("network namespaces unavailable: iproute2 (`ip`) is not installed")
    net = Network(HOSTS)
    try:
        try:
            net.create()
        except NamespaceUnavailableError as error:
            pytest.skip(f"network namespaces unavailable (needs CAP_NET_ADMIN): {error}")
        yield net
    finally:
        net.destroy()
