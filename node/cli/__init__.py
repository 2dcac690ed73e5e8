# The `dicomnode` command: serve, and the SCU tools echo / store / find / get / move.
#
# Rules: every failure the user can cause (bad argument, unreachable peer, rejected association,
# unreadable file) ends as one clear line on stderr and a non-zero exit code, never a
# traceback (-v shows the details).
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from node.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Sequence

from node.cli.common import EXIT_FAILURE, CommandError
from node.cli.echo import command_echo
from node.cli.find import command_find
from node.cli.get import command_get
from node.cli.index import command_index
from node.cli.keys import command_keys
from node.cli.move import command_move
from node.cli.parser import SERVE_PARSER, build_parser
from node.cli.serve import command_serve
from node.cli.store import command_store
from node.cli.users import command_users

__all__ = ["EXIT_FAILURE", "SERVE_PARSER", "CommandError", "build_parser", "main"]


COMMANDS = {
    "users": command_users,
    "keys": command_keys,
    "index": command_index,
    "serve": command_serve,
    "echo": command_echo,
    "store": command_store,
    "find": command_find,
    "get": command_get,
    "move": command_move,
}


ROLE_MODULES = {
    "broker": "broker.__main__",
    "worker": "workers.__main__",
    "acceptor": "node.acceptor.main",
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in ROLE_MODULES:
        import importlib

        role_main = importlib.import_module(ROLE_MODULES[arguments[0]]).main
        result: int = role_main(arguments[1:])
        return result
    parser = build_parser()
    if arguments and arguments[0] == "serve":
        from node.config import parse_with_config

        args = parse_with_config(SERVE_PARSER[0], arguments[1:])
        args.command = "serve"
    else:
        args = parser.parse_args(arguments)
    configure_logging(args.verbose, getattr(args, "log_format", "text"))
    try:
        return COMMANDS[args.command](args)
    except CommandError as error:
        print(f"dicomnode {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"dicomnode {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
