# The seam between the acceptor and whatever runs the service handlers.
#
# Rules: plain data and typing.Protocols only (no asyncio, no zmq, no pydicom), so both the
# acceptor (node.acceptor) and the workers can import it. A ServiceRequest is what crosses the
# seam; it carries the decoded command and the data set as opaque bytes. Two implementations
# exist behind `Dispatcher`: node.local.ThreadDispatcher (in-process, a thread pool) and the
# ZeroMQ bridge (node.acceptor.bridge) that hands requests to worker processes through the broker.
from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from node.dimse.messages import Request

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from node.dimse.commands import DimseMessage


@dataclass(frozen=True, slots=True)
class StorageContext:
    """An accepted presentation context on which the acceptor may send C-STORE-RQs (C-GET)."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """What a service handler may know about the association a request came on."""

    assoc_id: int
    calling_ae_title: str
    called_ae_title: str
    peer_address: str
    peer_port: int
    local_ae_title: str
    acceptor_id: str = "local"
    storage_contexts: tuple[StorageContext, ...] = ()
    user_identity_type: int | None = None
    username: str | None = None
    #: Our SOP Class Extended Negotiation replies (SOP class UID, application information):
    #: what was agreed, e.g. relational queries (PS3.4 C.5.1).
    sop_class_extended: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """One DIMSE request (PS3.7) as handed to a service handler."""

    association: AssociationInfo
    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    command: DimseMessage
    dataset: bytes | None = None
    deadline: float | None = None
    #: A streamed data set arrives as a Part 10 spool file instead of `dataset` bytes; its
    #: data set starts `dataset_offset` bytes in (after the file meta header).
    dataset_path: str | None = None
    dataset_offset: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def message_id(self) -> int:
        command = self.command
        return command.message_id if isinstance(command, Request) else 0


class ReplySink(Protocol):
    """Acceptor side of a request in flight; called on the acceptor's event loop thread."""

    def send_response(
        self,
        request: ServiceRequest,
        response: DimseMessage,
        dataset: bytes | None,
        final: bool,
    ) -> None:
        """Put a response (pending or final) for `request` on its association."""

    def store_suboperation(
        self,
        request: ServiceRequest,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        deadline: float | None = None,
    ) -> Awaitable[int]:
        """C-GET: send a C-STORE-RQ on the same association; resolves to the peer's status.
        Not sent (0xA702) when its turn comes after `deadline` (event loop time): whoever
        asked has stopped waiting."""
        ...


class DatasetStream(Protocol):
    """A data set handed over in chunks as it arrives (DESIGN.md "Large datasets")."""

    def write(self, data: bytes, last: bool) -> bool:
        """Pass one chunk on; True asks the caller to stop reading until resume_stream()."""
        ...


class Dispatcher(Protocol):
    """Runs service handlers for requests (in-process threads or ZeroMQ workers)."""

    async def start(self) -> None:
        """Get ready to accept requests."""

    def submit(self, request: ServiceRequest, sink: ReplySink) -> None:
        """Start handling `request`; every response goes to `sink`, the last with final=True."""

    def open_stream(self, request: ServiceRequest, sink: ReplySink) -> DatasetStream:
        """Start `request` whose data set follows in chunks (large data sets)."""
        ...

    def cancel(self, assoc_id: int, message_id: int) -> None:
        """C-CANCEL: ask the handler of (assoc_id, message_id) to stop (PS3.7 9.3.2.3)."""

    async def close(self) -> None:
        """Stop accepting requests and release resources."""


class SubOperation(Protocol):
    """A C-GET sub-operation handed to the association and not yet answered."""

    def done(self) -> bool:
        """True once its status is known (result() will not block)."""

    def result(self) -> int:
        """Its C-STORE-RSP status, waiting for it; 0xA702 when it failed or timed out."""


class Channel(Protocol):
    """Worker side of a request in flight: what a service handler may do (blocking calls).

    A channel may also offer `store_nowait(...) -> SubOperation` (the same arguments as
    `store`): the sub-operation is queued on the association and the handler goes on, so the
    next data set can travel while the peer stores this one (workers.handlers.retrieve keeps a
    small window of them)."""

    def respond(self, response: DimseMessage, dataset: bytes | None, final: bool) -> None:
        """Send a response back to the association (pending ones first, one final)."""

    def store(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> int:
        """C-GET sub-operation: C-STORE on the requesting association; returns its status."""

    def is_cancelled(self) -> bool:
        """True once a C-CANCEL for this request arrived."""

    def event_report(
        self, sop_class_uid: str, sop_instance_uid: str, event_type: int, dataset: bytes | None
    ) -> int | None:
        """N-EVENT-REPORT on the requesting association, even after the final response (if the
        association is still open); the peer's status, or None when it could not be sent."""


class QueuingChannel(abc.ABC):
    """The part two Channels share: C-GET sub-operations queued on the association
    (`store_nowait`), the blocking `store` waiting for one, and cancellation by an Event."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    @abc.abstractmethod
    def store_nowait(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> SubOperation:
        """Queue a C-GET sub-operation on the requesting association; its status comes later."""

    def store(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> int:
        return self.store_nowait(sop_class_uid, sop_instance_uid, transfer_syntax, dataset).result()

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()
