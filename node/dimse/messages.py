# The DIMSE messages of PS3.7 (sections 9.3 and 10.3) as data.
#
# Rules: one frozen, slotted, keyword-only dataclass per message, named after the standard,
# used for both directions. Attributes are the PS3.7 command fields in snake_case; `None`
# means "absent from the command set". `has_dataset` stands for Command Data Set Type
# (0000,0800). Each class carries its Command Field (`COMMAND_FIELD`) and the fields PS3.7
# makes mandatory on the wire (`REQUIRED`); the codec in node.dimse.commands reads both.
# Stdlib only, no I/O.
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, Final


class CommandField(IntEnum):
    """Command Field (0000,0100) values, PS3.7 Annex E Table E.1-1."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150
    C_CANCEL_RQ = 0x0FFF


class Priority(IntEnum):
    """Priority (0000,0700) of C-STORE, C-FIND, C-GET and C-MOVE requests, PS3.7 Annex E."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


#: Command Data Set Type (0000,0800): 0101H means no data set follows (PS3.7 Annex E).
NO_DATASET: Final = 0x0101
#: What we send when a data set follows; any other value than 0101H means the same.
#: DCMTK (DIMSE_DATASET_PRESENT) and pynetdicom both send 0001H.
DATASET_PRESENT: Final = 0x0001

_REQUEST_ID: Final = ("message_id",)
_RESPONSE_ID: Final = ("message_id_being_responded_to", "status")
_REQUESTED_ID: Final = (*_REQUEST_ID, "requested_sop_class_uid", "requested_sop_instance_uid")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """Fields every request but C-CANCEL-RQ has: its Message ID (0000,0110). The SOP class
    and instance it is about, whether its type carries them as Affected or Requested SOP
    Class/Instance UID, read as `sop_class_uid` and `sop_instance_uid`."""

    is_request: ClassVar[bool] = True

    message_id: int

    @property
    def sop_class_uid(self) -> str:
        raise NotImplementedError  # pragma: no cover - every concrete request overrides it

    @property
    def sop_instance_uid(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class AffectedRequest(Request):
    """A request naming its SOP class as Affected SOP Class UID (0000,0002): DIMSE-C,
    N-EVENT-REPORT and N-CREATE."""

    affected_sop_class_uid: str

    @property
    def sop_class_uid(self) -> str:
        return self.affected_sop_class_uid


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestedRequest(Request):
    """A request naming its target as Requested SOP Class/Instance UID (0000,0003)/(0000,1001):
    N-GET, N-SET, N-ACTION and N-DELETE."""

    requested_sop_class_uid: str
    requested_sop_instance_uid: str

    @property
    def sop_class_uid(self) -> str:
        return self.requested_sop_class_uid

    @property
    def sop_instance_uid(self) -> str | None:
        return self.requested_sop_instance_uid


class _Cancel:
    __slots__ = ()
    is_request: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """Fields every response has: the request's Message ID, the Status (PS3.7 Annex C) and
    the optional status detail fields Offending Element (0000,0901), Error Comment
    (0000,0902) and Error ID (0000,0903)."""

    is_request: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


# --- DIMSE-C (PS3.7 section 9.3) ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRQ(AffectedRequest):
    """C-STORE-RQ, PS3.7 9.3.1.1."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_STORE_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (
        *_REQUEST_ID,
        "affected_sop_class_uid",
        "affected_sop_instance_uid",
        "priority",
    )

    affected_sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None
    has_dataset: bool = True

    @property
    def sop_instance_uid(self) -> str | None:
        return self.affected_sop_instance_uid


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRSP(Response):
    """C-STORE-RSP, PS3.7 9.3.1.2."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_STORE_RSP
    REQUIRED: ClassVar[tuple[str, ...]] = _RESPONSE_ID

    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRQ(AffectedRequest):
    """C-FIND-RQ, PS3.7 9.3.2.1. The data set is the Identifier."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_FIND_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (*_REQUEST_ID, "affected_sop_class_uid", "priority")

    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRSP(Response):
    """C-FIND-RSP, PS3.7 9.3.2.2. Pending responses carry an Identifier (has_dataset=True)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_FIND_RSP
    REQUIRED: ClassVar[tuple[str, ...]] = _RESPONSE_ID

    affected_sop_class_uid: str | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRQ(AffectedRequest):
    """C-GET-RQ, PS3.7 9.3.3.1."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_GET_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (*_REQUEST_ID, "affected_sop_class_uid", "priority")

    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRSP(Response):
    """C-GET-RSP, PS3.7 9.3.3.2, with the sub-operation counters (0000,1020)-(0000,1023)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_GET_RSP
    REQUIRED: ClassVar[tuple[str, ...]] = _RESPONSE_ID

    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRQ(AffectedRequest):
    """C-MOVE-RQ, PS3.7 9.3.4.1."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_MOVE_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (
        *_REQUEST_ID,
        "affected_sop_class_uid",
        "priority",
        "move_destination",
    )

    move_destination: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRSP(Response):
    """C-MOVE-RSP, PS3.7 9.3.4.2, with the sub-operation counters (0000,1020)-(0000,1023)."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_MOVE_RSP
    REQUIRED: ClassVar[tuple[str, ...]] = _RESPONSE_ID

    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRQ(AffectedRequest):
    """C-ECHO-RQ, PS3.7 9.3.5.1."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_ECHO_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (*_REQUEST_ID, "affected_sop_class_uid")

    affected_sop_class_uid: str = "1.2.840.10008.1.1"
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRSP(Response):
    """C-ECHO-RSP, PS3.7 9.3.5.2."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_ECHO_RSP
    REQUIRED: ClassVar[tuple[str, ...]] = _RESPONSE_ID

    affected_sop_class_uid: str | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CCancelRQ(_Cancel):
    """C-CANCEL-RQ (C-FIND/C-GET/C-MOVE-CANCEL-RQ), PS3.7 9.3.2.3; it has no Message ID
    of its own and no response."""

    COMMAND_FIELD: ClassVar[int] = CommandField.C_CANCEL_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = ("message_id_being_responded_to",)

    message_id_being_responded_to: int
    has_dataset: bool = False


# --- DIMSE-N (PS3.7 section 10.3) --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NResponse(Response):
    """Fields every DIMSE-N response may carry: Affected SOP Class/Instance UID."""

    REQUIRED: ClassVar[tuple[str, ...]] = _RESPONSE_ID

    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NEventReportRQ(AffectedRequest):
    """N-EVENT-REPORT-RQ, PS3.7 10.3.1.1. The data set is the Event Information."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_EVENT_REPORT_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (
        *_REQUEST_ID,
        "affected_sop_class_uid",
        "affected_sop_instance_uid",
        "event_type_id",
    )

    affected_sop_instance_uid: str
    event_type_id: int
    has_dataset: bool = True

    @property
    def sop_instance_uid(self) -> str | None:
        return self.affected_sop_instance_uid


@dataclass(frozen=True, slots=True, kw_only=True)
class NEventReportRSP(NResponse):
    """N-EVENT-REPORT-RSP, PS3.7 10.3.1.2. The data set, if any, is the Event Reply."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_EVENT_REPORT_RSP

    event_type_id: int | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NGetRQ(RequestedRequest):
    """N-GET-RQ, PS3.7 10.3.2.1."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_GET_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = _REQUESTED_ID

    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NGetRSP(NResponse):
    """N-GET-RSP, PS3.7 10.3.2.2. On success the data set is the Attribute List."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_GET_RSP

    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NSetRQ(RequestedRequest):
    """N-SET-RQ, PS3.7 10.3.3.1. The data set is the Modification List."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_SET_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = _REQUESTED_ID

    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NSetRSP(NResponse):
    """N-SET-RSP, PS3.7 10.3.3.2."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_SET_RSP

    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NActionRQ(RequestedRequest):
    """N-ACTION-RQ, PS3.7 10.3.4.1. The data set is the Action Information."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_ACTION_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (*_REQUESTED_ID, "action_type_id")

    action_type_id: int
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NActionRSP(NResponse):
    """N-ACTION-RSP, PS3.7 10.3.4.2. The data set, if any, is the Action Reply."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_ACTION_RSP

    action_type_id: int | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NCreateRQ(AffectedRequest):
    """N-CREATE-RQ, PS3.7 10.3.5.1. The data set is the Attribute List."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_CREATE_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = (*_REQUEST_ID, "affected_sop_class_uid")

    affected_sop_instance_uid: str | None = None
    has_dataset: bool = True

    @property
    def sop_instance_uid(self) -> str | None:
        return self.affected_sop_instance_uid


@dataclass(frozen=True, slots=True, kw_only=True)
class NCreateRSP(NResponse):
    """N-CREATE-RSP, PS3.7 10.3.5.2."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_CREATE_RSP

    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NDeleteRQ(RequestedRequest):
    """N-DELETE-RQ, PS3.7 10.3.6.1."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_DELETE_RQ
    REQUIRED: ClassVar[tuple[str, ...]] = _REQUESTED_ID

    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NDeleteRSP(NResponse):
    """N-DELETE-RSP, PS3.7 10.3.6.2."""

    COMMAND_FIELD: ClassVar[int] = CommandField.N_DELETE_RSP

    has_dataset: bool = False


DimseRequest = (
    CStoreRQ
    | CFindRQ
    | CGetRQ
    | CMoveRQ
    | CEchoRQ
    | CCancelRQ
    | NEventReportRQ
    | NGetRQ
    | NSetRQ
    | NActionRQ
    | NCreateRQ
    | NDeleteRQ
)
DimseResponse = (
    CStoreRSP
    | CFindRSP
    | CGetRSP
    | CMoveRSP
    | CEchoRSP
    | NEventReportRSP
    | NGetRSP
    | NSetRSP
    | NActionRSP
    | NCreateRSP
    | NDeleteRSP
)
DimseMessage = DimseRequest | DimseResponse

#: Every message class by its Command Field value.
MESSAGE_CLASS: Final[dict[int, type[DimseMessage]]] = {
    cls.COMMAND_FIELD: cls
    for cls in (
        CStoreRQ,
        CStoreRSP,
        CFindRQ,
        CFindRSP,
        CGetRQ,
        CGetRSP,
        CMoveRQ,
        CMoveRSP,
        CEchoRQ,
        CEchoRSP,
        CCancelRQ,
        NEventReportRQ,
        NEventReportRSP,
        NGetRQ,
        NGetRSP,
        NSetRQ,
        NSetRSP,
        NActionRQ,
        NActionRSP,
        NCreateRQ,
        NCreateRSP,
        NDeleteRQ,
        NDeleteRSP,
    )
}

#: The response class for each request's Command Field (C-CANCEL-RQ has none).
RESPONSE_CLASS: Final[dict[int, type[DimseResponse]]] = {
    CommandField.C_STORE_RQ: CStoreRSP,
    CommandField.C_FIND_RQ: CFindRSP,
    CommandField.C_GET_RQ: CGetRSP,
    CommandField.C_MOVE_RQ: CMoveRSP,
    CommandField.C_ECHO_RQ: CEchoRSP,
    CommandField.N_EVENT_REPORT_RQ: NEventReportRSP,
    CommandField.N_GET_RQ: NGetRSP,
    CommandField.N_SET_RQ: NSetRSP,
    CommandField.N_ACTION_RQ: NActionRSP,
    CommandField.N_CREATE_RQ: NCreateRSP,
    CommandField.N_DELETE_RQ: NDeleteRSP,
}


#: Error Comment (0000,0902) is LO: at most 64 characters of the default repertoire.
_ERROR_COMMENT_LENGTH: Final = 64

#: Fields a response echoes from its request, in order of preference for each response field.
_ECHOED: Final = (
    ("affected_sop_class_uid", ("affected_sop_class_uid", "requested_sop_class_uid")),
    ("affected_sop_instance_uid", ("affected_sop_instance_uid", "requested_sop_instance_uid")),
    ("event_type_id", ("event_type_id",)),
    ("action_type_id", ("action_type_id",)),
)


def response_to(
    request: DimseMessage, status: int, *, comment: str | None = None, has_dataset: bool = False
) -> DimseResponse:
    """The response of the right type for `request` (PS3.7 9.3 and 10.3): its Message ID,
    the SOP class and instance (affected, else requested) and the event or action type it
    names, with `status` and an Error Comment cut to 64 ASCII characters."""
    response_class: Any = RESPONSE_CLASS[request.COMMAND_FIELD]
    names = {field.name for field in fields(response_class)}
    values: dict[str, Any] = {
        "message_id_being_responded_to": request.message_id if isinstance(request, Request) else 0,
        "status": status,
        "has_dataset": has_dataset,
    }
    if comment is not None:
        text = comment.encode("ascii", "replace").decode("ascii")
        values["error_comment"] = text[:_ERROR_COMMENT_LENGTH]
    for name, sources in _ECHOED:
        if name not in names:
            continue
        for source in sources:
            value = getattr(request, source, None)
            if value is not None:
                values[name] = value
                break
    response: DimseResponse = response_class(**values)
    return response


def failure_response(request: DimseMessage, status: int, comment: str) -> DimseResponse:
    """The final failure response for `request`: `status` with `comment`, no data set."""
    return response_to(request, status, comment=comment)


def is_request(message: DimseMessage) -> bool:
    """True for a request (bit 15 of Command Field clear), PS3.7 Annex E."""
    return not message.COMMAND_FIELD & 0x8000


def message_name(command_field: int) -> str:
    """The PS3.7 name of a Command Field value, e.g. 0x8001 -> "C-STORE-RSP"."""
    try:
        return CommandField(command_field).name.replace("_", "-")
    except ValueError:
        return f"unknown command 0x{command_field:04X}"
