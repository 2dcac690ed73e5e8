# The `dicomnode` command: serve, and the SCU tools echo / store / find / get / move.
#
# Rules: every failure the user can cause (bad argument, unreachable peer, rejected association,
# unreadable file) ends as one clear line on stderr and a non-zero exit code, never a
# traceback (-v shows the details).
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.logs import add_logging_options, configure_logging

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing error: printed as one line."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _known_ae(text: str) -> tuple[str, tuple[str, int]]:
    title, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not title or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected AET=HOST:PORT, got {text!r}")
    return title, (host, int(port))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="peer host name or address")
    parser.add_argument("port", type=_port, help="peer TCP port")
    parser.add_argument("--aet", default="DICOMNODE", help="our (calling) AE title")
    parser.add_argument("--aec", default="ANY-SCP", help="peer (called) AE title")
    parser.add_argument("--max-pdu", type=int, default=16382, help="maximum PDU we receive")
    parser.add_argument("--acse-timeout", type=_positive_float, default=30.0)
    parser.add_argument("--dimse-timeout", type=_positive_float, default=None)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_logging_options(parser)
    tls = parser.add_argument_group("DICOM over TLS (PS3.15 BCP 195 profiles, TLS 1.2+)")
    tls.add_argument(
        "--tls", action="store_true", help="connect with TLS (implied by the options below)"
    )
    tls.add_argument(
        "--tls-ca",
        dest="tls_ca",
        metavar="FILE",
        help="CA certificates (PEM) the peer's certificate must chain to "
        "(default: the system's trusted authorities)",
    )
    tls.add_argument(
        "--tls-cert",
        dest="tls_certificate",
        metavar="FILE",
        help="our client certificate (PEM), for peers that require one",
    )
    tls.add_argument("--tls-key", dest="tls_key", metavar="FILE", help="its private key (PEM)")
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the peer's certificate must carry (default: HOST)",
    )


def _query_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEYWORD=VALUE",
        help="query key, e.g. -k QueryRetrieveLevel=STUDY -k PatientName=DOE*",
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "-P",
        "--patient",
        dest="model",
        action="store_const",
        const="P",
        help="Patient Root information model (default)",
    )
    model.add_argument(
        "-S",
        "--study",
        dest="model",
        action="store_const",
        const="S",
        help="Study Root information model",
    )
    parser.set_defaults(model="P")


#: The `serve` sub-parser of the last build_parser() (parsed on its own for --config).
SERVE_PARSER: list[argparse.ArgumentParser] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description="DICOM networking node")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the embedded DICOM node (SCP)")
    SERVE_PARSER[:] = [serve]
    serve.add_argument("--ae-title", default="DICOMNODE")
    serve.add_argument("--port", type=_port, default=11112)
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
        type=_positive_float,
        default=30.0,
        help="seconds to wait for association negotiation (also ARTIM)",
    )
    serve.add_argument(
        "--network-timeout",
        type=_positive_float,
        default=60.0,
        help="seconds an idle association may stay open",
    )
    serve.add_argument(
        "--dimse-timeout", type=_positive_float, default=None, help="deadline of each DIMSE request"
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
        type=_positive_float,
        default=30.0,
        help="on SIGTERM, seconds open associations get to finish",
    )
    from node.acceptor import add_access_options

    add_access_options(serve)
    serve.add_argument("--max-associations", type=int, default=64)
    serve.add_argument("--max-pdu", type=int, default=16382)
    serve.add_argument(
        "--known-ae",
        type=_known_ae,
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
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="call on_study_stable (--handlers) for a study that got no instance this long",
    )
    serve.add_argument("-v", "--verbose", action="count", default=0)
    add_logging_options(serve)

    echo = commands.add_parser("echo", help="C-ECHO a peer")
    _common(echo)
    echo.add_argument("--repeat", type=int, default=1)

    store = commands.add_parser("store", help="C-STORE files and folders to a peer")
    _common(store)
    store.add_argument("paths", nargs="+", help="files or folders (searched recursively)")

    find = commands.add_parser("find", help="C-FIND on a peer")
    _common(find)
    _query_keys(find)
    find.add_argument("--json", action="store_true", help="print results as JSON")

    get = commands.add_parser("get", help="C-GET from a peer into a folder")
    _common(get)
    _query_keys(get)
    get.add_argument("--out", default=".", help="folder to write retrieved objects to")

    move = commands.add_parser("move", help="C-MOVE from a peer to another AE")
    _common(move)
    _query_keys(move)
    move.add_argument("--dest", required=True, help="move destination AE title")

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

    for role in ("broker", "worker", "acceptor"):
        sub = commands.add_parser(
            role, help=f"run the {role} role (see `dicomnode {role} -h`)", add_help=False
        )
        sub.add_argument("role_args", nargs=argparse.REMAINDER)
    return parser


# --- helpers ------------------------------------------------------------------------------


def _identifier(keys: Sequence[str]) -> Any:
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataset import Dataset

    dataset = Dataset()
    for key in keys:
        keyword, _, value = key.partition("=")
        keyword = keyword.strip()
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise CommandError(f"unknown query key {keyword!r} (use a DICOM keyword)")
        vr = dictionary_VR(tag)
        if vr in ("US", "SS", "UL", "SL") and value:
            dataset.add_new(tag, vr, int(value))
        else:
            dataset.add_new(tag, vr, value)
    if "QueryRetrieveLevel" not in dataset:
        dataset.QueryRetrieveLevel = "STUDY"
    return dataset


def _ae(args: argparse.Namespace) -> Any:
    from node.ae import AE

    ae = AE(ae_title=args.aet)
    ae.acse_timeout = args.acse_timeout
    ae.dimse_timeout = args.dimse_timeout
    return ae


def _tls_args(args: argparse.Namespace) -> Any:
    """(client SSL context, server name) when a TLS option is given, else None."""
    if not (args.tls or args.tls_ca or args.tls_certificate or args.tls_key):
        return None
    from node.tls import client_context

    return client_context(args.tls_ca, args.tls_certificate, args.tls_key), args.tls_server_name


def _associate(ae: Any, args: argparse.Namespace, **kwargs: Any) -> Any:
    tls_args = _tls_args(args)
    association = ae.associate(
        args.host,
        args.port,
        ae_title=args.aec,
        max_pdu=args.max_pdu,
        tls_args=tls_args,
        **kwargs,
    )
    if association.is_rejected:
        rejection = association._inner.rejection
        raise CommandError(
            f"association rejected by {args.aec} at {args.host}:{args.port} (result "
            f"{rejection.result}, source {rejection.source}, reason {rejection.reason})"
        )
    if not association.is_established:
        reason = association._inner.failure_reason
        raise CommandError(
            f"could not associate with {args.host}:{args.port}"
            + (" over TLS" if tls_args else "")
            + (f": {reason}" if reason else "")
        )
    return association


def _files(paths: Sequence[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise CommandError(f"no such file or folder: {name}")


class Progress:
    """A one-line progress bar with rate on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            elapsed = max(time.monotonic() - self.start, 1e-6)
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{self.done / elapsed:7.1f}/s"
            )
            sys.stderr.flush()

    def close(self) -> float:
        if self.enabled:
            sys.stderr.write("\n")
        return time.monotonic() - self.start


# --- commands -----------------------------------------------------------------------------


def command_echo(args: argparse.Namespace) -> int:
    ae = _ae(args)
    ae.add_requested_context("1.2.840.10008.1.1")
    try:
        association = _associate(ae, args)
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


def command_store(args: argparse.Namespace) -> int:
    from node.dicomio import read_part10
    from node.scu import UNCOMPRESSED

    files = list(_files(args.paths))
    if not files:
        raise CommandError("no files to send")
    objects = []
    unreadable = 0
    syntaxes: dict[str, set[str]] = {}
    for path in files:
        try:
            part10 = read_part10(str(path))
        except Exception as error:  # noqa: BLE001 - any unreadable file is reported and skipped
            print(f"skipped {path}: {error}", file=sys.stderr)
            unreadable += 1
            continue
        objects.append((path, part10))
        syntaxes.setdefault(part10.sop_class_uid, set()).add(part10.transfer_syntax)
    if len(syntaxes) > 128:
        raise CommandError(f"{len(syntaxes)} SOP classes: more than one association can carry")
    ae = _ae(args)
    for sop_class, found in syntaxes.items():
        ordered = sorted(found) + [ts for ts in UNCOMPRESSED if ts not in found]
        ae.add_requested_context(sop_class, ordered)
    failures = 0
    try:
        association = _associate(ae, args)
        progress = Progress(len(objects))
        for path, part10 in objects:
            try:
                status = association.send_c_store(part10)
            except ValueError as error:
                print(f"failed {path}: {error}", file=sys.stderr)
                failures += 1
                progress.step()
                continue
            code = int(status.Status) if "Status" in status else None
            if code is None or code not in (0x0000, 0xB000, 0xB006, 0xB007):
                failures += 1
                shown = "no response" if code is None else f"0x{code:04X}"
                print(f"failed {path}: status {shown}", file=sys.stderr)
                if code is None:
                    break
            progress.step()
        elapsed = progress.close()
        if association.is_established:
            association.release()
    finally:
        ae.stop()
    sent = len(objects)
    print(
        f"{sent - failures} of {sent} objects stored in {elapsed:.2f} s "
        f"({(sent - failures) / max(elapsed, 1e-6):.1f}/s); {failures} failed, "
        f"{unreadable} unreadable"
    )
    return EXIT_FAILURE if failures or unreadable else 0


def _print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        print("no matches")
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row.get(c, "").ljust(widths[c]) for c in columns))


def command_find(args: argparse.Namespace) -> int:
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES

    identifier = _identifier(args.key)
    ae = _ae(args)
    for uid in QUERY_RETRIEVE_SOP_CLASSES:
        ae.add_requested_context(uid)
    rows: list[dict[str, str]] = []
    final = None
    final_status: Any = None
    try:
        association = _associate(ae, args)
        for status, result in association.send_c_find(identifier, query_model=args.model):
            code = int(status.Status) if "Status" in status else None
            if code in (0xFF00, 0xFF01) and result is not None:
                rows.append({e.keyword or str(e.tag): str(e.value) for e in result})
            else:
                final, final_status = code, status
        association.release()
    finally:
        ae.stop()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    if final != 0:
        print(f"C-FIND ended with status {_status_reason(final, final_status)}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _status_reason(code: int | None, status: Any) -> str:
    """`A900H Failure: Identifier does not match SOP Class (...)`: the PS3.4 meaning of a
    C-FIND final status with the peer's Error Comment and Offending Element when sent."""
    if code is None:
        return "none (no final response)"
    from node.dimse.messages import CommandField
    from node.dimse.status import describe

    text = describe(code, CommandField.C_FIND_RQ)
    comment = status.get("ErrorComment") if status is not None else None
    if comment:
        text += f": {comment}"
    offending = status.get("OffendingElement") if status is not None else None
    if offending:
        tags = offending if isinstance(offending, list | tuple) else [offending]
        text += (
            " (offending element "
            + ", ".join(f"({int(t) >> 16:04X},{int(t) & 0xFFFF:04X})" for t in tags)
            + ")"
        )
    return text


def _retrieve_summary(name: str, final: Any) -> int:
    if final is None or "Status" not in final:
        print(f"{name}: no final response", file=sys.stderr)
        return EXIT_FAILURE
    code = int(final.Status)
    counts = ", ".join(
        f"{label} {int(final.get(keyword, 0) or 0)}"
        for label, keyword in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
        )
    )
    print(f"{name} status 0x{code:04X}: {counts}")
    return 0 if code == 0 else EXIT_FAILURE


def command_get(args: argparse.Namespace) -> int:
    from node.ae import build_role
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES, StoragePresentationContexts

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    identifier = _identifier(args.key)
    ae = _ae(args)
    for uid in QUERY_RETRIEVE_SOP_CLASSES[:6]:
        ae.add_requested_context(uid)
    storage = [c.abstract_syntax for c in StoragePresentationContexts[: 128 - 6]]
    for uid in storage:
        ae.add_requested_context(uid)
    roles = [build_role(uid, scp_role=True) for uid in storage]
    ae.file_store = _FlatStore(out)
    final = None
    try:
        association = _associate(ae, args, ext_neg=roles)
        for status, _identifier_reply in association.send_c_get(identifier, query_model=args.model):
            final = status
        association.release()
    finally:
        ae.stop()
    return _retrieve_summary("C-GET", final)


class _FlatStore:
    """Writes retrieved objects as <SOPInstanceUID>.dcm into one folder (for `get`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # no FileStore here: it would leave an empty objects/ folder

    def store(
        self,
        sop_class: str,
        sop_instance: str,
        syntax: str,
        data: bytes,
        source: str = "",
        **_options: Any,
    ) -> Any:
        from node.ae import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
        from workers.store.files import checked_uid, file_meta

        path = self.folder / (checked_uid(sop_instance, "SOP Instance UID") + ".dcm")
        header = file_meta(
            sop_class,
            sop_instance,
            syntax,
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
            source,
        )
        path.write_bytes(header + data)
        return path


def command_move(args: argparse.Namespace) -> int:
    from node.presets import QUERY_RETRIEVE_SOP_CLASSES

    identifier = _identifier(args.key)
    ae = _ae(args)
    for uid in QUERY_RETRIEVE_SOP_CLASSES:
        ae.add_requested_context(uid)
    final = None
    try:
        association = _associate(ae, args)
        for status, _reply in association.send_c_move(
            identifier, args.dest, query_model=args.model
        ):
            final = status
        association.release()
    finally:
        ae.stop()
    return _retrieve_summary("C-MOVE", final)


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
    from node.acceptor import forwarded_access_arguments, serves_worklist, tls_server_context

    ssl_context = tls_server_context(args)  # a bad certificate or key fails here, at once
    if args.workers:
        from node.acceptor import apply_access_options as check_access_options
        from node.ae import AE
        from node.cluster import Cluster, ClusterConfig

        check_access_options(AE(args.ae_title), args)  # the acceptors would fail one by one
        cluster = Cluster(
            ClusterConfig(
                ae_title=args.ae_title,
                port=args.port,
                bind=args.bind,
                data_dir=args.data_dir,
                workers=args.workers,
                acceptors=args.acceptors,
                threads=args.threads,
                max_associations=args.max_associations,
                max_pdu=args.max_pdu,
                known_aes=list(args.known_ae),
                fsync=not args.no_fsync,
                verbose=args.verbose,
                log_format=args.log_format,
                handlers_module=args.handlers,
                runtime_dir=args.runtime_dir,
                acse_timeout=args.acse_timeout,
                network_timeout=args.network_timeout,
                dimse_timeout=args.dimse_timeout,
                metrics_port=args.metrics_port,
                drain_timeout=args.drain_timeout,
                require_called_aet=args.require_called_aet,
                require_calling_aet=list(args.require_calling_aet),
                index=args.index,
                store=args.store,
                study_stable_seconds=args.study_stable_seconds,
                acceptor_arguments=forwarded_access_arguments(args)
                + (["--worklist"] if serves_worklist(args.handlers) else []),
            )
        )
        return cluster.run()
    from node.acceptor import build_server_ae
    from workers.store.index import Index
    from workers.store.objects import open_store

    ae = build_server_ae(
        args.ae_title,
        args.port,
        args.bind,
        maximum_associations=args.max_associations,
        maximum_pdu=args.max_pdu,
    )
    ae.known_aes = dict(args.known_ae)
    from node.acceptor import apply_access_options, install_drain

    apply_access_options(ae, args)
    ae.acse_timeout = args.acse_timeout
    ae.network_timeout = args.network_timeout
    ae.dimse_timeout = args.dimse_timeout
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


def command_index(args: argparse.Namespace) -> int:
    """`dicomnode index rebuild DATA_DIR`: the index again from the stored files."""
    from workers.store.index import Index

    data_dir = Path(args.data_dir)
    if not args.store and not (data_dir / "objects").is_dir():
        raise CommandError(f"{data_dir} has no objects/ folder: not a data directory")
    start = time.monotonic()
    with Index.open(data_dir, database=args.index) as index:
        if args.store:
            from workers.store.objects import ObjectStore

            ObjectStore(args.store, data_dir, index=index, create_bucket=False)
        report = index.rebuild()
        counts = index.counts()
    print(
        f"indexed {report.indexed} files in {time.monotonic() - start:.2f} s "
        f"({report.unreadable} unreadable, {report.removed} rows of missing files removed): "
        + ", ".join(f"{count} {table}" for table, count in counts.items())
    )
    return EXIT_FAILURE if report.unreadable else 0


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


def command_keys(args: argparse.Namespace) -> int:
    """`dicomnode keys generate DIR`: CURVE key pairs (broker.curve) for --curve-* options."""
    from broker.curve import CLIENT_NAME, SERVER_NAME, generate_keys

    names = args.name or [SERVER_NAME, CLIENT_NAME]
    for path in generate_keys(args.directory, names):
        print(path)
    return 0


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
    "acceptor": "node.acceptor",
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


if __name__ == "__main__":
    sys.exit(main())
