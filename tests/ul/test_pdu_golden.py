# Golden PDUs captured from DCMTK (tests/fixtures/dcmtk, see its README.md): each decodes with
# node.ul.pdu and re-encodes to the same bytes, and the decoded fields are the ones DCMTK sent.
#
# DCMTK writes FFH in the third byte of each A-ASSOCIATE-RQ Presentation Context Item (a
# reserved field, PS3.8 Table 9-13, "shall not be tested when received"): the item keeps those
# bytes (not compared) so that every capture re-encodes byte for byte.
from __future__ import annotations

import re
import struct

import pytest

from node.ul.items import (
    DICOM_APPLICATION_CONTEXT,
    PresentationContextResult,
    RoleSelectionSubItem,
    UserIdentityRQSubItem,
    UserIdentityType,
)
from node.ul.pdu import (
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    RejectReason,
    RejectResult,
    RejectSource,
    ReleaseRP,
    ReleaseRQ,
    decode_pdu,
)
from tests.fixtures import dcmtk_pdus

FIXTURES = dcmtk_pdus()
DCMTK_CLASS_UID = re.compile(r"1\.2\.276\.0\.7230010\.3\.0\.3\.\d+\.\d+")
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
REQUESTORS = ("echoscu", "storescu", "storescu-user", "findscu", "getscu", "movescu")


def rq_context_reserved_offsets(raw: bytes) -> list[int]:
    """Offsets of the third byte of each Presentation Context Item in an A-ASSOCIATE-RQ."""
    if raw[0] != 0x01:
        return []
    offsets = []
    offset = 6 + 68  # PDU header, then the fixed fields up to the first item
    while offset < len(raw):
        (length,) = struct.unpack_from(">H", raw, offset + 2)
        if raw[offset] == 0x20:
            offsets.append(offset + 6)
        offset += 4 + length
    return offsets


def decoded(name: str) -> object:
    return decode_pdu(FIXTURES[name])


def test_every_expected_fixture_is_present() -> None:
    expected = {f"{tool}_associate_rq" for tool in REQUESTORS}
    expected |= {f"{tool}_release_rq" for tool in REQUESTORS}
    expected |= {f"{tool}_p_data_tf_1" for tool in REQUESTORS}
    expected |= {
        "storescp_associate_ac",
        "storescp_p_data_tf_1",
        "storescp_release_rp",
        "storescp-appcontext_associate_rj",
        "storescp-refuse_associate_rj",
        "storescp-abort_abort",
        "dcmqrscp_associate_ac",
        "dcmqrscp_associate_rj",
        "dcmqrscp_p_data_tf_1",
        "dcmqrscp_release_rp",
    }
    assert expected <= FIXTURES.keys()


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_re_encodes_byte_for_byte(name: str) -> None:
    raw = FIXTURES[name]
    assert decode_pdu(raw).encode() == raw


@pytest.mark.parametrize("tool", REQUESTORS)
def test_dcmtk_reserved_context_byte_is_kept_but_not_compared(tool: str) -> None:
    raw = FIXTURES[f"{tool}_associate_rq"]
    request = decode_pdu(raw)
    assert isinstance(request, AssociateRQ)
    offsets = rq_context_reserved_offsets(raw)
    assert len(offsets) == len(request.presentation_contexts)
    assert {raw[i] for i in offsets} == {0xFF}
    zeroed = bytearray(raw)
    for offset in offsets:
        zeroed[offset] = 0
    assert decode_pdu(bytes(zeroed)) == request


@pytest.mark.parametrize("tool", REQUESTORS)
def test_dcmtk_associate_rq_fields(tool: str) -> None:
    request = decoded(f"{tool}_associate_rq")
    assert isinstance(request, AssociateRQ)
    assert request.protocol_version == 1
    assert request.called_ae_title == "ANY-SCP"
    assert request.calling_ae_title == tool.split("-")[0].upper()
    assert request.application_context.name == DICOM_APPLICATION_CONTEXT
    user = request.user_information
    assert user.maximum_length == 16384
    assert user.implementation_class_uid is not None
    assert DCMTK_CLASS_UID.fullmatch(user.implementation_class_uid)
    assert user.implementation_version_name is not None
    assert user.implementation_version_name.startswith("OFFIS_DCMTK_")
    ids = [context.context_id for context in request.presentation_contexts]
    assert ids == list(range(1, 2 * len(ids), 2))
    assert all(context.transfer_syntaxes for context in request.presentation_contexts)


def test_echoscu_proposes_verification_with_implicit_vr() -> None:
    request = decoded("echoscu_associate_rq")
    assert isinstance(request, AssociateRQ)
    [context] = request.presentation_contexts
    assert context.abstract_syntax == VERIFICATION
    assert context.transfer_syntaxes == (IMPLICIT_VR_LE,)


def test_storescu_proposes_128_contexts_including_ct() -> None:
    request = decoded("storescu_associate_rq")
    assert isinstance(request, AssociateRQ)
    assert len(request.presentation_contexts) == 128
    assert request.presentation_contexts[-1].context_id == 255
    assert CT_IMAGE_STORAGE in {c.abstract_syntax for c in request.presentation_contexts}


def test_storescu_sends_username_and_passcode() -> None:
    request = decoded("storescu-user_associate_rq")
    assert isinstance(request, AssociateRQ)
    identity = request.user_information.user_identity
    assert identity == UserIdentityRQSubItem(
        UserIdentityType.USERNAME_AND_PASSCODE, False, b"alice", b"secret"
    )
    assert {c.abstract_syntax for c in request.presentation_contexts} == {CT_IMAGE_STORAGE}


def test_findscu_and_movescu_propose_study_root() -> None:
    find = decoded("findscu_associate_rq")
    move = decoded("movescu_associate_rq")
    assert isinstance(find, AssociateRQ)
    assert isinstance(move, AssociateRQ)
    assert find.presentation_contexts[0].abstract_syntax == STUDY_ROOT_FIND
    assert STUDY_ROOT_MOVE in {c.abstract_syntax for c in move.presentation_contexts}


def test_getscu_asks_the_scp_role_for_storage() -> None:
    request = decoded("getscu_associate_rq")
    assert isinstance(request, AssociateRQ)
    assert request.presentation_contexts[0].abstract_syntax == STUDY_ROOT_GET
    roles = request.user_information.role_selections
    assert len(roles) == len(request.presentation_contexts) - 1
    assert RoleSelectionSubItem(CT_IMAGE_STORAGE, False, True) in roles
    assert all(not role.scu_role and role.scp_role for role in roles)


@pytest.mark.parametrize(
    ("tool", "command_field"),
    [
        ("echoscu", 0x0030),
        ("storescu", 0x0001),
        ("storescu-user", 0x0001),
        ("findscu", 0x0020),
        ("getscu", 0x0010),
        ("movescu", 0x0021),
        ("storescp", 0x8030),
        ("dcmqrscp", 0x8030),
    ],
)
def test_first_pdata_is_one_whole_command(tool: str, command_field: int) -> None:
    pdu = decoded(f"{tool}_p_data_tf_1")
    assert isinstance(pdu, PDataTF)
    [pdv] = pdu.items
    assert pdv.is_command
    assert pdv.is_last
    assert pdv.context_id % 2 == 1
    # (0000,0100) Command Field, Implicit VR Little Endian, length 2.
    assert struct.pack("<HHIH", 0, 0x0100, 2, command_field) in pdv.data


def test_storescu_dataset_follows_its_command() -> None:
    command = decoded("storescu_p_data_tf_1")
    dataset = decoded("storescu_p_data_tf_2")
    assert isinstance(command, PDataTF)
    assert isinstance(dataset, PDataTF)
    [pdv] = dataset.items
    assert not pdv.is_command
    assert pdv.is_last
    assert pdv.context_id == command.items[0].context_id
    assert b"GOLDEN^CAPTURE" in pdv.data


@pytest.mark.parametrize("tool", REQUESTORS)
def test_requestors_release(tool: str) -> None:
    assert decoded(f"{tool}_release_rq") == ReleaseRQ()


def test_storescp_associate_ac() -> None:
    accept = decoded("storescp_associate_ac")
    assert isinstance(accept, AssociateAC)
    assert accept.called_ae_title == "STORESCP"
    assert accept.calling_ae_title == "CAPTURE"
    assert accept.application_context.name == DICOM_APPLICATION_CONTEXT
    results = {c.context_id: (c.result, c.transfer_syntax) for c in accept.presentation_contexts}
    assert results[1] == (PresentationContextResult.ACCEPTANCE, IMPLICIT_VR_LE)
    assert results[3] == (PresentationContextResult.ACCEPTANCE, EXPLICIT_VR_LE)
    assert results[5][0] == PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
    assert results[7][0] == PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
    user = accept.user_information
    assert user.maximum_length == 16384
    assert user.implementation_class_uid is not None
    assert DCMTK_CLASS_UID.fullmatch(user.implementation_class_uid)


def test_dcmqrscp_associate_ac() -> None:
    accept = decoded("dcmqrscp_associate_ac")
    assert isinstance(accept, AssociateAC)
    assert accept.called_ae_title == "QRSCP"
    assert [c.result for c in accept.presentation_contexts] == [0, 0]
    assert accept.user_information.maximum_length == 16384
    assert accept.user_information.implementation_class_uid is not None
    assert DCMTK_CLASS_UID.fullmatch(accept.user_information.implementation_class_uid)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("storescp-appcontext_associate_rj", RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED),
        ("storescp-refuse_associate_rj", RejectReason.NO_REASON),
        ("dcmqrscp_associate_rj", RejectReason.CALLED_AE_NOT_RECOGNIZED),
    ],
)
def test_rejections(name: str, reason: int) -> None:
    assert decoded(name) == AssociateRJ(RejectResult.PERMANENT, RejectSource.SERVICE_USER, reason)


def test_storescp_release_and_abort() -> None:
    assert decoded("storescp_release_rp") == ReleaseRP()
    assert decoded("dcmqrscp_release_rp") == ReleaseRP()
    assert decoded("storescp-abort_abort") == Abort(0, 0)
