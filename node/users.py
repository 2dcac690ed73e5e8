# The users file of `serve --users FILE` / `acceptor --users FILE`: who may associate with a
# username and password (User Identity Negotiation, PS3.7 D.3.3.7, types 1 and 2).
#
# Rules: one `user:password` or `user:$scrypt$...` entry a line ('#' comments and blank lines
# ignored); hashed entries use hashlib.scrypt with a random salt. Passwords are compared in
# constant time, an unknown user costs the same scrypt work as a known one, and no password
# (or hash) ever reaches a log line or an exception message. Stdlib only, no network.
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from node.ul.items import UserIdentityType

log = logging.getLogger("dicomnode.users")

PREFIX: Final = "$scrypt$"
#: scrypt cost: 16 MiB and some 50 ms a verification (the interactive-login recommendation).
SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
#: Successful verifications remembered (keyed by an HMAC of user and password under a
#: per-process random key), so a busy modality does not pay scrypt on every association.
CACHE_SIZE: Final = 256


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str | bytes, *, salt: bytes | None = None) -> str:
    """`$scrypt$n=16384,r=8,p=1$<salt>$<key>` (base64 without padding) for `password`."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(
        secret, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES, maxmem=1 << 26
    )
    return f"{PREFIX}n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True, slots=True)
class _Scrypt:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> _Scrypt:
        parameters, salt, key = text.removeprefix(PREFIX).split("$")
        values = dict(item.split("=", 1) for item in parameters.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n > 1 << 20:
            raise ValueError("scrypt parameters out of range")
        return cls(n, r, p, _unb64(salt), _unb64(key))

    def matches(self, password: bytes) -> bool:
        candidate = hashlib.scrypt(
            password,
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            dklen=len(self.key),
            maxmem=256 * self.n * self.r * self.p + (1 << 24),
        )
        return hmac.compare_digest(candidate, self.key)


class UserTable:
    """The users of one users file, checked in constant time."""

    def __init__(self, entries: dict[str, str | _Scrypt], source: str = "users") -> None:
        self._entries = entries
        self.source = source
        self._dummy = _Scrypt.parse(hash_password(secrets.token_bytes(16)))
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UserTable:
        """Read a users file; ValueError naming the file and line of a bad entry (never its
        password), OSError when it cannot be read."""
        entries: dict[str, str | _Scrypt] = {}
        plain = 0
        text = Path(path).read_text(encoding="utf-8")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, separator, secret = line.partition(":")
            user = user.strip()
            if not separator or not user or not secret:
                raise ValueError(f"{path}, line {number}: expected user:password")
            if user in entries:
                raise ValueError(f"{path}, line {number}: user {user!r} listed twice")
            if secret.startswith(PREFIX):
                try:
                    entries[user] = _Scrypt.parse(secret)
                except (ValueError, KeyError, TypeError):
                    raise ValueError(
                        f"{path}, line {number}: malformed $scrypt$ entry for {user!r}"
                    ) from None
            else:
                entries[user] = secret
                plain += 1
        if plain:
            log.warning(
                "%s: %d password(s) stored in clear; `dicomnode users add` writes hashed ones",
                path,
                plain,
            )
        return cls(entries, str(path))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user: object) -> bool:
        return user in self._entries

    def verify(self, user: str | bytes, password: str | bytes) -> bool:
        """True when `password` is `user`'s; constant time in the password, and the same
        scrypt work whether or not the user exists."""
        name = user.decode("utf-8", "replace") if isinstance(user, bytes) else user
        secret = password.encode("utf-8") if isinstance(password, str) else password
        cache_key = hmac.digest(
            self._cache_key, name.encode("utf-8") + b"\0" + secret, hashlib.sha256
        )
        if cache_key in self._verified:
            self._verified.move_to_end(cache_key)
            return True
        entry = self._entries.get(name)
        if isinstance(entry, str):
            matched = hmac.compare_digest(entry.encode("utf-8"), secret)
        else:
            matched = (entry or self._dummy).matches(secret) and entry is not None
        if matched:
            self._verified[cache_key] = None
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        return matched

    def on_user_identity(
        self, identity_type: int, primary: bytes, secondary: bytes, info: object = None
    ) -> tuple[bool, bytes | None]:
        """The AE's on_user_identity callback (PS3.7 D.3.3.7): only username and passcode
        (type 2) can be checked against the file; an accepted identity answers an empty server
        response (sent only when the requestor asked for a positive response, and empty as
        Table D.3-15 wants for types 1 and 2)."""
        if identity_type != UserIdentityType.USERNAME_AND_PASSCODE:
            return False, None
        return (True, b"") if self.verify(primary, secondary) else (False, None)


def add_user(path: str | os.PathLike[str], user: str, password: str | bytes) -> bool:
    """Add `user` with a hashed `password` to the users file at `path`, or replace its entry;
    True when it was replaced. The file is rewritten atomically, readable by its owner only
    when we create it."""
    if not user or ":" in user or user != user.strip() or "\n" in user or user.startswith("#"):
        raise ValueError(f"user name {user!r} must be non-empty, without ':' or surrounding space")
    if not password:
        raise ValueError("the password must not be empty")
    target = Path(path)
    lines = target.read_text(encoding="utf-8").splitlines() if target.exists() else []
    entry = f"{user}:{hash_password(password)}"
    replaced = False
    for index, line in enumerate(lines):
        name, separator, _ = line.strip().partition(":")
        if separator and name.strip() == user and not line.lstrip().startswith("#"):
            lines[index] = entry
            replaced = True
    if not replaced:
        lines.append(entry)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return replaced
