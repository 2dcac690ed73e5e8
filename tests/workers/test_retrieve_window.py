"""C-GET sub-operations in flight (workers.handlers.retrieve): a few are handed to the
association before the oldest is answered; they are counted and reported in order."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from node.dicomio import Part10, encode_dataset
from node.dimse.messages import CGetRQ, CStoreRQ
from node.dispatch import AssociationInfo, ServiceRequest, StorageContext
from tests.workers.archive import archive_datasets
from workers.handlers import retrieve
from workers.handlers.common import Handlers
from workers.service import handle_request
from workers.store.files import FileStore
from workers.store.index import Index

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"

ASSOCIATION = AssociationInfo(
    assoc_id=1,
    calling_ae_title="SCU",
    called_ae_title="ARCHIVE",
    peer_address="127.0.0.1",
    peer_port=1234,
    local_ae_title="ARCHIVE",
    storage_contexts=(StorageContext(3, CT, EXPLICIT),),
)


class Pending:
    """A sub-operation the fake association answers only when asked for its result."""

    def __init__(self, channel: WindowChannel, uid: str, status: int) -> None:
        self.channel = channel
        self.uid = uid
        self.status = status
        self.answered = False

    def done(self) -> bool:
        return self.answered

    def result(self) -> int:
        if not self.answered:
            self.answered = True
            self.channel.outstanding -= 1
            self.channel.events.append(("answered", self.uid))
        return self.status


class WindowChannel:
    def __init__(self, statuses: dict[str, int] | None = None, cancel_after: int | None = None):
        self.statuses = statuses or {}
        self.cancel_after = cancel_after
        self.outstanding = 0
        self.most = 0
        self.events: list[tuple[str, Any]] = []
        self.responses: list[tuple[Any, bytes | None, bool]] = []

    def respond(self, response: Any, dataset: bytes | None, final: bool) -> None:
        self.responses.append((response, dataset, final))
        self.events.append(("response", getattr(response, "number_of_completed_suboperations", 0)))

    def store(self, *args: Any) -> int:
        raise AssertionError("store_nowait is used when the channel has it")

    def store_nowait(self, sop_class: str, uid: str, syntax: str, data: bytes) -> Pending:
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)
        self.events.append(("sent", uid))
        return Pending(self, uid, self.statuses.get(uid, 0x0000))

    def is_cancelled(self) -> bool:
        sent = sum(1 for kind, _ in self.events if kind == "sent")
        return self.cancel_after is not None and sent >= self.cancel_after

    def event_report(self, *args: Any) -> None:
        return None


def instances(count: int, size: int = 16) -> list[Part10]:
    return [Part10(CT, f"1.2.3.{n}", EXPLICIT, bytes(size)) for n in range(1, count + 1)]


def run_get(
    channel: WindowChannel,
    items: list[Any],
    count: int | None = None,
    window: int = retrieve.SUBOPERATION_WINDOW,
) -> Any:
    """The retrieve loop as the built-in Q/R SCP runs it (with a window)."""

    def generate() -> Any:
        yield len(items) if count is None else count
        for item in items:
            if isinstance(item, Exception):
                raise item
            yield 0xFF00, item

    command = CGetRQ(message_id=8, affected_sop_class_uid=STUDY_GET)
    request = ServiceRequest(ASSOCIATION, 1, STUDY_GET, EXPLICIT, command, b"")
    store = retrieve._get_store(request, channel)
    retrieve._run_suboperations(
        request, channel, generate(), store, retrieve.GET_UNABLE_TO_PROCESS, window=window
    )
    response, _, final = channel.responses[-1]
    assert final
    return response


def test_a_window_of_sub_operations_is_in_flight_and_answered_in_order():
    channel = WindowChannel()
    final = run_get(channel, instances(10))
    assert channel.most == retrieve.SUBOPERATION_WINDOW
    answered = [uid for kind, uid in channel.events if kind == "answered"]
    assert answered == [f"1.2.3.{n}" for n in range(1, 11)]
    pending = [r for r, _, done in channel.responses if not done]
    assert [r.number_of_remaining_suboperations for r in pending] == list(range(9, -1, -1))
    assert [r.number_of_completed_suboperations for r in pending] == list(range(1, 11))
    assert (final.status, final.number_of_completed_suboperations) == (0x0000, 10)
    # each pending response follows its own sub-operation's answer
    for position, event in enumerate(channel.events):
        if event[0] == "response" and event[1] < 10:
            assert channel.events[position - 1][0] == "answered"


def test_the_window_is_bounded_in_bytes(monkeypatch):
    monkeypatch.setattr(retrieve, "SUBOPERATION_WINDOW_BYTES", 100)
    channel = WindowChannel()
    run_get(channel, instances(6, size=60))
    assert channel.most == 2  # the second goes out, then the first must be answered


def test_failures_in_flight_are_counted_and_listed():
    channel = WindowChannel(statuses={"1.2.3.2": 0xA702, "1.2.3.5": 0xB000})
    final = run_get(channel, instances(6))
    assert final.status == 0xB000
    assert (final.number_of_completed_suboperations, final.number_of_failed_suboperations) == (
        4,
        1,
    )
    assert final.number_of_warning_suboperations == 1


def test_cancel_lets_the_sub_operations_in_flight_finish():
    channel = WindowChannel(cancel_after=3)
    final = run_get(channel, instances(8))
    assert final.status == 0xFE00
    assert channel.outstanding == 0  # nothing left unanswered
    assert final.number_of_completed_suboperations == 3
    assert final.number_of_remaining_suboperations == 5


def test_a_generator_failure_still_counts_what_was_sent():
    channel = WindowChannel()
    final = run_get(channel, [*instances(2), RuntimeError("disk gone")], count=5)
    assert final.status == retrieve.GET_UNABLE_TO_PROCESS
    assert channel.outstanding == 0
    assert final.number_of_completed_suboperations == 2


def test_a_window_of_one_asks_the_generator_only_after_the_pending_response():
    channel = WindowChannel()
    run_get(channel, instances(3), window=1)
    kinds = [kind for kind, _ in channel.events]
    assert kinds == ["sent", "answered", "response"] * 3 + ["response"]
    assert channel.most == 1


def test_user_generators_get_one_sub_operation_at_a_time():
    # through handle_request with the user's own on_c_get: no window
    def on_c_get(identifier: Any, context: Any, info: Any) -> Any:
        yield 3
        for item in instances(3):
            yield 0xFF00, item

    channel = WindowChannel()
    command = CGetRQ(message_id=8, affected_sop_class_uid=STUDY_GET)
    request = ServiceRequest(ASSOCIATION, 1, STUDY_GET, EXPLICIT, command, b"")
    handle_request(request, channel, Handlers(on_c_get=on_c_get))
    assert channel.most == 1
    assert channel.responses[-1][0].number_of_completed_suboperations == 3


def test_the_built_in_retrieve_uses_the_window(tmp_path):
    # the built-in Q/R SCP (an index of stored files) hands several over at once
    handlers = Handlers(
        file_store=FileStore(tmp_path, fsync=False),
        index=Index.open(tmp_path, synchronous="OFF"),
    )
    for ds in archive_datasets():
        store_command = CStoreRQ(
            message_id=1,
            affected_sop_class_uid=ds.SOPClassUID,
            affected_sop_instance_uid=ds.SOPInstanceUID,
        )
        data = encode_dataset(ds, EXPLICIT)
        store = ServiceRequest(ASSOCIATION, 1, str(ds.SOPClassUID), EXPLICIT, store_command, data)
        handle_request(store, WindowChannel(), handlers)
    first_ct = next(ds for ds in archive_datasets() if ds.Modality == "CT")
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = first_ct.StudyInstanceUID
    query.SeriesInstanceUID = first_ct.SeriesInstanceUID
    channel = WindowChannel()
    command = CGetRQ(message_id=8, affected_sop_class_uid=STUDY_GET)
    identifier = encode_dataset(query, EXPLICIT)
    handle_request(
        ServiceRequest(ASSOCIATION, 1, STUDY_GET, EXPLICIT, command, identifier),
        channel,
        handlers,
    )
    final = channel.responses[-1][0]
    assert (final.status, final.number_of_completed_suboperations) == (0x0000, 3)
    assert channel.most == 3  # all three handed over before the first was answered


def test_a_channel_without_store_nowait_stores_one_at_a_time():
    class Blocking(WindowChannel):
        def __getattribute__(self, name: str) -> Any:
            if name == "store_nowait":
                raise AttributeError(name)
            return super().__getattribute__(name)

        def store(self, sop_class: str, uid: str, syntax: str, data: bytes) -> int:
            self.events.append(("stored", uid))
            return 0x0000

    channel = Blocking()
    final = run_get(channel, instances(3))
    assert [kind for kind, _ in channel.events] == ["stored", "response"] * 3 + ["response"]
    assert final.number_of_completed_suboperations == 3


def test_a_sub_operation_that_cannot_be_sent_fails_alone():
    class Failing(WindowChannel):
        def store_nowait(self, sop_class: str, uid: str, syntax: str, data: bytes) -> Pending:
            if uid == "1.2.3.2":
                raise RuntimeError("outbox closed")
            return super().store_nowait(sop_class, uid, syntax, data)

    channel = Failing()
    final = run_get(channel, instances(4))
    assert final.status == 0xB000
    assert (final.number_of_completed_suboperations, final.number_of_failed_suboperations) == (
        3,
        1,
    )
    identifier = channel.responses[-1][1]
    assert identifier is not None
    assert b"1.2.3.2" in identifier  # the Failed SOP Instance UID List
    assert channel.outstanding == 0


class _Stop(BaseException):
    """Not an Exception: nothing on the way may swallow it."""


def test_sub_operations_in_flight_are_answered_before_an_error_leaves():
    class Broken(WindowChannel):
        def is_cancelled(self) -> bool:
            if sum(1 for kind, _ in self.events if kind == "sent") >= 2:
                raise _Stop
            return False

    channel = Broken()
    with pytest.raises(_Stop):
        run_get(channel, instances(5))
    assert channel.outstanding == 0
    assert [r.number_of_completed_suboperations for r, _, _ in channel.responses] == [1, 2]


def test_a_remote_sub_operation_times_out_from_when_it_was_sent():
    # several are in flight: the last one's wait counts from its send, not from when the
    # handler gets round to asking for it
    import time

    from workers.runtime import _RemoteSubOperation, _Waiter

    forgotten: list[int] = []

    class Worker:
        def forget_suboperation(self, sub_id: int) -> None:
            forgotten.append(sub_id)

    pending = _RemoteSubOperation(Worker(), 5, _Waiter(), "1.2.3")  # type: ignore[arg-type]
    pending.sent -= 10.0  # sent 10 s ago
    started = time.monotonic()
    assert pending.status(timeout=10.0) is None  # sent 10 s ago: already past
    assert time.monotonic() - started < 5.0  # not the 10 s timeout again from now
    assert forgotten == [5]
    answered = _RemoteSubOperation(Worker(), 6, _Waiter(), "1.2.4")  # type: ignore[arg-type]
    answered.waiter.status = 0x0000
    answered.waiter.event.set()
    assert answered.done()
    assert answered.result() == 0x0000
