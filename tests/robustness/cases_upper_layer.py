# Battery cases on the Upper Layer framing (issue 7): truncated PDUs, wrong lengths, reserved
# and misplaced PDU types, other protocols' probes and random bytes (PS3.8 9.3, Table 9-10).
#
# Rules: made from the golden DCMTK PDUs; random cases use fixed seeds.
from __future__ import annotations

import contextlib
import random
import ssl

from tests.robustness.case import ABORTS, CLOSES, ENDS, Case, make_case
from tests.robustness.golden import (
    ABORT,
    APPLICATION_ITEM,
    ASSOCIATE_AC,
    ASSOCIATE_RJ,
    ECHO_COMMAND,
    ECHO_PDATA,
    ECHO_RQ,
    MAXIMUM_PDU,
    RELEASE_RP,
    RELEASE_RQ,
    USER_ITEM,
    VERIFICATION_ITEM,
    body_of,
    frame_pdu,
    pdata,
    pdv,
    rq_with,
)
from tests.robustness.wire import Outcome

# --- truncation -----------------------------------------------------------------------------


def truncation_cases() -> list[Case]:
    """Every prefix of the echoscu A-ASSOCIATE-RQ then EOF (AA-5: just close), every prefix
    of its body under a corrected PDU length (a complete but cut PDU: A-ABORT), and every
    prefix of the C-ECHO P-DATA-TF inside an association, then EOF (AA-4: close)."""
    cases = [
        make_case("truncated-rq", f"{n}", ECHO_RQ[:n], expect=CLOSES, half_close=True)
        for n in range(len(ECHO_RQ))
    ]
    body = body_of(ECHO_RQ)
    cases += [
        make_case("cut-rq-body", f"{n}", frame_pdu(0x01, body[:n]), expect=ABORTS)
        for n in range(len(body))
    ]
    cases += [
        make_case(
            "truncated-pdata",
            f"{n}",
            ECHO_PDATA[:n],
            expect=CLOSES,
            established=True,
            half_close=True,
        )
        for n in range(1, len(ECHO_PDATA))
    ]
    return cases


# --- lengths --------------------------------------------------------------------------------


def length_cases() -> list[Case]:
    body = body_of(ECHO_RQ)
    size = len(body)
    cases = [
        # Refused from the header alone: no body is sent and none is waited for.
        make_case("length", "rq-huge", frame_pdu(0x01, b"", length=0xFFFFFFFF), expect=ABORTS),
        make_case("length", "rq-2GiB", frame_pdu(0x01, body, length=0x80000000), expect=ABORTS),
        make_case(
            "length", "rq-1MiB+1", frame_pdu(0x01, body, length=(1 << 20) + 1), expect=ABORTS
        ),
        # Allowed length, body never comes: buffered up to EOF, then closed.
        make_case(
            "length",
            "rq-1MiB-no-body",
            frame_pdu(0x01, body, length=1 << 20),
            expect=CLOSES,
            half_close=True,
        ),
        make_case("length", "rq-zero", frame_pdu(0x01, b""), expect=ABORTS),
        make_case(
            "length", "rq-zero-then-body", frame_pdu(0x01, b"", length=0) + body, expect=ABORTS
        ),
        make_case("length", "rq-one", frame_pdu(0x01, body, length=1), expect=ABORTS),
        make_case("length", "rq-minus-one", frame_pdu(0x01, body, length=size - 1), expect=ABORTS),
        make_case(
            "length",
            "rq-plus-one-eof",
            frame_pdu(0x01, body, length=size + 1),
            expect=CLOSES,
            half_close=True,
        ),
        make_case(
            "length",
            "rq-plus-one-byte",
            frame_pdu(0x01, body + b"\0", length=size + 1),
            expect=ABORTS,
        ),
        make_case(
            "length", "pdata-first-huge", frame_pdu(0x04, b"", length=0xFFFFFFFF), expect=ABORTS
        ),
        make_case(
            "length", "release-rq-huge", frame_pdu(0x05, b"", length=0xFFFFFFFF), expect=ABORTS
        ),
        make_case("length", "release-rq-zero", frame_pdu(0x05, b""), expect=ABORTS),
        make_case("length", "release-rq-5", frame_pdu(0x05, bytes(5)), expect=ABORTS),
        make_case("length", "abort-zero", frame_pdu(0x07, b""), expect=ABORTS),
        make_case("length", "abort-huge", frame_pdu(0x07, b"", length=0xFFFFFFFF), expect=ABORTS),
    ]
    for name, item_index, length in (
        ("application-item-zero", 0, 0),
        ("application-item-huge", 0, 0xFFFF),
        ("application-item-minus-one", 0, None),
        ("context-item-zero", 1, 0),
        ("context-item-huge", 1, 0xFFFF),
        ("context-item-minus-one", 1, None),
        ("user-item-zero", 2, 0),
        ("user-item-huge", 2, 0xFFFF),
        ("user-item-minus-one", 2, None),
    ):
        items = [APPLICATION_ITEM, VERIFICATION_ITEM, USER_ITEM]
        item = items[item_index]
        true_length = len(item) - 4
        new = true_length - 1 if length is None else length
        items[item_index] = item[:2] + new.to_bytes(2, "big") + item[4:]
        cases.append(make_case("length", name, rq_with(items), expect=ABORTS))
    # PDVs and P-DATA-TF inside an association (PS3.8 9.3.5.1: PDV length >= 2).
    command = ECHO_COMMAND
    for name, payload in (
        ("pdata-no-pdv", frame_pdu(0x04, b"")),
        ("pdv-length-0", frame_pdu(0x04, pdv(1, command, command=True, last=True, length=0))),
        ("pdv-length-1", frame_pdu(0x04, pdv(1, command, command=True, last=True, length=1))),
        (
            "pdv-length-over",
            frame_pdu(0x04, pdv(1, command, command=True, last=True, length=len(command) + 3)),
        ),
        (
            "pdv-length-huge",
            frame_pdu(0x04, pdv(1, command, command=True, last=True, length=0xFFFFFFFF)),
        ),
        (
            "pdv-length-under",
            frame_pdu(0x04, pdv(1, command, command=True, last=True, length=len(command) - 2)),
        ),
        ("pdv-header-cut", frame_pdu(0x04, pdv(1, command, command=True, last=True) + b"\0\0")),
        ("pdata-over-maximum", frame_pdu(0x04, b"", length=MAXIMUM_PDU + 1)),
        ("pdata-huge", frame_pdu(0x04, b"", length=0xFFFFFFFF)),
        (
            "pdata-length-minus-one",
            frame_pdu(0x04, body_of(ECHO_PDATA), length=len(ECHO_PDATA) - 7),
        ),
        ("release-rq-length-0", frame_pdu(0x05, b"")),
        ("release-rq-length-huge", frame_pdu(0x05, b"", length=0xFFFFFFFF)),
    ):
        cases.append(make_case("length", name, payload, expect=ABORTS, established=True))
    cases.append(
        make_case(
            "length",
            "pdata-at-maximum-no-body",
            frame_pdu(0x04, b"", length=MAXIMUM_PDU),
            expect=CLOSES,
            established=True,
            half_close=True,
        )
    )
    return cases


# --- PDU types and sequence -------------------------------------------------------------------


RESERVED_TYPES = (0x00, 0x08, 0x09, 0x0A, 0x10, 0x11, 0x20, 0x41, 0x50, 0x7F, 0x80, 0xC3, 0xFE)


def pdu_type_cases() -> list[Case]:
    body = body_of(ECHO_RQ)
    cases = [
        make_case("pdu-type", f"0x{t:02X}-first", frame_pdu(t, body), expect=ABORTS)
        for t in (*RESERVED_TYPES, 0xFF)
    ]
    cases += [
        make_case(
            "pdu-type",
            f"0x{t:02X}-established",
            frame_pdu(t, bytes(4)),
            expect=ABORTS,
            established=True,
        )
        for t in (*RESERVED_TYPES, 0xFF)
    ]
    cases += [
        # A-ASSOCIATE-RQ as an AC (02H) or other wrong type, same body.
        make_case("pdu-type", "rq-body-as-ac", frame_pdu(0x02, body), expect=ABORTS),
        make_case("pdu-type", "rq-body-as-rj", frame_pdu(0x03, body), expect=ABORTS),
        make_case("pdu-type", "rq-body-as-pdata", frame_pdu(0x04, body), expect=ABORTS),
        # The reserved byte of the PDU header is not tested on receipt (PS3.8 9.3.2).
        make_case(
            "pdu-type",
            "rq-reserved-byte-set",
            frame_pdu(0x01, body, reserved=0xFF),
            expect=frozenset({Outcome.ACCEPT}),
        ),
    ]
    return cases


def sequence_cases() -> list[Case]:
    """PDUs in the wrong state (PS3.8 Table 9-10)."""
    first = [
        ("pdata-first", ECHO_PDATA, ABORTS),
        ("ac-first", ASSOCIATE_AC, ABORTS),
        ("rj-first", ASSOCIATE_RJ, ABORTS),
        ("release-rq-first", RELEASE_RQ, ABORTS),
        ("release-rp-first", RELEASE_RP, ABORTS),
        ("abort-first", ABORT, CLOSES),  # AA-2: just close
        ("pdata-before-rq", ECHO_PDATA + ECHO_RQ, ABORTS),
    ]
    cases = [make_case("sequence", name, data, expect=expect) for name, data, expect in first]
    release = frozenset({Outcome.RELEASE})
    cases += [
        make_case("sequence", "rq-twice", ECHO_RQ, expect=ABORTS, established=True),
        make_case("sequence", "ac-established", ASSOCIATE_AC, expect=ABORTS, established=True),
        make_case("sequence", "rj-established", ASSOCIATE_RJ, expect=ABORTS, established=True),
        make_case(
            "sequence", "release-rp-established", RELEASE_RP, expect=ABORTS, established=True
        ),
        make_case("sequence", "abort-established", ABORT, expect=CLOSES, established=True),
        make_case(
            "sequence",
            "pdata-after-release-rq",
            RELEASE_RQ + ECHO_PDATA,
            expect=release,
            established=True,
        ),
        make_case(
            "sequence",
            "pdata-after-release-rq-separately",
            RELEASE_RQ,
            ECHO_PDATA,
            expect=release,
            established=True,
        ),
        make_case(
            "sequence",
            "release-rq-twice",
            RELEASE_RQ + RELEASE_RQ,
            expect=release,
            established=True,
        ),
        make_case(
            "sequence",
            "rq-after-release-rq",
            RELEASE_RQ + ECHO_RQ,
            expect=release,
            established=True,
        ),
        # Reserved fields of A-RELEASE-RQ are not tested on receipt (PS3.8 9.3.6).
        make_case(
            "sequence",
            "release-rq-reserved-set",
            frame_pdu(0x05, b"\xff" * 4),
            expect=release,
            established=True,
        ),
        # A valid C-ECHO split in two PDVs of one PDU, and in two PDUs: answered.
        make_case(
            "sequence",
            "echo-two-pdvs",
            frame_pdu(
                0x04,
                pdv(1, ECHO_COMMAND[:20], command=True, last=False)
                + pdv(1, ECHO_COMMAND[20:], command=True, last=True),
            ),
            expect=frozenset({Outcome.ANSWERED}),
            established=True,
            probe=True,
        ),
        make_case(
            "sequence",
            "echo-two-pdus",
            pdata(1, ECHO_COMMAND[:30], last=False),
            pdata(1, ECHO_COMMAND[30:]),
            expect=frozenset({Outcome.ANSWERED}),
            established=True,
            probe=True,
        ),
    ]
    return cases


# --- probes from other protocols, random bytes ---------------------------------------------


def tls_client_hello() -> bytes:
    """A real TLS ClientHello, from the ssl module's memory BIO (nothing is connected)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="dicomnode.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def probe_cases() -> list[Case]:
    hello = tls_client_hello()
    probes = {
        "http-get": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "http-post": b"POST /dicom HTTP/1.1\r\nContent-Length: 4\r\n\r\nDICM",
        "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "tls-client-hello": hello,
        "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n",
        "crlf": b"\r\n\r\n\r\n",
        "six-zero-bytes": bytes(6),
    }
    cases = [make_case("probe", name, data, expect=ABORTS) for name, data in probes.items()]
    cases += [
        make_case("probe", "single-zero-byte", b"\0", expect=CLOSES, half_close=True),
        make_case("probe", "connect-and-close", b"", expect=CLOSES, half_close=True),
        make_case(
            "probe", "http-get-established", probes["http-get"], expect=ABORTS, established=True
        ),
        make_case("probe", "tls-established", hello, expect=ABORTS, established=True),
    ]
    return cases


def random_cases() -> list[Case]:
    generator = random.Random(20240607)
    cases = []
    for index in range(24):
        size = generator.choice((1, 5, 6, 7, 64, 300, 2048))
        data = generator.randbytes(size)
        cases.append(
            make_case("random", f"first-{index}-{size}", data, expect=ENDS, half_close=True)
        )
    for index in range(12):
        size = generator.choice((6, 10, 100, 1000))
        data = generator.randbytes(size)
        cases.append(
            make_case(
                "random",
                f"established-{index}-{size}",
                data,
                expect=ENDS,
                established=True,
                half_close=True,
            )
        )
    anything = frozenset({*ENDS, Outcome.REJECT, Outcome.ACCEPT, Outcome.ACCEPT_NONE})
    for index in range(24):
        mutated = bytearray(ECHO_RQ)
        for _ in range(generator.choice((1, 2, 4))):
            mutated[generator.randrange(len(mutated))] = generator.randrange(256)
        cases.append(
            make_case("mutated", f"rq-{index}", bytes(mutated), expect=anything, half_close=True)
        )
    for index in range(12):
        mutated = bytearray(ECHO_PDATA)
        mutated[generator.randrange(len(mutated))] = generator.randrange(256)
        cases.append(
            make_case(
                "mutated",
                f"pdata-{index}",
                bytes(mutated),
                expect=ENDS,
                established=True,
                half_close=True,
            )
        )
    return cases
