# Property tests of the PDU codec (PS3.8 9.3): every PDU, item and sub-item survives
# decode(encode(x)) == x, and valid wire bytes survive encode(decode(b)) == b.
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.ul.items import (
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    RoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
    UserInformationSubItem,
    decode_presentation_context_ac,
    decode_presentation_context_rq,
    decode_user_information,
)
from node.ul.pdu import (
    PDU,
    PDU_HEADER,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    PresentationDataValueItem,
    ReleaseRP,
    ReleaseRQ,
    decode_pdata,
    decode_pdu,
    pdu_length,
)
from tests.ul import pdu_strategies as strategies

PDU_TYPE_BY_CLASS: dict[type[object], int] = {
    AssociateRQ: 0x01,
    AssociateAC: 0x02,
    AssociateRJ: 0x03,
    PDataTF: 0x04,
    ReleaseRQ: 0x05,
    ReleaseRP: 0x06,
    Abort: 0x07,
}


def _body(item_bytes: bytes) -> memoryview:
    """The body of an encoded item: what the item decoders take."""
    return memoryview(item_bytes)[4:]


@given(strategies.pdus)
def test_pdu_decode_of_encode_is_identity(pdu: PDU) -> None:
    assert decode_pdu(pdu.encode()) == pdu


@given(strategies.pdus)
def test_pdu_encode_of_decode_is_identity(pdu: PDU) -> None:
    wire = pdu.encode()
    assert decode_pdu(wire).encode() == wire


@given(strategies.pdus)
def test_pdu_header_announces_the_body_length(pdu: PDU) -> None:
    wire = pdu.encode()
    assert pdu_length(wire[:6], 0) == len(wire) - 6
    assert PDU_HEADER.unpack_from(wire) == (PDU_TYPE_BY_CLASS[type(pdu)], len(wire) - 6)


@given(strategies.pdata_tfs)
def test_pdata_decoder_matches_decode_pdu(pdu: PDataTF) -> None:
    assert decode_pdata(pdu.encode()) == pdu


@given(strategies.pdata_tfs)
def test_pdata_message_control_header_bits(pdu: PDataTF) -> None:
    wire = pdu.encode()
    offset = 6
    for pdv in pdu.items:
        control = wire[offset + 5]
        assert control == pdv.is_command | (pdv.is_last << 1)
        assert control == pdv.message_control_header
        offset += 6 + len(pdv.data)
    assert offset == len(wire)


@given(strategies.presentation_contexts_rq)
def test_presentation_context_rq_round_trip(item: PresentationContextItemRQ) -> None:
    wire = item.encode()
    assert wire[0] == 0x20
    assert decode_presentation_context_rq(_body(wire)) == item
    assert decode_presentation_context_rq(_body(wire)).encode() == wire


@given(strategies.presentation_contexts_ac)
def test_presentation_context_ac_round_trip(item: PresentationContextItemAC) -> None:
    wire = item.encode()
    assert wire[0] == 0x21
    assert decode_presentation_context_ac(_body(wire)) == item
    assert decode_presentation_context_ac(_body(wire)).encode() == wire


@given(strategies.sub_items)
def test_each_sub_item_round_trips(sub: UserInformationSubItem) -> None:
    wire = sub.encode()
    item = UserInformationItem((sub,))
    assert decode_user_information(memoryview(wire)) == item
    assert item.encode() == bytes((0x50, 0)) + len(wire).to_bytes(2, "big") + wire


@given(strategies.user_information_items)
def test_user_information_round_trip(item: UserInformationItem) -> None:
    wire = item.encode()
    assert wire[0] == 0x50
    assert decode_user_information(_body(wire)) == item
    assert decode_user_information(_body(wire)).encode() == wire


@given(strategies.associate_rqs)
def test_associate_rq_fields_survive(pdu: AssociateRQ) -> None:
    decoded = decode_pdu(pdu.encode())
    assert isinstance(decoded, AssociateRQ)
    assert decoded.called_ae_title == pdu.called_ae_title
    assert decoded.calling_ae_title == pdu.calling_ae_title
    assert decoded.protocol_version == pdu.protocol_version
    assert decoded.application_context == pdu.application_context
    assert [c.context_id for c in decoded.presentation_contexts] == [
        c.context_id for c in pdu.presentation_contexts
    ]


@given(strategies.associate_acs)
def test_associate_ac_ae_titles_are_space_padded_to_16(pdu: AssociateAC) -> None:
    wire = pdu.encode()
    assert wire[10:26] == pdu.called_ae_title.encode().ljust(16, b" ")
    assert wire[26:42] == pdu.calling_ae_title.encode().ljust(16, b" ")
    assert wire[42:74] == bytes(32)


@given(strategies.user_information_items)
def test_user_information_accessors_return_the_first_of_each_kind(
    item: UserInformationItem,
) -> None:
    def first(kind: type[object]) -> object | None:
        return next((sub for sub in item.sub_items if type(sub) is kind), None)

    maximum = first(MaximumLengthSubItem)
    assert item.maximum_length == (
        maximum.maximum_length if isinstance(maximum, MaximumLengthSubItem) else None
    )
    uid = first(ImplementationClassUIDSubItem)
    assert item.implementation_class_uid == (
        uid.uid if isinstance(uid, ImplementationClassUIDSubItem) else None
    )
    name = first(ImplementationVersionNameSubItem)
    assert item.implementation_version_name == (
        name.name if isinstance(name, ImplementationVersionNameSubItem) else None
    )
    assert item.asynchronous_operations_window == first(AsynchronousOperationsWindowSubItem)
    identities = [
        sub
        for sub in item.sub_items
        if isinstance(sub, UserIdentityRQSubItem | UserIdentityACSubItem)
    ]
    assert item.user_identity == (identities[0] if identities else None)
    assert item.role_selections == tuple(
        sub for sub in item.sub_items if isinstance(sub, RoleSelectionSubItem)
    )
    assert item.sop_class_extended == tuple(
        sub for sub in item.sub_items if isinstance(sub, SOPClassExtendedNegotiationSubItem)
    )
    assert item.sop_class_common_extended == tuple(
        sub for sub in item.sub_items if isinstance(sub, SOPClassCommonExtendedNegotiationSubItem)
    )


def test_user_information_accessors_on_an_empty_item() -> None:
    item = UserInformationItem()
    assert item.maximum_length is None
    assert item.implementation_class_uid is None
    assert item.implementation_version_name is None
    assert item.asynchronous_operations_window is None
    assert item.user_identity is None
    assert item.role_selections == ()
    assert item.sop_class_extended == ()
    assert item.sop_class_common_extended == ()


def test_user_information_accessors_pick_the_first_occurrence() -> None:
    item = UserInformationItem(
        (
            UserIdentityACSubItem(b"token"),
            MaximumLengthSubItem(16384),
            MaximumLengthSubItem(0),
            AsynchronousOperationsWindowSubItem(5, 1),
            UserIdentityRQSubItem(1, False, b"bob"),
        )
    )
    assert item.maximum_length == 16384
    assert item.asynchronous_operations_window == AsynchronousOperationsWindowSubItem(5, 1)
    assert item.user_identity == UserIdentityACSubItem(b"token")


def test_user_identity_repr_hides_credentials() -> None:
    text = repr(UserIdentityRQSubItem(2, True, b"alice", b"secret"))
    assert "alice" not in text
    assert "secret" not in text
    assert "<5 bytes>" in text
    assert "<6 bytes>" in text


def test_release_pdus_have_fixed_bytes() -> None:
    assert ReleaseRQ().encode() == bytes.fromhex("05000000000400000000")
    assert ReleaseRP().encode() == bytes.fromhex("06000000000400000000")


@given(st.lists(strategies.presentation_data_values, min_size=1, max_size=3))
def test_pdata_length_counts_every_pdv_header(pdvs: list[PresentationDataValueItem]) -> None:
    pdu = PDataTF(tuple(pdvs))
    wire = pdu.encode()
    assert pdu_length(wire[:6], 0) == sum(6 + len(p.data) for p in pdu.items)
