# What an acceptor is given: the settings the AE (or the `acceptor` command) builds for its
# AcceptorServer, and the association-level hooks, plus the label for why an association ended.
#
# Rules: plain data; nothing here does I/O.
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.acse.negotiation import AcceptorPolicy
    from node.dispatch import Dispatcher

log = logging.getLogger("dicomnode.acceptor")


@dataclass
class AssociationHooks:
    """Association-level callbacks (run on the acceptor's loop; exceptions are logged)."""

    requested: list[Callable[[Any], None]] = field(default_factory=list)
    accepted: list[Callable[[Any], None]] = field(default_factory=list)
    rejected: list[Callable[[Any], None]] = field(default_factory=list)
    released: list[Callable[[Any], None]] = field(default_factory=list)
    aborted: list[Callable[[Any], None]] = field(default_factory=list)

    @staticmethod
    def fire(callbacks: list[Callable[[Any], None]], argument: Any) -> None:
        for callback in callbacks:
            try:
                callback(argument)
            except Exception:
                log.exception("association hook %r raised", callback)


@dataclass
class ServerSettings:
    """Everything an acceptor needs, built by the AE (or the `acceptor` command)."""

    policy: Callable[[], AcceptorPolicy]
    dispatcher: Dispatcher
    maximum_associations: int | None = 2
    acse_timeout: float = 30.0
    dimse_timeout: float | None = None
    network_timeout: float | None = 60.0
    maximum_pdu_size: int = 16382
    acceptor_id: str = "local"
    hooks: AssociationHooks = field(default_factory=AssociationHooks)
    #: Data sets larger than this are streamed to the dispatcher in chunks, never held whole.
    stream_threshold: int | None = 4 << 20
    #: A data set larger than this is refused (A700H for C-STORE/C-FIND, 0213H otherwise) and
    #: the rest of it dropped, the association going on; None: no cap.
    maximum_dataset_size: int | None = None
    #: Told about associations and requests (node.observability.ServerObserver), or None.
    observer: Any = None
    #: Answer C-ECHO here, without the dispatcher, when no custom echo handler exists anywhere
    #: (Verification, PS3.4 A: nothing to do but answer success; saves a round trip).
    local_echo: Callable[[], bool] = lambda: False
    #: Called with the peer's (host, port) for every new TCP connection, before any PDU;
    #: returning False closes it at once (the AE's on_receive_connection).
    on_connection: Callable[[tuple[str, int]], Any] | None = None


def abort_category(reason: str) -> str:
    """A low-cardinality label for why an association ended without a release."""
    if reason.startswith("aborted by peer"):
        return "peer"
    if reason.startswith(("protocol error", "aborted:")):
        return "protocol"
    if "timeout" in reason or "ARTIM" in reason:
        return "timeout"
    if "shutting down" in reason:
        return "shutdown"
    return "connection_lost"
