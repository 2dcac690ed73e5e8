# Our SCU against an in-process archive SCP (built-in storage, index, commitment, MPPS) over
# loopback, for the workers' round-trip tests.
#
# Rules: every AE is made by the make_ae fixture (always stopped); the archive's index is
# closed by the caller's fixture; waits are bounded polls, never bare sleeps.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.synthetic import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, PATIENCE, VERIFICATION
from workers.handlers.commitment import STORAGE_COMMITMENT_PUSH
from workers.handlers.mpps import MODALITY_PERFORMED_PROCEDURE_STEP

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget
SERVICES = (VERIFICATION, STORAGE_COMMITMENT_PUSH, MODALITY_PERFORMED_PROCEDURE_STEP)


def archive(make_ae: Callable[..., Any], store: Any, *, title: str = "ARCHIVE", **attributes: Any):
    """A started SCP with the built-in storage `store` (an IndexedFileStore)."""
    ae = make_ae(title)
    for uid in (*SERVICES, CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        ae.add_supported_context(uid)
    ae.file_store = store
    for name, value in attributes.items():
        setattr(ae, name, value)
    ae.start(block=False)
    return ae


def modality(make_ae: Callable[..., Any], *, title: str = "MODALITY", listen: bool = False):
    """An SCU proposing storage, commitment and MPPS; with `listen`, also an SCP for the
    Storage Commitment N-EVENT-REPORT on a new association (PS3.4 J.3.3.1.3)."""
    ae = make_ae(title)
    for uid in (*SERVICES, CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        ae.add_requested_context(uid)
    if listen:
        ae.add_supported_context(STORAGE_COMMITMENT_PUSH)
    return ae
