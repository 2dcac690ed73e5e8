# Requests the acceptor sends on an association it accepted: the C-STORE sub-operations of a
# C-GET (PS3.4 C.4.3) and N-EVENT-REPORTs (e.g. Storage Commitment results, PS3.4 J.3.3), with
# their responses matched by Message ID. Part of ServerAssociation.
#
# Rules: one C-STORE-RQ outstanding at a time, in order; every wait has a deadline; a peer that
# leaves a sub-operation unanswered gets an A-ABORT rather than the next one.
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from node.dimse.commands import CStoreRQ, NEventReportRQ
from node.dimse.messages import Response
from node.dimse.status import QueryRetrieveStatus

if TYPE_CHECKING:
    import itertools

    from node.acceptor.settings import ServerSettings
    from node.dimse.commands import DimseMessage
    from node.dispatch import ServiceRequest
    from node.ul.association import UpperLayer

log = logging.getLogger("dicomnode.acceptor")

#: How long a C-GET sub-operation waits for its C-STORE-RSP when no DIMSE timeout is set.
SUBOPERATION_RESPONSE_TIMEOUT = 60.0
#: Sub-operation not sent or not answered (Refused: Out of resources, PS3.4 C.4.3.1.4).
_NOT_STORED = QueryRetrieveStatus.OUT_OF_RESOURCES_SUBOPERATIONS


class OutgoingRequests:
    """C-STORE sub-operations and N-EVENT-REPORTs sent by the acceptor (mixed into
    ServerAssociation, which provides the transport and the Connection methods)."""

    settings: ServerSettings
    assoc_id: int
    contexts: dict[int, tuple[str, str]]
    loop: asyncio.AbstractEventLoop
    transport: Any
    upper_layer: UpperLayer
    _suboperation_ids: itertools.count[int]
    _suboperations: dict[int, asyncio.Future[int]]
    _suboperation_turn: asyncio.Lock

    if TYPE_CHECKING:  # provided by node.transport.connection.Connection

        def send_message(
            self, context_id: int, command: DimseMessage, dataset: bytes | None = None
        ) -> None: ...

        async def drain(self) -> None: ...

        def abort(self, reason: str, abort_reason: int = ...) -> None: ...

    def _on_response(self, command: DimseMessage) -> None:
        if not isinstance(command, Response):
            log.warning("association %d: unexpected request %s", self.assoc_id, command)
            return
        message_id = command.message_id_being_responded_to
        future = self._suboperations.pop(message_id, None)
        if future is None:
            log.warning("association %d: unexpected response %s", self.assoc_id, command)
            return
        if not future.done():
            future.set_result(command.status)

    async def store_suboperation(
        self,
        request: ServiceRequest,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        deadline: float | None = None,
    ) -> int:
        """C-GET sub-operation: C-STORE-RQ on this association, wait for the C-STORE-RSP.

        A peer that does not answer within the DIMSE timeout (SUBOPERATION_RESPONSE_TIMEOUT
        when none is set) gets an A-ABORT: the sub-operations queued behind it fail at once
        instead of reaching the peer after the C-GET ended."""
        context_id = next(
            (
                context.context_id
                for context in request.association.storage_contexts
                if context.abstract_syntax == sop_class_uid
                and context.transfer_syntax == transfer_syntax
            ),
            None,
        )
        if context_id is None or self.transport is None or self.transport.is_closing():
            return _NOT_STORED
        # One C-STORE-RQ outstanding at a time, in the order they came (asyncio.Lock is FIFO):
        # the requestor performs one operation at a time unless it negotiated more (PS3.7
        # D.3.3.3). A worker may queue the next ones here while the peer stores this one.
        async with self._suboperation_turn:
            await self.drain()
            if self.transport is None or self.transport.is_closing():
                return _NOT_STORED  # the association went away while we waited to write
            if deadline is not None and self.loop.time() >= deadline:
                return _NOT_STORED  # its requester gave up while it waited for its turn
            message_id = next(self._suboperation_ids) & 0xFFFF or next(self._suboperation_ids)
            future: asyncio.Future[int] = self.loop.create_future()
            self._suboperations[message_id] = future
            self.send_message(
                context_id,
                CStoreRQ(
                    message_id=message_id,
                    affected_sop_class_uid=sop_class_uid,
                    affected_sop_instance_uid=sop_instance_uid,
                ),
                dataset,
            )
            timeout = self.settings.dimse_timeout or SUBOPERATION_RESPONSE_TIMEOUT
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                self._give_up_suboperation(message_id, f"timeout ({timeout:g} s)")
                return _NOT_STORED
            except asyncio.CancelledError:  # whoever waited for it stopped waiting
                self._give_up_suboperation(message_id, "timeout (its requester gave up)")
                raise

    def _give_up_suboperation(self, message_id: int, why: str) -> None:
        """A C-STORE-RQ stays unanswered: end the association rather than send the next one
        while it is outstanding (and after the C-GET may have ended)."""
        self._suboperations.pop(message_id, None)
        if self.transport is not None and not self.transport.is_closing():
            self.abort(f"C-STORE sub-operation response {why}")

    async def send_event_report(
        self,
        context_id: int,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type: int,
        dataset: bytes | None,
    ) -> int | None:
        """N-EVENT-REPORT-RQ on this association (e.g. a Storage Commitment result, PS3.4
        J.3.3, after the N-ACTION-RSP); the N-EVENT-REPORT-RSP status, or None when the
        association is no longer there to carry it."""
        if (
            self.transport is None
            or self.transport.is_closing()
            or not self.upper_layer.is_established
            or context_id not in self.contexts
        ):
            return None
        message_id = next(self._suboperation_ids) & 0xFFFF or next(self._suboperation_ids)
        future: asyncio.Future[int] = self.loop.create_future()
        self._suboperations[message_id] = future
        self.send_message(
            context_id,
            NEventReportRQ(
                message_id=message_id,
                affected_sop_class_uid=sop_class_uid,
                affected_sop_instance_uid=sop_instance_uid,
                event_type_id=event_type,
                has_dataset=dataset is not None,
            ),
            dataset,
        )
        try:
            return await asyncio.wait_for(future, self.settings.dimse_timeout or 60.0)
        except (TimeoutError, ConnectionError):
            self._suboperations.pop(message_id, None)
            return None
