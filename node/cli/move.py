# `dicomnode move`: C-MOVE to a known destination (Query/Retrieve, PS3.4 C).
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import (
    associate,
    query_identifier,
    retrieve_summary,
    scu_ae,
)


def command_move(args: argparse.Namespace) -> int:
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES

    identifier = query_identifier(args.key)
    ae = scu_ae(args)
    for uid in QUERY_RETRIEVE_SOP_CLASSES:
        ae.add_requested_context(uid)
    final = None
    try:
        association = associate(ae, args)
        for status, _reply in association.send_c_move(
            identifier, args.dest, query_model=args.model
        ):
            final = status
        association.release()
    finally:
        ae.stop()
    return retrieve_summary("C-MOVE", final)
