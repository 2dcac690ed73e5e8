# The built-in Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE, N-SET and N-GET
# answered from the index database (workers.store.mpps).
#
# Rules: installed by workers.service when an index exists and the user bound neither an
# N-CREATE nor an N-SET handler (N-GET also needs no N-GET handler of theirs). Refusals carry
# the PS3.4 F.7.2 status, an Error Comment and, where the standard names one, the Error ID or
# the Offending Element. An N-CREATE without an Affected SOP Instance UID gets one (PS3.7
# 10.1.5.1.2) and the response names it.
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from pydicom.dataset import Dataset

from node.dicomio import encode_dataset
from node.dimse.commands import NCreateRSP, NGetRSP, NSetRSP
from node.dimse.messages import NGetRQ, Request
from node.dimse.status import Status
from workers.handlers.common import decoded_dataset, describe_exception, log
from workers.store.index import index_of
from workers.store.mpps import (
    MppsError,
    MppsStore,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.dispatch import Channel, ServiceRequest
    from workers.handlers.common import Handlers

MODALITY_PERFORMED_PROCEDURE_STEP: Final = "1.2.840.10008.3.1.2.3.3"
MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE: Final = "1.2.840.10008.3.1.2.3.5"
MPPS_SOP_CLASSES: Final = (
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE,
)
INVALID_SOP_INSTANCE: Final = 0x0117


def _store(handlers: Handlers) -> MppsStore:
    index = index_of(handlers)
    if index is None:  # pragma: no cover - workers.service installs us only with an index
        raise MppsError(Status.PROCESSING_FAILURE, "no index database for MPPS")
    return MppsStore(index)


def _refusal(error: Exception) -> dict[str, Any]:
    if isinstance(error, MppsError):
        return {
            "status": error.status,
            "error_comment": error.comment[:64],
            "error_id": error.error_id,
            "offending_element": (error.offending_element,) if error.offending_element else None,
        }
    log.error("MPPS request failed: %s", error)
    return {"status": Status.PROCESSING_FAILURE, "error_comment": describe_exception(error)}


def _checked_instance(uid: str) -> str:
    from workers.store.files import InvalidUIDError, checked_uid

    try:
        return checked_uid(uid, "SOP Instance UID")
    except InvalidUIDError as error:
        raise MppsError(INVALID_SOP_INSTANCE, str(error)) from None


def _requested_instance(request: ServiceRequest) -> str:
    command = request.command
    return (command.sop_instance_uid if isinstance(command, Request) else None) or ""


def handle_mpps_create(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """N-CREATE of a Modality Performed Procedure Step (PS3.4 F.7.2.1)."""
    command = request.command
    instance = (
        command.sop_instance_uid if isinstance(command, Request) else None
    ) or f"2.25.{uuid.uuid4().int}"
    _answer(
        request,
        channel,
        NCreateRSP,
        instance,
        lambda: _store(handlers).create(_checked_instance(instance), decoded_dataset(request)),
    )


def handle_mpps_set(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """N-SET of a Modality Performed Procedure Step (PS3.4 F.7.2.2)."""
    instance = _requested_instance(request)
    _answer(
        request,
        channel,
        NSetRSP,
        instance,
        lambda: _store(handlers).update(instance, decoded_dataset(request)),
    )


def _answer(
    request: ServiceRequest,
    channel: Channel,
    response: type[NCreateRSP | NSetRSP],
    instance: str,
    action: Callable[[], object],
) -> None:
    """Carry out `action` and answer with its status: success, or the refusal it raised."""
    fields: dict[str, Any] = {"status": 0x0000}
    try:
        action()
    except Exception as error:  # noqa: BLE001 - MppsError or any database/data set failure
        fields = _refusal(error)
    channel.respond(
        response(
            message_id_being_responded_to=request.message_id,
            affected_sop_class_uid=request.abstract_syntax,
            affected_sop_instance_uid=instance,
            **fields,
        ),
        None,
        True,
    )


def handle_mpps_get(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """N-GET of a Modality Performed Procedure Step (PS3.4 F.8 Retrieve, PS3.7 10.1.2): the
    stored attributes, only those listed in the Attribute Identifier List when there is one."""
    command = request.command
    instance = _requested_instance(request)
    wanted = (command.attribute_identifier_list if isinstance(command, NGetRQ) else None) or ()
    fields: dict[str, Any] = {"status": 0x0000}
    data: bytes | None = None
    try:
        attributes = _store(handlers).get(instance)
        if attributes is None:
            raise MppsError(Status.NO_SUCH_SOP_INSTANCE, f"no step {instance}")
        if wanted:
            chosen = Dataset()
            for tag in wanted:
                if tag in attributes:
                    chosen[tag] = attributes[tag]
            attributes = chosen
        data = encode_dataset(attributes, request.transfer_syntax)
    except Exception as error:  # noqa: BLE001 - MppsError or any database/data set failure
        fields = _refusal(error)
    channel.respond(
        NGetRSP(
            message_id_being_responded_to=request.message_id,
            affected_sop_class_uid=request.abstract_syntax,
            affected_sop_instance_uid=instance,
            has_dataset=data is not None,
            **fields,
        ),
        data,
        True,
    )
