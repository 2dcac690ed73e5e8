# The built-in Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION requests commitment
# for a list of SOP instances; the result comes back as an N-EVENT-REPORT.
#
# Rules: installed by workers.service when the user bound no N-ACTION handler and an index
# exists. The N-ACTION-RSP only says the request was received (PS3.4 J.3.2.1.3); it goes out
# first. Then each referenced instance is checked against the index and the disk (committed =
# indexed with the same SOP class and its file present), and the result is sent as an
# N-EVENT-REPORT (Event Type 1 all committed, 2 some failed, with a Failure Reason per failed
# instance, J.3.3) on a NEW association from this worker to the requester, looked up by its
# calling AE title in the known-AE table (J.3.3.1.2: an SCP shall be capable of that), with the
# SCP role proposed through SCP/SCU Role Selection (J.3.3.1.3). Delivery is retried a few times;
# a requester missing from the known AEs, or unreachable, is logged (the result is lost: the
# SCU may ask again with a new transaction).
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.acse.requestor import build_associate_rq
from node.dicomio import encode_dataset
from node.dimse.commands import NActionRSP, NEventReportRQ
from node.dimse.messages import NActionRQ, Response
from node.dimse.status import Status
from node.presets import build_context
from node.scu.association import ClientSettings, open_association
from node.scu.services import AsyncAssociation
from workers.handlers.common import StatusResult, decoded_dataset, describe_exception, failure
from workers.move import IMPLEMENTATION_CLASS_UID, scu_loop
from workers.store.files import InvalidUIDError, checked_uid
from workers.store.index import index_of

if TYPE_CHECKING:
    from node.dispatch import Channel, ServiceRequest
    from workers.handlers.common import Handlers
    from workers.store.index import Index

log = logging.getLogger("dicomnode.commitment")

STORAGE_COMMITMENT_PUSH: Final = "1.2.840.10008.1.20.1"
#: The well-known SOP instance every N-ACTION and N-EVENT-REPORT names (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE: Final = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT: Final = 1
TRANSACTION_UID: Final = 0x00081195
REFERENCED_SOP_CLASS_UID: Final = 0x00081150
REFERENCED_SOP_INSTANCE_UID: Final = 0x00081155
ALL_COMMITTED: Final = 1
FAILURES_EXIST: Final = 2

SUCCESS: Final = 0x0000
INVALID_ARGUMENT_VALUE: Final = 0x0115
INVALID_SOP_INSTANCE: Final = 0x0117
CLASS_INSTANCE_CONFLICT: Final = 0x0119
NO_SUCH_ACTION: Final = 0x0123

#: Delivery of the N-EVENT-REPORT: attempts and the pause between them (seconds).
DELIVERY_ATTEMPTS = 3
DELIVERY_RETRY_DELAY = 2.0
DELIVERY_TIMEOUT = 60.0
TRANSFER_SYNTAXES: Final = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


@dataclass(frozen=True, slots=True)
class Reference:
    """One item of the Referenced SOP Sequence (0008,1199)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class CommitmentResult:
    """The outcome of one transaction: what goes into the N-EVENT-REPORT (PS3.4 J.3.3)."""

    transaction_uid: str
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)

    @property
    def event_type(self) -> int:
        return FAILURES_EXIST if self.failed else ALL_COMMITTED

    def event_information(self, retrieve_ae_title: str = "") -> Dataset:
        """The Event Information (Table J.3-2): Transaction UID, Referenced SOP Sequence of
        the committed instances, Failed SOP Sequence with a Failure Reason per failure."""
        info = Dataset()
        info.TransactionUID = self.transaction_uid
        if retrieve_ae_title:
            info.RetrieveAETitle = retrieve_ae_title
        if self.committed or not self.failed:
            info.ReferencedSOPSequence = Sequence([_item(r) for r in self.committed])
        if self.failed:
            items = []
            for reference, reason in self.failed:
                item = _item(reference)
                item.FailureReason = reason
                items.append(item)
            info.FailedSOPSequence = Sequence(items)
        return info


def _item(reference: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item


class CommitmentRequestError(ValueError):
    """An N-ACTION the SCP will not process (answered with `status`)."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status


def _text(dataset: Dataset, tag: int) -> str:
    """A text element's value as received, without pydicom's value validation (a peer's
    malformed UID must become a status, not a warning)."""
    if tag not in dataset:
        return ""
    value = dataset.get_item(tag).value  # a RawDataElement (bytes) when not yet converted
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").rstrip("\0 ")


def parse_action(action: Dataset) -> tuple[str, list[Reference]]:
    """Transaction UID and references of a Storage Commitment Request (PS3.4 Table J.3-1)."""
    try:
        transaction = checked_uid(_text(action, TRANSACTION_UID), "Transaction UID")
    except InvalidUIDError as error:
        raise CommitmentRequestError(INVALID_ARGUMENT_VALUE, str(error)) from None
    items = action.get("ReferencedSOPSequence")
    if not items:
        raise CommitmentRequestError(INVALID_ARGUMENT_VALUE, "no Referenced SOP Sequence")
    references = [
        Reference(_text(item, REFERENCED_SOP_CLASS_UID), _text(item, REFERENCED_SOP_INSTANCE_UID))
        for item in items
    ]
    return transaction, references


def check_commitment(
    index: Index, transaction_uid: str, references: list[Reference]
) -> CommitmentResult:
    """Which references the SCP commits to: indexed with the same SOP class and on disk
    (PS3.4 J.3.3.1.2); the others fail with 0x0112 (no such object instance), 0x0119 (SOP
    class conflict) or 0x0110 (indexed, but its file is gone)."""
    result = CommitmentResult(transaction_uid)
    stored = index.stored_instances([r.sop_instance_uid for r in references if r.sop_instance_uid])
    for reference in references:
        found = stored.get(reference.sop_instance_uid)
        if found is None:
            result.failed.append((reference, Status.NO_SUCH_SOP_INSTANCE))
        elif found.sop_class_uid != reference.sop_class_uid:
            result.failed.append((reference, CLASS_INSTANCE_CONFLICT))
        elif not found.path.is_file():
            result.failed.append((reference, Status.PROCESSING_FAILURE))
        else:
            result.committed.append(reference)
    return result


def _response(request: ServiceRequest, result: StatusResult) -> NActionRSP:
    command = request.command if isinstance(request.command, NActionRQ) else None
    return NActionRSP(
        message_id_being_responded_to=request.message_id,
        status=result.status,
        error_comment=result.error_comment,
        affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
        affected_sop_instance_uid=command.requested_sop_instance_uid if command else None,
        action_type_id=command.action_type_id if command else None,
    )


def handle_commitment_action(request: ServiceRequest, channel: Channel, handlers: Handlers) -> None:
    """Storage Commitment Push Model SCP, N-ACTION (PS3.4 J.3.2): answer, check, report."""
    command = request.command
    index = index_of(handlers)
    try:
        if not isinstance(command, NActionRQ) or command.action_type_id != (
            REQUEST_STORAGE_COMMITMENT
        ):
            raise CommitmentRequestError(NO_SUCH_ACTION, "Action Type ID must be 1")
        if command.requested_sop_instance_uid != STORAGE_COMMITMENT_INSTANCE:
            raise CommitmentRequestError(
                INVALID_SOP_INSTANCE, f"the SOP instance must be {STORAGE_COMMITMENT_INSTANCE}"
            )
        if index is None:  # pragma: no cover - workers.service installs us only with an index
            raise CommitmentRequestError(Status.PROCESSING_FAILURE, "no index to check against")
        transaction, references = parse_action(decoded_dataset(request))
    except CommitmentRequestError as error:
        channel.respond(_response(request, failure(error.status, str(error))), None, True)
        return
    except Exception as error:  # noqa: BLE001 - an undecodable action information
        channel.respond(
            _response(request, failure(Status.PROCESSING_FAILURE, describe_exception(error))),
            None,
            True,
        )
        return
    channel.respond(_response(request, StatusResult(SUCCESS)), None, True)
    result = check_commitment(index, transaction, references)
    log.info(
        "storage commitment %s from %s: %d committed, %d failed",
        transaction,
        request.association.calling_ae_title,
        len(result.committed),
        len(result.failed),
    )
    information = result.event_information(handlers.local_ae_title)
    # PS3.4 J.3.3: on the same association while it is open, else on a new one
    status = channel.event_report(
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_INSTANCE,
        result.event_type,
        encode_dataset(information, request.transfer_syntax),
    )
    if status is not None:
        log.info("storage commitment report on the same association: status 0x%04X", status)
        return
    deliver_event_report(
        handlers, request.association.calling_ae_title, result.event_type, information
    )


# --- delivery on a new association (PS3.4 J.3.3.1) ---------------------------------------------


def deliver_event_report(
    handlers: Handlers, ae_title: str, event_type: int, information: Dataset
) -> int | None:
    """Send the Storage Commitment result to `ae_title` (a known AE) on a new association;
    returns the N-EVENT-REPORT-RSP status, or None when it could not be delivered."""
    address = handlers.known_aes.get(ae_title)
    if address is None:
        log.warning(
            "storage commitment result for %s not sent: not in the known AEs (--known-ae)",
            ae_title,
        )
        return None
    for attempt in range(1, DELIVERY_ATTEMPTS + 1):
        try:
            status = _send_once(handlers, ae_title, address, event_type, information)
        except Exception as error:  # noqa: BLE001 - any failure is retried, then logged
            log.warning("storage commitment report to %s, attempt %d: %s", ae_title, attempt, error)
        else:
            log.info("storage commitment report to %s: status 0x%04X", ae_title, status)
            return status
        if attempt < DELIVERY_ATTEMPTS:
            time.sleep(DELIVERY_RETRY_DELAY)
    log.error("storage commitment result for %s could not be delivered", ae_title)
    return None


def _send_once(
    handlers: Handlers,
    ae_title: str,
    address: tuple[str, int],
    event_type: int,
    information: Dataset,
) -> int:
    request = build_associate_rq(
        calling_ae_title=handlers.local_ae_title,
        called_ae_title=ae_title,
        contexts=[
            build_context(STORAGE_COMMITMENT_PUSH, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        ],
        maximum_pdu_length=handlers.maximum_pdu_size,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
    )

    async def send() -> int:
        association = await open_association(
            address[0],
            address[1],
            request,
            ClientSettings(dimse_timeout=DELIVERY_TIMEOUT),
            cls=AsyncAssociation,
        )
        if not association.is_established:
            raise ConnectionError(f"association to {ae_title} at {address[0]}:{address[1]} failed")
        try:
            return await _report(association, event_type, information)
        finally:
            if association.is_established:
                await association.release()

    return scu_loop().run(send(), DELIVERY_TIMEOUT * 2)


async def _report(association: AsyncAssociation, event_type: int, information: Dataset) -> int:
    """N-EVENT-REPORT-RQ on the accepted Storage Commitment context, whatever roles the peer
    granted (peers that ignore role selection still take it); returns the response status."""
    context = next(
        (c for c in association.accepted_contexts if c.abstract_syntax == STORAGE_COMMITMENT_PUSH),
        None,
    )
    if context is None:
        raise ConnectionError("the peer did not accept the Storage Commitment context")
    syntax = str(context.transfer_syntax)
    command = NEventReportRQ(
        message_id=association.next_message_id(),
        affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
        affected_sop_instance_uid=STORAGE_COMMITMENT_INSTANCE,
        event_type_id=event_type,
    )
    async for response, _reply in association.request(
        context, command, encode_dataset(information, syntax)
    ):
        return response.status if isinstance(response, Response) else Status.PROCESSING_FAILURE
    raise ConnectionError("no N-EVENT-REPORT-RSP")  # pragma: no cover - request() yields or raises
