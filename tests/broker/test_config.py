# The broker's configuration and command line parsing (broker/config.py).
from __future__ import annotations

import pytest

from broker.config import BrokerConfig, parse_args


def test_parse_args_fills_the_config():
    config = parse_args(
        ["--frontend", "tcp://*:5555", "--backend", "ipc:///tmp/be", "--max-queue", "5", "-vv"]
    )
    assert config == BrokerConfig(
        frontend="tcp://*:5555", backend="ipc:///tmp/be", max_queue=5, verbose=2
    )
    assert (config.heartbeat_interval, config.heartbeat_liveness) == (1.0, 3)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"frontend": ""}, "required"),
        ({"backend": "tcp://*:1"}, "must differ"),
        ({"heartbeat_interval": 0.0}, "interval"),
        ({"heartbeat_liveness": 0}, "liveness"),
        ({"max_queue": -1}, "queue"),
    ],
)
def test_config_refuses_nonsense(options, complaint):
    with pytest.raises(ValueError, match=complaint):
        BrokerConfig(**{"frontend": "tcp://*:1", "backend": "tcp://*:2", **options})
