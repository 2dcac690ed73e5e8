# The TOML config file (`--config PATH`) shared by every role: it supplies defaults, the
# command line wins.
#
# Rules: one mapping from TOML keys to each role's argument names; a key this role does not
# take is ignored (one file serves every role), an unknown section or key is an error naming
# it, and values go through the same type conversion as the command line.
from __future__ import annotations

import argparse
import tomllib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

#: (section, key) -> argparse destination. `storage.fsync` maps to the inverted --no-fsync.
KEYS: dict[tuple[str, str], str] = {
    ("node", "ae_title"): "ae_title",
    ("node", "port"): "port",
    ("node", "bind"): "bind",
    ("node", "maximum_associations"): "max_associations",
    ("node", "maximum_pdu_size"): "max_pdu",
    ("node", "maximum_dataset_size"): "max_dataset_size",
    ("node", "require_called_aet"): "require_called_aet",
    ("node", "require_calling_aet"): "require_calling_aet",
    ("node", "workers"): "workers",
    ("node", "acceptors"): "acceptors",
    ("node", "threads"): "threads",
    ("node", "handlers"): "handlers",
    ("timeouts", "acse"): "acse_timeout",
    ("timeouts", "dimse"): "dimse_timeout",
    ("timeouts", "network"): "network_timeout",
    ("timeouts", "drain"): "drain_timeout",
    ("storage", "data_dir"): "data_dir",
    ("storage", "fsync"): "no_fsync",
    ("broker", "frontend"): "frontend",
    ("broker", "backend"): "backend",
    ("broker", "endpoint"): "broker",
    ("broker", "heartbeat_interval"): "heartbeat_interval",
    ("broker", "heartbeat_liveness"): "heartbeat_liveness",
    ("broker", "max_queue"): "max_queue",
    ("metrics", "port"): "metrics_port",
    ("logging", "format"): "log_format",
    ("security", "curve_keys"): "curve_keys",
    ("security", "curve_secret"): "curve_secret",
    ("security", "curve_server_public"): "curve_server_public",
    ("security", "curve_clients"): "curve_clients",
    ("security", "tls_certificate"): "tls_certificate",
    ("security", "tls_key"): "tls_key",
    ("security", "tls_ca"): "tls_ca",
    ("security", "users"): "users",
    ("security", "allow"): "allow",
    ("security", "maximum_associations_per_aet"): "max_per_aet",
}


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and the key."""


def _values(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        if section == "known_aes":
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [known_aes] must be a table of AET = 'host:port'")
            values["known_ae"] = [
                (str(title), _address(path, str(title), address))
                for title, address in table.items()
            ]
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} is not a [section]")
        for key, value in table.items():
            destination = KEYS.get((section, key))
            if destination is None:
                raise ConfigError(f"{path}: unknown setting {section}.{key}")
            if destination == "no_fsync":
                value = not value
            values[destination] = value
    return values


def _address(path: str, title: str, address: object) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{path}: known_aes.{title} must be 'host:port', not {address!r}")
    return host, int(port)


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv` with `parser`, taking defaults from `--config PATH` when given."""
    if not any(action.dest == "config" for action in parser._actions):
        parser.add_argument("--config", help="TOML config file (command-line options win)")
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    known, _rest = first.parse_known_args(argv)
    if known.config:
        try:
            values = _values(known.config)
        except ConfigError as error:
            parser.error(str(error))
        actions = {action.dest: action for action in parser._actions}
        defaults: dict[str, Any] = {}
        for destination, value in values.items():
            action = actions.get(destination)
            if action is None:
                continue  # a setting for another role
            if action.type is not None and not isinstance(value, list | bool):
                try:
                    value = action.type(str(value))  # type: ignore[operator]
                except (argparse.ArgumentTypeError, ValueError) as error:
                    parser.error(f"{known.config}: {destination}: {error}")
            if action.choices is not None and value not in action.choices:
                parser.error(
                    f"{known.config}: {destination}: {value!r} is not one of "
                    + ", ".join(map(str, action.choices))
                )
            defaults[destination] = value
            action.required = False  # the file supplies it
        parser.set_defaults(**defaults)
    return parser.parse_args(argv)
