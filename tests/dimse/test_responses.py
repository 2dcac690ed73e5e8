# node.dimse.messages.response_to / failure_response: the one builder of "the response of the
# right type" for a request (issue 13), used by the bridge, the worker and the N-services.
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from node.dimse.messages import (
    MESSAGE_CLASS,
    AffectedRequest,
    CCancelRQ,
    CFindRQ,
    CFindRSP,
    CStoreRQ,
    CStoreRSP,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NSetRQ,
    NSetRSP,
    Request,
    RequestedRequest,
    failure_response,
    response_to,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_a_c_store_failure_echoes_class_and_instance_with_an_ascii_64_character_comment():
    request = CStoreRQ(message_id=7, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3")
    response = failure_response(request, 0xA700, "disk full: " + "é" * 80)
    assert response == CStoreRSP(
        message_id_being_responded_to=7,
        status=0xA700,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid="1.2.3",
        error_comment=("disk full: " + "?" * 80)[:64],
        has_dataset=False,
    )


def test_a_c_find_response_carries_only_the_fields_its_class_has():
    request = CFindRQ(message_id=3, affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1")
    response = response_to(request, 0xFF00, has_dataset=True)
    assert response == CFindRSP(
        message_id_being_responded_to=3,
        status=0xFF00,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
        has_dataset=True,
    )
    assert response.error_comment is None


def test_n_services_echo_the_requested_class_instance_and_action_type():
    action = NActionRQ(
        message_id=5,
        requested_sop_class_uid="1.2.840.10008.1.20.1",
        requested_sop_instance_uid="1.2.840.10008.1.20.1.1",
        action_type_id=1,
    )
    assert response_to(action, 0) == NActionRSP(
        message_id_being_responded_to=5,
        status=0,
        affected_sop_class_uid="1.2.840.10008.1.20.1",
        affected_sop_instance_uid="1.2.840.10008.1.20.1.1",
        action_type_id=1,
    )
    update = NSetRQ(message_id=6, requested_sop_class_uid="1.2", requested_sop_instance_uid="1.3")
    assert response_to(update, 0x0110, comment="no") == NSetRSP(
        message_id_being_responded_to=6,
        status=0x0110,
        affected_sop_class_uid="1.2",
        affected_sop_instance_uid="1.3",
        error_comment="no",
    )


def test_an_instance_the_request_leaves_to_the_scp_stays_absent():
    create = NCreateRQ(message_id=8, affected_sop_class_uid="1.2.840.10008.3.1.2.3.3")
    response = response_to(create, 0)
    assert response == NCreateRSP(
        message_id_being_responded_to=8,
        status=0,
        affected_sop_class_uid=create.affected_sop_class_uid,
    )
    assert response.affected_sop_instance_uid is None


def test_c_cancel_has_no_response():
    with pytest.raises(KeyError):
        response_to(CCancelRQ(message_id_being_responded_to=1), 0)


def _sample_request(cls: type[Any]) -> Any:
    """An instance of request class `cls` with every required field set to a distinct value."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            continue
        values[item.name] = f"1.2.{len(values) + 3}" if item.type == "str" else len(values) + 7
    return cls(**values)


@pytest.mark.parametrize(
    "cls",
    [cls for cls in MESSAGE_CLASS.values() if cls.is_request and cls is not CCancelRQ],
    ids=lambda cls: cls.__name__,
)
def test_every_request_declares_message_id_and_names_its_sop_class(cls: type[Any]) -> None:
    request = _sample_request(cls)
    assert isinstance(request, Request)
    assert request.message_id == 7  # the first field: Message ID, declared by the base class
    affected = getattr(request, "affected_sop_class_uid", None)
    requested = getattr(request, "requested_sop_class_uid", None)
    assert request.sop_class_uid == (affected or requested)
    assert request.sop_class_uid
    instance = getattr(request, "affected_sop_instance_uid", None) or getattr(
        request, "requested_sop_instance_uid", None
    )
    assert request.sop_instance_uid == instance
    assert isinstance(request, AffectedRequest) != isinstance(request, RequestedRequest)


def test_c_cancel_is_a_request_without_a_message_id_of_its_own() -> None:
    cancel = CCancelRQ(message_id_being_responded_to=5)
    assert cancel.is_request
    assert Request not in type(cancel).__mro__
    assert not hasattr(cancel, "message_id")
