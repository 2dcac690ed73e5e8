# Who may associate: the association-level checks of PS3.8 Table 9-21 (protocol version,
# association limits, AE titles) plus calling AE titles bound to source networks and a limit
# on the associations one calling AE title may hold at once (PS3.8 9.3.4).
#
# Rules: pure functions over the A-ASSOCIATE-RQ, our policy, the peer's address as the
# transport saw it and the counts the acceptor keeps; a check answers None (allowed) or a
# Rejection whose reason is the log line that says why. An address that cannot be parsed is
# outside every network (fail closed). Stdlib only (ipaddress), no I/O, no clock.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from node.acse.contexts import is_ae_title_text, validate_ae_title
from node.ul.items import DICOM_APPLICATION_CONTEXT
from node.ul.pdu import AssociateRJ, RejectReason, RejectResult, RejectSource

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from node.acse.negotiation import AcceptorPolicy
    from node.ul.pdu import AssociateRQ

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The key of `calling_aet_networks` that binds every calling AE title not listed itself.
ANY_CALLING_AE: Final = "*"


def parse_network_bindings(
    bindings: Mapping[str, Iterable[str]],
) -> Mapping[str, tuple[Network, ...]]:
    """Check `{calling AE title or "*": [network, ...]}` and parse the networks.

    A network is an address or a CIDR block, IPv4 or IPv6 ("10.0.0.0/8", "192.0.2.7",
    "2001:db8::/32"); host bits may be set ("10.1.2.3/8" is 10.0.0.0/8). Raises ValueError
    naming the bad title or network, or a title bound to no network at all.
    """
    parsed: dict[str, tuple[Network, ...]] = {}
    for title, networks in bindings.items():
        key = title if title == ANY_CALLING_AE else validate_ae_title(title)
        texts = [networks] if isinstance(networks, str) else list(networks)
        if not texts:
            raise ValueError(f"calling AE title {key!r} is bound to no network")
        try:
            parsed[key] = tuple(ipaddress.ip_network(text.strip(), strict=False) for text in texts)
        except ValueError as error:
            raise ValueError(f"calling AE title {key!r}: {error}") from None
    return MappingProxyType(parsed)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address


def calling_address_refusal(
    calling_ae_title: str,
    peer_address: str | None,
    bindings: Mapping[str, tuple[Network, ...]],
) -> str | None:
    """Why `calling_ae_title` may not associate from `peer_address`, or None when it may.

    A title bound to networks (or, when it is not listed, the "*" binding) must come from one
    of them; a title with no binding at all is not restricted here.
    """
    networks = bindings.get(calling_ae_title, bindings.get(ANY_CALLING_AE))
    if networks is None:
        return None
    address = _address(peer_address or "")
    if address is not None and any(address in network for network in networks):
        return None
    allowed = ", ".join(str(network) for network in networks)
    return (
        f"calling AE title {calling_ae_title!r} not recognized from address "
        f"{peer_address or 'unknown'} (allowed from {allowed})"
    )


def per_calling_ae_refusal(
    calling_ae_title: str, active: Mapping[str, int], maximum: int | None
) -> str | None:
    """Why one more association from `calling_ae_title` exceeds `maximum` (None: no limit),
    given the associations `active` per calling AE title; None when it does not."""
    count = active.get(calling_ae_title, 0)
    if maximum is None or count < maximum:
        return None
    return (
        f"local limit exceeded: {count} associations from calling AE title "
        f"{calling_ae_title!r} active (limit {maximum} per calling AE title)"
    )


@dataclass(frozen=True, slots=True)
class Rejection:
    """The association is rejected: send `pdu`; `reason` is a human-readable log line."""

    pdu: AssociateRJ
    reason: str


def reject(result: int, source: int, reason: int, text: str) -> Rejection:
    """A Rejection with an A-ASSOCIATE-RJ of these result, source and reason (PS3.8 9.3.4)."""
    return Rejection(AssociateRJ(result, source, reason), text)


def title_from_wire(value: str) -> str:
    """An AE title from the wire without its non-significant spaces (and NUL padding, which
    some implementations send), PS3.8 9.3.2."""
    return value.strip(" \0")


def check_association(
    request: AssociateRQ,
    policy: AcceptorPolicy,
    *,
    association_count: int,
    maximum_associations: int | None,
    peer_address: str | None,
    associations_by_calling_aet: Mapping[str, int],
) -> Rejection | None:
    """The association-level checks of PS3.8 Table 9-21 for negotiate_as_acceptor, in this
    order: protocol version (bit 0), the association limit, the AE titles (_check_titles),
    the associations the calling AE title holds, the application context, at least one
    proposed presentation context. The first that fails answers, with the result, source and
    reason Table 9-21 gives it; user identity is checked after these, by the negotiation."""
    if not request.protocol_version & 1:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_PROVIDER_ACSE,
            RejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
            f"protocol version 0x{request.protocol_version:04X} not supported (bit 0 not set)",
        )
    if maximum_associations is not None and association_count >= maximum_associations:
        return reject(
            RejectResult.TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            RejectReason.LOCAL_LIMIT_EXCEEDED,
            f"local limit exceeded: {association_count} of {maximum_associations} "
            "associations active",
        )
    rejection = _check_titles(request, policy, peer_address)
    if rejection is not None:
        return rejection
    calling = title_from_wire(request.calling_ae_title)
    refusal = per_calling_ae_refusal(
        calling, associations_by_calling_aet, policy.maximum_associations_per_aet
    )
    if refusal is not None:
        return reject(
            RejectResult.TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            RejectReason.LOCAL_LIMIT_EXCEEDED,
            refusal,
        )
    name = request.application_context.name.rstrip(" \0")
    if name != DICOM_APPLICATION_CONTEXT:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
            f"application context {name!r} not supported",
        )
    if not request.presentation_contexts:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.NO_REASON,
            "no presentation context proposed",
        )
    return None


def _check_titles(
    request: AssociateRQ, policy: AcceptorPolicy, peer_address: str | None
) -> Rejection | None:
    """Calling AE title recognized (ASCII, in `require_calling_aet` when set) and from one of
    the networks bound to it; called AE title ASCII and ours when `require_called_aet`."""
    calling = title_from_wire(request.calling_ae_title)
    if not is_ae_title_text(calling) or (
        policy.require_calling_aet and calling not in policy.require_calling_aet
    ):
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
            f"calling AE title {calling!r} not recognized",
        )
    refusal = calling_address_refusal(calling, peer_address, policy.allowed_networks)
    if refusal is not None:
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.CALLING_AE_NOT_RECOGNIZED,
            refusal,
        )
    called = title_from_wire(request.called_ae_title)
    if not is_ae_title_text(called) or (policy.require_called_aet and called != policy.ae_title):
        return reject(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            RejectReason.CALLED_AE_NOT_RECOGNIZED,
            f"called AE title {called!r} not recognized (we are {policy.ae_title!r})",
        )
    return None
