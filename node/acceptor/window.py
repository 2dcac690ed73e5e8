# The asynchronous operations window of one association as acceptor (PS3.7 D.3.3.3), sans-IO:
# which requests are in flight, which wait because the peer sent more than it negotiated, and
# which may start when one finishes. ServerAssociation does the I/O (pausing reading while
# requests wait, submitting those this says may start).
#
# Rules: pure (no asyncio, no clock); requests are keyed by their Message ID; a request past
# the window is kept, never dropped, and started in arrival order.
from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

#: In-flight cap when the peer negotiated an unlimited (0) window.
UNLIMITED_WINDOW_CAP = 64


class _Identified(Protocol):
    @property
    def message_id(self) -> int: ...


T = TypeVar("T", bound=_Identified)


class RequestWindow(Generic[T]):
    """Requests in flight (at most `size`) and those queued past the window."""

    __slots__ = ("in_flight", "queued", "size")

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self.in_flight: dict[int, T] = {}
        self.queued: deque[T] = deque()

    def negotiated(self, operations_invoked: int) -> None:
        """The window from the Asynchronous Operations Window item (0: unlimited, capped)."""
        self.size = operations_invoked if operations_invoked > 0 else UNLIMITED_WINDOW_CAP

    @property
    def busy(self) -> bool:
        return bool(self.in_flight or self.queued)

    def admit(self, request: T) -> bool:
        """In flight if the window has room (True), else queued (False: stop reading)."""
        if len(self.in_flight) >= self.size:
            self.queued.append(request)
            return False
        self.in_flight[request.message_id] = request
        return True

    def start(self, request: T) -> None:
        """In flight whatever the window (a local C-ECHO, a streamed data set)."""
        self.in_flight[request.message_id] = request

    def get(self, message_id: int) -> T | None:
        return self.in_flight.get(message_id)

    def finish(self, message_id: int) -> T | None:
        """No longer in flight; the request, or None if it was not."""
        return self.in_flight.pop(message_id, None)

    def ready(self) -> list[T]:
        """The queued requests that now fit in the window, moved in flight, in order."""
        started = []
        while self.queued and len(self.in_flight) < self.size:
            request = self.queued.popleft()
            self.in_flight[request.message_id] = request
            started.append(request)
        return started

    def clear(self) -> list[int]:
        """Forget everything (the association ended); the Message IDs that were in flight."""
        message_ids = list(self.in_flight)
        self.in_flight.clear()
        self.queued.clear()
        return message_ids
