"""build_associate_rq and validate_associate_ac: our side as association requestor
(PS3.8 9.3.2-9.3.3, PS3.7 D.3.3)."""

from __future__ import annotations

import pytest

from node.acse.contexts import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from node.acse.requestor import (
    MAXIMUM_PRESENTATION_CONTEXTS,
    PeerAcceptance,
    build_associate_rq,
    requestor_roles,
    validate_associate_ac,
)
from node.ul.errors import AbortReason, AbortSource, RemoteProtocolError
from node.ul.items import (
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    RoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserIdentityType,
    UserInformationItem,
)
from node.ul.pdu import AssociateAC
from tests.acse.support import (
    CT_IMAGE_STORAGE,
    JPEG_BASELINE,
    MR_IMAGE_STORAGE,
    OUR_UID,
    PEER_UID,
    make_request,
    over_the_wire,
)

# --- build_associate_rq --------------------------------------------------------------------


def test_minimal_request():
    request = build_associate_rq(
        calling_ae_title=" ME ",
        called_ae_title="PEER",
        contexts=[PresentationContext(VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,))],
        maximum_pdu_length=16382,
        implementation_class_uid=OUR_UID,
    )
    assert request.calling_ae_title == "ME"
    assert request.called_ae_title == "PEER"
    assert request.protocol_version == 1
    assert request.application_context.name == "1.2.840.10008.3.1.1.1"
    (item,) = request.presentation_contexts
    assert (item.context_id, item.abstract_syntax, item.transfer_syntaxes) == (
        1,
        VERIFICATION_SOP_CLASS,
        (IMPLICIT_VR_LITTLE_ENDIAN,),
    )
    assert request.user_information.sub_items == (
        MaximumLengthSubItem(16382),
        ImplementationClassUIDSubItem(OUR_UID),
    )
    over_the_wire(request)


def test_context_ids_are_odd_and_in_order():
    contexts = [PresentationContext(VERIFICATION_SOP_CLASS) for _ in range(4)]
    request = make_request(*contexts)
    assert [item.context_id for item in request.presentation_contexts] == [1, 3, 5, 7]


def test_given_context_ids_are_kept_and_the_rest_filled():
    request = make_request(
        PresentationContext(VERIFICATION_SOP_CLASS),
        PresentationContext(CT_IMAGE_STORAGE, context_id=1),
        PresentationContext(MR_IMAGE_STORAGE),
        PresentationContext(MR_IMAGE_STORAGE, context_id=255),
    )
    assert [item.context_id for item in request.presentation_contexts] == [3, 1, 5, 255]


def test_repeated_given_context_ids_are_refused():
    with pytest.raises(ValueError, match="same context ID"):
        make_request(
            PresentationContext(VERIFICATION_SOP_CLASS, context_id=3),
            PresentationContext(CT_IMAGE_STORAGE, context_id=3),
        )


def test_at_most_128_contexts():
    contexts = [PresentationContext(VERIFICATION_SOP_CLASS)] * MAXIMUM_PRESENTATION_CONTEXTS
    request = over_the_wire(make_request(*contexts))
    assert request.presentation_contexts[-1].context_id == 255
    with pytest.raises(ValueError, match="129 presentation contexts"):
        make_request(*contexts, PresentationContext(VERIFICATION_SOP_CLASS))


def test_at_least_one_context():
    with pytest.raises(ValueError, match="at least one"):
        make_request(contexts=[])


def test_role_items_once_per_sop_class():
    request = make_request(
        PresentationContext(CT_IMAGE_STORAGE, (IMPLICIT_VR_LITTLE_ENDIAN,), scp_role=True),
        PresentationContext(CT_IMAGE_STORAGE, (JPEG_BASELINE,), scu_role=False, scp_role=True),
        PresentationContext(MR_IMAGE_STORAGE, scu_role=True),
        PresentationContext(VERIFICATION_SOP_CLASS),
    )
    assert request.user_information.role_selections == (
        RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True),
        RoleSelectionSubItem(MR_IMAGE_STORAGE, True, False),
    )


def test_conflicting_roles_for_one_sop_class_are_refused():
    with pytest.raises(ValueError, match="different SCP/SCU roles"):
        make_request(
            PresentationContext(CT_IMAGE_STORAGE, scp_role=True),
            PresentationContext(CT_IMAGE_STORAGE, scu_role=True, scp_role=True),
        )


def test_window_item_only_when_not_one_one():
    assert make_request().user_information.asynchronous_operations_window is None
    for invoked, performed in ((0, 1), (1, 0), (4, 2)):
        request = make_request(operations_invoked=invoked, operations_performed=performed)
        assert request.user_information.asynchronous_operations_window == (
            AsynchronousOperationsWindowSubItem(invoked, performed)
        )


def test_every_sub_item_in_ascending_order():
    identity = UserIdentityRQSubItem(UserIdentityType.USERNAME, True, b"bob")
    common = SOPClassCommonExtendedNegotiationSubItem(CT_IMAGE_STORAGE, "1.2.840.10008.4.2")
    request = make_request(
        PresentationContext(CT_IMAGE_STORAGE, scp_role=True),
        operations_invoked=3,
        operations_performed=0,
        user_identity=identity,
        sop_class_extended={CT_IMAGE_STORAGE: bytearray(b"\x01")},
        sop_class_common_extended=[common],
    )
    assert request.user_information.sub_items == (
        MaximumLengthSubItem(32768),
        ImplementationClassUIDSubItem(PEER_UID),
        AsynchronousOperationsWindowSubItem(3, 0),
        RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True),
        ImplementationVersionNameSubItem("OFFIS_DCMTK_368"),
        SOPClassExtendedNegotiationSubItem(CT_IMAGE_STORAGE, b"\x01"),
        common,
        identity,
    )
    over_the_wire(request)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"calling_ae_title": ""}, "AE title"),
        ({"called_ae_title": "A" * 17}, "AE title"),
        ({"maximum_pdu_length": -1}, "maximum PDU length"),
        ({"implementation_class_uid": "abc"}, "implementation class UID"),
        ({"implementation_version_name": ""}, "implementation version name"),
        ({"operations_invoked": 65536}, "maximum operations invoked"),
        ({"operations_performed": -1}, "maximum operations performed"),
        ({"sop_class_extended": {"1.2.": b""}}, "extended negotiation"),
    ],
)
def test_bad_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_request(**overrides)


# --- validate_associate_ac -----------------------------------------------------------------


MAXIMUM_LENGTH_ONLY = (MaximumLengthSubItem(16384),)


def answer(request, *items, sub_items=MAXIMUM_LENGTH_ONLY) -> AssociateAC:
    return AssociateAC(
        called_ae_title=request.called_ae_title,
        calling_ae_title=request.calling_ae_title,
        presentation_contexts=tuple(PresentationContextItemAC(*item) for item in items),
        user_information=UserInformationItem(tuple(sub_items)),
    )


def two_context_request(**overrides):
    return make_request(
        PresentationContext(VERIFICATION_SOP_CLASS),
        PresentationContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN,)),
        **overrides,
    )


def test_valid_ac():
    request = two_context_request()
    accept = answer(
        request,
        (3, 3, EXPLICIT_VR_LITTLE_ENDIAN),
        (1, 0, EXPLICIT_VR_LITTLE_ENDIAN),
        sub_items=(
            MaximumLengthSubItem(16384),
            ImplementationClassUIDSubItem(OUR_UID),
            ImplementationVersionNameSubItem("DICOMNODE_010"),
        ),
    )
    outcome = validate_associate_ac(request, over_the_wire(accept))
    assert isinstance(outcome, PeerAcceptance)
    assert outcome.pdu == accept
    first, second = outcome.contexts
    assert (first.context_id, first.transfer_syntax, first.result) == (
        1,
        EXPLICIT_VR_LITTLE_ENDIAN,
        0,
    )
    assert (first.as_scu, first.as_scp) == (True, False)
    assert (second.context_id, second.transfer_syntax, second.result) == (3, None, 3)
    assert (second.as_scu, second.as_scp) == (False, False)
    assert outcome.accepted_contexts == (first,)
    assert outcome.calling_ae_title == "STORESCU"
    assert outcome.called_ae_title == "DICOMNODE"
    assert outcome.peer_maximum_length == 16384
    assert (outcome.operations_invoked, outcome.operations_performed) == (1, 1)
    assert outcome.peer_implementation_class_uid == OUR_UID
    assert outcome.peer_implementation_version_name == "DICOMNODE_010"
    assert outcome.user_identity_response is None
    assert outcome.sop_class_extended == ()
    assert outcome.notes == ()


def test_unanswered_context_counts_as_rejected():
    request = two_context_request()
    outcome = validate_associate_ac(
        request, answer(request, (1, 0, IMPLICIT_VR_LITTLE_ENDIAN), sub_items=())
    )
    assert outcome.contexts[1].result == 2
    assert not outcome.contexts[1].accepted
    assert outcome.notes == ("presentation context 3 was not answered",)
    assert outcome.peer_maximum_length == 0
    assert outcome.peer_implementation_class_uid is None


@pytest.mark.parametrize(
    ("items", "message", "reason"),
    [
        (((5, 0, IMPLICIT_VR_LITTLE_ENDIAN),), "context 5, which we did not propose", 6),
        (((1, 0, IMPLICIT_VR_LITTLE_ENDIAN), (1, 0, IMPLICIT_VR_LITTLE_ENDIAN)), "twice", 5),
        (((1, 5, IMPLICIT_VR_LITTLE_ENDIAN),), "undefined result 5", 6),
        (((3, 0, IMPLICIT_VR_LITTLE_ENDIAN),), "which we did not propose for it", 6),
        (((1, 0, None),), "syntax None", 6),
        (((1, 0, JPEG_BASELINE),), "1.2.840.10008.1.2.4.50", 6),
    ],
)
def test_invalid_ac(items, message, reason):
    request = two_context_request()
    with pytest.raises(RemoteProtocolError, match=message) as caught:
        validate_associate_ac(request, answer(request, *items))
    assert caught.value.reason == AbortReason(reason)
    assert caught.value.source == AbortSource.SERVICE_PROVIDER


def test_rejected_context_transfer_syntax_is_not_tested():
    request = two_context_request()
    outcome = validate_associate_ac(request, answer(request, (1, 1, JPEG_BASELINE), (3, 4, None)))
    assert [(c.result, c.transfer_syntax) for c in outcome.contexts] == [(1, None), (4, None)]


@pytest.mark.parametrize(
    ("proposed", "answered", "expected"),
    [
        ((4, 2), (2, 2), (2, 2)),
        ((0, 0), (5, 0), (5, 0)),
        ((3, 3), (9, 0), (3, 3)),  # never more than we proposed
        ((4, 2), None, (1, 1)),  # not answered: the default
        ((1, 1), (5, 5), (1, 1)),  # not proposed: any answer is ignored
    ],
)
def test_window(proposed, answered, expected):
    request = make_request(operations_invoked=proposed[0], operations_performed=proposed[1])
    subs = () if answered is None else (AsynchronousOperationsWindowSubItem(*answered),)
    outcome = validate_associate_ac(
        request, answer(request, (1, 0, IMPLICIT_VR_LITTLE_ENDIAN), sub_items=subs)
    )
    assert (outcome.operations_invoked, outcome.operations_performed) == expected


def test_requestor_roles():
    ct_both = RoleSelectionSubItem(CT_IMAGE_STORAGE, True, True)
    assert requestor_roles(None, None) == (True, False)
    assert requestor_roles(ct_both, None) == (True, False)
    assert requestor_roles(None, ct_both) == (True, False)
    assert requestor_roles(ct_both, ct_both) == (True, True)
    assert requestor_roles(ct_both, RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True)) == (
        False,
        True,
    )
    scp_only = RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True)
    # The acceptor granting a role we did not propose is ignored.
    assert requestor_roles(scp_only, ct_both) == (False, True)
    assert requestor_roles(scp_only, RoleSelectionSubItem(CT_IMAGE_STORAGE, True, False)) == (
        False,
        False,
    )


def test_roles_from_the_ac():
    request = make_request(
        PresentationContext(CT_IMAGE_STORAGE, scp_role=True),
        PresentationContext(MR_IMAGE_STORAGE, scp_role=True),
        PresentationContext(VERIFICATION_SOP_CLASS),
    )
    accept = answer(
        request,
        (1, 0, IMPLICIT_VR_LITTLE_ENDIAN),
        (3, 0, IMPLICIT_VR_LITTLE_ENDIAN),
        (5, 0, IMPLICIT_VR_LITTLE_ENDIAN),
        sub_items=(
            RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True),
            RoleSelectionSubItem(CT_IMAGE_STORAGE, False, False),  # a repeat: ignored
            RoleSelectionSubItem(VERIFICATION_SOP_CLASS, False, True),  # not proposed: ignored
        ),
    )
    ct, mr, verification = validate_associate_ac(request, accept).contexts
    assert (ct.as_scu, ct.as_scp) == (False, True)
    assert (mr.as_scu, mr.as_scp) == (True, False)  # no answer: the default roles
    assert (verification.as_scu, verification.as_scp) == (True, False)


IDENTITY = UserIdentityRQSubItem(UserIdentityType.JWT, True, b"header.payload.signature")


@pytest.mark.parametrize(
    ("identity", "response", "expected"),
    [
        (IDENTITY, UserIdentityACSubItem(b"ok"), b"ok"),
        (IDENTITY, None, None),
        (
            UserIdentityRQSubItem(UserIdentityType.USERNAME, False, b"bob"),
            UserIdentityACSubItem(b"x"),
            None,
        ),
        (None, UserIdentityACSubItem(b"x"), None),
    ],
)
def test_user_identity_response(identity, response, expected):
    request = make_request(user_identity=identity)
    subs = () if response is None else (response,)
    outcome = validate_associate_ac(
        request, answer(request, (1, 0, IMPLICIT_VR_LITTLE_ENDIAN), sub_items=subs)
    )
    assert outcome.user_identity_response == expected


def test_extended_negotiation_replies_for_what_we_proposed():
    request = make_request(sop_class_extended={CT_IMAGE_STORAGE: b"\x01"})
    reply = SOPClassExtendedNegotiationSubItem(CT_IMAGE_STORAGE, b"\x00")
    stray = SOPClassExtendedNegotiationSubItem(MR_IMAGE_STORAGE, b"\x00")
    outcome = validate_associate_ac(
        request, answer(request, (1, 0, IMPLICIT_VR_LITTLE_ENDIAN), sub_items=(stray, reply))
    )
    assert outcome.sop_class_extended == (reply,)
