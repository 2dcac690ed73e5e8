"""negotiate_as_acceptor: rejection reasons, context results, extended negotiation, hooks
(PS3.8 9.3.3-9.3.4, PS3.7 D.3.3)."""

from __future__ import annotations

import pytest

from node.acse.contexts import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from node.acse.negotiation import (
    MAXIMUM_HOOK_PAYLOAD,
    Acceptance,
    AcceptorPolicy,
    Rejection,
    negotiate_as_acceptor,
    window_minimum,
)
from node.ul.items import (
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextResult,
    RoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserIdentityType,
)
from node.ul.pdu import AssociateRJ
from tests.acse.support import (
    CT_IMAGE_STORAGE,
    JPEG_BASELINE,
    MR_IMAGE_STORAGE,
    OUR_UID,
    PEER_UID,
    make_policy,
    make_request,
    over_the_wire,
    raw_request,
)

Result = PresentationContextResult


def accept(request, policy=None, **kwargs) -> Acceptance:
    outcome = negotiate_as_acceptor(request, policy or make_policy(), **kwargs)
    assert isinstance(outcome, Acceptance), outcome
    over_the_wire(outcome.pdu)
    return outcome


def reject(request, policy=None, **kwargs) -> Rejection:
    outcome = negotiate_as_acceptor(request, policy or make_policy(), **kwargs)
    assert isinstance(outcome, Rejection), outcome
    return outcome


# --- a plain acceptance --------------------------------------------------------------------


def test_accepts_verification_with_our_preferred_transfer_syntax():
    request = make_request(
        PresentationContext(
            VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        )
    )
    outcome = accept(over_the_wire(request))
    (context,) = outcome.contexts
    assert context.accepted
    assert context.context_id == 1
    assert context.transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN  # our preference wins
    assert (context.as_scu, context.as_scp) == (False, True)
    assert outcome.accepted_contexts == outcome.contexts
    assert outcome.pdu.presentation_contexts == (
        PresentationContextItemAC(1, Result.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN),
    )
    assert outcome.pdu.user_information.sub_items == (
        MaximumLengthSubItem(16382),
        ImplementationClassUIDSubItem(OUR_UID),
        ImplementationVersionNameSubItem("DICOMNODE_010"),
    )
    assert outcome.pdu.called_ae_title == "DICOMNODE"
    assert outcome.pdu.calling_ae_title == "STORESCU"
    assert outcome.calling_ae_title == "STORESCU"
    assert outcome.called_ae_title == "DICOMNODE"
    assert outcome.peer_maximum_length == 32768
    assert (outcome.operations_invoked, outcome.operations_performed) == (1, 1)
    assert outcome.peer_implementation_class_uid == PEER_UID
    assert outcome.peer_implementation_version_name == "OFFIS_DCMTK_368"
    assert outcome.user_identity is None
    assert outcome.sop_class_extended == ()
    assert outcome.sop_class_common_extended == ()
    assert outcome.notes == ()


def test_no_version_name_when_policy_has_none():
    outcome = accept(make_request(), make_policy(implementation_version_name=None))
    assert outcome.pdu.user_information.implementation_version_name is None
    assert outcome.pdu.user_information.sub_items == (
        MaximumLengthSubItem(16382),
        ImplementationClassUIDSubItem(OUR_UID),
    )


def test_peer_without_maximum_length_or_implementation_uid():
    request = raw_request(((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),))
    outcome = accept(request)
    assert outcome.peer_maximum_length == 0
    assert outcome.peer_implementation_class_uid is None
    assert outcome.peer_implementation_version_name is None
    assert any("Maximum Length" in note for note in outcome.notes)
    assert outcome.contexts[0].accepted


# --- association rejections (PS3.8 Table 9-21) ----------------------------------------------


def test_protocol_version_not_supported():
    request = raw_request(
        ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),), protocol_version=2
    )
    outcome = reject(request)
    assert outcome.pdu == AssociateRJ(result=1, source=2, reason=2)
    assert "protocol version 0x0002" in outcome.reason


def test_local_limit_exceeded_is_transient():
    outcome = reject(make_request(), association_count=2, maximum_associations=2)
    assert outcome.pdu == AssociateRJ(result=2, source=3, reason=2)
    assert "2 of 2" in outcome.reason
    accept(make_request(), association_count=1, maximum_associations=2)
    accept(make_request(), association_count=500, maximum_associations=None)


def test_calling_ae_title_not_recognized():
    policy = make_policy(require_calling_aet=("MODALITY", " STORESCU "))
    assert policy.require_calling_aet == ("MODALITY", "STORESCU")
    accept(make_request(), policy)
    outcome = reject(make_request(calling_ae_title="INTRUDER"), policy)
    assert outcome.pdu == AssociateRJ(result=1, source=1, reason=3)
    assert "'INTRUDER'" in outcome.reason


def test_nul_padded_titles_are_compared_without_padding():
    policy = make_policy(require_calling_aet=("PEER",), require_called_aet=True)
    request = raw_request(
        ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        calling_ae_title="PEER\0\0\0",
        called_ae_title=" DICOMNODE\0",
    )
    outcome = accept(request, policy)
    assert (outcome.calling_ae_title, outcome.called_ae_title) == ("PEER", "DICOMNODE")
    assert outcome.pdu.calling_ae_title == "PEER\0\0\0"  # the AC echoes the RQ fields


def test_calling_ae_title_that_cannot_be_echoed_is_not_recognized():
    request = raw_request(
        ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),), calling_ae_title="ÉCHO"
    )
    assert reject(request).pdu == AssociateRJ(1, 1, 3)


def test_called_ae_title_not_recognized():
    policy = make_policy(require_called_aet=True)
    accept(make_request(called_ae_title="DICOMNODE"), policy)
    accept(
        raw_request(
            ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
            called_ae_title="  DICOMNODE",
        ),
        policy,
    )
    outcome = reject(make_request(called_ae_title="OTHER"), policy)
    assert outcome.pdu == AssociateRJ(result=1, source=1, reason=7)
    assert "'OTHER'" in outcome.reason
    # Without the requirement any called title is fine.
    accept(make_request(called_ae_title="OTHER"))


def test_called_ae_title_that_cannot_be_echoed_is_not_recognized():
    request = raw_request(
        ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),), called_ae_title="NÖDE"
    )
    assert reject(request).pdu == AssociateRJ(1, 1, 7)


def test_application_context_not_supported():
    request = raw_request(
        ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        application_context=ApplicationContextItem("1.2.3.4"),
    )
    outcome = reject(request)
    assert outcome.pdu == AssociateRJ(result=1, source=1, reason=2)
    assert "'1.2.3.4'" in outcome.reason


def test_application_context_padding_is_tolerated():
    request = raw_request(
        ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        application_context=ApplicationContextItem("1.2.840.10008.3.1.1.1 "),
    )
    assert accept(request).contexts[0].accepted


def test_no_presentation_context_is_rejected():
    outcome = reject(raw_request(()))
    assert outcome.pdu == AssociateRJ(result=1, source=1, reason=1)
    assert "no presentation context" in outcome.reason


def test_rejection_order_limit_before_titles():
    policy = make_policy(require_calling_aet=("X",), require_called_aet=True)
    request = make_request(calling_ae_title="Y", called_ae_title="Z")
    assert reject(request, policy, association_count=1, maximum_associations=1).pdu.source == 3
    assert reject(request, policy).pdu.reason == 3


# --- presentation context results (PS3.8 Table 9-18) ----------------------------------------


def test_every_context_result():
    request = raw_request(
        (
            (1, VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN,)),  # accepted
            (3, MR_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,)),  # abstract syntax unknown
            (5, CT_IMAGE_STORAGE, (JPEG_BASELINE,)),  # transfer syntax unknown
            (6, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),  # even ID
            (0, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),  # zero ID
            (7, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),  # repeated ID ...
            (7, CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,)),  # ... answered once
        )
    )
    outcome = accept(request)
    assert [(c.context_id, c.result) for c in outcome.contexts] == [
        (1, Result.ACCEPTANCE),
        (3, Result.ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (5, Result.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (6, Result.NO_REASON),
        (0, Result.NO_REASON),
        (7, Result.NO_REASON),
    ]
    assert outcome.pdu.presentation_contexts == (
        PresentationContextItemAC(1, 0, EXPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextItemAC(3, 3, IMPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextItemAC(5, 4, JPEG_BASELINE),
        PresentationContextItemAC(6, 2, IMPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextItemAC(0, 2, IMPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextItemAC(7, 2, IMPLICIT_VR_LITTLE_ENDIAN),
    )
    for context in outcome.contexts[1:]:
        assert context.transfer_syntax is None
        assert not context.as_scu
        assert not context.as_scp
    assert outcome.accepted_contexts == outcome.contexts[:1]
    assert outcome.contexts[5].abstract_syntax == VERIFICATION_SOP_CLASS


def test_no_acceptable_context_still_sends_an_ac():
    """DCMTK storescp and pynetdicom answer with every context rejected."""
    request = make_request(
        PresentationContext(MR_IMAGE_STORAGE), PresentationContext(JPEG_BASELINE)
    )
    outcome = accept(request)
    assert outcome.accepted_contexts == ()
    assert [c.result for c in outcome.contexts] == [3, 3]
    assert "no presentation context could be accepted" in outcome.notes


def test_same_abstract_syntax_in_several_contexts():
    request = make_request(
        PresentationContext(CT_IMAGE_STORAGE, (JPEG_BASELINE,)),
        PresentationContext(CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContext(
            CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
        ),
    )
    outcome = accept(request)
    assert [(c.context_id, c.result, c.transfer_syntax) for c in outcome.contexts] == [
        (1, 4, None),
        (3, 0, IMPLICIT_VR_LITTLE_ENDIAN),
        (5, 0, EXPLICIT_VR_LITTLE_ENDIAN),
    ]


# --- SCP/SCU role selection (PS3.7 D.3.3.4) ------------------------------------------------

ROLE_TABLE = [
    # requestor proposes (scu, scp) | acceptor allows (scu, scp) | reply | acceptor roles
    (None, (True, True), None, (False, True)),
    ((True, True), (None, None), None, (False, True)),
    ((True, True), (True, None), None, (False, True)),
    ((True, True), (True, True), (True, True), (True, True)),
    ((True, True), (True, False), (True, False), (False, True)),
    ((True, True), (False, True), (False, True), (True, False)),
    ((True, True), (False, False), None, None),
    ((True, False), (True, True), (True, False), (False, True)),
    ((True, False), (True, False), (True, False), (False, True)),
    ((True, False), (False, True), None, None),
    ((True, False), (False, False), None, None),
    ((False, True), (True, True), (False, True), (True, False)),
    ((False, True), (False, True), (False, True), (True, False)),
    ((False, True), (True, False), None, None),
    ((False, True), (None, None), None, (False, True)),
    ((False, False), (True, True), None, None),
    ((False, False), (None, None), None, (False, True)),
]


@pytest.mark.parametrize(("proposed", "allowed", "reply", "roles"), ROLE_TABLE)
def test_role_selection_truth_table(proposed, allowed, reply, roles):
    from node.acse.requestor import validate_associate_ac

    scu, scp = proposed or (None, None)
    request = make_request(PresentationContext(CT_IMAGE_STORAGE, scu_role=scu, scp_role=scp))
    policy = make_policy(
        supported_contexts=(
            PresentationContext(CT_IMAGE_STORAGE, scu_role=allowed[0], scp_role=allowed[1]),
        )
    )
    outcome = accept(request, policy)
    (context,) = outcome.contexts
    sent = outcome.pdu.user_information.role_selections
    if roles is None:
        assert context.result == Result.USER_REJECTION
        assert not context.as_scu
        assert not context.as_scp
        assert sent == ()
        return
    assert context.accepted
    assert (context.as_scu, context.as_scp) == roles
    assert sent == (() if reply is None else (RoleSelectionSubItem(CT_IMAGE_STORAGE, *reply),))
    # The requestor's view mirrors ours: it is SCU where we are SCP, and SCP where we are SCU.
    (theirs,) = validate_associate_ac(request, over_the_wire(outcome.pdu)).contexts
    assert (theirs.as_scu, theirs.as_scp) == (context.as_scp, context.as_scu)


def test_role_reply_once_per_sop_class_and_only_when_accepted():
    request = make_request(
        PresentationContext(CT_IMAGE_STORAGE, (JPEG_BASELINE,), scu_role=True, scp_role=True),
        PresentationContext(
            CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,), scu_role=True, scp_role=True
        ),
        PresentationContext(
            CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN,), scu_role=True, scp_role=True
        ),
        PresentationContext(MR_IMAGE_STORAGE, (JPEG_BASELINE,), scp_role=True),
    )
    policy = make_policy(
        supported_contexts=(
            PresentationContext(CT_IMAGE_STORAGE, scu_role=True, scp_role=True),
            PresentationContext(MR_IMAGE_STORAGE, scu_role=True, scp_role=True),
        )
    )
    outcome = accept(request, policy)
    assert [c.result for c in outcome.contexts] == [4, 0, 0, 4]
    assert outcome.pdu.user_information.role_selections == (
        RoleSelectionSubItem(CT_IMAGE_STORAGE, True, True),
    )


def test_role_replies_follow_the_requestor_order():
    request = make_request(
        PresentationContext(MR_IMAGE_STORAGE, scp_role=True),
        PresentationContext(CT_IMAGE_STORAGE, scp_role=True),
    )
    policy = make_policy(
        supported_contexts=(
            PresentationContext(CT_IMAGE_STORAGE, scu_role=False, scp_role=True),
            PresentationContext(MR_IMAGE_STORAGE, scu_role=False, scp_role=True),
        )
    )
    outcome = accept(request, policy)
    assert [r.sop_class_uid for r in outcome.pdu.user_information.role_selections] == [
        MR_IMAGE_STORAGE,
        CT_IMAGE_STORAGE,
    ]
    assert all((c.as_scu, c.as_scp) == (True, False) for c in outcome.contexts)


def test_repeated_and_stray_role_items_from_the_peer():
    request = raw_request(
        ((1, CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        (
            MaximumLengthSubItem(0),
            RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True),
            RoleSelectionSubItem(CT_IMAGE_STORAGE, True, False),
            RoleSelectionSubItem(MR_IMAGE_STORAGE, True, True),
        ),
    )
    outcome = accept(request)
    (context,) = outcome.contexts
    assert (context.as_scu, context.as_scp) == (True, False)  # the first item counts
    assert outcome.pdu.user_information.role_selections == (
        RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True),
    )
    assert any("repeated role selection" in note for note in outcome.notes)
    assert any(MR_IMAGE_STORAGE in note and "no context" in note for note in outcome.notes)


# --- asynchronous operations window (PS3.7 D.3.3.3) ----------------------------------------


def test_window_minimum_treats_zero_as_unlimited():
    assert window_minimum(0, 0) == 0
    assert window_minimum(0, 5) == 5
    assert window_minimum(5, 0) == 5
    assert window_minimum(3, 5) == 3


def test_window_not_answered_when_not_proposed():
    outcome = accept(make_request(), make_policy(maximum_operations_performed=8))
    assert outcome.pdu.user_information.asynchronous_operations_window is None
    assert (outcome.operations_invoked, outcome.operations_performed) == (1, 1)


@pytest.mark.parametrize(
    ("proposed", "supported", "answered"),
    [
        ((5, 3), (2, 4), (2, 3)),  # (invoked, performed) vs (our performed, our invoked)
        ((0, 0), (0, 0), (0, 0)),
        ((0, 0), (1, 1), (1, 1)),
        ((3, 0), (0, 7), (3, 7)),
        ((1, 1), (4, 4), (1, 1)),
    ],
)
def test_window_negotiated_down(proposed, supported, answered):
    request = make_request(operations_invoked=proposed[0], operations_performed=proposed[1])
    if proposed == (1, 1):  # our builder omits a 1/1 window; a peer may still send it
        request = raw_request(
            ((1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
            (AsynchronousOperationsWindowSubItem(1, 1),),
        )
    policy = make_policy(
        maximum_operations_performed=supported[0], maximum_operations_invoked=supported[1]
    )
    outcome = accept(request, policy)
    assert outcome.pdu.user_information.asynchronous_operations_window == (
        AsynchronousOperationsWindowSubItem(*answered)
    )
    assert (outcome.operations_invoked, outcome.operations_performed) == answered
    types = [type(s).__name__ for s in outcome.pdu.user_information.sub_items]
    assert types.index("AsynchronousOperationsWindowSubItem") == 2


def test_window_hook_overrides_but_never_exceeds_the_proposal():
    seen = []

    def hook(invoked, performed):
        seen.append((invoked, performed))
        return 10, 0

    outcome = accept(
        make_request(operations_invoked=4, operations_performed=4),
        make_policy(on_async_ops_window=hook),
    )
    assert seen == [(4, 4)]
    assert (outcome.operations_invoked, outcome.operations_performed) == (4, 4)
    hooked = accept(
        make_request(operations_invoked=0, operations_performed=6),
        make_policy(on_async_ops_window=lambda invoked, performed: (2, 3)),
    )
    assert (hooked.operations_invoked, hooked.operations_performed) == (2, 3)


def failing_hook(*_arguments):
    raise RuntimeError("hook exploded")


@pytest.mark.parametrize(
    ("hook", "note"),
    [
        (failing_hook, "hook failed"),
        (lambda invoked, performed: "nonsense", "nonsense"),
        (lambda invoked, performed: (1,), "nonsense"),
        (lambda invoked, performed: (1, 70000), "nonsense"),
        (lambda invoked, performed: (1.0, 2), "nonsense"),
        (lambda invoked, performed: (True, 2), "nonsense"),
        (lambda invoked, performed: [1, 2], "nonsense"),
    ],
)
def test_window_hook_failures_fall_back_to_the_policy(hook, note):
    outcome = accept(
        make_request(operations_invoked=5, operations_performed=5),
        make_policy(on_async_ops_window=hook, maximum_operations_performed=2),
    )
    assert (outcome.operations_invoked, outcome.operations_performed) == (2, 1)
    assert any(note in n for n in outcome.notes)


# --- SOP class extended negotiation (PS3.7 D.3.3.5) ----------------------------------------


def extended_request():
    return make_request(
        sop_class_extended={CT_IMAGE_STORAGE: b"\x01\x00", MR_IMAGE_STORAGE: b"\x02"},
    )


def test_extended_negotiation_without_hook_is_not_answered():
    outcome = accept(extended_request())
    assert outcome.pdu.user_information.sop_class_extended == ()
    assert outcome.sop_class_extended == ()


def test_extended_negotiation_replies_come_from_the_hook():
    seen = []

    def hook(items):
        seen.append(dict(items))
        return {MR_IMAGE_STORAGE: bytearray(b"\x00"), CT_IMAGE_STORAGE: b"\x01"}

    outcome = accept(extended_request(), make_policy(on_sop_class_extended=hook))
    assert seen == [{CT_IMAGE_STORAGE: b"\x01\x00", MR_IMAGE_STORAGE: b"\x02"}]
    expected = (
        SOPClassExtendedNegotiationSubItem(CT_IMAGE_STORAGE, b"\x01"),
        SOPClassExtendedNegotiationSubItem(MR_IMAGE_STORAGE, b"\x00"),
    )
    assert outcome.sop_class_extended == expected
    sub_items = outcome.pdu.user_information.sub_items
    assert sub_items[-2:] == expected  # after the implementation version name
    assert isinstance(sub_items[-3], ImplementationVersionNameSubItem)
    assert outcome.notes == ()


def test_extended_negotiation_hook_answers_only_some():
    outcome = accept(
        extended_request(),
        make_policy(on_sop_class_extended=lambda items: {MR_IMAGE_STORAGE: b"\x09"}),
    )
    assert outcome.sop_class_extended == (
        SOPClassExtendedNegotiationSubItem(MR_IMAGE_STORAGE, b"\x09"),
    )


def test_extended_negotiation_first_item_per_sop_class_counts():
    request = raw_request(
        ((1, CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        (
            SOPClassExtendedNegotiationSubItem(CT_IMAGE_STORAGE, b"first"),
            SOPClassExtendedNegotiationSubItem(CT_IMAGE_STORAGE, b"second"),
        ),
    )
    seen: list[dict[str, bytes]] = []

    def hook(items: dict[str, bytes]) -> dict[str, bytes]:
        seen.append(items)
        return {}

    accept(request, make_policy(on_sop_class_extended=hook))
    assert seen == [{CT_IMAGE_STORAGE: b"first"}]


@pytest.mark.parametrize(
    ("hook", "note"),
    [
        (failing_hook, "hook failed"),
        (lambda items: [b"x"], "did not answer a mapping"),
        (lambda items: {"1.2.3": b"x"}, "not proposed were dropped"),
        (lambda items: {CT_IMAGE_STORAGE: "text"}, "not bytes"),
        (lambda items: {CT_IMAGE_STORAGE: b"x" * (MAXIMUM_HOOK_PAYLOAD + 1)}, "fitting size"),
    ],
)
def test_extended_negotiation_hook_failures(hook, note):
    outcome = accept(extended_request(), make_policy(on_sop_class_extended=hook))
    assert outcome.pdu.user_information.sop_class_extended == ()
    assert any(note in n for n in outcome.notes)


def test_extended_hook_not_called_without_items():
    calls: list[object] = []
    accept(make_request(), make_policy(on_sop_class_extended=calls.append))
    assert calls == []


# --- SOP class common extended negotiation (PS3.7 D.3.3.6) ---------------------------------

COMMON_CT = SOPClassCommonExtendedNegotiationSubItem(
    CT_IMAGE_STORAGE, "1.2.840.10008.4.2", ("1.2.840.10008.5.1.4.1.1.2.1",)
)
COMMON_MR = SOPClassCommonExtendedNegotiationSubItem(MR_IMAGE_STORAGE, "1.2.840.10008.4.2")


def common_request():
    return make_request(sop_class_common_extended=(COMMON_CT, COMMON_MR))


def test_common_extended_has_no_ac_form():
    seen = []

    def hook(items):
        seen.append(items)
        return {CT_IMAGE_STORAGE: items[CT_IMAGE_STORAGE], MR_IMAGE_STORAGE: "no"}

    outcome = accept(common_request(), make_policy(on_sop_class_common_extended=hook))
    assert seen == [{CT_IMAGE_STORAGE: COMMON_CT, MR_IMAGE_STORAGE: COMMON_MR}]
    assert outcome.sop_class_common_extended == (COMMON_CT,)
    assert outcome.pdu.user_information.sop_class_common_extended == ()
    assert b"\x57\x00" not in outcome.pdu.user_information.encode()


def test_common_extended_without_hook_accepts_none():
    outcome = accept(common_request())
    assert outcome.sop_class_common_extended == ()


@pytest.mark.parametrize(
    ("hook", "note"),
    [(failing_hook, "hook failed"), (lambda items: None, "did not answer a mapping")],
)
def test_common_extended_hook_failures(hook, note):
    outcome = accept(common_request(), make_policy(on_sop_class_common_extended=hook))
    assert outcome.sop_class_common_extended == ()
    assert any(note in n for n in outcome.notes)


def test_common_extended_hook_not_called_without_items():
    calls: list[object] = []
    accept(make_request(), make_policy(on_sop_class_common_extended=calls.append))
    assert calls == []


# --- user identity (PS3.7 D.3.3.7) ----------------------------------------------------------


def identity(positive: bool = True) -> UserIdentityRQSubItem:
    return UserIdentityRQSubItem(
        UserIdentityType.USERNAME_AND_PASSCODE, positive, b"alice", b"s3cret"
    )


def test_identity_without_hook_is_accepted_without_response():
    outcome = accept(make_request(user_identity=identity()))
    assert outcome.user_identity == identity()
    assert outcome.pdu.user_information.user_identity is None
    assert any("without a check" in note for note in outcome.notes)


def test_identity_accepted_with_response():
    seen = []

    def hook(item):
        seen.append(item)
        return True, bytearray(b"token")

    outcome = accept(make_request(user_identity=identity()), make_policy(on_user_identity=hook))
    assert seen == [identity()]
    assert outcome.pdu.user_information.sub_items[-1] == UserIdentityACSubItem(b"token")
    assert outcome.user_identity == identity()


@pytest.mark.parametrize(
    ("positive", "answer"),
    [(False, (True, b"token")), (True, (True, None)), (False, (1, None))],
)
def test_identity_accepted_without_response(positive, answer):
    outcome = accept(
        make_request(user_identity=identity(positive)),
        make_policy(on_user_identity=lambda item: answer),
    )
    assert outcome.pdu.user_information.user_identity is None


def test_identity_empty_response_is_sent_when_requested():
    outcome = accept(
        make_request(user_identity=identity()),
        make_policy(on_user_identity=lambda item: (True, b"")),
    )
    assert outcome.pdu.user_information.user_identity == UserIdentityACSubItem(b"")


@pytest.mark.parametrize(
    ("hook", "reason"),
    [
        (lambda item: (False, None), "rejected"),
        (lambda item: (False, b"denied"), "rejected"),
        (failing_hook, "hook failed: RuntimeError: hook exploded"),
        (lambda item: True, "did not answer"),
        (lambda item: (True, "text"), "did not answer"),
        (lambda item: (True, b"x" * (MAXIMUM_HOOK_PAYLOAD + 1)), "did not answer"),
    ],
)
def test_identity_refused_or_hook_failure_rejects(hook, reason):
    outcome = reject(make_request(user_identity=identity()), make_policy(on_user_identity=hook))
    assert outcome.pdu == AssociateRJ(result=1, source=1, reason=1)
    assert reason in outcome.reason
    assert "s3cret" not in outcome.reason


def test_identity_hook_not_called_without_identity():
    calls: list[object] = []
    accept(make_request(), make_policy(on_user_identity=calls.append))
    assert calls == []


def test_full_user_information_order_matches_dcmtk():
    request = make_request(
        PresentationContext(CT_IMAGE_STORAGE, scp_role=True),
        operations_invoked=2,
        operations_performed=2,
        user_identity=identity(),
        sop_class_extended={CT_IMAGE_STORAGE: b"\x01"},
    )
    policy = make_policy(
        maximum_operations_performed=2,
        maximum_operations_invoked=2,
        on_user_identity=lambda item: (True, b"ok"),
        on_sop_class_extended=lambda items: items,
    )
    outcome = accept(request, policy)
    kinds = [type(s).__name__ for s in outcome.pdu.user_information.sub_items]
    assert kinds == [
        "MaximumLengthSubItem",
        "ImplementationClassUIDSubItem",
        "AsynchronousOperationsWindowSubItem",
        "RoleSelectionSubItem",
        "ImplementationVersionNameSubItem",
        "SOPClassExtendedNegotiationSubItem",
        "UserIdentityACSubItem",
    ]
    encoded = outcome.pdu.user_information.encode()
    types = []
    offset = 4
    while offset < len(encoded):
        types.append(encoded[offset])
        offset += 4 + int.from_bytes(encoded[offset + 2 : offset + 4], "big")
    assert types == sorted(types)


# --- policy validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ae_title": ""}, "AE title"),
        ({"require_calling_aet": ("OK", "BAD\\TITLE")}, "AE title"),
        (
            {
                "supported_contexts": (
                    PresentationContext(VERIFICATION_SOP_CLASS),
                    PresentationContext(VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN,)),
                )
            },
            "supported twice",
        ),
        ({"maximum_pdu_length": -1}, "maximum PDU length"),
        ({"maximum_pdu_length": 1 << 32}, "maximum PDU length"),
        ({"implementation_class_uid": "1.2.03"}, "implementation class UID"),
        ({"implementation_version_name": "X" * 17}, "implementation version name"),
        ({"maximum_operations_performed": 65536}, "maximum operations performed"),
        ({"maximum_operations_invoked": -1}, "maximum operations invoked"),
    ],
)
def test_policy_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_policy(**overrides)


def test_policy_normalizes_its_fields():
    policy = make_policy(
        ae_title=" NODE ",
        supported_contexts=[PresentationContext(VERIFICATION_SOP_CLASS)],
        require_calling_aet=["A"],
        maximum_pdu_length=0,
    )
    assert policy.ae_title == "NODE"
    assert policy.supported_contexts == (PresentationContext(VERIFICATION_SOP_CLASS),)
    assert policy.require_calling_aet == ("A",)
    assert dict(policy.contexts_by_abstract_syntax) == {
        VERIFICATION_SOP_CLASS: PresentationContext(VERIFICATION_SOP_CLASS)
    }
    assert isinstance(policy, AcceptorPolicy)
    assert hash(policy) == hash(
        make_policy(
            ae_title="NODE",
            supported_contexts=(PresentationContext(VERIFICATION_SOP_CLASS),),
            require_calling_aet=("A",),
            maximum_pdu_length=0,
        )
    )
    accepted = accept(make_request(calling_ae_title="A", called_ae_title="NODE"), policy)
    assert accepted.pdu.user_information.maximum_length == 0
