# Structured logs (node.logs): the formats, the acceptor's one line per association and per
# failed request, and `--log-format json` on the command line.
#
# Rules: in-process AEs (workers=0) over loopback; waits are on events or bounded queue reads,
# never sleeps; the root logger's handlers and level are restored after each test.
from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from node.cluster import Cluster, ClusterConfig
from node.logs import (
    JsonFormatter,
    StderrHandler,
    TextFormatter,
    add_logging_options,
    configure_logging,
    record_fields,
)
from tests.synthetic import CT_IMAGE_STORAGE, PATIENCE, VERIFICATION, make_dataset

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget
DICOMNODE = Path(sys.executable).with_name("dicomnode")
ASSOCIATION_FIELDS = {
    "assoc_id",
    "acceptor",
    "peer",
    "peer_port",
    "calling_aet",
    "called_aet",
    "outcome",
    "reason",
    "duration_ms",
    "requests",
    "bytes_received",
}


@pytest.fixture
def bare_root() -> Iterator[Callable[[], logging.Logger]]:
    """Call it first thing in the test: the root logger without pytest's handlers (which it
    adds per test phase; configure_logging leaves a configured root alone, like basicConfig).
    Our handlers go and the level comes back at teardown."""
    root = logging.getLogger()
    level = root.level

    def bare() -> logging.Logger:
        root.handlers[:] = [h for h in root.handlers if isinstance(h, StderrHandler)]
        return root

    yield bare
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)


class _Waiter(logging.Handler):
    """Sets an event once `count` records with `key` in their extra fields have come."""

    def __init__(self, key: str, count: int = 1) -> None:
        super().__init__()
        self.key = key
        self.count = count
        self.seen = 0
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.key in record_fields(record):
            self.seen += 1
            if self.seen >= self.count:
                self.done.set()


@pytest.fixture
def json_logs(bare_root) -> Iterator[Callable[..., _Waiter]]:
    """Call it first thing: JSON logs on stderr, and a waiter for association lines that
    runs after the stderr handler (so a line is written once the waiter fires)."""
    waiter = _Waiter("bytes_received")
    root = logging.getLogger()

    def start(verbosity: int = 0, count: int = 1) -> _Waiter:
        bare_root()
        assert configure_logging(verbosity, "json") is not None
        waiter.count = count
        root.addHandler(waiter)
        return waiter

    yield start
    root.removeHandler(waiter)


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line]
    return [json.loads(line) for line in lines]  # every line must be one JSON object


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "dicomnode.test", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    record.__dict__.update(extra)
    return record


# --- formats --------------------------------------------------------------------------------


def test_json_line_has_the_base_fields_then_the_extra_ones():
    line = JsonFormatter().format(_record(assoc_id=7, peer="127.0.0.1", level="not me"))
    entry = json.loads(line)
    assert list(entry)[:5] == ["ts", "level", "logger", "message", "process"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert entry["level"] == "INFO"  # an extra field never hides a base one
    assert entry["logger"] == "dicomnode.test"
    assert entry["message"] == "hello x"
    assert entry["assoc_id"] == 7
    assert entry["peer"] == "127.0.0.1"


def test_json_line_stays_one_line_with_exceptions_and_odd_values():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = _record(path=Path("/tmp/x"))
        record.exc_info = sys.exc_info()
    record.stack_info = "Stack (most recent call last):\n  here"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["path"] == "/tmp/x"  # not JSON: its str()
    assert "RuntimeError: boom" in entry["exc"]
    assert entry["stack"].endswith("here")


def test_text_line_appends_the_extra_fields_as_key_value():
    formatter = TextFormatter()
    plain = formatter.format(_record())
    assert re.fullmatch(r"\S+ \S+ INFO dicomnode\.test\[\d+\]: hello x", plain)
    line = formatter.format(
        _record(assoc_id=3, reason="a b", empty="", none=None, quote='x"y', ok="k=v")
    )
    assert re.fullmatch(
        r'\S+ \S+ INFO dicomnode\.test\[\d+\]: hello x assoc_id=3 reason="a b" empty="" '
        r'quote="x\\"y" ok="k=v"',
        line,
    ), line


def test_text_line_keeps_the_traceback_after_the_fields():
    try:
        raise ValueError("bad")
    except ValueError:
        record = _record(msg_id=2)
        record.exc_info = sys.exc_info()
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("hello x msg_id=2")
    assert rest[-1] == "ValueError: bad"


HOSTILE = "A\x00\x01\x02\x1b[2J\x7f\x9b"


def _no_control_characters(text: str) -> bool:
    return not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text)


def test_control_characters_are_escaped_in_both_formats():
    """Text from the wire never reaches a terminal or log file as raw control characters."""
    record = logging.LogRecord(
        "dicomnode.test", logging.INFO, __file__, 1, "t=%s", (HOSTILE,), None
    )
    record.__dict__.update(calling_aet=HOSTILE, spaced=f"a {HOSTILE}")
    text = TextFormatter().format(record)
    assert _no_control_characters(text)
    assert text.endswith(
        r"t=A\x00\x01\x02\x1b[2J\x7f\x9b calling_aet=A\x00\x01\x02\x1b[2J\x7f\x9b "
        r'spaced="a A\u0000\u0001\u0002\u001b[2J\u007f\u009b"'
    ), text
    line = JsonFormatter().format(record)
    assert _no_control_characters(line)
    assert json.loads(line)["calling_aet"] == HOSTILE  # escaped, not lost


def test_a_calling_ae_title_with_control_characters_is_rejected_and_logged_escaped(
    bare_root, capsys, make_ae
):
    """PS3.5 6.2 forbids control characters in AE: A-ASSOCIATE-RJ, reason 3 (calling AE
    title not recognized), and the log line shows the title escaped."""
    import socket

    from tests.acse.support import make_request

    bare_root()
    assert configure_logging(1, "text") is not None
    association_lines = _Waiter("bytes_received")
    logging.getLogger().addHandler(association_lines)
    try:
        scp = _scp(make_ae)
        scp.start(block=False)
        request = make_request(calling_ae_title="STORESCU", called_ae_title="LOGSCP").encode()
        calling = request.index(b"STORESCU")
        hostile = HOSTILE.encode("latin-1").ljust(16)
        request = request[:calling] + hostile + request[calling + 16 :]
        with socket.create_connection(("127.0.0.1", scp.port), timeout=WAIT) as peer:
            peer.sendall(request)
            answer = peer.recv(10)
        assert answer == bytes((0x03, 0, 0, 0, 0, 4, 0, 1, 1, 3)), answer
        assert association_lines.done.wait(WAIT)
    finally:
        logging.getLogger().removeHandler(association_lines)
    err = capsys.readouterr().err
    assert "rejected" in err
    assert "\\x1b[2J" in err
    assert _no_control_characters(err)


def test_stderr_handler_writes_to_the_current_stderr(monkeypatch):
    handler = StderrHandler()
    handler.stream = io.StringIO()  # ignored: always the sys.stderr of the moment
    handler.setFormatter(logging.Formatter("%(message)s"))
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replaced)
    handler.emit(_record())
    assert replaced.getvalue() == "hello x\n"


# --- configure_logging ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verbosity", "log_format", "default_level", "expected"),
    [
        (0, "text", None, logging.WARNING),
        (1, "text", None, logging.INFO),
        (5, "text", None, logging.DEBUG),
        (0, "json", None, logging.INFO),
        (1, "json", None, logging.DEBUG),
        (-1, "json", None, logging.INFO),
        (0, "text", logging.INFO, logging.INFO),
        (1, "json", logging.INFO, logging.DEBUG),
    ],
)
def test_levels(bare_root, verbosity, log_format, default_level, expected):
    root = bare_root()
    handler = configure_logging(verbosity, log_format, default_level=default_level)
    assert handler is not None
    assert root.handlers == [handler]
    assert root.level == expected


def test_configure_again_replaces_its_own_handler(bare_root, capsys):
    root = bare_root()
    first = configure_logging(0, "text")
    second = configure_logging(0, "json")
    assert root.handlers == [second]
    assert first is not second
    logging.getLogger("dicomnode.test").warning("once", extra={"assoc_id": 1})
    (entry,) = _json_lines(capsys.readouterr().err)
    assert entry["message"] == "once"
    assert entry["assoc_id"] == 1


def test_an_already_configured_root_is_left_alone(bare_root):
    root = bare_root()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    root.setLevel(logging.ERROR)
    assert configure_logging(2, "json") is None
    assert root.handlers == [foreign]
    assert root.level == logging.ERROR


def test_unknown_format_is_refused(bare_root):
    root = bare_root()
    with pytest.raises(ValueError, match="xml"):
        configure_logging(0, "xml")
    assert root.handlers == []


def test_option_and_config_file_key(tmp_path):
    import argparse

    from node.config import parse_with_config

    def parser() -> argparse.ArgumentParser:
        built = argparse.ArgumentParser(prog="role")
        add_logging_options(built)
        return built

    assert parse_with_config(parser(), []).log_format == "text"
    assert parse_with_config(parser(), ["--log-format", "json"]).log_format == "json"
    config = tmp_path / "node.toml"
    config.write_text('[logging]\nformat = "json"\n')
    assert parse_with_config(parser(), ["--config", str(config)]).log_format == "json"
    assert (
        parse_with_config(parser(), ["--config", str(config), "--log-format", "text"]).log_format
        == "text"
    )
    config.write_text('[logging]\nformat = "xml"\n')
    with pytest.raises(SystemExit):
        parse_with_config(parser(), ["--config", str(config)])
    with pytest.raises(SystemExit):
        parse_with_config(parser(), ["--log-format", "xml"])


def test_every_role_takes_the_option_and_serve_passes_it_on(tmp_path):
    from broker.config import parse_args as broker_args
    from node.acceptor.main import build_parser as acceptor_parser
    from node.cli import build_parser as cli_parser
    from workers.__main__ import build_parser as worker_parser

    json_format = ["--log-format", "json"]
    assert broker_args(["--frontend", "ipc://a", "--backend", "ipc://b", *json_format]).log_format
    assert acceptor_parser().parse_args(["--broker", "ipc://a", *json_format]).log_format == "json"
    assert worker_parser().parse_args(["--broker", "ipc://a", *json_format]).log_format == "json"
    cli = cli_parser()
    assert cli.parse_args(["serve", *json_format]).log_format == "json"
    assert cli.parse_args(["echo", "localhost", "104", *json_format]).log_format == "json"
    cluster = Cluster(
        ClusterConfig(
            ae_title="NODE",
            port=0,
            bind="127.0.0.1",
            data_dir=str(tmp_path),
            workers=1,
            acceptors=2,
            log_format="json",
            runtime_dir=str(tmp_path / "run"),
        )
    )
    commands = [role.command for role in cluster._commands()]
    assert len(commands) == 3  # a worker and two acceptors (each routes itself: no broker)
    for command in commands:
        index = command.index("--log-format")
        assert command[index + 1] == "json"


# --- the acceptor's lines -------------------------------------------------------------------


def _scp(make_ae, **attributes: Any):
    scp = make_ae("LOGSCP", **attributes)
    scp.add_supported_context(VERIFICATION)
    scp.add_supported_context(CT_IMAGE_STORAGE)
    return scp


def _scu(make_ae, title: str = "LOGSCU"):
    scu = make_ae(title)
    scu.add_requested_context(VERIFICATION)
    scu.add_requested_context(CT_IMAGE_STORAGE)
    return scu


def _store_status(dataset, context, info):
    return 0xA700 if str(dataset.PatientID) == "FULL" else 0x0000


def test_one_line_per_association_and_per_failed_request(json_logs, capsys, make_ae):
    association_lines = json_logs()
    scp = _scp(make_ae, on_c_store=_store_status)
    scp.start(block=False)
    association = _scu(make_ae).associate("127.0.0.1", scp.port, ae_title="LOGSCP")
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    stored = make_dataset()
    assert association.send_c_store(stored).Status == 0x0000
    full = make_dataset(2)
    full.PatientID = "FULL"
    assert association.send_c_store(full).Status == 0xA700
    association.release()
    assert association_lines.done.wait(WAIT)

    entries = _json_lines(capsys.readouterr().err)
    (ended,) = [entry for entry in entries if "outcome" in entry and "msg_id" not in entry]
    assert set(ended) >= ASSOCIATION_FIELDS
    assert ended["level"] == "INFO"
    assert ended["logger"] == "dicomnode.acceptor"
    assert ended["outcome"] == "released"
    assert ended["reason"] == ""
    assert ended["peer"] == "127.0.0.1"
    assert ended["calling_aet"] == "LOGSCU"
    assert ended["called_aet"] == "LOGSCP"
    assert ended["requests"] == 3
    assert ended["bytes_received"] > len(full.PixelData) + len(stored.PixelData)
    assert ended["duration_ms"] >= 0
    assert ended["message"] == "released association from 127.0.0.1 (LOGSCU -> LOGSCP)"
    (failed,) = [entry for entry in entries if "msg_id" in entry]
    assert failed["level"] == "WARNING"
    assert failed["assoc_id"] == ended["assoc_id"]
    assert failed["msg_id"] == 3
    assert failed["command"] == "C-STORE"
    assert failed["status"] == "0xA700"
    assert failed["outcome"] == "failed"
    assert failed["calling_aet"] == "LOGSCU"
    assert "error_comment" in failed
    assert failed["message"] == "C-STORE request 3 failed: status 0xA700"


def test_warning_status_and_refusals_are_failed_request_lines(json_logs, capsys, make_ae):
    from pydicom.dataset import Dataset

    def coerced(dataset, context, info):
        status = Dataset()
        status.Status = 0xB007
        status.ErrorComment = "coerced"
        return status

    association_lines = json_logs()
    scp = _scp(make_ae, on_c_store=coerced)
    scp.start(block=False)
    association = _scu(make_ae).associate("127.0.0.1", scp.port, ae_title="LOGSCP")
    assert association.send_c_store(make_dataset()).Status == 0xB007
    association.release()
    assert association_lines.done.wait(WAIT)
    entries = _json_lines(capsys.readouterr().err)
    (warned,) = [entry for entry in entries if "msg_id" in entry]
    assert warned["outcome"] == "warning"
    assert warned["status"] == "0xB007"
    assert warned["error_comment"] == "coerced"


def test_rejected_and_aborted_associations_get_their_line(json_logs, capsys, make_ae):
    association_lines = json_logs(count=2)
    scp = _scp(make_ae, require_calling_aet=[b"LOGSCU"])
    scp.start(block=False)
    stranger = _scu(make_ae, "STRANGER").associate("127.0.0.1", scp.port, ae_title="LOGSCP")
    assert stranger.is_rejected
    aborted = _scu(make_ae).associate("127.0.0.1", scp.port, ae_title="LOGSCP")
    assert aborted.send_c_echo().Status == 0x0000
    aborted.abort()
    assert association_lines.done.wait(WAIT)
    entries = [entry for entry in _json_lines(capsys.readouterr().err) if "outcome" in entry]
    by_outcome = {entry["outcome"]: entry for entry in entries}
    assert len(entries) == 2
    rejected = by_outcome["rejected"]
    assert set(rejected) >= ASSOCIATION_FIELDS
    assert rejected["calling_aet"] == "STRANGER"
    assert "STRANGER" in rejected["reason"]
    assert rejected["requests"] == 0
    ended = by_outcome["aborted"]
    assert ended["reason"] == "peer"
    assert ended["detail"].startswith("aborted by peer")
    assert ended["requests"] == 1


def test_no_line_for_a_connection_without_an_association(json_logs, capsys, make_ae):
    import socket

    association_lines = json_logs()
    scp = _scp(make_ae)
    scp.start(block=False)
    with socket.create_connection(("127.0.0.1", scp.port), timeout=WAIT):
        pass  # a load balancer's TCP probe
    association = _scu(make_ae).associate("127.0.0.1", scp.port, ae_title="LOGSCP")
    association.release()
    assert association_lines.done.wait(WAIT)
    entries = [entry for entry in _json_lines(capsys.readouterr().err) if "outcome" in entry]
    assert [entry["outcome"] for entry in entries] == ["released"]


def test_user_identity_passwords_are_never_logged(json_logs, capsys, make_ae, tmp_path):
    from node.ul.items import UserIdentityRQSubItem, UserIdentityType
    from node.users import UserTable, add_user

    association_lines = json_logs(verbosity=2, count=2)  # DEBUG: everything there is
    users = tmp_path / "users"
    add_user(users, "alice", "s3cret-passw0rd")
    scp = _scp(
        make_ae,
        on_user_identity=UserTable.load(users).on_user_identity,
        require_user_identity=True,
    )
    scp.start(block=False)
    for password in (b"s3cret-passw0rd", b"wr0ng-passw0rd"):
        identity = UserIdentityRQSubItem(
            UserIdentityType.USERNAME_AND_PASSCODE, True, b"alice", password
        )
        association = _scu(make_ae).associate(
            "127.0.0.1", scp.port, ae_title="LOGSCP", ext_neg=[identity]
        )
        if association.is_established:
            association.release()
    assert association_lines.done.wait(WAIT)
    err = capsys.readouterr().err
    outcomes = sorted(entry.get("outcome", "") for entry in _json_lines(err))
    assert outcomes[-2:] == ["rejected", "released"]
    assert "passw0rd" not in err


# --- the command line -----------------------------------------------------------------------


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for raw in stream:
        lines.put(raw.decode("utf-8", "replace"))
    lines.put(None)


def test_serve_log_format_json_prints_json_lines(tmp_path, make_ae):
    process = subprocess.Popen(
        [
            str(DICOMNODE),
            "serve",
            "--log-format",
            "json",
            "--workers",
            "0",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path / "data"),
            "--no-fsync",
            "--drain-timeout",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        port = None
        while port is None:
            line = lines.get(timeout=PATIENCE)
            assert line is not None, f"serve exited early: {seen}"
            seen.append(line)
            found = re.search(r"listening on \S+:(\d+)", json.loads(line)["message"])
            port = int(found.group(1)) if found else None
        association = _scu(make_ae).associate("127.0.0.1", port, ae_title="DICOMNODE")
        assert association.send_c_echo().Status == 0x0000
        association.release()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=PATIENCE) == 0
        assert process.stdout is not None
        stdout = process.stdout.read()
        reader.join(timeout=PATIENCE)
        while (line := lines.get(timeout=PATIENCE)) is not None:
            seen.append(line)
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=PATIENCE)
    entries = [json.loads(line) for line in seen]
    assert any(entry["message"].startswith("dicomnode serving") for entry in entries)
    (ended,) = [entry for entry in entries if entry.get("outcome") == "released"]
    assert ended["calling_aet"] == "LOGSCU"
    assert ended["requests"] == 1
    assert stdout == b""  # the banner is a log line too
