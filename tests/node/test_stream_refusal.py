# A streamed C-STORE (data set above the stream threshold) that cannot be spooled in-process
# (its SOP Instance UID cannot name a file) is answered with a failure and the association
# goes on (no dropped connection, no A-ABORT).
from __future__ import annotations

import asyncio

from node.dimse.commands import CEchoRQ, CStoreRQ
from tests.synthetic import CT_IMAGE_STORAGE, VERIFICATION


def test_unspoolable_streamed_store_is_refused_and_the_association_goes_on(make_ae):
    scp = make_ae("STREAMSCP")
    scp.add_supported_context(CT_IMAGE_STORAGE)
    scp.add_supported_context(VERIFICATION)
    stored: list[str] = []

    def on_c_store(ds, context, info):
        stored.append(ds.SOPInstanceUID)
        return 0

    scp.on_c_store = on_c_store
    scp.start(block=False)
    scu = make_ae("STREAMSCU")
    scu.add_requested_context(CT_IMAGE_STORAGE)
    scu.add_requested_context(VERIFICATION)

    async def main() -> tuple[list[int], int]:
        association = await scu.associate_async("127.0.0.1", scp.port)
        assert association.is_established
        context = association.find_context(CT_IMAGE_STORAGE)
        command = CStoreRQ(
            message_id=1,
            affected_sop_class_uid=CT_IMAGE_STORAGE,
            affected_sop_instance_uid="1.2.3.4a",  # letters: no file may be named from it
        )
        data = bytes(6 << 20)  # above the 4 MiB stream threshold
        statuses = [
            int(response.status)
            async for response, _ in association.request(context, command, data)
        ]
        echo = [
            int(response.status)
            async for response, _ in association.request(
                association.find_context(VERIFICATION), CEchoRQ(message_id=2), None
            )
        ]
        await association.release()
        return statuses, echo[0]

    statuses, echo = asyncio.run(main())
    assert statuses == [0xC000]
    assert echo == 0x0000
    assert stored == []
