# The broker's routing state, fed with frames: no sockets, no clock (broker/routing.py).
from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack
import pytest

from broker import wire
from broker.routing import (
    Action,
    BrokerState,
    Fault,
    Notice,
    SendToAcceptor,
    SendToWorker,
    worker_lost_status,
)

C_STORE, C_FIND, C_ECHO, C_MOVE, C_GET, N_ACTION = 0x0001, 0x0020, 0x0030, 0x0021, 0x0010, 0x0130


@dataclass(frozen=True, eq=False)
class Part:
    """A received frame, as the state sees it (zmq.Frame has the same two members)."""

    data: bytes

    def __len__(self) -> int:
        return len(self.data)

    @property
    def bytes(self) -> bytes:
        return self.data


def message(kind, *extra: Part, **fields) -> list[Part]:
    return [Part(b""), Part(wire.pack_envelope(kind, **fields)), *extra]


def raw(*frames: bytes) -> list[Part]:
    return [Part(frame) for frame in frames]


def request(msg_id=1, *, acceptor="acc", assoc_id=1, command_field=C_STORE, deadline=None):
    return message(
        wire.REQUEST,
        Part(b"COMMAND"),
        Part(b"DATASET-%s" % str(msg_id).encode()),
        acceptor=acceptor,
        assoc_id=assoc_id,
        msg_id=msg_id,
        command_field=command_field,
        ctx_id=1,
        sop_class="1.2.3",
        ts_uid="1.2.840.10008.1.2",
        calling_aet="SCU",
        called_aet="SCP",
        deadline=deadline,
    )


def reply(msg_id=1, *, final=True, acceptor="acc", assoc_id=1) -> list[Part]:
    return message(
        wire.REPLY,
        Part(b"RSP"),
        acceptor=acceptor,
        assoc_id=assoc_id,
        msg_id=msg_id,
        final=final,
    )


def cancel(msg_id=1, *, acceptor="acc", assoc_id=1) -> list[Part]:
    return message(wire.CANCEL, acceptor=acceptor, assoc_id=assoc_id, msg_id=msg_id)


def ready(credits=1) -> list[Part]:
    return message(wire.READY, credits=credits)


def heartbeat() -> list[Part]:
    return message(wire.HEARTBEAT)


def envelope(action: SendToWorker | SendToAcceptor) -> wire.Envelope:
    first = action.frames[0]
    return wire.unpack_envelope(first if isinstance(first, bytes) else first.bytes)


def sends(actions, cls=(SendToWorker, SendToAcceptor)):
    return [action for action in actions if isinstance(action, cls)]


def only(actions, cls=(SendToWorker, SendToAcceptor)):
    found = sends(actions, cls)
    assert len(found) == 1, actions
    return found[0]


def errors(actions) -> list[wire.Envelope]:
    return [envelope(a) for a in sends(actions, SendToAcceptor) if a.kind == wire.ERROR]


def faults(actions) -> list[str]:
    return [action.kind for action in actions if isinstance(action, Fault)]


@pytest.fixture
def state() -> BrokerState:
    return BrokerState(heartbeat_interval=1.0, heartbeat_liveness=3, max_queue=3, now=0.0)


def join(state: BrokerState, worker: bytes, credits: int = 1, now: float = 0.0) -> list[Action]:
    return state.on_backend(worker, ready(credits), now)


# -- least recently used, credits, queue ---------------------------------------------------


def test_request_goes_to_a_ready_worker_unchanged(state):
    join(state, b"w1")
    frames = request()
    action = only(state.on_frontend(b"acc", frames, 0.0))
    assert action == SendToWorker(b"w1", tuple(frames[1:]), wire.REQUEST, ("acc", 1, 1))
    assert all(sent is received for sent, received in zip(action.frames, frames[1:], strict=True))
    assert state.stats()["in_flight"] == 1
    assert state.stats()["credits"] == 0


def test_least_recently_used_worker_with_credit_first(state):
    join(state, b"w1", 2)
    join(state, b"w2", 2)
    targets = [only(state.on_frontend(b"acc", request(n), 0.0)).worker for n in range(1, 5)]
    assert targets == [b"w1", b"w2", b"w1", b"w2"]


def test_no_credit_queues_fifo_until_a_final_reply_returns_one(state):
    join(state, b"w1")
    join(state, b"w2")
    assert only(state.on_frontend(b"acc", request(1), 0.0)).worker == b"w1"
    assert only(state.on_frontend(b"acc", request(2), 0.0)).worker == b"w2"
    assert state.on_frontend(b"acc", request(3), 0.0) == []
    assert state.on_frontend(b"acc", request(4), 0.0) == []
    assert state.stats()["queue"] == 2
    actions = state.on_backend(b"w2", reply(2), 0.1)
    forwarded, sent = sends(actions)
    assert forwarded == SendToAcceptor(b"acc", forwarded.frames, wire.REPLY)
    assert (sent.worker, sent.request) == (b"w2", ("acc", 1, 3))
    assert state.stats()["queue"] == 1
    assert state.stats()["replies"] == 1


def test_request_waits_for_the_first_worker(state):
    assert state.on_frontend(b"acc", request(), 0.0) == []
    actions = join(state, b"w1")
    assert isinstance(actions[0], Notice)
    assert "w1 joined" in actions[0].text
    assert only(actions).worker == b"w1"


def test_credit_message_adds_credits(state):
    join(state, b"w1", 0)
    assert state.on_frontend(b"acc", request(1), 0.0) == []
    assert state.on_frontend(b"acc", request(2), 0.0) == []
    actions = state.on_backend(b"w1", message(wire.CREDIT, credits=2), 0.0)
    assert [action.request for action in sends(actions)] == [("acc", 1, 1), ("acc", 1, 2)]


def test_queue_full_answers_busy_at_once(state):
    for msg_id in (1, 2, 3):
        assert state.on_frontend(b"acc", request(msg_id), 0.0) == []
    action = only(state.on_frontend(b"acc", request(4), 0.0))
    assert action.acceptor == b"acc"
    answer = envelope(action)
    assert answer["kind"] == wire.ERROR
    assert (answer["msg_id"], answer["status"], answer["type"]) == (4, 0xA700, "Busy")
    assert state.stats()["busy"] == 1
    assert state.stats()["queue"] == 3


def test_zero_queue_still_dispatches_to_free_workers():
    state = BrokerState(max_queue=0)
    join(state, b"w1")
    assert only(state.on_frontend(b"acc", request(1), 0.0)).worker == b"w1"
    assert envelope(only(state.on_frontend(b"acc", request(2), 0.0)))["type"] == "Busy"


def test_ready_again_counts_requests_in_flight(state):
    join(state, b"w1", 2)
    state.on_frontend(b"acc", request(1), 0.0)
    assert join(state, b"w1", 2) == []
    assert state.stats()["credits"] == 1
    assert state.stats()["workers"] == 1


def test_non_final_reply_keeps_the_request_in_flight(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1, command_field=C_FIND), 0.0)
    state.on_frontend(b"acc", request(2, command_field=C_FIND), 0.0)
    pending = reply(1, final=False)
    action = only(state.on_backend(b"w1", pending, 0.0))
    assert action.acceptor == b"acc"
    assert action.frames[0] is pending[1]
    assert state.stats()["in_flight"] == 1
    actions = state.on_backend(b"w1", reply(1), 0.0)
    assert [type(action) for action in actions] == [SendToAcceptor, SendToWorker]
    assert state.stats()["in_flight"] == 1


def test_error_from_worker_is_final(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    error = message(
        wire.ERROR,
        acceptor="acc",
        assoc_id=1,
        msg_id=1,
        status=0xC000,
        type="ValueError",
        message="boom",
    )
    action = only(state.on_backend(b"w1", error, 0.0))
    assert (action.acceptor, action.kind) == (b"acc", wire.ERROR)
    assert state.stats()["in_flight"] == 0
    assert state.stats()["credits"] == 1


def test_reply_for_no_request_in_flight_is_stale(state):
    join(state, b"w1")
    join(state, b"w2")
    state.on_frontend(b"acc", request(1), 0.0)
    assert faults(state.on_backend(b"w1", reply(9), 0.0)) == ["stale_reply"]
    assert faults(state.on_backend(b"w2", reply(1), 0.0)) == ["stale_reply"]
    assert state.faults["stale_reply"] == 2
    assert state.stats()["in_flight"] == 1


def test_string_association_ids_route_too(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1, assoc_id="a-7"), 0.0)
    assert only(state.on_backend(b"w1", reply(1, assoc_id="a-7"), 0.0)).acceptor == b"acc"


# -- cancel, sub-operations ------------------------------------------------------------


def test_cancel_of_a_queued_request_answers_cancelled(state):
    state.on_frontend(b"acc", request(1), 0.0)
    action = only(state.on_frontend(b"acc", cancel(1), 0.0))
    answer = envelope(action)
    assert (answer["msg_id"], answer["status"], answer["type"]) == (1, 0xFE00, "Cancelled")
    assert state.stats()["queue"] == 0
    assert state.stats()["cancelled"] == 1
    assert join(state, b"w1")[1:] == []


def test_cancel_in_flight_goes_to_its_worker(state):
    join(state, b"w1")
    join(state, b"w2")
    state.on_frontend(b"acc", request(1), 0.0)
    state.on_frontend(b"acc", request(2), 0.0)
    frames = cancel(2)
    action = only(state.on_frontend(b"acc", frames, 0.0))
    assert action == SendToWorker(b"w2", (frames[1],), wire.CANCEL)


def test_cancel_after_the_final_reply_is_ignored(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    state.on_backend(b"w1", reply(1), 0.0)
    assert state.on_frontend(b"acc", cancel(1), 0.0) == []
    assert state.counters["late_cancels"] == 1


def test_suboperation_reaches_the_acceptor_with_the_worker_name(state):
    join(state, b"w-host-1")
    state.on_frontend(b"acc", request(1, command_field=C_GET), 0.0)
    dataset = Part(b"SUB-DATASET")
    frames = message(
        wire.SUBOPERATION,
        Part(b""),
        dataset,
        acceptor="acc",
        assoc_id=1,
        msg_id=1,
        sub_id=5,
        sop_class="1.2",
        sop_instance="1.2.3",
        ts_uid="1.2.840.10008.1.2.1",
    )
    action = only(state.on_backend(b"w-host-1", frames, 0.0))
    assert action.acceptor == b"acc"
    assert envelope(action)["worker"] == "w-host-1"
    assert envelope(action)["sub_id"] == 5
    assert action.frames[2] is dataset
    fields = {k: v for k, v in envelope(action).items() if k not in ("v", "kind", "worker")}
    other = message(wire.SUBOPERATION, **{**fields, "msg_id": 2})
    assert faults(state.on_backend(b"w-host-1", other, 0.0)) == ["stale_reply"]


def test_suboperation_status_goes_to_the_named_worker(state):
    join(state, b"w1")
    frames = message(wire.SUBOPERATION_STATUS, Part(b"RSP"), worker="w1", sub_id=5, status=0)
    action = only(state.on_frontend(b"acc", frames, 0.0))
    assert action == SendToWorker(b"w1", tuple(frames[1:]), wire.SUBOPERATION_STATUS)
    lost = message(wire.SUBOPERATION_STATUS, worker="w9", sub_id=5, status=0)
    assert faults(state.on_frontend(b"acc", lost, 0.0)) == ["gone_worker"]
    assert state.stats()["dropped"] == 1


# -- worker death ----------------------------------------------------------------------


def keep_alive(state: BrokerState, now: float, *workers: bytes, acceptor: bytes = b"acc") -> None:
    for worker in workers:
        state.on_backend(worker, heartbeat(), now)
    state.on_frontend(acceptor, heartbeat(), now)


def test_dead_worker_idempotent_request_retried_once_at_the_front(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1, command_field=C_STORE), 0.0)
    state.on_frontend(b"acc", request(2, command_field=C_STORE), 0.0)  # queued
    keep_alive(state, 2.5)  # w1 says nothing after 0.0
    actions = state.on_tick(3.0)
    assert "dead (silent)" in next(a.text for a in actions if isinstance(a, Notice))
    assert sends(actions, SendToWorker) == []
    assert state.stats()["queue"] == 2
    assert state.stats()["dead_workers"] == 1
    assert state.stats()["retries"] == 1
    sent = sends(join(state, b"w2", 1, 3.0))
    assert [action.request for action in sent] == [("acc", 1, 1)]
    retried = envelope(sent[0])
    assert retried["retry"] == 1
    assert retried["msg_id"] == 1
    assert sent[0].frames[2].bytes == b"DATASET-1"


def test_retried_request_fails_when_its_second_worker_dies_too(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1, command_field=C_FIND), 0.0)
    keep_alive(state, 2.5)
    state.on_tick(3.0)
    join(state, b"w2", 1, 3.0)
    keep_alive(state, 5.5)
    [answer] = errors(state.on_tick(6.0))
    assert (answer["status"], answer["type"]) == (0xA700, "WorkerLost")
    assert state.stats()["retries"] == 1
    assert state.stats()["in_flight"] == state.stats()["queue"] == 0


@pytest.mark.parametrize("command_field", [C_MOVE, C_GET, N_ACTION])
def test_dead_worker_non_idempotent_request_fails(state, command_field):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1, command_field=command_field), 0.0)
    keep_alive(state, 2.5)
    [answer] = errors(state.on_tick(3.0))
    assert (answer["msg_id"], answer["status"]) == (1, 0x0110)
    assert answer["type"] == "WorkerLost"
    assert state.stats()["retries"] == 0


def test_dead_worker_with_a_cancelled_request_answers_cancel(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    state.on_frontend(b"acc", cancel(1), 0.0)
    keep_alive(state, 2.5)
    [answer] = errors(state.on_tick(3.0))
    assert (answer["status"], answer["type"]) == (0xFE00, "Cancelled")


def test_worker_heartbeats_keep_it_alive(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    keep_alive(state, 2.5, b"w1")
    actions = state.on_tick(3.0)
    assert not [a for a in actions if isinstance(a, Notice)]
    assert {(a.worker if isinstance(a, SendToWorker) else a.acceptor) for a in actions} == {
        b"w1",
        b"acc",
    }
    assert {a.kind for a in actions} == {wire.HEARTBEAT}
    assert state.timer() == 4.0


def test_worker_lost_status_per_service():
    assert worker_lost_status(C_STORE) == worker_lost_status(C_FIND) == 0xA700
    assert {worker_lost_status(c) for c in (C_ECHO, C_GET, C_MOVE, N_ACTION)} == {0x0110}


# -- deadlines -------------------------------------------------------------------------


def test_queued_request_past_its_deadline_times_out_at_the_tick(state):
    state.on_frontend(b"acc", request(1, deadline=0.5), 0.0)
    state.on_frontend(b"acc", request(2, deadline=0), 0.0)  # 0 = no deadline
    state.on_frontend(b"acc", request(3, deadline=5.0), 0.0)
    [answer] = errors(state.on_tick(1.0))
    assert (answer["msg_id"], answer["status"], answer["type"]) == (1, 0xA700, "Timeout")
    assert state.stats()["queue"] == 2
    assert state.stats()["timeouts"] == 1


def test_request_past_its_deadline_is_not_dispatched(state):
    state.on_frontend(b"acc", request(1, deadline=0.5), 0.0)
    state.on_frontend(b"acc", request(2, deadline=9.0), 0.0)
    actions = join(state, b"w1", 1, 0.7)
    assert envelope(only(actions, SendToAcceptor))["type"] == "Timeout"
    assert only(actions, SendToWorker).request == ("acc", 1, 2)


def test_request_already_late_is_answered_at_once(state):
    join(state, b"w1")
    answer = envelope(only(state.on_frontend(b"acc", request(1, deadline=10.0), 11.0)))
    assert answer["type"] == "Timeout"
    assert state.stats()["in_flight"] == 0


# -- acceptor death --------------------------------------------------------------------


def test_silent_acceptor_is_forgotten(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1, command_field=C_MOVE), 0.0)
    state.on_frontend(b"acc", request(2), 0.0)  # queued
    state.on_frontend(b"acc", cancel(1), 0.1)  # already cancelled: no second cancel
    state.on_frontend(b"acc", request(3), 0.2)  # queued
    state.on_frontend(b"other", request(1, acceptor="other"), 0.2)  # queued
    keep_alive(state, 3.0, b"w1", acceptor=b"other")
    actions = state.on_tick(3.5)
    assert any(isinstance(a, Notice) and "forgotten" in a.text for a in actions)
    assert state.stats()["acceptors"] == 1
    assert state.stats()["queue"] == 1
    assert state.stats()["dropped"] == 2
    assert [a.acceptor for a in sends(actions, SendToAcceptor)] == [b"other"]  # its heartbeat


def test_forgotten_acceptor_requests_in_flight_are_cancelled(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    keep_alive(state, 2.5, b"w1", acceptor=b"nobody")
    actions = state.on_tick(3.0)
    cancels = [a for a in sends(actions, SendToWorker) if a.kind == wire.CANCEL]
    assert len(cancels) == 1
    assert cancels[0].worker == b"w1"
    assert (envelope(cancels[0])["acceptor"], envelope(cancels[0])["msg_id"]) == ("acc", 1)
    # The worker's final answer is still forwarded (maybe dropped there) and frees the credit.
    assert only(state.on_backend(b"w1", reply(1), 3.1)).acceptor == b"acc"
    assert state.stats()["credits"] == 1


def test_requests_of_a_forgotten_acceptor_are_not_retried(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    keep_alive(state, 2.5, b"w1", acceptor=b"nobody")
    state.on_tick(3.0)
    keep_alive(state, 5.0, acceptor=b"nobody")
    assert errors(state.on_tick(6.0)) == []
    stats = state.stats()
    assert (stats["dead_workers"], stats["retries"], stats["dropped"]) == (1, 0, 1)
    assert stats["queue"] == stats["in_flight"] == 0


# -- undeliverable sends ---------------------------------------------------------------


def test_reply_to_a_gone_acceptor_is_dropped_and_counted(state):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    action = only(state.on_backend(b"w1", reply(1), 0.0))
    assert faults(state.on_undeliverable([action], 0.0, busy=False)) == ["undeliverable"]
    assert state.stats()["dropped"] == 1
    beat = SendToAcceptor(b"acc", (b"",), wire.HEARTBEAT)
    assert state.on_undeliverable([beat], 0.0, busy=True) == []
    assert state.stats()["dropped"] == 1


def test_request_to_a_gone_worker_is_rerouted_without_a_retry(state):
    join(state, b"w1", 2)
    first = only(state.on_frontend(b"acc", request(1, command_field=C_MOVE), 0.0))
    second = only(state.on_frontend(b"acc", request(2, command_field=C_MOVE), 0.0))
    join(state, b"w2", 2)
    actions = state.on_undeliverable([first, second], 0.0, busy=False)
    assert "dead (unreachable)" in next(a.text for a in actions if isinstance(a, Notice))
    sent = sends(actions)
    assert [(a.worker, a.request) for a in sent] == [(b"w2", ("acc", 1, 1)), (b"w2", ("acc", 1, 2))]
    assert all("retry" not in envelope(a) for a in sent)
    assert state.stats()["retries"] == 0
    assert state.stats()["workers"] == 1


def test_stale_sends_to_a_gone_worker_are_dropped(state):
    join(state, b"w1")
    join(state, b"w2")
    sent = only(state.on_frontend(b"acc", request(1), 0.0))
    stale = SendToWorker(b"w2", sent.frames, wire.REQUEST, ("acc", 1, 1))
    beat = SendToWorker(b"w2", (b"",), wire.HEARTBEAT)
    lost = SendToWorker(b"w2", (b"",), wire.SUBOPERATION_STATUS)
    assert faults(state.on_undeliverable([stale, beat, lost], 0.0, busy=False)) == ["undeliverable"]
    assert state.stats()["workers"] == 1
    assert state.stats()["in_flight"] == 1
    assert faults(state.on_undeliverable([stale], 0.0, busy=False)) == []


def test_busy_worker_is_paused_until_the_next_tick(state):
    join(state, b"w1", 2)
    sent = only(state.on_frontend(b"acc", request(1), 0.0))
    assert state.on_undeliverable([sent], 0.0, busy=True) == []
    assert state.stats()["queue"] == 1
    assert state.stats()["workers"] == 1
    keep_alive(state, 0.5, b"w1")
    actions = state.on_tick(1.0)
    assert [a.kind for a in sends(actions, SendToWorker)] == [wire.HEARTBEAT, wire.REQUEST]


# -- invalid messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "fault"),
    [
        ([], "no_delimiter"),
        (raw(b"x", b"y"), "no_delimiter"),
        (raw(b""), "frame_count"),
        (raw(b"", b"a", b"b", b"c", b"d"), "frame_count"),
        (raw(b"", b"\xc1"), "bad_envelope"),
        (raw(b"", msgpack.packb([1, 2])), "bad_envelope"),
        (raw(b"", msgpack.packb({"v": 99, "kind": "heartbeat"})), "bad_envelope"),
        (raw(b"", msgpack.packb({"v": 1, "kind": "gossip"})), "bad_envelope"),
        (raw(b"", msgpack.packb({"v": 1, "kind": "cancel"})), "bad_envelope"),
        (request(acceptor="other"), "acceptor_mismatch"),
        (cancel(acceptor="other"), "acceptor_mismatch"),
        (request(acceptor=5), "bad_field"),
        (request(assoc_id=True), "bad_field"),
        (request(assoc_id=[1]), "bad_field"),
        (request(msg_id="1"), "bad_field"),
        (request(msg_id=-1), "bad_field"),
        (request(deadline="soon"), "bad_field"),
        (request(deadline=math.nan), "bad_field"),
        (request(command_field=True), "bad_field"),
        (message(wire.SUBOPERATION_STATUS, worker=7, sub_id=1, status=0), "bad_field"),
        (reply(), "unexpected_kind"),
        (ready(), "unexpected_kind"),
    ],
)
def test_invalid_frontend_messages_are_counted(state, frames, fault):
    assert faults(state.on_frontend(b"acc", frames, 0.0)) == [fault]
    assert state.faults[fault] == 1
    assert state.stats()["requests"] == 0


def test_acceptor_identity_must_name_itself_in_utf8(state):
    frames = request(acceptor="accé")
    assert faults(state.on_frontend("accé".encode(), frames, 0.0)) == []
    assert faults(state.on_frontend(b"acc\xe9", frames, 0.0)) == ["acceptor_mismatch"]


def test_duplicate_request_is_rejected_and_answered(state):
    state.on_frontend(b"acc", request(1), 0.0)
    actions = state.on_frontend(b"acc", request(1), 0.0)
    assert faults(actions) == ["duplicate_request"]
    assert [(e["status"], e["type"]) for e in errors(actions)] == [(0x0210, "Duplicate")]
    join(state, b"w1")
    assert faults(state.on_frontend(b"acc", request(1), 0.0)) == ["duplicate_request"]
    assert state.stats()["requests"] == 1


@pytest.mark.parametrize(
    ("frames", "fault"),
    [
        (ready(-1), "bad_field"),
        (ready(True), "bad_field"),
        (ready(1 << 30), "bad_field"),
        (message(wire.CREDIT, credits=0), "bad_field"),
        (reply(final=1), "bad_field"),
        (request(), "unexpected_kind"),
        (cancel(), "unexpected_kind"),
        (raw(b"x"), "no_delimiter"),
    ],
)
def test_invalid_backend_messages_are_counted(state, frames, fault):
    join(state, b"w1")
    state.on_frontend(b"acc", request(1), 0.0)
    assert faults(state.on_backend(b"w1", frames, 0.0)) == [fault]
    assert state.faults[fault] == 1
    assert state.stats()["in_flight"] == 1


def test_messages_from_unknown_workers_are_refused(state):
    actions = state.on_backend(b"w1", heartbeat(), 0.0)
    assert faults(actions) == ["unknown_worker"]
    # told to join again at once (a restarted routing, or one that buried it for silence)
    (disconnect,) = [a for a in actions if isinstance(a, SendToWorker)]
    assert disconnect.worker == b"w1"
    assert envelope(disconnect)["kind"] == wire.DISCONNECT
    assert faults(state.on_backend(b"w\xff", ready(), 0.0)) == ["bad_identity"]
    assert state.stats()["workers"] == 0


def test_stats_name_every_figure(state):
    join(state, b"w1", 4)
    state.on_frontend(b"acc", request(1), 0.0)
    state.on_frontend(b"acc", raw(b"x"), 0.0)
    stats = state.stats()
    assert stats["queue"] == 0
    assert stats["in_flight"] == 1
    assert stats["credits"] == 3
    assert stats["workers"] == 1
    assert stats["acceptors"] == 1
    assert stats["requests"] == 1
    assert stats["faults"] == {"no_delimiter": 1}
    idle = ("replies", "retries", "dead_workers", "dropped", "timeouts", "busy", "cancelled")
    assert all(stats[name] == 0 for name in (*idle, "late_cancels"))


def test_a_draining_worker_gets_no_credit_back_for_finished_requests(state):
    join(state, b"w1", 2)
    join(state, b"w2", 2)
    assert only(state.on_frontend(b"acc", request(1), 0.0)).worker == b"w1"
    join(state, b"w1", 0)  # w1 stops: it announces no credits
    state.on_backend(b"w1", reply(1), 0.1)  # its last request finishes
    targets = [only(state.on_frontend(b"acc", request(n), 0.2)).worker for n in (2, 3)]
    assert targets == [b"w2", b"w2"]  # nothing new for the draining worker
