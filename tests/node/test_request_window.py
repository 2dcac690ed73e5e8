# node.acceptor.window: the sans-IO asynchronous operations window (PS3.7 D.3.3.3).
from __future__ import annotations

from dataclasses import dataclass

from node.acceptor.window import UNLIMITED_WINDOW_CAP, RequestWindow


@dataclass(frozen=True)
class Request:
    message_id: int


def test_admits_up_to_the_window_then_queues_in_order() -> None:
    window: RequestWindow[Request] = RequestWindow()
    window.negotiated(2)
    assert [window.admit(Request(i)) for i in (1, 2, 3, 4)] == [True, True, False, False]
    assert list(window.in_flight) == [1, 2]
    assert window.ready() == []  # still full
    assert window.finish(1) == Request(1)
    assert window.ready() == [Request(3)]
    assert list(window.in_flight) == [2, 3]
    assert window.finish(2) == Request(2)
    assert window.finish(3) == Request(3)
    assert window.ready() == [Request(4)]
    assert window.finish(4) == Request(4)
    assert not window.busy


def test_unlimited_window_is_capped() -> None:
    window: RequestWindow[Request] = RequestWindow()
    window.negotiated(0)
    assert window.size == UNLIMITED_WINDOW_CAP
    admitted = [window.admit(Request(i)) for i in range(1, UNLIMITED_WINDOW_CAP + 2)]
    assert admitted.count(True) == UNLIMITED_WINDOW_CAP
    assert admitted[-1] is False


def test_start_ignores_the_window() -> None:
    window: RequestWindow[Request] = RequestWindow(1)
    assert window.admit(Request(1))
    window.start(Request(2))
    assert window.get(2) == Request(2)
    assert len(window.in_flight) == 2


def test_finish_of_unknown_request_is_none() -> None:
    window: RequestWindow[Request] = RequestWindow(1)
    assert window.finish(9) is None
    assert window.get(9) is None


def test_queued_requests_count_as_busy_and_clear_returns_in_flight_ids() -> None:
    window: RequestWindow[Request] = RequestWindow(1)
    window.admit(Request(1))
    window.admit(Request(2))
    assert len(window.queued) == 1
    assert window.finish(1) is not None
    assert window.busy  # only a queued request left
    window.start(Request(3))
    assert window.clear() == [3]
    assert window.ready() == []
    assert not window.in_flight
