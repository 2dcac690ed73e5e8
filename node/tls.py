# TLS for DICOM associations (PS3.15 Annex B, the BCP 195 TLS Secure Transport Connection
# Profiles): the SSL contexts of our SCP and our SCU.
#
# Rules: TLS 1.2 or later only; for TLS 1.2 only forward-secret AEAD cipher suites (ECDHE or
# DHE with AES-GCM or ChaCha20-Poly1305, what the non-downgrading BCP 195 profile asks for),
# TLS 1.3 with OpenSSL's suites. Certificates and keys are PEM files; an unreadable or
# mismatched file is a ValueError naming it, raised when the context is built (at start-up),
# never at the first association. Stdlib only.
from __future__ import annotations

import os
import ssl
from typing import Final

#: TLS 1.2 cipher suites (OpenSSL names): forward secrecy and authenticated encryption only.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def _check_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"TLS {what} file not found: {path}")


def _load_chain(context: ssl.SSLContext, certificate: str, key: str | None) -> None:
    _check_file(certificate, "certificate")
    if key is not None:
        _check_file(key, "key")
    try:
        context.load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(
            f"cannot use TLS certificate {certificate} with key {key or certificate}: {error}"
        ) from None


def _load_authorities(context: ssl.SSLContext, ca: str) -> None:
    _check_file(ca, "CA")
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"cannot use TLS CA file {ca}: {error}") from None


def server_context(
    certificate: str, key: str | None = None, ca: str | None = None
) -> ssl.SSLContext:
    """The SSL context of our SCP (PS3.15 B.9/B.10): our certificate chain and private key
    (PEM; `key` None when the certificate file holds it too). With `ca` (PEM bundle of trusted
    authorities) every peer must present a certificate they issued (mutual TLS: a client
    without one, or with another, fails the handshake and never reaches association
    negotiation)."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(context, certificate, key)
    if ca is not None:
        _load_authorities(context, ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: str | None = None,
    certificate: str | None = None,
    key: str | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """The SSL context of our SCU (PS3.15 B.9/B.10). The peer's certificate is always
    verified: against `ca` (PEM bundle) or else the system's trusted authorities; with
    `check_hostname` it must also name the host we connect to (or the server name given to
    `associate(tls_args=(context, name))`). `certificate`/`key` are our own chain and key for
    peers that require client certificates."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        _load_authorities(context, ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate is not None:
        _load_chain(context, certificate, key)
    elif key is not None:
        raise ValueError("a TLS key needs its certificate (--tls-cert)")
    return context
