# dicomnode's public face: `from node import AE` (pynetdicom's ApplicationEntity contract).
#
# Rules: the protocol core (node.ul, node.acse, node.dimse) must stay importable without the
# asyncio transport or pydicom, so the AE and presets load lazily on first use.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.ae import (
        AE,
        IMPLEMENTATION_CLASS_UID,
        PYNETDICOM_IMPLEMENTATION_UID,
        ApplicationEntity,
        build_role,
    )
    from node.presets import (
        AllStoragePresentationContexts,
        QueryRetrievePresentationContexts,
        StoragePresentationContexts,
        VerificationPresentationContexts,
        build_context,
    )

__all__ = [
    "AE",
    "IMPLEMENTATION_CLASS_UID",
    "PYNETDICOM_IMPLEMENTATION_UID",
    "AllStoragePresentationContexts",
    "ApplicationEntity",
    "QueryRetrievePresentationContexts",
    "StoragePresentationContexts",
    "VerificationPresentationContexts",
    "build_context",
    "build_role",
]

_LAZY = {
    "AE": "node.ae",
    "ApplicationEntity": "node.ae",
    "IMPLEMENTATION_CLASS_UID": "node.ae",
    "PYNETDICOM_IMPLEMENTATION_UID": "node.ae",
    "build_role": "node.ae",
    "AllStoragePresentationContexts": "node.presets",
    "QueryRetrievePresentationContexts": "node.presets",
    "StoragePresentationContexts": "node.presets",
    "VerificationPresentationContexts": "node.presets",
    "build_context": "node.presets",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'node' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
