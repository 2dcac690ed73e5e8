# `dicomnode echo`: C-ECHO (Verification, PS3.4 A).
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import EXIT_FAILURE, scu_ae, scu_session


def command_echo(args: argparse.Namespace) -> int:
    failures = 0
    with scu_session(scu_ae(args, ["1.2.840.10008.1.1"]), args) as association:
        for _ in range(args.repeat):
            status = association.send_c_echo()
            code = int(status.Status) if "Status" in status else None
            if code != 0:
                failures += 1
            print(f"C-ECHO status: {'none' if code is None else f'0x{code:04X}'}")
    return EXIT_FAILURE if failures else 0
