"""node.ul.association: a requestor and an acceptor linked by a fake wire (PS3.8 section 9)."""

# The object changes state inside method calls; mypy keeps `ul.state` narrowed across them.
# mypy: disable-error-code="comparison-overlap,unreachable"

from __future__ import annotations

import struct

import pytest

from node.ul.association import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    ProviderAbort,
    Role,
    UpperLayer,
)
from node.ul.errors import AbortReason, AbortSource, LocalProtocolError
from node.ul.fsm import TRANSITIONS, Evt, Sta
from node.ul.items import (
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    UserInformationItem,
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
    decode_pdu,
)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
USER_INFO = UserInformationItem((MaximumLengthSubItem(16382),))
RQ = AssociateRQ(
    "ANY-SCP",
    "ECHOSCU",
    (PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT_LITTLE,)),),
    USER_INFO,
)
AC = AssociateAC(
    "ANY-SCP", "ECHOSCU", (PresentationContextItemAC(1, 0, IMPLICIT_LITTLE),), USER_INFO
)
RJ = AssociateRJ(1, 1, 7)


def pdata(payload: bytes = b"\x01\x02", *, command: bool = True) -> PDataTF:
    return PDataTF((PresentationDataValueItem(1, command, True, payload),))


#: One example of every PDU, by the event it raises on receipt (PS3.8 Table 9-10).
RECEIVED: dict[Evt, PDU] = {
    Evt.EVT3: AC,
    Evt.EVT4: RJ,
    Evt.EVT6: RQ,
    Evt.EVT10: pdata(),
    Evt.EVT12: ReleaseRQ(),
    Evt.EVT13: ReleaseRP(),
    Evt.EVT16: Abort(),
}
#: One example of every local primitive, by its event.
PRIMITIVES: dict[Evt, PDU] = {
    Evt.EVT1: RQ,
    Evt.EVT7: AC,
    Evt.EVT8: RJ,
    Evt.EVT9: pdata(),
    Evt.EVT11: ReleaseRQ(),
    Evt.EVT14: ReleaseRP(),
    Evt.EVT15: Abort(),
}


def drain(ul: UpperLayer) -> list[Event]:
    events = []
    while (event := ul.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def pump(source: UpperLayer, target: UpperLayer) -> list[Event]:
    """Carry what `source` queued to `target` and return what `target` indicates."""
    data = source.data_to_send()
    if data:
        target.receive_data(data)
    return drain(target)


def feed(ul: UpperLayer, data: bytes, *, now: float | None = None) -> Event:
    ul.receive_data(data)
    return ul.next_event(now=now)


def sent_pdus(ul: UpperLayer) -> list[PDU]:
    """Decode everything `ul` queued for the wire."""
    data = ul.data_to_send()
    pdus = []
    while data:
        (length,) = struct.unpack_from(">I", data, 2)
        pdus.append(decode_pdu(data[: 6 + length]))
        data = data[6 + length :]
    return pdus


def associated(now: float = 0.0) -> tuple[UpperLayer, UpperLayer]:
    requestor = UpperLayer(Role.REQUESTOR)
    acceptor = UpperLayer(Role.ACCEPTOR)
    requestor.send(RQ)
    requestor.connection_made(now)
    acceptor.connection_made(now)
    assert pump(requestor, acceptor) == [RQ]
    acceptor.send(AC)
    assert pump(acceptor, requestor) == [AC]
    return requestor, acceptor


def reach(state: Sta, role: Role) -> UpperLayer:
    """An UpperLayer brought into `state` by legal steps, fed raw PDUs as from a peer."""
    ul = UpperLayer(role)
    paths: dict[tuple[Role, Sta], list[tuple[str, PDU | None]]] = {
        (Role.ACCEPTOR, Sta.STA2): [("connect", None)],
        (Role.ACCEPTOR, Sta.STA3): [("connect", None), ("recv", RQ)],
        (Role.REQUESTOR, Sta.STA4): [("send", RQ)],
        (Role.REQUESTOR, Sta.STA5): [("send", RQ), ("connect", None)],
    }
    if role is Role.ACCEPTOR:
        established = [*paths[(role, Sta.STA3)], ("send", AC)]
    else:
        established = [*paths[(role, Sta.STA5)], ("recv", AC)]
    release = [*established, ("send", ReleaseRQ())]
    collision = [*release, ("recv", ReleaseRQ())]
    paths |= {
        (role, Sta.STA6): established,
        (role, Sta.STA7): release,
        (role, Sta.STA8): [*established, ("recv", ReleaseRQ())],
        (Role.REQUESTOR, Sta.STA9): collision,
        (Role.ACCEPTOR, Sta.STA10): collision,
        (Role.REQUESTOR, Sta.STA11): [*collision, ("send", ReleaseRP())],
        (Role.ACCEPTOR, Sta.STA12): [*collision, ("recv", ReleaseRP())],
        (role, Sta.STA13): [*established, ("send", Abort())],
    }
    for step, pdu in paths[(role, state)]:
        if step == "connect":
            ul.connection_made(0.0)
        elif step == "send":
            assert pdu is not None
            ul.send(pdu)
        else:
            assert pdu is not None
            assert feed(ul, pdu.encode()) == pdu
    assert ul.state is state
    ul.data_to_send()
    return ul


#: Every state reachable by each role, and how.
REACHABLE = [
    (role, state)
    for role in Role
    for state in Sta
    if state is not Sta.STA1
    and not (role is Role.REQUESTOR and state in (Sta.STA2, Sta.STA3, Sta.STA10, Sta.STA12))
    and not (role is Role.ACCEPTOR and state in (Sta.STA4, Sta.STA5, Sta.STA9, Sta.STA11))
]


# ---------------------------------------------------------------------------- establishment


def test_associate_accept() -> None:
    requestor = UpperLayer(Role.REQUESTOR)
    acceptor = UpperLayer(Role.ACCEPTOR)
    requestor.send(RQ)  # Evt1: AE-1
    assert requestor.state is Sta.STA4
    assert requestor.data_to_send() == b""  # AE-2 sends it once the transport is up
    requestor.connection_made(5.0)  # Evt2: AE-2
    assert requestor.state is Sta.STA5
    assert requestor.get_timer() is None
    acceptor.connection_made(5.0)  # Evt5: AE-5 starts ARTIM
    assert acceptor.state is Sta.STA2
    assert acceptor.get_timer() == 35.0
    assert pump(requestor, acceptor) == [RQ]  # Evt6: AE-6 stops ARTIM
    assert acceptor.state is Sta.STA3
    assert acceptor.get_timer() is None
    acceptor.send(AC)  # Evt7: AE-7
    assert acceptor.is_established
    assert pump(acceptor, requestor) == [AC]  # Evt3: AE-3
    assert requestor.is_established
    assert not requestor.should_close
    assert not acceptor.should_close


def test_associate_reject() -> None:
    requestor = UpperLayer(Role.REQUESTOR)
    acceptor = UpperLayer(Role.ACCEPTOR, artim_timeout=10.0)
    requestor.send(RQ)
    requestor.connection_made(0.0)
    acceptor.connection_made(0.0)
    pump(requestor, acceptor)
    acceptor.send(RJ, now=3.0)  # Evt8: AE-8 starts ARTIM
    assert acceptor.state is Sta.STA13
    assert acceptor.get_timer() == 13.0
    assert not acceptor.should_close
    assert pump(acceptor, requestor) == [RJ]  # Evt4: AE-4 closes
    assert requestor.state is Sta.STA1
    assert requestor.should_close
    acceptor.receive_data(b"")  # the requestor closed: Evt17, AR-5
    assert drain(acceptor) == [ConnectionClosed()]
    assert acceptor.state is Sta.STA1
    assert acceptor.get_timer() is None
    assert acceptor.should_close


def test_connection_made_needs_the_request_first() -> None:
    requestor = UpperLayer(Role.REQUESTOR)
    with pytest.raises(LocalProtocolError, match="Evt2"):
        requestor.connection_made(0.0)
    assert requestor.state is Sta.STA1


def test_acceptor_cannot_request() -> None:
    acceptor = UpperLayer(Role.ACCEPTOR)
    with pytest.raises(LocalProtocolError, match="acceptor"):
        acceptor.send(RQ)
    assert acceptor.state is Sta.STA1
    acceptor.connection_made(0.0)
    with pytest.raises(LocalProtocolError, match="Evt5"):
        acceptor.connection_made(1.0)


def test_unencodable_primitive_changes_nothing() -> None:
    requestor = UpperLayer(Role.REQUESTOR)
    with pytest.raises(LocalProtocolError, match="cannot encode A-ASSOCIATE-RQ"):
        requestor.send(AssociateRQ("A-CALLED-AE-TITLE-TOO-LONG", "ME", ()))
    assert requestor.state is Sta.STA1
    requestor, _ = associated()
    bad = PDataTF((PresentationDataValueItem(300, True, True, b"x"),))
    with pytest.raises(LocalProtocolError, match="cannot encode P-DATA-TF"):
        requestor.send(bad)
    assert requestor.is_established
    assert requestor.data_to_send() == b""


def test_receive_data_before_connection_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        UpperLayer(Role.ACCEPTOR).receive_data(RQ.encode())
    requestor = UpperLayer(Role.REQUESTOR)
    requestor.send(RQ)
    with pytest.raises(LocalProtocolError):
        requestor.receive_data(AC.encode())
    assert requestor.next_event() is NEED_DATA
    assert requestor.state is Sta.STA4


def test_connect_failure_is_a_provider_abort() -> None:
    requestor = UpperLayer(Role.REQUESTOR)
    requestor.send(RQ)
    requestor.receive_data(b"")  # Evt17 in Sta4: AA-4
    event = requestor.next_event()
    assert isinstance(event, ProviderAbort)
    assert event.abort_reason is None
    assert requestor.state is Sta.STA1
    assert requestor.should_close


def test_abort_while_connecting_closes() -> None:
    requestor = UpperLayer(Role.REQUESTOR)
    requestor.send(RQ)
    requestor.send(Abort())  # Evt15 in Sta4: AA-2
    assert requestor.state is Sta.STA1
    assert requestor.should_close
    assert requestor.data_to_send() == b""
    with pytest.raises(LocalProtocolError, match="ended"):
        requestor.connection_made(1.0)


# ---------------------------------------------------------------------------- data transfer


def test_pdata_both_ways() -> None:
    requestor, acceptor = associated()
    requestor.send(pdata(b"command"))  # DT-1
    requestor.send(pdata(b"dataset", command=False))
    assert pump(requestor, acceptor) == [pdata(b"command"), pdata(b"dataset", command=False)]
    acceptor.send(pdata(b"response"))
    assert pump(acceptor, requestor) == [pdata(b"response")]  # DT-2
    assert requestor.is_established
    assert acceptor.is_established


def test_send_pdata_bytes_fast_path() -> None:
    requestor, acceptor = associated()
    encoded = [pdata(bytes([n]) * 100).encode() for n in range(5)]
    requestor.send_pdata_bytes(encoded)
    assert requestor.data_to_send() == b"".join(encoded)
    requestor.send_pdata_bytes(encoded)
    assert pump(requestor, acceptor) == [pdata(bytes([n]) * 100) for n in range(5)]
    with pytest.raises(LocalProtocolError, match="Evt9"):
        UpperLayer(Role.ACCEPTOR).send_pdata_bytes(encoded)


def test_byte_at_a_time() -> None:
    requestor, acceptor = associated()
    for n in range(3):
        requestor.send(pdata(bytes([n]) * 50))
    requestor.send(ReleaseRQ())
    data = requestor.data_to_send()
    events = []
    for byte in data:
        acceptor.receive_data(bytes([byte]))
        events.extend(drain(acceptor))
    assert events == [*(pdata(bytes([n]) * 50) for n in range(3)), ReleaseRQ()]


def test_many_pdus_in_one_read_with_a_partial_tail() -> None:
    requestor, acceptor = associated()
    for n in range(200):
        requestor.send(pdata(n.to_bytes(2, "big") * 20))
    data = requestor.data_to_send()
    acceptor.receive_data(data[:-7])
    first = drain(acceptor)
    assert len(first) == 199
    acceptor.receive_data(data[-7:])
    assert drain(acceptor) == [pdata((199).to_bytes(2, "big") * 20)]


def test_large_pdata_across_reads() -> None:
    requestor, acceptor = associated()
    acceptor.maximum_pdata_length = 0  # unlimited (up to the codec's ceiling)
    payload = bytes(range(256)) * 4096  # 1 MiB
    requestor.send(pdata(payload))
    data = requestor.data_to_send()
    *reads, last = [data[start : start + 65536] for start in range(0, len(data), 65536)]
    for chunk in reads:
        acceptor.receive_data(chunk)
        assert acceptor.next_event() is NEED_DATA
    acceptor.receive_data(last)
    assert drain(acceptor) == [pdata(payload)]


def test_data_to_send_is_drained() -> None:
    requestor, _ = associated()
    requestor.send(pdata())
    assert requestor.data_to_send() == pdata().encode()
    assert requestor.data_to_send() == b""


# ---------------------------------------------------------------------------- release


@pytest.mark.parametrize("initiator", list(Role))
def test_release(initiator: Role) -> None:
    requestor, acceptor = associated()
    asker, answerer = (
        (requestor, acceptor) if initiator is Role.REQUESTOR else (acceptor, requestor)
    )
    asker.send(ReleaseRQ())  # AR-1
    assert asker.state is Sta.STA7
    assert pump(asker, answerer) == [ReleaseRQ()]  # AR-2
    assert answerer.state is Sta.STA8
    answerer.send(pdata(b"late"))  # AR-7: data may still flow toward the asker
    assert pump(answerer, asker) == [pdata(b"late")]  # AR-6
    assert asker.state is Sta.STA7
    answerer.send(ReleaseRP(), now=50.0)  # AR-4 starts ARTIM
    assert answerer.state is Sta.STA13
    assert answerer.get_timer() == 80.0
    assert pump(answerer, asker) == [ReleaseRP()]  # AR-3 closes
    assert asker.state is Sta.STA1
    assert asker.should_close
    answerer.receive_data(b"")
    assert answerer.next_event() == ConnectionClosed()  # AR-5
    assert answerer.get_timer() is None
    assert answerer.should_close


@pytest.mark.parametrize("requestor_hears_first", [True, False])
def test_release_collision(requestor_hears_first: bool) -> None:
    requestor, acceptor = associated()
    requestor.send(ReleaseRQ())
    acceptor.send(ReleaseRQ())
    to_acceptor = requestor.data_to_send()
    to_requestor = acceptor.data_to_send()
    order = [(to_requestor, requestor), (to_acceptor, acceptor)]
    for data, target in order if requestor_hears_first else order[::-1]:
        target.receive_data(data)
        assert drain(target) == [ReleaseRQ()]  # AR-8
    assert requestor.state is Sta.STA9
    assert acceptor.state is Sta.STA10
    assert requestor.release_collision
    assert acceptor.release_collision
    with pytest.raises(LocalProtocolError, match="Sta10"):
        acceptor.send(ReleaseRP())  # the acceptor waits for the requestor's answer
    requestor.send(ReleaseRP())  # AR-9
    assert requestor.state is Sta.STA11
    assert pump(requestor, acceptor) == [ReleaseRP()]  # AR-10
    assert acceptor.state is Sta.STA12
    acceptor.send(ReleaseRP())  # AR-4
    assert acceptor.state is Sta.STA13
    assert pump(acceptor, requestor) == [ReleaseRP()]  # AR-3
    assert requestor.state is Sta.STA1
    assert requestor.should_close
    assert not requestor.release_collision
    acceptor.receive_data(b"")
    assert drain(acceptor) == [ConnectionClosed()]


def test_release_collision_when_the_requestor_answers_before_the_acceptor_hears() -> None:
    requestor, acceptor = associated()
    requestor.send(ReleaseRQ())
    acceptor.send(ReleaseRQ())
    to_acceptor = requestor.data_to_send()
    assert pump(acceptor, requestor) == [ReleaseRQ()]  # requestor: Sta7 -> Sta9
    requestor.send(ReleaseRP())  # Sta9 -> Sta11
    acceptor.receive_data(to_acceptor + requestor.data_to_send())
    assert drain(acceptor) == [ReleaseRQ(), ReleaseRP()]  # AR-8 then AR-10
    assert acceptor.state is Sta.STA12
    acceptor.send(ReleaseRP())
    assert pump(acceptor, requestor) == [ReleaseRP()]
    assert requestor.should_close


# ---------------------------------------------------------------------------- abort


@pytest.mark.parametrize("initiator", list(Role))
def test_abort(initiator: Role) -> None:
    requestor, acceptor = associated()
    aborter, other = (requestor, acceptor) if initiator is Role.REQUESTOR else (acceptor, requestor)
    aborter.send(Abort(), now=7.0)  # AA-1
    assert aborter.state is Sta.STA13
    assert aborter.get_timer() == 37.0
    with pytest.raises(LocalProtocolError, match="Sta13"):
        aborter.send(pdata())
    other.send(pdata())  # crosses the abort on the wire: ignored in Sta13 (AA-6)
    assert pump(aborter, other) == [Abort(AbortSource.SERVICE_USER, AbortReason.NOT_SPECIFIED)]
    assert other.state is Sta.STA1  # AA-3
    assert other.should_close
    with pytest.raises(LocalProtocolError, match="ended"):
        other.send(pdata())
    aborter.receive_data(other.data_to_send())
    assert aborter.next_event() is NEED_DATA
    aborter.receive_data(b"")
    assert drain(aborter) == [ConnectionClosed()]  # AR-5
    assert aborter.should_close


def test_abort_received_before_association_request() -> None:
    acceptor = reach(Sta.STA2, Role.ACCEPTOR)
    assert feed(acceptor, Abort().encode()) == Abort()  # AA-2
    assert acceptor.state is Sta.STA1
    assert acceptor.get_timer() is None
    assert acceptor.should_close


def test_abort_received_in_sta13_closes() -> None:
    ul = reach(Sta.STA13, Role.REQUESTOR)
    assert feed(ul, Abort(AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU).encode()) == (
        Abort(AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU)
    )
    assert ul.state is Sta.STA1
    assert ul.get_timer() is None
    assert ul.should_close


def test_ended_object_ignores_further_bytes() -> None:
    requestor, _ = associated()
    requestor.receive_data(Abort().encode() + pdata().encode())
    assert drain(requestor) == [Abort()]  # the P-DATA after it is discarded
    requestor.receive_data(pdata().encode())
    requestor.receive_data(b"")
    assert requestor.next_event() is NEED_DATA
    assert requestor.state is Sta.STA1


# ---------------------------------------------------------------------------- ARTIM


def test_artim_expires_on_a_silent_peer() -> None:
    acceptor = UpperLayer(Role.ACCEPTOR, artim_timeout=30.0)
    acceptor.connection_made(100.0)
    assert acceptor.get_timer() == 130.0
    acceptor.handle_timer(129.9)
    assert acceptor.state is Sta.STA2
    acceptor.handle_timer(130.0)  # Evt18: AA-2
    assert acceptor.state is Sta.STA1
    assert acceptor.should_close
    assert acceptor.get_timer() is None
    assert acceptor.data_to_send() == b""


@pytest.mark.parametrize("ending", ["reject", "abort", "release"])
def test_artim_expires_in_sta13(ending: str) -> None:
    if ending == "reject":
        ul = reach(Sta.STA3, Role.ACCEPTOR)
        ul.send(RJ, now=10.0)
    elif ending == "abort":
        ul = reach(Sta.STA6, Role.REQUESTOR)
        ul.send(Abort(), now=10.0)
    else:
        ul = reach(Sta.STA8, Role.ACCEPTOR)
        ul.send(ReleaseRP(), now=10.0)
    assert ul.state is Sta.STA13
    assert ul.get_timer() == 40.0
    ul.handle_timer(39.0)
    assert not ul.should_close
    ul.handle_timer(41.0)
    assert ul.state is Sta.STA1
    assert ul.should_close
    ul.handle_timer(100.0)  # nothing left to expire
    assert ul.state is Sta.STA1


def test_timer_is_a_no_op_when_stopped() -> None:
    requestor, _ = associated()
    requestor.handle_timer(1e9)
    assert requestor.is_established


def test_artim_restarts_on_an_unexpected_pdu_in_sta2() -> None:
    acceptor = reach(Sta.STA2, Role.ACCEPTOR)
    assert acceptor.get_timer() == 30.0
    event = feed(acceptor, pdata().encode(), now=12.0)  # Evt10 in Sta2: AA-1
    assert isinstance(event, ProviderAbort)
    assert acceptor.get_timer() == 42.0


def test_artim_counts_from_the_latest_time_given() -> None:
    requestor, _ = associated(now=5.0)
    requestor.handle_timer(20.0)  # nothing runs, but the clock moves
    requestor.send(Abort())
    assert requestor.get_timer() == 50.0


# ---------------------------------------------------------------------------- transport closed


@pytest.mark.parametrize(("role", "state"), REACHABLE)
def test_connection_closed_in_every_state(role: Role, state: Sta) -> None:
    ul = reach(state, role)
    ul.receive_data(b"")
    event = ul.next_event()
    action = TRANSITIONS[(Evt.EVT17, state)]
    if action == "AA-4":
        assert isinstance(event, ProviderAbort)
        assert event.abort_reason is None
    else:
        assert action in ("AA-5", "AR-5")
        assert event == ConnectionClosed()
    assert ul.state is Sta.STA1
    assert ul.should_close
    assert ul.get_timer() is None
    assert ul.next_event() is NEED_DATA


def test_pdus_before_the_close_are_delivered_first() -> None:
    requestor, _ = associated()
    requestor.receive_data(pdata().encode())
    requestor.receive_data(b"")
    requestor.receive_data(b"more")  # after EOF: ignored
    events = drain(requestor)
    assert events[0] == pdata()
    assert len(events) == 2
    assert isinstance(events[1], ProviderAbort)  # Evt17 in Sta6: AA-4
    assert events[1].abort_reason is None
    assert requestor.state is Sta.STA1


def test_partial_pdu_then_close_is_a_provider_abort() -> None:
    requestor, _ = associated()
    requestor.receive_data(pdata().encode()[:5])
    requestor.receive_data(b"")
    event = requestor.next_event()
    assert isinstance(event, ProviderAbort)
    assert event.abort_reason is None


# ---------------------------------------------------------------------------- bad peer data

UNKNOWN_TYPE = bytes((0x09, 0)) + (4).to_bytes(4, "big") + bytes(4)
RELEASE_RQ_TOO_LONG = bytes((0x05, 0)) + (5).to_bytes(4, "big") + bytes(5)
PDV_TOO_SHORT = bytes((0x04, 0)) + (5).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\x01"
ASSOCIATE_RQ_TRUNCATED = bytes((0x01, 0)) + (10).to_bytes(4, "big") + bytes(10)


def aborts_sent(ul: UpperLayer) -> list[PDU]:
    pdus = sent_pdus(ul)
    assert all(isinstance(pdu, Abort) for pdu in pdus)
    return pdus


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (UNKNOWN_TYPE, AbortReason.UNRECOGNIZED_PDU),
        (RELEASE_RQ_TOO_LONG, AbortReason.INVALID_PDU_PARAMETER_VALUE),
        (PDV_TOO_SHORT, AbortReason.INVALID_PDU_PARAMETER_VALUE),
        (ASSOCIATE_RQ_TRUNCATED, AbortReason.INVALID_PDU_PARAMETER_VALUE),
        (AC.encode(), AbortReason.UNEXPECTED_PDU),
        (RQ.encode(), AbortReason.UNEXPECTED_PDU),
        (ReleaseRP().encode(), AbortReason.UNEXPECTED_PDU),
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_bad_pdu_in_sta6_is_aa_8(role: Role, data: bytes, reason: AbortReason) -> None:
    ul = reach(Sta.STA6, role)
    event = feed(ul, data, now=3.0)
    assert isinstance(event, ProviderAbort)
    assert event.abort_reason is reason
    assert "AA-8" in event.reason
    assert ul.state is Sta.STA13
    assert ul.get_timer() == 33.0
    assert aborts_sent(ul) == [Abort(AbortSource.SERVICE_PROVIDER, reason)]
    assert not ul.should_close
    with pytest.raises(LocalProtocolError):
        ul.send(Abort())


def test_oversized_pdata_is_refused_from_its_header() -> None:
    _, acceptor = associated()
    acceptor.maximum_pdata_length = 1000
    header = bytes((0x04, 0)) + (1001).to_bytes(4, "big")
    event = feed(acceptor, header)  # no body yet: refused from the header alone
    assert isinstance(event, ProviderAbort)
    assert event.abort_reason is AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert "1001" in event.reason
    assert aborts_sent(acceptor) == [
        Abort(AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PDU_PARAMETER_VALUE)
    ]
    acceptor.receive_data(bytes(1_000_000))  # the body that follows is never buffered
    assert len(acceptor._buffer) == 0
    assert acceptor.next_event() is NEED_DATA
    acceptor.receive_data(b"")
    assert acceptor.next_event() == ConnectionClosed()


def test_pdata_at_the_limit_is_accepted() -> None:
    requestor, acceptor = associated()
    acceptor.maximum_pdata_length = 1000
    exact = pdata(bytes(1000 - 6))
    assert len(exact.encode()) == 6 + 1000
    requestor.send(exact)
    assert pump(requestor, acceptor) == [exact]


@pytest.mark.parametrize(
    "data", [UNKNOWN_TYPE, PDV_TOO_SHORT, pdata().encode(), AC.encode(), ReleaseRQ().encode()]
)
def test_bad_pdu_in_sta2_is_aa_1(data: bytes) -> None:
    acceptor = reach(Sta.STA2, Role.ACCEPTOR)
    event = feed(acceptor, data)
    assert isinstance(event, ProviderAbort)
    assert "AA-1" in event.reason
    assert event.abort_reason is AbortReason.NOT_SPECIFIED
    assert acceptor.state is Sta.STA13
    # AA-1: "Send A-ABORT PDU (service-user source)"; the reason is then not significant.
    assert aborts_sent(acceptor) == [Abort(AbortSource.SERVICE_USER, AbortReason.NOT_SPECIFIED)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (RQ.encode(), AbortReason.UNEXPECTED_PDU),
        (PDV_TOO_SHORT, AbortReason.INVALID_PDU_PARAMETER_VALUE),
    ],
)
def test_request_or_invalid_pdu_in_sta13_is_aa_7(data: bytes, reason: AbortReason) -> None:
    ul = reach(Sta.STA13, Role.ACCEPTOR)
    deadline = ul.get_timer()
    event = feed(ul, data, now=20.0)
    assert isinstance(event, ProviderAbort)
    assert "AA-7" in event.reason
    assert event.abort_reason is reason
    assert ul.state is Sta.STA13
    assert ul.get_timer() == deadline  # AA-7 leaves ARTIM alone
    assert aborts_sent(ul) == [Abort(AbortSource.SERVICE_PROVIDER, reason)]


@pytest.mark.parametrize("pdu", [AC, RJ, pdata(), ReleaseRQ(), ReleaseRP()])
def test_pdus_are_ignored_in_sta13(pdu: PDU) -> None:
    ul = reach(Sta.STA13, Role.REQUESTOR)
    ul.receive_data(pdu.encode() * 3)
    assert ul.next_event() is NEED_DATA  # AA-6
    assert ul.state is Sta.STA13
    assert ul.data_to_send() == b""


# ---------------------------------------------------------------------------- local errors


ILLEGAL_PRIMITIVES = [
    (role, state, event)
    for role, state in [*REACHABLE, (Role.ACCEPTOR, Sta.STA1)]
    for event in PRIMITIVES
    if (event, state) not in TRANSITIONS or (event is Evt.EVT1 and role is Role.ACCEPTOR)
]


@pytest.mark.parametrize(("role", "state", "event"), ILLEGAL_PRIMITIVES)
def test_local_primitive_without_table_entry(role: Role, state: Sta, event: Evt) -> None:
    ul = UpperLayer(role) if state is Sta.STA1 else reach(state, role)
    with pytest.raises(LocalProtocolError):
        ul.send(PRIMITIVES[event])
    assert ul.state is state
    assert ul.data_to_send() == b""


@pytest.mark.parametrize("event", list(PRIMITIVES))
def test_ended_association_refuses_every_primitive(event: Evt) -> None:
    requestor, acceptor = associated()
    requestor.send(ReleaseRQ())
    pump(requestor, acceptor)
    acceptor.send(ReleaseRP())
    pump(acceptor, requestor)
    assert requestor.state is Sta.STA1
    with pytest.raises(LocalProtocolError, match="ended"):
        requestor.send(PRIMITIVES[event])
    assert requestor.state is Sta.STA1


def test_received_events_cover_every_pdu() -> None:
    assert sorted(e.value for e in RECEIVED) == [3, 4, 6, 10, 12, 13, 16]
    assert all(decode_pdu(pdu.encode()) == pdu for pdu in RECEIVED.values())
