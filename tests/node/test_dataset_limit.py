# The data set size cap (AE.maximum_dataset_size, `--max-dataset-size`): a C-STORE over it is
# answered A700H (Out of Resources, PS3.4 B.2.3) with an error comment, the rest of its data set
# is dropped, and the association goes on.
#
# Rules: our SCU against our SCP in this process (workers=0), DCMTK's storescu for the same on
# the wire; waits are bounded; every AE is stopped by the make_ae fixture.
from __future__ import annotations

import argparse
import asyncio
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from node.acceptor.main import (
    DEFAULT_MAXIMUM_DATASET_SIZE,
    add_access_options,
    apply_access_options,
    forwarded_access_arguments,
    parse_size,
)
from node.dimse.commands import CFindRSP, CStoreRQ, encode_command
from node.dimse.fragment import fragment_message
from node.ul.pdu import Abort
from tests.soak.peer import RawAssociation, read_pdu
from tests.soak.server import serve
from tests.synthetic import (
    CT_IMAGE_STORAGE,
    VERIFICATION,
    free_port,
    make_dataset,
    run_tool,
    write_datasets,
)

if TYPE_CHECKING:
    from pathlib import Path

#: Cap of the tests: an 8x8 image (about 0.5 KiB) fits, a 64x64 one (8 KiB of pixels) does not.
CAP = 4096


class Stored:
    """on_c_store that records the SOP Instance UIDs it was given."""

    def __init__(self) -> None:
        self.uids: list[str] = []

    def on_c_store(self, dataset: Any, context: Any, info: Any) -> int:
        self.uids.append(str(dataset.SOPInstanceUID))
        return 0x0000


def _scp(make_ae, stored: Stored, cap: int | None = CAP):
    ae = make_ae("SCP")
    assert ae.maximum_dataset_size is None  # no cap unless asked
    ae.maximum_dataset_size = cap
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(CT_IMAGE_STORAGE)
    ae.on_c_store = stored.on_c_store
    ae.start(block=False)
    return ae


def _association(make_ae, scp):
    scu = make_ae("SCU")
    scu.add_requested_context(VERIFICATION)
    scu.add_requested_context(CT_IMAGE_STORAGE)
    association = scu.associate("127.0.0.1", scp.port, ae_title=scp.ae_title)
    assert association.is_established
    return association


def test_store_over_the_cap_is_refused_and_the_association_goes_on(make_ae):
    stored = Stored()
    scp = _scp(make_ae, stored)
    association = _association(make_ae, scp)
    large = make_dataset(instance=1, size=64)
    small = make_dataset(instance=2, size=8)
    try:
        refused = association.send_c_store(large)
        assert refused.Status == 0xA700
        assert f"exceeds {CAP} bytes" in str(refused.ErrorComment)
        accepted = association.send_c_store(small)
        assert accepted.Status == 0x0000
        assert association.send_c_echo().Status == 0x0000
    finally:
        association.release()
    assert stored.uids == [small.SOPInstanceUID]


def test_no_cap_by_default(make_ae):
    stored = Stored()
    scp = _scp(make_ae, stored, cap=None)
    association = _association(make_ae, scp)
    try:
        assert association.send_c_store(make_dataset(size=64)).Status == 0x0000
    finally:
        association.release()
    assert len(stored.uids) == 1


@pytest.mark.parametrize("value", [-1, 1.5, True, "4G"])
def test_maximum_dataset_size_is_checked(make_ae, value):
    ae = make_ae("SCP")
    with pytest.raises(ValueError, match="maximum_dataset_size"):
        ae.maximum_dataset_size = value


async def _send_raw(port: int, message: list[bytes]) -> object:
    """Associate (Verification on context 1), send `message`'s PDUs, return the answer."""
    association = await RawAssociation.associate(port)
    try:
        association.writer.write(b"".join(message))
        return await asyncio.wait_for(read_pdu(association.reader), 10)
    finally:
        await association.close()


@pytest.mark.parametrize(
    ("context_id", "command"),
    [
        # a request on a context that was never proposed
        (
            3,
            CStoreRQ(
                message_id=1,
                affected_sop_class_uid=CT_IMAGE_STORAGE,
                affected_sop_instance_uid="1.2.3",
            ),
        ),
        # a response (nothing to answer) with a data set, to an SCP
        (1, CFindRSP(message_id_being_responded_to=1, status=0xFF00, has_dataset=True)),
    ],
    ids=["unknown-context", "response"],
)
def test_over_the_cap_without_an_answerable_request_aborts(make_ae, context_id, command):
    scp = _scp(make_ae, Stored())
    pdus = fragment_message(context_id, encode_command(command), bytes(CAP + 2), 16382)
    answer = asyncio.run(_send_raw(scp.port, pdus))
    assert isinstance(answer, Abort)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK storescu not installed")
def test_storescu_sees_a700_then_stores_the_next_file(make_ae, tmp_path: Path):
    stored = Stored()
    scp = _scp(make_ae, stored)
    large, small = make_dataset(instance=1, size=64), make_dataset(instance=2, size=8)
    paths = write_datasets([large, small], tmp_path)
    # --no-halt: go on after an unsuccessful store, on the same association
    result = run_tool(["storescu", "-v", "-nh", "-aec", "SCP", "127.0.0.1", scp.port, *paths])
    output = result.stdout + result.stderr
    responses = [line for line in output.splitlines() if "Received Store Response" in line]
    assert len(responses) == 2, output
    assert "OutOfResources" in responses[0], output
    assert "Success" in responses[1], output
    assert output.count("Requesting Association") == 1, output
    assert stored.uids == [small.SOPInstanceUID]


@pytest.mark.cluster
def test_cluster_refuses_a_streamed_store_over_the_cap(make_ae, tmp_path: Path):
    """`serve --workers 1 --max-dataset-size 6M`: an 8 MiB data set streams to the worker
    (above the 4 MiB threshold) until it passes the cap; the request is answered A700H, the
    worker drops its spool file, and the next store on the association succeeds."""
    port = free_port()
    data_dir = tmp_path / f"data-{port}"
    with serve(tmp_path, port, 1, "--max-dataset-size", "6M", "--no-fsync"):
        scu = make_ae("SCU")
        scu.add_requested_context(CT_IMAGE_STORAGE)
        association = scu.associate("127.0.0.1", port, ae_title="DICOMNODE")
        assert association.is_established
        try:
            refused = association.send_c_store(make_dataset(instance=1, size=2048))
            assert refused.Status == 0xA700
            assert "exceeds 6291456 bytes" in str(refused.ErrorComment)
            small = make_dataset(instance=2, size=8)
            assert association.send_c_store(small).Status == 0x0000
        finally:
            association.release()
        stored = [path.stem for path in (data_dir / "objects").rglob("*.dcm")]
        assert stored == [small.SOPInstanceUID]
        # the worker got the C-CANCEL before the small store's request (same broker path)
        assert list((data_dir / "spool").glob("*.spool")) == []


# --- the command-line option ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("4096", 4096), ("512K", 512 << 10), ("4g", 4 << 30), ("4GiB", 4 << 30)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "4X", "-1", "1.5G"])
def test_parse_size_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size(text)


def _options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_access_options(parser)
    return parser.parse_args(argv)


def test_option_default_and_forwarding(make_ae):
    default = _options([])
    assert default.max_dataset_size == DEFAULT_MAXIMUM_DATASET_SIZE == 4 << 30
    assert "--max-dataset-size" not in forwarded_access_arguments(default)
    ae = make_ae("SCP")
    apply_access_options(ae, default)
    assert ae.maximum_dataset_size == 4 << 30
    small = _options(["--max-dataset-size", "1M"])
    assert forwarded_access_arguments(small)[:2] == ["--max-dataset-size", str(1 << 20)]
    apply_access_options(ae, small)
    assert ae.maximum_dataset_size == 1 << 20
    apply_access_options(ae, _options(["--max-dataset-size", "0"]))
    assert ae.maximum_dataset_size is None
