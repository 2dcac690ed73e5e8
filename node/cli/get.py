# `dicomnode get`: C-GET into a folder (Query/Retrieve, PS3.4 C).
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from node.cli.common import query_identifier, retrieve_summary, scu_ae, scu_session


def command_get(args: argparse.Namespace) -> int:
    from node.ae import build_role
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES, StoragePresentationContexts

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    identifier = query_identifier(args.key)
    storage = [c.abstract_syntax for c in StoragePresentationContexts[: 128 - 6]]
    ae = scu_ae(args, [*QUERY_RETRIEVE_SOP_CLASSES[:6], *storage])
    roles = [build_role(uid, scp_role=True) for uid in storage]
    ae.file_store = _FlatStore(out)
    final = None
    with scu_session(ae, args, ext_neg=roles) as association:
        for status, _identifier_reply in association.send_c_get(identifier, query_model=args.model):
            final = status
    return retrieve_summary("C-GET", final)


class _FlatStore:
    """Writes retrieved objects as <SOPInstanceUID>.dcm into one folder (for `get`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # no FileStore here: it would leave an empty objects/ folder

    def store(
        self,
        sop_class: str,
        sop_instance: str,
        syntax: str,
        data: bytes,
        source: str = "",
        **_options: Any,
    ) -> Any:
        from node.ae import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
        from node.part10 import file_meta
        from workers.store.files import checked_uid

        path = self.folder / (checked_uid(sop_instance, "SOP Instance UID") + ".dcm")
        header = file_meta(
            sop_class,
            sop_instance,
            syntax,
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
            source,
        )
        path.write_bytes(header + data)
        return path
