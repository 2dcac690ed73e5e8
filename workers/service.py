# Run one DIMSE request through the right service handler (PS3.4 service classes).
#
# Rules: the single entry point used by both the in-process dispatcher (node.local) and the
# worker processes. Whatever happens inside a handler, exactly one final response goes out.
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from node import evt
from node.dimse.messages import CommandField, failure_response, message_name
from node.dimse.status import Status
from workers.handlers.basic import handle_c_echo, handle_n_service
from workers.handlers.commitment import STORAGE_COMMITMENT_PUSH, handle_commitment_action
from workers.handlers.mpps import (
    MPPS_SOP_CLASSES,
    handle_mpps_create,
    handle_mpps_get,
    handle_mpps_set,
)
from workers.handlers.qr import with_builtin_query_retrieve
from workers.handlers.query import handle_c_find
from workers.handlers.retrieve import handle_c_get, handle_c_move
from workers.handlers.storage import handle_c_store
from workers.store.index import index_of

if TYPE_CHECKING:
    from node.dimse.commands import DimseMessage
    from node.dispatch import Channel, ServiceRequest, SubOperation
    from workers.handlers.common import Handlers

log = logging.getLogger("dicomnode.worker")

ServiceHandler = Callable[["ServiceRequest", "Channel", "Handlers"], None]

#: The service handler of each request, by Command Field (PS3.7 E.1).
SERVICES: dict[int, ServiceHandler] = {
    CommandField.C_ECHO_RQ: handle_c_echo,
    CommandField.C_STORE_RQ: handle_c_store,
    CommandField.C_FIND_RQ: handle_c_find,
    CommandField.C_GET_RQ: handle_c_get,
    CommandField.C_MOVE_RQ: handle_c_move,
    CommandField.N_ACTION_RQ: handle_n_service,
    CommandField.N_CREATE_RQ: handle_n_service,
    CommandField.N_DELETE_RQ: handle_n_service,
    CommandField.N_EVENT_REPORT_RQ: handle_n_service,
    CommandField.N_GET_RQ: handle_n_service,
    CommandField.N_SET_RQ: handle_n_service,
}

_EVENTS = {
    "on_n_action": evt.EVT_N_ACTION,
    "on_n_create": evt.EVT_N_CREATE,
    "on_n_set": evt.EVT_N_SET,
    "on_n_get": evt.EVT_N_GET,
}

PROCESSING_FAILURE = Status.PROCESSING_FAILURE
UNRECOGNIZED_OPERATION = Status.UNRECOGNIZED_OPERATION


class _GuardedChannel:
    """Remembers whether the final response went out, so a crash still gets one."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.finished = False

    def respond(self, response: DimseMessage, dataset: bytes | None, final: bool) -> None:
        if self.finished:
            raise RuntimeError("a final response was already sent for this request")
        self.channel.respond(response, dataset, final)
        self.finished = final  # only once it went out: a failed send still gets the fallback

    def store(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> int:
        return self.channel.store(sop_class_uid, sop_instance_uid, transfer_syntax, dataset)

    def store_nowait(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> SubOperation | int:
        """The channel's store_nowait, or its blocking store (a status) when it has none."""
        queue = getattr(self.channel, "store_nowait", None)
        if queue is None:
            return self.channel.store(sop_class_uid, sop_instance_uid, transfer_syntax, dataset)
        pending: SubOperation = queue(sop_class_uid, sop_instance_uid, transfer_syntax, dataset)
        return pending

    def is_cancelled(self) -> bool:
        return self.channel.is_cancelled()

    def event_report(
        self, sop_class_uid: str, sop_instance_uid: str, event_type: int, dataset: bytes | None
    ) -> int | None:
        sender = getattr(self.channel, "event_report", None)
        if sender is None:
            return None
        result: int | None = sender(sop_class_uid, sop_instance_uid, event_type, dataset)
        return result


def _bound(handlers: Handlers, *names: str) -> bool:
    """True when the user bound a callback or an event handler for any of these services."""
    return any(
        getattr(handlers, name) is not None or _EVENTS[name] in handlers.events for name in names
    )


def builtin_service(
    command_field: int, sop_class_uid: str, handlers: Handlers
) -> ServiceHandler | None:
    """The built-in Storage Commitment (PS3.4 J) or MPPS (PS3.4 F) SCP for this request, when
    an index exists and the user bound no handler of their own for it; else None."""
    chosen: ServiceHandler | None = None
    if sop_class_uid == STORAGE_COMMITMENT_PUSH and command_field == CommandField.N_ACTION_RQ:
        chosen = None if _bound(handlers, "on_n_action") else handle_commitment_action
    elif sop_class_uid in MPPS_SOP_CLASSES and not _bound(handlers, "on_n_create", "on_n_set"):
        if command_field == CommandField.N_CREATE_RQ:
            chosen = handle_mpps_create
        elif command_field == CommandField.N_SET_RQ:
            chosen = handle_mpps_set
        elif command_field == CommandField.N_GET_RQ and not _bound(handlers, "on_n_get"):
            chosen = handle_mpps_get
    return chosen if chosen is not None and index_of(handlers) is not None else None


def handle_request(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Serve `request`; always ends with one final response on `channel`."""
    field = request.command.COMMAND_FIELD
    name = message_name(field)
    service = builtin_service(field, request.abstract_syntax, handlers) or SERVICES.get(field)
    guarded = _GuardedChannel(channel)
    handlers = with_builtin_query_retrieve(field, request.abstract_syntax, handlers)
    if service is None:  # PS3.7 C.5.6: still one final response, never silence
        log.warning("no service for %s", name)
        guarded.respond(
            failure_response(request.command, UNRECOGNIZED_OPERATION, f"no service for {name}"),
            None,
            True,
        )
    else:
        _run(service, request, guarded, handlers)
    if request.dataset_path is not None:  # a spool nobody adopted
        Path(request.dataset_path).unlink(missing_ok=True)


def _run(
    service: ServiceHandler, request: ServiceRequest, guarded: _GuardedChannel, handlers: Handlers
) -> None:
    """Run one handler; a crash or a missing final response still ends with a 0110 answer."""
    name = message_name(request.command.COMMAND_FIELD)
    try:
        service(request, guarded, handlers)
    except Exception as error:
        log.exception("service %s failed for message %s", name, request.message_id)
        if not guarded.finished:
            guarded.respond(
                failure_response(
                    request.command, PROCESSING_FAILURE, f"{type(error).__name__}: {error}"
                ),
                None,
                True,
            )
    if not guarded.finished:
        guarded.respond(
            failure_response(request.command, PROCESSING_FAILURE, "handler sent no final response"),
            None,
            True,
        )
