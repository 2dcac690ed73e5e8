# SOP Class Extended Negotiation the built-in Query/Retrieve SCP answers (PS3.4 C.5.1): which
# items get a reply, what it says, and how a worker reads the agreement back.
from __future__ import annotations

from node.ae_acceptor import acceptor_policy
from node.extended import relational_queries, relational_query_replies

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_relational_queries_are_agreed_only_for_c_find_when_asked_for():
    replies = relational_query_replies(
        {
            STUDY_FIND: b"\x01\x01\x01",  # relational, combined date-time, case-insensitive PN
            PATIENT_FIND: b"\x00",
            STUDY_MOVE: b"\x01",  # relational retrieval: not supported, no reply
            CT_STORAGE: b"\x02",
            "1.2.840.10008.5.1.4.1.2.3.1": b"",
        }
    )
    assert replies == {STUDY_FIND: b"\x01\x00\x00", PATIENT_FIND: b"\x00"}


def test_a_worker_reads_the_agreement_from_our_replies():
    agreed = {STUDY_FIND: b"\x01\x00", PATIENT_FIND: b"\x00", STUDY_MOVE: b"\x01"}
    assert relational_queries(STUDY_FIND, agreed)
    assert not relational_queries(PATIENT_FIND, agreed)
    assert not relational_queries(STUDY_MOVE, agreed)
    assert not relational_queries("1.2.840.10008.5.1.4.1.2.3.1", agreed)
    assert not relational_queries(STUDY_FIND, {})


def test_the_ae_answers_relational_queries_only_for_the_built_in_archive():
    """`serve` and `acceptor` agree relational queries unless a handler answers C-FIND
    (--handlers with on_c_find / --worklist); a user's own hook always wins."""
    from node import AE
    from node.acceptor.main import build_server_ae

    def negotiate(ae: AE, info: bytes = b"\x01") -> dict[str, bytes]:
        hook = acceptor_policy(ae).on_sop_class_extended  # what the acceptor's ACSE calls
        return {} if hook is None else hook({STUDY_FIND: info})

    assert negotiate(AE(ae_title="PLAIN")) == {}
    archive = build_server_ae("ARCHIVE", 0, "127.0.0.1", maximum_associations=1, maximum_pdu=0)
    assert negotiate(archive) == {STUDY_FIND: b"\x01"}
    handled = build_server_ae(
        "HANDLED", 0, "127.0.0.1", maximum_associations=1, maximum_pdu=0, worklist=True
    )
    assert negotiate(handled) == {}
    archive.on_sop_class_extended = lambda proposed: dict.fromkeys(proposed, b"\x00")
    assert negotiate(archive) == {STUDY_FIND: b"\x00"}
