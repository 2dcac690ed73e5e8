# Typed errors of the DIMSE layer (PS3.7). No I/O here.
#
# Rules: every error caused by peer data subclasses node.ul.errors.RemoteProtocolError, so a
# transport that cannot do better aborts the association with the source/reason it carries.
# Errors that still allow an answer (a bad command set whose Message ID could be read, a data
# set over our size limit) carry the PS3.7 status to answer with and what is needed to build
# the response.
from __future__ import annotations

from node.dimse.messages import RESPONSE_CLASS, DimseMessage
from node.ul.errors import AbortReason, AbortSource, RemoteProtocolError


class DimseError(RemoteProtocolError):
    """Base class of every DIMSE-level error caused by the peer."""


class CommandSetError(DimseError):
    """A command set (group 0000, PS3.7 section 6.3 and Annex E) could not be decoded.

    `status` is the PS3.7 Annex C status to put in the response when one can be sent:

    - 0110H Processing failure: the encoding itself is broken (truncated element, odd or
      undefined length, an element outside group 0000, elements out of ascending order, a
      value of the wrong size for its VR). Nothing after the fault can be trusted.
    - 0120H Missing attribute: an element that PS3.7 makes mandatory for this message is
      absent; `offending_element` lists the missing tags (for Offending Element (0000,0901)).
    - 0211H Unrecognized operation: Command Field (0000,0100) is missing or names no DIMSE
      message; no response can be built for it.

    `message_id`, `command_field` and `has_dataset` are filled in when they were read before
    the fault. `can_answer` says whether a response can be built (a request other than
    C-CANCEL-RQ whose Message ID is known); otherwise the association should be aborted.
    Aborts caused by a bad command set come from the DIMSE layer, a UL service-user, hence
    source 0 (PS3.8 Table 9-26, reason not significant).
    """

    def __init__(
        self,
        message: str,
        status: int,
        *,
        message_id: int | None = None,
        command_field: int | None = None,
        has_dataset: bool | None = None,
        offending_element: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message, AbortReason.NOT_SPECIFIED, AbortSource.SERVICE_USER)
        self.status = status
        self.message_id = message_id
        self.command_field = command_field
        self.has_dataset = has_dataset
        self.offending_element = offending_element

    @property
    def can_answer(self) -> bool:
        """True when a response with `status` can be sent for the failed request."""
        return self.message_id is not None and self.command_field in RESPONSE_CLASS


class MessageAssemblyError(DimseError):
    """PDVs arrived in an order PS3.7 section 6.3.1 and PS3.8 Annex E forbid.

    Examples: a data set fragment before the last command fragment, a PDV of another
    presentation context in the middle of a message, a data set fragment after a command
    whose Command Data Set Type (0000,0800) is 0101H. Always answered with an A-ABORT
    (source service-provider, reason unexpected-PDU-parameter, PS3.8 Table 9-26).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, AbortReason.UNEXPECTED_PDU_PARAMETER)


class DatasetTooLargeError(DimseError):
    """A data set grew beyond the configured `maximum_dataset_size`.

    The assembler drops the remaining fragments of that message, so the transport may answer
    the request with `status` (A700H for C-STORE and C-FIND, 0213H Resource limitation
    otherwise) and keep the association, or abort it. `command` is the decoded request.
    """

    def __init__(self, message: str, command: DimseMessage, status: int) -> None:
        super().__init__(message, AbortReason.NOT_SPECIFIED, AbortSource.SERVICE_USER)
        self.command = command
        self.status = status
