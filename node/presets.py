# Presentation context presets and SOP class lookup (pynetdicom's names, pydicom's UID table).
#
# Rules: derived from pydicom's UID dictionary, never a hand-copied list. A requestor may
# propose at most 128 contexts (PS3.8 9.3.2.2), so the storage preset keeps the first 128
# non-retired Storage SOP Classes in UID order; an SCP supports all of them.
from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.acse.contexts import PresentationContext

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
#: Uncompressed first, then every compressed syntax pydicom knows: what an archive accepts.
ALL_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    *(
        uid
        for uid, entry in UID_dictionary.items()
        if entry[1] == "Transfer Syntax" and entry[3] == "" and uid not in DEFAULT_TRANSFER_SYNTAXES
    ),
)

VERIFICATION = "1.2.840.10008.1.1"
STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."


def _uid_key(uid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in uid.split("."))


ALL_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    sorted(
        (
            uid
            for uid, entry in UID_dictionary.items()
            if uid.startswith(STORAGE_PREFIX) and entry[1] == "SOP Class" and entry[3] == ""
        ),
        key=_uid_key,
    )
)

QUERY_RETRIEVE_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
    "1.2.840.10008.5.1.4.1.2.3.1",  # Patient/Study Only FIND (retired)
    "1.2.840.10008.5.1.4.1.2.3.2",  # Patient/Study Only MOVE (retired)
    "1.2.840.10008.5.1.4.1.2.3.3",  # Patient/Study Only GET (retired)
    "1.2.840.10008.5.1.4.31",  # Modality Worklist FIND
)


def build_context(
    abstract_syntax: str,
    transfer_syntax: str | Sequence[str] | None = None,
    *,
    scu_role: bool | None = None,
    scp_role: bool | None = None,
) -> PresentationContext:
    """A presentation context (pynetdicom's build_context)."""
    if transfer_syntax is None:
        syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    elif isinstance(transfer_syntax, str):
        syntaxes = (transfer_syntax,)
    else:
        syntaxes = tuple(str(ts) for ts in transfer_syntax)
    return PresentationContext(
        abstract_syntax=str(abstract_syntax),
        transfer_syntaxes=syntaxes,
        scu_role=scu_role,
        scp_role=scp_role,
    )


VerificationPresentationContexts: list[PresentationContext] = [build_context(VERIFICATION)]
StoragePresentationContexts: list[PresentationContext] = [
    build_context(uid) for uid in ALL_STORAGE_SOP_CLASSES[:128]
]
AllStoragePresentationContexts: list[PresentationContext] = [
    build_context(uid) for uid in ALL_STORAGE_SOP_CLASSES
]
QueryRetrievePresentationContexts: list[PresentationContext] = [
    build_context(uid) for uid in QUERY_RETRIEVE_SOP_CLASSES
]


def sop_class_uid(name: str) -> UID:
    """Look a SOP class up by pydicom keyword or pynetdicom 1.x name ('CTImageStorage',
    'VerificationSOPClass', 'PatientRootQueryRetrieveInformationModelFind')."""
    wanted = name.removesuffix("SOPClass") if name != "SOPClass" else name
    for uid, entry in UID_dictionary.items():
        if entry[4] in (name, wanted):
            return UID(uid)
    raise AttributeError(f"no SOP class named {name!r}")
