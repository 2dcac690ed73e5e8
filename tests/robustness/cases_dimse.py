# Battery cases inside an association (issue 7): P-DATA on contexts that are not accepted and
# command sets with missing or wrong-typed elements (PS3.7 6.3.1, Annex E, C.5).
#
# Rules: the base association (golden.BASE_RQ) proposes Verification (1), CT Image Storage (3)
# and Study Root FIND (5); a request whose Message ID was read gets a failure response and the
# association goes on (the probe C-ECHO proves it), otherwise the server sends A-ABORT.
from __future__ import annotations

from tests.robustness.case import ABORTS, FAILS, Case, make_case
from tests.robustness.golden import (
    APPLICATION_ITEM,
    ECHO_COMMAND,
    ECHO_ELEMENTS,
    ECHO_PDATA,
    FIND_COMMAND,
    FIND_CONTEXT,
    FIND_ELEMENTS,
    FIND_IDENTIFIER,
    STORAGE_CONTEXT,
    STORE_COMMAND,
    STORE_DATASET,
    STORE_ELEMENTS,
    UNSUPPORTED_ITEM,
    USER_ITEM,
    VERIFICATION_CONTEXT,
    VERIFICATION_ITEM,
    VERIFICATION_UID,
    command_set,
    frame_pdu,
    pdata,
    pdv,
    replaced,
    rq_with,
    us,
    with_context_id,
    with_element,
    without,
)
from tests.robustness.wire import Outcome

# --- inside an association: contexts and command sets ----------------------------------------


def context_id_cases() -> list[Case]:
    """P-DATA on a context that is not accepted: unknown, even, zero, rejected."""
    cases = [
        make_case(
            "context-id",
            f"pdata-on-{context_id}",
            pdata(context_id, ECHO_COMMAND),
            expect=ABORTS,
            established=True,
        )
        for context_id in (0, 2, 7, 9, 127, 255)
    ]
    # the association proposes context 7 with an unsupported abstract syntax: rejected
    rejected_rq = rq_with([APPLICATION_ITEM, VERIFICATION_ITEM, UNSUPPORTED_ITEM, USER_ITEM])
    cases.append(
        make_case(
            "context-id",
            "pdata-on-rejected-7",
            pdata(7, ECHO_COMMAND),
            expect=ABORTS,
            association=rejected_rq,
        )
    )
    even_rq = rq_with(
        [APPLICATION_ITEM, VERIFICATION_ITEM, with_context_id(VERIFICATION_ITEM, 2), USER_ITEM]
    )
    cases.append(
        make_case(
            "context-id",
            "pdata-on-proposed-even-2",
            pdata(2, ECHO_COMMAND),
            expect=ABORTS,
            association=even_rq,
        )
    )
    cases += [
        make_case(
            "context-id",
            "command-on-3-dataset-on-1",
            pdata(STORAGE_CONTEXT, STORE_COMMAND),
            pdata(VERIFICATION_CONTEXT, STORE_DATASET, command=False),
            expect=ABORTS,
            established=True,
        ),
        # the SOP Class of a request must be its context's abstract syntax: 0122H
        make_case(
            "context-id",
            "store-on-verification-context",
            pdata(VERIFICATION_CONTEXT, STORE_COMMAND),
            pdata(VERIFICATION_CONTEXT, STORE_DATASET, command=False),
            expect=FAILS,
            statuses=frozenset({0x0122}),
            established=True,
            probe=True,
        ),
        make_case(
            "context-id",
            "echo-on-storage-context",
            pdata(STORAGE_CONTEXT, ECHO_COMMAND),
            expect=FAILS,
            statuses=frozenset({0x0122}),
            established=True,
            probe=True,
        ),
    ]
    return cases


def _echo(items: list[tuple[int, bytes]], **options: int) -> bytes:
    return pdata(VERIFICATION_CONTEXT, command_set(items, **options))


def command_cases() -> list[Case]:
    """Command sets with missing or wrong-typed elements (PS3.7 Annex E, C.5)."""
    echo = ECHO_ELEMENTS
    store = STORE_ELEMENTS
    find = FIND_ELEMENTS
    dataset = pdata(STORAGE_CONTEXT, STORE_DATASET, command=False)
    identifier = pdata(FIND_CONTEXT, FIND_IDENTIFIER, command=False)
    missing = frozenset({0x0120})
    broken = frozenset({0x0110})
    echo_cases = {
        # Message ID cannot be read: no response can name the request -> A-ABORT
        "echo-no-message-id": (_echo(without(echo, 0x0110)), ABORTS, frozenset()),
        "echo-no-command-field": (_echo(without(echo, 0x0100)), ABORTS, frozenset()),
        "echo-unknown-command-field": (
            _echo(replaced(echo, 0x0100, us(0x1234))),
            ABORTS,
            frozenset(),
        ),
        "echo-message-id-4-bytes": (_echo(replaced(echo, 0x0110, bytes(4))), ABORTS, frozenset()),
        "echo-sop-class-66-chars": (
            _echo(replaced(echo, 0x0002, b"1.2." + b"3" * 62)),
            ABORTS,
            frozenset(),
        ),
        "echo-sop-class-odd-length": (
            _echo(replaced(echo, 0x0002, b"1.2.840.10008.1.1")),
            ABORTS,
            frozenset(),
        ),
        "echo-empty-command": (pdata(VERIFICATION_CONTEXT, b""), ABORTS, frozenset()),
        "echo-group-length-only": (_echo([]), ABORTS, frozenset()),
        "echo-out-of-order": (_echo([echo[1], echo[0], *echo[2:]]), ABORTS, frozenset()),
        # Message ID read first: a failure response (PS3.7 C.5.x)
        "echo-no-sop-class": (_echo(without(echo, 0x0002)), FAILS, missing),
        "echo-no-dataset-type": (_echo(without(echo, 0x0800)), FAILS, missing),
        "echo-dataset-type-4-bytes": (_echo(replaced(echo, 0x0800, bytes(4))), FAILS, broken),
        "echo-group-0008-element": (
            pdata(VERIFICATION_CONTEXT, command_set(echo) + b"\x08\0\x16\0\2\0\0\0AB"),
            FAILS,
            broken,
        ),
        "echo-last-element-runs-past": (
            pdata(VERIFICATION_CONTEXT, command_set(echo) + b"\0\0\0\x09\x08\0\0\0AB"),
            FAILS,
            broken,
        ),
        "echo-trailing-3-bytes": (
            pdata(VERIFICATION_CONTEXT, command_set(echo) + b"\0\0\0"),
            FAILS,
            broken,
        ),
        "echo-command-twice-in-one-set": (
            pdata(VERIFICATION_CONTEXT, ECHO_COMMAND, last=False)
            + pdata(VERIFICATION_CONTEXT, ECHO_COMMAND),
            FAILS,
            broken,
        ),
        "echo-fragment-cut-mid-element": (
            pdata(VERIFICATION_CONTEXT, ECHO_COMMAND[:40], last=False)
            + pdata(VERIFICATION_CONTEXT, ECHO_COMMAND),
            ABORTS,
            frozenset(),
        ),
        # Tolerated: not trusted, unknown or retired elements (PS3.7 6.3.1, Annex E)
        "echo-group-length-wrong": (
            _echo(echo, group_length=0xFFFF),
            frozenset({Outcome.ANSWERED}),
            frozenset({0}),
        ),
        "echo-unknown-element": (
            _echo(with_element(echo, 0x5555, b"ab")),
            frozenset({Outcome.ANSWERED}),
            frozenset({0}),
        ),
        "echo-retired-element": (
            _echo(with_element(echo, 0x0001, b"\0\0\0\0")),
            frozenset({Outcome.ANSWERED}),
            frozenset({0}),
        ),
        "echo-message-id-0": (
            _echo(replaced(echo, 0x0110, us(0))),
            frozenset({Outcome.ANSWERED}),
            frozenset({0}),
        ),
        "echo-control-reserved-bits": (
            frame_pdu(
                0x04, pdv(1, ECHO_COMMAND, command=True, last=True)[:5] + b"\xff" + ECHO_COMMAND
            ),
            frozenset({Outcome.ANSWERED, Outcome.ABORT}),
            frozenset({0}),
        ),
        # Messages the acceptor does not expect
        "echo-rsp-unsolicited": (
            _echo(
                [
                    (0x0002, VERIFICATION_UID + b"\0"),
                    (0x0100, us(0x8030)),
                    (0x0120, us(9)),
                    (0x0800, us(0x0101)),
                    (0x0900, us(0)),
                ]
            ),
            frozenset({Outcome.IGNORED, Outcome.ABORT}),
            frozenset(),
        ),
        "cancel-unknown-message": (
            _echo([(0x0100, us(0x0FFF)), (0x0120, us(999)), (0x0800, us(0x0101))]),
            frozenset({Outcome.IGNORED}),
            frozenset(),
        ),
        "echo-announces-dataset-none-sent": (
            _echo(replaced(echo, 0x0800, us(0x0001))),
            ABORTS,
            frozenset(),
        ),
        "dataset-without-command": (
            pdata(VERIFICATION_CONTEXT, STORE_DATASET, command=False),
            ABORTS,
            frozenset(),
        ),
        "dataset-after-echo": (
            ECHO_PDATA + pdata(VERIFICATION_CONTEXT, STORE_DATASET, command=False),
            ABORTS,
            frozenset(),
        ),
        "n-get-on-verification": (
            _echo(
                [
                    (0x0003, b"1.2.840.10008.1.1\0"),
                    (0x0100, us(0x0110)),
                    (0x0110, us(3)),
                    (0x0800, us(0x0101)),
                    (0x1001, b"1.2.3.4\0"),
                ]
            ),
            FAILS,
            frozenset(),
        ),
        "c-get-on-verification": (
            _echo(
                [
                    (0x0002, b"1.2.840.10008.1.1\0"),
                    (0x0100, us(0x0010)),
                    (0x0110, us(4)),
                    (0x0700, us(0)),
                    (0x0800, us(0x0101)),
                ]
            ),
            FAILS,
            frozenset(),
        ),
    }
    store_cases = {
        "store-no-instance-uid": (
            [pdata(STORAGE_CONTEXT, command_set(without(store, 0x1000))), dataset],
            FAILS,
            missing,
        ),
        "store-no-priority": (
            [pdata(STORAGE_CONTEXT, command_set(without(store, 0x0700))), dataset],
            FAILS,
            missing,
        ),
        "store-priority-4-bytes": (
            [pdata(STORAGE_CONTEXT, command_set(replaced(store, 0x0700, bytes(4)))), dataset],
            FAILS,
            broken,
        ),
        "store-no-dataset-type": (
            [pdata(STORAGE_CONTEXT, command_set(without(store, 0x0800)))],
            FAILS,
            missing,
        ),
        "store-no-dataset-type-with-dataset": (
            [pdata(STORAGE_CONTEXT, command_set(without(store, 0x0800))), dataset],
            FAILS,
            missing,
        ),
        "store-priority-4-bytes-dataset-in-2": (
            [
                pdata(STORAGE_CONTEXT, command_set(replaced(store, 0x0700, bytes(4)))),
                pdata(STORAGE_CONTEXT, STORE_DATASET[:100], command=False, last=False),
                dataset,
            ],
            FAILS,
            broken,
        ),
        "store-without-dataset": (
            [pdata(STORAGE_CONTEXT, command_set(replaced(store, 0x0800, us(0x0101))))],
            FAILS,
            frozenset(),
        ),
        "store-instance-uid-traversal": (
            [
                pdata(STORAGE_CONTEXT, command_set(replaced(store, 0x1000, b"../../../etc/x\0\0"))),
                dataset,
            ],
            FAILS,
            frozenset(),
        ),
        "store-garbage-dataset": (
            [
                pdata(STORAGE_CONTEXT, STORE_COMMAND),
                pdata(STORAGE_CONTEXT, bytes(range(256)) * 3, command=False),
            ],
            FAILS,
            frozenset(),
        ),
        "store-empty-dataset": (
            [pdata(STORAGE_CONTEXT, STORE_COMMAND), pdata(STORAGE_CONTEXT, b"", command=False)],
            FAILS,
            frozenset(),
        ),
        "store-instance-uid-70-chars": (
            [
                pdata(STORAGE_CONTEXT, command_set(replaced(store, 0x1000, b"1.2." + b"3" * 66))),
                dataset,
            ],
            FAILS,
            broken,
        ),
        "find-no-priority": (
            [pdata(FIND_CONTEXT, command_set(without(find, 0x0700))), identifier],
            FAILS,
            missing,
        ),
        "find-garbage-identifier": (
            [
                pdata(FIND_CONTEXT, FIND_COMMAND),
                pdata(FIND_CONTEXT, b"\x08\x00\x52\x00\xff\xff\xff\x7f", command=False),
            ],
            FAILS,
            frozenset(),
        ),
        "find-no-identifier-wrong-type": (
            [pdata(FIND_CONTEXT, command_set(replaced(find, 0x0800, us(0x0101))))],
            FAILS,
            frozenset(),
        ),
    }
    cases = [
        make_case(
            "command", name, payload, expect=expect, statuses=statuses, established=True, probe=True
        )
        for name, (payload, expect, statuses) in echo_cases.items()
    ]
    # 2700 empty command fragments in one P-DATA-TF, then the command: legal, answered
    empty = pdv(VERIFICATION_CONTEXT, b"", command=True, last=False)
    cases.append(
        make_case(
            "command",
            "echo-after-2700-empty-fragments",
            frame_pdu(0x04, empty * 2700),
            pdata(VERIFICATION_CONTEXT, ECHO_COMMAND),
            expect=frozenset({Outcome.ANSWERED}),
            statuses=frozenset({0}),
            established=True,
            probe=True,
        )
    )
    # a command set that never ends: refused past 1 MiB (bounded buffering), A-ABORT
    chunk = pdata(VERIFICATION_CONTEXT, bytes(16000), last=False)
    cases.append(
        make_case(
            "command",
            "endless-command-set",
            chunk * 70,
            expect=ABORTS,
            established=True,
            probe=True,
        )
    )
    cases += [
        make_case(
            "command",
            name,
            *payload,
            expect=expect,
            statuses=statuses,
            established=True,
            probe=True,
        )
        for name, (payload, expect, statuses) in store_cases.items()
    ]
    return cases
