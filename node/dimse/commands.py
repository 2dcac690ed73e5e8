# Command set codec: DIMSE messages <-> group 0000 bytes (PS3.7 section 6.3 and Annex E).
#
# Rules: command sets are always Implicit VR Little Endian (PS3.7 6.3.1). We write what DCMTK
# writes: Command Group Length (0000,0000) first, then the elements present in ascending tag
# order, every value of even length (UI padded with NUL, AE and LO with a space), Command Data
# Set Type 0001H when a data set follows and 0101H when none does. Decoding checks each length
# against the bytes present, ignores group 0000 elements it does not know (retired ones such as
# (0000,0001) or (0000,0010) included) and raises CommandSetError, carrying the status to
# answer with, for anything else. This is the per-message hot path: precompiled structs, one
# dict from tag to (attribute, VR), no object per element. Stdlib only, no I/O.
from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any, Final

from node.dimse.errors import CommandSetError
from node.dimse.messages import (
    DATASET_PRESENT,
    MESSAGE_CLASS,
    NO_DATASET,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    DimseMessage,
    DimseRequest,
    DimseResponse,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    Priority,
    is_request,
    message_name,
)
from node.dimse.status import Status
from node.ul.errors import LocalProtocolError

__all__ = [
    "ELEMENT_TAG",
    "CCancelRQ",
    "CEchoRQ",
    "CEchoRSP",
    "CFindRQ",
    "CFindRSP",
    "CGetRQ",
    "CGetRSP",
    "CMoveRQ",
    "CMoveRSP",
    "CStoreRQ",
    "CStoreRSP",
    "CommandField",
    "CommandSetError",
    "DimseMessage",
    "DimseRequest",
    "DimseResponse",
    "NActionRQ",
    "NActionRSP",
    "NCreateRQ",
    "NCreateRSP",
    "NDeleteRQ",
    "NDeleteRSP",
    "NEventReportRQ",
    "NEventReportRSP",
    "NGetRQ",
    "NGetRSP",
    "NSetRQ",
    "NSetRSP",
    "Priority",
    "decode_command",
    "encode_command",
    "is_request",
    "message_name",
]

#: Implicit VR Little Endian element header: group, element, 32-bit value length.
ELEMENT_HEADER: Final = struct.Struct("<HHI")
_US_ELEMENT: Final = struct.Struct("<HHIH")
_UL_ELEMENT: Final = struct.Struct("<HHII")
_US_VALUE: Final = struct.Struct("<H")
_TAG_VALUE: Final = struct.Struct("<HH")

# Value representations of the command elements (PS3.7 Annex E Table E.1-1).
_US: Final = 0
_UI: Final = 1
_AE: Final = 2
_LO: Final = 3
_AT: Final = 4
_DATASET_TYPE: Final = 5  # US on the wire, `has_dataset: bool` in the message

#: Maximum value lengths in bytes (PS3.5 Table 6.2-1); LO is truncated, the others refused.
_MAXIMUM_TEXT: Final = {_UI: 64, _AE: 16, _LO: 64}
_PADDING: Final = {_UI: b"\0", _AE: b" ", _LO: b" "}

_COMMAND_FIELD_ELEMENT: Final = 0x0100
_MESSAGE_ID_ELEMENT: Final = 0x0110
_DATASET_TYPE_ELEMENT: Final = 0x0800

# element number -> (attribute, VR, keyword). "command_field" is not a dataclass field: it is
# the class constant COMMAND_FIELD.
_ELEMENTS: Final[dict[int, tuple[str, int, str]]] = {
    0x0002: ("affected_sop_class_uid", _UI, "Affected SOP Class UID"),
    0x0003: ("requested_sop_class_uid", _UI, "Requested SOP Class UID"),
    0x0100: ("command_field", _US, "Command Field"),
    0x0110: ("message_id", _US, "Message ID"),
    0x0120: ("message_id_being_responded_to", _US, "Message ID Being Responded To"),
    0x0600: ("move_destination", _AE, "Move Destination"),
    0x0700: ("priority", _US, "Priority"),
    0x0800: ("has_dataset", _DATASET_TYPE, "Command Data Set Type"),
    0x0900: ("status", _US, "Status"),
    0x0901: ("offending_element", _AT, "Offending Element"),
    0x0902: ("error_comment", _LO, "Error Comment"),
    0x0903: ("error_id", _US, "Error ID"),
    0x1000: ("affected_sop_instance_uid", _UI, "Affected SOP Instance UID"),
    0x1001: ("requested_sop_instance_uid", _UI, "Requested SOP Instance UID"),
    0x1002: ("event_type_id", _US, "Event Type ID"),
    0x1005: ("attribute_identifier_list", _AT, "Attribute Identifier List"),
    0x1008: ("action_type_id", _US, "Action Type ID"),
    0x1020: ("number_of_remaining_suboperations", _US, "Number of Remaining Sub-operations"),
    0x1021: ("number_of_completed_suboperations", _US, "Number of Completed Sub-operations"),
    0x1022: ("number_of_failed_suboperations", _US, "Number of Failed Sub-operations"),
    0x1023: ("number_of_warning_suboperations", _US, "Number of Warning Sub-operations"),
    0x1030: ("move_originator_ae_title", _AE, "Move Originator Application Entity Title"),
    0x1031: ("move_originator_message_id", _US, "Move Originator Message ID"),
}

#: Attribute name -> tag, e.g. "affected_sop_instance_uid" -> 0x00001000 (for Offending Element).
ELEMENT_TAG: Final[dict[str, int]] = {name: element for element, (name, _, _) in _ELEMENTS.items()}
# Value lengths accepted on receipt, by VR: US exactly 2, UI at most 64 (PS3.5 Table 6.2-1: a
# longer UID could not be echoed in the response); AE, LO and AT are not limited here.
_RECEIVED_LENGTHS: Final = {
    _US: (2, 2),
    _DATASET_TYPE: (2, 2),
    _UI: (0, 64),
    _AE: (0, 0xFFFFFFFF),
    _LO: (0, 0xFFFFFFFF),
    _AT: (0, 0xFFFFFFFF),
}
_VR_NAMES: Final = {_US: "US", _DATASET_TYPE: "US", _UI: "UI", _AE: "AE", _LO: "LO", _AT: "AT"}
_DECODE_ELEMENT: Final = {
    element: (name, vr, *_RECEIVED_LENGTHS[vr]) for element, (name, vr, _) in _ELEMENTS.items()
}


def _encode_spec(cls: type[DimseMessage]) -> tuple[tuple[int, str, int], ...]:
    names = {f.name for f in fields(cls)} | {"command_field"}
    return tuple(
        (element, "COMMAND_FIELD" if name == "command_field" else name, vr)
        for element, (name, vr, _) in sorted(_ELEMENTS.items())
        if name in names
    )


_ENCODE_SPEC: Final = {cls: _encode_spec(cls) for cls in MESSAGE_CLASS.values()}
# class -> (its field names, the names that must be present on the wire)
_FIELD_NAMES: Final = {
    cls: (frozenset(f.name for f in fields(cls)), frozenset((*cls.REQUIRED, "has_dataset")))
    for cls in MESSAGE_CLASS.values()
}
_ELEMENTS_ORDER: Final = tuple(name for _, (name, _, _) in sorted(_ELEMENTS.items()))
_UNPACK_HEADER: Final = ELEMENT_HEADER.unpack_from
_UNPACK_US: Final = _US_VALUE.unpack_from


def encode_command(message: DimseMessage) -> bytes:
    """Encode a DIMSE message as its command set, PS3.7 section 6.3.1 and Annex E.

    Implicit VR Little Endian, Command Group Length first, elements in ascending tag order,
    fields that are None left out, even value lengths (UI padded with NUL, AE and LO with a
    space, as DCMTK does). Command Data Set Type is 0001H when `has_dataset`, else 0101H.
    Error Comment is cut to 64 characters. Raises LocalProtocolError for a value that cannot
    be encoded (an integer outside 0..65535, a UID over 64 or an AE title over 16 characters,
    text outside Latin-1) and TypeError for an object that is not a DIMSE message.
    """
    spec = _ENCODE_SPEC.get(type(message))
    if spec is None:
        raise TypeError(f"{type(message).__name__} is not a DIMSE message")
    parts: list[bytes] = []
    append = parts.append
    length = 0
    try:
        for element, name, vr in spec:
            value = getattr(message, name)
            if value is None:
                continue
            if vr == _US:
                chunk = _US_ELEMENT.pack(0, element, 2, value)
            elif vr == _DATASET_TYPE:
                chunk = _US_ELEMENT.pack(0, element, 2, DATASET_PRESENT if value else NO_DATASET)
            elif vr == _AT:
                raw = b"".join([_TAG_VALUE.pack(tag >> 16, tag & 0xFFFF) for tag in value])
                chunk = ELEMENT_HEADER.pack(0, element, len(raw)) + raw
            else:
                chunk = _encode_text(element, vr, value)
            append(chunk)
            length += len(chunk)
    except (struct.error, UnicodeEncodeError) as exc:
        raise LocalProtocolError(
            f"{type(message).__name__}.{name} = {value!r} cannot be encoded: {exc}"
        ) from exc
    return _UL_ELEMENT.pack(0, 0, 4, length) + b"".join(parts)


def _encode_text(element: int, vr: int, value: str) -> bytes:
    raw = value.encode("latin-1")
    maximum = _MAXIMUM_TEXT[vr]
    if len(raw) > maximum:
        if vr != _LO:
            raise LocalProtocolError(
                f"{_ELEMENTS[element][2]} {value!r} is longer than {maximum} characters"
            )
        raw = raw[:maximum]
    if len(raw) & 1:
        raw += _PADDING[vr]
    return ELEMENT_HEADER.pack(0, element, len(raw)) + raw


def decode_command(data: bytes) -> DimseMessage:
    """Decode one complete command set (the joined command fragments), PS3.7 6.3.1, Annex E.

    Every element header and length is checked against the bytes present, and a US value
    must be 2 bytes and a UID at most 64 (a longer one could not be echoed). Elements of group
    0000 that are not in PS3.7 Table E.1-1 (retired ones included) and elements that do not
    belong to the message type are ignored; Command Group Length is not trusted (the PDV
    framing already delimits the command set). Text values lose their padding (trailing NUL
    and spaces; AE titles also leading spaces). Raises CommandSetError (see its docstring for
    the status chosen) when the encoding is broken, Command Field is unknown or a mandatory
    element is missing.
    """
    values: dict[str, Any] = {}
    unpack_header = _UNPACK_HEADER
    unpack_us = _UNPACK_US
    decode_element = _DECODE_ELEMENT
    size = len(data)
    offset = 0
    previous = -1
    while offset < size:
        if size - offset < 8:
            raise _broken(values, f"element header truncated at offset {offset}")
        group, element, length = unpack_header(data, offset)
        start = offset + 8
        offset = start + length
        if group or element <= previous or length & 1 or offset > size:
            raise _broken(values, _describe_fault(group, element, length, previous))
        previous = element
        spec = decode_element.get(element)
        if spec is None:
            continue
        name, vr, shortest, longest = spec
        if not shortest <= length <= longest:
            raise _broken(
                values, f"{_VR_NAMES[vr]} element (0000,{element:04X}) has length {length}"
            )
        if vr == _US:
            values[name] = unpack_us(data, start)[0]
        elif vr in (_UI, _LO):
            values[name] = data[start:offset].decode("latin-1").rstrip("\0 ")
        elif vr == _DATASET_TYPE:
            values[name] = unpack_us(data, start)[0] != NO_DATASET
        elif vr == _AE:
            values[name] = data[start:offset].decode("latin-1").rstrip("\0").strip(" ")
        else:
            if length & 3:
                raise _broken(values, f"AT element (0000,{element:04X}) has length {length}")
            values[name] = tuple(
                (group << 16) | number
                for group, number in _TAG_VALUE.iter_unpack(data[start:offset])
            )
    return _build(values)


def _describe_fault(group: int, element: int, length: int, previous: int) -> str:
    tag = f"element ({group:04X},{element:04X})"
    if group:
        return f"{tag} is not in group 0000"
    if element <= previous:
        return f"{tag} out of ascending tag order"
    if length & 1:
        return f"{tag} has odd length {length}"
    return f"{tag} length {length} runs past the end"


def _build(values: dict[str, Any]) -> DimseMessage:
    command_field = values.pop("command_field", None)
    cls = MESSAGE_CLASS.get(command_field)
    if cls is None:
        values["command_field"] = command_field
        problem = "no Command Field" if command_field is None else "unknown Command Field"
        raise _error(values, f"{problem} (0000,0100) = {command_field!r}", 0x0211)
    names, required = _FIELD_NAMES[cls]
    if not required <= values.keys():
        values["command_field"] = command_field
        missing = tuple(
            ELEMENT_TAG[name] for name in _ELEMENTS_ORDER if name in required - values.keys()
        )
        listed = ", ".join(f"(0000,{tag:04X}) {_ELEMENTS[tag][2]}" for tag in missing)
        raise _error(
            values,
            f"{message_name(cls.COMMAND_FIELD)} lacks mandatory {listed}",
            0x0120,
            offending_element=missing,
        )
    if names >= values.keys():
        return cls(**values)
    return cls(**{name: value for name, value in values.items() if name in names})


def _error(
    values: dict[str, Any],
    message: str,
    status: int,
    offending_element: tuple[int, ...] = (),
) -> CommandSetError:
    return CommandSetError(
        f"command set: {message}",
        status,
        message_id=values.get("message_id"),
        command_field=values.get("command_field"),
        has_dataset=values.get("has_dataset"),
        offending_element=offending_element,
    )


def _broken(values: dict[str, Any], message: str) -> CommandSetError:
    return _error(values, message, Status.PROCESSING_FAILURE)
