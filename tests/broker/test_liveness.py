# broker.liveness: the pure heartbeat schedule shared by the bridge and the worker.
from __future__ import annotations

from broker.liveness import Liveness


def test_heartbeats_come_once_per_interval():
    link = Liveness.starting(1.0, 3, now=100.0)
    assert not link.heartbeat_due(100.5)
    assert link.heartbeat_due(101.0)
    assert not link.heartbeat_due(101.2)  # not again within the same interval
    assert link.heartbeat_due(102.3)
    assert link.next_heartbeat == 103.3


def test_the_other_end_is_lost_after_liveness_silent_intervals():
    link = Liveness.starting(0.5, 3, now=10.0)
    assert link.patience == 1.5
    assert not link.lost(11.5)  # exactly the patience: not yet
    assert link.lost(11.6)
    assert round(link.silent_for(11.6), 6) == 1.6
    link.heard(11.6)
    assert not link.lost(12.0)


def test_a_reconnect_restarts_the_silence():
    link = Liveness.starting(1.0, 2, now=0.0)
    assert link.lost(5.0)
    link.reconnected(5.0)
    assert not link.lost(6.0)
    assert link.lost(7.5)
