# Retrieve services: C-GET SCP and C-MOVE SCP (PS3.4 Annex C.4.2, C.4.3).
#
# Rules: the user's generator yields the number of sub-operations, then (status, dataset) per
# instance (C-MOVE first yields the destination address); a dataset is a pydicom Dataset or a
# node.dicomio.Part10 (data set bytes as stored: sent without re-encoding when the requester
# accepted its transfer syntax). Each data set is stored as it comes:
# C-GET on the requesting association (through the channel), C-MOVE on a new association that
# this worker opens to the destination. A pending C-xxx-RSP with the four counts follows each
# sub-operation; the final status is success, 0xB000 when some failed or had warnings (with the
# Failed SOP Instance UID List), 0xFE00 on cancel, 0xA702/0xA801/0xC5xx for the failure cases.
from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node import evt
from node.dicomio import Part10, decode_dataset, encode_dataset, stored_transfer_syntax
from node.dimse.commands import CGetRQ, CGetRSP, CMoveRSP
from node.dimse.messages import CMoveRQ
from node.dimse.status import QueryRetrieveStatus, Status, StatusCategory, classify
from workers.handlers.common import (
    Handlers,
    StatusResult,
    call_handler,
    call_service_handler,
    context_of,
    decoded_dataset,
    describe_exception,
    failure,
    info_of,
    log,
    next_yield,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from node.dispatch import Channel, ServiceRequest, SubOperation

SUBOPERATIONS_WARNING = 0xB000
MOVE_DESTINATION_UNKNOWN = 0xA801
GET_UNABLE_TO_PROCESS = 0xC411
MOVE_UNABLE_TO_PROCESS = 0xC511
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


@dataclass
class Counts:
    """Sub-operation bookkeeping (PS3.4 C.4.2.1.4)."""

    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def record(self, status: int, sop_instance_uid: str) -> None:
        self.remaining = max(self.remaining - 1, 0)
        category = classify(status)
        if category is StatusCategory.SUCCESS:
            self.completed += 1
        elif category is StatusCategory.WARNING:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)

    def failed_identifier(self, transfer_syntax: str) -> bytes | None:
        if not self.failed_uids:
            return None
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = self.failed_uids
        return encode_dataset(identifier, transfer_syntax)


def choose_transfer_syntax(dataset: Dataset, offered: list[str]) -> str | None:
    """Pick the transfer syntax to send `dataset` in, among those accepted for its class."""
    original = stored_transfer_syntax(dataset)
    if original is not None and original in offered:
        return original
    if original is None or original in UNCOMPRESSED:
        for candidate in offered:
            if candidate in UNCOMPRESSED:
                return candidate
    return None


def _response(request: ServiceRequest, result: StatusResult, counts: Counts, *, final: bool) -> Any:
    response_class = CGetRSP if isinstance(request.command, CGetRQ) else CMoveRSP
    show_remaining = not final or result.status == Status.CANCEL
    return response_class(
        message_id_being_responded_to=request.message_id,
        affected_sop_class_uid=request.abstract_syntax,
        status=result.status,
        error_comment=result.error_comment,
        number_of_remaining_suboperations=counts.remaining if show_remaining else None,
        number_of_completed_suboperations=counts.completed,
        number_of_failed_suboperations=counts.failed,
        number_of_warning_suboperations=counts.warning,
    )


def _final_status(counts: Counts) -> StatusResult:
    if counts.failed and not counts.completed and not counts.warning:
        return StatusResult(QueryRetrieveStatus.OUT_OF_RESOURCES_SUBOPERATIONS)
    if counts.failed or counts.warning:
        return StatusResult(SUBOPERATIONS_WARNING)
    return StatusResult(0x0000)


#: C-GET sub-operations of the built-in Q/R SCP handed to the association before the oldest is
#: answered: the next data set travels to the acceptor while the peer stores the current one.
#: Bounded in bytes too, so a retrieve of huge objects holds at most one beyond the limit. A
#: user's generator gets one at a time (each pending response before its next item is asked
#: for, as pynetdicom does: a generator may wait on what the SCU does next, e.g. a cancel).
SUBOPERATION_WINDOW = 4
SUBOPERATION_WINDOW_BYTES = 32 << 20


@dataclass(frozen=True)
class Unavailable:
    """What a retrieve generator may yield instead of a data set it cannot provide (e.g. an
    unreadable stored file): a failed sub-operation, listed by its SOP Instance UID."""

    sop_instance_uid: str


#: What a store function gives back: the status, or a sub-operation still running.
Outcome: TypeAlias = "int | SubOperation"


class _InFlight:
    """Sub-operations handed over and not yet counted, oldest first."""

    def __init__(
        self, request: ServiceRequest, channel: Channel, counts: Counts, window: int
    ) -> None:
        self.request = request
        self.channel = channel
        self.counts = counts
        self.window = window
        self.items: deque[tuple[Outcome, str, int]] = deque()
        self.size = 0

    def add(self, outcome: Outcome, sop_instance: str, size: int) -> None:
        self.items.append((outcome, sop_instance, size))
        self.size += size
        # count what is already answered; wait while the window is full
        while self.items and (
            len(self.items) >= self.window
            or self.size > SUBOPERATION_WINDOW_BYTES
            or _done(self.items[0][0])
        ):
            self.settle_oldest()

    def settle_oldest(self) -> None:
        outcome, sop_instance, size = self.items.popleft()
        self.size -= size
        status = outcome if isinstance(outcome, int) else outcome.result()
        self.counts.record(status, sop_instance)
        response = _response(self.request, StatusResult(0xFF00), self.counts, final=False)
        self.channel.respond(response, None, False)

    def settle_all(self) -> None:
        while self.items:
            self.settle_oldest()


def _done(outcome: Outcome) -> bool:
    return isinstance(outcome, int) or outcome.done()


def _run_suboperations(
    request: ServiceRequest,
    channel: Channel,
    iterator: Iterator[Any],
    store: Callable[[Dataset | Part10], tuple[Outcome, str, int]],
    on_error: int,
    *,
    window: int = 1,
) -> None:
    """Drive the generator after its preamble: store each data set (a few may be in flight at
    once, answered in order), report progress after each."""
    counts = Counts()
    try:
        counts.remaining = int(next(iterator))
    except StopIteration:
        counts.remaining = 0
    except Exception as error:  # noqa: BLE001 - a user generator may raise anything
        log.exception("retrieve handler raised")
        _finish(request, channel, failure(on_error, describe_exception(error)), counts)
        return
    in_flight = _InFlight(request, channel, counts, window)
    try:
        result = _hand_over(channel, iterator, store, in_flight, on_error)
    except BaseException:
        # those already handed over are answered before the failure response goes out
        with contextlib.suppress(Exception):
            in_flight.settle_all()
        raise
    in_flight.settle_all()  # those already handed over finish and are counted
    _finish(request, channel, result or _final_status(counts), counts)


def _hand_over(
    channel: Channel,
    iterator: Iterator[Any],
    store: Callable[[Dataset | Part10], tuple[Outcome, str, int]],
    in_flight: _InFlight,
    on_error: int,
) -> StatusResult | None:
    """Take the generator's items and hand each data set to `store` until the generator
    ends (None), fails, gives a final status or the request is cancelled (that status)."""
    while True:
        if channel.is_cancelled():
            return StatusResult(Status.CANCEL)
        step = next_yield(iterator, on_error, "retrieve")
        if step is None or isinstance(step, StatusResult):
            return step
        status, dataset = step.status, step.payload
        if classify(status.status) is not StatusCategory.PENDING:
            return status
        if isinstance(dataset, Unavailable):
            in_flight.add(0xC000, dataset.sop_instance_uid, 0)
            continue
        if not isinstance(dataset, Dataset | Part10):
            in_flight.add(0xC000, "", 0)
            continue
        try:
            outcome = store(dataset)
        except Exception as error:  # noqa: BLE001 - e.g. a stored file that cannot be re-encoded
            uid = (
                dataset.sop_instance_uid
                if isinstance(dataset, Part10)
                else str(dataset.get("SOPInstanceUID", ""))
            )
            log.warning("retrieve: cannot send %s: %s", uid, describe_exception(error))
            outcome = (0xC000, uid, 0)  # this sub-operation fails, the others go on
        in_flight.add(*outcome)


def _finish(
    request: ServiceRequest, channel: Channel, result: StatusResult, counts: Counts
) -> None:
    identifier = counts.failed_identifier(request.transfer_syntax)
    response = _response(request, result, counts, final=True)
    if identifier is not None:
        response = dataclasses.replace(response, has_dataset=True)
    channel.respond(response, identifier, True)


def _get_store(
    request: ServiceRequest, channel: Channel
) -> Callable[[Dataset | Part10], tuple[Outcome, str, int]]:
    by_class: dict[str, list[str]] = {}
    for context in request.association.storage_contexts:
        by_class.setdefault(context.abstract_syntax, []).append(context.transfer_syntax)
    queue = getattr(channel, "store_nowait", None)

    def send(sop_class: str, sop_instance: str, syntax: str, data: bytes) -> Outcome:
        if queue is not None:
            outcome: Outcome = queue(sop_class, sop_instance, syntax, data)
            return outcome
        return channel.store(sop_class, sop_instance, syntax, data)

    def store(dataset: Dataset | Part10) -> tuple[Outcome, str, int]:
        if isinstance(dataset, Part10):
            sop_class, sop_instance = dataset.sop_class_uid, dataset.sop_instance_uid
            offered = by_class.get(sop_class, [])
            if dataset.transfer_syntax in offered:  # as stored: no decoding
                data = dataset.data
                outcome = send(sop_class, sop_instance, dataset.transfer_syntax, data)
                return outcome, sop_instance, len(data)
            if dataset.transfer_syntax not in UNCOMPRESSED:
                log.warning("C-GET: no accepted context to send %s (%s)", sop_instance, sop_class)
                return 0xA702, sop_instance, 0
            decoded = decode_dataset(dataset.data, dataset.transfer_syntax)
            decoded.file_meta = _meta(dataset.transfer_syntax)
            dataset = decoded
        sop_class = str(dataset.get("SOPClassUID", ""))
        sop_instance = str(dataset.get("SOPInstanceUID", ""))
        syntax = choose_transfer_syntax(dataset, by_class.get(sop_class, []))
        if syntax is None:
            log.warning("C-GET: no accepted context to send %s (%s)", sop_instance, sop_class)
            return 0xA702, sop_instance, 0
        data = encode_dataset(dataset, syntax)
        return send(sop_class, sop_instance, syntax, data), sop_instance, len(data)

    return store


def _meta(transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    return meta


def handle_c_get(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """C-GET SCP: sub-operations go back on the requesting association (PS3.4 C.4.3)."""
    try:
        results: Any = call_service_handler(
            request, channel, evt.EVT_C_GET, handlers.on_c_get, handlers
        )
    except Exception as error:  # noqa: BLE001 - a user callback may raise anything
        log.exception("C-GET handler raised")
        _finish(
            request, channel, failure(GET_UNABLE_TO_PROCESS, describe_exception(error)), Counts()
        )
        return
    if results is None:
        _finish(request, channel, failure(GET_UNABLE_TO_PROCESS, "no C-GET handler"), Counts())
        return
    from workers.handlers.qr import QueryRetrieveSCP

    built_in = isinstance(getattr(handlers.on_c_get, "__self__", None), QueryRetrieveSCP)
    _run_suboperations(
        request,
        channel,
        iter(results),
        _get_store(request, channel),
        GET_UNABLE_TO_PROCESS,
        window=SUBOPERATION_WINDOW if built_in else 1,
    )


def handle_c_move(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """C-MOVE SCP: sub-operations go to the move destination on a new association."""
    command = request.command
    destination = command.move_destination if isinstance(command, CMoveRQ) else ""
    try:
        results: Any = call_handler(
            request,
            channel,
            evt.EVT_C_MOVE,
            handlers.on_c_move,
            lambda: (
                decoded_dataset(request),
                destination.encode(),
                context_of(request),
                info_of(request),
            ),
            handlers,
        )
        iterator = iter(results) if results is not None else None
        address = next(iterator) if iterator is not None else None
    except Exception as error:  # noqa: BLE001 - a user callback may raise anything
        log.exception("C-MOVE handler raised")
        _finish(
            request, channel, failure(MOVE_UNABLE_TO_PROCESS, describe_exception(error)), Counts()
        )
        return
    if iterator is None:
        _finish(request, channel, failure(MOVE_UNABLE_TO_PROCESS, "no C-MOVE handler"), Counts())
        return
    host, port = (
        (address[0], address[1])
        if isinstance(address, tuple) and len(address) >= 2
        else (None, None)
    )
    if host is None or port is None:
        known = handlers.known_aes.get(destination)
        if known is None:
            _finish(
                request,
                channel,
                failure(MOVE_DESTINATION_UNKNOWN, f"unknown move destination {destination!r}"),
                Counts(),
            )
            return
        host, port = known
    from workers.move import MoveDestination

    with MoveDestination(str(host), int(port), destination, handlers, request) as target:

        def store(dataset: Dataset | Part10) -> tuple[Outcome, str, int]:
            status, sop_instance = target.store(dataset)  # on our own association: blocking
            return status, sop_instance, 0

        _run_suboperations(request, channel, iterator, store, MOVE_UNABLE_TO_PROCESS)
