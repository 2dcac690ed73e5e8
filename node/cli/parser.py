# The `dicomnode` argument parser: every command and its options.
from __future__ import annotations

import argparse
import os

from node.cli.common import (
    add_common_options,
    add_query_keys,
    known_ae_entry,
    port_number,
    positive_float,
)
from node.logs import add_logging_options

#: The `serve` sub-parser of the last build_parser() (parsed on its own for --config).
SERVE_PARSER: list[argparse.ArgumentParser] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description="DICOM networking node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the embedded DICOM node (SCP)")
    SERVE_PARSER[:] = [serve]
    _add_serve_options(serve)
    _add_storage_options(serve)
    _add_scu_tools(commands)
    _add_maintenance(commands)
    for role in ("broker", "worker", "acceptor"):
        sub = commands.add_parser(
            role, help=f"run the {role} role (see `dicomnode {role} -h`)", add_help=False
        )
        sub.add_argument("role_args", nargs=argparse.REMAINDER)
    return parser


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    """Where `serve` listens, its processes, timeouts, access and logs."""
    serve.add_argument("--ae-title", default="DICOMNODE")
    serve.add_argument("--port", type=port_number, default=11112)
    serve.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a server listens
    serve.add_argument("--data-dir", default="./data")
    serve.add_argument(
        "--workers",
        type=int,
        default=max(1, len(os.sched_getaffinity(0))),
        help="worker processes (default: one per CPU; 0 = everything in one process)",
    )
    serve.add_argument("--acceptors", type=int, default=1, help="acceptor processes")
    serve.add_argument(
        "--acse-timeout",
        type=positive_float,
        default=30.0,
        help="seconds to wait for association negotiation (also ARTIM)",
    )
    serve.add_argument(
        "--network-timeout",
        type=positive_float,
        default=60.0,
        help="seconds an idle association may stay open",
    )
    serve.add_argument(
        "--dimse-timeout", type=positive_float, default=None, help="deadline of each DIMSE request"
    )
    serve.add_argument("--handlers", help="module with on_c_* callbacks run by the workers")
    serve.add_argument(
        "--runtime-dir", help="folder for the ipc:// endpoints (default: a temp dir)"
    )
    serve.add_argument("--threads", type=int, default=4, help="handler threads per worker")
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz (acceptor 1 uses this port)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=positive_float,
        default=30.0,
        help="on SIGTERM, seconds open associations get to finish",
    )
    from node.acceptor.main import add_access_options

    add_access_options(serve)
    serve.add_argument("--max-associations", type=int, default=64)
    serve.add_argument("--max-pdu", type=int, default=16382)
    serve.add_argument("-v", "--verbose", action="count", default=0)
    add_logging_options(serve)


def _add_storage_options(serve: argparse.ArgumentParser) -> None:
    """Where `serve` keeps objects and index, C-MOVE destinations, study-stable events."""
    serve.add_argument(
        "--known-ae",
        type=known_ae_entry,
        action="append",
        default=[],
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination",
    )
    serve.add_argument(
        "--no-fsync", action="store_true", help="do not fsync stored files (faster, not durable)"
    )
    serve.add_argument(
        "--index",
        default=None,
        metavar="URL",
        help="index database: a postgresql:// URL (default: SQLite in DATA_DIR/index.sqlite)",
    )
    serve.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="object store s3://BUCKET/PREFIX?endpoint=URL (credentials from AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY; default: files in DATA_DIR/objects)",
    )
    serve.add_argument(
        "--study-stable-seconds",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="call on_study_stable (--handlers) for a study that got no instance this long",
    )


def _add_scu_tools(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """echo, store, find, get and move: the SCU tools."""
    echo = commands.add_parser("echo", help="C-ECHO a peer")
    add_common_options(echo)
    echo.add_argument("--repeat", type=int, default=1)

    store = commands.add_parser("store", help="C-STORE files and folders to a peer")
    add_common_options(store)
    store.add_argument("paths", nargs="+", help="files or folders (searched recursively)")

    find = commands.add_parser("find", help="C-FIND on a peer")
    add_common_options(find)
    add_query_keys(find)
    find.add_argument("--json", action="store_true", help="print results as JSON")

    get = commands.add_parser("get", help="C-GET from a peer into a folder")
    add_common_options(get)
    add_query_keys(get)
    get.add_argument("--out", default=".", help="folder to write retrieved objects to")

    move = commands.add_parser("move", help="C-MOVE from a peer to another AE")
    add_common_options(move)
    add_query_keys(move)
    move.add_argument("--dest", required=True, help="move destination AE title")


def _add_maintenance(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """index rebuild, users add and keys generate."""

    index = commands.add_parser("index", help="maintain the Query/Retrieve index")
    index_actions = index.add_subparsers(dest="index_action", required=True)
    rebuild = index_actions.add_parser(
        "rebuild", help="re-index every file under DATA_DIR/objects into DATA_DIR/index.sqlite"
    )
    rebuild.add_argument("data_dir", metavar="DATA_DIR", help="the node's data directory")
    rebuild.add_argument("--store", default=None, metavar="URL", help="rebuild from this s3://")
    rebuild.add_argument("--index", default=None, metavar="URL", help="a postgresql:// index")
    rebuild.add_argument("-v", "--verbose", action="count", default=0)

    users = commands.add_parser("users", help="maintain a users file (serve/acceptor --users)")
    users_actions = users.add_subparsers(dest="users_action", required=True)
    add_user = users_actions.add_parser(
        "add",
        help="add USER (or replace its password) with a scrypt-hashed password; the password "
        "is read from the terminal, or from the first line of standard input",
    )
    add_user.add_argument("file", metavar="FILE", help="the users file (created 0600)")
    add_user.add_argument("user", metavar="USER")
    add_user.add_argument("-v", "--verbose", action="count", default=0)

    keys = commands.add_parser("keys", help="ZeroMQ CURVE keys for the links between hosts")
    keys_actions = keys.add_subparsers(dest="keys_action", required=True)
    generate = keys_actions.add_parser(
        "generate",
        help="write NAME.key (public) and NAME.key_secret (pair) for each NAME "
        "(default: broker and client)",
    )
    generate.add_argument("directory", metavar="DIR")
    generate.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="NAME",
        help="a key pair to write (repeatable)",
    )
    generate.add_argument("-v", "--verbose", action="count", default=0)
