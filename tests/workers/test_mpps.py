# The built-in Modality Performed Procedure Step SCP (PS3.4 Annex F): the step store on both
# index backends, the DIMSE-N handlers, and a round trip with our SCU.
from __future__ import annotations

import threading
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from node import evt
from node.dicomio import decode_dataset, encode_dataset
from node.dimse.messages import CommandField, NCreateRQ, NGetRQ, NSetRQ
from node.dispatch import ServiceRequest
from tests.synthetic import PATIENCE
from tests.workers.network import archive, modality
from tests.workers.test_qr import ASSOCIATION, FakeChannel
from workers.handlers.common import Handlers
from workers.handlers.mpps import (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE,
)
from workers.service import builtin_service, handle_request
from workers.store.index import IndexedFileStore
from workers.store.mpps import MppsError, MppsStore

MPPS = MODALITY_PERFORMED_PROCEDURE_STEP
STEP = "1.2.826.0.1.3680043.8.498.77.5.1"


def step(status: str | None = "IN PROGRESS", **attributes: Any) -> Dataset:
    ds = Dataset()
    if status is not None:
        ds.PerformedProcedureStepStatus = status
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def steps(open_index) -> MppsStore:
    return MppsStore(open_index())


# --- the store (both backends) -----------------------------------------------------------------


def test_create_update_get(steps):
    steps.create(STEP, step(PatientID="PID1", PerformedProcedureStepID="PPS1"))
    assert steps.get(STEP).PatientID == "PID1"
    now = steps.update(STEP, step("IN PROGRESS", PerformedProcedureStepDescription="half"))
    assert now.PerformedProcedureStepDescription == "half"
    done = steps.update(STEP, step("COMPLETED", PerformedProcedureStepEndTime="101010"))
    assert done.PerformedProcedureStepStatus == "COMPLETED"
    stored = steps.get(STEP)
    assert (stored.PatientID, stored.PerformedProcedureStepEndTime) == ("PID1", "101010")
    assert steps.get("1.2.3") is None


@pytest.mark.parametrize(
    ("attributes", "status"),
    [(step(None), 0x0120), (step("COMPLETED"), 0x0106), (step("NONSENSE"), 0x0106)],
    ids=["no-status", "completed", "nonsense"],
)
def test_create_refuses_a_step_that_is_not_in_progress(steps, attributes, status):
    with pytest.raises(MppsError) as raised:
        steps.create(STEP, attributes)
    assert raised.value.status == status
    assert raised.value.offending_element == 0x00400252
    assert steps.get(STEP) is None


def test_create_refuses_a_duplicate(steps):
    steps.create(STEP, step())
    with pytest.raises(MppsError) as raised:
        steps.create(STEP, step())
    assert raised.value.status == 0x0111


def test_a_finished_step_may_no_longer_be_updated(steps):
    steps.create(STEP, step())
    steps.update(STEP, step("DISCONTINUED"))
    with pytest.raises(MppsError) as raised:
        steps.update(STEP, step("COMPLETED"))
    assert (raised.value.status, raised.value.error_id) == (0x0110, 0xA710)
    assert "may no longer be updated" in raised.value.comment
    assert steps.get(STEP).PerformedProcedureStepStatus == "DISCONTINUED"


def test_update_refuses_unknown_steps_and_statuses(steps):
    with pytest.raises(MppsError) as raised:
        steps.update(STEP, step("COMPLETED"))
    assert raised.value.status == 0x0112
    steps.create(STEP, step())
    with pytest.raises(MppsError) as raised:
        steps.update(STEP, step("SCHEDULED"))
    assert raised.value.status == 0x0106
    assert steps.get(STEP).PerformedProcedureStepStatus == "IN PROGRESS"


def test_two_concurrent_completions_one_wins(open_index):
    MppsStore(open_index()).create(STEP, step())
    stores = [MppsStore(open_index()) for _ in range(4)]
    outcomes: list[object] = []
    start = threading.Barrier(len(stores))

    def complete(store: MppsStore, n: int) -> None:
        start.wait(PATIENCE)
        try:
            store.update(STEP, step("COMPLETED", PerformedProcedureStepDescription=str(n)))
            outcomes.append("ok")
        except MppsError as error:
            outcomes.append(error.status)

    threads = [threading.Thread(target=complete, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert sorted(outcomes, key=str) == [272, 272, 272, "ok"]


# --- the handlers ------------------------------------------------------------------------------


@pytest.fixture
def handlers(tmp_path):
    files = IndexedFileStore(tmp_path / "data", fsync=False)
    yield Handlers(file_store=files)
    files.index.close()


def run(handlers: Handlers, command: Any, dataset: Dataset | None, sop_class: str = MPPS):
    data = encode_dataset(dataset, ExplicitVRLittleEndian) if dataset is not None else None
    channel = FakeChannel()
    request = ServiceRequest(ASSOCIATION, 1, sop_class, ExplicitVRLittleEndian, command, data)
    handle_request(request, channel, handlers)
    response, reply, final = channel.responses[-1]
    assert final
    return response, reply


def test_n_create_without_an_instance_uid_gets_one(handlers):
    response, _ = run(handlers, NCreateRQ(message_id=1, affected_sop_class_uid=MPPS), step())
    assert response.status == 0x0000
    assert response.affected_sop_instance_uid.startswith("2.25.")
    assert MppsStore(handlers.file_store.index).get(response.affected_sop_instance_uid)


def test_n_create_refusals_carry_the_offending_element(handlers):
    command = NCreateRQ(message_id=1, affected_sop_class_uid=MPPS, affected_sop_instance_uid=STEP)
    response, _ = run(handlers, command, step("COMPLETED"))
    assert response.status == 0x0106
    assert response.offending_element == (0x00400252,)
    assert "IN PROGRESS" in response.error_comment
    bad = NCreateRQ(message_id=2, affected_sop_class_uid=MPPS, affected_sop_instance_uid="1.a")
    response, _ = run(handlers, bad, step())
    assert response.status == 0x0117


def test_n_set_and_n_get(handlers):
    create = NCreateRQ(message_id=1, affected_sop_class_uid=MPPS, affected_sop_instance_uid=STEP)
    assert run(handlers, create, step(PatientID="PID7"))[0].status == 0x0000
    change = NSetRQ(message_id=2, requested_sop_class_uid=MPPS, requested_sop_instance_uid=STEP)
    assert run(handlers, change, step("COMPLETED"))[0].status == 0x0000
    response, _ = run(handlers, change, step("DISCONTINUED"))
    assert (response.status, response.error_id) == (0x0110, 0xA710)
    get = NGetRQ(
        message_id=3,
        requested_sop_class_uid=MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE,
        requested_sop_instance_uid=STEP,
        attribute_identifier_list=(0x00400252, 0x00100010),
    )
    response, reply = run(handlers, get, None, MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE)
    assert response.status == 0x0000
    found = decode_dataset(reply, ExplicitVRLittleEndian)
    assert list(found.keys()) == [0x00400252]  # Patient's Name was never set
    assert found.PerformedProcedureStepStatus == "COMPLETED"
    everything = NGetRQ(message_id=4, requested_sop_class_uid=MPPS, requested_sop_instance_uid=STEP)
    response, reply = run(handlers, everything, None)
    assert decode_dataset(reply, ExplicitVRLittleEndian).PatientID == "PID7"
    unknown = NGetRQ(message_id=5, requested_sop_class_uid=MPPS, requested_sop_instance_uid="1.2")
    response, reply = run(handlers, unknown, None)
    assert (response.status, reply) == (0x0112, None)


def test_a_database_failure_is_a_processing_failure(handlers):
    handlers.file_store.index.close()
    command = NCreateRQ(message_id=1, affected_sop_class_uid=MPPS, affected_sop_instance_uid=STEP)
    response, _ = run(handlers, command, step())
    assert response.status == 0x0110
    assert "closed" in response.error_comment


def test_builtin_mpps_only_without_user_handlers(handlers):
    for field in (CommandField.N_CREATE_RQ, CommandField.N_SET_RQ, CommandField.N_GET_RQ):
        assert builtin_service(field, MPPS, handlers) is not None
    assert builtin_service(CommandField.N_DELETE_RQ, MPPS, handlers) is None
    own_get = Handlers(file_store=handlers.file_store, on_n_get=lambda *a: 0)
    assert builtin_service(CommandField.N_CREATE_RQ, MPPS, own_get) is not None
    assert builtin_service(CommandField.N_GET_RQ, MPPS, own_get) is None
    own_set = Handlers(file_store=handlers.file_store, events={evt.EVT_N_SET: lambda e: 0})
    assert builtin_service(CommandField.N_CREATE_RQ, MPPS, own_set) is None
    assert builtin_service(CommandField.N_CREATE_RQ, MPPS, Handlers()) is None


# --- round trip with our SCU -------------------------------------------------------------------


def test_mpps_round_trip(make_ae, tmp_path):
    files = IndexedFileStore(tmp_path / "data", fsync=False)
    try:
        scp = archive(make_ae, files)
        association = modality(make_ae).associate("127.0.0.1", scp.port, ae_title="ARCHIVE")
        assert association.is_established
        status, _ = association.send_n_create(step(PatientID="PID3"), MPPS, STEP)
        assert status.Status == 0x0000
        status, _ = association.send_n_create(step(), MPPS, STEP)
        assert status.Status == 0x0111
        status, _ = association.send_n_set(step("COMPLETED"), MPPS, STEP)
        assert status.Status == 0x0000
        status, _ = association.send_n_set(step("IN PROGRESS"), MPPS, STEP)
        assert status.Status == 0x0110
        assert status.ErrorID == 0xA710
        assert "no longer be updated" in str(status.ErrorComment)
        status, found = association.send_n_get([0x00400252], MPPS, STEP)
        assert status.Status == 0x0000
        assert found.PerformedProcedureStepStatus == "COMPLETED"
        association.release()
    finally:
        files.index.close()
