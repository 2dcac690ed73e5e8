# The built-in Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION checks, the
# commitment result, and its N-EVENT-REPORT on a new association to the requester.
from __future__ import annotations

import queue
from typing import Any

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from node import evt
from node.dicomio import encode_dataset
from node.dimse.messages import CommandField, NActionRQ
from node.dispatch import ServiceRequest
from tests.synthetic import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, PATIENCE, make_dataset
from tests.workers.network import archive, modality
from tests.workers.test_qr import ASSOCIATION, FakeChannel
from workers.handlers import commitment
from workers.handlers.commitment import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    CommitmentResult,
    Reference,
    check_commitment,
    deliver_event_report,
)
from workers.handlers.common import Handlers
from workers.service import builtin_service, handle_request
from workers.store.index import IndexedFileStore

TRANSACTION = "1.2.826.0.1.3680043.8.498.77.999.1"


@pytest.fixture
def store(tmp_path):
    files = IndexedFileStore(tmp_path / "data", fsync=False)
    yield files
    files.index.close()


def stored(store, *datasets) -> list[Dataset]:
    for ds in datasets:
        data = encode_dataset(ds, ExplicitVRLittleEndian)
        path = store.store(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, data).path
        store.index.add_stored(
            path, data, ExplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID
        )
    return list(datasets)


def action(*references: tuple[str, str], transaction: str | None = TRANSACTION) -> Dataset:
    ds = Dataset()
    if transaction is not None:  # added unvalidated: a peer may send anything
        ds.add(DataElement(0x00081195, "UI", transaction, validation_mode=config.IGNORE))
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    if items:
        ds.ReferencedSOPSequence = Sequence(items)
    return ds


def n_action(
    handlers: Handlers,
    dataset: Dataset | bytes | None,
    *,
    action_type: int = 1,
    instance: str = STORAGE_COMMITMENT_INSTANCE,
) -> FakeChannel:
    data = (
        encode_dataset(dataset, ExplicitVRLittleEndian) if isinstance(dataset, Dataset) else dataset
    )
    command = NActionRQ(
        message_id=3,
        requested_sop_class_uid=STORAGE_COMMITMENT_PUSH,
        requested_sop_instance_uid=instance,
        action_type_id=action_type,
    )
    channel = FakeChannel()
    request = ServiceRequest(
        ASSOCIATION, 1, STORAGE_COMMITMENT_PUSH, ExplicitVRLittleEndian, command, data
    )
    handle_request(request, channel, handlers)
    return channel


# --- the result ----------------------------------------------------------------------------------


def test_check_commitment_sorts_references_by_failure_reason(store):
    ct, mr, gone = stored(
        store, make_dataset(1, 1, 1, 1), make_dataset(1, 1, 1, 2), make_dataset(1, 1, 1, 3)
    )
    store.index.stored_instances([gone.SOPInstanceUID])[gone.SOPInstanceUID].path.unlink()
    result = check_commitment(
        store.index,
        TRANSACTION,
        [
            Reference(CT_IMAGE_STORAGE, ct.SOPInstanceUID),
            Reference(MR_IMAGE_STORAGE, mr.SOPInstanceUID),  # stored as CT
            Reference(CT_IMAGE_STORAGE, gone.SOPInstanceUID),  # file deleted
            Reference(CT_IMAGE_STORAGE, "1.2.3.4.5"),  # never stored
        ],
    )
    assert result.committed == [Reference(CT_IMAGE_STORAGE, ct.SOPInstanceUID)]
    assert [reason for _, reason in result.failed] == [0x0119, 0x0110, 0x0112]
    assert result.event_type == 2
    info = result.event_information("ARCHIVE")
    assert info.TransactionUID == TRANSACTION
    assert info.RetrieveAETitle == "ARCHIVE"
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [ct.SOPInstanceUID]
    assert [int(i.FailureReason) for i in info.FailedSOPSequence] == [0x0119, 0x0110, 0x0112]
    assert info.FailedSOPSequence[2].ReferencedSOPClassUID == CT_IMAGE_STORAGE


def test_parse_action_of_a_dataset_made_here():
    transaction, references = commitment.parse_action(
        action((CT_IMAGE_STORAGE, "1.2.3"), (MR_IMAGE_STORAGE, "1.2.4"))
    )
    assert transaction == TRANSACTION
    assert references == [
        Reference(CT_IMAGE_STORAGE, "1.2.3"),
        Reference(MR_IMAGE_STORAGE, "1.2.4"),
    ]
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.5"  # no SOP class: a failed reference, not an error
    ds = action()
    ds.ReferencedSOPSequence = Sequence([item])
    assert commitment.parse_action(ds)[1] == [Reference("", "1.2.5")]


def test_event_information_of_all_committed_and_of_all_failed():
    ok = CommitmentResult(TRANSACTION, committed=[Reference(CT_IMAGE_STORAGE, "1.2")])
    info = ok.event_information()
    assert ok.event_type == 1
    assert "FailedSOPSequence" not in info
    assert "RetrieveAETitle" not in info
    failed = CommitmentResult(TRANSACTION, failed=[(Reference(CT_IMAGE_STORAGE, "1.2"), 0x0112)])
    info = failed.event_information()
    assert failed.event_type == 2
    assert "ReferencedSOPSequence" not in info  # no successes: only the Failed SOP Sequence
    assert len(info.FailedSOPSequence) == 1


# --- the N-ACTION ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "options", "status"),
    [
        (action((CT_IMAGE_STORAGE, "1.2")), {"action_type": 2}, 0x0123),
        (action((CT_IMAGE_STORAGE, "1.2")), {"instance": "1.2.3"}, 0x0117),
        (action((CT_IMAGE_STORAGE, "1.2"), transaction=None), {}, 0x0115),
        (action((CT_IMAGE_STORAGE, "1.2"), transaction="../x"), {}, 0x0115),
        (action(), {}, 0x0115),
    ],
    ids=[
        "action-type",
        "instance",
        "no-transaction",
        "bad-transaction",
        "no-references",
    ],
)
def test_refused_n_actions(store, dataset, options, status):
    handlers = Handlers(file_store=store, local_ae_title="ARCHIVE")
    channel = n_action(handlers, dataset, **options)
    response = channel.final
    assert response.status == status
    assert response.error_comment
    assert response.affected_sop_class_uid == STORAGE_COMMITMENT_PUSH
    assert len(channel.responses) == 1


def test_an_undecodable_action_information_is_a_processing_failure(store, monkeypatch):
    def broken(request):
        raise ValueError("cannot decode")

    monkeypatch.setattr(commitment, "decoded_dataset", broken)
    channel = n_action(Handlers(file_store=store), action((CT_IMAGE_STORAGE, "1.2")))
    assert channel.final.status == 0x0110
    assert "cannot decode" in channel.final.error_comment


def test_accepted_n_action_answers_before_the_report_and_logs_an_unknown_requester(store, caplog):
    (ct,) = stored(store, make_dataset())
    handlers = Handlers(file_store=store, local_ae_title="ARCHIVE")
    channel = n_action(handlers, action((CT_IMAGE_STORAGE, ct.SOPInstanceUID)))
    response = channel.final
    assert response.status == 0x0000
    assert response.action_type_id == 1
    assert response.affected_sop_instance_uid == STORAGE_COMMITMENT_INSTANCE
    assert "not in the known AEs" in caplog.text


def test_builtin_commitment_only_without_a_user_handler_and_with_an_index(store):
    handlers = Handlers(file_store=store)
    assert builtin_service(CommandField.N_ACTION_RQ, STORAGE_COMMITMENT_PUSH, handlers) is not None
    assert builtin_service(CommandField.N_ACTION_RQ, "1.2.840.10008.5.1.1.16", handlers) is None
    assert builtin_service(CommandField.N_ACTION_RQ, STORAGE_COMMITMENT_PUSH, Handlers()) is None
    own = Handlers(file_store=store, on_n_action=lambda *args: 0)
    assert builtin_service(CommandField.N_ACTION_RQ, STORAGE_COMMITMENT_PUSH, own) is None
    bound = Handlers(file_store=store, events={evt.EVT_N_ACTION: lambda event: 0})
    assert builtin_service(CommandField.N_ACTION_RQ, STORAGE_COMMITMENT_PUSH, bound) is None


def test_delivery_to_an_unreachable_requester_is_retried_then_given_up(monkeypatch, caplog):
    from tests.synthetic import free_port

    monkeypatch.setattr(commitment, "DELIVERY_ATTEMPTS", 2)
    monkeypatch.setattr(commitment, "DELIVERY_RETRY_DELAY", 0.01)
    handlers = Handlers(known_aes={"GONE": ("127.0.0.1", free_port())})
    info = CommitmentResult(TRANSACTION).event_information()
    assert deliver_event_report(handlers, "GONE", 1, info) is None
    assert "attempt 2" in caplog.text
    assert "could not be delivered" in caplog.text


def test_delivery_needs_the_commitment_context(make_ae, monkeypatch, caplog):
    monkeypatch.setattr(commitment, "DELIVERY_ATTEMPTS", 1)
    peer = make_ae("PEER")
    peer.add_supported_context("1.2.840.10008.1.1")
    peer.start(block=False)
    handlers = Handlers(known_aes={"PEER": ("127.0.0.1", peer.port)})
    info = CommitmentResult(TRANSACTION).event_information()
    assert deliver_event_report(handlers, "PEER", 1, info) is None
    assert "association to PEER" in caplog.text or "did not accept" in caplog.text


# --- round trip with our SCU -------------------------------------------------------------------


def test_storage_commitment_round_trip_with_a_report_on_a_new_association(make_ae, store):
    reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()

    def on_event_report(event: Any) -> int:
        reports.put(
            (event.request.event_type_id, event.event_information, event.assoc.requestor.ae_title)
        )
        return 0x0000

    scu = modality(make_ae, listen=True)
    scu.bind(evt.EVT_N_EVENT_REPORT, on_event_report)
    scu.start(block=False)
    scp = archive(make_ae, store, known_aes={"MODALITY": ("127.0.0.1", scu.port)})
    association = scu.associate("127.0.0.1", scp.port, ae_title="ARCHIVE")
    assert association.is_established
    first, second = make_dataset(2, 1, 1, 1), make_dataset(2, 1, 1, 2)
    for ds in (first, second):
        assert association.send_c_store(ds).Status == 0x0000

    status, _ = association.send_n_action(
        action((CT_IMAGE_STORAGE, first.SOPInstanceUID), (CT_IMAGE_STORAGE, second.SOPInstanceUID)),
        1,
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_INSTANCE,
    )
    assert status.Status == 0x0000
    event_type, info, sender = reports.get(timeout=PATIENCE)
    assert (event_type, sender) == (1, "ARCHIVE")
    assert info.TransactionUID == TRANSACTION
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(
        [first.SOPInstanceUID, second.SOPInstanceUID]
    )

    missing = "1.2.826.0.1.3680043.8.498.77.404"
    status, _ = association.send_n_action(
        action(
            (CT_IMAGE_STORAGE, first.SOPInstanceUID),
            (CT_IMAGE_STORAGE, missing),
            transaction="1.2.3.9",
        ),
        1,
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_INSTANCE,
    )
    assert status.Status == 0x0000
    association.release()
    event_type, info, _ = reports.get(timeout=PATIENCE)
    assert event_type == 2
    assert info.TransactionUID == "1.2.3.9"
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
        first.SOPInstanceUID
    ]
    (failed,) = info.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == missing
    assert failed.FailureReason == 0x0112
