# Hypothesis fuzz targets over the PDU decoder with the association machine around it
# (node.ul.association.UpperLayer as acceptor) and the DIMSE reassembler
# (node.dimse.fragment.MessageAssembler), bounded so that CI runs them in a few seconds.
#
# Rules: bytes in, objects only, no sockets. Inputs are arbitrary bytes and golden DCMTK
# sessions mutated byte by byte, cut into arbitrary reads. Peer data must never raise out of
# UpperLayer (bad PDUs become A-ABORTs); the reassembler raises only its typed errors; nothing
# buffers more than one PDU (one message) beyond its configured limits.
from __future__ import annotations

import contextlib
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.dimse.errors import (
    CommandSetError,
    DatasetTooLargeError,
    MessageAssemblyError,
)
from node.dimse.fragment import (
    DatasetChunk,
    DatasetStreamStarted,
    DimseMessageReceived,
    MessageAssembler,
)
from node.ul.association import NEED_DATA, ConnectionClosed, ProviderAbort, Role, UpperLayer
from node.ul.errors import LocalProtocolError, RemoteProtocolError
from node.ul.items import PresentationContextItemAC
from node.ul.pdu import (
    HEADER_LENGTH,
    MAXIMUM_ASSOCIATE_PDU_LENGTH,
    Abort,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    PresentationDataValueItem,
    ReleaseRP,
    ReleaseRQ,
    pdu_length,
)
from tests.robustness.golden import (
    BASE_RQ,
    ECHO_COMMAND,
    ECHO_PDATA,
    ECHO_RQ,
    FIND_COMMAND,
    FIND_IDENTIFIER,
    GOLDEN,
    PROBE,
    RELEASE_RQ,
    STORE_COMMAND,
    STORE_DATASET,
    pdata,
)

#: Our Maximum Length in the fuzz: small, so that the P-DATA-TF limit is really exercised.
MAXIMUM_PDATA = 512
MAXIMUM_COMMAND = 1024
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SESSIONS = [
    ECHO_RQ + ECHO_PDATA + RELEASE_RQ,
    BASE_RQ + pdata(3, STORE_COMMAND) + pdata(3, STORE_DATASET, command=False) + RELEASE_RQ,
    BASE_RQ + pdata(5, FIND_COMMAND) + pdata(5, FIND_IDENTIFIER, command=False) + PROBE,
    GOLDEN["storescu-user_associate_rq"]
    + GOLDEN["storescu-user_p_data_tf_1"]
    + GOLDEN["storescu-user_p_data_tf_2"],
    GOLDEN["movescu_associate_rq"]
    + GOLDEN["movescu_p_data_tf_1"]
    + GOLDEN["movescu_p_data_tf_2"]
    + GOLDEN["movescu_release_rq"],
]


@st.composite
def mutated(draw: st.DrawFn, sources: list[bytes]) -> bytes:
    """A golden byte string with a few bytes replaced, inserted or deleted, maybe cut."""
    data = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(("replace", "insert", "delete")))
        byte = draw(st.integers(0, 255))
        if action == "insert" or position == len(data):
            data.insert(position, byte)
        elif action == "replace":
            data[position] = byte
        else:
            del data[position]
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


UIDS = st.sampled_from((b"1.2.840.10008.1.1", b"1.2.840.10008.5.1.4.1.1.2", b"", b"1.2.\xff"))


def _prefixed(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


@st.composite
def sub_item_body(draw: st.DrawFn, item_type: int) -> bytes:
    """A body shaped for its sub-item type (PS3.7 Annex D), random bytes one time in eight."""
    if draw(st.integers(0, 7)) == 7:
        return draw(st.binary(max_size=24))
    uid = draw(UIDS)
    if item_type in (0x51, 0x53):
        return draw(st.binary(min_size=4, max_size=4))
    if item_type == 0x54:
        return _prefixed(uid) + draw(st.binary(min_size=2, max_size=2))
    if item_type == 0x56:
        return _prefixed(uid) + draw(st.binary(max_size=8))
    if item_type == 0x57:
        related = b"".join(_prefixed(draw(UIDS)) for _ in range(draw(st.integers(0, 2))))
        return _prefixed(uid) + _prefixed(draw(UIDS)) + _prefixed(related)
    if item_type == 0x58:
        fields = _prefixed(draw(st.binary(max_size=8))) + _prefixed(draw(st.binary(max_size=8)))
        return bytes((draw(st.integers(0, 6)), draw(st.integers(0, 1)))) + fields
    if item_type == 0x59:
        return _prefixed(draw(st.binary(max_size=8)))
    return uid  # 0x52, 0x55, 0x30, 0x40 and unknown types


@st.composite
def item(draw: st.DrawFn, item_type: int, body: bytes) -> bytes:
    """An item of `item_type` with its true length, most of the time."""
    if draw(st.integers(0, 31)) == 31:
        item_type = draw(st.sampled_from((0x00, 0x21, 0x5F, 0xFF)))
    length = len(body) if draw(st.integers(0, 15)) < 15 else draw(st.integers(0, 0xFFFF))
    return bytes((item_type, 0)) + length.to_bytes(2, "big") + body


@st.composite
def associate_requests(draw: st.DrawFn) -> bytes:
    """An A-ASSOCIATE-RQ built item by item in PS3.8 order from random parts, each sometimes
    of a wrong type or length, then maybe a golden P-DATA-TF: reaches every item decoder."""
    parts = [draw(item(0x10, draw(st.sampled_from((b"1.2.840.10008.3.1.1.1", b"1.2.3")))))]
    for _ in range(draw(st.integers(0, 3))):
        header = bytes((draw(st.integers(0, 8)), 0, 0xFF, 0))
        subs = [draw(item(0x30, draw(sub_item_body(0x30))))]
        subs += [draw(item(0x40, draw(UIDS))) for _ in range(draw(st.integers(0, 3)))]
        parts.append(draw(item(0x20, header + b"".join(draw(st.permutations(subs))))))
    user_types = st.sampled_from((*range(0x51, 0x5A), 0x5F))
    user = []
    for _ in range(draw(st.integers(0, 5))):
        user_type = draw(user_types)
        user.append(draw(item(user_type, draw(sub_item_body(user_type)))))
    parts.append(draw(item(0x50, b"".join(user))))
    if draw(st.integers(0, 7)) == 7:
        parts = draw(st.permutations(parts))
    body = ECHO_RQ[6:74] + b"".join(parts)
    tail = draw(st.sampled_from((b"", ECHO_PDATA, PROBE + RELEASE_RQ)))
    return b"\x01\x00" + len(body).to_bytes(4, "big") + body + tail


STREAMS = st.one_of(st.binary(max_size=700), mutated(SESSIONS), associate_requests())
#: Where the stream is cut into reads (fractions of its length).
CUTS = st.lists(st.floats(0.0, 1.0), max_size=6)


def split(data: bytes, cuts: list[float]) -> list[bytes]:
    points = sorted({int(len(data) * cut) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points) if end > start]


class Acceptor:
    """What node.transport does around UpperLayer, minus the socket: answer what it must."""

    def __init__(self) -> None:
        self.upper_layer = UpperLayer(
            Role.ACCEPTOR, maximum_pdata_length=MAXIMUM_PDATA, artim_timeout=3.0
        )
        self.assembler = MessageAssembler(stream_threshold=256, maximum_command_size=4096)
        self.upper_layer.connection_made(0.0)
        self.messages = 0

    def pump(self) -> None:
        upper_layer = self.upper_layer
        while (event := upper_layer.next_event(now=1.0)) is not NEED_DATA:
            if isinstance(event, AssociateRQ):
                self.answer(event)
            elif isinstance(event, PDataTF):
                self.reassemble(event)
            elif isinstance(event, ReleaseRQ):
                upper_layer.send(ReleaseRP(), now=1.0)
            else:
                assert isinstance(event, ProviderAbort | ConnectionClosed | Abort | ReleaseRP), (
                    f"an acceptor was given {event!r}"
                )
        self.check_buffer()

    def answer(self, request: AssociateRQ) -> None:
        accept = PresentationContextItemAC
        contexts = tuple(
            accept(item.context_id, 0, item.transfer_syntaxes[0])
            for item in request.presentation_contexts
        )
        response = AssociateAC(request.called_ae_title, request.calling_ae_title, contexts)
        try:
            self.upper_layer.send(response, now=1.0)
        except LocalProtocolError:  # a peer title or UID we cannot echo: refuse instead
            self.upper_layer.send(AssociateRJ(1, 1, 1), now=1.0)

    def reassemble(self, pdata_pdu: PDataTF) -> None:
        for pdv in pdata_pdu.items:
            try:
                event = self.assembler.add_pdv(pdv)
            except CommandSetError:
                continue  # answered with a failure response; the association goes on
            except RemoteProtocolError as error:
                with contextlib.suppress(LocalProtocolError):
                    self.upper_layer.send(Abort(error.source, error.reason), now=1.0)
                return
            if event is not None:
                self.messages += 1

    def check_buffer(self) -> None:
        """Left in the buffer: at most one partial PDU whose header was accepted."""
        upper_layer = self.upper_layer
        buffer = upper_layer._buffer
        pending = len(buffer) - upper_layer._offset
        if upper_layer._framing_lost or upper_layer.should_close:
            assert pending == 0
        if pending >= HEADER_LENGTH:
            header = buffer[upper_layer._offset : upper_layer._offset + HEADER_LENGTH]
            length = pdu_length(header, MAXIMUM_PDATA)  # a refused header is never kept
            assert pending < HEADER_LENGTH + length
        assert pending < HEADER_LENGTH + max(MAXIMUM_PDATA, MAXIMUM_ASSOCIATE_PDU_LENGTH)


@FUZZ
@given(STREAMS, CUTS, st.booleans())
def test_upper_layer_takes_any_bytes(stream: bytes, cuts: list[float], eof: bool) -> None:
    """Whatever arrives, in whatever reads: no exception, bounded buffering, and the bytes
    to send are whole PDUs."""
    acceptor = Acceptor()
    upper_layer = acceptor.upper_layer
    for chunk in split(stream, cuts):
        upper_layer.receive_data(chunk)
        acceptor.pump()
    if eof:
        upper_layer.receive_data(b"")
        acceptor.pump()
    deadline = upper_layer.get_timer()
    if deadline is not None:
        upper_layer.handle_timer(deadline)
        assert upper_layer.should_close
    output = upper_layer.data_to_send()
    offset = 0
    while offset < len(output):
        offset += HEADER_LENGTH + int.from_bytes(output[offset + 2 : offset + 6], "big")
    assert offset == len(output)


@FUZZ
@given(st.sampled_from(SESSIONS), st.lists(st.integers(1, 300), min_size=1, max_size=8))
def test_valid_sessions_survive_any_read_sizes(session: bytes, sizes: list[int]) -> None:
    """A golden session read in pieces of any sizes is taken exactly as when read whole."""
    whole = Acceptor()
    whole.upper_layer.receive_data(session)
    whole.pump()
    cut = Acceptor()
    offset = 0
    for index in range(len(session)):
        if offset >= len(session):
            break
        size = sizes[index % len(sizes)]
        cut.upper_layer.receive_data(session[offset : offset + size])
        cut.pump()
        offset += size
    assert cut.messages == whole.messages > 0
    assert cut.upper_layer.state is whole.upper_layer.state
    assert cut.upper_layer.data_to_send() == whole.upper_layer.data_to_send()


GOLDEN_FRAGMENTS = [ECHO_COMMAND, STORE_COMMAND, FIND_COMMAND, STORE_DATASET, FIND_IDENTIFIER]
FRAGMENT_DATA = st.one_of(
    st.binary(max_size=120),
    st.sampled_from(GOLDEN_FRAGMENTS),
    mutated(GOLDEN_FRAGMENTS),
)
PDVS = st.lists(
    st.builds(
        PresentationDataValueItem,
        context_id=st.sampled_from((1, 3, 5)),
        is_command=st.booleans(),
        is_last=st.booleans(),
        data=FRAGMENT_DATA,
    ),
    max_size=30,
)


@FUZZ
@given(
    PDVS,
    st.none() | st.integers(0, 300),
    st.none() | st.integers(0, 600),
)
def test_assembler_takes_any_pdvs(
    pdvs: list[PresentationDataValueItem], threshold: int | None, maximum: int | None
) -> None:
    """Only the typed errors; after CommandSetError and DatasetTooLargeError it goes on;
    it never holds more than the stream threshold, the data set maximum or the command
    maximum."""
    assembler = MessageAssembler(
        stream_threshold=threshold,
        maximum_dataset_size=maximum,
        maximum_command_size=MAXIMUM_COMMAND,
    )
    for pdv in pdvs:
        try:
            event = assembler.add_pdv(pdv)
        except (CommandSetError, DatasetTooLargeError):
            continue  # answered with a failure status; the rest of the message is dropped
        except MessageAssemblyError:
            break  # the transport aborts the association here
        if isinstance(event, DimseMessageReceived):
            assert (event.dataset is not None) == event.command.has_dataset
        elif event is not None:
            assert isinstance(event, DatasetStreamStarted | DatasetChunk)
            assert threshold is not None
        held = sum(len(fragment) for fragment in assembler._dataset_fragments)
        if threshold is not None:
            assert held <= threshold
        if maximum is not None:
            assert assembler._dataset_size <= maximum
        assert assembler._command_size <= MAXIMUM_COMMAND


@FUZZ
@given(
    st.sampled_from(
        [
            (1, ECHO_COMMAND, None),
            (3, STORE_COMMAND, STORE_DATASET),
            (5, FIND_COMMAND, FIND_IDENTIFIER),
        ]
    ),
    st.lists(st.integers(1, 200), min_size=1, max_size=12),
)
def test_golden_messages_reassemble_from_any_fragmentation(
    message: tuple[int, bytes, bytes | None], sizes: list[int]
) -> None:
    """A golden command (and data set) cut into PDVs of arbitrary sizes comes back whole."""
    context_id, command, dataset = message
    assembler = MessageAssembler()
    events = []
    for data, is_command in ((command, True), (dataset, False)):
        if data is None:
            continue
        offset = 0
        index = 0
        while True:
            size = sizes[index % len(sizes)]
            piece = data[offset : offset + size]
            offset += size
            index += 1
            last = offset >= len(data)
            event = assembler.add_pdv(
                PresentationDataValueItem(context_id, is_command, last, piece)
            )
            if event is not None:
                events.append(event)
            if last:
                break
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, DimseMessageReceived)
    assert event.context_id == context_id
    assert event.dataset == dataset
    assert assembler.is_idle
