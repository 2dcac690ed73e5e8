# A request the peer sends on our association when nothing here serves it (no dispatcher
# injected: the workers' own C-MOVE and commitment associations) is answered with its own
# response type, not a C-STORE-RSP for everything.
from __future__ import annotations

from typing import Any

from node.dimse.messages import CStoreRQ, CStoreRSP, NEventReportRQ, NEventReportRSP
from node.scu.association import ClientConnection


def _answers(command: Any) -> list[tuple[int, Any]]:
    sent: list[tuple[int, Any]] = []
    connection = ClientConnection.__new__(ClientConnection)  # only _refuse's own state
    connection.send_message = lambda context_id, message, dataset=None: sent.append(  # type: ignore[method-assign,assignment]
        (context_id, message)
    )
    connection._refuse(3, command)
    return sent


def test_an_unserved_n_event_report_gets_an_n_event_report_rsp() -> None:
    report = NEventReportRQ(
        message_id=9,
        affected_sop_class_uid="1.2.840.10008.1.20.1",
        affected_sop_instance_uid="1.2.840.10008.1.20.1.1",
        event_type_id=1,
    )
    ((context_id, response),) = _answers(report)
    assert context_id == 3
    assert isinstance(response, NEventReportRSP)
    assert (response.message_id_being_responded_to, response.status) == (9, 0x0110)
    assert response.event_type_id == 1


def test_an_unserved_c_store_is_refused_out_of_resources() -> None:
    store = CStoreRQ(
        message_id=4,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        affected_sop_instance_uid="1.2.3",
    )
    ((_, response),) = _answers(store)
    assert isinstance(response, CStoreRSP)
    assert (response.status, response.affected_sop_instance_uid) == (0xA700, "1.2.3")
