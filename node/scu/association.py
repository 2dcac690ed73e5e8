# The SCU side: an association we request, with every DIMSE-C and DIMSE-N service (PS3.7).
#
# Rules: async first (`AsyncAssociation`, usable with `async with`); the blocking
# `Association` the seed API returns runs the same coroutines on a background event loop
# thread. Responses are matched to requests by Message ID; requests the peer sends us
# (C-STORE sub-operations of a C-GET, N-EVENT-REPORT) go to the dispatcher the settings'
# serve_requests makes (the AE's own service handlers on a thread pool): this module imports
# no service code. Every wait has a deadline (dimse_timeout / acse_timeout).
from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from node.acse.requestor import validate_associate_ac
from node.dimse.commands import CCancelRQ, CStoreRQ
from node.dimse.messages import Request, Response, failure_response
from node.dimse.status import Status, StatusCategory, StorageStatus, classify
from node.dispatch import AssociationInfo, ServiceRequest, StorageContext
from node.transport.connection import Connection
from node.ul.association import Role
from node.ul.errors import RemoteProtocolError
from node.ul.pdu import Abort, AssociateAC, AssociateRJ, AssociateRQ, ReleaseRP, ReleaseRQ

if TYPE_CHECKING:
    import ssl as ssl_module
    from collections.abc import AsyncIterator, Callable

    from node.acse.contexts import NegotiatedContext
    from node.dimse.commands import DimseMessage
    from node.dispatch import Dispatcher
    from node.ul.pdu import PDU

log = logging.getLogger("dicomnode.scu.services")


class AssociationError(Exception):
    """The association could not be used (rejected, aborted, timed out, closed)."""


@dataclass
class ClientSettings:
    acse_timeout: float = 30.0
    dimse_timeout: float | None = None
    network_timeout: float | None = 60.0
    maximum_pdu_size: int = 16382
    #: Makes the dispatcher that runs the peer's requests on this association (C-GET
    #: sub-operations, N-EVENT-REPORT); injected by the AE (its in-process handlers) so the
    #: client knows no service code. None: such requests are refused.
    serve_requests: Callable[[], Dispatcher] | None = None


@dataclass
class _Pending:
    queue: asyncio.Queue[tuple[DimseMessage, bytes | None] | BaseException] = field(
        default_factory=asyncio.Queue
    )


class ClientConnection(Connection):
    """Requestor side of one association (PS3.8 Sta4/Sta5 onwards)."""

    def __init__(self, request: AssociateRQ, settings: ClientSettings) -> None:
        super().__init__(
            Role.REQUESTOR,
            maximum_pdata_length=settings.maximum_pdu_size,
            artim_timeout=settings.acse_timeout,
            idle_timeout=None,
        )
        self.request = request
        self.settings = settings
        self.response: asyncio.Future[AssociateAC | AssociateRJ] = self.loop.create_future()
        self.released: asyncio.Future[None] = self.loop.create_future()
        self.contexts: tuple[NegotiatedContext, ...] = ()
        self.pending: dict[int, _Pending] = {}
        self.dispatcher: Dispatcher | None = None
        self.info: AssociationInfo | None = None
        self.aborted_reason: str | None = None
        self.in_flight: dict[int, ServiceRequest] = {}
        #: The association object using this connection (told when the peer ends it).
        self.owner: AssociationBase | None = None
        self.upper_layer.send(request)  # Evt1 before the transport connects (AE-1)

    def on_pdu(self, pdu: PDU) -> None:
        if isinstance(pdu, AssociateAC | AssociateRJ):
            if not self.response.done():
                self.response.set_result(pdu)
        elif isinstance(pdu, ReleaseRP):
            if not self.released.done():
                self.released.set_result(None)
        elif isinstance(pdu, ReleaseRQ):
            self.send_pdu(ReleaseRP())
        elif isinstance(pdu, Abort):
            self.on_aborted(
                f"aborted by peer (source {pdu.source}, reason {pdu.reason})", by_peer=True
            )

    def on_aborted(self, reason: str, *, by_peer: bool) -> None:
        self.aborted_reason = reason
        self._fail_all(AssociationError(reason))

    def on_closed(self, reason: str) -> None:
        self._fail_all(AssociationError(reason))
        if self.dispatcher is not None:
            self.loop.create_task(self.dispatcher.close())

    def _fail_all(self, error: BaseException) -> None:
        owner = self.owner
        if owner is not None and owner.is_established:  # ended by the peer or the network
            owner.is_established = False
            owner.is_aborted = True
        for future in (self.response, self.released):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: nobody may be waiting for it any more
        for pending in self.pending.values():
            pending.queue.put_nowait(error)

    def on_message(self, context_id: int, command: DimseMessage, dataset: bytes | None) -> None:
        if command.is_request:
            self._serve(context_id, command, dataset)
            return
        message_id = command.message_id_being_responded_to if isinstance(command, Response) else -1
        pending = self.pending.get(message_id)
        if pending is None:
            log.warning("response to unknown message %d ignored", message_id)
            return
        pending.queue.put_nowait((command, dataset))

    # --- requests from the peer (C-GET sub-operations, N-EVENT-REPORT) ----------------------

    def _serve(self, context_id: int, command: DimseMessage, dataset: bytes | None) -> None:
        context = next((c for c in self.contexts if c.context_id == context_id), None)
        if context is None or context.transfer_syntax is None or self.info is None:
            self.provider_abort(RemoteProtocolError(f"request on unknown context {context_id}"))
            return
        if self.dispatcher is None:
            if self.settings.serve_requests is None:
                self._refuse(context_id, command)
                return
            self.dispatcher = self.settings.serve_requests()
        self._submit(context_id, context, command, dataset)

    def _submit(
        self,
        context_id: int,
        context: NegotiatedContext,
        command: DimseMessage,
        dataset: bytes | None,
    ) -> None:
        if self.dispatcher is None or self.info is None:
            raise RuntimeError("request served before the association was established")
        request = ServiceRequest(
            association=self.info,
            context_id=context_id,
            abstract_syntax=context.abstract_syntax,
            transfer_syntax=str(context.transfer_syntax),
            command=command,
            dataset=dataset,
        )
        self.in_flight[request.message_id] = request
        self.dispatcher.submit(request, self)

    def _refuse(self, context_id: int, command: DimseMessage) -> None:
        """A request from the peer with nothing here to serve it, answered with its own
        response type: A700H for a C-STORE (Refused: out of resources, PS3.4 B.2.3), else
        0110H (Processing failure)."""
        if isinstance(command, CStoreRQ):
            status, comment = StorageStatus.OUT_OF_RESOURCES, "no storage handler here"
        else:
            status, comment = Status.PROCESSING_FAILURE, "no handler for this request here"
        self.send_message(context_id, failure_response(command, status, comment))

    def send_response(
        self, request: ServiceRequest, response: DimseMessage, dataset: bytes | None, final: bool
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.send_message(request.context_id, response, dataset)
        if final:
            self.in_flight.pop(request.message_id, None)

    async def store_suboperation(
        self,
        request: ServiceRequest,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        deadline: float | None = None,
    ) -> int:
        return 0xA702  # an SCU does not run C-GET sub-operations

    def is_busy(self) -> bool:
        return bool(self.pending) or bool(self.in_flight)


class AssociationBase:
    """An association we requested: life cycle and request/response plumbing."""

    def __init__(self, connection: ClientConnection | None, local_ae_title: str) -> None:
        self._connection = connection
        if connection is not None:
            connection.owner = self
        self.local_ae_title = local_ae_title
        self.is_established = False
        self.is_rejected = False
        self.is_aborted = False
        self.is_released = False
        self.rejection: AssociateRJ | None = None
        #: Why the association never got established (connection or TLS failure), for users.
        self.failure_reason: str | None = None
        self.accepted_contexts: list[NegotiatedContext] = []
        self.rejected_contexts: list[NegotiatedContext] = []
        self.acceptance: Any = None
        self._message_ids = itertools.count(1)
        self._lock_release = asyncio.Lock()

    @property
    def connection(self) -> ClientConnection:
        if self._connection is None:
            raise AssociationError("the association was never connected")
        return self._connection

    # --- life cycle -------------------------------------------------------------------------

    async def _establish(self) -> None:
        connection = self.connection
        timeout = connection.settings.acse_timeout
        try:
            answer = await asyncio.wait_for(asyncio.shield(connection.response), timeout)
        except (AssociationError, ConnectionError) as error:
            self.is_aborted = True
            self.failure_reason = str(error)
            log.info("association request failed: %s", error)
            return
        except TimeoutError:
            self.is_aborted = True
            connection.abort("ACSE timeout waiting for A-ASSOCIATE response")
            return
        if isinstance(answer, AssociateRJ):
            self.is_rejected = True
            self.rejection = answer
            return
        try:
            result = validate_associate_ac(connection.request, answer)
        except RemoteProtocolError as error:
            connection.provider_abort(error)
            self.is_aborted = True
            return
        self.acceptance = result
        connection.contexts = tuple(result.contexts)
        connection.peer_maximum_length = result.peer_maximum_length
        self.accepted_contexts = [c for c in result.contexts if c.accepted]
        self.rejected_contexts = [c for c in result.contexts if not c.accepted]
        peer = connection.peer_address
        connection.info = AssociationInfo(
            assoc_id=id(connection) & 0x7FFFFFFF,
            calling_ae_title=connection.request.called_ae_title,
            called_ae_title=connection.request.calling_ae_title,
            peer_address=peer[0],
            peer_port=peer[1],
            local_ae_title=self.local_ae_title,
            storage_contexts=tuple(
                StorageContext(c.context_id, c.abstract_syntax, str(c.transfer_syntax))
                for c in self.accepted_contexts
                if c.as_scu
            ),
        )
        self.is_established = True

    async def release(self) -> None:
        """A-RELEASE (PS3.8 7.2); aborts if the peer does not answer within acse_timeout."""
        async with self._lock_release:
            if not self.is_established:
                return
            self.is_established = False
            connection = self.connection
            try:
                connection.send_pdu(ReleaseRQ())
                await asyncio.wait_for(
                    asyncio.shield(connection.released), connection.settings.acse_timeout
                )
                self.is_released = True
            except (TimeoutError, AssociationError, Exception):  # noqa: BLE001
                connection.abort("no A-RELEASE-RP")
                self.is_aborted = True
            await _wait_closed(connection, connection.settings.acse_timeout)

    async def abort(self) -> None:
        """A-ABORT (PS3.8 7.3)."""
        self.is_established = False
        self.is_aborted = True
        if self._connection is None:
            return
        self.connection.abort("aborted by local user")
        await _wait_closed(self.connection, 5.0)

    async def __aenter__(self) -> AssociationBase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.is_established:
            await self.release()

    # --- plumbing ---------------------------------------------------------------------------

    def next_message_id(self) -> int:
        value = next(self._message_ids) & 0xFFFF
        return value or self.next_message_id()

    def find_context(
        self, abstract_syntax: str, transfer_syntax: str | None = None, *, as_scu: bool = True
    ) -> NegotiatedContext:
        for context in self.accepted_contexts:
            if context.abstract_syntax != abstract_syntax:
                continue
            if transfer_syntax is not None and context.transfer_syntax != transfer_syntax:
                continue
            if as_scu and not context.as_scu:
                continue
            return context
        raise ValueError(
            f"no accepted presentation context for {abstract_syntax}"
            + (f" with {transfer_syntax}" if transfer_syntax else "")
        )

    async def request(
        self,
        context: NegotiatedContext,
        command: DimseMessage,
        dataset: bytes | None,
        on_cancel: Callable[[], bool] | None = None,
    ) -> AsyncIterator[tuple[DimseMessage, bytes | None]]:
        """Send one request; yield each response until the final one (PS3.7 9.1, 10.1)."""
        if not self.is_established:
            raise AssociationError("the association is not established")
        connection = self.connection
        if not isinstance(command, Request):
            raise TypeError(f"{type(command).__name__} is not a request with a Message ID")
        message_id = command.message_id
        pending = _Pending()
        connection.pending[message_id] = pending
        timeout = connection.settings.dimse_timeout
        try:
            await connection.drain()
            connection.send_message(context.context_id, command, dataset)
            while True:
                try:
                    item = await asyncio.wait_for(pending.queue.get(), timeout)
                except TimeoutError:
                    self.is_established = False
                    self.is_aborted = True
                    connection.abort("DIMSE timeout waiting for a response")
                    raise AssociationError("DIMSE timeout waiting for a response") from None
                if isinstance(item, BaseException):
                    self.is_established = False
                    self.is_aborted = True
                    raise item
                response, response_dataset = item
                yield response, response_dataset
                status = response.status if isinstance(response, Response) else 0
                if classify(status) is not StatusCategory.PENDING:
                    return
        finally:
            connection.pending.pop(message_id, None)

    def send_cancel(self, context: NegotiatedContext, message_id: int) -> None:
        """C-CANCEL-RQ for an outstanding C-FIND/C-GET/C-MOVE (PS3.7 9.3.2.3)."""
        self.connection.send_message(
            context.context_id, CCancelRQ(message_id_being_responded_to=message_id)
        )


AssociationT = TypeVar("AssociationT", bound=AssociationBase)


async def _wait_closed(connection: Connection, limit: float) -> None:
    if connection.transport is not None and not connection.closed.done():
        connection.transport.close()
    try:
        await asyncio.wait_for(asyncio.shield(connection.closed), limit)
    except TimeoutError:
        if connection.transport is not None:
            connection.transport.abort()


async def open_association(
    host: str,
    port: int,
    request: AssociateRQ,
    settings: ClientSettings,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
    cls: type[AssociationT] = AssociationBase,  # type: ignore[assignment]
) -> AssociationT:
    """Connect and negotiate; the result says is_established / is_rejected / is_aborted.

    With `ssl` the connection is TLS (PS3.15 B.x) and the peer's certificate is checked for
    `server_hostname` when the context checks host names; `local_addr` binds our end.
    """
    loop = asyncio.get_running_loop()
    try:
        _transport, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: ClientConnection(request, settings),
                host,
                port,
                ssl=ssl,
                server_hostname=server_hostname if ssl else None,
                local_addr=local_addr,
            ),
            settings.acse_timeout,
        )
    except (OSError, TimeoutError) as error:
        log.info("could not connect to %s:%s: %s", host, port, error)
        failed = cls(None, request.calling_ae_title)
        failed.is_aborted = True
        failed.failure_reason = str(error) or type(error).__name__
        return failed
    association = cls(connection, request.calling_ae_title)
    await association._establish()
    return association
