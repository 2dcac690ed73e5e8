# The seed's examples run as written with `node` in place of `pynetdicom` (issue 4), and the
# connection hooks on_receive_connection / on_make_connection do what the AE documents.
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic import (
    PATIENCE,
    VERIFICATION,
    free_port,
    make_datasets,
    run_tool,
    wait_for_port,
    write_datasets,
)

SEED = Path(__file__).parent / "seed"
ROOT = Path(__file__).resolve().parents[2]


def _environment(port: int) -> dict[str, str]:
    environment = dict(os.environ)
    environment["SEED_PORT"] = str(port)
    environment["PYTHONPATH"] = str(ROOT)
    return environment


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default, as in a terminal. A runner started
    without job control (a CI job in the background) ignores SIGINT, its children inherit that,
    and Python then installs no KeyboardInterrupt handler: Ctrl-C could never reach start()."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.interop
def test_seed_storage_scp_and_echo_scu_examples(tmp_path: Path, make_ae):
    port = free_port()
    scp = subprocess.Popen(
        [sys.executable, str(SEED / "storage_scp.py")],
        cwd=tmp_path,
        env=_environment(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_interruptible,
    )
    try:
        wait_for_port(scp, port)
        folder = tmp_path / "in"
        datasets = make_datasets(patients=1, studies=1, series=1, instances=2)
        write_datasets(datasets, folder)
        result = run_tool(["storescu", "127.0.0.1", port, "+sd", folder])
        assert result.returncode == 0, result.output
        for ds in datasets:
            assert (tmp_path / str(ds.SOPInstanceUID)).is_file()  # the example's save_as
        verification = make_ae("ECHOSCP")  # the storage example offers no Verification
        verification.add_supported_context(VERIFICATION)
        verification.start(block=False)
        echo = subprocess.run(
            [sys.executable, str(SEED / "echo_scu.py")],
            env=_environment(verification.port),
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=False,
        )
        assert echo.returncode == 0, echo.stdout + echo.stderr
        assert "C-ECHO status: 0x0000" in echo.stdout
    finally:
        scp.send_signal(signal.SIGINT)  # start() blocks; Ctrl-C stops it cleanly
        try:
            assert scp.wait(PATIENCE) == 0
        finally:
            if scp.poll() is None:
                scp.kill()
                scp.wait()


def test_on_receive_connection_can_refuse_and_on_make_connection_sees_the_peer(make_ae):
    scp = make_ae("HOOKSCP")
    scp.add_supported_context(VERIFICATION)
    seen: list[tuple[str, int]] = []
    refuse = [False]

    def on_receive_connection(address: tuple[str, int]) -> bool:
        seen.append(address)
        return not refuse[0]

    scp.on_receive_connection = on_receive_connection
    scp.start(block=False)
    scu = make_ae("HOOKSCU")
    scu.add_requested_context(VERIFICATION)
    made: list[tuple[str, int]] = []
    scu.on_make_connection = lambda address: made.append(address)
    association = scu.associate("127.0.0.1", scp.port)
    assert association.is_established
    assert association.send_c_echo().Status == 0
    association.release()
    assert made == [("127.0.0.1", scp.port)]
    assert seen
    assert seen[0][0] == "127.0.0.1"
    refuse[0] = True
    refused = scu.associate("127.0.0.1", scp.port)
    assert not refused.is_established
    assert refused.is_aborted
    assert len(seen) == 2
