# Association negotiation, requestor side (PS3.8 7.1 and 9.3.2-9.3.3, PS3.7 Annex D).
#
# Rules: pure functions: our contexts and options in, an A-ASSOCIATE-RQ out; the peer's
# A-ASSOCIATE-AC checked against that request. Our own bad configuration raises ValueError;
# an AC that contradicts the request raises RemoteProtocolError (the caller aborts).
# Stdlib only, no I/O, no clock.
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from node.acse.contexts import (
    MAXIMUM_UINT16,
    MAXIMUM_UINT32,
    NegotiatedContext,
    PresentationContext,
    check_range,
    validate_ae_title,
    validate_implementation_version_name,
    validate_uid,
)
from node.acse.negotiation import window_minimum
from node.ul.errors import AbortReason, RemoteProtocolError
from node.ul.items import (
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationContextResult,
    RoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
    UserInformationSubItem,
)
from node.ul.pdu import AssociateAC, AssociateRQ

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: PS3.8 9.3.2.2: presentation context IDs are the odd integers 1 to 255.
MAXIMUM_PRESENTATION_CONTEXTS: Final = 128
_NO_SOP_CLASS_EXTENDED: Final[Mapping[str, bytes]] = MappingProxyType({})
_DEFINED_RESULTS: Final = frozenset(range(5))


def build_associate_rq(
    *,
    calling_ae_title: str,
    called_ae_title: str,
    contexts: Sequence[PresentationContext],
    maximum_pdu_length: int,
    implementation_class_uid: str,
    implementation_version_name: str | None = None,
    operations_invoked: int = 1,
    operations_performed: int = 1,
    user_identity: UserIdentityRQSubItem | None = None,
    sop_class_extended: Mapping[str, bytes] = _NO_SOP_CLASS_EXTENDED,
    sop_class_common_extended: Sequence[SOPClassCommonExtendedNegotiationSubItem] = (),
) -> AssociateRQ:
    """Build our A-ASSOCIATE-RQ (PS3.8 9.3.2, PS3.7 D.3.3).

    Contexts keep the ID they carry; the others get the free odd IDs 1, 3, 5... in order
    (PS3.8 9.3.2.2), so at most 128 contexts. A context with `scu_role` or `scp_role` set adds
    an SCP/SCU Role Selection item for its SOP class (PS3.7 D.3.3.4; an unset role counts as
    False); the item applies to every context of that SOP class, so two contexts of one class
    may not ask for different roles. The Asynchronous Operations Window item is sent only when
    the window is not 1/1 (PS3.7 D.3.3.3, 0 = unlimited). User information sub-items go in
    ascending type order, as DCMTK sends them. Raises ValueError on a bad argument.
    """
    calling = validate_ae_title(calling_ae_title)
    called = validate_ae_title(called_ae_title)
    if not contexts:
        raise ValueError("an association needs at least one presentation context")
    if len(contexts) > MAXIMUM_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} presentation contexts proposed; at most "
            f"{MAXIMUM_PRESENTATION_CONTEXTS} fit the odd IDs 1-255 (PS3.8 9.3.2.2)"
        )
    check_range(maximum_pdu_length, 0, MAXIMUM_UINT32, "maximum PDU length")
    validate_uid(implementation_class_uid, "implementation class UID")
    if implementation_version_name is not None:
        validate_implementation_version_name(implementation_version_name)
    check_range(operations_invoked, 0, MAXIMUM_UINT16, "maximum operations invoked")
    check_range(operations_performed, 0, MAXIMUM_UINT16, "maximum operations performed")

    items = _context_items(contexts)
    sub_items: list[UserInformationSubItem] = [
        MaximumLengthSubItem(maximum_pdu_length),
        ImplementationClassUIDSubItem(implementation_class_uid),
    ]
    if (operations_invoked, operations_performed) != (1, 1):
        sub_items.append(
            AsynchronousOperationsWindowSubItem(operations_invoked, operations_performed)
        )
    sub_items.extend(_role_items(contexts))
    if implementation_version_name is not None:
        sub_items.append(ImplementationVersionNameSubItem(implementation_version_name))
    for uid, info in sop_class_extended.items():
        validate_uid(uid, "SOP class UID of an extended negotiation item")
        sub_items.append(SOPClassExtendedNegotiationSubItem(uid, bytes(info)))
    sub_items.extend(sop_class_common_extended)
    if user_identity is not None:
        sub_items.append(user_identity)
    return AssociateRQ(
        called_ae_title=called,
        calling_ae_title=calling,
        presentation_contexts=items,
        user_information=UserInformationItem(tuple(sub_items)),
    )


def _context_items(
    contexts: Sequence[PresentationContext],
) -> tuple[PresentationContextItemRQ, ...]:
    """Presentation Context Items with their IDs: the given ones, then the free odd ones."""
    given = [context.context_id for context in contexts if context.context_id is not None]
    if len(set(given)) != len(given):
        raise ValueError("two presentation contexts carry the same context ID")
    free = iter([number for number in range(1, 256, 2) if number not in given])
    return tuple(
        PresentationContextItemRQ(
            context.context_id if context.context_id is not None else next(free),
            context.abstract_syntax,
            context.transfer_syntaxes,
        )
        for context in contexts
    )


def _role_items(contexts: Sequence[PresentationContext]) -> list[RoleSelectionSubItem]:
    """One SCP/SCU Role Selection item per SOP class whose contexts propose roles."""
    roles: dict[str, RoleSelectionSubItem] = {}
    for context in contexts:
        if not context.proposes_roles:
            continue
        item = RoleSelectionSubItem(
            context.abstract_syntax, bool(context.scu_role), bool(context.scp_role)
        )
        if roles.setdefault(context.abstract_syntax, item) != item:
            raise ValueError(
                f"contexts of {context.abstract_syntax} propose different SCP/SCU roles; role "
                "selection is per SOP class (PS3.7 D.3.3.4)"
            )
    return list(roles.values())


@dataclass(frozen=True, slots=True)
class PeerAcceptance:
    """The peer accepted our association; what was agreed, from our side as requestor.

    `contexts` has one entry per context we proposed, in our order, with *our* roles.
    `operations_invoked` / `operations_performed`: how many operations we may invoke at once
    and how many we perform at once (PS3.7 D.3.3.3; 0 = unlimited, 1/1 when not negotiated).
    `peer_maximum_length` is the acceptor's Maximum Length (0 = unlimited or not sent).
    `user_identity_response` is the server response when we asked for one and got it.
    `sop_class_extended` holds the acceptor's replies for the SOP classes we sent items for.
    `notes` are remarks for the log about lenient handling of the AC.
    """

    pdu: AssociateAC
    contexts: tuple[NegotiatedContext, ...]
    calling_ae_title: str
    called_ae_title: str
    peer_maximum_length: int
    operations_invoked: int
    operations_performed: int
    peer_implementation_class_uid: str | None
    peer_implementation_version_name: str | None
    user_identity_response: bytes | None = None
    sop_class_extended: tuple[SOPClassExtendedNegotiationSubItem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def accepted_contexts(self) -> tuple[NegotiatedContext, ...]:
        return tuple(context for context in self.contexts if context.accepted)


def requestor_roles(
    proposed: RoleSelectionSubItem | None, answered: RoleSelectionSubItem | None
) -> tuple[bool, bool]:
    """Our (SCU, SCP) roles as requestor on an accepted context (PS3.7 D.3.3.4).

    The defaults (SCU only) hold unless we proposed a role selection item and the acceptor
    answered one; then we get each role we proposed and it granted (an answer for a role we
    did not propose is ignored, as the standard says).
    """
    if proposed is None or answered is None:
        return True, False
    return (
        proposed.scu_role and answered.scu_role,
        proposed.scp_role and answered.scp_role,
    )


def _first_by_sop_class(items: Sequence[RoleSelectionSubItem]) -> dict[str, RoleSelectionSubItem]:
    found: dict[str, RoleSelectionSubItem] = {}
    for item in items:
        found.setdefault(item.sop_class_uid, item)
    return found


def _check_answers(
    proposals: Mapping[int, PresentationContextItemRQ],
    answers: Sequence[PresentationContextItemAC],
) -> dict[int, PresentationContextItemAC]:
    """Index the AC's context items by ID, refusing any that contradicts our request."""
    checked: dict[int, PresentationContextItemAC] = {}
    for answer in answers:
        proposal = proposals.get(answer.context_id)
        if proposal is None:
            raise RemoteProtocolError(
                f"A-ASSOCIATE-AC answers presentation context {answer.context_id}, "
                "which we did not propose"
            )
        if answer.context_id in checked:
            raise RemoteProtocolError(
                f"A-ASSOCIATE-AC answers presentation context {answer.context_id} twice",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        if answer.result not in _DEFINED_RESULTS:
            raise RemoteProtocolError(
                f"A-ASSOCIATE-AC: presentation context {answer.context_id} has undefined "
                f"result {answer.result}"
            )
        if (
            answer.result == PresentationContextResult.ACCEPTANCE
            and answer.transfer_syntax not in proposal.transfer_syntaxes
        ):
            raise RemoteProtocolError(
                f"A-ASSOCIATE-AC accepts presentation context {answer.context_id} with transfer "
                f"syntax {answer.transfer_syntax!r}, which we did not propose for it"
            )
        checked[answer.context_id] = answer
    return checked


def validate_associate_ac(request: AssociateRQ, accept: AssociateAC) -> PeerAcceptance:
    """Check the peer's A-ASSOCIATE-AC against our request and say what was agreed
    (PS3.8 9.3.3, PS3.7 D.3.3).

    Raises RemoteProtocolError (the caller aborts) when the AC answers a context ID we did not
    propose or one twice, gives an undefined result, or accepts a context with a transfer
    syntax we did not propose for it. A context the AC leaves unanswered counts as rejected
    (no reason, as pynetdicom), with a note. The window is the smaller of what we proposed and
    what was answered (1/1 when either is absent); a response to a role, identity or extended
    negotiation we did not ask for is ignored.
    """
    proposals = {item.context_id: item for item in request.presentation_contexts}
    answers = _check_answers(proposals, accept.presentation_contexts)
    ours = request.user_information
    theirs = accept.user_information
    our_roles = _first_by_sop_class(ours.role_selections)
    their_roles = _first_by_sop_class(theirs.role_selections)
    notes: list[str] = []
    contexts: list[NegotiatedContext] = []
    for proposal in request.presentation_contexts:
        answer = answers.get(proposal.context_id)
        if answer is None:
            notes.append(f"presentation context {proposal.context_id} was not answered")
            result = PresentationContextResult.NO_REASON
        else:
            result = answer.result
        if answer is not None and result == PresentationContextResult.ACCEPTANCE:
            as_scu, as_scp = requestor_roles(
                our_roles.get(proposal.abstract_syntax), their_roles.get(proposal.abstract_syntax)
            )
            syntax = answer.transfer_syntax
        else:
            as_scu = as_scp = False
            syntax = None
        contexts.append(
            NegotiatedContext(
                proposal.context_id, proposal.abstract_syntax, syntax, result, as_scu, as_scp
            )
        )

    proposed_window = ours.asynchronous_operations_window
    answered_window = theirs.asynchronous_operations_window
    invoked = performed = 1
    if proposed_window is not None and answered_window is not None:
        invoked = window_minimum(
            proposed_window.maximum_operations_invoked, answered_window.maximum_operations_invoked
        )
        performed = window_minimum(
            proposed_window.maximum_operations_performed,
            answered_window.maximum_operations_performed,
        )

    identity = next((s for s in ours.sub_items if isinstance(s, UserIdentityRQSubItem)), None)
    response = next((s for s in theirs.sub_items if isinstance(s, UserIdentityACSubItem)), None)
    wanted_response = identity is not None and identity.positive_response_requested
    proposed_extended = {item.sop_class_uid for item in ours.sop_class_extended}
    return PeerAcceptance(
        pdu=accept,
        contexts=tuple(contexts),
        calling_ae_title=request.calling_ae_title.strip(" "),
        called_ae_title=request.called_ae_title.strip(" "),
        peer_maximum_length=theirs.maximum_length or 0,
        operations_invoked=invoked,
        operations_performed=performed,
        peer_implementation_class_uid=theirs.implementation_class_uid,
        peer_implementation_version_name=theirs.implementation_version_name,
        user_identity_response=response.server_response if response and wanted_response else None,
        sop_class_extended=tuple(
            item for item in theirs.sop_class_extended if item.sop_class_uid in proposed_extended
        ),
        notes=tuple(notes),
    )
