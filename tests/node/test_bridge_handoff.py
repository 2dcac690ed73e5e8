# The acceptor's side of the same-host hand-off (issue 15): with a hand-off directory, a
# C-STORE data set of HANDOFF_THRESHOLD bytes or more is written there as a Part 10 spool and
# the request names it (an empty data set frame); smaller ones and other requests go by
# socket. A spool whose request ends at the acceptor (an error from the cluster, a timeout, a
# lost broker) is removed there; one the worker answered is the worker's (adopted or removed).
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.asyncio
from pydicom.uid import ExplicitVRLittleEndian

from broker import wire
from node.acceptor.bridge import HANDOFF_THRESHOLD, ZmqDispatcher
from node.dimse.commands import decode_command, encode_command
from node.dimse.messages import CEchoRQ, CStoreRQ, CStoreRSP
from node.dispatch import ServiceRequest
from node.part10 import HANDOFF_PREFIX
from tests.node.bridge_fakes import CT, Sink, as_sink, association

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


ASSOCIATION = association(7)


def _store(message_id: int, size: int) -> ServiceRequest:
    command = CStoreRQ(
        message_id=message_id,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid=f"1.2.3.{message_id}",
    )
    dataset = bytes(range(256)) * (size // 256)
    return ServiceRequest(ASSOCIATION, 1, CT, ExplicitVRLittleEndian, command, dataset)


@contextlib.asynccontextmanager
async def fake_broker(
    tmp_path: Path, handoff_directory: Path
) -> AsyncIterator[tuple[zmq.asyncio.Socket, ZmqDispatcher]]:
    """A ROUTER standing in for the broker, and a started dispatcher with a hand-off
    directory connected to it; both closed on the way out."""
    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{tmp_path}/broker")
    dispatcher = ZmqDispatcher(
        f"ipc://{tmp_path}/broker", heartbeat_interval=0.05, handoff_directory=handoff_directory
    )
    await dispatcher.start()
    try:
        yield router, dispatcher
    finally:
        await dispatcher.close()
        router.close(0)
        context.term()


def test_large_store_data_sets_go_as_spools_and_the_acceptor_cleans_up_its_own(tmp_path: Path):
    spools = tmp_path / "data" / "spool"
    sink = Sink()

    async def main() -> list[tuple[wire.Envelope, bytes, bytes]]:
        async with fake_broker(tmp_path, spools) as (router, dispatcher):
            received: list[tuple[wire.Envelope, bytes, bytes]] = []
            dispatcher.submit(
                _store(1, HANDOFF_THRESHOLD), as_sink(sink)
            )  # at the threshold: a spool
            dispatcher.submit(_store(2, HANDOFF_THRESHOLD - 256), as_sink(sink))  # below: by socket
            # answered by a worker
            dispatcher.submit(_store(3, 4 * HANDOFF_THRESHOLD), as_sink(sink))
            echo = CEchoRQ(message_id=4, affected_sop_class_uid="1.2.840.10008.1.1")
            dispatcher.submit(
                ServiceRequest(ASSOCIATION, 3, echo.affected_sop_class_uid, "", echo), as_sink(sink)
            )
            identity = b""
            while len(received) < 4:
                frames = await asyncio.wait_for(router.recv_multipart(), 5)
                envelope = wire.unpack_envelope(frames[2])
                if envelope["kind"] == wire.REQUEST:
                    identity = frames[0]
                    received.append((envelope, frames[3], frames[4]))
            by_id = {envelope["msg_id"]: envelope for envelope, _, _ in received}
            # the cluster fails request 1 (e.g. no worker could take it): the acceptor answers
            # and removes its spool; request 3 is answered by a worker: its spool is not ours
            await router.send_multipart(
                [identity, b"", wire.error_envelope(by_id[1], 0xA700, "Busy", "no worker")]
            )
            response = CStoreRSP(
                message_id_being_responded_to=3,
                affected_sop_class_uid=CT,
                affected_sop_instance_uid="1.2.3.3",
                status=0,
            )
            reply = wire.pack_envelope(
                wire.REPLY, acceptor=dispatcher.acceptor_id, assoc_id=7, msg_id=3, final=True
            )
            await router.send_multipart([identity, b"", reply, encode_command(response), b""])
            for _ in range(500):
                if len(sink.responses) == 2:
                    break
                await asyncio.sleep(0.01)
            assert not dispatcher.handoffs
        return received

    received = asyncio.run(main())
    by_id = {envelope["msg_id"]: (envelope, command, data) for envelope, command, data in received}
    first, second, third = by_id[1][0], by_id[2][0], by_id[3][0]
    assert str(first["spool"]).startswith(str(spools / HANDOFF_PREFIX))
    assert by_id[1][2] == by_id[3][2] == b""  # no data set bytes on the socket
    assert "spool" not in second
    assert by_id[2][2] == _store(2, HANDOFF_THRESHOLD - 256).dataset
    assert "spool" not in by_id[4][0]
    echoed = decode_command(by_id[4][1])
    assert isinstance(echoed, CEchoRQ)
    assert echoed.message_id == 4
    kept = spools.joinpath(str(third["spool"]).rsplit("/", 1)[1])
    data = kept.read_bytes()  # the worker's to adopt: a Part 10 file of meta + data set
    assert data[128:132] == b"DICM"
    assert data[int(third["spool_offset"]) :] == _store(3, 4 * HANDOFF_THRESHOLD).dataset
    assert b"MODALITY" in data[: int(third["spool_offset"])]  # Source AE Title
    assert not spools.joinpath(str(first["spool"]).rsplit("/", 1)[1]).exists()
    statuses = {message_id: response.status for message_id, response, _ in sink.responses}
    assert (statuses[1], statuses[3]) == (0xA700, 0)  # 2 and 4 are failed by close()


def test_without_a_usable_directory_data_sets_go_by_socket(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")

    async def main() -> tuple[wire.Envelope, bytes]:
        async with fake_broker(tmp_path, blocker) as (router, dispatcher):
            assert dispatcher.handoff_directory is None
            dispatcher.submit(_store(1, 2 * HANDOFF_THRESHOLD), as_sink(Sink()))
            while True:
                frames = await asyncio.wait_for(router.recv_multipart(), 5)
                envelope = wire.unpack_envelope(frames[2])
                if envelope["kind"] == wire.REQUEST:
                    return envelope, frames[4]

    envelope, data = asyncio.run(main())
    assert "spool" not in envelope
    assert data == _store(1, 2 * HANDOFF_THRESHOLD).dataset


def test_a_streamed_data_set_is_written_into_a_spool_and_its_request_leaves_at_the_end(
    tmp_path: Path,
):
    spools = tmp_path / "spool"
    chunks = [bytes([n]) * (1 << 20) for n in range(3)]

    async def main() -> tuple[list[wire.Envelope], list[Path], list[Path], bytes]:
        async with fake_broker(tmp_path, spools) as (router, dispatcher):
            request = _store(1, 0)
            stream = dispatcher.open_stream(request, as_sink(Sink()))
            for chunk in chunks[:-1]:
                assert stream.write(chunk, False) is False  # written: no need to pause
            while_streaming = sorted(spools.iterdir())
            refused = dispatcher.open_stream(_store(2, 0), as_sink(Sink()))
            refused.write(chunks[0], False)
            refused.discard()  # e.g. the association ended mid-stream: its spool goes
            stream.write(chunks[-1], True)
            stream.discard()  # too late: the request is out, the spool is the worker's
            requests: list[wire.Envelope] = []
            deadline = asyncio.get_running_loop().time() + 5
            while not requests:
                frames = await asyncio.wait_for(router.recv_multipart(), 5)
                envelope = wire.unpack_envelope(frames[2])
                if envelope["kind"] == wire.REQUEST:
                    requests.append(envelope)
                    assert frames[4] == b""
                assert asyncio.get_running_loop().time() < deadline
            after = sorted(spools.iterdir())
            # read before close(): closing fails the unanswered request and removes its spool
            return requests, while_streaming, after, after[0].read_bytes()

    requests, while_streaming, after, data = asyncio.run(main())
    assert len(requests) == 1  # one request, sent after the last chunk; no CHUNK messages
    (envelope,) = requests
    assert envelope["stream"] is False
    assert envelope["msg_id"] == 1
    assert len(while_streaming) == 1  # the spool exists (growing) before the request leaves
    assert after == [Path(str(envelope["spool"]))]
    assert not after[0].exists()  # failed by close(): removed
    assert data[int(envelope["spool_offset"]) :] == b"".join(chunks)
