# The acceptor's ZeroMQ link keeps reading after it reconnects to a silent broker (closing
# the old socket cancels its pending receive; the read loop must move to the new socket).
from __future__ import annotations

import asyncio

from node.acceptor.bridge import ZmqDispatcher


def test_read_loop_survives_reconnects(tmp_path):
    async def main() -> tuple[int, bool]:
        dispatcher = ZmqDispatcher(
            f"ipc://{tmp_path}/nobody", heartbeat_interval=0.05, heartbeat_liveness=2
        )
        await dispatcher.start()
        try:
            for _ in range(200):  # bounded: about 2 s at most
                if dispatcher.reconnects >= 2:
                    break
                await asyncio.sleep(0.01)
            return dispatcher.reconnects, dispatcher._tasks[0].done()
        finally:
            await dispatcher.close()

    reconnects, read_loop_done = asyncio.run(main())
    assert reconnects >= 2
    assert not read_loop_done


def test_a_sub_operation_of_a_request_no_longer_here_is_answered_as_failed(tmp_path):
    # The worker waits for a status; a request that ended here must still get one (0xA702).
    import zmq
    import zmq.asyncio

    from broker import wire

    async def main() -> wire.Envelope:
        context = zmq.asyncio.Context()
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(f"ipc://{tmp_path}/broker")
        dispatcher = ZmqDispatcher(f"ipc://{tmp_path}/broker", heartbeat_interval=0.05)
        await dispatcher.start()
        try:
            identity = (await asyncio.wait_for(router.recv_multipart(), 5))[0]  # a heartbeat
            envelope = wire.pack_envelope(
                wire.SUBOPERATION,
                acceptor=dispatcher.acceptor_id,
                assoc_id=9,
                msg_id=3,
                sub_id=77,
                sop_class="1.2.840.10008.5.1.4.1.1.2",
                sop_instance="1.2.3",
                ts_uid="1.2.840.10008.1.2.1",
                worker="worker-1",
            )
            await router.send_multipart([identity, b"", envelope, b"", b"data set"])
            for _ in range(100):
                frames = await asyncio.wait_for(router.recv_multipart(), 5)
                answer = wire.unpack_envelope(frames[2])
                if answer["kind"] == wire.SUBOPERATION_STATUS:
                    return answer
            raise AssertionError("no sub-operation status came back")
        finally:
            await dispatcher.close()
            router.close(0)
            context.term()

    answer = asyncio.run(main())
    assert (answer["sub_id"], answer["status"], answer["worker"]) == (77, 0xA702, "worker-1")
