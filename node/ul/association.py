# The Upper Layer association as a sans-IO object: PS3.8 section 9 run over bytes.
#
# Rules: no socket, no clock, no threads. The transport feeds received bytes to
# `receive_data()`, reads indications and confirmations from `next_event()`, hands local
# primitives (the PDU dataclasses) to `send()`, and writes `data_to_send()` to the wire. Every
# step is a lookup in `node.ul.fsm.TRANSITIONS`; the action's data (next state, ARTIM timer)
# drives the object. Times are floats given by the caller; the object keeps an ARTIM deadline
# and never reads a clock. A local primitive with no table entry raises LocalProtocolError and
# changes nothing; bad or unexpected peer data follows the table (AA-1, AA-7, AA-8) and never
# raises. Each PDU header is checked (`pdu_length`) before its body is buffered.
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeAlias

from node.ul.errors import AbortReason, AbortSource, LocalProtocolError, RemoteProtocolError
from node.ul.fsm import ACTIONS, TRANSITIONS, Evt, Role, Sta
from node.ul.pdu import (
    HEADER_LENGTH,
    P_DATA_TF,
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
    decode_pdata_from,
    decode_pdu,
    pdu_length,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "Event",
    "ProviderAbort",
    "Role",
    "UpperLayer",
]


class NEED_DATA:  # noqa: N801 - a sentinel, spelled like h11's
    """Returned (the class itself) by `UpperLayer.next_event()` when more bytes are needed."""


@dataclass(frozen=True, slots=True)
class ProviderAbort:
    """A-P-ABORT indication (PS3.8 7.4): the association ended without an orderly release.

    Issued when the peer broke the protocol (AA-1, AA-7, AA-8: we queued an A-ABORT PDU, whose
    reason field is `abort_reason`) or when the transport closed under a live association
    (AA-4: nothing was sent, `abort_reason` is None).
    """

    reason: str
    abort_reason: AbortReason | None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The transport closed where that is normal (PS3.8 Table 9-10, Evt17: AA-5 in Sta2, AR-5
    in Sta13): before any A-ASSOCIATE-RQ arrived, or after the association ended."""


#: What `next_event()` returns.
Event: TypeAlias = PDU | ProviderAbort | ConnectionClosed | type[NEED_DATA]

# PDUs received on the transport connection -> event (PS3.8 Table 9-10).
_RECEIVED_EVENTS: Final[dict[type[PDU], Evt]] = {
    AssociateAC: Evt.EVT3,
    AssociateRJ: Evt.EVT4,
    AssociateRQ: Evt.EVT6,
    PDataTF: Evt.EVT10,
    ReleaseRQ: Evt.EVT12,
    ReleaseRP: Evt.EVT13,
    Abort: Evt.EVT16,
}

# Local primitives, given to send() as the PDU they put on the wire -> event.
_PRIMITIVE_EVENTS: Final[dict[type[PDU], Evt]] = {
    AssociateRQ: Evt.EVT1,
    AssociateAC: Evt.EVT7,
    AssociateRJ: Evt.EVT8,
    PDataTF: Evt.EVT9,
    ReleaseRQ: Evt.EVT11,
    ReleaseRP: Evt.EVT14,
    Abort: Evt.EVT15,
}

_PDU_NAMES: Final[dict[type[PDU], str]] = {
    AssociateRQ: "A-ASSOCIATE-RQ",
    AssociateAC: "A-ASSOCIATE-AC",
    AssociateRJ: "A-ASSOCIATE-RJ",
    PDataTF: "P-DATA-TF",
    ReleaseRQ: "A-RELEASE-RQ",
    ReleaseRP: "A-RELEASE-RP",
    Abort: "A-ABORT",
}

# Actions taken on a received PDU that answer it with an A-ABORT PDU (PS3.8 Table 9-9).
_ABORTING_ACTIONS: Final = frozenset({"AA-1", "AA-7", "AA-8"})
_COLLISION_STATES: Final = frozenset({Sta.STA9, Sta.STA10, Sta.STA11, Sta.STA12})


@functools.cache
def _next_states(role: Role) -> Mapping[str, Sta]:
    """Each action's next state for `role` (PS3.8 Table 9-10), made once per role."""
    return MappingProxyType({name: a.next_state_for(role) for name, a in ACTIONS.items()})


class UpperLayer:
    """One DICOM Upper Layer association over one transport connection (PS3.8 section 9).

    Either role: the association-requestor calls `send(AssociateRQ(...))` (Evt1) then
    `connection_made()` (Evt2); the association-acceptor calls `connection_made()` (Evt5) and
    waits for the A-ASSOCIATE-RQ from `next_event()`. One object serves one connection: once it
    is back in Sta1 it refuses every primitive.

    AE-6 always takes its "acceptable" branch (Sta3): a service-provider rejection is made by
    the ACSE layer with `send(AssociateRJ(...))` (AE-8), which puts the same PDU on the wire.
    """

    def __init__(
        self,
        role: Role,
        *,
        maximum_pdata_length: int = 16382,
        artim_timeout: float = 30.0,
    ) -> None:
        self.role: Final = role
        self.state = Sta.STA1
        #: Our Maximum Length (PS3.8 D.1): the largest P-DATA-TF PDU body we accept, 0 = no limit.
        self.maximum_pdata_length = maximum_pdata_length
        #: How long the ARTIM timer runs (PS3.8 9.1.5), in the caller's time unit.
        self.artim_timeout = artim_timeout
        self._next_state: Final = _next_states(role)
        # Received bytes not yet framed: the caller's own bytes object while nothing is left
        # over (no copy), a bytearray once a partial PDU must be kept across reads.
        self._buffer: bytes | bytearray = b""
        self._offset = 0  # bytes of _buffer already consumed
        self._output: list[bytes] = []
        self._deadline: float | None = None
        self._clock = 0.0  # the latest time the caller gave us
        self._request: bytes | None = None  # AE-1 keeps the A-ASSOCIATE-RQ until AE-2 sends it
        self._ended = False  # back in Sta1 after a connection: the association is over
        self._eof = False  # the peer closed the transport (Evt17 pending)
        self._framing_lost = False  # a PDU header was refused: later bytes cannot be framed

    # ----------------------------------------------------------------- transport events

    def connection_made(self, now: float) -> None:
        """The transport connection is open: Evt5 (acceptor, AE-5 starts ARTIM) or Evt2
        (requestor, AE-2 queues the A-ASSOCIATE-RQ given to `send()`), PS3.8 9.1.2, 9.2."""
        self._clock = now
        event = Evt.EVT5 if self.role is Role.ACCEPTOR else Evt.EVT2
        name = self._permitted(event)
        request = self._request
        self._request = None
        self._enter(name, request)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the transport; ``b""`` means the peer closed it (Evt17).

        Call `next_event()` until it returns NEED_DATA after each call, so the buffer never
        holds more than one partial PDU plus one read. Bytes arriving after the association
        ended are dropped.
        """
        if self._ended or self._eof:
            return
        if self.state is Sta.STA1 or (self.state is Sta.STA4 and data):
            raise LocalProtocolError("receive_data() before the transport connection was made")
        if not data:
            self._eof = True
        elif not self._framing_lost:
            buffer = self._buffer
            if self._offset >= len(buffer):
                self._buffer = data  # nothing pending: frame the caller's bytes in place
            else:
                pending = bytearray(memoryview(buffer)[self._offset :])
                pending += data
                self._buffer = pending
            self._offset = 0

    def next_event(self, *, now: float | None = None) -> Event:
        """Run the state machine on the next complete PDU and return what it indicates.

        Returns the received PDU for an indication or confirmation (AE-3, AE-4, AE-6, DT-2,
        AR-2, AR-3, AR-6, AR-8, AR-10, AA-2, AA-3), a ProviderAbort when the PDU was invalid or
        unexpected (AA-1, AA-7, AA-8, an A-ABORT is queued) or the transport closed under the
        association (AA-4), ConnectionClosed for AA-5 and AR-5, or NEED_DATA. Pass `now` so an
        ARTIM timer started here counts from the right time; otherwise the latest time given
        to any method is used (PS3.8 9.1.5, Table 9-10).
        """
        if now is not None:
            self._clock = now
        while not self._ended:
            item = self._take_pdu()
            if item is None:
                return self._transport_closed() if self._eof else NEED_DATA
            result = self._received(item)
            if result is not None:
                return result
        return NEED_DATA

    def get_timer(self) -> float | None:
        """The ARTIM deadline (PS3.8 9.1.5) in the caller's clock, or None when it is stopped."""
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """Evt18, ARTIM timer expired, if `now` has reached the deadline (AA-2: close)."""
        self._clock = now
        if self._deadline is not None and now >= self._deadline:
            # ARTIM runs only in Sta2 and Sta13, where Table 9-10 answers Evt18 with AA-2.
            self._enter(TRANSITIONS[(Evt.EVT18, self.state)], None)

    # ----------------------------------------------------------------- local primitives

    def send(self, event: PDU, *, now: float | None = None) -> None:
        """Issue a local primitive (PS3.8 Table 9-10): AssociateRQ=Evt1, AssociateAC=Evt7,
        AssociateRJ=Evt8, PDataTF=Evt9, ReleaseRQ=Evt11, ReleaseRP=Evt14, Abort=Evt15.

        The PDU's bytes join `data_to_send()`. Raises LocalProtocolError, changing nothing,
        when the table has no action for it in the current state or it cannot be encoded.
        Pass `now` when the action may start ARTIM (AE-8, AR-4, AA-1).
        """
        if now is not None:
            self._clock = now
        name = self._permitted(_PRIMITIVE_EVENTS[type(event)])
        try:
            wire: bytes | None = event.encode()
        except (ValueError, struct.error) as exc:
            raise LocalProtocolError(f"cannot encode {_PDU_NAMES[type(event)]}: {exc}") from exc
        if name == "AE-1":  # the transport connects; AE-2 sends the request
            self._request = wire
            wire = None
        elif name == "AA-2":  # abort while still connecting: nothing to send, just close
            wire = None
        self._enter(name, wire)

    def send_pdata_bytes(self, pdus: list[bytes]) -> None:
        """Queue already encoded P-DATA-TF PDUs: Evt9 (DT-1 in Sta6, AR-7 in Sta8), PS3.8 9.3.5.

        Same state checks as `send(PDataTF(...))`, without encoding again.
        """
        self._enter(self._permitted(Evt.EVT9), None)
        self._output.extend(pdus)

    def data_to_send(self) -> bytes:
        """Take every byte queued for the transport (b"" when there is none)."""
        output = self._output
        if not output:
            return b""
        data = output[0] if len(output) == 1 else b"".join(output)
        output.clear()
        return data

    # ----------------------------------------------------------------- state queries

    @property
    def should_close(self) -> bool:
        """True once the association is over (Sta1 again): close the transport after sending
        `data_to_send()` (AE-4, AR-3, AA-2, AA-3 close it; AA-4, AA-5, AR-5 found it closed)."""
        return self._ended

    @property
    def is_established(self) -> bool:
        """Sta6: association established and ready for data transfer (PS3.8 Table 9-3)."""
        return self.state is Sta.STA6

    @property
    def release_collision(self) -> bool:
        """Sta9..Sta12: both sides sent A-RELEASE-RQ (PS3.8 Table 9-4, 7.2.2)."""
        return self.state in _COLLISION_STATES

    # ----------------------------------------------------------------- the machine

    def _permitted(self, event: Evt) -> str:
        """The action for a local `event` in the current state, or LocalProtocolError."""
        state = self.state
        if self._ended:
            raise LocalProtocolError(
                f"{event.label} ({event.description}): the association has ended"
            )
        name = TRANSITIONS.get((event, state))
        if name is None:
            raise LocalProtocolError(
                f"{event.label} ({event.description}) is not allowed in "
                f"{state.label} ({state.description})"
            )
        if event is Evt.EVT1 and self.role is Role.ACCEPTOR:
            raise LocalProtocolError("an association-acceptor does not send A-ASSOCIATE-RQ")
        return name

    def _enter(self, name: str, wire: bytes | None) -> None:
        """Carry out action `name`: ARTIM per its definition, queue `wire`, next state."""
        action = ACTIONS[name]
        if action.stops_artim:
            self._deadline = None
        if action.starts_artim:
            self._deadline = self._clock + self.artim_timeout
        if wire is not None:
            self._output.append(wire)
        self.state = self._next_state[name]
        if self.state is Sta.STA1:
            self._ended = True
            self._buffer = b""
            self._offset = 0

    def _take_pdu(self) -> PDU | RemoteProtocolError | None:
        """Cut the next complete PDU from the buffer and decode it; None if incomplete."""
        buffer = self._buffer
        start = self._offset
        if len(buffer) - start < HEADER_LENGTH:
            return None
        try:
            length = pdu_length(buffer[start : start + HEADER_LENGTH], self.maximum_pdata_length)
        except RemoteProtocolError as exc:
            # The header is refused before its body is buffered; the stream cannot be framed.
            self._framing_lost = True
            self._buffer = b""
            self._offset = 0
            return exc
        end = start + HEADER_LENGTH + length
        if end > len(buffer):
            return None
        self._offset = end
        try:
            if buffer[start] == P_DATA_TF:
                # Each fragment is copied once, straight out of the receive buffer.
                return decode_pdata_from(memoryview(buffer), start, end)
            return decode_pdu(bytes(memoryview(buffer)[start:end]), self.maximum_pdata_length)
        except RemoteProtocolError as exc:
            return exc

    def _received(self, item: PDU | RemoteProtocolError) -> Event | None:
        """Run a received PDU (or Evt19) through Table 9-10; None when it is ignored (AA-6)."""
        state = self.state
        if state is Sta.STA6 and type(item) is PDataTF:
            return item  # DT-2: P-DATA indication, stays in Sta6, ARTIM untouched
        if isinstance(item, RemoteProtocolError):
            return self._abort(TRANSITIONS[(Evt.EVT19, state)], str(item), item.reason)
        name = TRANSITIONS[(_RECEIVED_EVENTS[type(item)], state)]
        if name in _ABORTING_ACTIONS:
            text = f"unexpected {_PDU_NAMES[type(item)]} PDU in {state.label}"
            return self._abort(name, text, AbortReason.UNEXPECTED_PDU)
        self._enter(name, None)
        return None if name == "AA-6" else item

    def _abort(self, name: str, text: str, reason: AbortReason) -> ProviderAbort:
        """AA-1 (service-user source, reason not significant), AA-7 or AA-8 (service-provider
        source with `reason`): queue the A-ABORT PDU and indicate A-P-ABORT (PS3.8 Table 9-9)."""
        if name == "AA-1":
            abort = Abort(AbortSource.SERVICE_USER, AbortReason.NOT_SPECIFIED)
        else:
            abort = Abort(AbortSource.SERVICE_PROVIDER, reason)
        self._enter(name, abort.encode())
        return ProviderAbort(f"{text}; sent A-ABORT ({name})", AbortReason(abort.reason))

    def _transport_closed(self) -> ProviderAbort | ConnectionClosed:
        """Evt17: AA-4 under a live association is an A-P-ABORT; AA-5 and AR-5 are normal."""
        name = TRANSITIONS[(Evt.EVT17, self.state)]
        self._enter(name, None)
        if name == "AA-4":
            return ProviderAbort(f"transport connection closed by the peer ({name})", None)
        return ConnectionClosed()
