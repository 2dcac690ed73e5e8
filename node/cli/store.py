# `dicomnode store`: C-STORE files and folders (Storage, PS3.4 B).
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import (
    EXIT_FAILURE,
    CommandError,
    Progress,
    scu_ae,
    scu_session,
    walk_files,
)


def command_store(args: argparse.Namespace) -> int:
    from node.dicomio import read_part10
    from node.scu.services import UNCOMPRESSED

    files = list(walk_files(args.paths))
    if not files:
        raise CommandError("no files to send")
    objects = []
    unreadable = 0
    syntaxes: dict[str, set[str]] = {}
    for path in files:
        try:
            part10 = read_part10(str(path))
        except Exception as error:  # noqa: BLE001 - any unreadable file is reported and skipped
            print(f"skipped {path}: {error}", file=sys.stderr)
            unreadable += 1
            continue
        objects.append((path, part10))
        syntaxes.setdefault(part10.sop_class_uid, set()).add(part10.transfer_syntax)
    if len(syntaxes) > 128:
        raise CommandError(f"{len(syntaxes)} SOP classes: more than one association can carry")
    ae = scu_ae(args)
    for sop_class, found in syntaxes.items():
        ordered = sorted(found) + [ts for ts in UNCOMPRESSED if ts not in found]
        ae.add_requested_context(sop_class, ordered)
    failures = 0
    with scu_session(ae, args) as association:
        progress = Progress(len(objects))
        for path, part10 in objects:
            try:
                status = association.send_c_store(part10)
            except ValueError as error:
                print(f"failed {path}: {error}", file=sys.stderr)
                failures += 1
                progress.step()
                continue
            code = int(status.Status) if "Status" in status else None
            if code is None or code not in (0x0000, 0xB000, 0xB006, 0xB007):
                failures += 1
                shown = "no response" if code is None else f"0x{code:04X}"
                print(f"failed {path}: status {shown}", file=sys.stderr)
                if code is None:
                    break
            progress.step()
        elapsed = progress.close()
    sent = len(objects)
    print(
        f"{sent - failures} of {sent} objects stored in {elapsed:.2f} s "
        f"({(sent - failures) / max(elapsed, 1e-6):.1f}/s); {failures} failed, "
        f"{unreadable} unreadable"
    )
    return EXIT_FAILURE if failures or unreadable else 0
