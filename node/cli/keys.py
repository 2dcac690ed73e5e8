# `dicomnode keys generate`: CURVE key pairs for the broker links.
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def command_keys(args: argparse.Namespace) -> int:
    """`dicomnode keys generate DIR`: CURVE key pairs (broker.curve) for --curve-* options."""
    from broker.curve import CLIENT_NAME, SERVER_NAME, generate_keys

    names = args.name or [SERVER_NAME, CLIENT_NAME]
    for path in generate_keys(args.directory, names):
        print(path)
    return 0
