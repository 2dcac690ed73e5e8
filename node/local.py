# In-process dispatcher: service handlers run in a thread pool of the acceptor process.
#
# Rules: the event loop never runs a user callback; handlers run on pool threads and talk back
# through thread-safe loop calls. Used by `AE.start(workers=0)` and by the SCU side of an
# association (C-STORE sub-operations of C-GET arrive on the requestor's association).
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from node.dimse.messages import Request
from node.dispatch import QueuingChannel
from workers.service import handle_request
from workers.store.spool import Spool

if TYPE_CHECKING:
    import concurrent.futures

    from node.dimse.commands import DimseMessage
    from node.dispatch import ReplySink, ServiceRequest
    from workers.handlers.common import Handlers

log = logging.getLogger("dicomnode.local")


class _ThreadChannel(QueuingChannel):
    """The worker-side Channel for a request handled on a pool thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        request: ServiceRequest,
        sink: ReplySink,
        suboperation_timeout: float | None,
    ) -> None:
        super().__init__()
        self.loop = loop
        self.request = request
        self.sink = sink
        self.suboperation_timeout = suboperation_timeout

    def respond(self, response: DimseMessage, dataset: bytes | None, final: bool) -> None:
        self.loop.call_soon_threadsafe(
            self.sink.send_response, self.request, response, dataset, final
        )

    def store_nowait(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, dataset: bytes
    ) -> _LoopSubOperation:
        timeout = self.suboperation_timeout
        # not sent once whoever waits for it gave up (loop.time() is time.monotonic())
        deadline = self.loop.time() + timeout if timeout is not None else None

        async def send() -> int:
            return await self.sink.store_suboperation(
                self.request, sop_class_uid, sop_instance_uid, transfer_syntax, dataset, deadline
            )

        future = asyncio.run_coroutine_threadsafe(send(), self.loop)
        return _LoopSubOperation(future, deadline, sop_instance_uid)

    def event_report(
        self, sop_class_uid: str, sop_instance_uid: str, event_type: int, dataset: bytes | None
    ) -> int | None:
        sender = getattr(self.sink, "send_event_report", None)
        if sender is None:
            return None
        request = self.request
        future = asyncio.run_coroutine_threadsafe(
            sender(request.context_id, sop_class_uid, sop_instance_uid, event_type, dataset),
            self.loop,
        )
        try:
            result: int | None = future.result(self.suboperation_timeout)
        except Exception:  # noqa: BLE001 - not delivered: the caller falls back
            future.cancel()
            return None
        return result


class _LoopSubOperation:
    """A C-GET sub-operation running on the event loop (node.dispatch.SubOperation)."""

    def __init__(
        self, future: concurrent.futures.Future[int], deadline: float | None, sop_instance: str
    ) -> None:
        self.future = future
        self.deadline = deadline  # time.monotonic() time
        self.sop_instance = sop_instance

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> int:
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        try:
            return self.future.result(timeout)
        except Exception as error:  # noqa: BLE001 - any failure is a failed sub-operation
            log.warning("C-STORE sub-operation for %s failed: %s", self.sop_instance, error)
            self.future.cancel()
            return 0xA702


class _LocalStream:
    """A streamed data set spooled to a Part 10 file, then handled like any request."""

    def __init__(self, dispatcher: ThreadDispatcher, request: ServiceRequest, sink: ReplySink):
        store = dispatcher.handlers.file_store
        command = request.command
        self.dispatcher = dispatcher
        self.request = request
        self.sink = sink
        self.spool = Spool(
            store.spool_directory if store is not None else None,
            (command.sop_class_uid if isinstance(command, Request) else "")
            or request.abstract_syntax,
            (command.sop_instance_uid if isinstance(command, Request) else None) or "1",
            request.transfer_syntax,
            request.association.calling_ae_title,
        )

    def write(self, data: bytes, last: bool) -> bool:
        self.spool.write(data)
        if last:
            path = self.spool.close()
            request = dataclasses.replace(
                self.request, dataset_path=str(path), dataset_offset=len(self.spool.header)
            )
            self.dispatcher.submit(request, self.sink)
        return False

    def discard(self) -> None:
        """The request was refused mid-stream: drop the spool."""
        self.spool.discard()


class ThreadDispatcher:
    """Dispatcher that runs `workers.service.handle_request` on a thread pool."""

    def __init__(
        self, handlers: Handlers, threads: int = 8, suboperation_timeout: float | None = 60.0
    ) -> None:
        self.handlers = handlers
        self.threads = threads
        self.suboperation_timeout = suboperation_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._channels: dict[tuple[int, int], _ThreadChannel] = {}

    async def start(self) -> None:
        self._start_here()

    def _start_here(self) -> None:
        """Bind to the running loop and create the pool (idempotent; loop thread only)."""
        if self._executor is None:
            self._loop = asyncio.get_running_loop()
            self._executor = ThreadPoolExecutor(
                self.threads, thread_name_prefix="dicomnode-handler"
            )

    def submit(self, request: ServiceRequest, sink: ReplySink) -> None:
        self._start_here()
        if self._loop is None or self._executor is None:
            raise RuntimeError("ThreadDispatcher has no event loop")
        channel = _ThreadChannel(self._loop, request, sink, self.suboperation_timeout)
        key = (request.association.assoc_id, request.message_id)
        self._channels[key] = channel
        self._executor.submit(self._run, key, request, channel)

    def open_stream(self, request: ServiceRequest, sink: ReplySink) -> _LocalStream:
        """Spool a large data set to disk as it arrives; handle it once complete."""
        return _LocalStream(self, request, sink)

    def _run(self, key: tuple[int, int], request: ServiceRequest, channel: _ThreadChannel) -> None:
        try:
            handle_request(request, channel, self.handlers)
        except Exception:
            log.exception("handler crashed for message %s", request.message_id)
        finally:
            if self._channels.get(key) is channel:  # not a newer request reusing the ID
                del self._channels[key]

    def cancel(self, assoc_id: int, message_id: int) -> None:
        channel = self._channels.get((assoc_id, message_id))
        if channel is not None:
            channel.cancelled.set()

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            channel.cancelled.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
