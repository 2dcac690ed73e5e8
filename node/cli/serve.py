# `dicomnode serve`: the embedded node (in one process, or acceptors and workers).
#
# Rules: the heavy modules (the AE, the stores, ZeroMQ) are imported inside the functions that
# use them, so that `dicomnode --help` and a bad argument answer in a few milliseconds.
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from node.cli.common import CommandError

#: `serve` options that ClusterConfig takes under the same name.
_SAME_NAMES = (
    *("ae_title", "port", "bind", "data_dir", "workers", "acceptors", "threads"),
    *("max_associations", "max_pdu", "verbose", "log_format", "runtime_dir"),
    *("acse_timeout", "network_timeout", "dimse_timeout", "metrics_port", "drain_timeout"),
    *("require_called_aet", "index", "store", "study_stable_seconds"),
)


def command_serve(args: argparse.Namespace) -> int:
    if args.workers < 0 or args.acceptors < 1:
        raise CommandError("--workers must be >= 0 and --acceptors >= 1")
    banner = (
        f"dicomnode serving {args.ae_title} on {args.bind}:{args.port}, "
        f"data in {os.path.abspath(args.data_dir)}, "
        + (
            f"{args.acceptors} acceptor(s), {args.workers} worker(s)"
            if args.workers
            else "in one process"
        )
    )
    if args.log_format == "json":  # the banner as a log line: every line of output is JSON
        logging.getLogger("dicomnode.serve").info("%s", banner)
    else:
        print(banner, flush=True)
    from node.acceptor.main import tls_server_context

    ssl_context = tls_server_context(args)  # a bad certificate or key fails here, at once
    if args.workers:
        return _serve_cluster(args)
    return _serve_in_process(args, ssl_context)


def _serve_cluster(args: argparse.Namespace) -> int:
    """Acceptors and workers as processes of this host (node.cluster)."""
    from node.acceptor.main import apply_access_options, forwarded_access_arguments, serves_worklist
    from node.ae import AE
    from node.cluster import Cluster, ClusterConfig

    # checked once here: the acceptors would each fail on a bad option
    apply_access_options(AE(args.ae_title), args)
    same = {name: getattr(args, name) for name in _SAME_NAMES}
    cluster = Cluster(
        ClusterConfig(
            **same,
            known_aes=list(args.known_ae),
            fsync=not args.no_fsync,
            handlers_module=args.handlers,
            require_calling_aet=list(args.require_calling_aet),
            acceptor_arguments=forwarded_access_arguments(args)
            + (["--worklist"] if serves_worklist(args.handlers) else []),
        )
    )
    return cluster.run()


def _serve_in_process(args: argparse.Namespace, ssl_context: Any) -> int:
    """The AE with its handlers on a thread pool of this process (--workers 0)."""
    from node.acceptor.main import apply_access_options, install_drain, server_ae_from
    from workers.store.index import Index
    from workers.store.objects import open_store

    ae = server_ae_from(args)
    ae.known_aes = dict(args.known_ae)
    apply_access_options(ae, args)
    index = Index.open(args.data_dir, synchronous="NORMAL", database=args.index)
    ae.file_store = open_store(args.data_dir, args.store, fsync=not args.no_fsync, index=index)
    monitor = None
    if args.study_stable_seconds:
        import importlib

        from workers.store.stable import start_monitor

        module = importlib.import_module(args.handlers) if args.handlers else None
        callback = getattr(module, "on_study_stable", None)
        monitor = start_monitor(ae.file_store.index, args.study_stable_seconds, callback)
    install_drain(ae, args.drain_timeout)
    try:
        ae.start(block=True, metrics_port=args.metrics_port, ssl_context=ssl_context)
    finally:
        if monitor is not None:
            monitor.stop()
    return 0
