# Protocol-core codec benchmark (issue 3): ours against pynetdicom on the same bytes.
#
# The input, built once with our encoder: a C-STORE-RQ whose data set is a real (implicit VR
# little endian) 0.5 MiB secondary-capture image, fragmented into P-DATA-TF PDUs of at most
# 16384 bytes (the peer's Maximum Length), as one byte stream. One operation: decode and
# reassemble the stream into the request, then encode the C-STORE-RSP into P-DATA-TF bytes.
#   ours:       node.ul.association.UpperLayer (acceptor, Sta6) framing and decoding each PDU,
#               node.dimse.fragment.MessageAssembler, encode_command + fragment_message,
#               UpperLayer.send_pdata_bytes + data_to_send;
#   pynetdicom: the same path through its own classes (tests/benchmarks/pynetdicom_codec.py),
#               run in tests/benchmarks/.venv-peers as a subprocess on the same bytes.
# Both sides time with tests/benchmarks/timing.py. Before timing, each side decodes the stream
# and the other side's response, and the results are compared.
#
# Run: .venv/bin/python -m tests.benchmarks.codec [--quick]
# Writes tests/benchmarks/results/codec.md.
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from node.dimse.commands import encode_command
from node.dimse.fragment import DimseMessageReceived, MessageAssembler, fragment_message
from node.dimse.messages import CStoreRQ, CStoreRSP, Priority
from node.ul.association import NEED_DATA, Role, UpperLayer
from node.ul.items import (
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    UserInformationItem,
)
from node.ul.pdu import AssociateAC, AssociateRQ, PDataTF
from tests.benchmarks.peers import BENCHMARKS, ROOT, ensure_peer_venv
from tests.benchmarks.timing import Timing, measure

CONTEXT_ID: Final = 1
#: Maximum Length (PS3.8 D.1) both sides announce: every P-DATA-TF is at most 16384 + 6 bytes.
MAXIMUM_LENGTH: Final = 16384
SECONDARY_CAPTURE: Final = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_LITTLE: Final = "1.2.840.10008.1.2"
INSTANCE_UID: Final = "2.25.211625343287140359917343208470339745437"
STUDY_UID: Final = "2.25.129355412359093719216651937870624217385"
SERIES_UID: Final = "2.25.309171893506542411082908815838101893512"
ROWS, COLUMNS = 512, 1024  # 8-bit pixels: 512 KiB of pixel data
MESSAGE_ID: Final = 7
RESULTS: Final = BENCHMARKS / "results" / "codec.md"
TARGET_RATIO: Final = 5.0


# --------------------------------------------------------------------------- the input


def _element(group: int, element: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, element, len(value)) + value


def build_dataset() -> bytes:
    """A secondary-capture image in implicit VR little endian, pixels from a fixed seed."""
    pixels = random.Random(3).randbytes(ROWS * COLUMNS)

    def text(value: str) -> bytes:
        raw = value.encode("ascii")
        return raw + b" " if len(raw) % 2 else raw

    def us(value: int) -> bytes:
        return struct.pack("<H", value)

    return b"".join(
        (
            _element(0x0008, 0x0016, SECONDARY_CAPTURE.encode()),
            _element(0x0008, 0x0018, INSTANCE_UID.encode()),
            _element(0x0008, 0x0060, text("OT")),
            _element(0x0010, 0x0010, text("BENCH^CODEC")),
            _element(0x0010, 0x0020, text("BENCH-1")),
            _element(0x0020, 0x000D, STUDY_UID.encode()),
            _element(0x0020, 0x000E, SERIES_UID.encode()),
            _element(0x0028, 0x0002, us(1)),
            _element(0x0028, 0x0004, text("MONOCHROME2")),
            _element(0x0028, 0x0010, us(ROWS)),
            _element(0x0028, 0x0011, us(COLUMNS)),
            _element(0x0028, 0x0100, us(8)),
            _element(0x0028, 0x0101, us(8)),
            _element(0x0028, 0x0102, us(7)),
            _element(0x0028, 0x0103, us(0)),
            _element(0x7FE0, 0x0010, pixels),
        )
    )


REQUEST: Final = CStoreRQ(
    message_id=MESSAGE_ID,
    affected_sop_class_uid=SECONDARY_CAPTURE,
    affected_sop_instance_uid=INSTANCE_UID,
    priority=Priority.MEDIUM,
)


def build_stream(dataset: bytes) -> bytes:
    """The C-STORE-RQ with `dataset` as one stream of P-DATA-TF PDUs, by our encoder."""
    pdus = fragment_message(CONTEXT_ID, encode_command(REQUEST), dataset, MAXIMUM_LENGTH)
    return b"".join(pdus)


# --------------------------------------------------------------------------- ours


class OurAcceptor:
    """Our acceptor's protocol core on one association, brought to Sta6 once."""

    def __init__(self) -> None:
        user = UserInformationItem((MaximumLengthSubItem(MAXIMUM_LENGTH),))
        request = AssociateRQ(
            "BENCH-SCP",
            "BENCH-SCU",
            (PresentationContextItemRQ(CONTEXT_ID, SECONDARY_CAPTURE, (IMPLICIT_LITTLE,)),),
            user,
        )
        upper = UpperLayer(Role.ACCEPTOR, maximum_pdata_length=MAXIMUM_LENGTH)
        upper.connection_made(0.0)
        upper.receive_data(request.encode())
        if upper.next_event() != request:
            raise RuntimeError("the A-ASSOCIATE-RQ did not come through")
        upper.send(
            AssociateAC(
                "BENCH-SCP",
                "BENCH-SCU",
                (PresentationContextItemAC(CONTEXT_ID, 0, IMPLICIT_LITTLE),),
                user,
            )
        )
        upper.data_to_send()
        if not upper.is_established:
            raise RuntimeError("the association is not established")
        self.upper = upper
        self.assembler = MessageAssembler()

    def decode(self, stream: bytes) -> DimseMessageReceived:
        """Frame, decode and reassemble `stream`; the message it completes."""
        upper = self.upper
        add = self.assembler.add
        upper.receive_data(stream)
        received = None
        while (event := upper.next_event()) is not NEED_DATA:
            if not isinstance(event, PDataTF):
                raise RuntimeError(f"unexpected event {event!r}")
            for message in add(event):
                if not isinstance(message, DimseMessageReceived):
                    raise RuntimeError(f"unexpected assembler event {message!r}")
                received = message
        if received is None:
            raise RuntimeError("the stream ended before the message was complete")
        return received

    def encode_response(self, received: DimseMessageReceived) -> bytes:
        """The C-STORE-RSP (status Success) to `received`, as P-DATA-TF bytes to send."""
        request = received.command
        if not isinstance(request, CStoreRQ):
            raise RuntimeError(f"not a C-STORE-RQ: {request!r}")
        response = CStoreRSP(
            message_id_being_responded_to=request.message_id,
            status=0x0000,
            affected_sop_class_uid=request.affected_sop_class_uid,
            affected_sop_instance_uid=request.affected_sop_instance_uid,
        )
        self.upper.send_pdata_bytes(
            fragment_message(received.context_id, encode_command(response), None, MAXIMUM_LENGTH)
        )
        return self.upper.data_to_send()

    def full(self, stream: bytes) -> bytes:
        """One operation: decode `stream` and encode the answer."""
        return self.encode_response(self.decode(stream))


# --------------------------------------------------------------------------- checks


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"verification failed: {what}")


def verify_ours(stream: bytes, dataset: bytes, response: bytes) -> None:
    """Our decoder gives back the request we encoded, and our response decodes to a C-STORE-RSP."""
    received = OurAcceptor().decode(stream)
    _check(received.command == REQUEST, f"ours decoded {received.command!r}")
    _check(received.dataset == dataset, "ours decoded another data set")
    _check(received.context_id == CONTEXT_ID, "ours decoded another context")
    answer = OurAcceptor().decode(response).command
    _check(
        answer
        == CStoreRSP(
            message_id_being_responded_to=MESSAGE_ID,
            status=0,
            affected_sop_class_uid=SECONDARY_CAPTURE,
            affected_sop_instance_uid=INSTANCE_UID,
        ),
        f"our response decodes to {answer!r}",
    )


def verify_peer(report: dict[str, Any], dataset: bytes, peer_response: bytes) -> None:
    """pynetdicom decoded our stream and our response as we meant them, and its response
    decodes with ours to the same C-STORE-RSP."""
    request = report["request"]
    expected = {
        "context_id": CONTEXT_ID,
        "message_id": MESSAGE_ID,
        "affected_sop_class_uid": SECONDARY_CAPTURE,
        "affected_sop_instance_uid": INSTANCE_UID,
        "priority": int(Priority.MEDIUM),
        "dataset_length": len(dataset),
        "dataset_sha256": hashlib.sha256(dataset).hexdigest(),
    }
    for key, value in expected.items():
        _check(request[key] == value, f"pynetdicom decoded {key}={request[key]!r}, not {value!r}")
    response = report["our_response"]
    for key, value in (
        ("message_id_being_responded_to", MESSAGE_ID),
        ("status", 0),
        ("affected_sop_class_uid", SECONDARY_CAPTURE),
        ("affected_sop_instance_uid", INSTANCE_UID),
        ("dataset_length", None),
    ):
        _check(response[key] == value, f"pynetdicom read our response {key}={response[key]!r}")
    theirs = OurAcceptor().decode(peer_response).command
    _check(
        theirs
        == CStoreRSP(
            message_id_being_responded_to=MESSAGE_ID,
            status=0,
            affected_sop_class_uid=SECONDARY_CAPTURE,
            affected_sop_instance_uid=INSTANCE_UID,
        ),
        f"pynetdicom's response decodes to {theirs!r}",
    )


# --------------------------------------------------------------------------- running


def machine_info() -> dict[str, str]:
    """CPU model, cores, Python version and date, for the results."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_peer(
    stream: bytes, our_response: bytes, *, min_time: float, repeat: int
) -> tuple[dict[str, Any], bytes]:
    """Run the pynetdicom half in the peer venv; its JSON report and its response bytes."""
    python = ensure_peer_venv()
    with tempfile.TemporaryDirectory(prefix="codec-bench-") as folder:
        stream_path = Path(folder) / "stream.bin"
        ours_path = Path(folder) / "our-response.bin"
        theirs_path = Path(folder) / "peer-response.bin"
        stream_path.write_bytes(stream)
        ours_path.write_bytes(our_response)
        done = subprocess.run(
            [
                python,
                "-m",
                "tests.benchmarks.pynetdicom_codec",
                f"--stream={stream_path}",
                f"--our-response={ours_path}",
                f"--write-response={theirs_path}",
                f"--context-id={CONTEXT_ID}",
                f"--maximum-length={MAXIMUM_LENGTH}",
                f"--min-time={min_time}",
                f"--repeat={repeat}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the pynetdicom side failed:\n{done.stderr}")
        return json.loads(done.stdout), theirs_path.read_bytes()


@dataclass(frozen=True, slots=True)
class Row:
    """One measured operation on both sides."""

    name: str
    ours: Timing
    theirs: Timing

    @property
    def ratio(self) -> float:
        return self.theirs.best / self.ours.best


def _rate(timing: Timing) -> str:
    return f"{1 / timing.best:,.0f}"


def render(
    rows: list[Row], stream_size: int, pdu_count: int, info: dict[str, str], quick: bool
) -> str:
    """The results as markdown."""
    full = rows[0]
    mb = stream_size / 1e6
    lines = [
        "## Codec benchmark (issue 3)",
        "",
        f"Decode + reassemble a C-STORE-RQ ({stream_size:,} bytes: {pdu_count} P-DATA-TF PDUs,"
        f" Maximum Length {MAXIMUM_LENGTH}, 0.5 MiB data set) and encode the C-STORE-RSP, on the"
        " same bytes. ops/s from the fastest of the runs (median in brackets); MB/s counts the"
        " request stream (10^6 bytes).",
        "",
        "| operation | ours ops/s | pynetdicom ops/s | ours / pynetdicom |",
        "|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {row.name} | {_rate(row.ours)} ({1 / row.ours.median:,.0f}) "
        f"| {_rate(row.theirs)} ({1 / row.theirs.median:,.0f}) | {row.ratio:.1f}x |"
        for row in rows
    )
    lines += [
        f"| full op, MB/s | {mb / full.ours.best:,.0f} | {mb / full.theirs.best:,.0f} | |",
        "",
        f"Target: at least {TARGET_RATIO:.0f}x pynetdicom on the full operation: "
        f"{'met' if full.ratio >= TARGET_RATIO else 'NOT met'} ({full.ratio:.1f}x).",
        "",
        "Machine: " + "; ".join(f"{key} {value}" for key, value in info.items()) + ".",
        "",
        "Run: `.venv/bin/python -m tests.benchmarks.codec"
        + (" --quick" if quick else "")
        + "` (pynetdicom runs in tests/benchmarks/.venv-peers on the same interpreter).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.codec",
        description="Codec benchmark: ours against pynetdicom on one 0.5 MB C-STORE.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    min_time, repeat = (0.05, 3) if args.quick else (0.4, 7)

    dataset = build_dataset()
    stream = build_stream(dataset)
    pdu_count = len(fragment_message(CONTEXT_ID, encode_command(REQUEST), dataset, MAXIMUM_LENGTH))
    ours = OurAcceptor()
    response = ours.full(stream)
    verify_ours(stream, dataset, response)
    print(
        f"input: {len(stream):,} bytes, {pdu_count} P-DATA-TF PDUs "
        f"(data set {len(dataset):,} bytes); response {len(response)} bytes"
    )

    received = ours.decode(stream)
    ours.encode_response(received)
    our_timings = {
        "full": measure(lambda: ours.full(stream), min_time=min_time, repeat=repeat),
        "decode": measure(lambda: ours.decode(stream), min_time=min_time, repeat=repeat),
        "encode": measure(lambda: ours.encode_response(received), min_time=min_time, repeat=repeat),
    }
    report, peer_response = run_peer(stream, response, min_time=min_time, repeat=repeat)
    verify_peer(report, dataset, peer_response)
    print(
        "verified: both decode the stream to the same C-STORE-RQ and read each other's "
        f"C-STORE-RSP (responses byte-identical: {peer_response == response})"
    )
    names = {
        "full": "full op (decode + reassemble + encode response)",
        "decode": "decode + reassemble only",
        "encode": "encode response only",
    }
    rows = [
        Row(names[key], our_timings[key], Timing.from_dict(report["timings"][key]))
        for key in ("full", "decode", "encode")
    ]
    info = machine_info()
    versions = report["versions"]
    info["peer"] = f"pynetdicom {versions['pynetdicom']}, pydicom {versions['pydicom']}"
    if versions["python"] != platform.python_version():
        info["peer"] += f" on Python {versions['python']} (not the same Python: remove the venv)"
    text = render(rows, len(stream), pdu_count, info, args.quick)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
