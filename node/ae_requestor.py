# The A-ASSOCIATE-RQ the AE sends as requestor: its contexts with the SCP/SCU Role Selection
# items applied, and the extended negotiation items of `associate(ext_neg=[...])` sorted into
# the request (pynetdicom's ext_neg contract: role selection, user identity, SOP Class
# (Common) Extended Negotiation, asynchronous operations window).
#
# Rules: pure functions of their arguments; node.acse.requestor builds and checks the PDU.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.acse.requestor import build_associate_rq
from node.presets import build_context
from node.ul.items import (
    RoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityRQSubItem,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from node.acse.contexts import PresentationContext
    from node.ul.pdu import AssociateRQ


def with_roles(
    proposed: Sequence[PresentationContext], ext_neg: Sequence[Any]
) -> list[PresentationContext]:
    """`proposed` with the SCU/SCP roles of the Role Selection items for their SOP Class."""
    roles = {item.sop_class_uid: item for item in ext_neg if isinstance(item, RoleSelectionSubItem)}
    return [
        build_context(
            context.abstract_syntax,
            context.transfer_syntaxes,
            scu_role=roles[context.abstract_syntax].scu_role,
            scp_role=roles[context.abstract_syntax].scp_role,
        )
        if context.abstract_syntax in roles
        else context
        for context in proposed
    ]


def associate_request(
    *,
    calling_ae_title: str,
    called_ae_title: str,
    proposed: Sequence[PresentationContext],
    maximum_pdu_length: int,
    implementation_class_uid: str,
    implementation_version_name: str | None,
    ext_neg: Sequence[Any] = (),
) -> AssociateRQ:
    """The A-ASSOCIATE-RQ for `proposed` contexts and the `ext_neg` items."""
    identity = next((i for i in ext_neg if isinstance(i, UserIdentityRQSubItem)), None)
    extended = {
        i.sop_class_uid: i.service_class_application_information
        for i in ext_neg
        if isinstance(i, SOPClassExtendedNegotiationSubItem)
    }
    common = [i for i in ext_neg if isinstance(i, SOPClassCommonExtendedNegotiationSubItem)]
    window = next(
        (i for i in ext_neg if type(i).__name__ == "AsynchronousOperationsWindowSubItem"), None
    )
    return build_associate_rq(
        calling_ae_title=calling_ae_title,
        called_ae_title=called_ae_title,
        contexts=with_roles(proposed, ext_neg),
        maximum_pdu_length=maximum_pdu_length,
        implementation_class_uid=implementation_class_uid,
        implementation_version_name=implementation_version_name,
        operations_invoked=getattr(window, "maximum_operations_invoked", 1),
        operations_performed=getattr(window, "maximum_operations_performed", 1),
        user_identity=identity,
        sop_class_extended=extended,
        sop_class_common_extended=common,
    )
