# The pynetdicom half of the codec benchmark (tests/benchmarks/codec.py runs it). It runs in
# tests/benchmarks/.venv-peers, where pynetdicom is installed, never in the project's venv,
# and imports nothing from `node`.
#
# One operation is what pynetdicom's own acceptor does for one C-STORE, minus the socket, the
# threads, the queues and the event hooks: per PDU, frame it as DULServiceProvider._read_pdu_data
# does (6-byte header, then the body into a bytearray), decode it as _decode_pdu does
# (bytes(), P_DATA_TF.decode), turn it into a P-DATA primitive (DT-2: to_primitive) and feed
# it to DIMSEMessage.decode_msg (DIMSEServiceProvider.receive_primitive); when the message is
# complete, message_to_primitive gives the C-STORE request. Then the answer as the storage
# SCP and DIMSEServiceProvider.send_msg build it: a C_STORE response primitive,
# C_STORE_RSP.primitive_to_message, encode_msg, and each P-DATA primitive through P_DATA_TF
# and encode (DT-1).
from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
from pynetdicom import _config
from pynetdicom.dimse_messages import C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from tests.benchmarks.timing import measure

_HEADER = struct.Struct(">BBL")


def decode_stream(stream: bytes) -> Any:
    """The C-STORE request primitive pynetdicom gets from `stream` (P-DATA-TF PDUs)."""
    view = memoryview(stream)
    message = DIMSEMessage()
    offset = 0
    size = len(stream)
    while offset < size:
        bytestream = bytearray(view[offset : offset + 6])
        _, _, length = _HEADER.unpack(bytestream)
        end = offset + 6 + length
        bytestream += view[offset + 6 : end]
        offset = end
        pdu = P_DATA_TF()
        pdu.decode(bytes(bytestream))
        if message.decode_msg(pdu.to_primitive()):
            return message.message_to_primitive()
    raise ValueError("the stream ended before the message was complete")


def encode_response(request: Any, context_id: int, maximum_length: int) -> bytes:
    """The C-STORE-RSP (status Success) to `request` as P-DATA-TF bytes."""
    response = C_STORE()
    response.MessageIDBeingRespondedTo = request.MessageID
    response.AffectedSOPClassUID = request.AffectedSOPClassUID
    response.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    response.Status = 0x0000
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    message.context_id = context_id
    return b"".join(
        P_DATA_TF(pdata).encode() for pdata in message.encode_msg(context_id, maximum_length)
    )


def describe(primitive: Any) -> dict[str, Any]:
    """The fields of a decoded C-STORE primitive that the benchmark compares."""
    dataset = primitive.DataSet.getvalue() if primitive.DataSet is not None else None
    return {
        "context_id": primitive._context_id,
        "message_id": primitive.MessageID,
        "message_id_being_responded_to": primitive.MessageIDBeingRespondedTo,
        "affected_sop_class_uid": str(primitive.AffectedSOPClassUID),
        "affected_sop_instance_uid": str(primitive.AffectedSOPInstanceUID),
        "priority": primitive.Priority,
        "status": primitive.Status,
        "dataset_length": None if dataset is None else len(dataset),
        "dataset_sha256": None if dataset is None else hashlib.sha256(dataset).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream", type=Path, required=True)
    parser.add_argument("--our-response", type=Path, required=True)
    parser.add_argument("--write-response", type=Path, required=True)
    parser.add_argument("--context-id", type=int, required=True)
    parser.add_argument("--maximum-length", type=int, required=True)
    parser.add_argument("--min-time", type=float, required=True)
    parser.add_argument("--repeat", type=int, required=True)
    args = parser.parse_args(argv)
    if _config.STORE_RECV_CHUNKED_DATASET:
        raise SystemExit("STORE_RECV_CHUNKED_DATASET is on: the benchmark assumes memory")

    stream = args.stream.read_bytes()
    request = decode_stream(stream)
    response = encode_response(request, args.context_id, args.maximum_length)
    args.write_response.write_bytes(response)
    theirs_of_ours = decode_stream(args.our_response.read_bytes())

    def full() -> bytes:
        return encode_response(decode_stream(stream), args.context_id, args.maximum_length)

    def encode_only() -> bytes:
        return encode_response(request, args.context_id, args.maximum_length)

    def decode_only() -> Any:
        return decode_stream(stream)

    timings = {
        name: measure(call, min_time=args.min_time, repeat=args.repeat).as_dict()
        for name, call in (("full", full), ("decode", decode_only), ("encode", encode_only))
    }
    json.dump(
        {
            "versions": {
                "pynetdicom": pynetdicom.__version__,
                "pydicom": pydicom.__version__,
                "python": sys.version.split()[0],
            },
            "request": describe(request),
            "our_response": describe(theirs_of_ours),
            "timings": timings,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
