# Hypothesis strategies for every PDU, item and sub-item of node.ul (PS3.8 9.3, PS3.7 Annex D).
#
# Values are valid ones: UIDs of digits and dots, AE titles of printable ASCII without trailing
# spaces, odd context ids, lengths that fit their fields. So decode(encode(x)) == x must hold.
from __future__ import annotations

from hypothesis import strategies as st

from node.ul.items import (
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    RoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UnknownSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
    UserInformationSubItem,
)
from node.ul.pdu import (
    PDU,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    PresentationDataValueItem,
    ReleaseRP,
    ReleaseRQ,
)

KNOWN_SUB_ITEM_TYPES = frozenset(range(0x51, 0x5A))
PRINTABLE = "".join(chr(code) for code in range(0x20, 0x7F))

uint8 = st.integers(0, 0xFF)
uint16 = st.integers(0, 0xFFFF)
uint32 = st.integers(0, 0xFFFF_FFFF)
small_bytes = st.binary(max_size=80)

_uid_component = st.one_of(st.just("0"), st.integers(1, 10**12).map(str))
uids = (
    st.lists(_uid_component, min_size=1, max_size=10).map(".".join).filter(lambda u: len(u) <= 64)
)

ae_titles = st.builds(
    lambda head, last: head + last,
    st.text(PRINTABLE, max_size=15),
    st.sampled_from(PRINTABLE.strip()),
)
context_ids = st.integers(0, 127).map(lambda n: 2 * n + 1)
protocol_versions = st.integers(0, 0x7FFF).map(lambda n: 2 * n + 1)

presentation_contexts_rq = st.builds(
    PresentationContextItemRQ,
    context_ids,
    uids,
    st.lists(uids, min_size=1, max_size=4).map(tuple),
)
presentation_contexts_ac = st.builds(
    PresentationContextItemAC, context_ids, st.integers(0, 4), st.none() | uids
)

sub_items: st.SearchStrategy[UserInformationSubItem] = st.one_of(
    st.builds(MaximumLengthSubItem, uint32),
    st.builds(ImplementationClassUIDSubItem, uids),
    st.builds(ImplementationVersionNameSubItem, st.text(PRINTABLE, min_size=1, max_size=16)),
    st.builds(AsynchronousOperationsWindowSubItem, uint16, uint16),
    st.builds(RoleSelectionSubItem, uids, st.booleans(), st.booleans()),
    st.builds(SOPClassExtendedNegotiationSubItem, uids, small_bytes),
    st.builds(
        SOPClassCommonExtendedNegotiationSubItem,
        uids,
        uids,
        st.lists(uids, max_size=3).map(tuple),
    ),
    st.builds(UserIdentityRQSubItem, st.integers(1, 5), st.booleans(), small_bytes, small_bytes),
    st.builds(UserIdentityACSubItem, small_bytes),
    st.builds(
        UnknownSubItem,
        uint8.filter(lambda t: t not in KNOWN_SUB_ITEM_TYPES),
        small_bytes,
        uint8,
    ),
)
user_information_items = st.builds(UserInformationItem, st.lists(sub_items, max_size=6).map(tuple))
application_contexts = st.builds(ApplicationContextItem, uids)

associate_rqs = st.builds(
    AssociateRQ,
    ae_titles,
    ae_titles,
    st.lists(presentation_contexts_rq, max_size=4).map(tuple),
    user_information_items,
    application_contexts,
    protocol_versions,
)
associate_acs = st.builds(
    AssociateAC,
    ae_titles,
    ae_titles,
    st.lists(presentation_contexts_ac, max_size=4).map(tuple),
    user_information_items,
    application_contexts,
    protocol_versions,
)
associate_rjs = st.builds(AssociateRJ, uint8, uint8, uint8)
presentation_data_values = st.builds(
    PresentationDataValueItem, context_ids, st.booleans(), st.booleans(), st.binary(max_size=200)
)
pdata_tfs = st.builds(
    PDataTF, st.lists(presentation_data_values, min_size=1, max_size=4).map(tuple)
)
aborts = st.builds(Abort, uint8, uint8)

pdus: st.SearchStrategy[PDU] = st.one_of(
    associate_rqs,
    associate_acs,
    associate_rjs,
    pdata_tfs,
    st.just(ReleaseRQ()),
    st.just(ReleaseRP()),
    aborts,
)
