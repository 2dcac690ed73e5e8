# Query service (C-FIND SCP, PS3.4 Annex C.4.1) through the user's generator callback.
#
# Rules: each pending (0xFF00/0xFF01) yield becomes one C-FIND-RSP with its identifier, sent as it
# is produced (never the whole result set in memory); C-CANCEL is checked between items and ends
# the operation with 0xFE00; the final response carries no identifier.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from node import evt
from node.dicomio import encode_dataset
from node.dimse.commands import CFindRSP
from workers.handlers.common import (
    Handlers,
    StatusResult,
    call_service_handler,
    describe_exception,
    failure,
    is_pending,
    log,
    next_yield,
)

if TYPE_CHECKING:
    from node.dispatch import Channel, ServiceRequest

CANCEL = 0xFE00
FIND_UNABLE_TO_PROCESS = 0xC311
FIND_NO_HANDLER = 0xC310


def _find_response(request: ServiceRequest, result: StatusResult, has_dataset: bool) -> CFindRSP:
    return CFindRSP(
        message_id_being_responded_to=request.message_id,
        affected_sop_class_uid=request.abstract_syntax,
        status=result.status,
        error_comment=result.error_comment,
        offending_element=result.offending_element,
        has_dataset=has_dataset,
    )


def handle_c_find(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Run the C-FIND generator: `(status, identifier)` per match, then the final status."""
    final = _stream_matches(request, channel, handlers)
    channel.respond(_find_response(request, final, False), None, True)


def _stream_matches(request: ServiceRequest, channel: Channel, handlers: Handlers) -> StatusResult:
    try:
        results: Any = call_service_handler(
            request, channel, evt.EVT_C_FIND, handlers.on_c_find, handlers
        )
    except Exception as error:  # noqa: BLE001 - a user callback may raise anything
        log.exception("C-FIND handler raised")
        return failure(FIND_UNABLE_TO_PROCESS, describe_exception(error))
    if results is None:
        return failure(FIND_NO_HANDLER, "no C-FIND handler is configured")
    try:
        iterator = iter(results)
    except TypeError:
        return failure(FIND_UNABLE_TO_PROCESS, "C-FIND handler must yield (status, identifier)")
    while True:
        if channel.is_cancelled():
            return StatusResult(CANCEL)
        step = next_yield(iterator, FIND_UNABLE_TO_PROCESS, "C-FIND")
        if step is None:
            return StatusResult(0x0000)
        if isinstance(step, StatusResult):
            return step
        status, identifier = step.status, step.payload
        if not is_pending(status.status):
            return status
        if not isinstance(identifier, Dataset):
            return failure(FIND_UNABLE_TO_PROCESS, "pending C-FIND result without a Dataset")
        data = encode_dataset(identifier, request.transfer_syntax)
        channel.respond(_find_response(request, status, True), data, False)
