# A request that no service serves still gets exactly one final response: 0211H
# (Unrecognized operation, PS3.7 C.5.6), never silence that leaves the peer waiting.
from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.uid import ExplicitVRLittleEndian

from node.dimse.messages import CommandField, NGetRQ
from node.dimse.status import Status
from node.dispatch import ServiceRequest
from tests.workers.test_qr import ASSOCIATION, FakeChannel
from workers import service
from workers.handlers.common import Handlers

if TYPE_CHECKING:
    import pytest

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def test_a_request_without_a_service_is_answered_0211(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(service.SERVICES, CommandField.N_GET_RQ)
    command = NGetRQ(
        message_id=7, requested_sop_class_uid=SOP_CLASS, requested_sop_instance_uid="1.2.3"
    )
    channel = FakeChannel()
    request = ServiceRequest(ASSOCIATION, 1, SOP_CLASS, ExplicitVRLittleEndian, command, None)
    service.handle_request(request, channel, Handlers())
    assert len(channel.responses) == 1
    response, dataset, final = channel.responses[0]
    assert final
    assert dataset is None
    assert response.status == Status.UNRECOGNIZED_OPERATION
    assert response.message_id_being_responded_to == 7
    assert response.affected_sop_class_uid == SOP_CLASS
