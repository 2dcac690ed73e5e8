"""Hypothesis drives node.ul.association: the state always follows PS3.8 Table 9-10, and the
object never raises anything but LocalProtocolError, whatever the peer sends."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from node.ul.association import NEED_DATA, ConnectionClosed, ProviderAbort, Role, UpperLayer
from node.ul.errors import LocalProtocolError
from node.ul.fsm import ACTIONS, TRANSITIONS, Evt, Sta
from tests.ul.test_association import (
    PRIMITIVES,
    REACHABLE,
    RECEIVED,
    RQ,
    associated,
    drain,
    reach,
)

TIMER_STATES = (Sta.STA2, Sta.STA13)
ABORTING = ("AA-1", "AA-7", "AA-8")

# Invalid PDUs: (bytes, whether the stream can still be framed after it).
JUNK = [
    (bytes((0x09, 0)) + struct.pack(">I", 4) + bytes(4), False),  # unrecognized PDU type
    (bytes((0x05, 0)) + struct.pack(">I", 5) + bytes(5), False),  # A-RELEASE-RQ, bad length
    (bytes((0x04, 0)) + struct.pack(">I", 20000), False),  # P-DATA-TF over our maximum
    (bytes((0x04, 0)) + struct.pack(">I", 5) + struct.pack(">I", 1) + b"\x01", True),  # PDV < 2
    (bytes((0x01, 0)) + struct.pack(">I", 10) + bytes(10), True),  # A-ASSOCIATE-RQ truncated
    (bytes((0x04, 0)) + struct.pack(">I", 0), True),  # P-DATA-TF without PDV
]

STARTS = st.sampled_from([*REACHABLE, (Role.REQUESTOR, Sta.STA1), (Role.ACCEPTOR, Sta.STA1)])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(list(PRIMITIVES))),
        st.tuples(st.just("receive"), st.sampled_from(list(RECEIVED))),
        st.tuples(st.just("junk"), st.sampled_from(range(len(JUNK)))),
        st.tuples(st.just("connect"), st.none()),
        st.tuples(st.just("close"), st.none()),
        st.tuples(st.just("timer"), st.none()),
    ),
    max_size=25,
)


class Model:
    """What Table 9-10 says the state must be, kept apart from the object under test."""

    def __init__(self, role: Role, state: Sta) -> None:
        self.role = role
        self.state = state
        self.ended = False
        self.framing_lost = False

    def take(self, event: Evt) -> str:
        name = TRANSITIONS[(event, self.state)]
        self.state = ACTIONS[name].next_state_for(self.role)
        self.ended = self.ended or self.state is Sta.STA1
        return name

    def permits(self, event: Evt) -> bool:
        if self.ended or (event, self.state) not in TRANSITIONS:
            return False
        return not (event is Evt.EVT1 and self.role is Role.ACCEPTOR)

    def connected(self) -> bool:
        return not self.ended and self.state not in (Sta.STA1, Sta.STA4)


def run_operation(ul: UpperLayer, model: Model, kind: str, arg: object, now: float) -> None:
    if kind in ("send", "connect"):
        if kind == "send":
            assert isinstance(arg, Evt)
            event = arg
        else:
            event = Evt.EVT5 if model.role is Role.ACCEPTOR else Evt.EVT2
        if model.permits(event):
            model.take(event)
            if kind == "send":
                ul.send(PRIMITIVES[event], now=now)
            else:
                ul.connection_made(now)
        else:
            state = ul.state
            try:
                if kind == "send":
                    ul.send(PRIMITIVES[event], now=now)
                else:
                    ul.connection_made(now)
            except LocalProtocolError:
                assert ul.state is state
            else:
                raise AssertionError(f"{event.label} accepted in {state.label}")
    elif kind in ("receive", "junk"):
        if kind == "receive":
            assert isinstance(arg, Evt)
            event, data, keeps_framing = arg, RECEIVED[arg].encode(), True
        else:
            assert isinstance(arg, int)
            event, (data, keeps_framing) = Evt.EVT19, JUNK[arg]
        if not model.connected() and not model.ended:
            try:
                ul.receive_data(data)
            except LocalProtocolError:
                return
            raise AssertionError(f"bytes accepted in {ul.state.label} before connection")
        ul.receive_data(data)
        result = ul.next_event(now=now)
        if model.ended or model.framing_lost:
            assert result is NEED_DATA
            return
        name = model.take(event)
        model.framing_lost = not keeps_framing
        if name in ABORTING:
            assert isinstance(result, ProviderAbort)
        elif name == "AA-6":
            assert result is NEED_DATA
        else:
            assert result == RECEIVED[event]
    elif kind == "close":
        if model.state is Sta.STA1 and not model.ended:
            try:
                ul.receive_data(b"")
            except LocalProtocolError:
                return
            raise AssertionError("close accepted before connection")
        ul.receive_data(b"")
        result = ul.next_event(now=now)
        if model.ended:
            assert result is NEED_DATA
            return
        name = model.take(Evt.EVT17)
        expected = ProviderAbort if name == "AA-4" else ConnectionClosed
        assert isinstance(result, expected)
    else:
        ul.handle_timer(now + 1000.0)
        if model.state in TIMER_STATES and not model.ended:
            model.take(Evt.EVT18)


@settings(max_examples=400, deadline=None)
@given(start=STARTS, operations=OPERATIONS)
def test_state_follows_table_9_10(
    start: tuple[Role, Sta], operations: list[tuple[str, object]]
) -> None:
    role, state = start
    ul = UpperLayer(role) if state is Sta.STA1 else reach(state, role)
    model = Model(role, state)
    for step, (kind, arg) in enumerate(operations):
        run_operation(ul, model, kind, arg, float(step))
        assert ul.state is model.state
        assert (ul.get_timer() is not None) == (model.state in TIMER_STATES and not model.ended)
        assert ul.should_close == model.ended
        assert ul.is_established == (model.state is Sta.STA6)


SINGLE_STEPS: list[tuple[str, object]] = [
    *(("send", event) for event in PRIMITIVES),
    *(("receive", event) for event in RECEIVED),
    *(("junk", index) for index in range(len(JUNK))),
    ("connect", None),
    ("close", None),
    ("timer", None),
]


def test_every_state_and_operation_follows_the_table() -> None:
    """Deterministic companion of the property above: each reachable state x each input."""
    cells = set()
    for role, state in [*REACHABLE, (Role.REQUESTOR, Sta.STA1), (Role.ACCEPTOR, Sta.STA1)]:
        for kind, arg in SINGLE_STEPS:
            ul = UpperLayer(role) if state is Sta.STA1 else reach(state, role)
            model = Model(role, state)
            run_operation(ul, model, kind, arg, 1.0)
            assert ul.state is model.state, (role, state, kind, arg)
            assert ul.should_close == model.ended
            if model.state is not state or model.ended:
                cells.add(state)
    assert cells == set(Sta)


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([start for start in REACHABLE if start[1] is not Sta.STA4]),
    header=st.tuples(st.integers(0, 10), st.integers(0, 300)),
    body=st.binary(max_size=300),
    cut=st.integers(1, 50),
)
def test_random_bytes_never_raise(
    start: tuple[Role, Sta], header: tuple[int, int], body: bytes, cut: int
) -> None:
    role, state = start
    ul = reach(state, role)
    data = bytes((header[0], 0)) + struct.pack(">I", header[1]) + body
    for offset in range(0, len(data), cut):
        ul.receive_data(data[offset : offset + cut])
        drain(ul)
    ul.receive_data(b"")
    drain(ul)
    assert ul.state is Sta.STA1
    assert ul.should_close
    assert ul.get_timer() is None


class LinkedPair(RuleBasedStateMachine):
    """A requestor and an acceptor on a fake wire, driven by random user primitives, partial
    deliveries, closes and time. Two correct peers never see a protocol error."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.in_flight = {role: bytearray() for role in Role}  # bytes travelling toward role
        self.eof_pending = dict.fromkeys(Role, False)
        self.transport_closed = dict.fromkeys(Role, False)
        self.peers: dict[Role, UpperLayer] = {}

    @initialize(established=st.booleans())
    def connect(self, established: bool) -> None:
        if established:
            requestor, acceptor = associated()
        else:
            requestor, acceptor = UpperLayer(Role.REQUESTOR), UpperLayer(Role.ACCEPTOR)
            requestor.send(RQ)
            requestor.connection_made(0.0)
            acceptor.connection_made(0.0)
        self.peers = {Role.REQUESTOR: requestor, Role.ACCEPTOR: acceptor}
        self.flush(Role.REQUESTOR)

    @staticmethod
    def other(role: Role) -> Role:
        return Role.ACCEPTOR if role is Role.REQUESTOR else Role.REQUESTOR

    def flush(self, role: Role) -> None:
        data = self.peers[role].data_to_send()
        if data and not self.transport_closed[role]:
            self.in_flight[self.other(role)] += data

    def indications(self, role: Role) -> None:
        for event in drain(self.peers[role]):
            assert not (isinstance(event, ProviderAbort) and event.abort_reason is not None), event
        self.flush(role)

    @rule(role=st.sampled_from(Role), event=st.sampled_from(list(PRIMITIVES)[1:-1]))
    def user_tries_any_primitive(self, role: Role, event: Evt) -> None:
        ul = self.peers[role]
        state = ul.state
        try:
            ul.send(PRIMITIVES[event], now=self.now)
        except LocalProtocolError:
            assert ul.state is state
        self.flush(role)

    @rule(role=st.sampled_from(Role), data=st.data())
    def user_acts_legally(self, role: Role, data: st.DataObject) -> None:
        ul = self.peers[role]
        legal = [
            event
            for event in list(PRIMITIVES)[1:-1]
            if (event, ul.state) in TRANSITIONS and not ul.should_close
        ]
        if legal:
            event = data.draw(st.sampled_from(legal))
            ul.send(PRIMITIVES[event], now=self.now)
            self.flush(role)

    @rule(role=st.sampled_from(Role), dice=st.integers(0, 9))
    def user_sometimes_aborts(self, role: Role, dice: int) -> None:
        ul = self.peers[role]
        if dice == 0 and (Evt.EVT15, ul.state) in TRANSITIONS and not ul.should_close:
            ul.send(PRIMITIVES[Evt.EVT15], now=self.now)
            self.flush(role)

    @rule(role=st.sampled_from(Role), size=st.integers(1, 200))
    def deliver(self, role: Role, size: int) -> None:
        queue = self.in_flight[role]
        if queue:
            chunk = bytes(queue[:size])
            del queue[:size]
            self.peers[role].receive_data(chunk)
        elif self.eof_pending[role]:
            self.eof_pending[role] = False
            self.peers[role].receive_data(b"")
        self.indications(role)

    @rule(role=st.sampled_from(Role))
    def transport_closes_when_told(self, role: Role) -> None:
        if self.peers[role].should_close and not self.transport_closed[role]:
            self.flush(role)
            self.transport_closed[role] = True
            self.in_flight[role].clear()
            self.eof_pending[self.other(role)] = True

    @rule(seconds=st.floats(0.0, 8.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for role, ul in self.peers.items():
            ul.handle_timer(self.now)
            self.flush(role)

    @invariant()
    def states_are_consistent(self) -> None:
        for ul in self.peers.values():
            assert (ul.get_timer() is not None) == (ul.state in TIMER_STATES)
            assert ul.should_close == (ul.state is Sta.STA1)
            assert ul.release_collision == (ul.state in (Sta.STA9, Sta.STA10, Sta.STA11, Sta.STA12))
        assert self.peers[Role.REQUESTOR].state not in (Sta.STA2, Sta.STA3, Sta.STA10, Sta.STA12)
        assert self.peers[Role.ACCEPTOR].state not in (Sta.STA4, Sta.STA5, Sta.STA9, Sta.STA11)


LinkedPair.TestCase.settings = settings(max_examples=200, stateful_step_count=80, deadline=None)
TestLinkedPair = LinkedPair.TestCase
