# `dicomnode users add`: the user identity file (PS3.7 D.3.3.7).
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

from node.cli.common import (
    CommandError,
)


def _read_new_password() -> str:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CommandError("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def command_users(args: argparse.Namespace) -> int:
    """`dicomnode users add FILE USER`: a hashed entry (node.users) for --users FILE."""
    from node.users import add_user

    replaced = add_user(args.file, args.user, _read_new_password())
    print(f"{'replaced' if replaced else 'added'} user {args.user} in {args.file}")
    return 0
