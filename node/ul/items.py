# Variable items of the A-ASSOCIATE PDUs (PS3.8 section 9.3.2-9.3.4, PS3.7 Annex D).
#
# Rules: one frozen, slotted dataclass per item, named after the standard, used both for
# sending and receiving. `encode()` returns the item's bytes; `decode_*` functions read from a
# memoryview and check every length against the bytes present before slicing. Bad peer data
# raises RemoteProtocolError naming the A-ABORT reason. No I/O, no clock, stdlib only.
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from node.ul.errors import AbortReason, RemoteProtocolError

ITEM_HEADER: Final = struct.Struct(">BxH")
UINT16: Final = struct.Struct(">H")
UINT32: Final = struct.Struct(">I")
TWO_UINT16: Final = struct.Struct(">HH")

APPLICATION_CONTEXT_ITEM: Final = 0x10
PRESENTATION_CONTEXT_RQ_ITEM: Final = 0x20
PRESENTATION_CONTEXT_AC_ITEM: Final = 0x21
ABSTRACT_SYNTAX_SUB_ITEM: Final = 0x30
TRANSFER_SYNTAX_SUB_ITEM: Final = 0x40
USER_INFORMATION_ITEM: Final = 0x50
MAXIMUM_LENGTH_SUB_ITEM: Final = 0x51
IMPLEMENTATION_CLASS_UID_SUB_ITEM: Final = 0x52
ASYNCHRONOUS_OPERATIONS_WINDOW_SUB_ITEM: Final = 0x53
ROLE_SELECTION_SUB_ITEM: Final = 0x54
IMPLEMENTATION_VERSION_NAME_SUB_ITEM: Final = 0x55
SOP_CLASS_EXTENDED_SUB_ITEM: Final = 0x56
SOP_CLASS_COMMON_EXTENDED_SUB_ITEM: Final = 0x57
USER_IDENTITY_RQ_SUB_ITEM: Final = 0x58
USER_IDENTITY_AC_SUB_ITEM: Final = 0x59

DICOM_APPLICATION_CONTEXT: Final = "1.2.840.10008.3.1.1.1"


def _item(item_type: int, body: bytes, first_reserved: int = 0) -> bytes:
    """Frame `body` as an item: type, reserved (or version) byte, 16-bit length (PS3.8 9.3.2)."""
    if len(body) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} body of {len(body)} bytes exceeds 65535")
    return bytes((item_type, first_reserved)) + UINT16.pack(len(body)) + body


def _text(value: str) -> bytes:
    return value.encode("ascii")


def read_text(data: memoryview) -> str:
    """Decode an ISO 646 UID or name field; trailing NUL padding is tolerated and dropped."""
    return bytes(data).decode("latin-1").rstrip("\0")


def _u16_prefixed(value: bytes) -> bytes:
    return UINT16.pack(len(value)) + value


def _read_u16_prefixed(data: memoryview, offset: int, what: str) -> tuple[memoryview, int]:
    """Read a 16-bit length then that many bytes, checking both against what is present."""
    if offset + 2 > len(data):
        raise RemoteProtocolError(f"{what}: length field truncated")
    (length,) = UINT16.unpack_from(data, offset)
    end = offset + 2 + length
    if end > len(data):
        raise RemoteProtocolError(f"{what}: length {length} runs past the end of the item")
    return data[offset + 2 : end], end


def iter_items(data: memoryview, what: str) -> list[tuple[int, int, memoryview]]:
    """Split a run of items into (type, first reserved byte, body), checking each length."""
    items: list[tuple[int, int, memoryview]] = []
    offset = 0
    size = len(data)
    while offset < size:
        if offset + 4 > size:
            raise RemoteProtocolError(f"{what}: item header truncated at offset {offset}")
        item_type = data[offset]
        first_reserved = data[offset + 1]
        (length,) = UINT16.unpack_from(data, offset + 2)
        end = offset + 4 + length
        if end > size:
            raise RemoteProtocolError(
                f"{what}: item 0x{item_type:02X} length {length} runs past the end"
            )
        items.append((item_type, first_reserved, data[offset + 4 : end]))
        offset = end
    return items


# --- Application context (PS3.8 9.3.2.1) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class ApplicationContextItem:
    """Application Context Item (type 10H): the DICOM application context name."""

    name: str = DICOM_APPLICATION_CONTEXT

    def encode(self) -> bytes:
        return _item(APPLICATION_CONTEXT_ITEM, _text(self.name))


# --- Presentation contexts (PS3.8 9.3.2.2, 9.3.3.2) ---------------------------------------


@dataclass(frozen=True, slots=True)
class PresentationContextItemRQ:
    """Presentation Context Item (type 20H) with its Abstract (30H) and Transfer (40H) Syntax
    sub-items."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    #: The three reserved bytes after the ID, kept as received so a decoded item re-encodes
    #: byte for byte (DCMTK sends FFH in the second); not significant (PS3.8 Table 9-13).
    reserved: bytes = field(default=b"\0\0\0", compare=False, repr=False)

    def encode(self) -> bytes:
        parts = [
            bytes((self.context_id,)) + self.reserved,
            _item(ABSTRACT_SYNTAX_SUB_ITEM, _text(self.abstract_syntax)),
        ]
        parts.extend(_item(TRANSFER_SYNTAX_SUB_ITEM, _text(ts)) for ts in self.transfer_syntaxes)
        return _item(PRESENTATION_CONTEXT_RQ_ITEM, b"".join(parts))


class PresentationContextResult:
    """Result/Reason of a Presentation Context Item AC (PS3.8 Table 9-18)."""

    ACCEPTANCE: Final = 0
    USER_REJECTION: Final = 1
    NO_REASON: Final = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED: Final = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED: Final = 4


@dataclass(frozen=True, slots=True)
class PresentationContextItemAC:
    """Presentation Context Item (type 21H): result and the one transfer syntax chosen.

    `transfer_syntax` is None when the item carries no Transfer Syntax sub-item; when the
    result is not acceptance its value is not significant (PS3.8 9.3.3.2).
    """

    context_id: int
    result: int
    transfer_syntax: str | None

    def encode(self) -> bytes:
        body = bytes((self.context_id, 0, self.result, 0))
        if self.transfer_syntax is not None:
            body += _item(TRANSFER_SYNTAX_SUB_ITEM, _text(self.transfer_syntax))
        return _item(PRESENTATION_CONTEXT_AC_ITEM, body)


# --- User information sub-items (PS3.8 Annex D, PS3.7 Annex D) ----------------------------


@dataclass(frozen=True, slots=True)
class MaximumLengthSubItem:
    """Maximum Length sub-item (51H): the largest P-DATA-TF variable field we accept; 0 means
    no limit (PS3.8 D.1)."""

    maximum_length: int

    def encode(self) -> bytes:
        return _item(MAXIMUM_LENGTH_SUB_ITEM, UINT32.pack(self.maximum_length))


@dataclass(frozen=True, slots=True)
class ImplementationClassUIDSubItem:
    """Implementation Class UID sub-item (52H), PS3.7 D.3.3.2."""

    uid: str

    def encode(self) -> bytes:
        return _item(IMPLEMENTATION_CLASS_UID_SUB_ITEM, _text(self.uid))


@dataclass(frozen=True, slots=True)
class ImplementationVersionNameSubItem:
    """Implementation Version Name sub-item (55H), PS3.7 D.3.3.2: 1 to 16 characters."""

    name: str

    def encode(self) -> bytes:
        return _item(IMPLEMENTATION_VERSION_NAME_SUB_ITEM, _text(self.name))


@dataclass(frozen=True, slots=True)
class AsynchronousOperationsWindowSubItem:
    """Asynchronous Operations Window sub-item (53H), PS3.7 D.3.3.3; 0 means unlimited."""

    maximum_operations_invoked: int
    maximum_operations_performed: int

    def encode(self) -> bytes:
        return _item(
            ASYNCHRONOUS_OPERATIONS_WINDOW_SUB_ITEM,
            TWO_UINT16.pack(self.maximum_operations_invoked, self.maximum_operations_performed),
        )


@dataclass(frozen=True, slots=True)
class RoleSelectionSubItem:
    """SCP/SCU Role Selection sub-item (54H), PS3.7 D.3.3.4."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def encode(self) -> bytes:
        body = _u16_prefixed(_text(self.sop_class_uid)) + bytes((self.scu_role, self.scp_role))
        return _item(ROLE_SELECTION_SUB_ITEM, body)


@dataclass(frozen=True, slots=True)
class SOPClassExtendedNegotiationSubItem:
    """SOP Class Extended Negotiation sub-item (56H), PS3.7 D.3.3.5."""

    sop_class_uid: str
    service_class_application_information: bytes

    def encode(self) -> bytes:
        body = _u16_prefixed(_text(self.sop_class_uid)) + self.service_class_application_information
        return _item(SOP_CLASS_EXTENDED_SUB_ITEM, body)


@dataclass(frozen=True, slots=True)
class SOPClassCommonExtendedNegotiationSubItem:
    """SOP Class Common Extended Negotiation sub-item (57H), PS3.7 D.3.3.6, version 0."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()

    def encode(self) -> bytes:
        related = b"".join(_u16_prefixed(_text(uid)) for uid in self.related_general_sop_classes)
        body = (
            _u16_prefixed(_text(self.sop_class_uid))
            + _u16_prefixed(_text(self.service_class_uid))
            + _u16_prefixed(related)
        )
        return _item(SOP_CLASS_COMMON_EXTENDED_SUB_ITEM, body)


class UserIdentityType:
    """User-Identity-Type values (PS3.7 Table D.3-14)."""

    USERNAME: Final = 1
    USERNAME_AND_PASSCODE: Final = 2
    KERBEROS: Final = 3
    SAML: Final = 4
    JWT: Final = 5


@dataclass(frozen=True, slots=True)
class UserIdentityRQSubItem:
    """User Identity Negotiation sub-item, request form (58H), PS3.7 D.3.3.7.1."""

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""

    def encode(self) -> bytes:
        body = (
            bytes((self.identity_type, self.positive_response_requested))
            + _u16_prefixed(self.primary_field)
            + _u16_prefixed(self.secondary_field)
        )
        return _item(USER_IDENTITY_RQ_SUB_ITEM, body)

    def __repr__(self) -> str:  # never show credentials in logs
        return (
            f"UserIdentityRQSubItem(identity_type={self.identity_type}, "
            f"positive_response_requested={self.positive_response_requested}, "
            f"primary_field=<{len(self.primary_field)} bytes>, "
            f"secondary_field=<{len(self.secondary_field)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class UserIdentityACSubItem:
    """User Identity Negotiation sub-item, accept form (59H), PS3.7 D.3.3.7.2."""

    server_response: bytes

    def encode(self) -> bytes:
        return _item(USER_IDENTITY_AC_SUB_ITEM, _u16_prefixed(self.server_response))


@dataclass(frozen=True, slots=True)
class UnknownSubItem:
    """A user information sub-item we do not know; kept so it round-trips, otherwise ignored."""

    item_type: int
    data: bytes
    first_reserved: int = 0

    def encode(self) -> bytes:
        return _item(self.item_type, self.data, self.first_reserved)


UserInformationSubItem = (
    MaximumLengthSubItem
    | ImplementationClassUIDSubItem
    | ImplementationVersionNameSubItem
    | AsynchronousOperationsWindowSubItem
    | RoleSelectionSubItem
    | SOPClassExtendedNegotiationSubItem
    | SOPClassCommonExtendedNegotiationSubItem
    | UserIdentityRQSubItem
    | UserIdentityACSubItem
    | UnknownSubItem
)


@dataclass(frozen=True, slots=True)
class UserInformationItem:
    """User Information Item (50H): its sub-items in wire order (PS3.8 9.3.2.3)."""

    sub_items: tuple[UserInformationSubItem, ...] = ()

    def encode(self) -> bytes:
        return _item(USER_INFORMATION_ITEM, b"".join(sub.encode() for sub in self.sub_items))

    def _first(self, kind: type[object]) -> object | None:
        for sub in self.sub_items:
            if type(sub) is kind:
                return sub
        return None

    @property
    def maximum_length(self) -> int | None:
        sub = self._first(MaximumLengthSubItem)
        return sub.maximum_length if isinstance(sub, MaximumLengthSubItem) else None

    @property
    def implementation_class_uid(self) -> str | None:
        sub = self._first(ImplementationClassUIDSubItem)
        return sub.uid if isinstance(sub, ImplementationClassUIDSubItem) else None

    @property
    def implementation_version_name(self) -> str | None:
        sub = self._first(ImplementationVersionNameSubItem)
        return sub.name if isinstance(sub, ImplementationVersionNameSubItem) else None

    @property
    def asynchronous_operations_window(self) -> AsynchronousOperationsWindowSubItem | None:
        sub = self._first(AsynchronousOperationsWindowSubItem)
        return sub if isinstance(sub, AsynchronousOperationsWindowSubItem) else None

    @property
    def user_identity(self) -> UserIdentityRQSubItem | UserIdentityACSubItem | None:
        for sub in self.sub_items:
            if isinstance(sub, UserIdentityRQSubItem | UserIdentityACSubItem):
                return sub
        return None

    @property
    def role_selections(self) -> tuple[RoleSelectionSubItem, ...]:
        return tuple(s for s in self.sub_items if isinstance(s, RoleSelectionSubItem))

    @property
    def sop_class_extended(self) -> tuple[SOPClassExtendedNegotiationSubItem, ...]:
        return tuple(s for s in self.sub_items if isinstance(s, SOPClassExtendedNegotiationSubItem))

    @property
    def sop_class_common_extended(self) -> tuple[SOPClassCommonExtendedNegotiationSubItem, ...]:
        return tuple(
            s for s in self.sub_items if isinstance(s, SOPClassCommonExtendedNegotiationSubItem)
        )


# --- Decoding ------------------------------------------------------------------------------


def _expect_length(body: memoryview, size: int, what: str) -> None:
    if len(body) != size:
        raise RemoteProtocolError(f"{what}: length {len(body)}, expected {size}")


def _decode_role_selection(body: memoryview) -> RoleSelectionSubItem:
    uid, offset = _read_u16_prefixed(body, 0, "SCP/SCU role selection")
    _expect_length(body[offset:], 2, "SCP/SCU role selection roles")
    return RoleSelectionSubItem(read_text(uid), body[offset] != 0, body[offset + 1] != 0)


def _decode_sop_class_extended(body: memoryview) -> SOPClassExtendedNegotiationSubItem:
    uid, offset = _read_u16_prefixed(body, 0, "SOP class extended negotiation")
    return SOPClassExtendedNegotiationSubItem(read_text(uid), bytes(body[offset:]))


def _decode_sop_class_common_extended(
    body: memoryview,
) -> SOPClassCommonExtendedNegotiationSubItem:
    what = "SOP class common extended negotiation"
    sop_class, offset = _read_u16_prefixed(body, 0, what)
    service_class, offset = _read_u16_prefixed(body, offset, what)
    related_block, offset = _read_u16_prefixed(body, offset, what)
    if offset != len(body):
        raise RemoteProtocolError(f"{what}: {len(body) - offset} trailing bytes")
    related: list[str] = []
    position = 0
    while position < len(related_block):
        uid, position = _read_u16_prefixed(related_block, position, what)
        related.append(read_text(uid))
    return SOPClassCommonExtendedNegotiationSubItem(
        read_text(sop_class), read_text(service_class), tuple(related)
    )


def _decode_user_identity_rq(body: memoryview) -> UserIdentityRQSubItem:
    what = "user identity negotiation"
    if len(body) < 2:
        raise RemoteProtocolError(f"{what}: item too short")
    primary, offset = _read_u16_prefixed(body, 2, what)
    secondary, offset = _read_u16_prefixed(body, offset, what)
    if offset != len(body):
        raise RemoteProtocolError(f"{what}: {len(body) - offset} trailing bytes")
    return UserIdentityRQSubItem(body[0], body[1] != 0, bytes(primary), bytes(secondary))


def _decode_user_identity_ac(body: memoryview) -> UserIdentityACSubItem:
    response, offset = _read_u16_prefixed(body, 0, "user identity response")
    if offset != len(body):
        raise RemoteProtocolError(f"user identity response: {len(body) - offset} trailing bytes")
    return UserIdentityACSubItem(bytes(response))


def decode_user_information(body: memoryview) -> UserInformationItem:
    """Decode the sub-items of a User Information Item (PS3.8 9.3.2.3, PS3.7 Annex D)."""
    subs: list[UserInformationSubItem] = []
    for item_type, first_reserved, sub in iter_items(body, "user information"):
        if item_type == MAXIMUM_LENGTH_SUB_ITEM:
            _expect_length(sub, 4, "maximum length sub-item")
            subs.append(MaximumLengthSubItem(UINT32.unpack_from(sub)[0]))
        elif item_type == IMPLEMENTATION_CLASS_UID_SUB_ITEM:
            subs.append(ImplementationClassUIDSubItem(read_text(sub)))
        elif item_type == IMPLEMENTATION_VERSION_NAME_SUB_ITEM:
            subs.append(ImplementationVersionNameSubItem(read_text(sub)))
        elif item_type == ASYNCHRONOUS_OPERATIONS_WINDOW_SUB_ITEM:
            _expect_length(sub, 4, "asynchronous operations window sub-item")
            subs.append(AsynchronousOperationsWindowSubItem(*TWO_UINT16.unpack_from(sub)))
        elif item_type == ROLE_SELECTION_SUB_ITEM:
            subs.append(_decode_role_selection(sub))
        elif item_type == SOP_CLASS_EXTENDED_SUB_ITEM:
            subs.append(_decode_sop_class_extended(sub))
        elif item_type == SOP_CLASS_COMMON_EXTENDED_SUB_ITEM:
            subs.append(_decode_sop_class_common_extended(sub))
        elif item_type == USER_IDENTITY_RQ_SUB_ITEM:
            subs.append(_decode_user_identity_rq(sub))
        elif item_type == USER_IDENTITY_AC_SUB_ITEM:
            subs.append(_decode_user_identity_ac(sub))
        else:
            subs.append(UnknownSubItem(item_type, bytes(sub), first_reserved))
    return UserInformationItem(tuple(subs))


def decode_presentation_context_rq(body: memoryview) -> PresentationContextItemRQ:
    """Decode a Presentation Context Item RQ body (PS3.8 9.3.2.2)."""
    if len(body) < 4:
        raise RemoteProtocolError("presentation context item too short")
    context_id = body[0]
    abstract: str | None = None
    transfer: list[str] = []
    for item_type, _reserved, sub in iter_items(body[4:], "presentation context"):
        if item_type == ABSTRACT_SYNTAX_SUB_ITEM:
            if abstract is not None:
                raise RemoteProtocolError(
                    f"presentation context {context_id}: two abstract syntaxes",
                    AbortReason.UNEXPECTED_PDU_PARAMETER,
                )
            abstract = read_text(sub)
        elif item_type == TRANSFER_SYNTAX_SUB_ITEM:
            transfer.append(read_text(sub))
        else:
            raise RemoteProtocolError(
                f"presentation context {context_id}: unexpected sub-item 0x{item_type:02X}",
                AbortReason.UNRECOGNIZED_PDU_PARAMETER,
            )
    if abstract is None or not transfer:
        raise RemoteProtocolError(
            f"presentation context {context_id}: needs one abstract and 1+ transfer syntaxes"
        )
    return PresentationContextItemRQ(context_id, abstract, tuple(transfer), bytes(body[1:4]))


def decode_presentation_context_ac(body: memoryview) -> PresentationContextItemAC:
    """Decode a Presentation Context Item AC body (PS3.8 9.3.3.2)."""
    if len(body) < 4:
        raise RemoteProtocolError("presentation context item too short")
    transfer: str | None = None
    for item_type, _reserved, sub in iter_items(body[4:], "presentation context"):
        if item_type != TRANSFER_SYNTAX_SUB_ITEM or transfer is not None:
            raise RemoteProtocolError(
                f"presentation context {body[0]}: unexpected sub-item 0x{item_type:02X}",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        transfer = read_text(sub)
    return PresentationContextItemAC(body[0], body[2], transfer)
