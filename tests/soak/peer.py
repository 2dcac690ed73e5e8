# A raw asyncio DICOM peer for the soak test: A-ASSOCIATE-RQ, C-ECHO-RQ and A-RELEASE-RQ as
# bytes made by our own codec, the server's answers decoded and checked.
#
# Rules: no DICOM library beyond node.ul/node.dimse; every read is bounded by the caller's
# asyncio timeout; a wrong answer raises AssertionError naming what came instead.
from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import Final

from node.dimse.commands import CEchoRQ, CEchoRSP, encode_command
from node.dimse.fragment import DimseMessageReceived, MessageAssembler, fragment_message
from node.ul.items import MaximumLengthSubItem, PresentationContextItemRQ, UserInformationItem
from node.ul.pdu import AssociateAC, AssociateRQ, PDataTF, ReleaseRP, ReleaseRQ, decode_pdu

VERIFICATION: Final = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
_LENGTH: Final = struct.Struct(">I")

ASSOCIATE_RQ: Final = AssociateRQ(
    "DICOMNODE",
    "SOAK",
    (PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
    UserInformationItem((MaximumLengthSubItem(16382),)),
).encode()
RELEASE_RQ: Final = ReleaseRQ().encode()


def echo_rq(message_id: int) -> bytes:
    """The P-DATA-TF bytes of a C-ECHO-RQ on presentation context 1 (PS3.7 9.3.5.1)."""
    command = encode_command(CEchoRQ(message_id=message_id))
    return b"".join(fragment_message(1, command, None, 16382))


async def read_pdu(reader: asyncio.StreamReader) -> object:
    header = await reader.readexactly(6)
    body = await reader.readexactly(_LENGTH.unpack_from(header, 2)[0])
    return decode_pdu(header + body)


@dataclass
class RawAssociation:
    """One association from a raw socket: open with `associate`, then echo/release."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    message_id: int = 0

    @classmethod
    async def associate(cls, port: int, host: str = "127.0.0.1") -> RawAssociation:
        reader, writer = await asyncio.open_connection(host, port)
        association = cls(reader, writer)
        try:
            writer.write(ASSOCIATE_RQ)
            answer = await read_pdu(reader)
            if not isinstance(answer, AssociateAC):
                raise AssertionError(f"A-ASSOCIATE-RQ answered with {answer!r}")
            if answer.presentation_contexts[0].result != 0:
                raise AssertionError(f"Verification context not accepted: {answer!r}")
        except BaseException:
            await association.close()
            raise
        return association

    async def echo(self) -> None:
        """C-ECHO-RQ; the answer must be a C-ECHO-RSP with status Success (0000H)."""
        self.message_id += 1
        self.writer.write(echo_rq(self.message_id))
        assembler = MessageAssembler()
        while True:
            pdu = await read_pdu(self.reader)
            if not isinstance(pdu, PDataTF):
                raise AssertionError(f"C-ECHO-RQ answered with {pdu!r}")
            for event in assembler.add(pdu):
                if isinstance(event, DimseMessageReceived):
                    response = event.command
                    if not isinstance(response, CEchoRSP) or response.status != 0:
                        raise AssertionError(f"C-ECHO-RQ answered with {response!r}")
                    return

    async def release(self) -> None:
        """A-RELEASE-RQ, wait for the A-RELEASE-RP, then close (PS3.8 7.2)."""
        self.writer.write(RELEASE_RQ)
        answer = await read_pdu(self.reader)
        if not isinstance(answer, ReleaseRP):
            raise AssertionError(f"A-RELEASE-RQ answered with {answer!r}")
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
