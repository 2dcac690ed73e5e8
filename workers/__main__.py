# `dicomnode worker` / `python -m workers`: run worker processes against a broker.
#
# Rules: configuration from the command line into typed config objects; logic lives in
# workers.runtime. With --processes N the parent supervises N children (restarting any that
# die) and forwards SIGTERM/SIGINT to them.
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from broker.curve import add_client_options, client_keys_from_args
from node import evt
from node.config import parse_with_config
from node.logs import add_logging_options, configure_logging
from node.observability import WORKER_REQUESTS, HealthEndpoint
from node.processes import supervise_copies
from workers.handlers.common import SERVICE_CALLBACKS, Handlers
from workers.runtime import WorkerConfig, WorkerSet
from workers.store.index import Index
from workers.store.objects import open_store
from workers.store.stable import start_monitor

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("dicomnode.worker")

_CALLBACKS = (*SERVICE_CALLBACKS, "on_study_stable")


def _known_ae(text: str) -> tuple[str, tuple[str, int]]:
    title, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not title or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected AET=HOST:PORT, got {text!r}")
    return title, (host, int(port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode worker", description="dicomnode worker")
    parser.add_argument(
        "--broker",
        required=True,
        nargs="+",
        metavar="ENDPOINT",
        help="the broker's backend endpoint, or each acceptor's --workers-endpoint (several: "
        "this worker serves them all)",
    )
    parser.add_argument("--data-dir", help="storage directory (built-in storage)")
    parser.add_argument(
        "--index",
        default=None,
        metavar="URL",
        help="index database: a postgresql:// URL (default: SQLite in DATA_DIR/index.sqlite)",
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="object store s3://BUCKET/PREFIX?endpoint=URL (credentials from AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY; default: files in DATA_DIR/objects)",
    )
    parser.add_argument(
        "--study-stable-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="raise on_study_stable for a study quiet this long (needs --data-dir)",
    )
    parser.add_argument("--handlers", help="module with on_c_* callbacks / evt_handlers")
    parser.add_argument(
        "--callback",
        action="append",
        default=[],
        metavar="NAME=MODULE:QUALNAME",
        help="one service callback, e.g. on_c_store=mypkg.handlers:store",
    )
    parser.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="EVT_NAME=MODULE:QUALNAME",
        help="one event handler, e.g. EVT_C_STORE=mypkg.handlers:handle_store",
    )
    parser.add_argument("--threads", type=int, default=4, help="requests run at once")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--ae-title", default="DICOMNODE")
    parser.add_argument("--known-ae", type=_known_ae, action="append", default=[])
    parser.add_argument("--max-pdu", type=int, default=16382)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz on this port",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_logging_options(parser)
    add_client_options(parser)
    return parser


def load_handlers(args: argparse.Namespace) -> Handlers:
    """Built-in storage plus the user's callbacks from --handlers MODULE."""
    handlers = Handlers(
        known_aes=dict(args.known_ae),
        local_ae_title=args.ae_title,
        maximum_pdu_size=args.max_pdu,
    )
    if args.data_dir:
        handlers.index = Index.open(args.data_dir, synchronous="NORMAL", database=args.index)
        handlers.file_store = open_store(
            args.data_dir, args.store, fsync=not args.no_fsync, index=None
        )
        if hasattr(handlers.file_store, "bind"):  # the object store: rows live in its bucket
            handlers.file_store.bind(handlers.index)
    if args.handlers:
        module = importlib.import_module(args.handlers)
        for name in _CALLBACKS:
            if hasattr(module, name):
                setattr(handlers, name, getattr(module, name))
        for event, handler, *_ in getattr(module, "evt_handlers", ()):
            handlers.events[event] = handler
        handlers.known_aes.update(getattr(module, "known_aes", {}))
    for spec in args.callback:
        name, _, target = spec.partition("=")
        if name not in _CALLBACKS:
            raise ImportError(f"--callback {spec!r}: {name!r} is not a service callback")
        setattr(handlers, name, resolve(target))
    for spec in args.event:
        name, _, target = spec.partition("=")
        event = getattr(evt, name, None)
        if not isinstance(event, evt.EventType):
            raise ImportError(f"--event {spec!r}: no event named {name!r}")
        handlers.events[event] = resolve(target)
    return handlers


def resolve(target: str) -> Any:
    """Import MODULE:QUALNAME (a module-level function or a nested attribute)."""
    module_name, _, qualname = target.partition(":")
    if not module_name or not qualname:
        raise ImportError(f"{target!r} is not MODULE:QUALNAME")
    value: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_config(build_parser(), args_list)
    configure_logging(args.verbose, args.log_format)
    if args.processes > 1:
        return supervise_copies("workers", args_list, args.processes)
    try:
        curve = client_keys_from_args(args)
    except ValueError as error:
        print(f"dicomnode worker: {error}", file=sys.stderr)
        return 1
    try:
        handlers = load_handlers(args)
    except (ImportError, AttributeError, OSError, ValueError) as error:
        print(f"dicomnode worker: {error}", file=sys.stderr)
        return 1
    monitor = None
    if args.study_stable_seconds and handlers.index is None:
        log.warning("--study-stable-seconds needs --data-dir (the index): no study-stable events")
    elif args.study_stable_seconds:
        monitor = start_monitor(handlers.index, args.study_stable_seconds, handlers.on_study_stable)
    endpoints = [args.broker] if isinstance(args.broker, str) else list(args.broker)
    configs = [
        WorkerConfig(
            broker=endpoint,
            threads=args.threads,
            heartbeat_interval=args.heartbeat_interval,
            curve=curve,
        )
        for endpoint in dict.fromkeys(endpoints)  # each once
    ]
    worker = WorkerSet(configs, handlers)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    health = None
    if args.metrics_port is not None:
        health = HealthEndpoint(args.metrics_port, worker.readiness)
        worker.count_requests = WORKER_REQUESTS.inc
    try:
        worker.run()
    finally:
        if monitor is not None:
            monitor.stop()
        if health is not None:
            health.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
