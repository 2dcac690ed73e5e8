# The acceptor's log lines (node.logs): one per association when it ends, one per request
# whose final status is a warning or a failure. Part of ServerAssociation.
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from node.dimse.messages import Response, message_name
from node.dimse.status import StatusCategory, classify

if TYPE_CHECKING:
    import asyncio

    from node.acceptor.settings import ServerSettings
    from node.dimse.commands import DimseMessage
    from node.dispatch import AssociationInfo
    from node.ul.pdu import AssociateRQ

log = logging.getLogger("dicomnode.acceptor")


class AssociationLog:
    """The log lines of one association as acceptor (mixed into ServerAssociation)."""

    request: AssociateRQ | None
    info: AssociationInfo | None
    settings: ServerSettings
    assoc_id: int
    peer_address: tuple[str, int]
    loop: asyncio.AbstractEventLoop
    opened_at: float
    requests_answered: int
    bytes_received: int
    close_reason: str

    def log_association(self, outcome: str, reason: str = "", level: int = logging.INFO) -> None:
        """The association's line: `outcome` released, aborted (`reason` the abort category)
        or rejected (`reason` why), with its peer, AE titles, duration, requests and bytes."""
        request = self.request
        calling = request.calling_ae_title if request is not None else ""
        called = request.called_ae_title if request is not None else ""
        fields: dict[str, Any] = {
            "assoc_id": self.assoc_id,
            "acceptor": self._acceptor_id(),
            "peer": self.peer_address[0],
            "peer_port": self.peer_address[1],
            "calling_aet": calling,
            "called_aet": called,
            "outcome": outcome,
            "reason": reason,
            "duration_ms": round((self.loop.time() - self.opened_at) * 1000, 1),
            "requests": self.requests_answered,
            "bytes_received": self.bytes_received,
        }
        if outcome == "aborted":
            fields["detail"] = self.close_reason
        log.log(
            level,
            "%s association from %s (%s -> %s)%s",
            outcome,
            self.peer_address[0],
            calling,
            called,
            f": {reason}" if reason else "",
            extra=fields,
        )

    def _acceptor_id(self) -> str:
        """The id that tags this acceptor's requests on the wire (the bridge's), so a line
        here meets the broker's and workers' lines about the same request."""
        return str(getattr(self.settings.dispatcher, "acceptor_id", self.settings.acceptor_id))

    def log_failed_request(
        self, message_id: int, response: DimseMessage, comment: str | None = None
    ) -> None:
        """A WARNING line for a final response whose status is in the Warning or Failure
        class (PS3.7 Annex C); nothing for success or cancel."""
        status = response.status if isinstance(response, Response) else 0xC000
        category = classify(status)
        if category is not StatusCategory.WARNING and category is not StatusCategory.FAILURE:
            return
        command = message_name(response.COMMAND_FIELD).removesuffix("-RSP")
        outcome = "failed" if category is StatusCategory.FAILURE else "warning"
        log.warning(
            "%s request %d %s: status 0x%04X",
            command,
            message_id,
            outcome,
            status,
            extra={
                "assoc_id": self.assoc_id,
                "acceptor": self._acceptor_id(),
                "msg_id": message_id,
                "command": command,
                "status": f"0x{status:04X}",
                "outcome": outcome,
                "error_comment": comment
                or (response.error_comment if isinstance(response, Response) else None),
                "calling_aet": self.info.calling_ae_title if self.info is not None else None,
            },
        )
