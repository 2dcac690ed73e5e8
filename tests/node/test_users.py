# The users file (node.users) and `dicomnode users add`.
from __future__ import annotations

import io
import logging
import re
import stat

import pytest

from node import cli
from node.ul.items import UserIdentityType
from node.users import PREFIX, UserTable, add_user, hash_password


def test_hash_format_and_verification(tmp_path):
    stored = hash_password("s3cret", salt=b"0123456789abcdef")
    assert stored.startswith(f"{PREFIX}n=16384,r=8,p=1$")
    assert stored == hash_password(b"s3cret", salt=b"0123456789abcdef")
    assert hash_password("s3cret") != hash_password("s3cret")  # random salt
    path = tmp_path / "users"
    path.write_text(f"# comment\n\nalice:{stored}\n  bob : pa:ss \n")
    users = UserTable.load(path)
    assert len(users) == 2
    assert "alice" in users
    assert "mallory" not in users
    assert users.verify("alice", "s3cret")
    assert users.verify(b"alice", b"s3cret")  # cached the second time
    assert not users.verify("alice", "S3cret")
    assert users.verify("bob", " pa:ss")  # everything after the first ':' is the password
    assert not users.verify("bob", "pa:ss")
    assert not users.verify("mallory", "s3cret")
    assert not users.verify(b"\xff", b"")


def test_identity_types(tmp_path):
    path = tmp_path / "users"
    add_user(path, "alice", "s3cret")
    users = UserTable.load(path)
    check = users.on_user_identity
    assert check(UserIdentityType.USERNAME_AND_PASSCODE, b"alice", b"s3cret", {}) == (True, b"")
    assert check(UserIdentityType.USERNAME_AND_PASSCODE, b"alice", b"x", {}) == (False, None)
    for kind in (UserIdentityType.USERNAME, UserIdentityType.KERBEROS, UserIdentityType.JWT):
        assert check(kind, b"alice", b"s3cret") == (False, None)


def test_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("node.users.CACHE_SIZE", 2)
    path = tmp_path / "users"
    path.write_text("a:1\nb:2\nc:3\n")
    users = UserTable.load(path)
    assert all(users.verify(name, secret) for name, secret in (("a", "1"), ("b", "2"), ("c", "3")))
    assert len(users._verified) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "line 1: expected user:password"),
        ("# x\n:secret\n", "line 2: expected user:password"),
        ("alice:\n", "line 1: expected user:password"),
        ("alice:a\nalice:b\n", "line 2: user 'alice' listed twice"),
        ("alice:$scrypt$n=16384,r=8$AAAA$AAAA\n", "malformed $scrypt$ entry for 'alice'"),
        ("alice:$scrypt$n=1000,r=8,p=1$AAAA$AAAA\n", "malformed"),
        ("alice:$scrypt$n=16384,r=8,p=1$%%%%$AAAA\n", "malformed"),
        ("alice:$scrypt$garbage\n", "malformed"),
    ],
)
def test_bad_files_name_the_line_but_not_the_secret(tmp_path, text, message):
    path = tmp_path / "users"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        UserTable.load(path)
    assert "AAAA" not in str(raised.value)


def test_clear_passwords_are_warned_about_without_showing_them(tmp_path, caplog):
    path = tmp_path / "users"
    path.write_text("alice:visible-secret\n")
    with caplog.at_level(logging.WARNING, logger="dicomnode.users"):
        UserTable.load(path)
    assert "1 password(s) stored in clear" in caplog.text
    assert "visible-secret" not in caplog.text


def test_add_user_creates_replaces_and_keeps_the_rest(tmp_path):
    path = tmp_path / "users"
    assert add_user(path, "alice", "one") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("# our users\n" + path.read_text() + "bob:two\n")
    path.chmod(0o640)
    assert add_user(path, "alice", "three") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    lines = path.read_text().splitlines()
    assert lines[0] == "# our users"
    assert lines[2] == "bob:two"
    assert "three" not in path.read_text()
    users = UserTable.load(path)
    assert users.verify("alice", "three")
    assert not users.verify("alice", "one")
    assert users.verify("bob", "two")
    assert not list(tmp_path.glob(".users.*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("user", "password"), [("", "x"), ("a:b", "x"), (" a", "x"), ("#a", "x"), ("a", "")]
)
def test_add_user_refuses_bad_names_and_empty_passwords(tmp_path, user, password):
    with pytest.raises(ValueError, match=r"user name|password"):
        add_user(tmp_path / "users", user, password)


def test_cli_users_add_reads_the_password_from_stdin(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert cli.main(["users", "add", str(path), "carol"]) == 0
    assert f"added user carol in {path}" in capsys.readouterr().out
    assert "from-stdin" not in path.read_text()
    assert UserTable.load(path).verify("carol", "from-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["users", "add", str(path), "carol"]) == 1
    assert "password must not be empty" in capsys.readouterr().err


def test_cli_users_add_prompts_twice_on_a_terminal(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    answers = iter(["typed", "typed", "one", "other"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["users", "add", str(path), "dave"]) == 0
    assert UserTable.load(path).verify("dave", "typed")
    assert cli.main(["users", "add", str(path), "dave"]) == 1
    assert "passwords differ" in capsys.readouterr().err


def test_add_user_leaves_the_file_alone_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "users"
    add_user(path, "alice", "one")
    before = path.read_text()

    def refuse(*_args):
        raise OSError("disk full")

    monkeypatch.setattr("node.users.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        add_user(path, "bob", "two")
    assert path.read_text() == before
    assert not list(tmp_path.glob(".users.*"))
