# A raw-socket DICOM peer for the malformed-input battery: it sends exact bytes, reads whole
# PDUs back and says what the server answered (the Outcome).
#
# Rules: loopback only; every read has a deadline taken from the socket timeout, never a
# sleep; the server's bytes are decoded with node.ul.pdu and node.dimse, so an answer our own
# codec cannot read fails the test. The probe is a C-ECHO-RQ with a Message ID no case uses:
# its success response proves the association still works after the case.
from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Self

from node.dimse.commands import DimseResponse
from node.dimse.fragment import DimseMessageReceived, MessageAssembler
from node.ul.pdu import (
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    ReleaseRP,
    ReleaseRQ,
    decode_pdu,
)

if TYPE_CHECKING:
    from types import TracebackType

    from node.ul.pdu import PDU

#: How long a case may wait for the server's answer. Every answer the battery expects comes
#: at once on loopback; a case that needs the ARTIM timer half-closes instead of waiting.
ANSWER_DEADLINE = 5.0
#: Message ID of the probe C-ECHO-RQ (no golden PDU uses it).
PROBE_MESSAGE_ID = 0x7E57
_LENGTH = struct.Struct(">I")


class Outcome(StrEnum):
    """What the server did with a case, as seen on the wire."""

    ABORT = "abort"  # an A-ABORT PDU
    REJECT = "reject"  # an A-ASSOCIATE-RJ PDU
    ACCEPT = "accept"  # an A-ASSOCIATE-AC accepting at least one presentation context
    ACCEPT_NONE = "accept-none"  # an A-ASSOCIATE-AC rejecting every presentation context
    RELEASE = "release"  # an A-RELEASE-RP PDU
    CLOSE = "close"  # the connection closed, no A-ABORT seen
    FAILURE = "failure"  # DIMSE response(s), one with a failure status, then the probe's
    ANSWERED = "answered"  # DIMSE response(s) with success status, then the probe's
    IGNORED = "ignored"  # no response but the probe's
    TIMEOUT = "timeout"  # nothing within ANSWER_DEADLINE: never acceptable


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    #: Status of every DIMSE response other than the probe's, in arrival order.
    statuses: tuple[int, ...] = ()
    #: The terminating PDU (A-ABORT, A-ASSOCIATE-RJ/AC, A-RELEASE-RP), if any.
    pdu: PDU | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        parts = [self.outcome.value]
        if isinstance(self.pdu, Abort):
            parts.append(f"source {self.pdu.source} reason {self.pdu.reason}")
        elif isinstance(self.pdu, AssociateRJ):
            parts.append(f"result {self.pdu.result} source {self.pdu.source}")
            parts.append(f"reason {self.pdu.reason}")
        if self.statuses:
            parts.append("statuses " + ",".join(f"0x{s:04X}" for s in self.statuses))
        return " ".join(parts)


class ProtocolViolationError(AssertionError):
    """The server sent something an acceptor must never send."""


class RawPeer:
    """One TCP connection to the server, driven byte by byte."""

    def __init__(self, port: int, *, deadline: float = ANSWER_DEADLINE) -> None:
        self.deadline = deadline
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._assembler = MessageAssembler()
        self.half_closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        """Send `data`; a server that already closed is not an error (it answered)."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def half_close(self) -> None:
        """Shut our write side: the server reads EOF (PS3.8 Evt17) after the bytes sent."""
        self.half_closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def read_pdu(self, deadline: float) -> PDU | None:
        """The next whole PDU from the server, None at EOF; TimeoutError past `deadline`."""
        buffer = self._buffer
        while True:
            if len(buffer) >= 6:
                end = 6 + _LENGTH.unpack_from(buffer, 2)[0]
                if len(buffer) >= end:
                    data = bytes(buffer[:end])
                    del buffer[:end]
                    return decode_pdu(data)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if buffer:
                    raise ProtocolViolationError(
                        f"connection closed inside a PDU: {bytes(buffer)!r}"
                    )
                return None
            buffer += chunk

    def associate(self, request: bytes) -> AssociateAC:
        """Send a valid A-ASSOCIATE-RQ and return the server's A-ASSOCIATE-AC."""
        self.send(request)
        pdu = self.read_pdu(time.monotonic() + self.deadline)
        if not isinstance(pdu, AssociateAC):
            raise AssertionError(f"the valid A-ASSOCIATE-RQ was answered with {pdu!r}")
        return pdu

    def collect(self, *, probe: bool) -> Answer:
        """Read until the server says something conclusive; classify it.

        With `probe`, the probe C-ECHO-RQ was sent last: its success response ends the read.
        """
        start = time.monotonic()
        deadline = start + self.deadline
        statuses: list[int] = []

        def answer(outcome: Outcome, pdu: PDU | None = None) -> Answer:
            return Answer(outcome, tuple(statuses), pdu, time.monotonic() - start)

        while True:
            try:
                pdu = self.read_pdu(deadline)
            except TimeoutError:
                return answer(Outcome.TIMEOUT)
            if pdu is None:
                return answer(Outcome.CLOSE)
            if isinstance(pdu, Abort):
                return answer(Outcome.ABORT, pdu)
            if isinstance(pdu, AssociateRJ):
                return answer(Outcome.REJECT, pdu)
            if isinstance(pdu, AssociateAC):
                accepted = any(item.result == 0 for item in pdu.presentation_contexts)
                return answer(Outcome.ACCEPT if accepted else Outcome.ACCEPT_NONE, pdu)
            if isinstance(pdu, ReleaseRP):
                return answer(Outcome.RELEASE, pdu)
            if isinstance(pdu, AssociateRQ | ReleaseRQ):
                raise ProtocolViolationError(f"an acceptor sent {pdu!r}")
            assert isinstance(pdu, PDataTF)
            for event in self._assembler.add(pdu):
                assert isinstance(event, DimseMessageReceived)
                command = event.command
                if not isinstance(command, DimseResponse):
                    raise ProtocolViolationError(f"unexpected request from the server: {command!r}")
                status = int(command.status)
                if probe and command.message_id_being_responded_to == PROBE_MESSAGE_ID:
                    if status != 0:
                        raise AssertionError(f"the probe C-ECHO failed with 0x{status:04X}")
                    if not statuses:
                        return answer(Outcome.IGNORED)
                    if any(s not in (0x0000, 0xFF00, 0xFF01) for s in statuses):
                        return answer(Outcome.FAILURE)
                    return answer(Outcome.ANSWERED)
                statuses.append(status)

    def release(self, request: bytes) -> PDU | None:
        """Send A-RELEASE-RQ; return what ends the association (A-RELEASE-RP expected)."""
        self.send(request)
        deadline = time.monotonic() + self.deadline
        while True:
            pdu = self.read_pdu(deadline)
            if not isinstance(pdu, PDataTF):  # late responses may still arrive first
                return pdu


class Lingering:
    """A connection left open after `payload`; a thread notes when the server closes it.

    For the ARTIM timer checks (PS3.8 9.1.5): the server must close a connection that sent a
    partial PDU, or that stays open after the server's A-ABORT or A-RELEASE-RP, within ARTIM.
    """

    def __init__(self, port: int, payload: bytes, limit: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
        self.received = bytearray()
        self.closed_after: float | None = None
        self._done = threading.Event()
        if payload:
            self.sock.sendall(payload)
        self._sent_at = time.monotonic()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
        except OSError:
            pass  # a reset is a close as well; the timeout leaves closed_after at None
        else:
            self.closed_after = time.monotonic() - self._sent_at
        finally:
            self.sock.close()
            self._done.set()

    def wait(self, limit: float) -> float | None:
        """Seconds from the last byte sent to the server's close (None: not closed)."""
        self._done.wait(limit)
        return self.closed_after
