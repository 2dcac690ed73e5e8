# Every command line deploy/ runs (Kubernetes args, compose commands, the Dockerfile's CMD) and
# the config file of the ConfigMap, parsed by the roles' real parsers the way `dicomnode` parses
# them (node.config.parse_with_config), then checked against what surrounds them: container
# ports and probes, grace periods, mounted Secrets. The /readyz health check of the image and
# of compose is run against a real health endpoint.
#
# Rules: no network beyond the loopback interface, no cluster, no Docker engine. A command that
# does not parse fails the test with the parser's own message.
from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from node.config import KEYS, parse_with_config
from tests.deploy.files import (
    COMPOSE,
    CONFIG_MAP,
    by_kind,
    dockerfile_instructions,
    pod_specs,
    run,
)
from tests.deploy.kustomize import Document, load_documents

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

#: Where the Deployments mount the ConfigMap's dicomnode.toml, and pass it with --config.
CONFIG_PATH = "/etc/dicomnode/dicomnode.toml"
#: Each role with the arguments it cannot run without.
REQUIRED = {
    "serve": ["serve"],
    "acceptor": ["acceptor", "--broker", "tcp://broker:5555"],
    "worker": ["worker", "--broker", "tcp://broker:5556"],
    "broker": ["broker", "--frontend", "tcp://*:5555", "--backend", "tcp://*:5556"],
}
#: The [security] settings the ConfigMap leaves commented out (each needs its Secret).
OPTIONAL_SECURITY = {"curve_keys", "tls_certificate", "tls_key", "tls_ca"}


def role_parser(role: str) -> argparse.ArgumentParser:
    """A fresh argument parser of `dicomnode ROLE` (parse_with_config changes its defaults)."""
    if role == "serve":
        from node import cli

        cli.build_parser()
        return cli.SERVE_PARSER[0]
    module = {
        "acceptor": "node.acceptor.main",
        "worker": "workers.__main__",
        "broker": "broker.config",
    }
    parser: argparse.ArgumentParser = importlib.import_module(module[role]).build_parser()
    return parser


def parse(command: list[str]) -> argparse.Namespace:
    """`dicomnode ROLE ARGS...` parsed as node.cli.main parses it (SystemExit on an error)."""
    role, *rest = command
    assert role in REQUIRED, command
    return parse_with_config(role_parser(role), rest)


def parse_or_fail(where: str, command: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    try:
        return parse(command)
    except SystemExit:
        pytest.fail(f"{where}: {shlex.join(command)}\n{capsys.readouterr().err}")


def config_text() -> str:
    [config_map] = load_documents(CONFIG_MAP)
    text: str = config_map["data"]["dicomnode.toml"]
    return text


def with_optional_security(text: str) -> tuple[str, set[str]]:
    """The config with its commented-out [security] settings switched on, and their keys."""
    lines: list[str] = []
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        header = re.match(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
        setting = re.fullmatch(r"# (\w+) = .+", line)
        if section == "security" and setting:
            keys.add(setting.group(1))
            line = line.removeprefix("# ")
        lines.append(line)
    return "\n".join(lines) + "\n", keys


def with_config(command: list[str], config: Path) -> list[str]:
    return [argument.replace(CONFIG_PATH, str(config)) for argument in command]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "dicomnode.toml"
    path.write_text(config_text())
    return path


def k8s_containers(
    rendered: dict[str, list[Document]],
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, documents in rendered.items():
        for deployment, pod in pod_specs(documents):
            for container in pod["containers"]:
                yield f"k8s {name} {deployment}", pod, container


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return {n: s for n, s in services.items() if s.get("image", "").startswith("dicomnode")}


def dockerfile_words() -> dict[str, str]:
    return dict(dockerfile_instructions())


def health_check_code() -> str:
    """The Python code of the image's HEALTHCHECK (python -c CODE)."""
    check = json.loads(dockerfile_words()["HEALTHCHECK"].partition(" CMD ")[2])
    assert check[:2] == ["python", "-c"]
    code: str = check[2]
    return code


def health_check_port(code: str) -> int:
    found = re.search(r"HTTPConnection\('127\.0\.0\.1', (\d+),", code)
    assert found, code
    return int(found.group(1))


def seconds(duration: str) -> int:
    """A compose duration such as 2m or 90s."""
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


# --- the config file ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(REQUIRED))
def test_config_file_parses_for_every_role(
    role: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [*REQUIRED[role], "--config", str(config_file)]
    args = parse_or_fail(role, command, capsys)
    assert args.metrics_port == 9100
    if role != "broker":
        assert args.ae_title == "DICOMNODE"
        assert args.max_pdu == 16382
    if role in ("serve", "acceptor"):
        assert (args.port, args.require_called_aet) == (11112, True)
        assert (args.acse_timeout, args.dimse_timeout, args.network_timeout) == (30, 60, 60)
        assert args.max_associations == 256
        assert args.drain_timeout == 90
    if role in ("serve", "worker"):
        assert args.data_dir == "/data"
        assert args.no_fsync is False
        assert dict(args.known_ae) == {
            "STORESCU": ("storescu.example.org", 11113),
            "VIEWER": ("viewer.example.org", 104),
        }
    if role == "broker":
        from broker.config import parse_args

        broker = parse_args(command[1:])
        assert (broker.heartbeat_interval, broker.heartbeat_liveness) == (1.0, 3)
        assert (broker.curve_secret, broker.curve_clients) == (None, None)
    # Nothing that needs a Secret is switched on by default.
    for name in ("curve_keys", "curve_secret", "curve_server_public", "curve_clients", "users"):
        assert getattr(args, name, None) is None, name
    for name in ("tls_certificate", "tls_key", "tls_ca"):
        assert getattr(args, name, None) is None, name


def test_the_command_line_wins_over_the_config_file(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [*REQUIRED["acceptor"], "--config", str(config_file), "--metrics-port", "9200"]
    assert parse_or_fail("acceptor", command, capsys).metrics_port == 9200


def test_every_config_key_is_taken_by_some_role() -> None:
    # Every role accepts every key (the test above); a key that no role uses would be dead.
    destinations = {action.dest for role in REQUIRED for action in role_parser(role)._actions}
    text, _ = with_optional_security(config_text())
    for section, table in tomllib.loads(text).items():
        if section == "known_aes":
            assert "known_ae" in destinations
            continue
        for key in table:
            assert KEYS[(section, key)] in destinations, f"{section}.{key}"


def test_optional_security_settings_parse_and_match_the_mounted_secrets(
    rendered: dict[str, list[Document]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, keys = with_optional_security(config_text())
    assert keys == OPTIONAL_SECURITY
    config = tmp_path / "secure.toml"
    config.write_text(text)
    from broker.curve import CLIENT_NAME, SERVER_NAME, server_paths

    curve_pods, tls_pods = set(), set()
    for where, pod, container in k8s_containers(rendered):
        args = parse_or_fail(where, with_config(container["args"], config), capsys)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        needed: dict[str, set[str]] = {}  # "curve" or "tls" -> the files the role will open
        if getattr(args, "curve_keys", None):
            curve_pods.add(where.split()[-1])
            if container["args"][0] == "broker":
                secret, clients = server_paths(args.curve_keys, None, None)
                assert secret is not None
                assert clients == args.curve_keys
                files = {secret, f"{clients}/{CLIENT_NAME}.key"}
            else:
                files = {
                    f"{args.curve_keys}/{CLIENT_NAME}.key_secret",
                    f"{args.curve_keys}/{SERVER_NAME}.key",
                }
            needed["curve"] = files
        if getattr(args, "tls_certificate", None):
            tls_pods.add(where.split()[-1])
            needed["tls"] = {args.tls_certificate, args.tls_key}
            assert Path(args.tls_ca).parent == Path(args.tls_certificate).parent
        for kind, files in needed.items():
            for file in files:
                directory, name = str(Path(file).parent), Path(file).name
                volume = volumes[mounts[directory]]["secret"]
                assert volume["secretName"] == f"dicomnode-{kind}", where
                assert volume["optional"] is True, where
                items = volume.get("items")
                if kind == "tls":
                    assert items is None, "all keys, so an optional ca.crt appears too"
                else:
                    assert name in {item["path"] for item in items}, f"{where}: {file}"
    assert curve_pods == {"dicomnode-broker", "dicomnode-acceptor", "dicomnode-worker"}
    assert tls_pods == {"dicomnode-acceptor", "dicomnode"}


# --- the command lines ---------------------------------------------------------------------------


def test_every_command_line_parses_with_the_real_parsers(
    rendered: dict[str, list[Document]], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roles = set()
    commands = [(w, c["args"]) for w, _, c in k8s_containers(rendered)]
    commands += [(f"compose {n}", s["command"]) for n, s in compose_services().items()]
    commands.append(("Dockerfile CMD", json.loads(dockerfile_words()["CMD"])))
    for where, command in commands:
        parse_or_fail(where, with_config([str(a) for a in command], config_file), capsys)
        roles.add(command[0])
    assert roles == set(REQUIRED)


def test_k8s_pods_listen_where_their_probes_services_and_grace_periods_expect(
    rendered: dict[str, list[Document]], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for where, pod, container in k8s_containers(rendered):
        assert f"--config={CONFIG_PATH}" in container["args"], where
        args = parse_or_fail(where, with_config(container["args"], config_file), capsys)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert args.metrics_port == ports["metrics"], where  # probes: /readyz, /healthz there
        if container["args"][0] == "broker":
            assert int(args.frontend.rpartition(":")[2]) == ports["frontend"], where
            assert int(args.backend.rpartition(":")[2]) == ports["backend"], where
        else:
            assert args.ae_title == "DICOMNODE", where
        if "port" in args:
            assert args.port == ports["dicom"], where
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts[CONFIG_PATH]["subPath"] == "dicomnode.toml", where
        assert volumes[mounts[CONFIG_PATH]["name"]]["configMap"]["name"] == "dicomnode-config"
        if getattr(args, "data_dir", None) and not getattr(args, "store", None):
            assert "persistentVolumeClaim" in volumes[mounts[args.data_dir]["name"]], where
        elif getattr(args, "data_dir", None):  # objects in a bucket: DATA_DIR is scratch
            assert "emptyDir" in volumes[mounts[args.data_dir]["name"]], where
        if "drain_timeout" in args:
            pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep", where
            budget = int(pre_stop[1]) + args.drain_timeout
            assert budget < pod["terminationGracePeriodSeconds"], where


def test_production_workers_index_into_postgresql(
    rendered: dict[str, list[Document]], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = by_kind(rendered["production"], "Deployment")["dicomnode-worker"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = parse_or_fail("production worker", with_config(container["args"], config_file), capsys)
    # Kubernetes puts the Secret's URL in place of $(DICOMNODE_INDEX) before the process runs.
    assert args.index == "$(DICOMNODE_INDEX)"


def test_compose_commands_match_their_health_checks_and_grace_periods(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = " ".join(health_check_code().split())
    services = compose_services()
    assert set(services) == {"broker", "worker-1", "worker-2", "acceptor-1", "acceptor-2"}
    for name, service in services.items():
        args = parse_or_fail(f"compose {name}", service["command"], capsys)
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        assert " ".join(test[3].split()) == code, f"{name}: the image's HEALTHCHECK"
        assert args.metrics_port == health_check_port(code), name
        if "drain_timeout" in args:
            assert args.drain_timeout < seconds(service["stop_grace_period"]), name
        if service["command"][0] == "worker":
            assert args.index.startswith("postgresql://dicomnode:")
            assert args.index.partition("@")[2].startswith("postgres:5432/")
            assert f"data:{args.data_dir}" in service["volumes"]


def test_dockerfile_cmd_serves_the_health_check_port(capsys: pytest.CaptureFixture[str]) -> None:
    words = dockerfile_words()
    args = parse_or_fail("Dockerfile CMD", json.loads(words["CMD"]), capsys)
    assert args.metrics_port == health_check_port(health_check_code())
    assert {str(args.port), str(args.metrics_port)} <= set(words["EXPOSE"].split())
    assert args.data_dir == "/data"


# --- the /readyz health check ---------------------------------------------------------------


def test_readyz_health_check_follows_readiness() -> None:
    from node.observability import HealthEndpoint

    code = health_check_code()
    state = [(True, "ready: 2 worker(s)")]
    endpoint = HealthEndpoint(0, lambda: state[0], host="127.0.0.1")
    port = health_check_port(code)
    check = [
        sys.executable,
        "-c",
        code.replace(f"'127.0.0.1', {port},", f"'127.0.0.1', {endpoint.port},"),
    ]
    try:
        ready = run(check)
        assert (ready.returncode, ready.stdout) == (0, "ready: 2 worker(s)\n")
        state[0] = (False, "no live worker")
        not_ready = run(check)
        assert (not_ready.returncode, not_ready.stdout) == (1, "no live worker\n")
    finally:
        endpoint.close()
    gone = run(check)
    assert gone.returncode == 1
    assert "ConnectionRefusedError" in gone.stderr
