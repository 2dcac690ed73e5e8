# Typed protocol errors for the Upper Layer (PS3.8). No I/O here.
#
# Rules: a RemoteProtocolError means the peer broke the protocol; it names the A-ABORT
# source and reason (PS3.8 Table 9-26) that we should put on the wire. A LocalProtocolError
# means our own user asked for something the protocol does not allow in this state.
from __future__ import annotations

from enum import IntEnum


class AbortSource(IntEnum):
    """A-ABORT source field (PS3.8 Table 9-26)."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """A-ABORT reason/diag when the source is the service provider (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class ProtocolError(Exception):
    """Base class of every Upper Layer protocol error."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks PS3.8; answer with A-ABORT(source, reason)."""

    def __init__(
        self,
        message: str,
        reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE,
        source: AbortSource = AbortSource.SERVICE_PROVIDER,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source


class LocalProtocolError(ProtocolError):
    """Our own user tried something PS3.8 does not allow (e.g. sending P-DATA in Sta2)."""
