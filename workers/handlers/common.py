# What every service handler shares: the user's callbacks, what they are given (context, info,
# event), and turning what they return into a DIMSE status.
#
# Rules: runs in a worker process or an in-process worker thread, never on the acceptor's event
# loop. A callback that raises or returns garbage becomes a failure status plus a log line; the
# association and the process go on (PS3.7 Annex C statuses).
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from node.dicomio import decode_dataset
from node.dimse.messages import CFindRQ, CGetRQ, CMoveRQ, CStoreRQ
from node.dimse.status import StatusCategory, classify

if TYPE_CHECKING:
    from collections.abc import Iterator

    from node.dispatch import Channel, ServiceRequest
    from node.evt import EventType

log = logging.getLogger("dicomnode.worker")

Callback = Callable[..., Any]

#: The seed-style service callbacks a Handlers carries (and an AE exposes as attributes).
SERVICE_CALLBACKS: tuple[str, ...] = (
    "on_c_echo",
    "on_c_store",
    "on_c_find",
    "on_c_get",
    "on_c_move",
    "on_n_action",
    "on_n_create",
    "on_n_delete",
    "on_n_event_report",
    "on_n_get",
    "on_n_set",
)


@dataclass
class Handlers:
    """The service callbacks a worker runs: seed-style `on_*` and event-style handlers."""

    on_c_echo: Callback | None = None
    on_c_store: Callback | None = None
    on_c_find: Callback | None = None
    on_c_get: Callback | None = None
    on_c_move: Callback | None = None
    on_n_action: Callback | None = None
    on_n_create: Callback | None = None
    on_n_delete: Callback | None = None
    on_n_event_report: Callback | None = None
    on_n_get: Callback | None = None
    on_n_set: Callback | None = None
    #: `on_study_stable(study_instance_uid, info)`: a study got no new instance for the quiet
    #: period (workers.store.stable); run by the study-stable monitor, not by a request.
    on_study_stable: Callback | None = None
    events: dict[EventType, Callback] = field(default_factory=dict)
    #: AE title -> (host, port), for C-MOVE destinations.
    known_aes: dict[str, tuple[str, int]] = field(default_factory=dict)
    local_ae_title: str = "DICOMNODE"
    maximum_pdu_size: int = 16382
    #: The built-in storage (a workers.store.files.FileStore) used when no C-STORE callback.
    file_store: Any = None
    #: The index (a workers.store.index.Index) of the built-in storage: stored objects are
    #: indexed, and C-FIND/C-GET/C-MOVE without a callback are answered from it.
    index: Any = None


@dataclass(frozen=True, slots=True)
class PresentationContextInfo:
    """The accepted presentation context a request arrived on (as pynetdicom's callbacks get)."""

    context_id: int
    abstract_syntax: UID
    transfer_syntax: UID


@dataclass(frozen=True, slots=True)
class PeerInfo:
    ae_title: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class AssociationView:
    """What an event handler sees of the association (`event.assoc`)."""

    requestor: PeerInfo
    acceptor: PeerInfo
    assoc_id: int


class Event:
    """The argument of an event-style handler (`handler(event)`), like pynetdicom's Event."""

    def __init__(self, event_type: EventType, request: ServiceRequest, channel: Channel) -> None:
        self.event = event_type
        self.request = request.command
        self.message_id = request.message_id
        self.timestamp = time.time()
        self.context = context_of(request)
        info = request.association
        self.assoc = AssociationView(
            PeerInfo(info.calling_ae_title, info.peer_address, info.peer_port),
            PeerInfo(info.called_ae_title, "", 0),
            info.assoc_id,
        )
        self._service_request = request
        self._channel = channel
        self._dataset: Dataset | None = None

    @property
    def dataset(self) -> Dataset:
        """The request's data set, decoded on first use."""
        if self._dataset is None:
            self._dataset = decoded_dataset(self._service_request)
        return self._dataset

    identifier = dataset
    attribute_list = dataset
    action_information = dataset
    event_information = dataset

    @property
    def is_cancelled(self) -> bool:
        return self._channel.is_cancelled()

    @property
    def move_destination(self) -> str | None:
        command = self.request
        return command.move_destination if isinstance(command, CMoveRQ) else None


def context_of(request: ServiceRequest) -> PresentationContextInfo:
    return PresentationContextInfo(
        request.context_id, UID(request.abstract_syntax), UID(request.transfer_syntax)
    )


def info_of(request: ServiceRequest) -> dict[str, Any]:
    """The `info` dict of pynetdicom 1.x callbacks: requestor, acceptor, parameters."""
    association = request.association
    command = request.command
    store = command if isinstance(command, CStoreRQ) else None
    return {
        "requestor": {
            "ae_title": association.calling_ae_title.encode(),
            "called_aet": association.called_ae_title.encode(),
            "address": association.peer_address,
            "port": association.peer_port,
        },
        "acceptor": {
            "ae_title": association.called_ae_title.encode(),
            "acceptor_id": association.acceptor_id,
        },
        "parameters": {
            "message_id": request.message_id,
            "priority": command.priority
            if isinstance(command, CStoreRQ | CFindRQ | CGetRQ | CMoveRQ)
            else 0,
            "originator_aet": store.move_originator_ae_title if store is not None else None,
            "originator_message_id": store.move_originator_message_id
            if store is not None
            else None,
        },
        #: Our SOP Class Extended Negotiation replies: SOP class UID -> application info.
        "sop_class_extended": dict(association.sop_class_extended),
    }


def decoded_dataset(request: ServiceRequest) -> Dataset:
    """The request's data set as a pydicom Dataset (empty when there is none)."""
    if request.dataset_path is not None:
        from pydicom import dcmread

        return dcmread(request.dataset_path)
    if request.dataset is None:
        return Dataset()
    return decode_dataset(request.dataset, request.transfer_syntax)


@dataclass(frozen=True, slots=True)
class StatusResult:
    """A status code plus the optional fields a response may carry (PS3.7 Annex C)."""

    status: int
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


class InvalidStatusError(ValueError):
    """A callback returned something that is not a status."""


def parse_status(result: object) -> StatusResult:
    """Accept an int or a Dataset with (0000,0900) Status, as pynetdicom does."""
    if isinstance(result, bool):
        raise InvalidStatusError(f"a bool ({result}) is not a status")
    if isinstance(result, int):
        if not 0 <= result <= 0xFFFF:
            raise InvalidStatusError(f"status {result} outside 0x0000-0xFFFF")
        return StatusResult(result)
    if isinstance(result, Dataset) and "Status" in result:
        status = int(result.Status)
        if not 0 <= status <= 0xFFFF:
            raise InvalidStatusError(f"status {status} outside 0x0000-0xFFFF")
        comment = result.get("ErrorComment")
        offending = result.get("OffendingElement")
        if offending is not None and not isinstance(offending, list | tuple):
            offending = [offending]
        return StatusResult(
            status,
            str(comment)[:64] if comment is not None else None,
            tuple(int(tag) for tag in offending) if offending is not None else None,
            int(result.ErrorID) if "ErrorID" in result else None,
        )
    raise InvalidStatusError(f"{type(result).__name__} is not a status (int or Dataset)")


def failure(status: int, comment: str) -> StatusResult:
    return StatusResult(status, comment[:64])


def call_handler(
    request: ServiceRequest,
    channel: Channel,
    event_type: EventType,
    callback: Callback | None,
    legacy_args: Callable[[], tuple[Any, ...]],
    handlers: Handlers,
) -> Any:
    """Call the bound event handler if any, else the seed-style callback; None when neither."""
    handler = handlers.events.get(event_type)
    if handler is not None:
        return handler(Event(event_type, request, channel))
    if callback is not None:
        return callback(*legacy_args())
    return None


def seed_arguments(request: ServiceRequest) -> tuple[Any, ...]:
    """What a seed-style DIMSE-C callback is called with: the decoded data set, the
    presentation context and the association info."""
    return decoded_dataset(request), context_of(request), info_of(request)


def call_service_handler(
    request: ServiceRequest,
    channel: Channel,
    event_type: EventType,
    callback: Callback | None,
    handlers: Handlers,
) -> Any:
    """call_handler for C-STORE/C-FIND/C-GET/C-MOVE: the seed-style callback takes the
    decoded data set, the presentation context and the association info."""
    return call_handler(
        request,
        channel,
        event_type,
        callback,
        lambda: seed_arguments(request),
        handlers,
    )


@dataclass(frozen=True, slots=True)
class Yielded:
    """One (status, payload) a user's generator yielded (C-FIND, C-GET, C-MOVE)."""

    status: StatusResult
    payload: Any


def next_yield(
    iterator: Iterator[Any], on_error: int, service: str
) -> Yielded | StatusResult | None:
    """The next (status, payload) of a user's generator: None once it is exhausted; a
    failure with status `on_error` when it raises or yields something else."""
    try:
        item = next(iterator)
    except StopIteration:
        return None
    except Exception as error:
        log.exception("%s handler raised", service)
        return failure(on_error, describe_exception(error))
    try:
        status_value, payload = item
        return Yielded(parse_status(status_value), payload)
    except (InvalidStatusError, TypeError, ValueError) as error:
        return failure(on_error, f"invalid {service} yield: {error}")


def is_pending(status: int) -> bool:
    return classify(status) is StatusCategory.PENDING


def describe_exception(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text[:64]
