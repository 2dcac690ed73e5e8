# A fast scanner for the top of a data set: the raw values of a few top-level attributes.
#
# Rules: this is the per-object hot path of ingestion (index record, path parts), so it walks
# elements with struct over a memoryview instead of building pydicom objects (PS3.5 7.1).
# Little endian only (implicit or explicit VR); sequences of undefined length are skipped item
# by item. Anything it does not handle simply (big endian, deflate, an unsupported character
# set, a length that runs past the data) returns None and the caller falls back to pydicom.
from __future__ import annotations

import struct
from typing import Final

_UINT32: Final = struct.Struct("<I")
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
)
#: Tag, VR and 16-bit length of an explicit VR element; tag and 32-bit length of an implicit
#: one: one unpack per element.
_EXPLICIT_HEAD: Final = struct.Struct("<HH2sH")
_IMPLICIT_HEAD: Final = struct.Struct("<HHI")
UNDEFINED: Final = 0xFFFFFFFF
ITEM: Final = 0xFFFEE000
ITEM_END: Final = 0xFFFEE00D
SEQUENCE_END: Final = 0xFFFEE0DD
SPECIFIC_CHARACTER_SET: Final = 0x00080005
#: Character sets whose text this scanner decodes itself (PS3.3 C.12.1.1.2).
ENCODINGS: Final = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}


class _UnsupportedError(Exception):
    """The data set needs the full parser."""


def _element(data: memoryview, offset: int, explicit: bool) -> tuple[int, int, int]:
    """(tag, value offset, value length) of the element at `offset` (one unpack of its head:
    this runs once per element of every stored object)."""
    size = len(data)
    if offset + 8 > size:
        raise _UnsupportedError
    if not explicit:
        group, number, length = _IMPLICIT_HEAD.unpack_from(data, offset)
        return (group << 16) | number, offset + 8, length
    group, number, vr, length = _EXPLICIT_HEAD.unpack_from(data, offset)
    tag = (group << 16) | number
    if group == 0xFFFE:  # item and delimiters: always 4-byte length, no VR
        return tag, offset + 8, _UINT32.unpack_from(data, offset + 4)[0]
    if vr in _LONG_VRS:
        if offset + 12 > size:
            raise _UnsupportedError
        return tag, offset + 12, _UINT32.unpack_from(data, offset + 8)[0]
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _UnsupportedError  # not explicit VR after all: let pydicom work it out
    return tag, offset + 8, length


def _skip_undefined(data: memoryview, offset: int, explicit: bool, end_tag: int) -> int:
    """Offset just past the delimiter `end_tag` of an undefined-length value at `offset`."""
    while True:
        tag, start, length = _element(data, offset, explicit)
        if tag == end_tag:
            return start
        if tag == ITEM and length == UNDEFINED:
            offset = _skip_undefined(data, start, explicit, ITEM_END)
        elif length == UNDEFINED:
            offset = _skip_undefined(data, start, explicit, SEQUENCE_END)
        else:
            offset = start + length
            if offset > len(data):
                raise _UnsupportedError


def scan(
    data: bytes | memoryview, explicit: bool, wanted: frozenset[int], last: int
) -> dict[int, bytes] | None:
    """Raw values of the `wanted` top-level tags, reading no element past tag `last`; None
    when the data set needs pydicom (see the module comment)."""
    view = memoryview(data)
    size = len(view)
    found: dict[int, bytes] = {}
    offset = 0
    previous = -1
    try:
        while offset < size:
            tag, start, length = _element(view, offset, explicit)
            if tag <= previous:
                return None  # out of order: not a data set we can trust this scan with
            previous = tag
            if tag > last:
                break
            if length == UNDEFINED:
                offset = _skip_undefined(view, start, explicit, SEQUENCE_END)
                continue
            end = start + length
            if end > size:
                return None
            if tag in wanted or tag == SPECIFIC_CHARACTER_SET:
                found[tag] = bytes(view[start:end])
            offset = end
    except _UnsupportedError:
        return None
    return found


def texts(found: dict[int, bytes], tags: dict[int, str]) -> dict[str, str] | None:
    """Decode raw values to text (multiple values joined by a backslash, padding stripped);
    None when the character set is one this scanner does not decode."""
    charset = found.get(SPECIFIC_CHARACTER_SET, b"").decode("latin-1").strip(" \0")
    encoding = ENCODINGS.get(charset)
    if encoding is None:
        return None
    result: dict[str, str] = {}
    for tag, keyword in tags.items():
        raw = found.get(tag)
        if raw is None:
            result[keyword] = ""
            continue
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            return None
        result[keyword] = "\\".join(part.strip(" \0") for part in text.split("\\"))
    return result
