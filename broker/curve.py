# ZeroMQ CURVE between hosts: key files, the broker's allow-list of client keys, and the
# socket options of each end (the acceptor/worker DEALERs are CURVE clients of the broker's
# ROUTERs, which are CURVE servers).
#
# Rules: keys live in ZeroMQ certificate files (ZPL text, as zmq.auth writes them): NAME.key
# holds a public key, NAME.key_secret the pair. A file that is missing or holds no key of the
# needed kind is a ValueError naming it, raised at start-up. Clients are authenticated by
# their public key through a ZAP handler (zmq.auth.thread.ThreadAuthenticator) running on the
# broker's context; a refused key is logged (the first time at warning level), never served.
# Secret keys are never logged. On one host (`serve`, ipc://) none of this is used.
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

log = logging.getLogger("dicomnode.curve")

#: Key names `dicomnode keys generate` writes and `--curve-keys DIR` expects.
SERVER_NAME: Final = "broker"
CLIENT_NAME: Final = "client"
#: Distinct refused keys remembered so that each is logged at warning level only once.
REFUSED_MEMORY: Final = 1024


def generate_keys(
    directory: str | os.PathLike[str], names: Iterable[str] = (SERVER_NAME, CLIENT_NAME)
) -> list[Path]:
    """Write a new key pair per name: DIRECTORY/NAME.key (public) and NAME.key_secret (the
    pair, readable by its owner only). Refuses to overwrite an existing key file."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
        for path in (public, secret):
            if path.exists():
                raise ValueError(f"{path} exists: remove it first to replace the key")
        zmq.auth.create_certificates(folder, name)
        secret.chmod(0o600)
        written += [public, secret]
    return written


def _load(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as error:
        raise ValueError(f"cannot read CURVE key file {path}: {error.strerror or error}") from None
    except ValueError:
        raise ValueError(f"{path} is not a ZeroMQ CURVE key file") from None
    if len(public) != 40:
        raise ValueError(f"{path} holds no valid CURVE public key")
    return public, secret


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a NAME.key (or NAME.key_secret) file."""
    return _load(path)[0]


def load_key_pair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a NAME.key_secret file."""
    public, secret = _load(path)
    if not secret or len(secret) != 40:
        raise ValueError(f"{path} holds no CURVE secret key (use the .key_secret file)")
    return public, secret


def client_keys(
    secret_file: str | os.PathLike[str], server_public_file: str | os.PathLike[str]
) -> dict[str, bytes]:
    """The `curve` option of an acceptor or worker: our pair and the broker's public key."""
    public, secret = load_key_pair(secret_file)
    return {"public": public, "secret": secret, "server": load_public_key(server_public_file)}


def server_keys(secret_file: str | os.PathLike[str]) -> dict[str, bytes]:
    """The broker's pair."""
    public, secret = load_key_pair(secret_file)
    return {"public": public, "secret": secret}


def make_server(socket: zmq.Socket[Any], keys: dict[str, bytes]) -> None:
    """Make `socket` a CURVE server (before bind)."""
    socket.curve_server = True
    socket.curve_secretkey = keys["secret"]
    socket.curve_publickey = keys["public"]


def server_paths(
    curve_keys: str | None, curve_secret: str | None, curve_clients: str | None
) -> tuple[str | None, str | None]:
    """The broker's (key pair file, allowed clients folder) from its options: explicit files
    win; `--curve-keys DIR` supplies DIR/broker.key_secret and DIR (every NAME.key in it)."""
    if curve_keys:
        curve_secret = curve_secret or os.path.join(curve_keys, f"{SERVER_NAME}.key_secret")
        curve_clients = curve_clients or curve_keys
    return curve_secret, curve_clients


def client_role_keys(
    curve_keys: str | None, curve_secret: str | None, curve_server_public: str | None
) -> dict[str, bytes] | None:
    """The `curve` option of an acceptor or worker from its options, None without CURVE:
    explicit files win; `--curve-keys DIR` supplies DIR/client.key_secret and DIR/broker.key."""
    if curve_keys:
        curve_secret = curve_secret or os.path.join(curve_keys, f"{CLIENT_NAME}.key_secret")
        curve_server_public = curve_server_public or os.path.join(curve_keys, f"{SERVER_NAME}.key")
    if curve_secret is None and curve_server_public is None:
        return None
    if curve_secret is None or curve_server_public is None:
        raise ValueError("CURVE needs both --curve-secret and --curve-server-public")
    return client_keys(curve_secret, curve_server_public)


class AllowedClients:
    """The ZAP credentials provider of the broker: public keys found in a folder."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.keys: set[bytes] = set()
        for path in sorted(self.directory.glob("*.key")):
            self.keys.add(load_public_key(path))
        if not self.keys:
            raise ValueError(f"{directory} holds no public key file (NAME.key)")
        self.refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: may the client with this Z85 public key connect?"""
        if key in self.keys:
            return True
        first = key not in self.refused
        if first and len(self.refused) < REFUSED_MEMORY:
            self.refused.add(key)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "CURVE client key %s refused: not in %s",
            key.decode("ascii", "replace"),
            self.directory,
        )
        return False


def start_authenticator(context: zmq.Context[Any], allowed: AllowedClients) -> ThreadAuthenticator:
    """Start the ZAP handler on `context` (before its sockets bind) allowing only the
    `allowed` public keys."""
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("dicomnode.curve.zap"))
    authenticator.start()
    authenticator.configure_curve_callback(domain="*", credentials_provider=allowed)
    log.info("CURVE: %d client key(s) allowed from %s", len(allowed.keys), allowed.directory)
    return authenticator


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """`--curve-secret`, `--curve-server-public`, `--curve-keys` of an acceptor or worker."""
    group = parser.add_argument_group("CURVE encryption to the broker (ZeroMQ, between hosts)")
    group.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="our key pair (NAME.key_secret from `dicomnode keys generate`)",
    )
    group.add_argument(
        "--curve-server-public",
        metavar="FILE",
        help="the broker's public key (broker.key)",
    )
    group.add_argument(
        "--curve-keys",
        metavar="DIR",
        help="shorthand: DIR/client.key_secret and DIR/broker.key",
    )


def client_keys_from_args(args: argparse.Namespace) -> dict[str, bytes] | None:
    """client_role_keys() from the options add_client_options() defined."""
    return client_role_keys(args.curve_keys, args.curve_secret, args.curve_server_public)
