# Test certificates for DICOM over TLS, made with the openssl command line: a CA, a server
# certificate for localhost/127.0.0.1, a client certificate, and a client certificate from
# another CA (which a mutual-TLS server must refuse). RSA 2048, valid for two days.
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.synthetic import PATIENCE

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path
    #: A client certificate issued by an unrelated CA (rogue.ca).
    rogue_certificate: Path
    rogue_key: Path
    rogue_ca: Path


def _openssl(*args: object) -> None:
    subprocess.run(
        ["openssl", *(str(a) for a in args)], check=True, capture_output=True, timeout=PATIENCE
    )


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate,
        "-days", "2", "-subj", f"/CN=dicomnode test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return certificate, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    request, options = folder / f"{name}.csr", folder / f"{name}.ext"
    options.write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request,
        "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", certificate, "-days", "2", "-sha256", "-extfile", options,
    )  # fmt: skip
    return certificate, key


def make_tls_files(folder: Path) -> TLSFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "ca")
    server = _leaf(
        folder,
        "localhost",
        ca,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    client_extensions = (
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    client = _leaf(folder, "modality", ca, client_extensions)
    rogue_ca = _ca(folder, "rogue-ca")
    rogue = _leaf(folder, "rogue", rogue_ca, client_extensions)
    return TLSFiles(
        ca=ca[0],
        server_certificate=server[0],
        server_key=server[1],
        client_certificate=client[0],
        client_key=client[1],
        rogue_certificate=rogue[0],
        rogue_key=rogue[1],
        rogue_ca=rogue_ca[0],
    )
