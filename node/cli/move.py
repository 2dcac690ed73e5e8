# `dicomnode move`: C-MOVE to a known destination (Query/Retrieve, PS3.4 C).
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import query_identifier, retrieve_summary, scu_ae, scu_session


def command_move(args: argparse.Namespace) -> int:
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES

    identifier = query_identifier(args.key)
    final = None
    with scu_session(scu_ae(args, QUERY_RETRIEVE_SOP_CLASSES), args) as association:
        for status, _reply in association.send_c_move(
            identifier, args.dest, query_model=args.model
        ):
            final = status
    return retrieve_summary("C-MOVE", final)
