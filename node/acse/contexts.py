# Presentation contexts as the user configures them, their negotiated outcome, and the
# validators for the names that go into an A-ASSOCIATE (PS3.5 9.1 UIDs, PS3.5 6.2 AE titles).
#
# Rules: frozen, slotted dataclasses; configuration errors raise ValueError at construction,
# with a message naming the bad value. Stdlib only, no I/O, no clock.
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

from node.ul.items import DICOM_APPLICATION_CONTEXT, PresentationContextResult

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_TRANSFER_SYNTAXES",
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "DICOM_APPLICATION_CONTEXT",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "MAXIMUM_UINT16",
    "MAXIMUM_UINT32",
    "VERIFICATION_SOP_CLASS",
    "NegotiatedContext",
    "PresentationContext",
    "check_range",
    "is_valid_uid",
    "validate_ae_title",
    "validate_implementation_version_name",
    "validate_uid",
]

VERIFICATION_SOP_CLASS: Final = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"

#: The transfer syntaxes a context offers when none are given, in order of preference
#: (the same four, in the same order, as pynetdicom's default).
DEFAULT_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)

MAXIMUM_UINT16: Final = 0xFFFF
MAXIMUM_UINT32: Final = 0xFFFFFFFF

_UID: Final = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_AE_TITLE_CHARACTERS: Final = re.compile(r"[\x20-\x5b\x5d-\x7e]*")


def is_valid_uid(value: str) -> bool:
    """True when `value` is a UID as PS3.5 section 9.1 defines it.

    1 to 64 characters; components of digits separated by single dots; no empty component;
    no leading zero in a component except the component "0" itself.
    """
    return 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def validate_uid(value: str, what: str = "UID") -> str:
    """Return `value` if it is a valid UID (PS3.5 9.1), else raise ValueError naming `what`."""
    if not is_valid_uid(value):
        raise ValueError(
            f"{what} {value!r} is not a valid UID (PS3.5 9.1: 1-64 characters, digits and "
            "dots, no empty component, no leading zero in a component)"
        )
    return value


def is_ae_title_text(value: str) -> bool:
    """True when `value` holds only characters that VR AE allows (PS3.5 6.2): printable
    ASCII other than backslash; no control character."""
    return _AE_TITLE_CHARACTERS.fullmatch(value) is not None


def validate_ae_title(value: str) -> str:
    """Check an AE title against PS3.5 6.2 (VR AE) and return it without the leading and
    trailing spaces, which are not significant.

    1 to 16 characters of the default repertoire (printable ASCII), no backslash, no control
    character, not only spaces. Raises ValueError with the reason otherwise.
    """
    if not 0 < len(value) <= 16:
        raise ValueError(f"AE title {value!r} must be 1 to 16 characters long")
    if not is_ae_title_text(value):
        raise ValueError(
            f"AE title {value!r} may only hold printable ASCII characters other than backslash"
        )
    stripped = value.strip(" ")
    if not stripped:
        raise ValueError("AE title must not consist of spaces only")
    return stripped


def validate_implementation_version_name(value: str) -> str:
    """Implementation Version Name: 1 to 16 ISO 646 (printable ASCII) characters, PS3.7 D.3.3.2.

    Returns `value`; raises ValueError otherwise.
    """
    if not 0 < len(value) <= 16 or not all(" " <= char <= "~" for char in value):
        raise ValueError(
            f"implementation version name {value!r} must be 1 to 16 printable ASCII characters"
        )
    return value


def check_range(value: int, low: int, high: int, what: str) -> int:
    """Return `value` when low <= value <= high, else raise ValueError naming `what`."""
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class PresentationContext:
    """A presentation context as the user configures it (PS3.8 7.1.1.13, PS3.7 D.3.2).

    As a *requested* context: `transfer_syntaxes` are proposed in this order; `scu_role` and
    `scp_role` are the roles we propose for ourselves in an SCP/SCU Role Selection item
    (PS3.7 D.3.3.4). No item is sent when both are None; when one is set, the other counts as
    False (as pynetdicom's `build_role`). `context_id` is assigned when None.

    As a *supported* context (acceptor): the order of `transfer_syntaxes` is our preference;
    `scu_role` / `scp_role` say whether we accept the requestor taking the SCU / SCP role
    for this SOP class. When either is None we send no role selection reply and the default
    roles apply (requestor SCU, acceptor SCP), as pynetdicom does. `context_id` is ignored.
    """

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    scu_role: bool | None = None
    scp_role: bool | None = None
    context_id: int | None = None

    def __post_init__(self) -> None:
        validate_uid(self.abstract_syntax, "abstract syntax")
        raw: object = self.transfer_syntaxes
        syntaxes = (raw,) if isinstance(raw, str) else tuple(cast("Iterable[str]", raw))
        object.__setattr__(self, "transfer_syntaxes", syntaxes)  # a bare UID or a list is fine
        if not self.transfer_syntaxes:
            raise ValueError(f"context {self.abstract_syntax}: no transfer syntax given")
        for syntax in self.transfer_syntaxes:
            validate_uid(syntax, "transfer syntax")
        if len(set(self.transfer_syntaxes)) != len(self.transfer_syntaxes):
            raise ValueError(f"context {self.abstract_syntax}: a transfer syntax is repeated")
        if self.context_id is not None and not (
            1 <= self.context_id <= 255 and self.context_id % 2 == 1
        ):
            raise ValueError(
                f"context ID {self.context_id} must be an odd integer from 1 to 255 (PS3.8 9.3.2.2)"
            )

    @property
    def proposes_roles(self) -> bool:
        """True when this context carries an SCP/SCU role selection (either role set)."""
        return self.scu_role is not None or self.scp_role is not None


@dataclass(frozen=True, slots=True)
class NegotiatedContext:
    """The outcome of negotiating one presentation context (PS3.8 9.3.3.2, PS3.7 D.3.3.4).

    `transfer_syntax` is the accepted one, None when the context was rejected. `result` is a
    PresentationContextResult value. `as_scu` / `as_scp` are *our* roles on this context after
    role selection, from the point of view of the side that holds this object; both are False
    on a rejected context.
    """

    context_id: int
    abstract_syntax: str
    transfer_syntax: str | None
    result: int
    as_scu: bool
    as_scp: bool

    @property
    def accepted(self) -> bool:
        return self.result == PresentationContextResult.ACCEPTANCE
