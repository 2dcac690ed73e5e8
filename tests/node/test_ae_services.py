# Our SCU against our SCP for every DIMSE service (PS3.7 sections 9 and 10), over loopback.
#
# Rules: both AEs run in this process (workers=0); waits are on events with timeouts, never
# sleeps; every AE is stopped by the make_ae fixture.
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from pydicom.dataset import Dataset

from node import build_role, evt
from node.presets import QueryRetrievePresentationContexts
from tests.synthetic import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    PATIENCE,
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    VERIFICATION,
    make_dataset,
    write_datasets,
)

if TYPE_CHECKING:
    from pathlib import Path

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget
MPPS = "1.2.840.10008.3.1.2.3.3"
PRINTER = "1.2.840.10008.5.1.1.16"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"


def _scp(make_ae, *, title: str = "SCP", **callbacks: Any):
    ae = make_ae(title)
    ae.add_supported_context(VERIFICATION)
    for uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        ae.add_supported_context(uid, scu_role=True, scp_role=True)
    for context in QueryRetrievePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    for uid in (MPPS, PRINTER, STORAGE_COMMITMENT):
        ae.add_supported_context(uid)
    for name, value in callbacks.items():
        setattr(ae, name, value)
    return ae


def _scu(make_ae, title: str = "SCU"):
    ae = make_ae(title)
    ae.add_requested_context(VERIFICATION)
    for uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        ae.add_requested_context(uid)
    for uid in (PATIENT_ROOT_FIND, PATIENT_ROOT_GET, PATIENT_ROOT_MOVE):
        ae.add_requested_context(uid)
    for uid in (MPPS, PRINTER, STORAGE_COMMITMENT):
        ae.add_requested_context(uid)
    return ae


def _started(ae, **kwargs: Any):
    ae.start(block=False, **kwargs)
    return ae


def _associate(scu, scp, **kwargs: Any):
    association = scu.associate("127.0.0.1", scp.port, ae_title=scp.ae_title, **kwargs)
    assert association.is_established
    return association


# --- C-ECHO / C-STORE -----------------------------------------------------------------------


def test_c_echo_success_and_callback_sees_context(make_ae):
    seen: list[Any] = []

    def on_c_echo(context, info):
        seen.append((str(context.abstract_syntax), info["requestor"]["ae_title"]))
        return 0x0000

    scp = _started(_scp(make_ae, on_c_echo=on_c_echo))
    association = _associate(_scu(make_ae), scp)
    status = association.send_c_echo()
    association.release()
    assert status.Status == 0x0000
    assert association.is_released
    assert seen == [(VERIFICATION, b"SCU")]


def test_c_store_dataset_and_file(make_ae, tmp_path: Path):
    received: list[Dataset] = []

    def on_c_store(ds, context, info):
        received.append(ds)
        return 0x0000

    scp = _started(_scp(make_ae, on_c_store=on_c_store))
    first = make_dataset(1, 1, 1, 1)
    second = make_dataset(2, 1, 1, 1, modality="MR")
    (path,) = write_datasets([second], tmp_path)
    association = _associate(_scu(make_ae), scp)
    assert association.send_c_store(first).Status == 0x0000
    assert association.send_c_store(str(path)).Status == 0x0000
    assert association.send_c_store(path).Status == 0x0000
    association.release()
    assert [str(ds.SOPInstanceUID) for ds in received] == [
        first.SOPInstanceUID,
        second.SOPInstanceUID,
        second.SOPInstanceUID,
    ]
    assert received[0].PixelData == first.PixelData
    assert received[1].PatientName == second.PatientName


def test_c_store_status_dataset_with_comment(make_ae):
    def on_c_store(ds, context, info):
        status = Dataset()
        status.Status = 0xB007
        status.ErrorComment = "coerced"
        return status

    scp = _started(_scp(make_ae, on_c_store=on_c_store))
    association = _associate(_scu(make_ae), scp)
    status = association.send_c_store(make_dataset())
    association.release()
    assert status.Status == 0xB007
    assert status.ErrorComment == "coerced"


@pytest.mark.parametrize(
    ("callback", "expected"),
    [
        pytest.param("raise", 0xC211, id="raises"),
        pytest.param("garbage", 0xC211, id="returns-a-string"),
        pytest.param("out-of-range", 0xC211, id="status-out-of-range"),
        pytest.param("none", 0xC211, id="returns-none"),
    ],
)
def test_c_store_bad_callback_fails_and_association_goes_on(make_ae, callback, expected):
    def on_c_store(ds, context, info):
        if callback == "raise":
            raise RuntimeError("boom")
        return {"garbage": "ok", "out-of-range": 0x10000, "none": None}[callback]

    scp = _started(_scp(make_ae, on_c_store=on_c_store))
    association = _associate(_scu(make_ae), scp)
    status = association.send_c_store(make_dataset())
    assert status.Status == expected
    assert "ErrorComment" in status
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    association.release()


@pytest.mark.parametrize("callback", ["raise", "garbage", "out-of-range"])
def test_c_echo_bad_callback_is_processing_failure(make_ae, callback):
    def on_c_echo(context, info):
        if callback == "raise":
            raise ValueError("nope")
        return "yes" if callback == "garbage" else -1

    scp = _started(_scp(make_ae, on_c_echo=on_c_echo))
    association = _associate(_scu(make_ae), scp)
    assert association.send_c_echo().Status == 0x0110
    assert association.send_c_echo().Status == 0x0110
    assert association.is_established
    association.release()


def test_c_store_without_handler_is_refused(make_ae):
    scp = _started(_scp(make_ae))
    association = _associate(_scu(make_ae), scp)
    status = association.send_c_store(make_dataset())
    association.release()
    assert status.Status == 0xC210


# --- C-FIND ---------------------------------------------------------------------------------


def _matches(count: int) -> list[Dataset]:
    results = []
    for index in range(count):
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "PATIENT"
        identifier.PatientName = f"TEST^{index}"
        identifier.PatientID = f"PID{index}"
        results.append(identifier)
    return results


def test_c_find_pending_results_then_success(make_ae):
    queries: list[Dataset] = []

    def on_c_find(ds, context, info):
        queries.append(ds)
        for identifier in _matches(3):
            yield 0xFF00, identifier

    scp = _started(_scp(make_ae, on_c_find=on_c_find))
    association = _associate(_scu(make_ae), scp)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = "TEST*"
    query.PatientID = ""
    responses = list(association.send_c_find(query, query_model="P"))
    association.release()
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert [str(identifier.PatientID) for _, identifier in responses[:3]] == [
        "PID0",
        "PID1",
        "PID2",
    ]
    assert responses[-1][1] is None
    assert str(queries[0].PatientName) == "TEST*"


def test_c_find_cancel_is_honoured(make_ae):
    cancel_seen = threading.Event()

    def on_c_find(ds, context, info):
        for number, identifier in enumerate(_matches(50)):
            yield 0xFF00, identifier
            if number == 0:
                assert cancel_seen.wait(WAIT)

    scp = _started(_scp(make_ae, on_c_find=on_c_find))
    dispatcher = scp._dispatcher
    original_cancel = dispatcher.cancel

    def cancel(assoc_id: int, message_id: int) -> None:
        original_cancel(assoc_id, message_id)
        cancel_seen.set()

    dispatcher.cancel = cancel
    association = _associate(_scu(make_ae), scp)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    statuses = []
    for status, _identifier in association.send_c_find(query, msg_id=7):
        statuses.append(int(status.Status))
        if len(statuses) == 1:
            association.send_c_cancel(7)
    assert association.send_c_echo().Status == 0x0000
    association.release()
    assert statuses[-1] == 0xFE00
    assert statuses[:-1] == [0xFF00] * (len(statuses) - 1)
    assert len(statuses) <= 3


@pytest.mark.parametrize("kind", ["raise-early", "raise-late", "bad-yield", "not-iterable"])
def test_c_find_bad_callback_is_failure(make_ae, kind):
    def on_c_find(ds, context, info):
        if kind == "not-iterable":
            return 42
        return generator()

    def generator():
        if kind == "raise-early":
            raise RuntimeError("broken query")
        yield 0xFF00, _matches(1)[0]
        if kind == "raise-late":
            raise RuntimeError("broken later")
        yield "pending", None

    scp = _started(_scp(make_ae, on_c_find=on_c_find))
    association = _associate(_scu(make_ae), scp)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    responses = list(association.send_c_find(query))
    final = int(responses[-1][0].Status)
    assert final == 0xC311
    assert association.send_c_echo().Status == 0x0000
    association.release()


# --- C-GET ----------------------------------------------------------------------------------


def _get_scu(make_ae, received: list[Dataset], statuses: dict[str, int] | None = None):
    scu = _scu(make_ae, "GETSCU")

    def on_c_store(ds, context, info):
        received.append(ds)
        return (statuses or {}).get(str(ds.SOPInstanceUID), 0x0000)

    scu.on_c_store = on_c_store
    roles = [build_role(uid, scp_role=True) for uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)]
    return scu, roles


def test_c_get_sub_operations_counted(make_ae):
    archive = [make_dataset(1, 1, 1, i) for i in range(1, 4)] + [
        make_dataset(2, 1, 1, 1, modality="MR")
    ]

    def on_c_get(ds, context, info):
        yield len(archive)
        for item in archive:
            yield 0xFF00, item

    scp = _started(_scp(make_ae, on_c_get=on_c_get))
    received: list[Dataset] = []
    scu, roles = _get_scu(make_ae, received)
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    responses = [status for status, _ in association.send_c_get(query)]
    association.release()
    assert [int(s.Status) for s in responses] == [0xFF00] * 4 + [0x0000]
    assert [int(s.NumberOfRemainingSuboperations) for s in responses[:-1]] == [3, 2, 1, 0]
    final = responses[-1]
    assert final.NumberOfCompletedSuboperations == 4
    assert final.NumberOfFailedSuboperations == 0
    assert final.NumberOfWarningSuboperations == 0
    assert [str(ds.SOPInstanceUID) for ds in received] == [str(ds.SOPInstanceUID) for ds in archive]
    assert received[0].PixelData == archive[0].PixelData


def test_c_get_sub_operations_reach_the_requestor_one_at_a_time_in_order(make_ae, tmp_path):
    # The built-in Q/R SCP hands several sub-operations over at once (a window); the acceptor
    # must still send one C-STORE-RQ at a time (PS3.7 D.3.3.3, no asynchronous window
    # negotiated) and in order.
    from workers.store.index import IndexedFileStore

    archive = [make_dataset(1, 1, 1, i) for i in range(1, 9)]
    scp = _scp(make_ae)
    scp.file_store = IndexedFileStore(tmp_path, fsync=False)
    _started(scp)
    lock = threading.Lock()
    busy = [0, 0]  # now, most
    order: list[str] = []
    scu, roles = _get_scu(make_ae, [])

    def on_c_store(ds, context, info):
        with lock:
            busy[0] += 1
            busy[1] = max(busy)
            order.append(str(ds.SOPInstanceUID))
        time.sleep(0.02)  # long enough for a second request to overlap if one were sent
        with lock:
            busy[0] -= 1
        return 0x0000

    scu.on_c_store = on_c_store
    sender = _associate(_scu(make_ae, "SENDER"), scp)
    for ds in archive:
        assert sender.send_c_store(ds).Status == 0x0000
    sender.release()
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = str(archive[0].PatientID)
    statuses = [int(status.Status) for status, _ in association.send_c_get(query)]
    association.release()
    assert statuses == [0xFF00] * len(archive) + [0x0000]
    assert busy[1] == 1
    assert sorted(order) == sorted(str(ds.SOPInstanceUID) for ds in archive)


def test_a_c_get_sub_operation_left_unanswered_aborts_the_association(make_ae, caplog):
    # The requestor takes longer than the DIMSE timeout to answer a C-STORE-RQ: the acceptor
    # aborts instead of sending the next sub-operations after the C-GET has given up.
    archive = [make_dataset(1, 1, 1, i) for i in range(1, 4)]

    def on_c_get(ds, context, info):
        yield len(archive)
        for item in archive:
            yield 0xFF00, item

    scp = _scp(make_ae, on_c_get=on_c_get)
    scp.dimse_timeout = 0.3
    _started(scp)
    stored: list[str] = []
    scu, roles = _get_scu(make_ae, [])

    def on_c_store(ds, context, info):
        stored.append(str(ds.SOPInstanceUID))
        time.sleep(1.0)  # far past the acceptor's DIMSE timeout
        return 0x0000

    scu.on_c_store = on_c_store
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    with caplog.at_level("INFO"):
        list(association.send_c_get(query))
        for _ in range(100):
            if association.is_aborted:
                break
            time.sleep(0.02)
    assert association.is_aborted
    assert stored == [str(archive[0].SOPInstanceUID)]  # nothing sent after the silent one


def test_c_get_partial_failure_is_warning_with_failed_list(make_ae):
    archive = [make_dataset(1, 1, 1, i) for i in range(1, 4)]
    failing = str(archive[1].SOPInstanceUID)

    def on_c_get(ds, context, info):
        yield 3
        for item in archive:
            yield 0xFF00, item

    scp = _started(_scp(make_ae, on_c_get=on_c_get))
    received: list[Dataset] = []
    scu, roles = _get_scu(make_ae, received, {failing: 0xA700})
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    responses = list(association.send_c_get(query))
    association.release()
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 2
    assert final.NumberOfFailedSuboperations == 1
    assert identifier is not None
    assert identifier.FailedSOPInstanceUIDList == failing
    assert len(received) == 3


def test_c_get_all_failed_without_role_is_a702(make_ae):
    def on_c_get(ds, context, info):
        yield 1
        yield 0xFF00, make_dataset()

    scp = _started(_scp(make_ae, on_c_get=on_c_get))
    association = _associate(_scu(make_ae), scp)  # no role selection: we cannot receive
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    responses = list(association.send_c_get(query))
    association.release()
    final = responses[-1][0]
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 1


# --- C-MOVE ---------------------------------------------------------------------------------


def test_c_move_to_a_second_ae(make_ae):
    archive = [make_dataset(1, 1, 1, i) for i in range(1, 3)] + [
        make_dataset(2, 2, 1, 1, modality="MR")
    ]
    arrived: list[tuple[str, Any]] = []
    all_arrived = threading.Event()

    def on_store_at_destination(ds, context, info):
        arrived.append((str(ds.SOPInstanceUID), info["parameters"]["originator_aet"]))
        if len(arrived) == len(archive):
            all_arrived.set()
        return 0x0000

    destination = make_ae("DEST")
    for uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        destination.add_supported_context(uid)
    destination.on_c_store = on_store_at_destination
    _started(destination)
    destinations: list[bytes] = []

    def on_c_move(ds, move_aet, context, info):
        destinations.append(move_aet)
        yield "127.0.0.1", destination.port
        yield len(archive)
        for item in archive:
            yield 0xFF00, item

    scp = _started(_scp(make_ae, on_c_move=on_c_move))
    association = _associate(_scu(make_ae, "MOVESCU"), scp)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "PID001"
    responses = [status for status, _ in association.send_c_move(query, b"DEST")]
    association.release()
    assert all_arrived.wait(WAIT)
    assert destinations == [b"DEST"]
    assert int(responses[-1].Status) == 0x0000
    assert responses[-1].NumberOfCompletedSuboperations == 3
    assert sorted(uid for uid, _ in arrived) == sorted(str(d.SOPInstanceUID) for d in archive)
    assert {originator for _, originator in arrived} == {"MOVESCU"}


def test_c_move_unknown_destination(make_ae):
    def on_c_move(ds, move_aet, context, info):
        yield None, None
        yield 0

    scp = _started(_scp(make_ae, on_c_move=on_c_move))
    association = _associate(_scu(make_ae), scp)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    responses = list(association.send_c_move(query, "NOWHERE"))
    association.release()
    assert responses[-1][0].Status == 0xA801


def test_c_move_destination_unreachable_fails_sub_operations(make_ae):
    from tests.synthetic import free_port

    def on_c_move(ds, move_aet, context, info):
        yield "127.0.0.1", free_port()
        yield 2
        yield 0xFF00, make_dataset(1, 1, 1, 1)
        yield 0xFF00, make_dataset(1, 1, 1, 2)

    scp = _started(_scp(make_ae, on_c_move=on_c_move))
    association = _associate(_scu(make_ae), scp)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    responses = list(association.send_c_move(query, "DEAD"))
    assert association.send_c_echo().Status == 0x0000
    association.release()
    final = responses[-1][0]
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 2


# --- DIMSE-N --------------------------------------------------------------------------------


def test_n_services_round_trip(make_ae):
    calls: list[tuple[str, Any]] = []

    def reply(name: str, value: Any, **attributes: Any):
        calls.append((name, value))
        answer = Dataset()
        for keyword, item in attributes.items():
            setattr(answer, keyword, item)
        return 0x0000, answer

    scp = _started(
        _scp(
            make_ae,
            on_n_get=lambda tags, context, info: reply("get", tags, PrinterStatus="NORMAL"),
            on_n_set=lambda ds, context, info: reply(
                "set", str(ds.PerformedProcedureStepStatus), PerformedProcedureStepStatus="DONE"
            ),
            on_n_create=lambda ds, context, info: reply(
                "create", str(ds.PatientID), PatientID=str(ds.PatientID)
            ),
            on_n_action=lambda ds, context, info: reply(
                "action", str(ds.TransactionUID), TransactionUID=str(ds.TransactionUID)
            ),
            on_n_event_report=lambda ds, context, info: reply("event", str(ds.TransactionUID)),
            on_n_delete=lambda context, info: reply("delete", None)[0],
        )
    )
    association = _associate(_scu(make_ae), scp)
    instance = "1.2.826.0.1.3680043.8.498.77.9.1"

    status, answer = association.send_n_get([0x21100010], PRINTER, "1.2.840.10008.5.1.1.17")
    assert status.Status == 0x0000
    assert answer is not None
    assert answer.PrinterStatus == "NORMAL"

    created = Dataset()
    created.PatientID = "PID9"
    status, answer = association.send_n_create(created, MPPS, instance)
    assert status.Status == 0x0000
    assert answer.PatientID == "PID9"

    change = Dataset()
    change.PerformedProcedureStepStatus = "COMPLETED"
    status, answer = association.send_n_set(change, MPPS, instance)
    assert status.Status == 0x0000
    assert answer.PerformedProcedureStepStatus == "DONE"

    action = Dataset()
    action.TransactionUID = "1.2.3.4"
    status, answer = association.send_n_action(
        action, 1, STORAGE_COMMITMENT, "1.2.840.10008.1.20.1.1"
    )
    assert status.Status == 0x0000
    assert answer.TransactionUID == "1.2.3.4"

    status, answer = association.send_n_event_report(
        action, 1, STORAGE_COMMITMENT, "1.2.840.10008.1.20.1.1"
    )
    assert status.Status == 0x0000

    status, answer = association.send_n_delete(MPPS, instance)
    assert status.Status == 0x0000
    assert answer is None
    association.release()
    assert [name for name, _ in calls] == ["get", "create", "set", "action", "event", "delete"]
    assert calls[0][1] == [0x21100010]
    assert calls[2][1] == "COMPLETED"


def test_n_service_failures(make_ae):
    def broken(*args):
        raise RuntimeError("N broke")

    scp = _started(_scp(make_ae, on_n_set=broken, on_n_action=lambda *a: "bad"))
    association = _associate(_scu(make_ae), scp)
    change = Dataset()
    change.PatientID = "X"
    status, _ = association.send_n_set(change, MPPS, "1.2.3.4")
    assert status.Status == 0x0110
    assert "N broke" in str(status.ErrorComment)
    status, _ = association.send_n_action(change, 1, STORAGE_COMMITMENT, "1.2.3.4")
    assert status.Status == 0x0110
    status, _ = association.send_n_delete(MPPS, "1.2.3.4")  # no handler
    assert status.Status == 0x0112
    assert association.send_c_echo().Status == 0x0000
    association.release()


# --- async API ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_association(make_ae):
    stored: list[str] = []

    def on_c_store(ds, context, info):
        stored.append(str(ds.SOPInstanceUID))
        return 0x0000

    def on_c_find(ds, context, info):
        yield 0xFF00, _matches(1)[0]

    scp = _started(_scp(make_ae, on_c_store=on_c_store, on_c_find=on_c_find))
    scu = _scu(make_ae)
    association = await scu.associate_async("127.0.0.1", scp.port, ae_title="SCP")
    async with association:
        assert association.is_established
        assert (await association.send_c_echo()).Status == 0x0000
        assert (await association.send_c_store(make_dataset())).Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        found = [int(status.Status) async for status, _ in association.send_c_find(query)]
    assert found == [0xFF00, 0x0000]
    assert association.is_released
    assert not association.is_established
    assert stored == [str(make_dataset().SOPInstanceUID)]


@pytest.mark.asyncio
async def test_async_association_rejected_and_unreachable(make_ae):
    from tests.synthetic import free_port

    scp = _scp(make_ae)
    scp.require_called_aet = True
    _started(scp)
    scu = _scu(make_ae)
    rejected = await scu.associate_async("127.0.0.1", scp.port, ae_title="WRONG")
    assert rejected.is_rejected
    assert not rejected.is_established
    unreachable = await scu.associate_async("127.0.0.1", free_port())
    assert unreachable.is_aborted
    assert not unreachable.is_established


# --- event-handler style and association callbacks -------------------------------------------


def test_event_handler_style(make_ae):
    events: list[Any] = []

    def handle_store(event):
        events.append(
            (
                str(event.dataset.SOPInstanceUID),
                str(event.context.abstract_syntax),
                event.assoc.requestor.ae_title,
            )
        )
        return 0x0000

    def handle_echo(event):
        return 0x0000

    scp = _scp(make_ae)
    scp.start(
        block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store), (evt.EVT_C_ECHO, handle_echo)]
    )
    association = _associate(_scu(make_ae), scp)
    dataset = make_dataset()
    assert association.send_c_store(dataset).Status == 0x0000
    assert association.send_c_echo().Status == 0x0000
    association.release()
    assert events == [(str(dataset.SOPInstanceUID), CT_IMAGE_STORAGE, "SCU")]


def test_association_callbacks_fire(make_ae):
    fired: dict[str, threading.Event] = {
        name: threading.Event() for name in ("accepted", "released", "aborted", "rejected")
    }
    scp = _scp(make_ae)
    scp.require_calling_aet = [b"SCU"]
    for name, event in fired.items():
        setattr(scp, f"on_association_{name}", lambda _association, e=event: e.set())
    notified: list[str] = []
    scp.bind(evt.EVT_RELEASED, lambda _association: notified.append("released"))
    _started(scp)

    first = _associate(_scu(make_ae), scp)
    assert fired["accepted"].wait(WAIT)
    first.release()
    assert fired["released"].wait(WAIT)

    second = _associate(_scu(make_ae), scp)
    second.abort()
    assert fired["aborted"].wait(WAIT)

    stranger = _scu(make_ae, "STRANGER").associate("127.0.0.1", scp.port, ae_title="SCP")
    assert stranger.is_rejected
    assert fired["rejected"].wait(WAIT)
    assert notified == ["released"]


@pytest.mark.parametrize("service", ["get", "move"])
@pytest.mark.parametrize("kind", ["raise-at-once", "raise-in-generator", "bad-yield", "no-dataset"])
def test_retrieve_bad_callbacks(make_ae, service, kind):
    destination = make_ae("DEST")
    destination.add_supported_context(CT_IMAGE_STORAGE)
    destination.on_c_store = lambda ds, context, info: 0x0000
    _started(destination)

    def generator(preamble: list[Any]):
        yield from preamble
        yield 2
        if kind == "raise-in-generator":
            raise RuntimeError("retrieve broke")
        if kind == "bad-yield":
            yield "not a status", None
        yield 0xFF00, "not a dataset"
        yield 0xFF00, make_dataset()

    def on_c_get(ds, context, info):
        if kind == "raise-at-once":
            raise RuntimeError("retrieve broke")
        return generator([])

    def on_c_move(ds, move_aet, context, info):
        if kind == "raise-at-once":
            raise RuntimeError("retrieve broke")
        return generator([("127.0.0.1", destination.port)])

    scp = _started(_scp(make_ae, on_c_get=on_c_get, on_c_move=on_c_move))
    received: list[Dataset] = []
    scu, roles = _get_scu(make_ae, received)
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    if service == "get":
        responses = list(association.send_c_get(query))
    else:
        responses = list(association.send_c_move(query, "DEST"))
    final = responses[-1][0]
    if kind == "no-dataset":
        assert final.Status == 0xB000  # one failed (no data set), one completed
        assert final.NumberOfFailedSuboperations == 1
        assert final.NumberOfCompletedSuboperations == 1
    else:
        assert final.Status == (0xC411 if service == "get" else 0xC511)
        assert "ErrorComment" in final
    assert association.send_c_echo().Status == 0x0000
    association.release()


def test_c_get_cancel(make_ae):
    archive = [make_dataset(1, 1, 1, i) for i in range(1, 6)]
    cancel_seen = threading.Event()

    def on_c_get(ds, context, info):
        yield len(archive)
        for number, item in enumerate(archive):
            yield 0xFF00, item
            if number == 0:
                assert cancel_seen.wait(WAIT)

    scp = _started(_scp(make_ae, on_c_get=on_c_get))
    original_cancel = scp._dispatcher.cancel

    def cancel(assoc_id: int, message_id: int) -> None:
        original_cancel(assoc_id, message_id)
        cancel_seen.set()

    scp._dispatcher.cancel = cancel
    received: list[Dataset] = []
    scu, roles = _get_scu(make_ae, received)
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    statuses = []
    for status, _identifier in association.send_c_get(query, msg_id=3):
        statuses.append(status)
        if len(statuses) == 1:
            association.send_c_cancel(3)
    association.release()
    final = statuses[-1]
    assert final.Status == 0xFE00
    assert final.NumberOfRemainingSuboperations == len(archive) - len(received)
    assert final.NumberOfCompletedSuboperations == len(received)
    assert 1 <= len(received) <= 2


def test_event_handler_style_find_and_get(make_ae):
    archive = [make_dataset(1, 1, 1, i) for i in range(1, 3)]
    accepted: list[str] = []

    def handle_find(event):
        assert str(event.identifier.QueryRetrieveLevel) == "PATIENT"
        for identifier in _matches(2):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, identifier

    def handle_get(event):
        yield len(archive)
        for item in archive:
            yield 0xFF00, item

    scp = _scp(make_ae)
    scp.start(
        block=False,
        evt_handlers=[
            (evt.EVT_C_FIND, handle_find),
            (evt.EVT_C_GET, handle_get),
            (evt.EVT_ACCEPTED, lambda association: accepted.append("accepted")),
        ],
    )
    received: list[Dataset] = []
    scu, roles = _get_scu(make_ae, received)
    association = _associate(scu, scp, ext_neg=roles)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    found = [int(status.Status) for status, _ in association.send_c_find(query)]
    got = [status for status, _ in association.send_c_get(query)]
    association.release()
    assert found == [0xFF00, 0xFF00, 0x0000]
    assert int(got[-1].Status) == 0x0000
    assert got[-1].NumberOfCompletedSuboperations == 2
    assert len(received) == 2
    assert accepted == ["accepted"]


@pytest.mark.asyncio
async def test_requests_beyond_the_window_wait_their_turn(make_ae):
    import asyncio

    paused = threading.Event()
    order: list[int] = []

    def on_accepted(server_association):
        original = server_association.pause_reading

        def pause_reading():
            paused.set()  # the second request arrived while the first was in flight
            original()

        server_association.pause_reading = pause_reading

    def on_c_echo(context, info):
        message_id = info["parameters"]["message_id"]
        if message_id == 1:
            assert paused.wait(WAIT)
        order.append(message_id)
        return 0x0000

    scp = _scp(make_ae, on_c_echo=on_c_echo)
    scp.on_association_accepted = on_accepted
    _started(scp)
    association = await _scu(make_ae).associate_async("127.0.0.1", scp.port, ae_title="SCP")
    async with association:
        first, second = await asyncio.gather(
            association.send_c_echo(msg_id=1), association.send_c_echo(msg_id=2)
        )
        third = await association.send_c_echo(msg_id=3)
    assert [first.Status, second.Status, third.Status] == [0, 0, 0]
    assert order == [1, 2, 3]
    assert association.is_released
