# Single-response services: Verification (C-ECHO), Storage (C-STORE) and the DIMSE-N services.
#
# Rules: each service answers exactly one final response. Failures of the user's callback map to
# the service's failure statuses (PS3.4 Annex A/B, PS3.7 Annex C) with an Error Comment.
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from node import evt
from node.dicomio import encode_dataset
from node.dimse.commands import (
    CEchoRSP,
    CStoreRSP,
)
from node.dimse.messages import CommandField, response_to
from node.dimse.status import Status, StorageStatus
from workers.handlers.common import (
    Handlers,
    InvalidStatusError,
    StatusResult,
    call_handler,
    context_of,
    decoded_dataset,
    describe_exception,
    failure,
    info_of,
    log,
    parse_status,
)
from workers.store.index import index_of

if TYPE_CHECKING:
    from node.dispatch import Channel, ServiceRequest

SUCCESS = 0x0000
STORE_CANNOT_UNDERSTAND = 0xC211
STORE_NO_HANDLER = 0xC210


def _run_status_callback(
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
    result = _run_status_callback(
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


def _store_to_files(request: ServiceRequest, handlers: Handlers) -> StatusResult:
    """The built-in storage: a durable Part 10 file, data set bytes as received."""
    from workers.store.files import InvalidUIDError
    from workers.store.index import IndexDatabaseError

    command = request.command
    if request.dataset is None and request.dataset_path is None:
        return failure(STORE_CANNOT_UNDERSTAND, "C-STORE without a data set")
    sop_class = str(getattr(command, "affected_sop_class_uid", ""))
    sop_instance = str(getattr(command, "affected_sop_instance_uid", ""))
    stored = None
    try:
        index = index_of(handlers)
        if request.dataset_path is not None:  # streamed: the spool is a Part 10 file already
            from pathlib import Path

            from workers.store.schema import record_from_file

            spool = Path(request.dataset_path)
            # parsed before the store takes the spool (the object store uploads and deletes it)
            spooled = record_from_file(spool, spool.parent) if index is not None else None
            stored = handlers.file_store.adopt(
                spool, sop_instance, request.transfer_syntax, request.dataset_offset
            )
            if index is not None and spooled is not None:
                relative = stored.path.relative_to(index.root).as_posix()
                index.add(dataclasses.replace(spooled, path=relative))
        elif request.dataset is not None:
            record = None
            uids = None
            if index is not None:  # parse once: the index record carries study and series
                from workers.store.schema import record_from_bytes

                record = record_from_bytes(
                    request.dataset, request.transfer_syntax, sop_class, sop_instance, ""
                )
                uids = (record.value("StudyInstanceUID"), record.value("SeriesInstanceUID"))
                declared = record.value("SOPClassUID")
                if declared and declared != sop_class:
                    # PS3.4 B.2.3: Error, Data Set does not match SOP Class
                    return failure(
                        StorageStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                        f"data set SOP Class {declared} is not the request's {sop_class}",
                    )
            stored = handlers.file_store.store(
                sop_class,
                sop_instance,
                request.transfer_syntax,
                request.dataset,
                request.association.calling_ae_title,
                study_and_series_uids=uids,
            )
            if index is not None and record is not None:
                # the file is durable; success waits for the committed row
                relative = stored.path.relative_to(index.root).as_posix()
                index.add(dataclasses.replace(record, path=relative))
    except InvalidUIDError as error:
        return failure(STORE_CANNOT_UNDERSTAND, str(error))
    except IndexDatabaseError as error:
        log.error("indexing %s failed: %s", sop_instance, error)
        if stored is not None and not stored.replaced:  # failed: leave no unindexed new file
            stored.path.unlink(missing_ok=True)
        return failure(StorageStatus.OUT_OF_RESOURCES, f"cannot index: {error}")
    except OSError as error:
        log.error(
            "storing %s failed: %s", getattr(command, "affected_sop_instance_uid", "?"), error
        )
        return failure(StorageStatus.OUT_OF_RESOURCES, f"cannot write: {error.strerror or error}")
    except Exception as error:  # noqa: BLE001 - a data set pydicom cannot read
        return failure(STORE_CANNOT_UNDERSTAND, describe_exception(error))
    return StatusResult(SUCCESS)


def handle_c_store(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Storage SCP (PS3.4 Annex B) through the user's callback or the built-in file store."""
    command = request.command
    if (
        handlers.file_store is not None
        and handlers.on_c_store is None
        and evt.EVT_C_STORE not in handlers.events
    ):
        result = _store_to_files(request, handlers)
    else:
        result = _run_status_callback(
            request,
            channel,
            evt.EVT_C_STORE,
            handlers.on_c_store,
            lambda: (decoded_dataset(request), context_of(request), info_of(request)),
            handlers,
            default=failure(STORE_NO_HANDLER, "no C-STORE handler is configured"),
            on_error=STORE_CANNOT_UNDERSTAND,
        )
    channel.respond(
        CStoreRSP(
            message_id_being_responded_to=request.message_id,
            affected_sop_class_uid=getattr(command, "affected_sop_class_uid", ""),
            affected_sop_instance_uid=getattr(command, "affected_sop_instance_uid", ""),
            status=result.status,
            error_comment=result.error_comment,
            offending_element=result.offending_element,
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
            identifiers = getattr(request.command, "attribute_identifier_list", None) or ()
            return (list(identifiers), context_of(request), info_of(request))
        return (decoded_dataset(request), context_of(request), info_of(request))

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
