# DICOM over TLS between our own SCU and SCP (PS3.15 BCP 195 profiles): server certificate,
# host name checks, mutual TLS, and the contexts' refusals of bad files and old protocols.
from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest

from node.tls import client_context, server_context
from tests.synthetic import VERIFICATION

if TYPE_CHECKING:
    from tests.certificates import TLSFiles


def _scp(make_ae, tls_files: TLSFiles, *, mutual: bool = False):
    scp = make_ae("OURSCP")
    scp.add_supported_context(VERIFICATION)
    context = server_context(
        str(tls_files.server_certificate),
        str(tls_files.server_key),
        str(tls_files.ca) if mutual else None,
    )
    scp.start(block=False, ssl_context=context)
    return scp


def _associate(make_ae, port: int, context: ssl.SSLContext | None, name: str | None = None):
    scu = make_ae("OURSCU")
    scu.add_requested_context(VERIFICATION)
    tls_args = (context, name) if context is not None else None
    return scu.associate("127.0.0.1", port, ae_title="OURSCP", tls_args=tls_args)


def test_echo_over_tls_checks_the_server_certificate(make_ae, tls_files):
    scp = _scp(make_ae, tls_files)
    association = _associate(make_ae, scp.port, client_context(str(tls_files.ca)))
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    (server_side,) = scp.active_associations
    assert server_side.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    association.release()
    assert association.is_released
    by_name = _associate(make_ae, scp.port, client_context(str(tls_files.ca)), "localhost")
    assert by_name.is_established
    by_name.release()


@pytest.mark.parametrize(
    ("trusted", "name", "error"),
    [
        ("rogue_ca", None, "certificate verify failed"),
        ("ca", "pacs.example.org", "Hostname mismatch"),
    ],
)
def test_scu_refuses_an_untrusted_or_misnamed_server(make_ae, tls_files, trusted, name, error):
    scp = _scp(make_ae, tls_files)
    context = client_context(str(getattr(tls_files, trusted)))
    association = _associate(make_ae, scp.port, context, name)
    assert not association.is_established
    assert association.is_aborted
    assert error in (association.asynchronous.failure_reason or "")


def test_plain_tcp_peer_never_reaches_negotiation(make_ae, tls_files):
    scp = _scp(make_ae, tls_files)
    events: list[object] = []
    scp.on_association_requested = events.append
    association = _associate(make_ae, scp.port, None)
    assert not association.is_established
    assert events == []


def test_mutual_tls_accepts_only_clients_with_a_certificate_from_the_ca(make_ae, tls_files):
    scp = _scp(make_ae, tls_files, mutual=True)
    ca = str(tls_files.ca)
    good = _associate(
        make_ae,
        scp.port,
        client_context(ca, str(tls_files.client_certificate), str(tls_files.client_key)),
    )
    assert good.is_established
    (server_side,) = scp.active_associations
    subject = dict(
        item for rdn in server_side.transport.get_extra_info("peercert")["subject"] for item in rdn
    )
    assert subject["commonName"] == "modality"
    assert good.send_c_echo().Status == 0x0000
    good.release()
    without = _associate(make_ae, scp.port, client_context(ca))
    assert not without.is_established
    rogue = _associate(
        make_ae,
        scp.port,
        client_context(ca, str(tls_files.rogue_certificate), str(tls_files.rogue_key)),
    )
    assert not rogue.is_established


def test_contexts_name_unusable_files(tls_files, tmp_path):
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"not found: .*missing\.pem"):
        server_context(missing, str(tls_files.server_key))
    with pytest.raises(ValueError, match="cannot use TLS certificate"):
        server_context(str(tls_files.server_certificate), str(tls_files.client_key))
    with pytest.raises(ValueError, match="TLS CA file not found"):
        server_context(str(tls_files.server_certificate), str(tls_files.server_key), missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="cannot use TLS CA file"):
        client_context(str(garbage))
    with pytest.raises(ValueError, match="needs its certificate"):
        client_context(str(tls_files.ca), key=str(tls_files.client_key))


def test_contexts_follow_the_profile(tls_files):
    server = server_context(str(tls_files.server_certificate), str(tls_files.server_key))
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    tls12 = [c for c in server.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(c["aead"] and c["kea"] in ("kx-ecdhe", "kx-dhe") for c in tls12)
    mutual = server_context(
        str(tls_files.server_certificate), str(tls_files.server_key), str(tls_files.ca)
    )
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    client = client_context()  # the system's authorities
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname
    assert not client_context(str(tls_files.ca), check_hostname=False).check_hostname


def test_certificate_file_may_hold_the_key(tls_files, tmp_path):
    combined = tmp_path / "combined.pem"
    combined.write_bytes(
        tls_files.server_certificate.read_bytes() + tls_files.server_key.read_bytes()
    )
    assert server_context(str(combined)).minimum_version == ssl.TLSVersion.TLSv1_2
