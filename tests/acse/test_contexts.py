"""Configuration types and validators of node.acse.contexts (PS3.5 6.2, 9.1; PS3.8 9.3.2.2)."""

from __future__ import annotations

import pytest

from node.acse.contexts import (
    DEFAULT_TRANSFER_SYNTAXES,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    NegotiatedContext,
    PresentationContext,
    check_range,
    is_valid_uid,
    validate_ae_title,
    validate_implementation_version_name,
    validate_uid,
)
from node.ul.items import PresentationContextResult


@pytest.mark.parametrize(
    "uid",
    ["0", "1", "1.2.840.10008.1.1", "1.0.3", "2.25.0", "1." + "2" * 62],
)
def test_valid_uids(uid):
    assert is_valid_uid(uid)
    assert validate_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "1..2",
        ".1",
        "1.",
        "1.02",
        "01",
        "a.b",
        "1.2 ",
        " 1.2",
        "1-2",
        "1." + "2" * 63,
        "\u0661.\u0662",
    ],
)
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(ValueError, match=r"transfer syntax .* is not a valid UID"):
        validate_uid(uid, "transfer syntax")


def test_uid_length_limit_is_64():
    assert is_valid_uid("1" * 64)
    assert not is_valid_uid("1" * 65)


@pytest.mark.parametrize(
    ("title", "expected"),
    [("STORESCP", "STORESCP"), ("  PADDED  ", "PADDED"), ("A" * 16, "A" * 16), ("A B", "A B")],
)
def test_valid_ae_titles(title, expected):
    assert validate_ae_title(title) == expected


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("", "1 to 16"),
        ("A" * 17, "1 to 16"),
        ("A\\B", "printable ASCII"),
        ("A\nB", "printable ASCII"),
        ("A\x00", "printable ASCII"),
        ("ÉCHO", "printable ASCII"),
        ("    ", "spaces only"),
    ],
)
def test_invalid_ae_titles(title, message):
    with pytest.raises(ValueError, match=message):
        validate_ae_title(title)


def test_implementation_version_name():
    assert validate_implementation_version_name("DICOMNODE_010") == "DICOMNODE_010"
    for bad in ("", "X" * 17, "bad\x01", "né"):
        with pytest.raises(ValueError, match="implementation version name"):
            validate_implementation_version_name(bad)


def test_check_range():
    assert check_range(5, 0, 5, "thing") == 5
    with pytest.raises(ValueError, match=r"thing 6 is outside 0\.\.5"):
        check_range(6, 0, 5, "thing")
    with pytest.raises(ValueError, match="thing -1"):
        check_range(-1, 0, 5, "thing")


def test_presentation_context_defaults():
    context = PresentationContext(VERIFICATION_SOP_CLASS)
    assert context.transfer_syntaxes == DEFAULT_TRANSFER_SYNTAXES
    assert context.transfer_syntaxes[0] == IMPLICIT_VR_LITTLE_ENDIAN
    assert context.scu_role is None
    assert context.scp_role is None
    assert context.context_id is None
    assert not context.proposes_roles


def test_presentation_context_coerces_lists_and_bare_uids():
    from_list = PresentationContext(
        VERIFICATION_SOP_CLASS,
        [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN],  # type: ignore[arg-type]
    )
    assert from_list.transfer_syntaxes == (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    bare = PresentationContext(VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN)  # type: ignore[arg-type]
    assert bare.transfer_syntaxes == (IMPLICIT_VR_LITTLE_ENDIAN,)
    assert hash(bare) == hash(
        PresentationContext(VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,))
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"abstract_syntax": "1.02"}, "abstract syntax"),
        ({"transfer_syntaxes": ()}, "no transfer syntax"),
        ({"transfer_syntaxes": ("1.2.x",)}, "transfer syntax"),
        (
            {"transfer_syntaxes": (IMPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)},
            "repeated",
        ),
        ({"context_id": 0}, "odd integer"),
        ({"context_id": 2}, "odd integer"),
        ({"context_id": 257}, "odd integer"),
        ({"context_id": -1}, "odd integer"),
    ],
)
def test_presentation_context_rejects_bad_configuration(kwargs, message):
    arguments = {"abstract_syntax": VERIFICATION_SOP_CLASS, **kwargs}
    with pytest.raises(ValueError, match=message):
        PresentationContext(**arguments)


def test_presentation_context_ids_and_roles():
    assert PresentationContext(VERIFICATION_SOP_CLASS, context_id=255).context_id == 255
    assert PresentationContext(VERIFICATION_SOP_CLASS, scu_role=False).proposes_roles
    assert PresentationContext(VERIFICATION_SOP_CLASS, scp_role=True).proposes_roles


def test_negotiated_context_accepted():
    accepted = NegotiatedContext(
        1, VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN, 0, as_scu=False, as_scp=True
    )
    assert accepted.accepted
    for result in range(1, 5):
        rejected = NegotiatedContext(1, VERIFICATION_SOP_CLASS, None, result, False, False)
        assert not rejected.accepted
    assert PresentationContextResult.ACCEPTANCE == 0
