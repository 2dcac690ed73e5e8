# Our SCU receives a Storage Commitment N-EVENT-REPORT on the SAME association as its N-ACTION
# (PS3.4 J.3.3.1.3: an SCP may send it there while the association is open): the request is
# served by the AE's N-EVENT-REPORT handler and answered with an N-EVENT-REPORT-RSP.
#
# The SCP here is our acceptor with a stand-in dispatcher that answers the N-ACTION and then
# sends the report on the same association (the built-in SCP reports on a new association).
from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Any

from node import AE, evt
from node.acceptor.server import AcceptorServer
from node.acceptor.settings import ServerSettings
from node.ae_acceptor import acceptor_policy
from node.dicomio import encode_dataset
from node.dimse.commands import NActionRSP, NEventReportRQ
from node.scu.services import LoopThread
from tests.synthetic import CT_IMAGE_STORAGE, PATIENCE
from tests.workers.network import modality
from workers.handlers.commitment import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    CommitmentResult,
    Reference,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from node.dispatch import ServiceRequest

REPORT_MESSAGE_ID = 900
TRANSACTION = "1.2.826.0.1.3680043.8.498.77.999.7"


class SameAssociationReporter:
    """A Dispatcher that answers each N-ACTION, then sends the commitment result as an
    N-EVENT-REPORT-RQ on the requesting association and records the SCU's status."""

    def __init__(self) -> None:
        self.statuses: queue.Queue[int] = queue.Queue()

    async def start(self) -> None:
        return None

    def submit(self, request: ServiceRequest, sink: Any) -> None:
        response = NActionRSP(
            message_id_being_responded_to=request.message_id,
            status=0x0000,
            affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
            affected_sop_instance_uid=STORAGE_COMMITMENT_INSTANCE,
            action_type_id=1,
        )
        sink.send_response(request, response, None, True)
        result = CommitmentResult(TRANSACTION, committed=[Reference(CT_IMAGE_STORAGE, "1.2.3")])
        future = sink.loop.create_future()
        sink._suboperations[REPORT_MESSAGE_ID] = future  # matched like a C-GET sub-operation
        sink.send_message(
            request.context_id,
            NEventReportRQ(
                message_id=REPORT_MESSAGE_ID,
                affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
                affected_sop_instance_uid=STORAGE_COMMITMENT_INSTANCE,
                event_type_id=result.event_type,
            ),
            encode_dataset(result.event_information("SCP"), request.transfer_syntax),
        )
        future.add_done_callback(lambda done: self.statuses.put(done.result()))

    def open_stream(self, request: ServiceRequest, sink: Any) -> Any:
        raise NotImplementedError

    def cancel(self, assoc_id: int, message_id: int) -> None:
        return None

    async def close(self) -> None:
        return None


def test_our_scu_answers_an_n_event_report_on_its_own_association(make_ae):
    policy_source = AE(ae_title="SCP")
    policy_source.add_supported_context(STORAGE_COMMITMENT_PUSH)
    reporter = SameAssociationReporter()
    server = AcceptorServer(
        ServerSettings(policy=lambda: acceptor_policy(policy_source), dispatcher=reporter)
    )
    runner = LoopThread()
    try:
        runner.run(server.start("127.0.0.1", 0), 10)
        reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

        def on_event_report(event: Any) -> int:
            reports.put((event.request.event_type_id, event.event_information))
            return 0x0000

        scu = modality(make_ae)
        association = scu.associate(
            "127.0.0.1",
            server.port,
            ae_title="SCP",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_event_report)],
        )
        assert association.is_established
        request = CommitmentResult(TRANSACTION, committed=[Reference(CT_IMAGE_STORAGE, "1.2.3")])
        status, _ = association.send_n_action(
            request.event_information(),
            1,
            STORAGE_COMMITMENT_PUSH,
            STORAGE_COMMITMENT_INSTANCE,
        )
        assert status.Status == 0x0000
        event_type, info = reports.get(timeout=PATIENCE)
        assert event_type == 1
        assert info.TransactionUID == TRANSACTION
        assert info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3"
        assert reporter.statuses.get(timeout=PATIENCE) == 0x0000  # the SCU's N-EVENT-REPORT-RSP
        association.release()
        assert association.is_released
    finally:
        runner.run(server.close(grace=1.0), 10)
        runner.stop()
