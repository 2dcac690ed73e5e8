# What the `dicomnode` commands share: argument types, the SCU's AE and association, the
# user-facing error, file walking, progress and result printing.
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.logs import add_logging_options

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


EXIT_FAILURE = 1


EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing error: printed as one line."""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def known_ae_entry(text: str) -> tuple[str, tuple[str, int]]:
    title, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not title or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected AET=HOST:PORT, got {text!r}")
    return title, (host, int(port))


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="peer host name or address")
    parser.add_argument("port", type=port_number, help="peer TCP port")
    parser.add_argument("--aet", default="DICOMNODE", help="our (calling) AE title")
    parser.add_argument("--aec", default="ANY-SCP", help="peer (called) AE title")
    parser.add_argument("--max-pdu", type=int, default=16382, help="maximum PDU we receive")
    parser.add_argument("--acse-timeout", type=positive_float, default=30.0)
    parser.add_argument("--dimse-timeout", type=positive_float, default=None)
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


def add_query_keys(parser: argparse.ArgumentParser) -> None:
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


def query_identifier(keys: Sequence[str]) -> Any:
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


def scu_ae(args: argparse.Namespace, contexts: Iterable[str] = ()) -> Any:
    """The AE of an SCU command (titles and timeouts from `args`) proposing `contexts`."""
    from node.ae import AE

    ae = AE(ae_title=args.aet)
    ae.acse_timeout = args.acse_timeout
    ae.dimse_timeout = args.dimse_timeout
    for uid in contexts:
        ae.add_requested_context(uid)
    return ae


@contextlib.contextmanager
def scu_session(ae: Any, args: argparse.Namespace, **kwargs: Any) -> Iterator[Any]:
    """An association of `ae` with the peer of `args`, released when the block ends (if it
    still stands); the AE is stopped whatever happens."""
    try:
        association = associate(ae, args, **kwargs)
        yield association
        if association.is_established:
            association.release()
    finally:
        ae.stop()


def tls_arguments(args: argparse.Namespace) -> Any:
    """(client SSL context, server name) when a TLS option is given, else None."""
    if not (args.tls or args.tls_ca or args.tls_certificate or args.tls_key):
        return None
    from node.tls import client_context

    return client_context(args.tls_ca, args.tls_certificate, args.tls_key), args.tls_server_name


def associate(ae: Any, args: argparse.Namespace, **kwargs: Any) -> Any:
    tls_args = tls_arguments(args)
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


def walk_files(paths: Sequence[str]) -> Iterator[Path]:
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


def print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        print("no matches")
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row.get(c, "").ljust(widths[c]) for c in columns))


def retrieve_summary(name: str, final: Any) -> int:
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
