# The acceptor: an asyncio server whose connections negotiate associations and hand DIMSE
# requests to a Dispatcher (in-process threads or ZeroMQ workers).
#
# Rules: one event loop for every association of the process; nothing here blocks. Negotiation
# is node.acse's pure function; association-level hooks (requested/accepted/rejected/released/
# aborted) run here because they decide what goes on the wire. Requests in flight per
# association never exceed the negotiated asynchronous operations window; past it, reading
# pauses so TCP pushes back on the SCU (PS3.7 D.3.3.3).
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.acceptor.association_log import AssociationLog
from node.acceptor.outgoing import OutgoingRequests
from node.acse.negotiation import Acceptance, AcceptorPolicy, negotiate_as_acceptor
from node.dimse.commands import CCancelRQ, CEchoRQ, CEchoRSP
from node.dimse.errors import DatasetTooLargeError
from node.dimse.fragment import DatasetChunk, DatasetStreamStarted, MessageAssembler
from node.dimse.messages import RESPONSE_CLASS, Request, Response
from node.dimse.status import Status
from node.dispatch import AssociationInfo, ServiceRequest, StorageContext
from node.transport.connection import Connection
from node.ul.association import Role
from node.ul.errors import LocalProtocolError
from node.ul.pdu import (
    Abort,
    AssociateRJ,
    AssociateRQ,
    RejectReason,
    RejectResult,
    RejectSource,
    ReleaseRP,
    ReleaseRQ,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.dimse.commands import DimseMessage
    from node.dimse.errors import CommandSetError
    from node.dimse.fragment import AssemblerEvent
    from node.dispatch import Dispatcher
    from node.ul.pdu import PDU, PresentationDataValueItem

log = logging.getLogger("dicomnode.acceptor")

#: In-flight cap when the peer negotiated an unlimited (0) window.
UNLIMITED_WINDOW_CAP = 64
#: Refused: SOP Class not supported; Processing failure (PS3.7 C.5).
#: Streamed data sets go to the dispatcher in pieces of about this size.
STREAM_CHUNK = 1 << 20


@dataclass
class AssociationHooks:
    """Association-level callbacks (run on the acceptor's loop; exceptions are logged)."""

    requested: list[Callable[[Any], None]] = field(default_factory=list)
    accepted: list[Callable[[Any], None]] = field(default_factory=list)
    rejected: list[Callable[[Any], None]] = field(default_factory=list)
    released: list[Callable[[Any], None]] = field(default_factory=list)
    aborted: list[Callable[[Any], None]] = field(default_factory=list)

    @staticmethod
    def fire(callbacks: list[Callable[[Any], None]], argument: Any) -> None:
        for callback in callbacks:
            try:
                callback(argument)
            except Exception:
                log.exception("association hook %r raised", callback)


@dataclass
class ServerSettings:
    """Everything an acceptor needs, built by the AE (or the `acceptor` command)."""

    policy: Callable[[], AcceptorPolicy]
    dispatcher: Dispatcher
    maximum_associations: int | None = 2
    acse_timeout: float = 30.0
    dimse_timeout: float | None = None
    network_timeout: float | None = 60.0
    maximum_pdu_size: int = 16382
    acceptor_id: str = "local"
    hooks: AssociationHooks = field(default_factory=AssociationHooks)
    #: Data sets larger than this are streamed to the dispatcher in chunks, never held whole.
    stream_threshold: int | None = 4 << 20
    #: A data set larger than this is refused (A700H for C-STORE/C-FIND, 0213H otherwise) and
    #: the rest of it dropped, the association going on; None: no cap.
    maximum_dataset_size: int | None = None
    #: Told about associations and requests (node.observability.ServerObserver), or None.
    observer: Any = None
    #: Answer C-ECHO here, without the dispatcher, when no custom echo handler exists anywhere
    #: (Verification, PS3.4 A: nothing to do but answer success; saves a round trip).
    local_echo: Callable[[], bool] = lambda: False
    #: Called with the peer's (host, port) for every new TCP connection, before any PDU;
    #: returning False closes it at once (the AE's on_receive_connection).
    on_connection: Callable[[tuple[str, int]], Any] | None = None


def abort_category(reason: str) -> str:
    """A low-cardinality label for why an association ended without a release."""
    if reason.startswith("aborted by peer"):
        return "peer"
    if reason.startswith(("protocol error", "aborted:")):
        return "protocol"
    if "timeout" in reason or "ARTIM" in reason:
        return "timeout"
    if "shutting down" in reason:
        return "shutdown"
    return "connection_lost"


class _RefusingAssembler(MessageAssembler):
    """A MessageAssembler whose DatasetTooLargeError goes to `refuse` instead of up to the
    connection (which would abort): the assembler drops the rest of that data set itself."""

    __slots__ = ("_refuse",)

    def __init__(
        self,
        refuse: Callable[[int, DatasetTooLargeError], None],
        *,
        stream_threshold: int | None,
        maximum_dataset_size: int | None,
    ) -> None:
        super().__init__(
            stream_threshold=stream_threshold, maximum_dataset_size=maximum_dataset_size
        )
        self._refuse = refuse

    def add_pdv(self, pdv: PresentationDataValueItem) -> AssemblerEvent | None:
        try:
            return super().add_pdv(pdv)
        except DatasetTooLargeError as error:
            self._refuse(pdv.context_id, error)
            return None


class _DropStream:
    """Where the rest of a refused streamed data set goes."""

    def write(self, data: bytes, last: bool) -> bool:
        return False


_DROP_STREAM = _DropStream()


class AcceptorServer:
    """Listens on a TCP port; one ServerAssociation per connection."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.associations: set[ServerAssociation] = set()
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, ssl: Any = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection,
            host,
            port,
            backlog=1024,
            reuse_address=True,
            reuse_port=reuse_port or None,
            ssl=ssl,
            # A TLS peer that never finishes its handshake is dropped like a silent one.
            ssl_handshake_timeout=self.settings.acse_timeout if ssl is not None else None,
        )

    @property
    def port(self) -> int:
        assert self._server is not None  # noqa: S101 - start() first
        return int(self._server.sockets[0].getsockname()[1])

    def _new_connection(self) -> ServerAssociation:
        return ServerAssociation(self, next(self._ids))

    def established_count(self) -> int:
        return sum(1 for association in self.associations if association.acceptance is not None)

    def established_by_calling_aet(self) -> Counter[str]:
        """Established associations per calling AE title (for the per-title limit)."""
        return Counter(
            association.acceptance.calling_ae_title
            for association in self.associations
            if association.acceptance is not None
        )

    async def close(self, *, grace: float = 5.0) -> None:
        """Stop listening, abort associations that outlive `grace` seconds."""
        if self._server is not None:
            self._server.close()
        pending = [association.closed for association in self.associations]
        if pending:
            _done, _ = await asyncio.wait(pending, timeout=grace)
        for association in list(self.associations):
            association.abort("acceptor shutting down")
        if self._server is not None:
            await self._server.wait_closed()


class ServerAssociation(AssociationLog, OutgoingRequests, Connection):
    """One association as acceptor (PS3.8 roles: Sta2 onwards)."""

    def __init__(self, server: AcceptorServer, assoc_id: int) -> None:
        settings = server.settings
        super().__init__(
            Role.ACCEPTOR,
            maximum_pdata_length=settings.maximum_pdu_size,
            artim_timeout=settings.acse_timeout,
            idle_timeout=settings.network_timeout,
            stream_threshold=settings.stream_threshold,
        )
        if settings.maximum_dataset_size is not None:
            self.assembler = _RefusingAssembler(
                self.on_dataset_too_large,
                stream_threshold=settings.stream_threshold,
                maximum_dataset_size=settings.maximum_dataset_size,
            )
        self.server = server
        self.settings = settings
        self.assoc_id = assoc_id
        self.acceptance: Acceptance | None = None
        self.info: AssociationInfo | None = None
        self.request: AssociateRQ | None = None
        self.contexts: dict[int, tuple[str, str]] = {}
        self.in_flight: dict[int, ServiceRequest] = {}
        #: Requests past the window (the peer broke PS3.7 D.3.3.3): run when a slot frees.
        self.queued: deque[ServiceRequest] = deque()
        self.window = 1
        self._release_pending = False
        self._suboperation_ids = itertools.count(1)
        self._suboperations: dict[int, asyncio.Future[int]] = {}
        self._suboperation_turn = asyncio.Lock()
        #: The data set being streamed: (request, dispatcher stream, bytes not yet passed on).
        self._stream: tuple[ServiceRequest, Any, bytearray] | None = None
        #: For the association's log line (node.logs): requests answered, bytes read, start.
        self.requests_answered = 0
        self.bytes_received = 0
        self.opened_at = self.loop.time()

    # --- association life -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.associations.add(self)
        super().connection_made(transport)
        hook = self.settings.on_connection
        if hook is not None:
            try:
                allowed = hook(self.peer_address) is not False
            except Exception:  # a user hook must not break the acceptor
                log.exception("on_receive_connection raised: closing the connection")
                allowed = False
            if not allowed:
                self.close_reason = "refused by on_receive_connection"
                transport.close()

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        super().data_received(data)

    def on_pdu(self, pdu: PDU) -> None:
        if isinstance(pdu, AssociateRQ):
            self._negotiate(pdu)
        elif isinstance(pdu, ReleaseRQ):
            if self.in_flight or self.queued:
                self._release_pending = True
                self.pause_reading()
            else:
                self._release()
        elif isinstance(pdu, Abort):
            self.close_reason = f"aborted by peer (source {pdu.source}, reason {pdu.reason})"
            self.on_aborted(self.close_reason, by_peer=True)
        elif isinstance(pdu, ReleaseRP):  # release collision as acceptor (Sta10 -> Sta12)
            self.send_pdu(ReleaseRP())

    def _negotiate(self, request: AssociateRQ) -> None:
        settings = self.settings
        self.request = request
        AssociationHooks.fire(settings.hooks.requested, self)
        decision = negotiate_as_acceptor(
            request,
            settings.policy(),
            association_count=self.server.established_count(),
            maximum_associations=settings.maximum_associations,
            peer_address=self.peer_address[0],
            associations_by_calling_aet=self.server.established_by_calling_aet(),
        )
        if not isinstance(decision, Acceptance):
            self.log_association("rejected", decision.reason)
            self.close_reason = f"rejected: {decision.reason}"
            self.send_pdu(decision.pdu)
            if settings.observer is not None:
                settings.observer.association_rejected()
            AssociationHooks.fire(settings.hooks.rejected, self)
            return
        try:
            self.send_pdu(decision.pdu)
        except LocalProtocolError as error:
            # A rejected context echoes the peer's first transfer syntax (PS3.8 9.3.3.2), which
            # may be text we cannot put on the wire: refuse the association instead of dying.
            self.log_association("rejected", f"cannot answer: {error}", level=logging.WARNING)
            self.close_reason = f"rejected: {error}"
            self.send_pdu(
                AssociateRJ(
                    RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.NO_REASON
                )
            )
            if settings.observer is not None:
                settings.observer.association_rejected()
            AssociationHooks.fire(settings.hooks.rejected, self)
            return
        self.acceptance = decision
        self.peer_maximum_length = decision.peer_maximum_length
        storage: list[StorageContext] = []
        for context in decision.contexts:
            if not context.accepted or context.transfer_syntax is None:
                continue
            self.contexts[context.context_id] = (context.abstract_syntax, context.transfer_syntax)
            if context.as_scu:
                storage.append(
                    StorageContext(
                        context.context_id, context.abstract_syntax, context.transfer_syntax
                    )
                )
        invoked = decision.operations_invoked
        self.window = invoked if invoked > 0 else UNLIMITED_WINDOW_CAP
        identity = decision.user_identity
        self.info = AssociationInfo(
            assoc_id=self.assoc_id,
            calling_ae_title=request.calling_ae_title,
            called_ae_title=request.called_ae_title,
            peer_address=self.peer_address[0],
            peer_port=self.peer_address[1],
            local_ae_title=request.called_ae_title,
            acceptor_id=settings.acceptor_id,
            storage_contexts=tuple(storage),
            user_identity_type=identity.identity_type if identity is not None else None,
            username=identity.primary_field.decode("utf-8", "replace")
            if identity is not None and identity.identity_type in (1, 2)
            else None,
            sop_class_extended=tuple(
                (item.sop_class_uid, item.service_class_application_information)
                for item in decision.sop_class_extended
            ),
        )
        if settings.observer is not None:
            settings.observer.association_accepted()
        log.debug(
            "accepted association %d from %s (%s)",
            self.assoc_id,
            self.peer_address[0],
            request.calling_ae_title,
        )
        AssociationHooks.fire(settings.hooks.accepted, self)

    def _release(self) -> None:
        self.send_pdu(ReleaseRP())
        self.close_reason = "released"
        AssociationHooks.fire(self.settings.hooks.released, self)

    def on_aborted(self, reason: str, *, by_peer: bool) -> None:
        AssociationHooks.fire(self.settings.hooks.aborted, self)

    def on_closed(self, reason: str) -> None:
        self.server.associations.discard(self)
        if self.acceptance is not None:
            if self.close_reason == "released":
                self.log_association("released")
            else:
                self.log_association("aborted", abort_category(self.close_reason))
        elif self.request is None:
            log.debug("connection from %s closed: %s", self.peer_address[0], reason)
        observer = self.settings.observer
        if observer is not None and self.acceptance is not None:
            if self.close_reason == "released":
                observer.association_ended("released")
            else:
                observer.association_ended("aborted", abort_category(self.close_reason))
        dispatcher = self.settings.dispatcher
        for message_id in list(self.in_flight):
            dispatcher.cancel(self.assoc_id, message_id)
        if self._stream is not None:  # cut off mid-stream: after the cancel, drop the spool
            discard = getattr(self._stream[1], "discard", None)
            self._stream = None
            if discard is not None:
                discard()
        self.in_flight.clear()
        self.queued.clear()
        for future in self._suboperations.values():
            if not future.done():
                future.set_exception(ConnectionError(f"association closed: {reason}"))
        self._suboperations.clear()

    def is_busy(self) -> bool:
        return bool(self.in_flight or self.queued)

    # --- DIMSE ------------------------------------------------------------------------------

    def _request(
        self, context_id: int, command: DimseMessage, dataset: bytes | None
    ) -> ServiceRequest | None:
        context = self.contexts.get(context_id)
        if context is None or self.info is None:
            self.provider_abort_unknown_context(context_id)
            return None
        sop_class = command.sop_class_uid if isinstance(command, Request) else None
        if sop_class and sop_class != context[0]:
            # PS3.7 C.5: the SOP Class of a request is the abstract syntax of its context.
            message_id = command.message_id if isinstance(command, Request) else 0
            comment = f"SOP Class {sop_class} is not the abstract syntax of context {context_id}"
            response = self.refuse(
                context_id,
                command.COMMAND_FIELD,
                message_id,
                Status.SOP_CLASS_NOT_SUPPORTED,
                comment,
            )
            self.requests_answered += 1
            self.log_failed_request(message_id, response, f"{comment} ({context[0]})")
            return None
        timeout = self.settings.dimse_timeout
        return ServiceRequest(
            association=self.info,
            context_id=context_id,
            abstract_syntax=context[0],
            transfer_syntax=context[1],
            command=command,
            dataset=dataset,
            deadline=self.loop.time() + timeout if timeout else None,
        )

    def on_message(self, context_id: int, command: DimseMessage, dataset: bytes | None) -> None:
        if not command.is_request:
            self._on_response(command)
            return
        if isinstance(command, CCancelRQ):
            self.settings.dispatcher.cancel(self.assoc_id, command.message_id_being_responded_to)
            return
        request = self._request(context_id, command, dataset)
        if request is None:
            return
        if (
            isinstance(command, CEchoRQ)
            and not self.in_flight
            and not self.queued
            and self.settings.local_echo()
        ):
            self._echo(request)
            return
        if len(self.in_flight) >= self.window:
            # Keep reading while requests are in flight (C-CANCEL-RQ and the C-STORE-RSPs of
            # C-GET sub-operations must get through); only a peer that exceeds the window is
            # held back: its request waits and reading pauses until a slot frees.
            self.queued.append(request)
            self.pause_reading()
            return
        self._submit(request)

    def on_stream(self, event: DatasetStreamStarted | DatasetChunk) -> None:
        """A data set above the stream threshold: pass it on in chunks of STREAM_CHUNK bytes
        as it arrives; reading pauses while the dispatcher's window is full."""
        if isinstance(event, DatasetStreamStarted):
            request = self._request(event.context_id, event.command, None)
            if request is None:
                return
            self.in_flight[request.message_id] = request
            if self.settings.observer is not None:
                self.settings.observer.request_started(request)
            try:
                stream = self.settings.dispatcher.open_stream(request, self)
            except Exception as error:  # noqa: BLE001 - e.g. a UID that cannot name a spool
                self._refuse_stream(request, error)
                stream = _DROP_STREAM
            self._stream = (request, stream, bytearray(event.first_chunk))
            return
        if self._stream is None:
            return
        request, stream, pending = self._stream
        pending += event.data
        if self.settings.observer is not None:
            self.settings.observer.stream_bytes(len(event.data))
        if len(pending) >= STREAM_CHUNK or event.is_last:
            try:
                if stream.write(bytes(pending), event.is_last):
                    self.pause_reading()
            except Exception as error:  # noqa: BLE001 - e.g. the spool disk is full
                getattr(stream, "discard", lambda: None)()
                self._refuse_stream(request, error)
                self._stream = (request, _DROP_STREAM, pending)
            pending.clear()
        if event.is_last:
            self._stream = None

    def _refuse_stream(self, request: ServiceRequest, error: Exception) -> None:
        """Answer a streamed request that cannot go on; the rest of its data set is dropped."""
        log.warning("association %d: streamed request refused: %s", self.assoc_id, error)
        status = 0xA700 if isinstance(error, OSError) else 0xC000
        if self.in_flight.pop(request.message_id, None) is None:
            return  # already answered
        self.refuse(
            request.context_id,
            request.command.COMMAND_FIELD,
            request.message_id,
            status,
            f"{type(error).__name__}: {error}",
        )
        if self.settings.observer is not None:
            self.settings.observer.request_finished(request, status)

    def resume_stream(self) -> None:
        """The dispatcher's stream window reopened."""
        if not self.queued:
            self.resume_reading()

    def _echo(self, request: ServiceRequest) -> None:
        """C-ECHO-RSP success straight from the acceptor (local_echo)."""
        self.in_flight[request.message_id] = request
        if self.settings.observer is not None:
            self.settings.observer.request_started(request)
        self.send_response(
            request,
            CEchoRSP(
                message_id_being_responded_to=request.message_id,
                affected_sop_class_uid=request.abstract_syntax,
                status=0x0000,
            ),
            None,
            True,
        )

    def _submit(self, request: ServiceRequest) -> None:
        self.in_flight[request.message_id] = request
        if self.settings.observer is not None:
            self.settings.observer.request_started(request)
        self.settings.dispatcher.submit(request, self)

    def on_command_error(self, context_id: int, error: CommandSetError) -> None:
        """A bad command set: a failure response when the request's Message ID was read and
        its context is accepted (PS3.7 C.5 status from the error), else A-ABORT."""
        if error.command_field is None or error.message_id is None or not error.can_answer:
            self.provider_abort(error)
        elif context_id not in self.contexts:
            self.provider_abort_unknown_context(context_id)
        else:
            response = self.refuse(
                context_id,
                error.command_field,
                error.message_id,
                error.status,
                str(error),
                error.offending_element,
            )
            self.requests_answered += 1
            self.log_failed_request(error.message_id, response, str(error))

    def on_dataset_too_large(self, context_id: int, error: DatasetTooLargeError) -> None:
        """A data set over `maximum_dataset_size`: answer the request with the error's status
        (A700H Out of Resources for C-STORE, PS3.4 B.2.3) and go on; the assembler drops the
        rest of the data set. A part already streamed to the dispatcher is abandoned."""
        command = error.command
        message_id = command.message_id if isinstance(command, Request) else 0
        streamed = self._stream
        if streamed is not None and streamed[0].command is command:
            self._stream = None
            request = streamed[0]
            self.in_flight.pop(message_id, None)
            self.settings.dispatcher.cancel(self.assoc_id, message_id)
            discard = getattr(streamed[1], "discard", None)
            if discard is not None:
                discard()
            if self.settings.observer is not None:
                self.settings.observer.request_finished(request, error.status)
            if not self.queued:
                self.resume_reading()
        if not command.is_request:
            self.provider_abort(error)
        elif context_id not in self.contexts:
            self.provider_abort_unknown_context(context_id)
        else:
            response = self.refuse(
                context_id, command.COMMAND_FIELD, message_id, error.status, str(error)
            )
            self.requests_answered += 1
            self.log_failed_request(message_id, response, str(error))

    def refuse(
        self,
        context_id: int,
        command_field: int,
        message_id: int,
        status: int,
        comment: str,
        offending_element: tuple[int, ...] = (),
    ) -> DimseMessage:
        """Answer a request with a failure response of its type (PS3.7 C.5); return it."""
        response_class: Any = RESPONSE_CLASS[command_field]
        response: DimseMessage = response_class(
            message_id_being_responded_to=message_id,
            status=status,
            error_comment=comment[:64].encode("ascii", "replace").decode("ascii"),
            offending_element=offending_element or None,
        )
        self.send_message(context_id, response)
        return response

    def provider_abort_unknown_context(self, context_id: int) -> None:
        from node.ul.errors import AbortReason, RemoteProtocolError

        self.provider_abort(
            RemoteProtocolError(
                f"message on presentation context {context_id}, which was not accepted",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        )

    # --- ReplySink --------------------------------------------------------------------------

    def send_response(
        self,
        request: ServiceRequest,
        response: DimseMessage,
        dataset: bytes | None,
        final: bool,
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        current = self.in_flight.get(request.message_id)
        if current is None or current.command is not request.command:
            return  # association replaced or request already finished
        try:
            self.send_message(request.context_id, response, dataset)
        except LocalProtocolError as error:
            # e.g. a UID over 64 characters from the request, echoed: answer without it
            log.warning("association %d: cannot send %r: %s", self.assoc_id, response, error)
            if not final:
                self.settings.dispatcher.cancel(self.assoc_id, request.message_id)
            response = self.refuse(
                request.context_id,
                request.command.COMMAND_FIELD,
                request.message_id,
                Status.PROCESSING_FAILURE,
                f"response not encodable: {error}",
            )
            final = True
        if final:
            del self.in_flight[request.message_id]
            self.requests_answered += 1
            status = response.status if isinstance(response, Response) else 0xC000
            if status:
                self.log_failed_request(request.message_id, response)
            if self.settings.observer is not None:
                self.settings.observer.request_finished(request, status)
            while self.queued and len(self.in_flight) < self.window:
                self._submit(self.queued.popleft())
            if self._release_pending:
                if not self.in_flight:
                    self._release_pending = False
                    self._release()
            elif not self.queued:
                self.resume_reading()
