# The seven Upper Layer PDUs (PS3.8 section 9.3) and their codec.
#
# Rules: one frozen, slotted dataclass per PDU, used for both directions. `encode()` builds the
# wire bytes; `decode_pdu()` takes one complete PDU. `pdu_length()` reads a 6-byte header and
# refuses, before anything is allocated, a PDU larger than the configured maximum. Every length
# is checked against the bytes present; bad peer data raises RemoteProtocolError with the
# A-ABORT reason to send (PS3.8 Table 9-26). No I/O, no clock, stdlib only.
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from node.ul.errors import AbortReason, AbortSource, RemoteProtocolError
from node.ul.items import (
    APPLICATION_CONTEXT_ITEM,
    PRESENTATION_CONTEXT_AC_ITEM,
    PRESENTATION_CONTEXT_RQ_ITEM,
    USER_INFORMATION_ITEM,
    ApplicationContextItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    UserInformationItem,
    decode_presentation_context_ac,
    decode_presentation_context_rq,
    decode_user_information,
    iter_items,
    read_text,
)

PDU_HEADER: Final = struct.Struct(">BxI")
PDV_HEADER: Final = struct.Struct(">IBB")
ASSOCIATE_FIXED: Final = struct.Struct(">HH16s16s32x")
FOUR_BYTES: Final = struct.Struct(">xBBB")

A_ASSOCIATE_RQ: Final = 0x01
A_ASSOCIATE_AC: Final = 0x02
A_ASSOCIATE_RJ: Final = 0x03
P_DATA_TF: Final = 0x04
A_RELEASE_RQ: Final = 0x05
A_RELEASE_RP: Final = 0x06
A_ABORT: Final = 0x07

#: Largest A-ASSOCIATE PDU we accept: 128 contexts with many transfer syntaxes fit easily.
MAXIMUM_ASSOCIATE_PDU_LENGTH: Final = 1 << 20
#: Ceiling for a P-DATA-TF when the negotiated maximum is 0 (unlimited): never allocate more.
UNLIMITED_PDU_CEILING: Final = 64 << 20
HEADER_LENGTH: Final = 6


def _ae_title(value: str) -> bytes:
    """Encode an AE title as 16 ASCII bytes, space padded (PS3.8 9.3.2)."""
    raw = value.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"AE title {value!r} is longer than 16 characters")
    return raw.ljust(16, b" ")


@dataclass(frozen=True, slots=True)
class AssociateRQ:
    """A-ASSOCIATE-RQ PDU (type 01H), PS3.8 9.3.2."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextItemRQ, ...]
    user_information: UserInformationItem = field(default_factory=UserInformationItem)
    application_context: ApplicationContextItem = field(default_factory=ApplicationContextItem)
    protocol_version: int = 1

    def encode(self) -> bytes:
        return _encode_associate(A_ASSOCIATE_RQ, self)


@dataclass(frozen=True, slots=True)
class AssociateAC:
    """A-ASSOCIATE-AC PDU (type 02H), PS3.8 9.3.3. The AE title fields echo the request."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextItemAC, ...]
    user_information: UserInformationItem = field(default_factory=UserInformationItem)
    application_context: ApplicationContextItem = field(default_factory=ApplicationContextItem)
    protocol_version: int = 1

    def encode(self) -> bytes:
        return _encode_associate(A_ASSOCIATE_AC, self)


def _encode_associate(pdu_type: int, pdu: AssociateRQ | AssociateAC) -> bytes:
    parts = [
        ASSOCIATE_FIXED.pack(
            pdu.protocol_version,
            0,
            _ae_title(pdu.called_ae_title),
            _ae_title(pdu.calling_ae_title),
        ),
        pdu.application_context.encode(),
    ]
    parts.extend(context.encode() for context in pdu.presentation_contexts)
    parts.append(pdu.user_information.encode())
    body = b"".join(parts)
    return PDU_HEADER.pack(pdu_type, len(body)) + body


class RejectResult:
    """A-ASSOCIATE-RJ result (PS3.8 Table 9-21)."""

    PERMANENT: Final = 1
    TRANSIENT: Final = 2


class RejectSource:
    """A-ASSOCIATE-RJ source (PS3.8 Table 9-21)."""

    SERVICE_USER: Final = 1
    SERVICE_PROVIDER_ACSE: Final = 2
    SERVICE_PROVIDER_PRESENTATION: Final = 3


class RejectReason:
    """A-ASSOCIATE-RJ reason/diag (PS3.8 Table 9-21), by source."""

    NO_REASON: Final = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED: Final = 2
    CALLING_AE_NOT_RECOGNIZED: Final = 3
    CALLED_AE_NOT_RECOGNIZED: Final = 7
    # source = service-provider (ACSE)
    PROTOCOL_VERSION_NOT_SUPPORTED: Final = 2
    # source = service-provider (presentation)
    TEMPORARY_CONGESTION: Final = 1
    LOCAL_LIMIT_EXCEEDED: Final = 2


@dataclass(frozen=True, slots=True)
class AssociateRJ:
    """A-ASSOCIATE-RJ PDU (type 03H), PS3.8 9.3.4."""

    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        return PDU_HEADER.pack(A_ASSOCIATE_RJ, 4) + bytes(
            (0, self.result, self.source, self.reason)
        )


@dataclass(frozen=True, slots=True)
class PresentationDataValueItem:
    """One PDV (PS3.8 9.3.5.1 and Annex E): a fragment of a command or data set."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes

    @property
    def message_control_header(self) -> int:
        return int(self.is_command) | (int(self.is_last) << 1)


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF PDU (type 04H): one or more PDVs, PS3.8 9.3.5."""

    items: tuple[PresentationDataValueItem, ...]

    def encode(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        for pdv in self.items:
            parts.append(
                PDV_HEADER.pack(len(pdv.data) + 2, pdv.context_id, pdv.message_control_header)
            )
            parts.append(pdv.data)
            total += len(pdv.data) + 6
        return PDU_HEADER.pack(P_DATA_TF, total) + b"".join(parts)


@dataclass(frozen=True, slots=True)
class ReleaseRQ:
    """A-RELEASE-RQ PDU (type 05H), PS3.8 9.3.6."""

    def encode(self) -> bytes:
        return _RELEASE_RQ_BYTES


@dataclass(frozen=True, slots=True)
class ReleaseRP:
    """A-RELEASE-RP PDU (type 06H), PS3.8 9.3.7."""

    def encode(self) -> bytes:
        return _RELEASE_RP_BYTES


@dataclass(frozen=True, slots=True)
class Abort:
    """A-ABORT PDU (type 07H), PS3.8 9.3.8; source and reason per Table 9-26."""

    source: int = AbortSource.SERVICE_USER
    reason: int = AbortReason.NOT_SPECIFIED

    def encode(self) -> bytes:
        return PDU_HEADER.pack(A_ABORT, 4) + bytes((0, 0, self.source, self.reason))


_RELEASE_RQ_BYTES: Final = PDU_HEADER.pack(A_RELEASE_RQ, 4) + bytes(4)
_RELEASE_RP_BYTES: Final = PDU_HEADER.pack(A_RELEASE_RP, 4) + bytes(4)

PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | Abort


def pdu_length(header: bytes | bytearray | memoryview, maximum_pdata_length: int) -> int:
    """Validate a 6-byte PDU header and return the length of the PDU body that follows.

    A P-DATA-TF longer than `maximum_pdata_length` (our Maximum Length, 0 = unlimited up to a
    fixed ceiling) and an A-ASSOCIATE PDU over 1 MiB are refused here, from the header alone,
    before any buffer is sized for them (PS3.8 9.3.1, D.1).
    """
    pdu_type, length = PDU_HEADER.unpack_from(header)
    if pdu_type == P_DATA_TF:
        limit = maximum_pdata_length or UNLIMITED_PDU_CEILING
        if length > limit:
            raise RemoteProtocolError(
                f"P-DATA-TF of {length} bytes exceeds the maximum length {limit}",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
    elif pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
        if length > MAXIMUM_ASSOCIATE_PDU_LENGTH:
            raise RemoteProtocolError(
                f"A-ASSOCIATE PDU of {length} bytes exceeds {MAXIMUM_ASSOCIATE_PDU_LENGTH}",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
    elif pdu_type in (A_ASSOCIATE_RJ, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT):
        if length != 4:
            raise RemoteProtocolError(
                f"PDU type 0x{pdu_type:02X} with length {length}, expected 4",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
    else:
        raise RemoteProtocolError(
            f"unrecognized PDU type 0x{pdu_type:02X}", AbortReason.UNRECOGNIZED_PDU
        )
    return int(length)


def decode_pdu(data: bytes, maximum_pdata_length: int = 0) -> PDU:
    """Decode one complete PDU (header included), PS3.8 9.3.

    Raises RemoteProtocolError when `data` is not exactly one well-formed PDU.
    """
    if len(data) < HEADER_LENGTH:
        raise RemoteProtocolError("PDU header truncated")
    length = pdu_length(data, maximum_pdata_length)
    if len(data) != HEADER_LENGTH + length:
        raise RemoteProtocolError(
            f"PDU length field says {length} bytes, {len(data) - HEADER_LENGTH} present"
        )
    pdu_type = data[0]
    if pdu_type == P_DATA_TF:
        return decode_pdata(data)
    body = memoryview(data)[HEADER_LENGTH:]
    if pdu_type == A_ASSOCIATE_RQ:
        return _decode_associate_rq(body)
    if pdu_type == A_ASSOCIATE_AC:
        return _decode_associate_ac(body)
    if pdu_type == A_RELEASE_RQ:
        return ReleaseRQ()
    if pdu_type == A_RELEASE_RP:
        return ReleaseRP()
    second, third, fourth = FOUR_BYTES.unpack_from(body)
    if pdu_type == A_ASSOCIATE_RJ:
        return AssociateRJ(second, third, fourth)
    return Abort(third, fourth)


def decode_pdata(data: bytes) -> PDataTF:
    """Decode a complete P-DATA-TF PDU into its PDVs (PS3.8 9.3.5), checking every PDV length."""
    return decode_pdata_from(memoryview(data), 0, len(data))


_new = object.__new__
_set_context_id = PresentationDataValueItem.__dict__["context_id"].__set__
_set_is_command = PresentationDataValueItem.__dict__["is_command"].__set__
_set_is_last = PresentationDataValueItem.__dict__["is_last"].__set__
_set_data = PresentationDataValueItem.__dict__["data"].__set__
_set_items = PDataTF.__dict__["items"].__set__


def _pdv(context_id: int, control: int, data: bytes) -> PresentationDataValueItem:
    """Build a (frozen) PDV without the dataclass __init__: this is per PDU on the hot path."""
    item: PresentationDataValueItem = _new(PresentationDataValueItem)
    _set_context_id(item, context_id)
    _set_is_command(item, bool(control & 1))
    _set_is_last(item, bool(control & 2))
    _set_data(item, data)
    return item


def decode_pdata_from(view: memoryview, start: int, end: int) -> PDataTF:
    """Decode the P-DATA-TF PDU at view[start:end] (header included), copying each PDV's
    fragment once, straight out of `view` (PS3.8 9.3.5)."""
    items: list[PresentationDataValueItem] = []
    offset = start + HEADER_LENGTH
    if offset == end:
        raise RemoteProtocolError("P-DATA-TF without any presentation data value item")
    unpack = PDV_HEADER.unpack_from
    while offset < end:
        if offset + 6 > end:
            raise RemoteProtocolError("P-DATA-TF: PDV item header truncated")
        length, context_id, control = unpack(view, offset)
        if length < 2:
            raise RemoteProtocolError(f"P-DATA-TF: PDV item length {length} is below 2")
        item_end = offset + 4 + length
        if item_end > end:
            raise RemoteProtocolError(f"P-DATA-TF: PDV item length {length} runs past the PDU")
        items.append(_pdv(context_id, control, bytes(view[offset + 6 : item_end])))
        offset = item_end
    pdata: PDataTF = _new(PDataTF)
    _set_items(pdata, tuple(items))
    return pdata


def _decode_associate_fixed(body: memoryview) -> tuple[int, str, str]:
    if len(body) < ASSOCIATE_FIXED.size:
        raise RemoteProtocolError("A-ASSOCIATE PDU shorter than its fixed fields")
    # A version without bit 0 is decoded, not refused: the acceptor answers it with
    # A-ASSOCIATE-RJ "protocol version not supported" (PS3.8 9.3.2, Table 9-21).
    version, _reserved, called, calling = ASSOCIATE_FIXED.unpack_from(body)
    return version, called.decode("latin-1").rstrip(" "), calling.decode("latin-1").rstrip(" ")


def _split_associate_items(
    body: memoryview, context_type: int
) -> tuple[ApplicationContextItem, list[memoryview], UserInformationItem]:
    """Read the variable items in PS3.8 order: one application context, presentation
    contexts, then one user information item."""
    application: ApplicationContextItem | None = None
    contexts: list[memoryview] = []
    user: UserInformationItem | None = None
    for item_type, _reserved, item in iter_items(body[ASSOCIATE_FIXED.size :], "A-ASSOCIATE"):
        if item_type == APPLICATION_CONTEXT_ITEM and application is None and not contexts:
            application = ApplicationContextItem(read_text(item))
        elif item_type == context_type and application is not None and user is None:
            contexts.append(item)
        elif item_type == USER_INFORMATION_ITEM and application is not None and user is None:
            user = decode_user_information(item)
        elif item_type in (APPLICATION_CONTEXT_ITEM, context_type, USER_INFORMATION_ITEM):
            raise RemoteProtocolError(
                f"A-ASSOCIATE: item 0x{item_type:02X} out of order or repeated",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        else:
            raise RemoteProtocolError(
                f"A-ASSOCIATE: unrecognized item 0x{item_type:02X}",
                AbortReason.UNRECOGNIZED_PDU_PARAMETER,
            )
    if application is None:
        raise RemoteProtocolError("A-ASSOCIATE: no application context item")
    if user is None:
        raise RemoteProtocolError("A-ASSOCIATE: no user information item")
    return application, contexts, user


def _decode_associate_rq(body: memoryview) -> AssociateRQ:
    version, called, calling = _decode_associate_fixed(body)
    application, raw, user = _split_associate_items(body, PRESENTATION_CONTEXT_RQ_ITEM)
    contexts = tuple(decode_presentation_context_rq(item) for item in raw)
    return AssociateRQ(called, calling, contexts, user, application, version)


def _decode_associate_ac(body: memoryview) -> AssociateAC:
    version, called, calling = _decode_associate_fixed(body)
    application, raw, user = _split_associate_items(body, PRESENTATION_CONTEXT_AC_ITEM)
    contexts = tuple(decode_presentation_context_ac(item) for item in raw)
    return AssociateAC(called, calling, contexts, user, application, version)
