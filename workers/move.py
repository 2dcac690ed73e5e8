# The C-MOVE destination: a worker opens its own association to the move destination as an SCU
# and sends each sub-operation as a C-STORE-RQ carrying the Move Originator (PS3.4 C.4.2.2).
#
# Rules: the association opens lazily on the first data set, proposing that data set's SOP
# class and transfer syntax plus the standard storage contexts; it is released on exit. Runs
# in a worker thread or process, so it uses its own background event loop.
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from node.acse.requestor import build_associate_rq
from node.dicomio import Part10, stored_transfer_syntax
from node.dimse.status import QueryRetrieveStatus
from node.presets import StoragePresentationContexts, build_context
from node.scu.association import ClientSettings, open_association
from node.scu.services import UNCOMPRESSED, AsyncAssociation, LoopThread

if TYPE_CHECKING:
    from types import TracebackType

    from pydicom.dataset import Dataset

    from node.dispatch import ServiceRequest
    from workers.handlers.common import Handlers

log = logging.getLogger("dicomnode.move")

_runner_lock = threading.Lock()
_runner: LoopThread | None = None

#: Implementation identity of move sub-associations (same as the AE's).
IMPLEMENTATION_CLASS_UID = "2.25.283479113923592446473716104451470361611"
MOVE_DESTINATION_FAILED = 0xA801


def scu_loop() -> LoopThread:
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = LoopThread()
        return _runner


class MoveDestination:
    """A lazily opened storage association to a C-MOVE destination."""

    def __init__(
        self, host: str, port: int, ae_title: str, handlers: Handlers, request: ServiceRequest
    ) -> None:
        self.host = host
        self.port = port
        self.ae_title = ae_title
        self.handlers = handlers
        self.request = request
        self.association: AsyncAssociation | None = None
        self.failed = False

    def __enter__(self) -> MoveDestination:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.association is not None and self.association.is_established:
            scu_loop().run(self.association.release(), 60)

    def _open(self, first: Dataset | Part10) -> AsyncAssociation | None:
        syntax: str | None
        if isinstance(first, Part10):
            sop_class, syntax = first.sop_class_uid, first.transfer_syntax
        else:
            sop_class, syntax = str(first.SOPClassUID), stored_transfer_syntax(first)
        syntaxes = [syntax] if syntax and syntax not in UNCOMPRESSED else []
        syntaxes += list(UNCOMPRESSED)
        contexts = [build_context(sop_class, syntaxes)]
        contexts += [c for c in StoragePresentationContexts if c.abstract_syntax != sop_class][:127]
        rq = build_associate_rq(
            calling_ae_title=self.handlers.local_ae_title,
            called_ae_title=self.ae_title,
            contexts=contexts,
            maximum_pdu_length=self.handlers.maximum_pdu_size,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        )
        association = scu_loop().run(
            open_association(self.host, self.port, rq, ClientSettings(), cls=AsyncAssociation), 120
        )
        if not association.is_established:
            log.warning(
                "C-MOVE: association to %s (%s:%d) failed", self.ae_title, self.host, self.port
            )
            return None
        return association

    def store(self, dataset: Dataset | Part10) -> tuple[int, str]:
        """Send one sub-operation (a Part10 as stored when the destination accepted its
        transfer syntax); returns (status, SOP Instance UID)."""
        sop_instance = (
            dataset.sop_instance_uid
            if isinstance(dataset, Part10)
            else str(dataset.get("SOPInstanceUID", ""))
        )
        if self.failed:
            return QueryRetrieveStatus.OUT_OF_RESOURCES_SUBOPERATIONS, sop_instance
        if self.association is None:
            self.association = self._open(dataset)
            if self.association is None:
                self.failed = True
                return QueryRetrieveStatus.OUT_OF_RESOURCES_SUBOPERATIONS, sop_instance
        association = self.association
        try:
            status = scu_loop().run(
                association.send_c_store(
                    dataset,
                    originator_aet=self.request.association.calling_ae_title,
                    originator_id=self.request.message_id,
                ),
                None,
            )
        except Exception as error:  # noqa: BLE001 - this sub-operation fails, the rest go on
            log.warning("C-MOVE: cannot send %s: %s", sop_instance, error)
            if not association.is_established:  # the destination is gone: so are the rest
                self.failed = True
            return QueryRetrieveStatus.OUT_OF_RESOURCES_SUBOPERATIONS, sop_instance
        if "Status" not in status:
            self.failed = True
            return QueryRetrieveStatus.OUT_OF_RESOURCES_SUBOPERATIONS, sop_instance
        return int(status.Status), sop_instance
