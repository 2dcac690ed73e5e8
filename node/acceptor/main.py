# `dicomnode acceptor`: the acceptor role of the cluster, and the SCP configuration it shares
# with `dicomnode serve`.
#
# Rules: the acceptor owns TCP and the DICOM Upper Layer and hands every DIMSE request to the
# broker (node.acceptor.bridge.ZmqDispatcher); it never runs a service handler itself. Several
# acceptor processes may share one port (SO_REUSEPORT).
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from node.ae import AE
from node.presets import (
    ALL_STORAGE_SOP_CLASSES,
    ALL_TRANSFER_SYNTAXES,
    DEFAULT_TRANSFER_SYNTAXES,
    QUERY_RETRIEVE_SOP_CLASSES,
    VERIFICATION,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

log = logging.getLogger("dicomnode.acceptor")

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
#: Default --max-dataset-size: 4 GiB, the longest value one element can have (PS3.5 7.1.1).
DEFAULT_MAXIMUM_DATASET_SIZE = 4 << 30
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def server_ae_from(args: argparse.Namespace, *, worklist: bool = False) -> AE:
    """build_server_ae with the options `serve` and `acceptor` share (title, address,
    limits, timeouts)."""
    ae = build_server_ae(
        args.ae_title,
        args.port,
        args.bind,
        maximum_associations=args.max_associations,
        maximum_pdu=args.max_pdu,
        worklist=worklist,
    )
    ae.acse_timeout = args.acse_timeout
    ae.network_timeout = args.network_timeout
    ae.dimse_timeout = args.dimse_timeout
    return ae


def build_server_ae(
    ae_title: str,
    port: int,
    bind: str,
    *,
    maximum_associations: int,
    maximum_pdu: int,
    worklist: bool = False,
) -> AE:
    """The AE `serve` and `acceptor` run: Verification, every storage SOP class in any
    transfer syntax (both roles, so C-GET sub-operations work), Query/Retrieve, Storage
    Commitment and MPPS. Modality Worklist FIND only with `worklist` (a handler serves it:
    the built-in archive does not), so an SCU sees the context refused, as dcmqrscp does,
    rather than accepted and every query failed. Relational queries are agreed when asked
    for (PS3.4 C.5.1) unless `worklist` says a handler, not the built-in archive, answers
    C-FIND."""
    ae = AE(ae_title=ae_title, port=port, bind_addr=bind)
    ae.relational_queries = not worklist
    ae.maximum_associations = maximum_associations
    ae.maximum_pdu_size = maximum_pdu
    # Asynchronous operations (PS3.7 D.3.3.3): up to 16 requests of one association in flight,
    # served by several workers at once.
    ae.maximum_operations_performed = 16
    ae.add_supported_context(VERIFICATION)
    for uid in ALL_STORAGE_SOP_CLASSES:
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for uid in (
        *(uid for uid in QUERY_RETRIEVE_SOP_CLASSES if worklist or uid != MODALITY_WORKLIST_FIND),
        STORAGE_COMMITMENT_PUSH,
        MODALITY_PERFORMED_PROCEDURE_STEP,
    ):
        ae.add_supported_context(uid, DEFAULT_TRANSFER_SYNTAXES)
    return ae


def parse_size(text: str) -> int:
    """A byte count: digits with an optional binary unit (`512K`, `4G`, `4GiB`)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    digits = value[: len(value) - len(unit)]
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 4294967296, 4G)")
    return int(digits) * _SIZE_UNITS[unit]


def add_access_options(parser: argparse.ArgumentParser) -> None:
    """Who may associate (PS3.8 A-ASSOCIATE-RJ reasons 2, 3 and 7; PS3.7 D.3.3.7),
    DICOM over TLS (PS3.15 B.x) and the data set size cap."""
    parser.add_argument(
        "--max-dataset-size",
        type=parse_size,
        default=DEFAULT_MAXIMUM_DATASET_SIZE,
        metavar="BYTES",
        help="refuse a data set larger than this (C-STORE: A700H Out of Resources; the "
        "association goes on); units K, M, G allowed; 0 = no cap (default: 4G)",
    )
    parser.add_argument(
        "--require-called-aet",
        action="store_true",
        help="reject associations whose called AE title is not ours",
    )
    parser.add_argument(
        "--require-calling-aet",
        action="append",
        default=[],
        metavar="AET",
        help="accept only these calling AE titles (repeatable)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AET=NETWORK[,NETWORK]",
        help="accept calling AE title AET only from these addresses or CIDR networks "
        "(repeatable; AET '*' binds every title not named)",
    )
    parser.add_argument(
        "--max-per-aet",
        type=int,
        default=None,
        metavar="N",
        help="at most N associations at once from one calling AE title (per acceptor process)",
    )
    parser.add_argument(
        "--users",
        metavar="FILE",
        help="require a username and password (User Identity) found in FILE "
        "(lines user:password or user:$scrypt$..., see `dicomnode users add`)",
    )
    tls = parser.add_argument_group("DICOM over TLS (PS3.15 BCP 195 profiles, TLS 1.2+)")
    tls.add_argument(
        "--tls-cert", dest="tls_certificate", metavar="FILE", help="our certificate chain (PEM)"
    )
    tls.add_argument("--tls-key", dest="tls_key", metavar="FILE", help="its private key (PEM)")
    tls.add_argument(
        "--tls-ca",
        dest="tls_ca",
        metavar="FILE",
        help="trusted CA certificates (PEM): clients must present a certificate they issued "
        "(mutual TLS)",
    )


def parse_allow(values: Sequence[str]) -> dict[str, list[str]]:
    """`--allow AET=NETWORK[,NETWORK]` values as `AE.calling_aet_networks`."""
    bindings: dict[str, list[str]] = {}
    for value in values:
        title, separator, networks = str(value).partition("=")
        listed = [network.strip() for network in networks.split(",") if network.strip()]
        if not separator or not title.strip() or not listed:
            raise ValueError(f"--allow {value!r}: expected AET=NETWORK[,NETWORK]")
        bindings.setdefault(title.strip(), []).extend(listed)
    return bindings


def apply_access_options(ae: AE, args: argparse.Namespace) -> None:
    """Put the options of add_access_options() (TLS aside) on `ae`; ValueError or OSError
    with a one-line message when one cannot be used."""
    ae.require_called_aet = bool(args.require_called_aet)
    ae.require_calling_aet = list(args.require_calling_aet)
    ae.calling_aet_networks = parse_allow(args.allow)
    ae.maximum_associations_per_aet = args.max_per_aet
    ae.maximum_dataset_size = args.max_dataset_size or None
    if args.users:
        from node.users import UserTable

        users = UserTable.load(args.users)
        if not len(users):
            raise ValueError(f"--users {args.users}: no user in the file")
        ae.on_user_identity = users.on_user_identity
        ae.require_user_identity = True


def tls_server_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The SSL context of --tls-cert/--tls-key/--tls-ca, or None without --tls-cert."""
    if args.tls_certificate is None:
        if args.tls_key is not None or args.tls_ca is not None:
            raise ValueError("--tls-key and --tls-ca need --tls-cert")
        return None
    from node.tls import server_context

    return server_context(args.tls_certificate, args.tls_key, args.tls_ca)


def serves_worklist(handlers_module: str | None) -> bool:
    """Whether the --handlers module answers C-FIND (on_c_find), hence Modality Worklist."""
    if not handlers_module:
        return False
    import importlib

    return callable(getattr(importlib.import_module(handlers_module), "on_c_find", None))


def forwarded_access_arguments(args: argparse.Namespace) -> list[str]:
    """The options of add_access_options() beyond --require-called/calling-aet, as the
    acceptor processes of `serve --workers N` take them."""
    forwarded: list[str] = []
    if args.max_dataset_size != DEFAULT_MAXIMUM_DATASET_SIZE:
        forwarded += ["--max-dataset-size", str(args.max_dataset_size)]
    for value in args.allow:
        forwarded += ["--allow", str(value)]
    if args.max_per_aet is not None:
        forwarded += ["--max-per-aet", str(args.max_per_aet)]
    for option, value in (
        ("--users", args.users),
        ("--tls-cert", args.tls_certificate),
        ("--tls-key", args.tls_key),
        ("--tls-ca", args.tls_ca),
    ):
        if value is not None:
            forwarded += [option, os.path.abspath(value)]
    return forwarded


def install_drain(ae: AE, grace: float) -> None:
    """SIGTERM/SIGINT drain the AE (readiness false, no new associations, open ones finish
    within `grace` seconds) on a helper thread; start(block=True) then returns."""

    def drain(*_: object) -> None:
        threading.Thread(target=ae.drain, args=(grace,), name="dicomnode-drain").start()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode acceptor", description="dicomnode acceptor")
    link = parser.add_mutually_exclusive_group(required=True)
    link.add_argument("--broker", help="broker frontend endpoint")
    link.add_argument(
        "--workers-endpoint",
        metavar="ENDPOINT",
        help="bind ENDPOINT for the workers (their --broker) and route requests to them in this"
        " process, with no broker process in between (one acceptor per pool of workers;"
        " dicomnode serve does this with one acceptor)",
    )
    parser.add_argument("--ae-title", default="DICOMNODE")
    parser.add_argument("--port", type=int, default=11112)
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a server listens
    parser.add_argument("--max-associations", type=int, default=256)
    parser.add_argument("--max-pdu", type=int, default=16382)
    parser.add_argument("--dimse-timeout", type=float, default=None)
    parser.add_argument("--acse-timeout", type=float, default=30.0)
    parser.add_argument("--network-timeout", type=float, default=60.0)
    add_access_options(parser)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="acceptor processes sharing the port (SO_REUSEPORT)",
    )
    parser.add_argument(
        "--worklist",
        action="store_true",
        help="offer Modality Worklist FIND (the workers' --handlers answer it with on_c_find)",
    )
    parser.add_argument(
        "--local-echo",
        action="store_true",
        help="answer C-ECHO here (when no worker has a custom echo handler)",
    )
    from broker.curve import add_client_options

    add_client_options(parser)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz on this port",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds open associations get to finish",
    )
    parser.add_argument(
        "--handoff-dir",
        dest="handoff_dir",
        metavar="DIR",
        default=None,
        help="hand C-STORE data sets of 64 KiB and more to the workers as files in DIR, their"
        " data directory's spool/ on a file system shared with them (dicomnode serve does)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other acceptor processes (SO_REUSEPORT)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    from node.logs import add_logging_options

    add_logging_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from node.config import parse_with_config

    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_config(build_parser(), arguments)
    from node.logs import configure_logging

    configure_logging(args.verbose, args.log_format)
    if args.processes > 1 and args.workers_endpoint:
        print(
            "dicomnode acceptor: --workers-endpoint is bound by one acceptor process; "
            "run a broker for --processes N",
            file=sys.stderr,
        )
        return 2
    if args.processes > 1:
        from node.processes import supervise_copies

        extra = [] if args.reuse_port else ["--reuse-port"]
        return supervise_copies("node.acceptor", arguments, args.processes, extra=extra)
    ae = server_ae_from(args, worklist=args.worklist)
    from broker.curve import client_keys_from_args

    try:
        apply_access_options(ae, args)
        ssl_context = tls_server_context(args)
        curve = client_keys_from_args(args)
    except (ValueError, OSError) as error:
        print(f"dicomnode acceptor: {error}", file=sys.stderr)
        return 2
    if curve and args.workers_endpoint:
        print(
            "dicomnode acceptor: CURVE needs a broker (--broker), not --workers-endpoint",
            file=sys.stderr,
        )
        return 2
    ae.local_echo = True if args.local_echo else None
    ae.handoff_directory = args.handoff_dir
    install_drain(ae, args.drain_timeout)
    import zmq

    try:
        ae.start(
            block=True,
            broker=args.broker,
            workers_endpoint=args.workers_endpoint,
            reuse_port=args.reuse_port,
            metrics_port=args.metrics_port,
            ssl_context=ssl_context,
            curve=curve,
        )
    except zmq.ZMQError as error:
        print(
            f"dicomnode acceptor: cannot use {args.workers_endpoint or args.broker}: {error}",
            file=sys.stderr,
        )
        return 2
    return 0
