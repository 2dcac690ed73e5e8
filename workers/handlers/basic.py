# Single-response services: Verification (C-ECHO) and the DIMSE-N services (Storage, C-STORE,
# is workers.handlers.storage).
#
# Rules: each service answers exactly one final response. Failures of the user's callback map to
# the service's failure statuses (PS3.4 Annex A/B, PS3.7 Annex C) with an Error Comment.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from node import evt
from node.dicomio import encode_dataset
from node.dimse.commands import (
    CEchoRSP,
)
from node.dimse.messages import CommandField, NGetRQ, response_to
from node.dimse.status import Status
from workers.handlers.common import (
    Handlers,
    InvalidStatusError,
    StatusResult,
    call_handler,
    context_of,
    describe_exception,
    failure,
    info_of,
    log,
    parse_status,
    seed_arguments,
)

if TYPE_CHECKING:
    from node.dispatch import Channel, ServiceRequest

SUCCESS = 0x0000
STORE_CANNOT_UNDERSTAND = 0xC211
STORE_NO_HANDLER = 0xC210


def run_status_callback(
    request: ServiceRequest,
    channel: Channel,
    event_type: evt.EventType,
    callback: Any,
    legacy_args: Any,
    handlers: Handlers,
    *,
    default: StatusResult,
    on_error: int,
) -> StatusResult:
    try:
        result = call_handler(request, channel, event_type, callback, legacy_args, handlers)
    except Exception as error:  # noqa: BLE001 - a user callback may raise anything
        log.exception("%s handler raised for message %s", event_type, request.message_id)
        return failure(on_error, describe_exception(error))
    if result is None and callback is None and event_type not in handlers.events:
        return default
    try:
        return parse_status(result)
    except InvalidStatusError as error:
        log.error("%s handler returned an invalid status: %s", event_type, error)
        return failure(on_error, f"invalid status from handler: {error}")


def handle_c_echo(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Verification SCP (PS3.4 Annex A): success unless the callback says otherwise."""
    result = run_status_callback(
        request,
        channel,
        evt.EVT_C_ECHO,
        handlers.on_c_echo,
        lambda: (context_of(request), info_of(request)),
        handlers,
        default=StatusResult(SUCCESS),
        on_error=Status.PROCESSING_FAILURE,
    )
    channel.respond(
        CEchoRSP(
            message_id_being_responded_to=request.message_id,
            affected_sop_class_uid=request.abstract_syntax,
            status=result.status,
            error_comment=result.error_comment,
        ),
        None,
        True,
    )


# --- DIMSE-N (PS3.7 section 10) ---------------------------------------------------------------


def _n_response(request: ServiceRequest, result: StatusResult, has_dataset: bool) -> Any:
    return response_to(
        request.command, result.status, comment=result.error_comment, has_dataset=has_dataset
    )


_N_EVENTS: dict[int, tuple[evt.EventType, str]] = {
    CommandField.N_ACTION_RQ: (evt.EVT_N_ACTION, "on_n_action"),
    CommandField.N_CREATE_RQ: (evt.EVT_N_CREATE, "on_n_create"),
    CommandField.N_DELETE_RQ: (evt.EVT_N_DELETE, "on_n_delete"),
    CommandField.N_EVENT_REPORT_RQ: (evt.EVT_N_EVENT_REPORT, "on_n_event_report"),
    CommandField.N_GET_RQ: (evt.EVT_N_GET, "on_n_get"),
    CommandField.N_SET_RQ: (evt.EVT_N_SET, "on_n_set"),
}


def handle_n_service(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Any DIMSE-N request: the handler returns a status, or (status, dataset) (PS3.7 10.1)."""
    field = request.command.COMMAND_FIELD
    event_type, attribute = _N_EVENTS[field]
    callback = getattr(handlers, attribute)

    def legacy_args() -> tuple[Any, ...]:
        if field == CommandField.N_DELETE_RQ:
            return (context_of(request), info_of(request))
        if field == CommandField.N_GET_RQ:
            command = request.command
            identifiers = (
                command.attribute_identifier_list if isinstance(command, NGetRQ) else None
            ) or ()
            return (list(identifiers), context_of(request), info_of(request))
        return seed_arguments(request)

    dataset_bytes: bytes | None = None
    try:
        result = call_handler(request, channel, event_type, callback, legacy_args, handlers)
        if result is None:
            status = failure(
                Status.NO_SUCH_SOP_INSTANCE
                if field != CommandField.N_EVENT_REPORT_RQ
                else Status.PROCESSING_FAILURE,
                f"no {event_type} handler is configured",
            )
        elif isinstance(result, tuple):
            status_value, reply = result
            status = parse_status(status_value)
            if isinstance(reply, Dataset):
                dataset_bytes = encode_dataset(reply, request.transfer_syntax)
        else:
            status = parse_status(result)
    except InvalidStatusError as error:
        status = failure(Status.PROCESSING_FAILURE, f"invalid status from handler: {error}")
    except Exception as error:  # noqa: BLE001 - a user callback may raise anything
        log.exception("%s handler raised", event_type)
        status = failure(Status.PROCESSING_FAILURE, describe_exception(error))
    channel.respond(_n_response(request, status, dataset_bytes is not None), dataset_bytes, True)
