# DICOM over TLS against DCMTK 3.6.7 (PS3.15 BCP 195 profiles): DCMTK's SCUs (+tls) to our
# SCP, our SCU to DCMTK's storescp (+tls), and mutual TLS refusing clients without a
# certificate from our CA; then `dicomnode serve` with TLS, a users file and an allow-list.
#
# Rules: certificates are made per session by tests.certificates (openssl); DCMTK runs with
# a timeout and its keys unencrypted (-pw); servers are always killed; no sleeps.
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest
from pydicom import dcmread

from node.tls import client_context, server_context
from node.users import add_user
from tests.synthetic import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    PATIENCE,
    VERIFICATION,
    free_port,
    run_tool,
    running,
    tool_env,
    wait_for_port,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.certificates import TLSFiles
    from tests.interop.conftest import Archive

pytestmark = pytest.mark.interop

WAIT = PATIENCE  # tests.synthetic: generous, never a wall-clock budget


def _dcmtk_client(tls_files: TLSFiles, *, certificate: str = "client") -> list[str]:
    """DCMTK options for a TLS client: our key pair (or +tla for none) and our CA."""
    if certificate == "none":
        identity = ["+tla"]
    elif certificate == "rogue":
        identity = ["+tls", str(tls_files.rogue_key), str(tls_files.rogue_certificate), "-pw"]
    else:
        identity = ["+tls", str(tls_files.client_key), str(tls_files.client_certificate), "-pw"]
    return [*identity, "+cf", str(tls_files.ca)]


class Received:
    def __init__(self) -> None:
        self.uids: list[str] = []
        self.done = threading.Event()

    def on_c_store(self, ds, context, info):
        self.uids.append(str(ds.SOPInstanceUID))
        self.done.set()
        return 0x0000


def _scp(make_ae, tls_files: TLSFiles, *, mutual: bool, received: Received | None = None):
    scp = make_ae("OURSCP")
    scp.add_supported_context(VERIFICATION)
    for uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        scp.add_supported_context(uid)
    if received is not None:
        scp.on_c_store = received.on_c_store
    scp.start(
        block=False,
        ssl_context=server_context(
            str(tls_files.server_certificate),
            str(tls_files.server_key),
            str(tls_files.ca) if mutual else None,
        ),
    )
    return scp


def test_storescu_over_mutual_tls_to_our_scp(make_ae, tls_files, archive: Archive):
    received = Received()
    scp = _scp(make_ae, tls_files, mutual=True, received=received)
    result = run_tool(
        [
            "storescu",
            *_dcmtk_client(tls_files),
            "-aec",
            "OURSCP",
            "127.0.0.1",
            scp.port,
            archive.paths[0],
        ]
    )
    assert result.returncode == 0, result.output
    assert received.done.wait(WAIT)
    assert received.uids == [str(archive.datasets[0].SOPInstanceUID)]


def test_echoscu_over_tls_to_our_scp(make_ae, tls_files):
    scp = _scp(make_ae, tls_files, mutual=False)
    result = run_tool(
        ["echoscu", "-v", *_dcmtk_client(tls_files), "-aec", "OURSCP", "127.0.0.1", scp.port]
    )
    assert result.returncode == 0, result.output
    assert "Received Echo Response (Success)" in result.output


@pytest.mark.parametrize("certificate", ["none", "rogue"])
def test_mutual_tls_refuses_dcmtk_without_a_certificate_from_our_ca(
    make_ae, tls_files, archive: Archive, certificate
):
    received = Received()
    scp = _scp(make_ae, tls_files, mutual=True, received=received)
    events: list[object] = []
    scp.on_association_requested = events.append
    target = ["-aec", "OURSCP", "127.0.0.1", scp.port, archive.paths[0]]
    refused = run_tool(["storescu", *_dcmtk_client(tls_files, certificate=certificate), *target])
    assert refused.returncode != 0
    assert "Association Request Failed" in refused.output
    assert events == []  # never got past the handshake
    assert not received.done.is_set()


def test_anonymous_dcmtk_client_is_fine_without_mutual_tls(make_ae, tls_files, archive):
    received = Received()
    scp = _scp(make_ae, tls_files, mutual=False, received=received)
    result = run_tool(
        [
            "storescu",
            *_dcmtk_client(tls_files, certificate="none"),
            "-aec",
            "OURSCP",
            "127.0.0.1",
            scp.port,
            archive.paths[0],
        ]
    )
    assert result.returncode == 0, result.output
    assert received.done.wait(WAIT)


def _tls_storescp(tmp_path: Path, tls_files: TLSFiles):
    port = free_port()
    folder = tmp_path / "storescp-tls"
    folder.mkdir()
    arguments = [
        "storescp",
        "+tls",
        tls_files.server_key,
        tls_files.server_certificate,
        "-pw",
        "+cf",
        tls_files.ca,
        "-aet",
        "STORESCP",
        "-od",
        folder,
        port,
    ]
    return port, folder, running(arguments, port)


def test_our_scu_over_mutual_tls_to_storescp(make_ae, tls_files, archive: Archive, tmp_path):
    port, folder, server = _tls_storescp(tmp_path, tls_files)
    with server:
        scu = make_ae("OURSCU")
        scu.add_requested_context(VERIFICATION)
        scu.add_requested_context(CT_IMAGE_STORAGE)
        scu.add_requested_context(MR_IMAGE_STORAGE)
        context = client_context(
            str(tls_files.ca), str(tls_files.client_certificate), str(tls_files.client_key)
        )
        association = scu.associate(
            "127.0.0.1", port, ae_title="STORESCP", tls_args=(context, "localhost")
        )
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000
        for dataset in archive.datasets[:2]:
            assert association.send_c_store(dataset).Status == 0x0000
        association.release()
        assert association.is_released
        without = make_ae("NOCERT")
        without.add_requested_context(VERIFICATION)
        refused = without.associate(
            "127.0.0.1",
            port,
            ae_title="STORESCP",
            tls_args=(client_context(str(tls_files.ca)), "localhost"),
        )
        assert not refused.is_established
    stored = sorted(str(dcmread(p).SOPInstanceUID) for p in folder.iterdir())
    assert stored == sorted(str(ds.SOPInstanceUID) for ds in archive.datasets[:2])


def test_serve_with_tls_users_and_allow_list(tls_files, archive: Archive, tmp_path, capsys):
    users = tmp_path / "users"
    add_user(users, "alice", "s3cret")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "serve",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--ae-title",
            "OURSCP",
            "--data-dir",
            str(tmp_path / "data"),
            "--no-fsync",
            "--workers",
            "0",
            "--tls-cert",
            str(tls_files.server_certificate),
            "--tls-key",
            str(tls_files.server_key),
            "--tls-ca",
            str(tls_files.ca),
            "--users",
            str(users),
            "--allow",
            "STORESCU=127.0.0.0/8",
            "--allow",
            "*=192.0.2.0/24",
            "--max-per-aet",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tool_env(),
    )
    try:
        wait_for_port(process, port, limit=PATIENCE)
        common = ["storescu", *_dcmtk_client(tls_files), "-aec", "OURSCP", "-usr", "alice"]
        target = ["127.0.0.1", port, archive.paths[0]]
        good = run_tool([*common, "-pwd", "s3cret", "-rsp", *target])
        assert good.returncode == 0, good.output
        wrong_password = run_tool([*common, "-pwd", "nope", *target])
        assert wrong_password.returncode != 0
        assert "Reason: No Reason" in wrong_password.output  # PS3.7 D.3.3.7 identity refused
        other_title = run_tool([*common, "-aet", "OTHER", "-pwd", "s3cret", *target])
        assert other_title.returncode != 0
        assert (
            "Reason: Calling AE Title Not Recognized" in other_title.output
        )  # not in 192.0.2.0/24
        from node import cli

        code = cli.main(
            [
                "echo",
                "127.0.0.1",
                str(port),
                "--aec",
                "OURSCP",
                "--tls-ca",
                str(tls_files.ca),
            ]
        )
        assert code == 1  # no client certificate: the TLS handshake fails
        assert "could not associate" in capsys.readouterr().err
        stored = list((tmp_path / "data" / "objects").rglob("*.dcm"))
        assert [dcmread(p).SOPInstanceUID for p in stored] == [archive.datasets[0].SOPInstanceUID]
    finally:
        process.terminate()
        errors = b""
        with contextlib.suppress(subprocess.TimeoutExpired):
            _output, errors = process.communicate(timeout=PATIENCE)
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=PATIENCE)
    assert process.returncode == 0, errors
    assert b"Traceback" not in errors
    assert b"s3cret" not in errors
