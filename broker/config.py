# The broker process's configuration and its command line (`dicomnode broker ...`,
# `python -m broker ...`).
#
# Rules: a frozen dataclass checked at construction; parsing only, no sockets.
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker listens and how patient it is (DESIGN.md "Failure")."""

    #: ZeroMQ endpoint the acceptors connect to (ROUTER), e.g. "tcp://*:5555" or "ipc:///run/fe".
    frontend: str
    #: ZeroMQ endpoint the workers connect to (ROUTER).
    backend: str
    #: Seconds between heartbeats.
    heartbeat_interval: float = 1.0
    #: Heartbeats a peer may miss before it is declared dead.
    heartbeat_liveness: int = 3
    #: Requests waiting for a worker; beyond, new requests are refused at once (0xA700).
    max_queue: int = 10_000
    #: 0: info, 1 or more: debug (with a stats line every few seconds).
    verbose: int = 0
    #: node.logs format of the log lines: "text" or "json".
    log_format: str = "text"
    metrics_port: int | None = None
    #: CURVE (broker.curve): our key pair file (NAME.key_secret); None: no encryption.
    curve_secret: str | None = None
    #: CURVE: a folder of allowed client public keys (NAME.key); None: any client that knows
    #: our public key may connect.
    curve_clients: str | None = None

    def __post_init__(self) -> None:
        if not self.frontend or not self.backend:
            raise ValueError("the frontend and backend endpoints are required")
        if self.frontend == self.backend:
            raise ValueError("the frontend and backend endpoints must differ")
        if not self.heartbeat_interval > 0:
            raise ValueError("heartbeat interval must be positive")
        if self.heartbeat_liveness < 1:
            raise ValueError("heartbeat liveness must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max queue must not be negative")
        if self.curve_clients is not None and self.curve_secret is None:
            raise ValueError("--curve-clients needs --curve-secret (the broker's key pair)")


def build_parser(prog: str = "dicomnode broker") -> argparse.ArgumentParser:
    """The broker's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Route DICOM requests from acceptors to workers over ZeroMQ.",
    )
    parser.add_argument("--frontend", required=True, help="endpoint for acceptors (ROUTER bind)")
    parser.add_argument("--backend", required=True, help="endpoint for workers (ROUTER bind)")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=1.0, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--heartbeat-liveness",
        type=int,
        default=3,
        help="missed heartbeats before a peer is dead (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=10_000,
        help="requests waiting for a worker before new ones are refused (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    from node.logs import add_logging_options

    add_logging_options(parser)
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz"
    )
    curve = parser.add_argument_group("CURVE encryption between hosts (ZeroMQ)")
    curve.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="the broker's key pair (broker.key_secret from `dicomnode keys generate`)",
    )
    curve.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="accept only acceptors and workers whose public key (NAME.key) is in DIR",
    )
    curve.add_argument(
        "--curve-keys",
        metavar="DIR",
        help="shorthand: DIR/broker.key_secret and the public keys in DIR",
    )
    return parser


def parse_args(argv: Sequence[str], prog: str = "dicomnode broker") -> BrokerConfig:
    """Parse the command line into a BrokerConfig (argparse exits on bad arguments)."""
    parser = build_parser(prog)
    from node.config import parse_with_config

    namespace = parse_with_config(parser, list(argv))
    from broker.curve import server_paths

    curve_secret, curve_clients = server_paths(
        namespace.curve_keys, namespace.curve_secret, namespace.curve_clients
    )
    try:
        return BrokerConfig(
            frontend=namespace.frontend,
            backend=namespace.backend,
            heartbeat_interval=namespace.heartbeat_interval,
            heartbeat_liveness=namespace.heartbeat_liveness,
            max_queue=namespace.max_queue,
            verbose=namespace.verbose,
            log_format=namespace.log_format,
            metrics_port=namespace.metrics_port,
            curve_secret=curve_secret,
            curve_clients=curve_clients,
        )
    except ValueError as error:
        parser.error(str(error))
