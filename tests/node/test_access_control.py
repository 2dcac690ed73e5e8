# Access control on a listening AE: calling AE titles bound to source networks, associations
# per calling AE title, required user identity (with a users file), and credentials kept out
# of the logs (PS3.8 Table 9-21, PS3.7 D.3.3.7).
from __future__ import annotations

import logging

import pytest

from node.ul.items import UserIdentityRQSubItem, UserIdentityType
from node.ul.pdu import AssociateRJ, RejectReason, RejectResult, RejectSource
from node.users import UserTable, add_user
from tests.synthetic import VERIFICATION, wait_until

CALLING_NOT_RECOGNIZED = AssociateRJ(
    RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLING_AE_NOT_RECOGNIZED
)
LOCAL_LIMIT = AssociateRJ(
    RejectResult.TRANSIENT,
    RejectSource.SERVICE_PROVIDER_PRESENTATION,
    RejectReason.LOCAL_LIMIT_EXCEEDED,
)
NO_REASON = AssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.NO_REASON)


def _scp(make_ae, **attributes):
    scp = make_ae("OURSCP", **attributes)
    scp.add_supported_context(VERIFICATION)
    scp.maximum_associations = 8
    scp.start(block=False)
    return scp


def _associate(make_ae, port: int, title: str = "MODALITY", **kwargs):
    scu = make_ae(title)
    scu.add_requested_context(VERIFICATION)
    return scu.associate("127.0.0.1", port, ae_title="OURSCP", **kwargs)


def _rejection(association) -> AssociateRJ | None:
    assert association.is_rejected
    rejection: AssociateRJ | None = association.asynchronous.rejection
    return rejection


# --- calling AE titles bound to networks ----------------------------------------------------


def test_calling_ae_outside_its_network_is_rejected_with_a_log_line(make_ae, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode.acceptor")
    scp = _scp(make_ae, calling_aet_networks={"MODALITY": ["10.0.0.0/8"]})
    association = _associate(make_ae, scp.port)
    assert _rejection(association) == CALLING_NOT_RECOGNIZED
    lines = [r.getMessage() for r in caplog.records if r.name == "dicomnode.acceptor"]
    assert any(
        "rejected association from 127.0.0.1" in line
        and "'MODALITY' not recognized from address 127.0.0.1" in line
        and "10.0.0.0/8" in line
        for line in lines
    ), lines
    other = _associate(make_ae, scp.port, "WORKSTATION")  # not bound: not restricted
    assert other.is_established
    other.release()


def test_binding_to_one_address_refuses_another_local_address(make_ae):
    scp = _scp(make_ae, calling_aet_networks={"MODALITY": ["127.0.0.1"]})
    inside = _associate(make_ae, scp.port)
    assert inside.is_established
    inside.release()
    outside = _associate(make_ae, scp.port, bind_address=("127.0.0.2", 0))
    assert _rejection(outside) == CALLING_NOT_RECOGNIZED


def test_wildcard_binding_covers_titles_not_listed(make_ae):
    scp = _scp(make_ae, calling_aet_networks={"*": ["127.0.0.2/32"], "MODALITY": ["127.0.0.0/8"]})
    assert _rejection(_associate(make_ae, scp.port, "OTHER")) == CALLING_NOT_RECOGNIZED
    from_two = _associate(make_ae, scp.port, "OTHER", bind_address=("127.0.0.2", 0))
    assert from_two.is_established
    from_two.release()
    listed = _associate(make_ae, scp.port)
    assert listed.is_established
    listed.release()


def test_bad_networks_are_refused_at_once(make_ae):
    ae = make_ae("OURSCP")
    with pytest.raises(ValueError, match="MODALITY"):
        ae.calling_aet_networks = {"MODALITY": ["10.0.0.0/40"]}
    ae.calling_aet_networks = {b"MODALITY ": "10.0.0.0/8"}
    assert ae.calling_aet_networks == {"MODALITY": ["10.0.0.0/8"]}
    with pytest.raises(ValueError, match="positive integer"):
        ae.maximum_associations_per_aet = 0
    ae.maximum_associations_per_aet = None
    assert ae.maximum_associations_per_aet is None


# --- associations per calling AE title ------------------------------------------------------


def test_associations_per_calling_ae_title_are_limited(make_ae, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode.acceptor")
    scp = _scp(make_ae, maximum_associations_per_aet=1)
    first = _associate(make_ae, scp.port)
    assert first.is_established
    second = _associate(make_ae, scp.port)
    assert _rejection(second) == LOCAL_LIMIT
    assert any(
        "local limit exceeded: 1 associations from calling AE title 'MODALITY' active "
        "(limit 1 per calling AE title)" in r.getMessage()
        for r in caplog.records
    )
    other = _associate(make_ae, scp.port, "WORKSTATION")
    assert other.is_established
    other.release()
    first.release()
    wait_until(lambda: not scp.active_associations, "the association to end")
    again = _associate(make_ae, scp.port)
    assert again.is_established
    again.release()


# --- user identity --------------------------------------------------------------------------


def _identity(user: bytes, password: bytes, positive: bool = True) -> UserIdentityRQSubItem:
    return UserIdentityRQSubItem(UserIdentityType.USERNAME_AND_PASSCODE, positive, user, password)


def test_users_file_checks_username_and_password(make_ae, tmp_path):
    path = tmp_path / "users"
    add_user(path, "alice", "correct horse")
    path.write_text(path.read_text() + "bob:plain-secret\n")
    users = UserTable.load(path)
    scp = _scp(make_ae, on_user_identity=users.on_user_identity, require_user_identity=True)

    good = _associate(make_ae, scp.port, ext_neg=[_identity(b"alice", b"correct horse")])
    assert good.is_established
    assert good.acceptance.user_identity_response == b""  # the positive response, empty
    good.release()
    plain = _associate(make_ae, scp.port, ext_neg=[_identity(b"bob", b"plain-secret", False)])
    assert plain.is_established
    assert plain.acceptance.user_identity_response is None  # none asked for
    plain.release()
    for identity in (
        _identity(b"alice", b"wrong"),
        _identity(b"mallory", b"correct horse"),
        UserIdentityRQSubItem(UserIdentityType.USERNAME, True, b"alice"),
        UserIdentityRQSubItem(UserIdentityType.JWT, True, b"header.payload.signature"),
    ):
        refused = _associate(make_ae, scp.port, ext_neg=[identity])
        assert _rejection(refused) == NO_REASON, identity
    assert _rejection(_associate(make_ae, scp.port)) == NO_REASON  # no identity at all


def test_passwords_never_reach_the_logs(make_ae, caplog):
    caplog.set_level(logging.DEBUG)
    hidden = "Pa55-never-logged"
    seen = []

    def on_user_identity(identity_type, primary, secondary, info):
        seen.append(primary)
        return secondary == hidden.encode(), None

    scp = _scp(make_ae, on_user_identity=on_user_identity)
    good = _associate(make_ae, scp.port, ext_neg=[_identity(b"alice", hidden.encode())])
    assert good.is_established
    assert good.send_c_echo().Status == 0x0000
    good.release()
    wrong = "Wr0ng-never-logged"
    bad = _associate(make_ae, scp.port, ext_neg=[_identity(b"alice", wrong.encode())])
    assert bad.is_rejected
    assert seen == [b"alice", b"alice"]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "rejected association" in text  # the logs were captured
    assert hidden not in text
    assert wrong not in text
    assert repr(_identity(b"alice", hidden.encode())).count(hidden) == 0
