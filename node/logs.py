# Logging for every process role (serve, acceptor, worker, broker, the SCU commands):
# `-v` and `--log-format text|json`.
#
# Rules: one handler on the root logger, writing to stderr. JSON: one object per line with ts
# (ISO 8601, UTC), level, logger, message, process and every `extra` field of the record
# (assoc_id, msg_id, peer, status...); text: the classic line with those fields appended as
# key=value. Whatever a caller passes as `extra` is printed: pass facts, never secrets
# (passwords, keys, tokens). Like logging.basicConfig, nothing changes when someone else
# (an embedding application, a test harness) already put handlers on the root logger.
from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    import argparse

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

#: Attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra` fields of a record, in the order they were given."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)  # ensure_ascii: every control character as \uXXXX


#: C0 controls, DEL and C1 controls as visible escapes: text from the wire (an AE title, an
#: error comment) must never move the terminal's cursor or forge a log line.
_CONTROL_ESCAPES: Final = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}


def escape_controls(text: str) -> str:
    """`text` with every control character written as \\xNN."""
    return text.translate(_CONTROL_ESCAPES)


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return escape_controls(json.dumps(text))
    return escape_controls(text)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, the record's `extra` fields appended to the message as key=value
    (None values left out)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = escape_controls(super().formatMessage(record))
        pairs = [
            f"{key}={_text_value(v)}" for key, v in record_fields(record).items() if v is not None
        ]
        return " ".join([line, *pairs])


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is when a record comes (a redirect, a test's capture)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """The stream is always the current sys.stderr."""


def configure_logging(
    verbosity: int, log_format: str = "text", *, default_level: int | None = None
) -> logging.Handler | None:
    """Log to stderr in `log_format` ("text" or "json"); return the handler, or None when
    the root logger already has handlers someone else installed (then nothing changes).

    The level is `default_level` (WARNING for text, INFO for json, whose one line per
    association is the point of it) lowered one step per `verbosity`, down to DEBUG. Called
    again, it replaces its own handler. Raises ValueError for an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (choose from text, json)")
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if isinstance(handler, StderrHandler)]
    if len(ours) < len(root.handlers):
        return None
    for handler in ours:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    if default_level is None:
        default_level = logging.INFO if log_format == "json" else logging.WARNING
    root.setLevel(max(logging.DEBUG, default_level - 10 * max(verbosity, 0)))
    return handler


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """`--log-format {text,json}` (the `[logging] format` key of the config file)."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines on stderr as text, or as one JSON object per line with ts, level, "
        "logger, message and fields such as assoc_id (json logs at INFO by default: "
        "one line per association)",
    )
