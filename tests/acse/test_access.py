"""Access control beyond the AE titles: calling AE titles bound to networks, associations per
calling AE title, a required user identity (PS3.8 9.3.4 Table 9-21, PS3.7 D.3.3.7)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.acse.access import (
    ANY_CALLING_AE,
    calling_address_refusal,
    parse_network_bindings,
    per_calling_ae_refusal,
    title_from_wire,
)
from node.acse.negotiation import Acceptance, Rejection, negotiate_as_acceptor
from node.ul.items import UserIdentityRQSubItem, UserIdentityType
from node.ul.pdu import AssociateRJ, RejectReason, RejectResult, RejectSource
from tests.acse.support import make_policy, make_request

CALLING_NOT_RECOGNIZED = AssociateRJ(
    RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLING_AE_NOT_RECOGNIZED
)
LOCAL_LIMIT = AssociateRJ(
    RejectResult.TRANSIENT,
    RejectSource.SERVICE_PROVIDER_PRESENTATION,
    RejectReason.LOCAL_LIMIT_EXCEEDED,
)


def negotiate(request=None, policy=None, **kwargs) -> Acceptance | Rejection:
    return negotiate_as_acceptor(request or make_request(), policy or make_policy(), **kwargs)


# --- parsing the bindings -------------------------------------------------------------------


def test_bindings_are_parsed_and_normalized():
    bindings = parse_network_bindings(
        {" STORESCU ": ["10.0.0.0/8", " 192.0.2.7 "], "*": "2001:db8::/32", "X": ("10.1.2.3/8",)}
    )
    assert bindings == {
        "STORESCU": (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32")),
        ANY_CALLING_AE: (ipaddress.ip_network("2001:db8::/32"),),
        "X": (ipaddress.ip_network("10.0.0.0/8"),),  # host bits are dropped, not an error
    }
    with pytest.raises(TypeError):
        bindings["NEW"] = ()  # type: ignore[index]


@pytest.mark.parametrize(
    ("bindings", "message"),
    [
        ({"STORESCU": ["10.0.0.0/33"]}, "'STORESCU'"),
        ({"STORESCU": ["not-an-address"]}, "not-an-address"),
        ({"STORESCU": []}, "bound to no network"),
        ({"BAD\\TITLE": ["10.0.0.0/8"]}, "backslash"),
        ({"": ["10.0.0.0/8"]}, "1 to 16"),
    ],
)
def test_bad_bindings_name_the_problem(bindings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_network_bindings(bindings)


def test_policy_rejects_bad_bindings_and_limits():
    with pytest.raises(ValueError, match="STORESCU"):
        make_policy(calling_aet_networks={"STORESCU": ["300.0.0.1"]})
    with pytest.raises(ValueError, match="associations per AE title"):
        make_policy(maximum_associations_per_aet=0)
    policy = make_policy(calling_aet_networks={"A": ("10.0.0.0/8",)})
    assert policy.allowed_networks == {"A": (ipaddress.ip_network("10.0.0.0/8"),)}
    assert hash(policy) == hash(make_policy())  # bindings take no part in the hash


# --- the address check ----------------------------------------------------------------------

BINDINGS = parse_network_bindings({"STORESCU": ["10.0.0.0/8", "2001:db8::/32"], "OPEN": ["::/0"]})


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8::1", "2001:db8::1%eth0"]
)
def test_address_inside_a_bound_network_is_allowed(address):
    assert calling_address_refusal("STORESCU", address, BINDINGS) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "::ffff:127.0.0.1", "2001:db9::1", "", None])
def test_address_outside_or_unknown_is_refused_with_a_reason(address):
    refusal = calling_address_refusal("STORESCU", address, BINDINGS)
    assert refusal is not None
    assert "'STORESCU'" in refusal
    assert "10.0.0.0/8, 2001:db8::/32" in refusal
    assert (address or "unknown") in refusal


def test_unbound_title_is_not_restricted_unless_a_wildcard_binds_it():
    assert calling_address_refusal("OTHER", "203.0.113.5", BINDINGS) is None
    wildcard = parse_network_bindings({"*": ["127.0.0.0/8"], "REMOTE": ["203.0.113.0/24"]})
    assert calling_address_refusal("OTHER", "127.0.0.2", wildcard) is None
    assert calling_address_refusal("OTHER", "203.0.113.5", wildcard) is not None
    assert calling_address_refusal("REMOTE", "203.0.113.5", wildcard) is None
    assert calling_address_refusal("REMOTE", "127.0.0.1", wildcard) is not None


@given(st.ip_addresses(v=4))
def test_ipv4_any_network_admits_every_ipv4_address(address):
    open_to_all = parse_network_bindings({"A": ["0.0.0.0/0"]})
    assert calling_address_refusal("A", str(address), open_to_all) is None
    nowhere = parse_network_bindings({"A": ["::/0"]})
    assert calling_address_refusal("A", str(address), nowhere) is not None


# --- the per calling AE limit ---------------------------------------------------------------


def test_per_calling_ae_limit():
    assert per_calling_ae_refusal("A", {"A": 5}, None) is None
    assert per_calling_ae_refusal("A", {"B": 5}, 1) is None
    assert per_calling_ae_refusal("A", {"A": 1}, 2) is None
    refusal = per_calling_ae_refusal("A", {"A": 2}, 2)
    assert refusal == (
        "local limit exceeded: 2 associations from calling AE title 'A' active "
        "(limit 2 per calling AE title)"
    )


def test_title_from_wire_strips_padding():
    assert title_from_wire(" STORESCU \0\0") == "STORESCU"


# --- through negotiate_as_acceptor ----------------------------------------------------------


def test_negotiation_refuses_a_calling_ae_from_the_wrong_network():
    policy = make_policy(calling_aet_networks={"STORESCU": ("10.0.0.0/8",)})
    outcome = negotiate(policy=policy, peer_address="127.0.0.1")
    assert isinstance(outcome, Rejection)
    assert outcome.pdu == CALLING_NOT_RECOGNIZED
    assert "from address 127.0.0.1" in outcome.reason
    assert isinstance(negotiate(policy=policy, peer_address="10.0.0.1"), Acceptance)
    assert isinstance(negotiate(policy=policy), Rejection)  # no address known: fail closed


def test_negotiation_checks_the_title_list_before_the_networks():
    policy = make_policy(
        require_calling_aet=("OTHER",), calling_aet_networks={"STORESCU": ("10.0.0.0/8",)}
    )
    outcome = negotiate(policy=policy, peer_address="10.0.0.1")
    assert isinstance(outcome, Rejection)
    assert outcome.reason == "calling AE title 'STORESCU' not recognized"


def test_negotiation_limits_associations_per_calling_ae():
    policy = make_policy(maximum_associations_per_aet=2)
    outcome = negotiate(policy=policy, associations_by_calling_aet={"STORESCU": 2, "X": 0})
    assert isinstance(outcome, Rejection)
    assert outcome.pdu == LOCAL_LIMIT
    assert "calling AE title 'STORESCU'" in outcome.reason
    assert isinstance(
        negotiate(policy=policy, associations_by_calling_aet={"STORESCU": 1, "X": 9}), Acceptance
    )
    assert isinstance(negotiate(policy=policy), Acceptance)


def test_network_refusal_comes_before_the_limit_and_the_limit_before_the_context_checks():
    policy = make_policy(
        calling_aet_networks={"STORESCU": ("10.0.0.0/8",)}, maximum_associations_per_aet=1
    )
    outcome = negotiate(
        policy=policy, peer_address="192.0.2.1", associations_by_calling_aet={"STORESCU": 1}
    )
    assert isinstance(outcome, Rejection)
    assert outcome.pdu == CALLING_NOT_RECOGNIZED
    outcome = negotiate(
        make_request(called_ae_title="SOMEONE"),
        make_policy(require_called_aet=True, maximum_associations_per_aet=1),
        associations_by_calling_aet={"STORESCU": 1},
    )
    assert isinstance(outcome, Rejection)
    assert outcome.pdu.reason == RejectReason.CALLED_AE_NOT_RECOGNIZED


def test_required_user_identity():
    policy = make_policy(require_user_identity=True, on_user_identity=lambda item: (True, b""))
    outcome = negotiate(policy=policy)
    assert isinstance(outcome, Rejection)
    assert outcome.pdu == AssociateRJ(
        RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.NO_REASON
    )
    assert outcome.reason == "user identity required, none proposed"
    identity = UserIdentityRQSubItem(UserIdentityType.USERNAME_AND_PASSCODE, True, b"a", b"b")
    accepted = negotiate(make_request(user_identity=identity), policy)
    assert isinstance(accepted, Acceptance)
    assert accepted.user_identity == identity


CALLED_NOT_RECOGNIZED = AssociateRJ(
    RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLED_AE_NOT_RECOGNIZED
)


@pytest.mark.parametrize("title", ["A\x00\x01\x02\x1b[2J", "BAD\\TITLE", "TAB\tTITLE", "DEL\x7f"])
@pytest.mark.parametrize(
    ("field", "expected"),
    [("calling_ae_title", CALLING_NOT_RECOGNIZED), ("called_ae_title", CALLED_NOT_RECOGNIZED)],
)
def test_titles_with_control_characters_or_backslash_are_rejected(title, field, expected):
    """PS3.5 6.2: VR AE holds no control character and no backslash; the peer is told which
    title was not recognized (reason 3 calling, 7 called) and the log reason shows no raw
    control character."""
    request = dataclasses.replace(make_request(), **{field: title.ljust(16)})
    outcome = negotiate(request)
    assert isinstance(outcome, Rejection)
    assert outcome.pdu == expected
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in outcome.reason)


def test_titles_padded_with_nul_or_spaces_are_still_accepted():
    request = dataclasses.replace(make_request(), calling_ae_title="STORESCU\0\0\0\0\0\0\0\0")
    assert isinstance(negotiate(request), Acceptance)
