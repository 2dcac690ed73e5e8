# The security options of the command line: SCU --tls*, serve/acceptor --tls-*/--allow/
# --max-per-aet/--users, their config file keys, and what `serve --workers N` forwards.
from __future__ import annotations

import argparse
import re

import pytest

from node import cli
from node.acceptor.main import (
    add_access_options,
    apply_access_options,
    build_parser,
    forwarded_access_arguments,
    parse_allow,
    tls_server_context,
)
from node.cluster import Cluster, ClusterConfig
from node.config import parse_with_config
from node.tls import server_context
from node.users import add_user
from tests.synthetic import VERIFICATION


def _access(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_access_options(parser)
    return parser.parse_args(argv)


def test_allow_values():
    assert parse_allow(["A=10.0.0.0/8", "A=192.0.2.1, 192.0.2.2", "*=::1"]) == {
        "A": ["10.0.0.0/8", "192.0.2.1", "192.0.2.2"],
        "*": ["::1"],
    }
    for bad in ("A", "=10.0.0.0/8", "A=", "A=,"):
        with pytest.raises(ValueError, match=re.escape(f"--allow {bad!r}")):
            parse_allow([bad])


def test_access_options_reach_the_ae(make_ae, tmp_path):
    users = tmp_path / "users"
    add_user(users, "alice", "pw")
    args = _access(
        [
            "--allow",
            "A=10.0.0.0/8",
            "--max-per-aet",
            "3",
            "--users",
            str(users),
            "--require-calling-aet",
            "A",
            "--require-called-aet",
        ]
    )
    ae = make_ae("OURSCP")
    apply_access_options(ae, args)
    assert ae.calling_aet_networks == {"A": ["10.0.0.0/8"]}
    assert ae.maximum_associations_per_aet == 3
    assert ae.require_user_identity
    assert ae.on_user_identity(2, b"alice", b"pw", {}) == (True, b"")
    assert ae.require_calling_aet == [b"A"]
    assert ae.require_called_aet
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n")
    with pytest.raises(ValueError, match="no user in the file"):
        apply_access_options(make_ae("X"), _access(["--users", str(empty)]))
    with pytest.raises(ValueError, match="'A'"):
        apply_access_options(make_ae("X"), _access(["--allow", "A=10.0.0.0/99"]))


def test_tls_server_options(tls_files):
    assert tls_server_context(_access([])) is None
    with pytest.raises(ValueError, match="need --tls-cert"):
        tls_server_context(_access(["--tls-key", str(tls_files.server_key)]))
    with pytest.raises(ValueError, match="need --tls-cert"):
        tls_server_context(_access(["--tls-ca", str(tls_files.ca)]))
    context = tls_server_context(
        _access(
            [
                "--tls-cert",
                str(tls_files.server_certificate),
                "--tls-key",
                str(tls_files.server_key),
                "--tls-ca",
                str(tls_files.ca),
            ]
        )
    )
    assert context is not None
    assert context.verify_mode.name == "CERT_REQUIRED"


def test_serve_with_workers_forwards_the_options_to_its_acceptors(tmp_path):
    args = _access(
        [
            "--allow",
            "A=10.0.0.0/8",
            "--allow",
            "*=192.0.2.0/24",
            "--max-per-aet",
            "2",
            "--users",
            "u.txt",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
        ]
    )
    forwarded = forwarded_access_arguments(args)
    assert forwarded == [
        "--allow",
        "A=10.0.0.0/8",
        "--allow",
        "*=192.0.2.0/24",
        "--max-per-aet",
        "2",
        "--users",
        str(tmp_path.cwd() / "u.txt"),
        "--tls-cert",
        str(tmp_path.cwd() / "c.pem"),
        "--tls-key",
        str(tmp_path.cwd() / "k.pem"),
        "--tls-ca",
        str(tmp_path.cwd() / "ca.pem"),
    ]
    assert forwarded_access_arguments(_access([])) == []
    cluster = Cluster(
        ClusterConfig(
            ae_title="OURSCP",
            port=11112,
            bind="127.0.0.1",
            data_dir=str(tmp_path),
            workers=1,
            runtime_dir=str(tmp_path / "run"),
            acceptor_arguments=forwarded,
        )
    )
    acceptor = next(role for role in cluster._commands() if role.name == "acceptor-0")
    assert acceptor.command[-len(forwarded) :] == forwarded
    assert build_parser().parse_args(["--broker", "ipc://x", *forwarded]).max_per_aet == 2


def test_config_file_security_keys(tmp_path):
    config = tmp_path / "dicomnode.toml"
    config.write_text(
        "[security]\n"
        'tls_certificate = "c.pem"\ntls_key = "k.pem"\ntls_ca = "ca.pem"\n'
        'users = "users.txt"\nallow = ["A=10.0.0.0/8"]\nmaximum_associations_per_aet = 5\n'
        'curve_keys = "/keys"\ncurve_server_public = "/keys/b.key"\n'
    )
    args = parse_with_config(build_parser(), ["--broker", "ipc://x", "--config", str(config)])
    assert (args.tls_certificate, args.tls_key, args.tls_ca) == ("c.pem", "k.pem", "ca.pem")
    assert (args.users, args.allow, args.max_per_aet) == ("users.txt", ["A=10.0.0.0/8"], 5)
    assert (args.curve_keys, args.curve_server_public, args.curve_secret) == (
        "/keys",
        "/keys/b.key",
        None,
    )


def test_acceptor_role_refuses_bad_security_options(tmp_path, capsys):
    from node.acceptor.main import main

    code = main(["--broker", "ipc://x", "--tls-key", "k.pem"])
    assert code == 2
    assert "need --tls-cert" in capsys.readouterr().err
    code = main(["--broker", "ipc://x", "--curve-secret", str(tmp_path / "missing")])
    assert code == 2
    assert "CURVE" in capsys.readouterr().err


# --- the SCU commands over TLS --------------------------------------------------------------


@pytest.fixture
def tls_scp(make_ae, tls_files):
    scp = make_ae("OURSCP")
    scp.add_supported_context(VERIFICATION)
    scp.start(
        block=False,
        ssl_context=server_context(
            str(tls_files.server_certificate), str(tls_files.server_key), str(tls_files.ca)
        ),
    )
    return scp


def test_echo_over_mutual_tls(tls_scp, tls_files, capsys):
    base = [
        "echo",
        "127.0.0.1",
        str(tls_scp.port),
        "--aec",
        "OURSCP",
        "--tls-ca",
        str(tls_files.ca),
    ]
    client = [
        "--tls-cert",
        str(tls_files.client_certificate),
        "--tls-key",
        str(tls_files.client_key),
    ]
    assert cli.main([*base, *client]) == 0
    assert "C-ECHO status: 0x0000" in capsys.readouterr().out
    assert cli.main([*base, *client, "--tls-server-name", "localhost"]) == 0
    capsys.readouterr()
    assert cli.main([*base, *client, "--tls-server-name", "pacs.example.org"]) == 1
    assert "over TLS: " in capsys.readouterr().err
    assert cli.main(base) == 1  # no client certificate
    assert "could not associate with 127.0.0.1" in capsys.readouterr().err
    assert cli.main([*base[:5], "--tls", *client]) == 1  # the system CAs do not know ours
    assert "certificate verify failed" in capsys.readouterr().err
    assert cli.main([*base, "--tls-key", str(tls_files.client_key)]) == 1
    assert "needs its certificate" in capsys.readouterr().err
