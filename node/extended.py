# SOP Class Extended Negotiation that the built-in Query/Retrieve SCP answers (PS3.4 C.5.1).
#
# Rules: pure functions of the proposed items (no I/O); an AE installs them as its
# `on_sop_class_extended` hook only when the built-in archive serves C-FIND and the user set no
# hook of their own. We support relational queries (PS3.4 C.4.1.2.2) and nothing else the
# C-FIND application information offers (combined date-time matching, case-insensitive or
# fuzzy person name matching, timezone adjustment): each of those bytes is answered 0.
from __future__ import annotations

from typing import Final

#: The C-FIND SOP classes of the Query/Retrieve information models (PS3.4 C.6).
QUERY_FIND_SOP_CLASSES: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root
        "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root
        "1.2.840.10008.5.1.4.1.2.3.1",  # Patient/Study Only (retired)
    }
)
#: The C-FIND application information's first byte: relational-queries (PS3.4 Table C.5-1).
RELATIONAL: Final = 1


def relational_query_replies(proposed: dict[str, bytes]) -> dict[str, bytes]:
    """The A-ASSOCIATE-AC replies to C-FIND extended negotiation items (PS3.4 C.5.1.2):
    relational-queries 1 when the requestor asked for it, every other byte 0; no reply for
    other SOP classes or an empty item."""
    replies: dict[str, bytes] = {}
    for sop_class_uid, info in proposed.items():
        if sop_class_uid in QUERY_FIND_SOP_CLASSES and info:
            relational = RELATIONAL if info[0] == RELATIONAL else 0
            replies[sop_class_uid] = bytes([relational]) + bytes(len(info) - 1)
    return replies


def relational_queries(sop_class_uid: str, agreed: dict[str, bytes]) -> bool:
    """Whether the association agreed relational queries for `sop_class_uid`: our reply to
    its extended negotiation item (`agreed`, SOP class UID -> reply) says so."""
    reply = agreed.get(sop_class_uid, b"")
    return sop_class_uid in QUERY_FIND_SOP_CLASSES and reply[:1] == bytes([RELATIONAL])
