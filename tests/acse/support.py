"""Shared builders for the ACSE tests: a policy, requests and a wire round trip."""

from __future__ import annotations

from typing import Any

from node.acse.contexts import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from node.acse.negotiation import AcceptorPolicy
from node.acse.requestor import build_associate_rq
from node.ul.items import PresentationContextItemRQ, UserInformationItem, UserInformationSubItem
from node.ul.pdu import AssociateAC, AssociateRQ, decode_pdu

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
OUR_UID = "1.2.826.0.1.3680043.9.7433.1.1"
PEER_UID = "1.2.276.0.7230010.3.0.3.6.8"


def make_policy(**overrides: Any) -> AcceptorPolicy:
    arguments: dict[str, Any] = {
        "ae_title": "DICOMNODE",
        "supported_contexts": (
            PresentationContext(
                VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
            ),
            PresentationContext(
                CT_IMAGE_STORAGE,
                (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN),
                scu_role=True,
                scp_role=True,
            ),
        ),
        "maximum_pdu_length": 16382,
        "implementation_class_uid": OUR_UID,
        "implementation_version_name": "DICOMNODE_010",
    }
    arguments.update(overrides)
    return AcceptorPolicy(**arguments)


def make_request(*contexts: PresentationContext, **overrides: Any) -> AssociateRQ:
    arguments: dict[str, Any] = {
        "calling_ae_title": "STORESCU",
        "called_ae_title": "DICOMNODE",
        "contexts": contexts or (PresentationContext(VERIFICATION_SOP_CLASS),),
        "maximum_pdu_length": 32768,
        "implementation_class_uid": PEER_UID,
        "implementation_version_name": "OFFIS_DCMTK_368",
    }
    arguments.update(overrides)
    return build_associate_rq(**arguments)


def raw_request(
    contexts: tuple[tuple[int, str, tuple[str, ...]], ...],
    sub_items: tuple[UserInformationSubItem, ...] = (),
    **overrides: Any,
) -> AssociateRQ:
    """An A-ASSOCIATE-RQ as a peer might send it, bypassing our builder's checks."""
    arguments: dict[str, Any] = {
        "called_ae_title": "DICOMNODE",
        "calling_ae_title": "PEER",
        "presentation_contexts": tuple(
            PresentationContextItemRQ(context_id, abstract, syntaxes)
            for context_id, abstract, syntaxes in contexts
        ),
        "user_information": UserInformationItem(sub_items),
    }
    arguments.update(overrides)
    return AssociateRQ(**arguments)


def over_the_wire(pdu: AssociateRQ | AssociateAC) -> Any:
    """Encode then decode, as the peer would see it."""
    decoded = decode_pdu(pdu.encode())
    assert decoded == pdu
    return decoded


__all__ = [
    "CT_IMAGE_STORAGE",
    "EXPLICIT_VR_BIG_ENDIAN",
    "JPEG_BASELINE",
    "MR_IMAGE_STORAGE",
    "OUR_UID",
    "PEER_UID",
    "make_policy",
    "make_request",
    "over_the_wire",
    "raw_request",
]
