"""Property: whatever we propose and whatever we support, the acceptor's A-ASSOCIATE-AC
passes the requestor's checks and both sides agree on IDs, transfer syntaxes, roles and the
asynchronous operations window (PS3.8 9.3.2-9.3.3, PS3.7 D.3.3.3-D.3.3.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.acse.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from node.acse.negotiation import Acceptance, negotiate_as_acceptor
from node.acse.requestor import validate_associate_ac
from tests.acse.support import (
    CT_IMAGE_STORAGE,
    JPEG_BASELINE,
    MR_IMAGE_STORAGE,
    make_policy,
    make_request,
    over_the_wire,
)

ABSTRACT_SYNTAXES = (VERIFICATION_SOP_CLASS, CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, "1.2.3.4")
TRANSFER_SYNTAXES = (
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    JPEG_BASELINE,
)

# Half the time both roles are set, so that role selection answers are common.
roles = st.tuples(st.booleans(), st.booleans()) | st.tuples(
    st.none() | st.booleans(), st.none() | st.booleans()
)
syntax_lists = st.lists(st.sampled_from(TRANSFER_SYNTAXES), min_size=1, max_size=5, unique=True)
windows = st.integers(min_value=0, max_value=5)


@st.composite
def proposals(draw: st.DrawFn) -> list[PresentationContext]:
    role_by_class = {uid: draw(roles) for uid in ABSTRACT_SYNTAXES}
    count = draw(st.integers(min_value=1, max_value=24))
    contexts = []
    for _ in range(count):
        uid = draw(st.sampled_from(ABSTRACT_SYNTAXES))
        scu, scp = role_by_class[uid]
        contexts.append(PresentationContext(uid, tuple(draw(syntax_lists)), scu, scp))
    return contexts


@st.composite
def supported_sets(draw: st.DrawFn) -> tuple[PresentationContext, ...]:
    uids = draw(st.lists(st.sampled_from(ABSTRACT_SYNTAXES), unique=True, max_size=4))
    return tuple(PresentationContext(uid, tuple(draw(syntax_lists)), *draw(roles)) for uid in uids)


@given(
    proposed=proposals(),
    supported=supported_sets(),
    window=st.tuples(windows, windows),
    capacity=st.tuples(windows, windows),
)
def test_both_sides_agree(proposed, supported, window, capacity):
    request = over_the_wire(
        make_request(*proposed, operations_invoked=window[0], operations_performed=window[1])
    )
    policy = make_policy(
        supported_contexts=supported,
        maximum_operations_performed=capacity[0],
        maximum_operations_invoked=capacity[1],
    )
    acceptance = negotiate_as_acceptor(request, policy)
    assert isinstance(acceptance, Acceptance)
    agreed = validate_associate_ac(request, over_the_wire(acceptance.pdu))

    assert agreed.notes == ()
    assert [c.context_id for c in agreed.contexts] == [c.context_id for c in acceptance.contexts]
    by_class = {context.abstract_syntax: context for context in supported}
    for ours, theirs, wanted in zip(agreed.contexts, acceptance.contexts, proposed, strict=True):
        assert ours.abstract_syntax == theirs.abstract_syntax == wanted.abstract_syntax
        assert ours.result == theirs.result
        assert ours.transfer_syntax == theirs.transfer_syntax
        if not ours.accepted:
            assert (ours.as_scu, ours.as_scp, theirs.as_scu, theirs.as_scp) == (False,) * 4
            continue
        # The first of the acceptor's syntaxes that we offered.
        offered = set(wanted.transfer_syntaxes)
        preferred = [s for s in by_class[wanted.abstract_syntax].transfer_syntaxes if s in offered]
        assert ours.transfer_syntax == preferred[0]
        # Roles mirror each other, and somebody can do something on every accepted context.
        assert (ours.as_scu, ours.as_scp) == (theirs.as_scp, theirs.as_scu)
        assert ours.as_scu or ours.as_scp
        # With a role selection answer, never a role we did not propose; else the defaults.
        if wanted.proposes_roles and _answered(acceptance, wanted):
            assert ours.as_scu <= bool(wanted.scu_role)
            assert ours.as_scp <= bool(wanted.scp_role)
        else:
            assert (ours.as_scu, ours.as_scp) == (True, False)

    assert (agreed.operations_invoked, agreed.operations_performed) == (
        acceptance.operations_invoked,
        acceptance.operations_performed,
    )
    for agreed_size, proposed_size in zip(
        (agreed.operations_invoked, agreed.operations_performed), window, strict=True
    ):
        assert proposed_size == 0 or 0 < agreed_size <= proposed_size


def _answered(acceptance: Acceptance, context: PresentationContext) -> bool:
    return any(
        item.sop_class_uid == context.abstract_syntax
        for item in acceptance.pdu.user_information.role_selections
    )
