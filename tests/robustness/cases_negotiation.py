# Battery cases on association negotiation (issue 7): wrong, missing, misplaced and duplicated
# items; invalid UIDs and AE titles; zero presentation contexts; bad context IDs
# (PS3.8 9.3.2, 9.3.3.2, PS3.7 Annex D).
#
# Rules: each A-ASSOCIATE-RQ is the golden echoscu one with one thing made wrong.
from __future__ import annotations

from tests.robustness.case import ABORTS, CONTEXT_REFUSED, REFUSED, Case, make_case
from tests.robustness.golden import (
    APPLICATION_ITEM,
    FIND_ITEM,
    IMPLICIT,
    USER_ITEM,
    VERIFICATION_ITEM,
    VERIFICATION_UID,
    fixed_fields,
    frame_item,
    rebuild_item,
    rq_with,
    sub_items_of,
    with_context_id,
)
from tests.robustness.wire import Outcome

# --- items, UIDs, AE titles, contexts --------------------------------------------------------


def _retyped(item: bytes, item_type: int) -> bytes:
    return bytes((item_type,)) + item[1:]


def item_cases() -> list[Case]:
    app, context, user = APPLICATION_ITEM, VERIFICATION_ITEM, USER_ITEM
    context_subs = sub_items_of(context, 4)
    abstract, transfer = context_subs
    user_subs = sub_items_of(user, 0)
    unknown_sub = frame_item(0x5F, b"whatever")
    structures = {
        # wrong and reserved item types
        "application-as-0x11": ([_retyped(app, 0x11), context, user], ABORTS),
        "application-as-0x00": ([_retyped(app, 0x00), context, user], ABORTS),
        "context-as-ac-0x21": ([app, _retyped(context, 0x21), user], ABORTS),
        "context-as-0x22": ([app, _retyped(context, 0x22), user], ABORTS),
        "context-as-0xFF": ([app, _retyped(context, 0xFF), user], ABORTS),
        "user-as-0x51": ([app, context, _retyped(user, 0x51)], ABORTS),
        "user-as-0x5F": ([app, context, _retyped(user, 0x5F)], ABORTS),
        "abstract-as-0x31": (
            [app, rebuild_item(context, 4, [_retyped(abstract, 0x31), transfer]), user],
            ABORTS,
        ),
        "transfer-as-0x41": (
            [app, rebuild_item(context, 4, [abstract, _retyped(transfer, 0x41)]), user],
            ABORTS,
        ),
        "transfer-as-abstract": (
            [app, rebuild_item(context, 4, [abstract, _retyped(transfer, 0x30)]), user],
            ABORTS,
        ),
        # missing, out of order, duplicated
        "no-application": ([context, user], ABORTS),
        "no-user": ([app, context], ABORTS),
        "no-items": ([], ABORTS),
        "user-first": ([user, app, context], ABORTS),
        "user-before-context": ([app, user, context], ABORTS),
        "context-first": ([context, app, user], ABORTS),
        "application-twice": ([app, app, context, user], ABORTS),
        "user-twice": ([app, context, user, user], ABORTS),
        "application-after-context": ([app, context, app, user], ABORTS),
        "abstract-twice": (
            [app, rebuild_item(context, 4, [abstract, abstract, transfer]), user],
            ABORTS,
        ),
        "no-abstract": ([app, rebuild_item(context, 4, [transfer]), user], ABORTS),
        "no-transfer": ([app, rebuild_item(context, 4, [abstract]), user], ABORTS),
        "transfer-before-abstract": (
            [app, rebuild_item(context, 4, [transfer, abstract]), user],
            frozenset({Outcome.ACCEPT, *ABORTS}),
        ),
        "context-item-too-short": ([app, frame_item(0x20, b"\x01\0\0"), user], ABORTS),
        "context-item-empty": ([app, frame_item(0x20, b""), user], ABORTS),
        # user information sub-items
        "user-sub-unknown": (
            [app, context, rebuild_item(user, 0, [*user_subs, unknown_sub])],
            frozenset({Outcome.ACCEPT}),
        ),
        "user-empty": ([app, context, frame_item(0x50, b"")], frozenset({Outcome.ACCEPT})),
        "max-length-2-bytes": (
            [app, context, rebuild_item(user, 0, [frame_item(0x51, b"\0\0"), *user_subs[1:]])],
            ABORTS,
        ),
        "max-length-zero": (
            [app, context, rebuild_item(user, 0, [frame_item(0x51, bytes(4)), *user_subs[1:]])],
            frozenset({Outcome.ACCEPT}),
        ),
        "max-length-twice": (
            [app, context, rebuild_item(user, 0, [user_subs[0], *user_subs])],
            frozenset({Outcome.ACCEPT, *REFUSED}),
        ),
        "async-window-3-bytes": (
            [app, context, rebuild_item(user, 0, [*user_subs, frame_item(0x53, b"\0\1\0")])],
            ABORTS,
        ),
        "role-selection-cut": (
            [app, context, rebuild_item(user, 0, [*user_subs, frame_item(0x54, b"\0\x40abc")])],
            ABORTS,
        ),
        "user-identity-cut": (
            [app, context, rebuild_item(user, 0, [*user_subs, frame_item(0x58, b"\1\0\0\x09ab")])],
            ABORTS,
        ),
        "sub-item-header-cut": (
            [app, context, rebuild_item(user, 0, [*user_subs, b"\x51\0"])],
            ABORTS,
        ),
    }
    return [
        make_case("item", name, rq_with(items), expect=expect)
        for name, (items, expect) in structures.items()
    ]


def _context(context_id: int, abstract: bytes, *transfers: bytes) -> bytes:
    subs = frame_item(0x30, abstract) + b"".join(frame_item(0x40, t) for t in transfers)
    return frame_item(0x20, bytes((context_id, 0, 0, 0)) + subs)


def identity_cases() -> list[Case]:
    """Invalid UIDs and AE titles, zero presentation contexts, bad context IDs."""
    app, user = APPLICATION_ITEM, USER_ITEM
    bad_uids = {
        "letters": b"1.2.840.10008.1.1.x",
        "empty": b"",
        "double-dot": b"1.2..840",
        "65-chars": b"1." + b"2" * 63,
        "non-ascii": b"1.2.\xff\xfe",
        "nul-inside": b"1.2.840\x0010008.1.1",
        "spaces": b"   ",
    }
    cases = []
    for name, uid in bad_uids.items():
        cases.append(
            make_case(
                "uid",
                f"abstract-{name}",
                rq_with([app, _context(1, uid, IMPLICIT), user]),
                expect=CONTEXT_REFUSED,
            )
        )
        cases.append(
            make_case(
                "uid",
                f"transfer-{name}",
                rq_with([app, _context(1, VERIFICATION_UID, uid), user]),
                expect=CONTEXT_REFUSED,
            )
        )
        cases.append(
            make_case(
                "uid",
                f"application-{name}",
                rq_with([frame_item(0x10, uid), VERIFICATION_ITEM, user]),
                expect=REFUSED,
            )
        )
    user_subs = sub_items_of(user, 0)
    for name, uid in (("empty", b""), ("65-chars", b"1." + b"2" * 63), ("non-ascii", b"\xff")):
        items = [user_subs[0], frame_item(0x52, uid), *user_subs[2:]]
        cases.append(
            make_case(
                "uid",
                f"implementation-class-{name}",
                rq_with([app, VERIFICATION_ITEM, rebuild_item(user, 0, items)]),
                expect=frozenset({Outcome.ACCEPT, *REFUSED}),
            )
        )
    titles = {
        "non-ascii": b"\xc4RZT",
        "all-spaces": b" " * 16,
        "all-nul": b"\0" * 16,
        "control-chars": b"AE\x01\x02\x1b",
        "backslash": b"A\\B",
    }
    for name, title in titles.items():
        # Non-ASCII titles are refused (A-ASSOCIATE-RJ); other titles PS3.5 forbids may be.
        expect = frozenset(
            {Outcome.REJECT} if not title.isascii() else {Outcome.REJECT, Outcome.ACCEPT}
        )
        for side in ("calling", "called"):
            fields = {"called": b"ANY-SCP", "calling": b"ECHOSCU", side: title}
            fixed = fixed_fields(
                called=fields["called"].ljust(16), calling=fields["calling"].ljust(16)
            )
            cases.append(
                make_case(
                    "ae-title",
                    f"{side}-{name}",
                    rq_with([app, VERIFICATION_ITEM, user], fixed),
                    expect=expect,
                )
            )
    for version in (0, 2, 0xFFFE):
        fixed = fixed_fields(version=version, called=b"ANY-SCP", calling=b"ECHOSCU")
        cases.append(
            make_case(
                "version",
                f"0x{version:04X}",
                rq_with([app, VERIFICATION_ITEM, user], fixed),
                expect=REFUSED,
            )
        )
    cases += [
        make_case(
            "contexts", "zero-contexts", rq_with([app, user]), expect=frozenset({Outcome.REJECT})
        ),
        make_case(
            "contexts",
            "id-zero",
            rq_with([app, with_context_id(VERIFICATION_ITEM, 0), user]),
            expect=CONTEXT_REFUSED,
        ),
        make_case(
            "contexts",
            "id-even",
            rq_with([app, with_context_id(VERIFICATION_ITEM, 2), user]),
            expect=CONTEXT_REFUSED,
        ),
        make_case(
            "contexts",
            "id-duplicated",
            rq_with([app, VERIFICATION_ITEM, VERIFICATION_ITEM, user]),
            expect=CONTEXT_REFUSED,
        ),
        make_case(
            "contexts",
            "id-255",
            rq_with([app, with_context_id(VERIFICATION_ITEM, 255), user]),
            expect=frozenset({Outcome.ACCEPT}),
        ),
        make_case(
            "contexts",
            "129-contexts",
            rq_with(
                [app, *(with_context_id(FIND_ITEM, 1 + 2 * (i % 128)) for i in range(129)), user]
            ),
            expect=frozenset({Outcome.ACCEPT_NONE, *REFUSED, Outcome.ACCEPT}),
        ),
    ]
    return cases
