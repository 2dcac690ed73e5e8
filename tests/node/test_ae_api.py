# The AE's public attributes, defaults, validation, presets and association policy (the seed's
# ApplicationEntity contract), plus the ARTIM / network timeouts, over loopback.
#
# Rules: every wait is bounded (socket timeouts, event waits); no sleeps.
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from node import (
    AE,
    ApplicationEntity,
    QueryRetrievePresentationContexts,
    StoragePresentationContexts,
    VerificationPresentationContexts,
    build_context,
)
from node.acse.requestor import build_associate_rq
from node.ul.pdu import Abort, AssociateAC, decode_pdu
from tests.synthetic import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, PATIENCE, VERIFICATION, make_dataset

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def _echo_scp(make_ae, title: str = "SCP", **attributes: Any):
    ae = make_ae(title, **attributes)
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(CT_IMAGE_STORAGE)
    ae.start(block=False)
    return ae


def _echo_scu(make_ae, title: str = "SCU"):
    ae = make_ae(title)
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT_IMAGE_STORAGE)
    return ae


def _read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU from a blocking socket (b'' when the peer closed)."""
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            return b""
        header += chunk
    length = int.from_bytes(header[2:6], "big")
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return header + body


# --- attributes and defaults ------------------------------------------------------------------


def test_defaults():
    ae = AE()
    assert ApplicationEntity is AE
    assert ae.ae_title == b"PYNETDICOM"
    assert ae.port == 0
    assert ae.bind_addr == ""
    assert ae.acse_timeout == 30
    assert ae.dimse_timeout is None
    assert ae.network_timeout == 60
    assert ae.maximum_associations == 2
    assert ae.maximum_pdu_size == 16382
    assert ae.require_calling_aet == []
    assert ae.require_called_aet is False
    assert ae.supported_contexts == []
    assert ae.requested_contexts == []
    assert ae.active_associations == []
    assert ae.implementation_class_uid.startswith("2.25.")
    assert ae.implementation_version_name
    assert isinstance(ae.address, str)
    assert all(getattr(ae, name) is None for name in ("on_c_store", "on_c_find", "on_n_get"))
    assert ae.on_association_accepted is None


def test_attribute_setters():
    ae = AE(ae_title="MYAE", port=11112)
    ae.ae_title = b"OTHER "
    assert ae.ae_title == b"OTHER"
    ae.acse_timeout = 5
    ae.dimse_timeout = 2.5
    ae.network_timeout = None
    ae.maximum_associations = 10
    ae.maximum_pdu_size = 0
    ae.require_calling_aet = [b"A", "B"]
    ae.implementation_version_name = b"TEST_1"
    assert (ae.acse_timeout, ae.dimse_timeout, ae.network_timeout) == (5.0, 2.5, None)
    assert ae.maximum_associations == 10
    assert ae.maximum_pdu_size == 0
    assert ae.require_calling_aet == [b"A", b"B"]
    assert ae.implementation_version_name == "TEST_1"
    assert ae.port == 11112
    assert "OTHER" in repr(ae)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("ae_title", "A" * 17),
        ("ae_title", ""),
        ("ae_title", "   "),
        ("acse_timeout", -1),
        ("dimse_timeout", -0.5),
        ("network_timeout", "60"),
        ("acse_timeout", True),
        ("maximum_associations", 0),
        ("maximum_associations", 1.5),
        ("maximum_pdu_size", 7),
        ("maximum_pdu_size", -1),
        ("require_calling_aet", [b"X" * 17]),
        ("implementation_class_uid", "1.2.abc"),
        ("implementation_version_name", "V" * 17),
    ],
)
def test_invalid_attribute_values_raise(attribute, value):
    ae = AE()
    with pytest.raises(ValueError, match=attribute.split("_")[0]):
        setattr(ae, attribute, value)


@pytest.mark.parametrize("title", ["A" * 17, ""])
def test_invalid_title_in_constructor(title):
    with pytest.raises(ValueError, match="ae_title"):
        AE(ae_title=title)


@pytest.mark.parametrize("port", [-1, 65536, "104"])
def test_invalid_port_in_constructor(port):
    with pytest.raises(ValueError, match="port"):
        AE(port=port)


# --- presentation contexts ----------------------------------------------------------------------


def test_presets():
    assert len(VerificationPresentationContexts) == 1
    assert VerificationPresentationContexts[0].abstract_syntax == VERIFICATION
    assert 0 < len(StoragePresentationContexts) <= 128
    assert CT_IMAGE_STORAGE in {c.abstract_syntax for c in StoragePresentationContexts}
    assert len(QueryRetrievePresentationContexts) >= 6
    ae = AE()
    ae.requested_contexts = StoragePresentationContexts
    assert len(ae.requested_contexts) == len(StoragePresentationContexts)
    for _ in range(128 - len(StoragePresentationContexts)):
        ae.add_requested_context(VERIFICATION)
    with pytest.raises(ValueError, match="128"):
        ae.add_requested_context(VERIFICATION)


def test_add_and_remove_supported_contexts():
    ae = AE()
    ae.add_supported_context(CT_IMAGE_STORAGE, IMPLICIT)
    ae.add_supported_context(CT_IMAGE_STORAGE, [EXPLICIT, IMPLICIT])
    (context,) = ae.supported_contexts
    assert context.transfer_syntaxes == (IMPLICIT, EXPLICIT)
    ae.add_supported_context(MR_IMAGE_STORAGE, scu_role=True, scp_role=True)
    assert len(ae.supported_contexts) == 2
    ae.remove_supported_context(CT_IMAGE_STORAGE, IMPLICIT)
    assert ae.supported_contexts[0].transfer_syntaxes == (EXPLICIT,)
    ae.remove_supported_context(CT_IMAGE_STORAGE, [EXPLICIT])
    assert [c.abstract_syntax for c in ae.supported_contexts] == [MR_IMAGE_STORAGE]
    ae.remove_supported_context(MR_IMAGE_STORAGE)
    ae.remove_supported_context("1.2.3.4")  # unknown: nothing happens
    assert ae.supported_contexts == []
    ae.supported_contexts = VerificationPresentationContexts
    assert [c.abstract_syntax for c in ae.supported_contexts] == [VERIFICATION]


def test_add_and_remove_requested_contexts():
    ae = AE()
    ae.add_requested_context(CT_IMAGE_STORAGE)
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT)
    ae.add_requested_context(VERIFICATION)
    assert len(ae.requested_contexts) == 3
    ae.remove_requested_context(CT_IMAGE_STORAGE, EXPLICIT)
    assert [c.abstract_syntax for c in ae.requested_contexts] == [CT_IMAGE_STORAGE, VERIFICATION]
    assert EXPLICIT not in ae.requested_contexts[0].transfer_syntaxes
    ae.remove_requested_context(CT_IMAGE_STORAGE)
    assert [c.abstract_syntax for c in ae.requested_contexts] == [VERIFICATION]


@pytest.mark.parametrize(
    "call",
    [
        lambda ae: ae.add_supported_context("1.2.840.abc"),
        lambda ae: ae.add_supported_context("1.2.840.10008.1.1", "not-a-uid"),
        lambda ae: ae.add_requested_context("1..2"),
        lambda ae: ae.add_requested_context("1.2.840.10008.1.1", []),
        lambda ae: build_context("1.2.3", ["1.2.840.10008.1.2", "1.2.840.10008.1.2"]),
    ],
)
def test_invalid_contexts_raise(call):
    with pytest.raises(ValueError, match=r"(?i)uid|syntax|transfer"):
        call(AE())


def test_start_and_associate_preconditions(make_ae):
    ae = make_ae("EMPTY")
    with pytest.raises(ValueError, match="supported presentation contexts"):
        ae.start(block=False)
    with pytest.raises(RuntimeError, match="requested presentation contexts"):
        ae.associate("127.0.0.1", 104)
    ae.add_requested_context(VERIFICATION)
    with pytest.raises(ValueError, match="port"):
        ae.associate("127.0.0.1", 0)
    with pytest.raises(TypeError):
        ae.associate(b"127.0.0.1", 104)
    ae.add_supported_context(VERIFICATION)
    with pytest.raises(ValueError, match="workers"):
        ae.start(block=False, workers=-1)
    ae.on_c_store = lambda ds, context, info: 0
    with pytest.raises(ValueError, match="on_c_store"):
        ae.start(block=False, workers=2)  # worker processes cannot import a lambda
    ae.on_c_store = None
    ae.start(block=False)
    assert ae.port > 0
    with pytest.raises(RuntimeError, match="already listening"):
        ae.start(block=False)


# --- negotiation policy ---------------------------------------------------------------------


def test_accepted_and_rejected_contexts(make_ae):
    scp = make_ae("SCP")
    scp.add_supported_context(VERIFICATION)
    scp.add_supported_context(CT_IMAGE_STORAGE, EXPLICIT)
    scp.start(block=False)
    scu = make_ae("SCU")
    scu.add_requested_context(VERIFICATION)
    scu.add_requested_context(CT_IMAGE_STORAGE, [IMPLICIT, EXPLICIT])
    scu.add_requested_context(MR_IMAGE_STORAGE)
    association = scu.associate("127.0.0.1", scp.port)
    assert association.is_established
    accepted = {c.abstract_syntax: c.transfer_syntax for c in association.accepted_contexts}
    assert accepted == {VERIFICATION: IMPLICIT, CT_IMAGE_STORAGE: EXPLICIT}
    assert [c.abstract_syntax for c in association.rejected_contexts] == [MR_IMAGE_STORAGE]
    assert association.send_c_store(make_dataset()) is not None
    with pytest.raises(ValueError, match="no accepted presentation context"):
        association.send_c_store(make_dataset(modality="MR"))
    association.release()


def test_require_calling_aet_rejects_others(make_ae):
    scp = _echo_scp(make_ae, require_calling_aet=[b"FRIEND"])
    stranger = _echo_scu(make_ae, "STRANGER").associate("127.0.0.1", scp.port)
    assert stranger.is_rejected
    assert not stranger.is_established
    rejection = stranger.asynchronous.rejection
    assert (rejection.result, rejection.source, rejection.reason) == (1, 1, 3)
    friend = _echo_scu(make_ae, "FRIEND").associate("127.0.0.1", scp.port)
    assert friend.is_established
    friend.release()


def test_require_called_aet(make_ae):
    scp = _echo_scp(make_ae, "RIGHT", require_called_aet=True)
    scu = _echo_scu(make_ae)
    wrong = scu.associate("127.0.0.1", scp.port, ae_title="WRONG")
    assert wrong.is_rejected
    rejection = wrong.asynchronous.rejection
    assert (rejection.result, rejection.source, rejection.reason) == (1, 1, 7)
    right = scu.associate("127.0.0.1", scp.port, ae_title=b"RIGHT")
    assert right.is_established
    right.release()


def test_maximum_associations_is_a_transient_local_limit(make_ae):
    scp = _echo_scp(make_ae, maximum_associations=1)
    scu = _echo_scu(make_ae)
    first = scu.associate("127.0.0.1", scp.port)
    assert first.is_established
    second = scu.associate("127.0.0.1", scp.port)
    assert second.is_rejected
    rejection = second.asynchronous.rejection
    assert (rejection.result, rejection.source, rejection.reason) == (2, 3, 2)
    first.release()
    third = scu.associate("127.0.0.1", scp.port)
    assert third.is_established
    third.release()


def test_active_associations(make_ae):
    accepted = threading.Event()
    released = threading.Event()
    scp = make_ae("SCP")
    scp.add_supported_context(VERIFICATION)
    scp.on_association_accepted = lambda _association: accepted.set()
    scp.on_association_released = lambda _association: released.set()
    scp.start(block=False)
    scu = _echo_scu(make_ae)
    association = scu.associate("127.0.0.1", scp.port)
    assert accepted.wait(WAIT)
    assert len(scp.active_associations) == 1
    assert len(scu.active_associations) == 1
    association.release()
    assert released.wait(WAIT)
    scu.cleanup_associations()
    assert scu.active_associations == []


def test_small_maximum_pdu_sizes_fragment_large_data_sets(make_ae):
    received: list[bytes] = []
    scp = make_ae("SCP", maximum_pdu_size=1024)
    scp.add_supported_context(CT_IMAGE_STORAGE)

    def on_c_store(ds, context, info):
        received.append(ds.PixelData)
        return 0

    scp.on_c_store = on_c_store
    scp.start(block=False)
    scu = _echo_scu(make_ae)
    association = scu.associate("127.0.0.1", scp.port, max_pdu=512)
    dataset = make_dataset(size=64)
    assert association.send_c_store(dataset).Status == 0
    association.release()
    assert received == [dataset.PixelData]


# --- timeouts -------------------------------------------------------------------------------


def test_silent_connection_closed_after_acse_timeout(make_ae):
    scp = _echo_scp(make_ae, acse_timeout=0.3)
    with socket.create_connection(("127.0.0.1", scp.port), timeout=WAIT) as sock:
        started = time.monotonic()
        data = sock.recv(1024)
        elapsed = time.monotonic() - started
    assert data == b""
    assert 0.2 <= elapsed < 5.0


def _associate_raw(port: int) -> socket.socket:
    request = build_associate_rq(
        calling_ae_title="RAW",
        called_ae_title="SCP",
        contexts=[build_context(VERIFICATION)],
        maximum_pdu_length=16382,
        implementation_class_uid="1.2.826.0.1.3680043.8.498.77.0",
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(request.encode())
    assert isinstance(decode_pdu(_read_pdu(sock)), AssociateAC)
    return sock


def test_idle_association_aborted_after_network_timeout(make_ae):
    aborted = threading.Event()
    scp = make_ae("SCP", network_timeout=0.3)
    scp.add_supported_context(VERIFICATION)
    scp.on_association_aborted = lambda _association: aborted.set()
    scp.start(block=False)
    with _associate_raw(scp.port) as sock:
        started = time.monotonic()
        pdu = _read_pdu(sock)
        elapsed = time.monotonic() - started
        assert isinstance(decode_pdu(pdu), Abort)
        assert sock.recv(16) == b""
    assert 0.2 <= elapsed < 5.0


def test_idle_scu_association_notices_abort(make_ae):
    scp = _echo_scp(make_ae, network_timeout=0.3)
    association = _echo_scu(make_ae).associate("127.0.0.1", scp.port)
    assert association.is_established
    closed = association.asynchronous.connection.closed
    scp_loop_done = threading.Event()
    closed.get_loop().call_soon_threadsafe(
        lambda: closed.add_done_callback(lambda _f: scp_loop_done.set())
    )
    assert scp_loop_done.wait(WAIT)
    assert not association.is_established
    assert association.is_aborted
    assert "Status" not in association.send_c_echo()


def test_stop_with_open_associations(make_ae):
    aborted = threading.Event()
    scp = _echo_scp(make_ae)
    scu = _echo_scu(make_ae)
    scu_side = scu.associate("127.0.0.1", scp.port)
    assert scu_side.is_established
    other_scp = _echo_scp(make_ae, "OTHER")
    other_scp.on_association_released = lambda _association: aborted.set()
    outgoing = scu.associate("127.0.0.1", other_scp.port)
    assert outgoing.is_established
    scp.stop()  # does not wait for the open association: it is aborted after a grace second
    assert scp.active_associations == []
    status = scu_side.send_c_echo()
    assert "Status" not in status  # no valid response: the acceptor went away
    scu.stop()  # releases what it requested
    assert aborted.wait(WAIT)
    assert outgoing.is_released


def test_blocking_start_stopped_from_another_thread(make_ae):
    from tests.synthetic import free_port

    scp = make_ae("BLOCKING")
    scp.add_supported_context(VERIFICATION)
    scp.port = free_port()
    accepted = threading.Event()
    scp.on_association_accepted = lambda _association: accepted.set()
    thread = threading.Thread(target=scp.start, daemon=True)
    thread.start()
    association = None
    deadline = time.monotonic() + WAIT
    scu = _echo_scu(make_ae)
    while time.monotonic() < deadline:  # bounded: the listener comes up within the deadline
        association = scu.associate("127.0.0.1", scp.port)
        if association.is_established:
            break
        thread.join(0.05)
    assert association is not None
    assert association.is_established
    assert accepted.wait(WAIT)
    assert association.send_c_echo().Status == 0
    association.release()
    scp.stop()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_scu_acse_timeout_when_the_peer_never_answers(make_ae):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # completes the TCP handshake, never answers the A-ASSOCIATE-RQ
        scu = _echo_scu(make_ae)
        scu.acse_timeout = 0.3
        started = time.monotonic()
        association = scu.associate("127.0.0.1", listener.getsockname()[1])
        elapsed = time.monotonic() - started
    assert association.is_aborted
    assert not association.is_established
    assert 0.2 <= elapsed < 5.0


def test_scu_dimse_timeout_aborts(make_ae):
    unblock = threading.Event()
    aborted = threading.Event()

    def on_c_echo(context, info):
        unblock.wait(WAIT)
        return 0x0000

    scp = make_ae("SCP")
    scp.add_supported_context(VERIFICATION)
    scp.on_c_echo = on_c_echo
    scp.on_association_aborted = lambda _association: aborted.set()
    scp.start(block=False)
    scu = _echo_scu(make_ae)
    scu.dimse_timeout = 0.3
    association = scu.associate("127.0.0.1", scp.port)
    try:
        started = time.monotonic()
        status = association.send_c_echo()
        elapsed = time.monotonic() - started
    finally:
        unblock.set()
    assert "Status" not in status
    assert 0.2 <= elapsed < 5.0
    assert association.is_aborted
    assert not association.is_established
    assert aborted.wait(WAIT)
