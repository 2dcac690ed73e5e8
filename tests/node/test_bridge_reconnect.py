# The acceptor's ZeroMQ link keeps reading after it reconnects to a silent broker (closing
# the old socket cancels its pending receive; the read loop must move to the new socket).
from __future__ import annotations

import asyncio

from node.bridge import ZmqDispatcher


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
