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
from collections import Counter
from typing import TYPE_CHECKING, Any

from node.acceptor.association_log import AssociationLog
from node.acceptor.outgoing import OutgoingRequests
from node.acceptor.settings import AssociationHooks, ServerSettings, abort_category
from node.acceptor.streaming import RefusingAssembler, StreamingRequests
from node.acceptor.window import RequestWindow
from node.acse.negotiation import Acceptance, negotiate_as_acceptor
from node.dimse.commands import CCancelRQ, CEchoRQ, CEchoRSP
from node.dimse.messages import RESPONSE_CLASS, Request, Response
from node.dimse.status import Status
from node.dispatch import AssociationInfo, ServiceRequest, StorageContext
from node.transport.connection import Connection
from node.ul.association import Role
from node.ul.errors import AbortReason, LocalProtocolError, RemoteProtocolError
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
    from node.dimse.commands import DimseMessage
    from node.dimse.errors import CommandSetError, DatasetTooLargeError
    from node.ul.pdu import PDU

#: Re-exported for the AE and the tests, which build acceptors.
__all__ = ["AcceptorServer", "AssociationHooks", "ServerAssociation", "ServerSettings"]

log = logging.getLogger("dicomnode.acceptor")


class AcceptorServer:
    """Listens on a TCP port; one ServerAssociation per connection."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.associations: set[ServerAssociation] = set()
        #: The associations of `associations` that were accepted (counted at each request).
        self.established: set[ServerAssociation] = set()
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
        return len(self.established)

    def established_by_calling_aet(self) -> Counter[str]:
        """Established associations per calling AE title (for the per-title limit)."""
        return Counter(
            association.acceptance.calling_ae_title
            for association in self.established
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


class ServerAssociation(StreamingRequests, AssociationLog, OutgoingRequests, Connection):
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
            self.assembler = RefusingAssembler(
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
        #: In flight, and past the window (the peer broke PS3.7 D.3.3.3): run when one ends.
        self.requests: RequestWindow[ServiceRequest] = RequestWindow()
        self._release_pending = False
        self._suboperation_ids = itertools.count(1)
        self._suboperations: dict[int, asyncio.Future[int]] = {}
        self._suboperation_turn = asyncio.Lock()
        self._stream: tuple[ServiceRequest, Any, bytearray] | None = None  # StreamingRequests
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
            if self.requests.busy:
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
        policy = settings.policy()
        decision = negotiate_as_acceptor(
            request,
            policy,
            association_count=self.server.established_count(),
            maximum_associations=settings.maximum_associations,
            peer_address=self.peer_address[0],
            # counted only when a per-title limit asks (a walk over every association)
            associations_by_calling_aet=self.server.established_by_calling_aet()
            if policy.maximum_associations_per_aet is not None
            else None,
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
        self.server.established.add(self)
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
        self.requests.negotiated(decision.operations_invoked)
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
        self.server.established.discard(self)
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
        for message_id in self.requests.clear():
            dispatcher.cancel(self.assoc_id, message_id)
        self.drop_stream()  # cut off mid-stream: after the cancel, drop the spool
        for future in self._suboperations.values():
            if not future.done():
                future.set_exception(ConnectionError(f"association closed: {reason}"))
        self._suboperations.clear()

    def is_busy(self) -> bool:
        return self.requests.busy

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
        if isinstance(command, CEchoRQ) and not self.requests.busy and self.settings.local_echo():
            self._echo(request)
            return
        if not self.requests.admit(request):
            # Keep reading while requests are in flight (C-CANCEL-RQ and the C-STORE-RSPs of
            # C-GET sub-operations must get through); only a peer that exceeds the window is
            # held back: its request waits and reading pauses until a slot frees.
            self.pause_reading()
            return
        self._submit(request)

    def _echo(self, request: ServiceRequest) -> None:
        """C-ECHO-RSP success straight from the acceptor (local_echo)."""
        self.requests.start(request)
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
        """Hand an admitted request to the dispatcher."""
        if self.settings.observer is not None:
            self.settings.observer.request_started(request)
        self.settings.dispatcher.submit(request, self)

    def on_command_error(self, context_id: int, error: CommandSetError) -> None:
        """A bad command set: a failure response when the request's Message ID was read and
        its context is accepted (PS3.7 C.5 status from the error), else A-ABORT."""
        self.answer_or_abort(
            context_id,
            error,
            error.command_field if error.can_answer else None,
            error.message_id,
            error.offending_element,
        )

    def answer_or_abort(
        self,
        context_id: int,
        error: CommandSetError | DatasetTooLargeError,
        command_field: int | None,
        message_id: int | None,
        offending_element: tuple[int, ...] = (),
    ) -> None:
        """A request that cannot be served: a failure response of its type with the error's
        status, or A-ABORT when it cannot be answered (no Message ID or command read, or a
        context that was not accepted)."""
        if command_field is None or message_id is None:
            self.provider_abort(error)
        elif context_id not in self.contexts:
            self.provider_abort_unknown_context(context_id)
        else:
            response = self.refuse(
                context_id, command_field, message_id, error.status, str(error), offending_element
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
        current = self.requests.get(request.message_id)
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
            self.requests.finish(request.message_id)
            self.requests_answered += 1
            status = response.status if isinstance(response, Response) else 0xC000
            if status:
                self.log_failed_request(request.message_id, response)
            if self.settings.observer is not None:
                self.settings.observer.request_finished(request, status)
            for waiting in self.requests.ready():
                self._submit(waiting)
            if self._release_pending:
                if not self.requests.in_flight:
                    self._release_pending = False
                    self._release()
            elif not self.requests.queued:
                self.resume_reading()
