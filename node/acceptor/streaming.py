# Streamed data sets on an association as acceptor: a data set above the stream threshold goes
# to the dispatcher in chunks as it arrives (never held whole), reading pausing while the
# dispatcher's window is full; a data set over the size cap is refused with a status and the
# rest of it dropped, the association going on. Part of ServerAssociation.
#
# Rules: at most one data set streams at a time (PDVs of one message are not interleaved with
# another's, PS3.8 9.3.1); a stream cut off (association gone, refused, spool failure) is
# cancelled at the dispatcher and its spool discarded; every refused request is answered once.
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from node.dimse.errors import DatasetTooLargeError
from node.dimse.fragment import DatasetStreamStarted, MessageAssembler
from node.dimse.messages import Request
from node.dimse.status import StorageStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.acceptor.settings import ServerSettings
    from node.acceptor.window import RequestWindow
    from node.dimse.commands import DimseMessage
    from node.dimse.fragment import AssemblerEvent, DatasetChunk
    from node.dispatch import ReplySink, ServiceRequest
    from node.ul.pdu import PresentationDataValueItem

log = logging.getLogger("dicomnode.acceptor")

#: Streamed data sets go to the dispatcher in pieces of about this size.
STREAM_CHUNK = 1 << 20


class RefusingAssembler(MessageAssembler):
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


DROP_STREAM = _DropStream()


def _discard(stream: Any) -> None:
    """Drop what a dispatcher stream spooled, if it spools."""
    discard = getattr(stream, "discard", None)
    if discard is not None:
        discard()


class StreamingRequests:
    """Streamed and over-size data sets (mixed into ServerAssociation, which provides the
    window, the refusals and the Connection methods)."""

    settings: ServerSettings
    assoc_id: int
    contexts: dict[int, tuple[str, str]]
    requests: RequestWindow[ServiceRequest]
    requests_answered: int
    #: The data set being streamed: (request, dispatcher stream, bytes not yet passed on).
    _stream: tuple[ServiceRequest, Any, bytearray] | None

    if TYPE_CHECKING:  # provided by ServerAssociation and its Connection

        def _request(
            self, context_id: int, command: DimseMessage, dataset: bytes | None
        ) -> ServiceRequest | None: ...

        def refuse(
            self, context_id: int, field: int, message_id: int, status: int, comment: str
        ) -> DimseMessage: ...

        def answer_or_abort(
            self,
            context_id: int,
            error: DatasetTooLargeError,
            command_field: int | None,
            message_id: int | None,
        ) -> None: ...

        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

    def on_stream(self, event: DatasetStreamStarted | DatasetChunk) -> None:
        """A data set above the stream threshold: pass it on in chunks of STREAM_CHUNK bytes
        as it arrives; reading pauses while the dispatcher's window is full."""
        if isinstance(event, DatasetStreamStarted):
            request = self._request(event.context_id, event.command, None)
            if request is None:
                return
            self.requests.start(request)
            if self.settings.observer is not None:
                self.settings.observer.request_started(request)
            try:
                sink = cast("ReplySink", self)  # ServerAssociation is the sink
                stream = self.settings.dispatcher.open_stream(request, sink)
            except Exception as error:  # noqa: BLE001 - e.g. a UID that cannot name a spool
                self._refuse_stream(request, error)
                stream = DROP_STREAM
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
                _discard(stream)
                self._refuse_stream(request, error)
                self._stream = (request, DROP_STREAM, pending)
            pending.clear()
        if event.is_last:
            self._stream = None

    def _refuse_stream(self, request: ServiceRequest, error: Exception) -> None:
        """Answer a streamed request that cannot go on; the rest of its data set is dropped."""
        log.warning("association %d: streamed request refused: %s", self.assoc_id, error)
        status = (
            StorageStatus.OUT_OF_RESOURCES
            if isinstance(error, OSError)
            else StorageStatus.CANNOT_UNDERSTAND
        )
        if self.requests.finish(request.message_id) is None:
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
        if not self.requests.queued:
            self.resume_reading()

    def drop_stream(self) -> None:
        """The association ended mid-stream (its requests already cancelled): drop the spool."""
        if self._stream is not None:
            stream = self._stream[1]
            self._stream = None
            _discard(stream)

    def on_dataset_too_large(self, context_id: int, error: DatasetTooLargeError) -> None:
        """A data set over `maximum_dataset_size`: answer the request with the error's status
        (A700H Out of Resources for C-STORE, PS3.4 B.2.3) and go on; the assembler drops the
        rest of the data set. A part already streamed to the dispatcher is abandoned."""
        command = error.command
        message_id = command.message_id if isinstance(command, Request) else 0
        streamed = self._stream
        if streamed is not None and streamed[0].command is command:
            self._stream = None
            self.requests.finish(message_id)
            self.settings.dispatcher.cancel(self.assoc_id, message_id)
            _discard(streamed[1])
            if self.settings.observer is not None:
                self.settings.observer.request_finished(streamed[0], error.status)
            if not self.requests.queued:
                self.resume_reading()
        command_field = command.COMMAND_FIELD if command.is_request else None
        self.answer_or_abort(context_id, error, command_field, message_id)
