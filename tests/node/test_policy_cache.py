# The acceptor's negotiation policy is built once and kept while the AE's settings it reads
# stay the same; any change to them reaches the next association (pynetdicom's contract:
# a running AE's attributes apply to new associations).
from __future__ import annotations

from node import AE, evt
from node.ae_acceptor import current_policy

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_the_policy_is_reused_until_a_setting_it_reads_changes():
    ae = AE("CACHE")
    ae.add_supported_context(VERIFICATION)
    policy = current_policy(ae)
    first = policy()
    assert policy() is first  # nothing changed: the same snapshot

    ae.add_supported_context(CT)
    second = policy()
    assert second is not first
    assert CT in second.contexts_by_abstract_syntax

    ae.ae_title = "RENAMED"
    third = policy()
    assert third.ae_title == "RENAMED"

    ae.require_calling_aet = ["MODALITY"]
    assert policy().require_calling_aet == ("MODALITY",)

    ae.calling_aet_networks = {"MODALITY": ["10.0.0.0/8"]}
    assert set(policy().allowed_networks) == {"MODALITY"}

    ae.maximum_pdu_size = 32768
    assert policy().maximum_pdu_length == 32768
    assert policy() is policy()


def test_a_user_identity_handler_bound_later_reaches_the_next_policy():
    ae = AE("CACHE")
    ae.add_supported_context(VERIFICATION)
    policy = current_policy(ae)
    assert policy().on_user_identity is None
    ae.bind(evt.EVT_USER_ID, lambda item: (True, None))
    assert policy().on_user_identity is not None
