# What the acceptor bridge's tests share: an association to send requests on and a reply
# sink that records the responses the dispatcher delivers.
from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from node.dispatch import AssociationInfo

if TYPE_CHECKING:
    from node.dispatch import ReplySink, ServiceRequest

CT = "1.2.840.10008.5.1.4.1.1.2"


def association(assoc_id: int) -> AssociationInfo:
    return AssociationInfo(
        assoc_id=assoc_id,
        calling_ae_title="MODALITY",
        called_ae_title="ARCHIVE",
        peer_address="127.0.0.1",
        peer_port=1234,
        local_ae_title="ARCHIVE",
    )


class Sink:
    """(message ID, response, final) of every response, in order."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, Any, bool]] = []

    def send_response(
        self, request: ServiceRequest, response: Any, dataset: Any, final: bool
    ) -> None:
        self.responses.append((request.message_id, response, final))


def as_sink(sink: Sink) -> ReplySink:
    return cast("ReplySink", sink)  # only send_response is called by these tests
