# The asyncio Protocol around the sans-IO core: one TCP connection, either role.
#
# Rules: no DICOM logic here beyond pumping bytes through node.ul.association.UpperLayer and
# node.dimse's reassembler; subclasses (server side, client side) react to PDUs and messages.
# One event loop serves every connection of the process; nothing blocks; timers are loop
# callbacks armed from the core's get_timer(). Flow control: pause_reading()/resume_reading()
# when the owner has too much outstanding, pause_writing()/resume_writing() gate producers.
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, cast

from node.dimse.commands import encode_command
from node.dimse.errors import CommandSetError
from node.dimse.fragment import (
    DatasetChunk,
    DatasetStreamStarted,
    DimseMessageReceived,
    MessageAssembler,
    fragment_message,
)
from node.ul.association import NEED_DATA, ConnectionClosed, ProviderAbort, Role, UpperLayer
from node.ul.errors import AbortReason, AbortSource, LocalProtocolError, RemoteProtocolError
from node.ul.pdu import PDU, Abort, PDataTF

if TYPE_CHECKING:
    from node.dimse.commands import DimseMessage

log = logging.getLogger("dicomnode.transport")


class Connection(asyncio.Protocol):
    """One DICOM Upper Layer connection driven by asyncio (PS3.8 section 9)."""

    def __init__(
        self,
        role: Role,
        *,
        maximum_pdata_length: int,
        artim_timeout: float,
        idle_timeout: float | None,
        stream_threshold: int | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.upper_layer = UpperLayer(
            role, maximum_pdata_length=maximum_pdata_length, artim_timeout=artim_timeout
        )
        self.assembler = MessageAssembler(stream_threshold=stream_threshold)
        self.transport: asyncio.Transport | None = None
        self.peer_maximum_length = 0
        self.peer_address: tuple[str, int] = ("", 0)
        self.idle_timeout = idle_timeout
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.close_reason = ""
        self._writable = asyncio.Event()
        self._writable.set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = self.loop.time()
        self._reading_paused = False
        #: A command set was refused before its Command Data Set Type: drop a data set.
        self._skip_dataset = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (asyncio's, or uvloop's, which does not subclass asyncio.Transport)
        self.transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_address = (str(peer[0]), int(peer[1]))
        self.upper_layer.connection_made(self.loop.time())
        if self.idle_timeout:
            self._idle_handle = self.loop.call_later(self.idle_timeout, self._check_idle)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self._last_activity = self.loop.time()
        self.upper_layer.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        self.upper_layer.receive_data(b"")
        self._pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._timer, self._idle_handle):
            if handle is not None:
                handle.cancel()
        self._writable.set()
        if not self.close_reason:
            self.close_reason = f"connection lost ({exc})" if exc else "connection closed"
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_closed(self.close_reason)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- sending ----------------------------------------------------------------------------

    def send_pdu(self, pdu: PDU) -> None:
        """Hand a primitive to the state machine and put its bytes on the wire."""
        self.upper_layer.send(pdu, now=self.loop.time())
        self.flush()

    def send_message(
        self, context_id: int, command: DimseMessage, dataset: bytes | None = None
    ) -> None:
        """Send one DIMSE message, fragmented under the peer's Maximum Length (PS3.7 6.3.1)."""
        pdus = fragment_message(
            context_id, encode_command(command), dataset, self.peer_maximum_length
        )
        self.upper_layer.send_pdata_bytes(pdus)
        self.flush()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._writable.wait()

    def flush(self) -> None:
        data = self.upper_layer.data_to_send()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if data:
            transport.write(data)
        if self.upper_layer.should_close:
            transport.close()
        self._arm_timer()

    def abort(self, reason: str, abort_reason: int = AbortReason.NOT_SPECIFIED) -> None:
        """A-ABORT (service-user source) then close; safe to call in any state."""
        self.close_reason = self.close_reason or reason
        with contextlib.suppress(LocalProtocolError):
            self.upper_layer.send(
                Abort(AbortSource.SERVICE_USER, abort_reason), now=self.loop.time()
            )
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def provider_abort(self, error: RemoteProtocolError) -> None:
        """A-ABORT with source service-provider and the error's reason (PS3.8 Table 9-26)."""
        self.close_reason = self.close_reason or f"protocol error: {error}"
        log.warning("aborting association with %s: %s", self.peer_address, error)
        with contextlib.suppress(LocalProtocolError):
            self.upper_layer.send(Abort(error.source, error.reason), now=self.loop.time())
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # --- flow control -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = False
            self.transport.resume_reading()

    # --- the pump ---------------------------------------------------------------------------

    def _pump(self) -> None:
        upper_layer = self.upper_layer
        now = self.loop.time()
        while True:
            event = upper_layer.next_event(now=now)
            if event is NEED_DATA:
                break
            if type(event) is PDataTF:
                if not self._receive_pdata(event):
                    return
            elif isinstance(event, ProviderAbort):
                self.close_reason = self.close_reason or f"aborted: {event.reason}"
                self.flush()
                self.on_aborted(event.reason, by_peer=False)
            elif isinstance(event, ConnectionClosed):
                self.flush()
                if self.transport is not None:
                    self.transport.close()
            else:
                self.on_pdu(event)  # type: ignore[arg-type]
            if self.transport is None or self.transport.is_closing():
                break
        self.flush()

    def _receive_pdata(self, pdata: PDataTF) -> bool:
        """Reassemble the PDVs of one P-DATA-TF; False once the association is aborted."""
        assembler = self.assembler
        for pdv in pdata.items:
            if self._skip_dataset:
                self._skip_dataset = False
                if not pdv.is_command:  # the data set of a refused command set: dropped
                    self._skip_dataset = not pdv.is_last
                    continue
            try:
                message = assembler.add_pdv(pdv)
            except CommandSetError as error:
                # Command Data Set Type unread: a data set may follow, skip it if one does.
                self._skip_dataset = error.has_dataset is None
                self.on_command_error(pdv.context_id, error)
                message = None
            except RemoteProtocolError as error:
                self.provider_abort(error)
                return False
            if message is not None:
                self._deliver(message)
            if self.transport is None or self.transport.is_closing():
                return False
        return True

    def _deliver(self, message: DimseMessageReceived | DatasetStreamStarted | DatasetChunk) -> None:
        if isinstance(message, DimseMessageReceived):
            self.on_message(message.context_id, message.command, message.dataset)
        else:
            self.on_stream(message)

    def _arm_timer(self) -> None:
        deadline = self.upper_layer.get_timer()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.upper_layer.handle_timer(self.loop.time())
        self._pump()
        if self.upper_layer.should_close and self.transport is not None:
            self.close_reason = self.close_reason or "ARTIM timer expired"
            self.transport.close()

    def _check_idle(self) -> None:
        assert self.idle_timeout is not None  # noqa: S101 - only armed when set
        idle = self.loop.time() - self._last_activity
        if idle >= self.idle_timeout and not self.is_busy():
            self.abort(f"network timeout: idle for {idle:.1f} s")
            return
        remaining = (
            max(self.idle_timeout - idle, 0.05) if idle < self.idle_timeout else self.idle_timeout
        )
        self._idle_handle = self.loop.call_later(remaining, self._check_idle)

    # --- hooks for subclasses ---------------------------------------------------------------

    def is_busy(self) -> bool:
        """True while we owe the peer something (then idleness is ours, not theirs)."""
        return False

    def on_pdu(self, pdu: PDU) -> None:
        """A-ASSOCIATE-*, A-RELEASE-* or A-ABORT indication/confirmation."""

    def on_message(self, context_id: int, command: DimseMessage, dataset: bytes | None) -> None:
        """A complete DIMSE message."""

    def on_command_error(self, context_id: int, error: CommandSetError) -> None:
        """A command set that could not be decoded (PS3.7 6.3.1); by default, A-ABORT. An
        acceptor may answer a request whose Message ID was read with `error.status` instead:
        the assembler drops the rest of that message, so the association can go on."""
        self.provider_abort(error)

    def on_stream(self, event: DatasetStreamStarted | DatasetChunk) -> None:
        """A large data set arriving in chunks (only when a stream threshold is set)."""
        self.provider_abort(RemoteProtocolError("streaming not supported on this connection"))

    def on_aborted(self, reason: str, *, by_peer: bool) -> None:
        """The association ended by A-ABORT or A-P-ABORT."""

    def on_closed(self, reason: str) -> None:
        """The TCP connection is gone."""
