# The acceptor with the broker's routing embedded (issue 15, direction 1: broker.embedded):
# `ZmqDispatcher(workers_endpoint=...)` binds the workers' socket and routes each request to
# a worker with credit itself; the workers (fake DEALERs here, speaking the worker's side of
# broker/wire.py) cannot tell it from a broker. Credits, queueing, replies, a dead worker's
# retry and cancel are BrokerState's rules, so they are checked end to end, not again in full.
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import pytest
import zmq
import zmq.asyncio
from pydicom.uid import ExplicitVRLittleEndian

from broker import wire
from node.acceptor.bridge import ZmqDispatcher
from node.dimse.commands import decode_command, encode_command
from node.dimse.messages import CStoreRQ, CStoreRSP
from node.dispatch import ServiceRequest
from tests.node.bridge_fakes import CT, Sink, as_sink, association

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


INTERVAL = 0.05
ASSOCIATION = association(3)


def _store(message_id: int) -> ServiceRequest:
    command = CStoreRQ(
        message_id=message_id,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid=f"1.2.3.{message_id}",
    )
    return ServiceRequest(
        ASSOCIATION, 1, CT, ExplicitVRLittleEndian, command, bytes([message_id]) * 1000
    )


class FakeWorker:
    """A DEALER that announces credits and heartbeats, keeping every request it receives."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, name: bytes) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, name)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.received: list[tuple[wire.Envelope, list[bytes]]] = []
        self.beating = True
        self.task = asyncio.create_task(self._run())

    async def ready(self, credits: int) -> None:
        await self.socket.send_multipart([b"", wire.pack_envelope(wire.READY, credits=credits)])

    async def reply(self, envelope: wire.Envelope) -> None:
        response = CStoreRSP(
            message_id_being_responded_to=envelope["msg_id"],
            affected_sop_class_uid=CT,
            affected_sop_instance_uid=f"1.2.3.{envelope['msg_id']}",
            status=0,
        )
        header = wire.pack_envelope(
            wire.REPLY,
            acceptor=envelope["acceptor"],
            assoc_id=envelope["assoc_id"],
            msg_id=envelope["msg_id"],
            final=True,
            status=0,
        )
        await self.socket.send_multipart([b"", header, encode_command(response), b""])

    def requests(self) -> list[wire.Envelope]:
        return [envelope for envelope, _ in self.received if envelope["kind"] == wire.REQUEST]

    async def _run(self) -> None:
        last = 0.0
        while True:
            if await self.socket.poll(int(INTERVAL * 500)):
                frames = await self.socket.recv_multipart()
                envelope = wire.unpack_envelope(frames[1])
                if envelope["kind"] != wire.HEARTBEAT:
                    self.received.append((envelope, frames[2:]))
            if self.beating and time.monotonic() - last > INTERVAL / 2:
                last = time.monotonic()
                await self.socket.send_multipart([b"", wire.pack_envelope(wire.HEARTBEAT)])

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.socket.close(0)


async def until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def embedded(tmp_path: Path) -> AsyncIterator[tuple[ZmqDispatcher, zmq.asyncio.Context]]:
    dispatcher = ZmqDispatcher(
        workers_endpoint=f"ipc://{tmp_path}/workers", heartbeat_interval=INTERVAL
    )
    await dispatcher.start()
    context = zmq.asyncio.Context()
    try:
        yield dispatcher, context
    finally:
        await dispatcher.close()
        context.term()


def test_requests_go_straight_to_workers_with_credit_and_wait_for_one(tmp_path: Path):
    sink = Sink()

    async def main() -> None:
        async with embedded(tmp_path) as (dispatcher, context):
            endpoint = f"ipc://{tmp_path}/workers"
            first, second = (
                FakeWorker(context, endpoint, b"w-1"),
                FakeWorker(context, endpoint, b"w-2"),
            )
            await first.ready(1)
            await second.ready(1)
            await until(lambda: dispatcher.live_workers == 2, "the routing to count two workers")
            assert dispatcher.readiness() == (True, "ready: 2 worker(s)")
            for message_id in (1, 2, 3):
                dispatcher.submit(_store(message_id), as_sink(sink))
            await until(
                lambda: len(first.requests()) + len(second.requests()) == 2, "two requests out"
            )
            assert dispatcher.embedded is not None
            assert dispatcher.embedded.state.stats()["queue"] == 1  # no credit left for it
            (taken,) = first.requests()
            (_envelope, parts) = next(item for item in first.received if item[0] is taken)
            assert decode_command(parts[0]) == _store(taken["msg_id"]).command
            assert parts[1] == _store(taken["msg_id"]).dataset  # the bytes, straight over
            await first.reply(taken)  # its credit comes back: the queued request goes there
            await until(lambda: len(first.requests()) == 2, "the queued request on w-1")
            assert first.requests()[1]["msg_id"] == 3
            await first.reply(first.requests()[1])
            await second.reply(second.requests()[0])
            await until(lambda: len(sink.responses) == 3, "three responses")
            assert not dispatcher.pending
            await first.close()
            await second.close()

    asyncio.run(main())
    assert sorted(message_id for message_id, _, _ in sink.responses) == [1, 2, 3]
    assert all(final and response.status == 0 for _, response, final in sink.responses)


def test_a_silent_workers_store_is_retried_on_another_and_cancel_reaches_the_worker(
    tmp_path: Path,
):
    sink = Sink()

    async def main() -> None:
        async with embedded(tmp_path) as (dispatcher, context):
            endpoint = f"ipc://{tmp_path}/workers"
            doomed = FakeWorker(context, endpoint, b"w-doomed")
            await doomed.ready(1)
            await until(lambda: dispatcher.live_workers == 1, "the first worker")
            dispatcher.submit(_store(1), as_sink(sink))
            await until(lambda: len(doomed.requests()) == 1, "the request on the first worker")
            doomed.beating = False  # it hangs: heartbeat liveness buries it
            spare = FakeWorker(context, endpoint, b"w-spare")
            await spare.ready(1)
            await until(lambda: len(spare.requests()) == 1, "the retry on the other worker")
            assert spare.requests()[0]["retry"] == 1
            dispatcher.cancel(3, 1)
            await until(
                lambda: any(e["kind"] == wire.CANCEL for e, _ in spare.received), "the cancel"
            )
            await spare.reply(spare.requests()[0])
            await until(lambda: len(sink.responses) == 1, "the response")
            await doomed.close()
            await spare.close()

    asyncio.run(main())
    assert sink.responses[0][0] == 1


def test_a_broker_or_a_workers_endpoint_and_no_curve_without_a_broker():
    with pytest.raises(ValueError, match="not both"):
        ZmqDispatcher()
    with pytest.raises(ValueError, match="not both"):
        ZmqDispatcher("ipc:///tmp/a", workers_endpoint="ipc:///tmp/b")
    keys = {"public": b"p", "secret": b"s", "server": b"k"}
    with pytest.raises(ValueError, match="CURVE needs a broker"):
        ZmqDispatcher(workers_endpoint="ipc:///tmp/b", curve=keys)


def test_the_acceptor_command_refuses_what_the_embedded_routing_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from node.acceptor.main import main

    endpoint = f"ipc://{tmp_path}/workers"
    assert main(["--workers-endpoint", endpoint, "--processes", "2"]) == 2
    assert "run a broker for --processes N" in capsys.readouterr().err
    assert main(["--workers-endpoint", "not-an-endpoint", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("dicomnode acceptor: cannot use not-an-endpoint")
    assert "Traceback" not in error
    with pytest.raises(SystemExit):  # argparse: one or the other
        main(["--workers-endpoint", endpoint, "--broker", endpoint])
    assert "not allowed with argument" in capsys.readouterr().err
