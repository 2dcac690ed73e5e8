# The Application Entity's validated attributes (pynetdicom's names and rules): AE title,
# timeouts, limits, access lists and implementation identity, each checked when set so a bad
# value fails at the assignment with a message naming it, never later on the wire.
from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from node.acse.access import parse_network_bindings
from node.acse.contexts import validate_ae_title, validate_uid

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


def checked_title(value: str | bytes, what: str) -> str:
    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    try:
        return validate_ae_title(text.strip())
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


def _check_timeout(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{what} must be None or a non-negative number, not {value!r}")
    return float(value)


class ValidatedSettings:
    """The AE attributes that are validated on assignment (the base of ApplicationEntity)."""

    bind_addr: str
    _ae_title: str
    _acse_timeout: float | None
    _dimse_timeout: float | None
    _network_timeout: float | None
    _maximum_associations: int
    _maximum_pdu_size: int
    _require_calling_aet: list[bytes]
    _calling_aet_networks: dict[str, list[str]]
    _maximum_associations_per_aet: int | None
    _maximum_dataset_size: int | None
    _implementation_class_uid: str
    _implementation_version_name: str | None

    @property
    def ae_title(self) -> bytes:
        return self._ae_title.encode("ascii")

    @ae_title.setter
    def ae_title(self, value: str | bytes) -> None:
        self._ae_title = checked_title(value, "ae_title")

    @property
    def address(self) -> str:
        """The local address the AE listens on (the bind address, or this host's)."""
        if self.bind_addr:
            return self.bind_addr
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"

    @property
    def acse_timeout(self) -> float | None:
        return self._acse_timeout

    @acse_timeout.setter
    def acse_timeout(self, value: float | None) -> None:
        self._acse_timeout = _check_timeout(value, "acse_timeout")

    @property
    def dimse_timeout(self) -> float | None:
        return self._dimse_timeout

    @dimse_timeout.setter
    def dimse_timeout(self, value: float | None) -> None:
        self._dimse_timeout = _check_timeout(value, "dimse_timeout")

    @property
    def network_timeout(self) -> float | None:
        return self._network_timeout

    @network_timeout.setter
    def network_timeout(self, value: float | None) -> None:
        self._network_timeout = _check_timeout(value, "network_timeout")

    @property
    def maximum_associations(self) -> int:
        return self._maximum_associations

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"maximum_associations must be a positive integer, not {value!r}")
        self._maximum_associations = value

    @property
    def maximum_pdu_size(self) -> int:
        return self._maximum_pdu_size

    @maximum_pdu_size.setter
    def maximum_pdu_size(self, value: int) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (value == 0 or 8 <= value <= 0xFFFFFFFF)
        ):
            raise ValueError(f"maximum_pdu_size must be 0 (unlimited) or 8..2^32-1, not {value!r}")
        self._maximum_pdu_size = value

    @property
    def require_calling_aet(self) -> list[bytes]:
        return list(self._require_calling_aet)

    @require_calling_aet.setter
    def require_calling_aet(self, value: Iterable[str | bytes]) -> None:
        self._require_calling_aet = [
            checked_title(title, "require_calling_aet").encode("ascii") for title in value
        ]

    @property
    def calling_aet_networks(self) -> dict[str, list[str]]:
        """Calling AE title -> the networks it may associate from ("10.0.0.0/8", "192.0.2.7",
        IPv6 too); the key "*" binds every title not listed. Others are rejected with
        calling AE title not recognized (PS3.8 Table 9-21). Empty: no address check."""
        return {title: list(networks) for title, networks in self._calling_aet_networks.items()}

    @calling_aet_networks.setter
    def calling_aet_networks(self, value: Mapping[str, str | Sequence[str]]) -> None:
        bindings: dict[str, list[str]] = {}
        for title, networks in value.items():
            key: object = title  # AE titles may come as bytes, as elsewhere in this API
            name = key.decode("ascii") if isinstance(key, bytes) else str(key)
            listed = [networks] if isinstance(networks, str) else [str(n) for n in networks]
            bindings[name.strip()] = listed
        parse_network_bindings(bindings)  # ValueError naming the bad title or network
        self._calling_aet_networks = bindings

    @property
    def maximum_associations_per_aet(self) -> int | None:
        """At most this many associations at once from one calling AE title (per acceptor
        process); more are rejected transient, local limit exceeded. None: no limit."""
        return self._maximum_associations_per_aet

    @maximum_associations_per_aet.setter
    def maximum_associations_per_aet(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(
                f"maximum_associations_per_aet must be None or a positive integer, not {value!r}"
            )
        self._maximum_associations_per_aet = value

    @property
    def maximum_dataset_size(self) -> int | None:
        """As SCP, refuse a request whose data set is larger than this many bytes (C-STORE:
        A700H Out of Resources, PS3.4 B.2.3) and drop the rest of it; the association goes on.
        None (the default): no cap."""
        return self._maximum_dataset_size

    @maximum_dataset_size.setter
    def maximum_dataset_size(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"maximum_dataset_size must be None or an integer >= 0, not {value!r}")
        self._maximum_dataset_size = value

    @property
    def implementation_class_uid(self) -> str:
        return self._implementation_class_uid

    @implementation_class_uid.setter
    def implementation_class_uid(self, value: str) -> None:
        self._implementation_class_uid = validate_uid(str(value), "implementation_class_uid")

    @property
    def implementation_version_name(self) -> str | None:
        return self._implementation_version_name

    @implementation_version_name.setter
    def implementation_version_name(self, value: str | bytes | None) -> None:
        if isinstance(value, bytes):
            value = value.decode("ascii")
        if value is not None and not 1 <= len(value) <= 16:
            raise ValueError("implementation_version_name must be 1 to 16 characters")
        self._implementation_version_name = value
