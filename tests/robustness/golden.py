# Building blocks for the malformed-input battery, cut from the PDUs captured from DCMTK
# (tests/fixtures/dcmtk): raw items, command set elements and P-DATA framing, with no
# validation at all, so that any byte can be made wrong on purpose.
#
# Rules: everything here is bytes in, bytes out, built by hand (not with node.ul's encoders,
# which refuse to write invalid PDUs). The base association proposes Verification (context 1,
# from echoscu), CT Image Storage (context 3, from storescu) and Study Root FIND (context 5,
# from findscu), so one association carries every DIMSE case.
from __future__ import annotations

import struct
from typing import Final

from node.ul.items import iter_items
from node.ul.pdu import decode_pdu
from tests.fixtures import dcmtk_pdus
from tests.robustness.wire import PROBE_MESSAGE_ID

GOLDEN: Final = dcmtk_pdus()
ECHO_RQ: Final = GOLDEN["echoscu_associate_rq"]
ECHO_PDATA: Final = GOLDEN["echoscu_p_data_tf_1"]
RELEASE_RQ: Final = GOLDEN["echoscu_release_rq"]
ABORT: Final = GOLDEN["storescp-abort_abort"]
ASSOCIATE_AC: Final = GOLDEN["storescp_associate_ac"]
ASSOCIATE_RJ: Final = GOLDEN["storescp-refuse_associate_rj"]
RELEASE_RP: Final = GOLDEN["storescp_release_rp"]

VERIFICATION_UID: Final = b"1.2.840.10008.1.1"
IMPLICIT: Final = b"1.2.840.10008.1.2"
#: The server's --max-pdu in the battery: its Maximum Length for P-DATA-TF (PS3.8 D.1).
MAXIMUM_PDU: Final = 16382
FIXED_LENGTH: Final = 68  # protocol version .. reserved (PS3.8 Table 9-11, items 7-10)
VERIFICATION_CONTEXT: Final = 1
STORAGE_CONTEXT: Final = 3
FIND_CONTEXT: Final = 5

_ELEMENT: Final = struct.Struct("<HHI")


# --- framing ------------------------------------------------------------------------------


def frame_pdu(pdu_type: int, body: bytes, *, reserved: int = 0, length: int | None = None) -> bytes:
    """A PDU: type, reserved byte, 32-bit length (the true one unless `length` is given)."""
    size = len(body) if length is None else length
    return bytes((pdu_type, reserved)) + struct.pack(">I", size) + body


def frame_item(item_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """An item or sub-item: type, reserved byte, 16-bit length, body (PS3.8 9.3.2)."""
    size = len(body) if length is None else length
    return bytes((item_type, 0)) + struct.pack(">H", size) + body


def pdv(
    context_id: int, data: bytes, *, command: bool, last: bool, length: int | None = None
) -> bytes:
    """One Presentation Data Value item (PS3.8 9.3.5.1): length, context ID, control header."""
    size = len(data) + 2 if length is None else length
    return struct.pack(">IBB", size, context_id, int(command) | int(last) << 1) + data


def pdata(context_id: int, data: bytes, *, command: bool = True, last: bool = True) -> bytes:
    """A P-DATA-TF PDU carrying `data` in one PDV."""
    return frame_pdu(0x04, pdv(context_id, data, command=command, last=last))


def body_of(pdu: bytes) -> bytes:
    return pdu[6:]


# --- A-ASSOCIATE-RQ items -------------------------------------------------------------------


def items_of(associate: bytes) -> tuple[bytes, list[bytes]]:
    """The fixed fields and the whole variable items (header included) of an A-ASSOCIATE PDU."""
    body = body_of(associate)
    items = [
        frame_item(item_type, bytes(item))
        for item_type, _reserved, item in iter_items(memoryview(body)[FIXED_LENGTH:], "golden")
    ]
    return body[:FIXED_LENGTH], items


def build_associate(fixed: bytes, items: list[bytes], pdu_type: int = 0x01) -> bytes:
    return frame_pdu(pdu_type, fixed + b"".join(items))


def with_context_id(item: bytes, context_id: int) -> bytes:
    """A Presentation Context Item with another ID (byte 5, PS3.8 Table 9-13)."""
    return item[:4] + bytes((context_id,)) + item[5:]


def sub_items_of(item: bytes, skip: int) -> list[bytes]:
    """The sub-items of an item whose body starts with `skip` bytes of fixed fields."""
    return [
        frame_item(sub_type, bytes(sub))
        for sub_type, _reserved, sub in iter_items(memoryview(item)[4 + skip :], "golden")
    ]


def rebuild_item(item: bytes, skip: int, sub_items: list[bytes]) -> bytes:
    return frame_item(item[0], item[4 : 4 + skip] + b"".join(sub_items))


def fixed_fields(*, version: int = 1, called: bytes, calling: bytes) -> bytes:
    """Protocol version, reserved, called and calling AE title (16 bytes each), reserved."""
    return struct.pack(">HH16s16s32x", version, 0, called, calling)


ECHO_FIXED, ECHO_ITEMS = items_of(ECHO_RQ)
APPLICATION_ITEM, VERIFICATION_ITEM, USER_ITEM = ECHO_ITEMS
STORAGE_ITEM = with_context_id(items_of(GOLDEN["storescu-user_associate_rq"])[1][1], 3)
FIND_ITEM = with_context_id(items_of(GOLDEN["findscu_associate_rq"])[1][1], 5)
#: The base association of every post-association case: contexts 1, 3 and 5.
BASE_RQ: Final = build_associate(
    ECHO_FIXED, [APPLICATION_ITEM, VERIFICATION_ITEM, STORAGE_ITEM, FIND_ITEM, USER_ITEM]
)
#: One unsupported abstract syntax on context 7: accepted association, rejected context.
UNSUPPORTED_ITEM = frame_item(
    0x20,
    bytes((7, 0, 0, 0))
    + frame_item(0x30, b"1.2.3.4.5.6.7.8.9.0")
    + frame_item(0x40, b"1.2.840.10008.1.2"),
)


def rq_with(items: list[bytes], fixed: bytes = ECHO_FIXED) -> bytes:
    return build_associate(fixed, items)


# --- command sets (PS3.7 Annex E, Implicit VR Little Endian) ---------------------------------


def command_of(pdata_pdu: bytes) -> bytes:
    """The PDV data of a one-PDV golden P-DATA-TF."""
    decoded = decode_pdu(pdata_pdu)
    return decoded.items[0].data  # type: ignore[union-attr]


ECHO_COMMAND: Final = command_of(ECHO_PDATA)
STORE_COMMAND: Final = command_of(GOLDEN["storescu-user_p_data_tf_1"])
STORE_DATASET: Final = command_of(GOLDEN["storescu-user_p_data_tf_2"])
FIND_COMMAND: Final = command_of(GOLDEN["findscu_p_data_tf_1"])
FIND_IDENTIFIER: Final = command_of(GOLDEN["findscu_p_data_tf_2"])

Elements = list[tuple[int, bytes]]


def elements(command: bytes) -> Elements:
    """(element number, value) of each element after Command Group Length (0000,0000)."""
    found: Elements = []
    offset = 0
    while offset < len(command):
        _group, element, length = _ELEMENT.unpack_from(command, offset)
        value = command[offset + 8 : offset + 8 + length]
        offset += 8 + length
        if element:
            found.append((element, value))
    return found


def command_set(items: Elements, *, group_length: int | None = None) -> bytes:
    """Encode elements of group 0000 in the given order, Command Group Length first."""
    body = b"".join(_ELEMENT.pack(0, element, len(value)) + value for element, value in items)
    length = len(body) if group_length is None else group_length
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<I", length) + body


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def without(items: Elements, element: int) -> Elements:
    return [(number, value) for number, value in items if number != element]


def replaced(items: Elements, element: int, value: bytes) -> Elements:
    return [(number, value if number == element else old) for number, old in items]


def with_element(items: Elements, element: int, value: bytes) -> Elements:
    return sorted([*without(items, element), (element, value)])


PROBE_COMMAND: Final = command_set(replaced(elements(ECHO_COMMAND), 0x0110, us(PROBE_MESSAGE_ID)))
#: The probe C-ECHO-RQ on the Verification context.
PROBE: Final = pdata(VERIFICATION_CONTEXT, PROBE_COMMAND)
ECHO_ELEMENTS: Final = elements(ECHO_COMMAND)
STORE_ELEMENTS: Final = elements(STORE_COMMAND)
FIND_ELEMENTS: Final = elements(FIND_COMMAND)
