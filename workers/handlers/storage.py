# The Storage SCP (PS3.4 Annex B): the user's C-STORE callback, or the built-in store (a durable
# Part 10 file or object, then its index row).
#
# Rules: success only once the object is durable and its index row committed (PS3.4 B.2.3);
# every failure answers a C-STORE status with an Error Comment, never an exception.
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import evt
from node.dimse.commands import CStoreRSP
from node.dimse.messages import Request
from node.dimse.status import StorageStatus
from workers.handlers.basic import (
    STORE_CANNOT_UNDERSTAND,
    STORE_NO_HANDLER,
    SUCCESS,
    run_status_callback,
)
from workers.handlers.common import (
    Handlers,
    StatusResult,
    describe_exception,
    failure,
    log,
    seed_arguments,
)
from workers.store.files import InvalidUIDError
from workers.store.index import IndexDatabaseError, index_of
from workers.store.schema import record_from_bytes, record_from_spool

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.dispatch import Channel, ServiceRequest
    from workers.store.index import Index
    from workers.store.schema import InstanceRecord


def handle_c_store(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Storage SCP (PS3.4 Annex B) through the user's callback or the built-in file store."""
    if (
        handlers.file_store is not None
        and handlers.on_c_store is None
        and evt.EVT_C_STORE not in handlers.events
    ):
        result = store_builtin(request, handlers)
    else:
        result = run_status_callback(
            request,
            channel,
            evt.EVT_C_STORE,
            handlers.on_c_store,
            lambda: seed_arguments(request),
            handlers,
            default=failure(STORE_NO_HANDLER, "no C-STORE handler is configured"),
            on_error=STORE_CANNOT_UNDERSTAND,
        )
    channel.respond(
        CStoreRSP(
            message_id_being_responded_to=request.message_id,
            affected_sop_class_uid=_sop_class(request),
            affected_sop_instance_uid=_sop_instance(request),
            status=result.status,
            error_comment=result.error_comment,
            offending_element=result.offending_element,
        ),
        None,
        True,
    )


def _sop_class(request: ServiceRequest) -> str:
    command = request.command
    return command.sop_class_uid if isinstance(command, Request) else ""


def _sop_instance(request: ServiceRequest) -> str:
    command = request.command
    return (command.sop_instance_uid if isinstance(command, Request) else None) or ""


def store_builtin(request: ServiceRequest, handlers: Handlers) -> StatusResult:
    """The built-in storage: a durable Part 10 object, data set bytes as received, indexed."""
    if request.dataset is None and request.dataset_path is None:
        return failure(STORE_CANNOT_UNDERSTAND, "C-STORE without a data set")
    sop_instance = _sop_instance(request)
    written: list[Any] = []  # the stored object, once there: removed if indexing fails
    try:
        index = index_of(handlers)
        if request.dataset_path is not None:  # streamed: the spool is a Part 10 file already
            return _store_spooled(request, handlers, index, written)
        return _store_received(request, handlers, index, written)
    except InvalidUIDError as error:
        return failure(STORE_CANNOT_UNDERSTAND, str(error))
    except IndexDatabaseError as error:
        log.error("indexing %s failed: %s", sop_instance, error)
        if written and not written[0].replaced:  # failed: leave no unindexed new file
            written[0].path.unlink(missing_ok=True)
        return failure(StorageStatus.OUT_OF_RESOURCES, f"cannot index: {error}")
    except OSError as error:
        log.error("storing %s failed: %s", sop_instance or "?", error)
        return failure(StorageStatus.OUT_OF_RESOURCES, f"cannot write: {error.strerror or error}")
    except Exception as error:  # noqa: BLE001 - a data set pydicom cannot read
        return failure(STORE_CANNOT_UNDERSTAND, describe_exception(error))


def _store_spooled(
    request: ServiceRequest, handlers: Handlers, index: Index | None, written: list[Any]
) -> StatusResult:
    """A data set in a spool file (streamed, or handed off by the acceptor): its record read
    from the spool before the store takes it (a bucket deletes it), adopted, indexed."""
    assert request.dataset_path is not None  # noqa: S101 - the caller checked
    spool = Path(request.dataset_path)
    syntax = request.transfer_syntax
    return _store_and_index(
        request,
        index,
        written,
        lambda sop_class, sop_instance: record_from_spool(
            spool, request.dataset_offset, syntax, sop_class, sop_instance
        ),
        lambda uids: handlers.file_store.adopt(
            spool,
            _sop_instance(request),
            syntax,
            request.dataset_offset,
            study_and_series_uids=uids,
        ),
    )


def _store_received(
    request: ServiceRequest, handlers: Handlers, index: Index | None, written: list[Any]
) -> StatusResult:
    """A data set received whole: parsed once for its index record, written, indexed."""
    dataset = request.dataset
    assert dataset is not None  # noqa: S101 - the caller checked
    syntax = request.transfer_syntax
    return _store_and_index(
        request,
        index,
        written,
        lambda sop_class, sop_instance: record_from_bytes(
            dataset, syntax, sop_class, sop_instance, ""
        ),
        lambda uids: handlers.file_store.store(
            _sop_class(request),
            _sop_instance(request),
            syntax,
            dataset,
            request.association.calling_ae_title,
            study_and_series_uids=uids,
        ),
    )


def _store_and_index(
    request: ServiceRequest,
    index: Index | None,
    written: list[Any],
    parse: Callable[[str, str], InstanceRecord],
    put: Callable[[tuple[str, str] | None], Any],
) -> StatusResult:
    """With an index, the record first (it carries study and series, and the data set's own
    SOP class is checked against the request's); then `put` makes the object durable, and
    success waits for its committed row."""
    record = None
    uids = None
    if index is not None:
        sop_class = _sop_class(request)
        record = parse(sop_class, _sop_instance(request))
        uids = (record.value("StudyInstanceUID"), record.value("SeriesInstanceUID"))
        mismatch = _sop_class_mismatch(record, sop_class)
        if mismatch is not None:
            return mismatch
    stored = put(uids)
    written.append(stored)
    if index is not None and record is not None:
        relative = stored.path.relative_to(index.root).as_posix()
        index.add(dataclasses.replace(record, path=relative))
    return StatusResult(SUCCESS)


def _sop_class_mismatch(record: InstanceRecord, sop_class: str) -> StatusResult | None:
    """PS3.4 B.2.3: Error, Data Set does not match SOP Class, when the data set declares
    another SOP Class UID than the request's."""
    declared = record.value("SOPClassUID")
    if declared and declared != sop_class:
        return failure(
            StorageStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"data set SOP Class {declared} is not the request's {sop_class}",
        )
    return None
