# `dicomnode find`: C-FIND (Query/Retrieve, PS3.4 C), a table or JSON of the matches.
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from node.cli.common import EXIT_FAILURE, print_table, query_identifier, scu_ae, scu_session


def command_find(args: argparse.Namespace) -> int:
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES

    identifier = query_identifier(args.key)
    rows: list[dict[str, str]] = []
    final = None
    final_status: Any = None
    with scu_session(scu_ae(args, QUERY_RETRIEVE_SOP_CLASSES), args) as association:
        for status, result in association.send_c_find(identifier, query_model=args.model):
            code = int(status.Status) if "Status" in status else None
            if code in (0xFF00, 0xFF01) and result is not None:
                rows.append({e.keyword or str(e.tag): str(e.value) for e in result})
            else:
                final, final_status = code, status
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    if final != 0:
        print(f"C-FIND ended with status {_status_reason(final, final_status)}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _status_reason(code: int | None, status: Any) -> str:
    """`A900H Failure: Identifier does not match SOP Class (...)`: the PS3.4 meaning of a
    C-FIND final status with the peer's Error Comment and Offending Element when sent."""
    if code is None:
        return "none (no final response)"
    from node.dimse.messages import CommandField
    from node.dimse.status import describe

    text = describe(code, CommandField.C_FIND_RQ)
    comment = status.get("ErrorComment") if status is not None else None
    if comment:
        text += f": {comment}"
    offending = status.get("OffendingElement") if status is not None else None
    if offending:
        tags = offending if isinstance(offending, list | tuple) else [offending]
        text += (
            " (offending element "
            + ", ".join(f"({int(t) >> 16:04X},{int(t) & 0xFFFF:04X})" for t in tags)
            + ")"
        )
    return text
