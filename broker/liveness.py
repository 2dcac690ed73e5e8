# Heartbeating of one end of a broker link (the zguide's Paranoid Pirate, chapter 4): when to
# send the next heartbeat, and when the other end counts as lost after `liveness` silent
# intervals. Used by the acceptor's bridge and by the worker for their link to the broker; the
# broker keeps its own per-peer expiry in broker.routing.
#
# Rules: pure and sans-IO: no clock (the caller passes `now`, time.monotonic() seconds), no
# sockets; the caller sends the heartbeat and reconnects.
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Liveness:
    """One link's heartbeat schedule and the last time anything arrived on it."""

    interval: float
    liveness: int
    last_heard: float
    next_heartbeat: float

    @classmethod
    def starting(cls, interval: float, liveness: int, now: float) -> Liveness:
        """A link connected at `now`: heard now, first heartbeat one interval later."""
        return cls(interval, liveness, last_heard=now, next_heartbeat=now + interval)

    @property
    def patience(self) -> float:
        """Seconds of silence after which the other end is lost."""
        return self.interval * self.liveness

    def heard(self, now: float) -> None:
        """Something (any message) arrived from the other end."""
        self.last_heard = now

    def silent_for(self, now: float) -> float:
        return now - self.last_heard

    def lost(self, now: float) -> bool:
        """True when the other end has been silent longer than `patience`."""
        return self.silent_for(now) > self.patience

    def heartbeat_due(self, now: float) -> bool:
        """True (once per interval) when a heartbeat should be sent now."""
        if now < self.next_heartbeat:
            return False
        self.next_heartbeat = now + self.interval
        return True

    def reconnected(self, now: float) -> None:
        """A new connection at `now`: the silence counts again from here."""
        self.last_heard = now
