# `dicomnode echo`: C-ECHO (Verification, PS3.4 A).
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import (
    EXIT_FAILURE,
    associate,
    scu_ae,
)


def command_echo(args: argparse.Namespace) -> int:
    ae = scu_ae(args)
    ae.add_requested_context("1.2.840.10008.1.1")
    try:
        association = associate(ae, args)
        failures = 0
        for _ in range(args.repeat):
            status = association.send_c_echo()
            code = int(status.Status) if "Status" in status else None
            if code != 0:
                failures += 1
            print(f"C-ECHO status: {'none' if code is None else f'0x{code:04X}'}")
        association.release()
        return EXIT_FAILURE if failures else 0
    finally:
        ae.stop()
