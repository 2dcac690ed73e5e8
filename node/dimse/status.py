# DIMSE status codes as data (PS3.7 Annex C, PS3.4 service classes).
#
# Rules: codes are plain ints grouped in namespaces (`Status` for the general ones of PS3.7
# Annex C, `StorageStatus`, `QueryRetrieveStatus` for PS3.4 service-specific ones). The
# meaning of a few codes depends on the service (B000H is "coercion of data elements" for
# C-STORE but "sub-operations complete with failures" for C-GET/C-MOVE), so `describe` takes
# the Command Field of the message as an optional hint. Stdlib only, no I/O.
from __future__ import annotations

from enum import Enum
from typing import Final


class StatusCategory(Enum):
    """Status types of PS3.7 Annex C (C.1 to C.6)."""

    SUCCESS = "Success"
    PENDING = "Pending"
    CANCEL = "Cancel"
    WARNING = "Warning"
    FAILURE = "Failure"


class Status:
    """General status codes, PS3.7 Annex C (used by every service class)."""

    SUCCESS: Final = 0x0000
    WARNING_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED: Final = 0x0001
    NO_SUCH_ATTRIBUTE: Final = 0x0105
    INVALID_ATTRIBUTE_VALUE: Final = 0x0106
    ATTRIBUTE_LIST_ERROR: Final = 0x0107
    PROCESSING_FAILURE: Final = 0x0110
    DUPLICATE_SOP_INSTANCE: Final = 0x0111
    NO_SUCH_SOP_INSTANCE: Final = 0x0112
    NO_SUCH_EVENT_TYPE: Final = 0x0113
    NO_SUCH_ARGUMENT: Final = 0x0114
    INVALID_ARGUMENT_VALUE: Final = 0x0115
    ATTRIBUTE_VALUE_OUT_OF_RANGE: Final = 0x0116
    INVALID_OBJECT_INSTANCE: Final = 0x0117
    NO_SUCH_SOP_CLASS: Final = 0x0118
    CLASS_INSTANCE_CONFLICT: Final = 0x0119
    MISSING_ATTRIBUTE: Final = 0x0120
    MISSING_ATTRIBUTE_VALUE: Final = 0x0121
    SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
    NO_SUCH_ACTION: Final = 0x0123
    NOT_AUTHORIZED: Final = 0x0124
    DUPLICATE_INVOCATION: Final = 0x0210
    UNRECOGNIZED_OPERATION: Final = 0x0211
    MISTYPED_ARGUMENT: Final = 0x0212
    RESOURCE_LIMITATION: Final = 0x0213
    CANCEL: Final = 0xFE00
    PENDING: Final = 0xFF00
    PENDING_WARNING: Final = 0xFF01


class StorageStatus:
    """Storage Service Class C-STORE statuses, PS3.4 B.2.3 (ranges: first code of each)."""

    OUT_OF_RESOURCES: Final = 0xA700  # A7xx
    DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900  # A9xx
    CANNOT_UNDERSTAND: Final = 0xC000  # Cxxx
    COERCION_OF_DATA_ELEMENTS: Final = 0xB000
    ELEMENTS_DISCARDED: Final = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Final = 0xB007


class QueryRetrieveStatus:
    """Query/Retrieve C-FIND, C-GET and C-MOVE statuses, PS3.4 C.4.1.1.4, C.4.2.1.5,
    C.4.3.1.4 (also used by Modality Worklist, PS3.4 K.4.1.1.4)."""

    OUT_OF_RESOURCES: Final = 0xA700  # C-FIND
    OUT_OF_RESOURCES_NUMBER_OF_MATCHES: Final = 0xA701  # C-GET, C-MOVE
    OUT_OF_RESOURCES_SUBOPERATIONS: Final = 0xA702  # C-GET, C-MOVE
    MOVE_DESTINATION_UNKNOWN: Final = 0xA801  # C-MOVE
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
    NO_FRAMES_FOUND: Final = 0xAA00  # frame-level retrieve (PS3.4 Y)
    UNABLE_TO_CREATE_OBJECT: Final = 0xAA01
    UNABLE_TO_EXTRACT_FRAMES: Final = 0xAA02
    TIME_BASED_REQUEST_FOR_NON_TIME_BASED_INSTANCE: Final = 0xAA03
    INVALID_REQUEST: Final = 0xAA04
    UNABLE_TO_PROCESS: Final = 0xC000  # Cxxx
    SUBOPERATIONS_COMPLETE_WITH_FAILURES: Final = 0xB000  # C-GET, C-MOVE warning
    CANCEL: Final = 0xFE00
    PENDING: Final = 0xFF00
    PENDING_WARNING_OPTIONAL_KEYS: Final = 0xFF01  # C-FIND


class ProcedureStepStatus:
    """Modality Performed Procedure Step N-SET specifics, PS3.4 F.7.2.2.4: a 0110H
    Processing failure whose Error ID (0000,0903) says the step may no longer be updated."""

    ERROR_ID_MAY_NO_LONGER_BE_UPDATED: Final = 0xA710


class StorageCommitmentFailureReason:
    """Failure Reason (0008,1197) values of Storage Commitment (PS3.3 C.14.1.1), sent in
    the N-EVENT-REPORT Event Information; the DIMSE statuses themselves are the general ones."""

    PROCESSING_FAILURE: Final = 0x0110
    NO_SUCH_OBJECT_INSTANCE: Final = 0x0112
    RESOURCE_LIMITATION: Final = 0x0213
    REFERENCED_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
    CLASS_INSTANCE_CONFLICT: Final = 0x0119
    DUPLICATE_TRANSACTION_UID: Final = 0x0131


_GENERAL: Final[dict[int, str]] = {
    0x0000: "Success",
    0x0001: "Requested optional attributes are not supported",
    0x0105: "No such attribute",
    0x0106: "Invalid attribute value",
    0x0107: "Attribute list error",
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP Instance",
    0x0112: "No such SOP Instance",
    0x0113: "No such event type",
    0x0114: "No such argument",
    0x0115: "Invalid argument value",
    0x0116: "Attribute value out of range",
    0x0117: "Invalid object instance",
    0x0118: "No such SOP Class",
    0x0119: "Class-instance conflict",
    0x0120: "Missing attribute",
    0x0121: "Missing attribute value",
    0x0122: "Refused: SOP Class not supported",
    0x0123: "No such action",
    0x0124: "Refused: not authorized",
    0x0210: "Duplicate invocation",
    0x0211: "Unrecognized operation",
    0x0212: "Mistyped argument",
    0x0213: "Resource limitation",
    0xFE00: "Cancel",
    0xFF00: "Pending",
    0xFF01: "Pending with warnings",
}

# Service-specific exact codes, by the request's Command Field (bit 15 cleared).
_C_STORE: Final = 0x0001
_C_GET: Final = 0x0010
_C_FIND: Final = 0x0020
_C_MOVE: Final = 0x0021
_RETRIEVE: Final[dict[int, str]] = {
    0xA701: "Refused: out of resources, unable to calculate number of matches",
    0xA702: "Refused: out of resources, unable to perform sub-operations",
    0xA900: "Identifier does not match SOP Class",
    0xAA00: "None of the frames requested were found in the SOP Instance",
    0xAA01: "Unable to create new object for this SOP Class",
    0xAA02: "Unable to extract frames",
    0xAA03: "Time-based request received for a non-time-based original SOP Instance",
    0xAA04: "Invalid request",
    0xB000: "Sub-operations complete, one or more failures or warnings",
    0xFE00: "Sub-operations terminated due to Cancel indication",
    0xFF00: "Sub-operations are continuing",
}
_SERVICE: Final[dict[int, dict[int, str]]] = {
    _C_STORE: {
        0xB000: "Coercion of data elements",
        0xB006: "Elements discarded",
        0xB007: "Data set does not match SOP Class",
    },
    _C_FIND: {
        0xA700: "Refused: out of resources",
        0xA900: "Identifier does not match SOP Class",
        0xFE00: "Matching terminated due to Cancel request",
        0xFF00: "Matches are continuing, current match supplied",
        0xFF01: "Matches are continuing, one or more optional keys were not supported",
    },
    _C_GET: _RETRIEVE,
    _C_MOVE: {**_RETRIEVE, 0xA801: "Refused: move destination unknown"},
}
# Service-specific ranges (high byte or high nibble significant): (mask, value, meaning).
_SERVICE_RANGES: Final[dict[int, tuple[tuple[int, int, str], ...]]] = {
    _C_STORE: (
        (0xFF00, 0xA700, "Refused: out of resources"),
        (0xFF00, 0xA900, "Error: data set does not match SOP Class"),
        (0xF000, 0xC000, "Error: cannot understand"),
    ),
    _C_FIND: ((0xF000, 0xC000, "Failed: unable to process"),),
    _C_GET: ((0xF000, 0xC000, "Failed: unable to process"),),
    _C_MOVE: ((0xF000, 0xC000, "Failed: unable to process"),),
}


def classify(code: int) -> StatusCategory:
    """The status type of a code, PS3.7 Annex C.

    Success 0000H; Pending FF00H, FF01H; Cancel FE00H; Warning 0001H, 0107H, 0116H, Bxxx;
    Failure Axxx, Cxxx, 01xx and 02xx. A code PS3.7 does not place in any class is treated
    as a failure: an unknown status must never pass for success.
    """
    if code == 0x0000:
        return StatusCategory.SUCCESS
    if code in (0xFF00, 0xFF01):
        return StatusCategory.PENDING
    if code == 0xFE00:
        return StatusCategory.CANCEL
    if code in (0x0001, 0x0107, 0x0116) or code & 0xF000 == 0xB000:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


def is_known(code: int) -> bool:
    """True when PS3.7 Annex C places the code in a status class (DCMTK's "standard" set)."""
    return (
        code in (0x0000, 0x0001, 0xFE00, 0xFF00, 0xFF01)
        or code & 0xFF00 in (0x0100, 0x0200)
        or code & 0xF000 in (0xA000, 0xB000, 0xC000)
    )


def describe(code: int, command_field: int | None = None) -> str:
    """A one-line description for logs, e.g. "A700H Failure: Refused: out of resources".

    `command_field` (of the request or the response) selects the PS3.4 meaning of the
    service-specific codes of C-STORE (B.2.3), C-FIND (C.4.1.1.4), C-GET (C.4.3.1.4) and
    C-MOVE (C.4.2.1.5); without it, or for other services, the general PS3.7 Annex C
    meaning is used.
    """
    service = -1 if command_field is None else command_field & 0x7FFF
    meaning = _SERVICE.get(service, {}).get(code)
    if meaning is None:
        for mask, value, text in _SERVICE_RANGES.get(service, ()):
            if code & mask == value:
                meaning = text
                break
    if meaning is None:
        meaning = _GENERAL.get(code)
    if meaning is None:
        meaning = "service-specific status" if is_known(code) else "unknown status"
    return f"{code:04X}H {classify(code).value}: {meaning}"
