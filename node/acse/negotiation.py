# Association negotiation, acceptor side (PS3.8 7.1 and 9.3.2-9.3.4, PS3.7 Annex D).
#
# Rules: a pure function from an A-ASSOCIATE-RQ and our policy to an A-ASSOCIATE-AC or -RJ.
# User hooks are plain callables; one that raises or answers nonsense is noted in the result and
# its default is used, except the user identity hook, whose failure rejects the association
# (fail closed). Peer data is never asserted on. Stdlib only, no I/O, no clock.
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from node.acse.access import (
    Network,
    check_association,
    parse_network_bindings,
    reject,
    title_from_wire,
)
from node.acse.access import (
    Rejection as Rejection,  # re-exported: part of this module's answer
)
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
from node.ul.pdu import (
    AssociateAC,
    AssociateRQ,
    RejectReason,
    RejectResult,
    RejectSource,
)

#: Room left for one user-supplied sub-item so that the whole User Information item still fits
#: its 16-bit length next to the other sub-items we send.
MAXIMUM_HOOK_PAYLOAD: Final = 0xF000

AsyncOpsWindowHook = Callable[[int, int], tuple[int, int]]
SOPClassExtendedHook = Callable[[dict[str, bytes]], dict[str, bytes]]
SOPClassCommonExtendedHook = Callable[
    [dict[str, SOPClassCommonExtendedNegotiationSubItem]],
    dict[str, SOPClassCommonExtendedNegotiationSubItem],
]
UserIdentityHook = Callable[[UserIdentityRQSubItem], tuple[bool, bytes | None]]


def window_minimum(first: int, second: int) -> int:
    """The smaller of two asynchronous operations window sizes, 0 meaning unlimited
    (PS3.7 D.3.3.3)."""
    if first == 0:
        return second
    if second == 0:
        return first
    return min(first, second)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptorPolicy:
    """What we accept as association acceptor, and the hooks that decide the rest.

    `supported_contexts` name each abstract syntax at most once; their transfer syntax order is
    our preference. `maximum_pdu_length` goes into our Maximum Length sub-item (0 = no limit).
    `require_called_aet` checks the called AE title against `ae_title`; `require_calling_aet`
    lists the calling AE titles we accept (empty = anyone). `maximum_operations_performed` and
    `maximum_operations_invoked` are the asynchronous operations window we support (1/1 = no
    asynchronous operations, 0 = unlimited). The hooks take pynetdicom's arguments:

    - `on_async_ops_window(invoked, performed) -> (invoked, performed)`: the window to answer,
      given the one proposed; never more than proposed is answered.
    - `on_sop_class_extended({sop_class_uid: info}) -> {sop_class_uid: info}`: the replies.
    - `on_sop_class_common_extended({sop_class_uid: item}) -> {sop_class_uid: item}`: the items
      we accept (they have no A-ASSOCIATE-AC form).
    - `on_user_identity(item) -> (accepted, server_response)`.

    Access beyond the AE titles (node.acse.access): `calling_aet_networks` binds calling AE
    titles ("*": every title not listed) to the networks they may associate from;
    `maximum_associations_per_aet` limits the associations one calling AE title holds at once
    (None = no limit); `require_user_identity` rejects a request without a User Identity
    sub-item (PS3.7 D.3.3.7).
    """

    ae_title: str
    supported_contexts: tuple[PresentationContext, ...]
    maximum_pdu_length: int
    implementation_class_uid: str
    implementation_version_name: str | None = None
    require_called_aet: bool = False
    require_calling_aet: tuple[str, ...] = ()
    maximum_operations_performed: int = 1
    maximum_operations_invoked: int = 1
    on_async_ops_window: AsyncOpsWindowHook | None = None
    on_sop_class_extended: SOPClassExtendedHook | None = None
    on_sop_class_common_extended: SOPClassCommonExtendedHook | None = None
    on_user_identity: UserIdentityHook | None = None
    calling_aet_networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    maximum_associations_per_aet: int | None = None
    require_user_identity: bool = False
    contexts_by_abstract_syntax: Mapping[str, PresentationContext] = field(
        init=False, repr=False, compare=False
    )
    allowed_networks: Mapping[str, tuple[Network, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title))
        contexts = tuple(self.supported_contexts)
        by_abstract_syntax: dict[str, PresentationContext] = {}
        for context in contexts:
            if context.abstract_syntax in by_abstract_syntax:
                raise ValueError(
                    f"abstract syntax {context.abstract_syntax} is supported twice; "
                    "list its transfer syntaxes in one context"
                )
            by_abstract_syntax[context.abstract_syntax] = context
        object.__setattr__(self, "supported_contexts", contexts)
        object.__setattr__(
            self, "contexts_by_abstract_syntax", MappingProxyType(by_abstract_syntax)
        )
        object.__setattr__(
            self,
            "require_calling_aet",
            tuple(validate_ae_title(title) for title in self.require_calling_aet),
        )
        check_range(self.maximum_pdu_length, 0, MAXIMUM_UINT32, "maximum PDU length")
        validate_uid(self.implementation_class_uid, "implementation class UID")
        if self.implementation_version_name is not None:
            validate_implementation_version_name(self.implementation_version_name)
        check_range(
            self.maximum_operations_performed, 0, MAXIMUM_UINT16, "maximum operations performed"
        )
        check_range(
            self.maximum_operations_invoked, 0, MAXIMUM_UINT16, "maximum operations invoked"
        )
        object.__setattr__(
            self, "allowed_networks", parse_network_bindings(self.calling_aet_networks)
        )
        if self.maximum_associations_per_aet is not None:
            check_range(
                self.maximum_associations_per_aet, 1, MAXIMUM_UINT16, "associations per AE title"
            )


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The association is accepted: send `pdu`. Everything the upper layers need follows.

    `contexts` follow the A-ASSOCIATE-AC items (one per distinct proposed context ID, in
    proposal order) with our roles as acceptor. `operations_invoked` / `operations_performed`
    are the negotiated window as PS3.7 D.3.3.3 names it from the requestor's side: how many
    operations the requestor may invoke on us at once, and how many it performs at once (so
    how many sub-operations we may invoke); 0 = unlimited, 1/1 when not negotiated.
    `peer_maximum_length` is the requestor's Maximum Length (0 = unlimited or not sent).
    `sop_class_extended` holds the replies we sent; `sop_class_common_extended` the items our
    hook accepted. `notes` are remarks for the log (lenient handling of odd peer data,
    failing hooks).
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
    user_identity: UserIdentityRQSubItem | None
    sop_class_extended: tuple[SOPClassExtendedNegotiationSubItem, ...] = ()
    sop_class_common_extended: tuple[SOPClassCommonExtendedNegotiationSubItem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def accepted_contexts(self) -> tuple[NegotiatedContext, ...]:
        return tuple(context for context in self.contexts if context.accepted)


def negotiate_as_acceptor(
    request: AssociateRQ,
    policy: AcceptorPolicy,
    *,
    association_count: int = 0,
    maximum_associations: int | None = None,
    peer_address: str | None = None,
    associations_by_calling_aet: Mapping[str, int] | None = None,
) -> Acceptance | Rejection:
    """Answer an A-ASSOCIATE-RQ as association acceptor (PS3.8 7.1.1, 9.3.3, 9.3.4; PS3.7 D.3).

    `association_count` is the number of associations already active, not counting this one;
    `maximum_associations` None means no limit. `peer_address` is the requestor's IP address
    as the transport saw it; `associations_by_calling_aet` counts the active associations per
    calling AE title (both only matter when the policy binds titles to networks or limits
    associations per title).

    Rejected (PS3.8 Table 9-21) by node.acse.access.check_association's checks, in the order
    its docstring gives, then when no user identity is proposed but `policy.require_user_identity`
    is set, or the user identity hook refuses the identity or fails (permanent, service user,
    no reason given, as PS3.7 D.3.3.7 and pynetdicom do).

    Otherwise an A-ASSOCIATE-AC answers each proposed context (_negotiate_contexts), with
    the user information sub-items of _ac_sub_items.
    """
    rejection = check_association(
        request,
        policy,
        association_count=association_count,
        maximum_associations=maximum_associations,
        peer_address=peer_address,
        associations_by_calling_aet=associations_by_calling_aet or {},
    )
    if rejection is not None:
        return rejection
    notes: list[str] = []
    user = request.user_information
    identity = next((s for s in user.sub_items if isinstance(s, UserIdentityRQSubItem)), None)
    identity_response = _identity_outcome(identity, policy, notes)
    if isinstance(identity_response, Rejection):
        return identity_response
    items, contexts, role_replies = _negotiate_contexts(request, policy, notes)
    window = _negotiate_window(user.asynchronous_operations_window, policy, notes)
    extended = _negotiate_sop_class_extended(user.sop_class_extended, policy, notes)
    common = _negotiate_common_extended(user.sop_class_common_extended, policy, notes)
    if not any(context.accepted for context in contexts):
        notes.append("no presentation context could be accepted")
    if user.maximum_length is None:
        notes.append("the requestor sent no Maximum Length sub-item; taken as unlimited")
    sub_items = _ac_sub_items(policy, window, role_replies, extended, identity_response)
    pdu = AssociateAC(
        called_ae_title=request.called_ae_title,
        calling_ae_title=request.calling_ae_title,
        presentation_contexts=tuple(items),
        user_information=UserInformationItem(sub_items),
    )
    return Acceptance(
        pdu=pdu,
        contexts=tuple(contexts),
        calling_ae_title=title_from_wire(request.calling_ae_title),
        called_ae_title=title_from_wire(request.called_ae_title),
        peer_maximum_length=user.maximum_length or 0,
        operations_invoked=window.maximum_operations_invoked if window else 1,
        operations_performed=window.maximum_operations_performed if window else 1,
        peer_implementation_class_uid=user.implementation_class_uid,
        peer_implementation_version_name=user.implementation_version_name,
        user_identity=identity,
        sop_class_extended=extended,
        sop_class_common_extended=common,
        notes=tuple(notes),
    )


def _identity_outcome(
    identity: UserIdentityRQSubItem | None, policy: AcceptorPolicy, notes: list[str]
) -> UserIdentityACSubItem | Rejection | None:
    """The User Identity answer (or None), or the rejection when one is required and
    missing or the hook refuses it."""
    if identity is not None:
        return _negotiate_user_identity(identity, policy, notes)
    if policy.require_user_identity:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.NO_REASON,
            "user identity required, none proposed",
        )
    return None


def _ac_sub_items(
    policy: AcceptorPolicy,
    window: AsynchronousOperationsWindowSubItem | None,
    role_replies: Sequence[RoleSelectionSubItem],
    extended: Sequence[SOPClassExtendedNegotiationSubItem],
    identity_response: UserIdentityACSubItem | None,
) -> tuple[UserInformationSubItem, ...]:
    """The A-ASSOCIATE-AC's user information sub-items.

    The AC's user information follows DCMTK's ascending sub-item order: Maximum Length,
    Implementation Class UID, Asynchronous Operations Window (only when proposed), SCP/SCU role
    selection (only for SOP classes the requestor sent one for, when the supported context
    sets both roles and a context of that class is accepted), Implementation Version Name,
    SOP Class Extended Negotiation replies, User Identity (only when a positive response was
    requested and the hook returned a response; without a hook the identity is accepted
    without response). SOP Class Common Extended Negotiation is RQ-only (PS3.7 D.3.3.6): the
    hook's choice is reported in the result, nothing is sent.
    """
    sub_items: list[UserInformationSubItem] = [
        MaximumLengthSubItem(policy.maximum_pdu_length),
        ImplementationClassUIDSubItem(policy.implementation_class_uid),
    ]
    if window is not None:
        sub_items.append(window)
    sub_items.extend(role_replies)
    if policy.implementation_version_name is not None:
        sub_items.append(ImplementationVersionNameSubItem(policy.implementation_version_name))
    sub_items.extend(extended)
    if identity_response is not None:
        sub_items.append(identity_response)
    return tuple(sub_items)


def _negotiate_user_identity(
    identity: UserIdentityRQSubItem, policy: AcceptorPolicy, notes: list[str]
) -> UserIdentityACSubItem | Rejection | None:
    """User Identity negotiation (PS3.7 D.3.3.7): the hook decides; fail closed."""
    hook = policy.on_user_identity
    if hook is None:
        notes.append("user identity proposed and accepted without a check (no hook)")
        return None
    try:
        answer = _identity_answer(hook(identity))
    except Exception as error:  # noqa: BLE001 - a user hook's failure rejects, never crashes
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.NO_REASON,
            f"user identity hook failed: {type(error).__name__}: {error}",
        )
    if answer is None:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.NO_REASON,
            "user identity hook did not answer (accepted, response bytes or None)",
        )
    accepted, response = answer
    if not accepted:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.NO_REASON,
            f"user identity (type {identity.identity_type}) rejected",
        )
    if not identity.positive_response_requested or response is None:
        return None
    return UserIdentityACSubItem(response)


def _identity_answer(answer: object) -> tuple[bool, bytes | None] | None:
    """Check a user identity hook's answer: (accepted, server response bytes or None), the
    response small enough to fit the User Information item."""
    if not isinstance(answer, tuple) or len(answer) != 2:
        return None
    accepted, response = answer
    if response is None:
        return bool(accepted), None
    if isinstance(response, bytes | bytearray) and len(response) <= MAXIMUM_HOOK_PAYLOAD:
        return bool(accepted), bytes(response)
    return None


def acceptor_role_reply(
    requested: RoleSelectionSubItem | None, supported: PresentationContext
) -> RoleSelectionSubItem | None:
    """Our SCP/SCU Role Selection answer for one SOP class (PS3.7 D.3.3.4), or None.

    None (no item, default roles) when the requestor sent none or when the supported context
    leaves either role unset. Otherwise each role is granted only when proposed and allowed:
    the acceptor never returns 1 for a role the requestor did not propose.
    """
    if requested is None or supported.scu_role is None or supported.scp_role is None:
        return None
    return RoleSelectionSubItem(
        requested.sop_class_uid,
        requested.scu_role and supported.scu_role,
        requested.scp_role and supported.scp_role,
    )


def _negotiate_contexts(
    request: AssociateRQ, policy: AcceptorPolicy, notes: list[str]
) -> tuple[list[PresentationContextItemAC], list[NegotiatedContext], list[RoleSelectionSubItem]]:
    """Presentation context and role selection negotiation (PS3.8 9.3.3.2, PS3.7 D.3.3.4).

    The A-ASSOCIATE-AC answers each proposed context (PS3.8 Table 9-18): acceptance
    with the first of *our* transfer syntaxes that was proposed; abstract syntax not supported
    (3); transfer syntaxes not supported (4); user rejection (1) when role selection leaves
    neither side a role; no reason (2) for a context ID that is even or zero, or that appears
    more than once (PS3.8 9.3.2.2 wants distinct odd IDs; one item answers such an ID).
    When no context can be accepted the AC still goes out with every context rejected, which is
    what DCMTK's storescp and pynetdicom do; the requestor then releases or aborts.
    """
    occurrences = Counter(item.context_id for item in request.presentation_contexts)
    requested_roles: dict[str, RoleSelectionSubItem] = {}
    for role in request.user_information.role_selections:
        if role.sop_class_uid in requested_roles:
            notes.append(f"repeated role selection item for {role.sop_class_uid} ignored")
        else:
            requested_roles[role.sop_class_uid] = role
    items: list[PresentationContextItemAC] = []
    contexts: list[NegotiatedContext] = []
    replies: dict[str, RoleSelectionSubItem] = {}
    answered: set[int] = set()
    for proposal in request.presentation_contexts:
        if proposal.context_id in answered:
            continue  # one AC item answers a repeated ID
        answered.add(proposal.context_id)
        context, reply = _negotiate_context(
            proposal, occurrences[proposal.context_id], policy, requested_roles
        )
        if reply is not None:
            replies[reply.sop_class_uid] = reply
        contexts.append(context)
        # The transfer syntax of a rejected item is not significant (PS3.8 9.3.3.2); like
        # pynetdicom we echo the first proposed one for parsers that insist on the sub-item.
        syntax = context.transfer_syntax or proposal.transfer_syntaxes[0]
        items.append(PresentationContextItemAC(proposal.context_id, context.result, syntax))
    proposed_classes = {proposal.abstract_syntax for proposal in request.presentation_contexts}
    notes.extend(
        f"role selection item for {uid}, which no context proposes, ignored"
        for uid in requested_roles
        if uid not in proposed_classes
    )
    return items, contexts, [replies[uid] for uid in requested_roles if uid in replies]


def _negotiate_context(
    proposal: PresentationContextItemRQ,
    occurrences: int,
    policy: AcceptorPolicy,
    requested_roles: Mapping[str, RoleSelectionSubItem],
) -> tuple[NegotiatedContext, RoleSelectionSubItem | None]:
    """Negotiate one proposed context; also return the role reply for its SOP class (None
    when the context is rejected: pynetdicom sends no reply then either)."""
    if proposal.context_id % 2 == 0 or occurrences > 1:
        return _rejected(proposal, PresentationContextResult.NO_REASON), None
    supported = policy.contexts_by_abstract_syntax.get(proposal.abstract_syntax)
    if supported is None:
        return _rejected(proposal, PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED), None
    offered = proposal.transfer_syntaxes
    syntax = next((ours for ours in supported.transfer_syntaxes if ours in offered), None)
    if syntax is None:
        return _rejected(proposal, PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED), None
    reply = acceptor_role_reply(requested_roles.get(proposal.abstract_syntax), supported)
    # Without a reply the defaults hold: requestor SCU, acceptor SCP. With one, we are the SCU
    # where the requestor is the SCP and the SCP where it is the SCU (PS3.7 D.3.3.4).
    as_scu = reply.scp_role if reply else False
    as_scp = reply.scu_role if reply else True
    if not (as_scu or as_scp):
        return _rejected(proposal, PresentationContextResult.USER_REJECTION), None
    accepted = NegotiatedContext(
        proposal.context_id,
        proposal.abstract_syntax,
        syntax,
        PresentationContextResult.ACCEPTANCE,
        as_scu,
        as_scp,
    )
    return accepted, reply


def _rejected(proposal: PresentationContextItemRQ, result: int) -> NegotiatedContext:
    return NegotiatedContext(
        proposal.context_id, proposal.abstract_syntax, None, result, as_scu=False, as_scp=False
    )


def _window_answer(answer: object) -> tuple[int, int] | None:
    """Check a hook's (invoked, performed) answer: two integers from 0 to 65535."""
    if (
        isinstance(answer, tuple)
        and len(answer) == 2
        and all(type(value) is int and 0 <= value <= MAXIMUM_UINT16 for value in answer)
    ):
        return answer[0], answer[1]
    return None


def _negotiate_window(
    proposed: AsynchronousOperationsWindowSubItem | None,
    policy: AcceptorPolicy,
    notes: list[str],
) -> AsynchronousOperationsWindowSubItem | None:
    """Asynchronous Operations Window negotiation (PS3.7 D.3.3.3): answered only when
    proposed, never above the proposal; our policy (or the hook) brings it down."""
    if proposed is None:
        return None
    wanted_invoked = proposed.maximum_operations_invoked
    wanted_performed = proposed.maximum_operations_performed
    invoked = policy.maximum_operations_performed
    performed = policy.maximum_operations_invoked
    hook = policy.on_async_ops_window
    if hook is not None:
        try:
            answer = _window_answer(hook(wanted_invoked, wanted_performed))
        except Exception as error:  # noqa: BLE001 - a failing hook falls back to the policy
            notes.append(f"asynchronous operations window hook failed: {error!r}; policy used")
        else:
            if answer is None:
                notes.append("asynchronous operations window hook answered nonsense; policy used")
            else:
                invoked, performed = answer
    return AsynchronousOperationsWindowSubItem(
        window_minimum(wanted_invoked, invoked), window_minimum(wanted_performed, performed)
    )


def _negotiate_sop_class_extended(
    proposed_items: tuple[SOPClassExtendedNegotiationSubItem, ...],
    policy: AcceptorPolicy,
    notes: list[str],
) -> tuple[SOPClassExtendedNegotiationSubItem, ...]:
    """SOP Class Extended Negotiation (PS3.7 D.3.3.5): the hook's replies, only for SOP
    classes the requestor sent an item for, in its order."""
    hook = policy.on_sop_class_extended
    if not proposed_items or hook is None:
        return ()
    proposed: dict[str, bytes] = {}
    for item in proposed_items:
        proposed.setdefault(item.sop_class_uid, item.service_class_application_information)
    try:
        answer: object = hook(dict(proposed))
    except Exception as error:  # noqa: BLE001 - a failing hook means no replies
        notes.append(f"SOP class extended negotiation hook failed: {error!r}; no replies")
        return ()
    if not isinstance(answer, Mapping):
        notes.append("SOP class extended negotiation hook did not answer a mapping; no replies")
        return ()
    replies: list[SOPClassExtendedNegotiationSubItem] = []
    for uid in proposed:
        info = answer.get(uid)
        if isinstance(info, bytes | bytearray) and len(info) <= MAXIMUM_HOOK_PAYLOAD:
            replies.append(SOPClassExtendedNegotiationSubItem(uid, bytes(info)))
        elif info is not None:
            notes.append(f"SOP class extended reply for {uid} is not bytes of a fitting size")
    if any(uid not in proposed for uid in answer):
        notes.append("SOP class extended replies for SOP classes not proposed were dropped")
    return tuple(replies)


def _negotiate_common_extended(
    proposed_items: tuple[SOPClassCommonExtendedNegotiationSubItem, ...],
    policy: AcceptorPolicy,
    notes: list[str],
) -> tuple[SOPClassCommonExtendedNegotiationSubItem, ...]:
    """SOP Class Common Extended Negotiation (PS3.7 D.3.3.6): RQ-only, so the hook's choice
    is only reported; without a hook none is accepted (as pynetdicom)."""
    hook = policy.on_sop_class_common_extended
    if not proposed_items or hook is None:
        return ()
    proposed: dict[str, SOPClassCommonExtendedNegotiationSubItem] = {}
    for item in proposed_items:
        proposed.setdefault(item.sop_class_uid, item)
    try:
        answer: object = hook(dict(proposed))
    except Exception as error:  # noqa: BLE001 - a failing hook means none accepted
        notes.append(f"SOP class common extended hook failed: {error!r}; none accepted")
        return ()
    if not isinstance(answer, Mapping):
        notes.append("SOP class common extended hook did not answer a mapping; none accepted")
        return ()
    return tuple(
        item
        for uid, item in proposed.items()
        if isinstance(answer.get(uid), SOPClassCommonExtendedNegotiationSubItem)
    )
