# The built-in Query/Retrieve SCP through workers.service.handle_request, as a worker runs it:
# C-STORE indexes, C-FIND / C-GET / C-MOVE answer from the index, a user callback wins.
from __future__ import annotations

from typing import Any

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node import evt
from node.dicomio import Part10, decode_dataset, encode_dataset, read_part10
from node.dimse.messages import CFindRQ, CGetRQ, CMoveRQ, CommandField, CStoreRQ
from node.dispatch import AssociationInfo, ServiceRequest, StorageContext
from tests.workers.archive import archive_dataset, archive_datasets
from workers.handlers.common import Handlers
from workers.handlers.qr import (
    QueryRetrieveSCP,
    build_identifier,
    with_builtin_query_retrieve,
)
from workers.handlers.retrieve import _get_store
from workers.service import handle_request
from workers.store.files import FileStore
from workers.store.index import Index, IndexedFileStore, index_of
from workers.store.matching import parse_identifier

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
WORKLIST = "1.2.840.10008.5.1.4.31"
ROOT = "1.2.826.0.1.3680043.8.498.77"


class FakeChannel:
    """A worker-side Channel that records responses and answers C-GET sub-operations."""

    def __init__(self, *, cancel_after: int | None = None, store_status: int = 0) -> None:
        self.responses: list[tuple[Any, bytes | None, bool]] = []
        self.stored: list[tuple[str, str, str, bytes]] = []
        self.cancel_after = cancel_after
        self.store_status = store_status

    def respond(self, response: Any, dataset: bytes | None, final: bool) -> None:
        self.responses.append((response, dataset, final))

    def store(self, sop_class: str, sop_instance: str, syntax: str, dataset: bytes) -> int:
        self.stored.append((sop_class, sop_instance, syntax, dataset))
        return self.store_status

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.responses) >= self.cancel_after

    def event_report(
        self, sop_class: str, sop_instance: str, event_type: int, dataset: bytes | None
    ) -> int | None:
        return None  # no association to carry it: the caller falls back

    @property
    def final(self) -> Any:
        response, _, final = self.responses[-1]
        assert final
        return response

    def identifiers(self) -> list[Dataset]:
        return [
            decode_dataset(data, ExplicitVRLittleEndian)
            for _, data, final in self.responses
            if not final and data is not None
        ]


ASSOCIATION = AssociationInfo(
    assoc_id=1,
    calling_ae_title="SCU",
    called_ae_title="ARCHIVE",
    peer_address="127.0.0.1",
    peer_port=1234,
    local_ae_title="ARCHIVE",
    storage_contexts=(
        StorageContext(3, CT, ExplicitVRLittleEndian),
        StorageContext(5, MR, ImplicitVRLittleEndian),
    ),
)


def identifier(level: str = "STUDY", **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    return ds


def request(command: Any, sop_class: str, dataset: Dataset | bytes | None) -> ServiceRequest:
    data = (
        encode_dataset(dataset, ExplicitVRLittleEndian) if isinstance(dataset, Dataset) else dataset
    )
    return ServiceRequest(ASSOCIATION, 1, sop_class, ExplicitVRLittleEndian, command, data)


def find(handlers: Handlers, sop_class: str, ds: Dataset, **channel_options: Any) -> FakeChannel:
    channel = FakeChannel(**channel_options)
    command = CFindRQ(message_id=7, affected_sop_class_uid=sop_class)
    handle_request(request(command, sop_class, ds), channel, handlers)
    return channel


def get(handlers: Handlers, ds: Dataset, **channel_options: Any) -> FakeChannel:
    channel = FakeChannel(**channel_options)
    command = CGetRQ(message_id=8, affected_sop_class_uid=STUDY_GET)
    handle_request(request(command, STUDY_GET, ds), channel, handlers)
    return channel


@pytest.fixture
def archive(tmp_path, open_index):
    """Handlers of a worker with the built-in storage, after storing the whole archive (on
    each index backend: SQLite and PostgreSQL)."""
    index = open_index(synchronous="OFF")
    handlers = Handlers(file_store=FileStore(tmp_path, fsync=False), index=index)
    for ds in archive_datasets():
        channel = FakeChannel()
        command = CStoreRQ(
            message_id=1,
            affected_sop_class_uid=ds.SOPClassUID,
            affected_sop_instance_uid=ds.SOPInstanceUID,
        )
        handle_request(request(command, ds.SOPClassUID, ds), channel, handlers)
        assert channel.final.status == 0x0000
    return handlers


# --- C-STORE indexes ---------------------------------------------------------------------------


def test_c_store_indexes_after_the_file_is_written(archive):
    assert archive.index.counts() == {"patient": 3, "study": 6, "series": 12, "instance": 36}


def test_c_store_through_an_indexed_file_store(tmp_path):
    files = IndexedFileStore(tmp_path, fsync=False)
    handlers = Handlers(file_store=files)
    assert index_of(handlers) is files.index
    ds = archive_dataset(1, 1, 1, 1)
    command = CStoreRQ(
        message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid=ds.SOPInstanceUID
    )
    channel = FakeChannel()
    handle_request(request(command, CT, ds), channel, handlers)
    assert channel.final.status == 0
    assert files.index.counts()["instance"] == 1
    files.index.close()


def test_c_store_answers_out_of_resources_when_the_index_fails(tmp_path):
    index = Index.open(tmp_path)
    index.close()
    handlers = Handlers(file_store=FileStore(tmp_path, fsync=False), index=index)
    ds = archive_dataset(1, 1, 1, 1)
    command = CStoreRQ(
        message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid=ds.SOPInstanceUID
    )
    channel = FakeChannel()
    handle_request(request(command, CT, ds), channel, handlers)
    assert channel.final.status == 0xA700
    assert "cannot index" in channel.final.error_comment


# --- C-FIND ------------------------------------------------------------------------------------


def test_c_find_streams_identifiers_with_the_requested_keys(archive):
    ds = identifier(
        "STUDY",
        PatientName="DOE*",
        StudyDate="20200101-20201231",
        StudyInstanceUID="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedInstances="",
        RetrieveAETitle="",
        InstanceAvailability="",
        SeriesInstanceUID="",
        ReferencedStudySequence=[],
    )
    channel = find(archive, STUDY_FIND, ds)
    assert channel.final.status == 0x0000
    statuses = {response.status for response, _, final in channel.responses if not final}
    assert statuses == {0xFF01}  # a sequence key is not supported
    found = channel.identifiers()
    assert [str(i.StudyInstanceUID) for i in found] == [f"{ROOT}.1.1", f"{ROOT}.1.2", f"{ROOT}.2.1"]
    first = found[0]
    assert first.QueryRetrieveLevel == "STUDY"
    assert first.PatientName == "DOE^JOHN"
    assert list(first.ModalitiesInStudy) == ["CT", "MR"]
    assert first.NumberOfStudyRelatedInstances == 6
    assert first.RetrieveAETitle == "ARCHIVE"
    assert first.InstanceAvailability == "ONLINE"
    assert first.SeriesInstanceUID in ("", None)  # below the query level: empty
    assert first.ReferencedStudySequence == []
    assert "SpecificCharacterSet" not in first


def test_c_find_unsupported_key_gives_pending_warning(archive):
    ds = identifier("PATIENT", PatientID="PID003", EthnicGroup="")
    channel = find(archive, PATIENT_FIND, ds)
    ((response, data, _), _) = channel.responses
    assert response.status == 0xFF01
    assert data is not None
    assert decode_dataset(data, ExplicitVRLittleEndian).EthnicGroup in ("", None)


def test_c_find_with_a_bad_identifier_fails_with_a900(archive):
    channel = find(archive, STUDY_FIND, identifier("SERIES", Modality="CT"))
    assert len(channel.responses) == 1
    final = channel.final
    assert final.status == 0xA900
    assert final.offending_element == (0x0020000D,)
    assert "StudyInstanceUID" in final.error_comment


def test_c_find_honours_cancel(archive):
    channel = find(archive, STUDY_FIND, identifier("STUDY", StudyInstanceUID=""), cancel_after=2)
    assert channel.final.status == 0xFE00
    assert len(channel.responses) == 3


def test_c_find_of_other_models_is_left_to_the_user(archive):
    channel = find(archive, WORKLIST, identifier("STUDY"))
    assert channel.final.status == 0xC310  # no handler: the built-in serves Q/R models only


def test_a_user_callback_wins_over_the_built_in(archive):
    def on_c_find(ds, context, info):
        yield 0xFF00, identifier("STUDY", StudyInstanceUID="4.5.6")

    archive.on_c_find = on_c_find
    channel = find(archive, STUDY_FIND, identifier("STUDY", StudyInstanceUID=""))
    assert [str(i.StudyInstanceUID) for i in channel.identifiers()] == ["4.5.6"]


def test_routing_rules(archive, tmp_path):
    command = CFindRQ(message_id=1, affected_sop_class_uid=STUDY_FIND)
    routed = with_builtin_query_retrieve(CommandField.C_FIND_RQ, STUDY_FIND, archive)
    assert routed is not archive
    assert routed.on_c_find is not None
    assert archive.on_c_find is None  # the worker's Handlers are not changed
    assert with_builtin_query_retrieve(CommandField.C_STORE_RQ, CT, archive) is archive
    assert with_builtin_query_retrieve(CommandField.C_FIND_RQ, WORKLIST, archive) is archive
    bound = Handlers(index=archive.index, events={evt.EVT_C_FIND: print})
    assert with_builtin_query_retrieve(CommandField.C_FIND_RQ, STUDY_FIND, bound) is bound
    no_index = Handlers(file_store=FileStore(tmp_path / "x", fsync=False))
    assert index_of(no_index) is None
    assert with_builtin_query_retrieve(CommandField.C_FIND_RQ, STUDY_FIND, no_index) is no_index
    assert command.affected_sop_class_uid == STUDY_FIND


# --- identifiers and character sets ------------------------------------------------------------


def query(**keys: object):
    return parse_identifier(identifier("PATIENT", **keys), PATIENT_FIND)


@pytest.mark.parametrize(
    ("requested", "name", "expected"),
    [
        (None, "DOE^JOHN", None),
        ("ISO_IR 100", "DOE^JOHN", "ISO_IR 100"),
        (["", "ISO 2022 IR 87"], "DOE^JOHN", ["", "ISO 2022 IR 87"]),
        (None, "MÜLLER^JÖRG", "ISO_IR 192"),
        ("ISO_IR 100", "MÜLLER^JÖRG", "ISO_IR 100"),
        ("ISO_IR 100", "山田^太郎", "ISO_IR 192"),
        (["", "ISO 2022 IR 87"], "山田^太郎", "ISO_IR 192"),
    ],
)
def test_response_character_set(requested, name, expected):
    keys: dict[str, object] = {"PatientName": ""}
    if requested is not None:
        keys["SpecificCharacterSet"] = requested
    response, supported = build_identifier(query(**keys), {"PatientName": name})
    assert supported
    found = response.get("SpecificCharacterSet")
    assert (list(found) if found is not None and not isinstance(found, str) else found) == expected
    data = encode_dataset(response, ExplicitVRLittleEndian)
    assert decode_dataset(data, ExplicitVRLittleEndian).PatientName == name


def test_multi_valued_values_come_back_as_values():
    response, _ = build_identifier(
        query(PatientID="", IssuerOfPatientID=""), {"PatientID": "A\\B", "IssuerOfPatientID": ""}
    )
    assert list(response.PatientID) == ["A", "B"]
    assert response.IssuerOfPatientID in ("", None)


def test_the_scp_callbacks_directly(archive):
    scp = QueryRetrieveSCP(archive.index)
    context = type("Context", (), {"abstract_syntax": STUDY_FIND})()
    results = list(scp.on_c_find(identifier("STUDY", StudyInstanceUID=""), context, {}))
    assert len(results) == 6
    first = results[0][1]
    assert first is not None
    assert first.get("RetrieveAETitle") is None


# --- C-GET / C-MOVE ----------------------------------------------------------------------------


def test_c_get_sends_the_stored_data_sets(archive):
    ds = identifier(
        "SERIES",
        StudyInstanceUID=f"{ROOT}.2.2",
        SeriesInstanceUID=[f"{ROOT}.2.2.1", f"{ROOT}.2.2.2"],
    )
    channel = get(archive, ds)
    final = channel.final
    assert (final.status, final.number_of_completed_suboperations) == (0x0000, 6)
    pending = [r for r, _, done in channel.responses if not done]
    assert [r.number_of_remaining_suboperations for r in pending] == [5, 4, 3, 2, 1, 0]
    originals = {d.SOPInstanceUID: d for d in archive_datasets()}
    for sop_class, sop_instance, syntax, data in channel.stored:
        expected_syntax = ExplicitVRLittleEndian if sop_class == CT else ImplicitVRLittleEndian
        assert syntax == expected_syntax
        assert data == encode_dataset(originals[sop_instance], syntax)


def test_c_get_sends_a_stored_file_as_stored_when_its_syntax_was_accepted(archive):
    ds = identifier("SERIES", StudyInstanceUID=f"{ROOT}.2.2", SeriesInstanceUID=f"{ROOT}.2.2.1")
    stored = list(archive.index.instances(parse_identifier(ds, STUDY_GET, retrieve=True)))
    channel = get(archive, ds)
    assert channel.final.status == 0x0000
    on_disk = {read_part10(str(s.path)).sop_instance_uid: s.path for s in stored}
    assert len(channel.stored) == len(on_disk) > 0
    for sop_class, sop_instance, syntax, data in channel.stored:
        assert (sop_class, syntax) == (CT, ExplicitVRLittleEndian)
        assert data == read_part10(str(on_disk[sop_instance])).data  # the file's own bytes


def test_c_get_of_a_compressed_file_with_no_context_for_it_fails_that_sub_operation():
    channel = FakeChannel()
    command = CGetRQ(message_id=8, affected_sop_class_uid=STUDY_GET)
    store = _get_store(request(command, STUDY_GET, None), channel)
    jpeg = Part10(CT, f"{ROOT}.9", "1.2.840.10008.1.2.4.70", b"\x08\x00\x05\x00")
    assert store(jpeg) == (0xA702, f"{ROOT}.9", 0)
    assert channel.stored == []


def test_c_get_counts_a_missing_file_as_failed(archive, tmp_path):
    ds = identifier("STUDY", StudyInstanceUID=f"{ROOT}.3.1")
    (first, *_) = archive.index.instances(parse_identifier(ds, STUDY_GET, retrieve=True))
    first.path.unlink()
    final = get(archive, ds).final
    assert (final.status, final.number_of_completed_suboperations) == (0xB000, 5)
    assert final.number_of_failed_suboperations == 1


def test_c_get_counts_an_unreadable_file_as_failed(archive):
    ds = identifier(
        "IMAGE",
        StudyInstanceUID=f"{ROOT}.3.2",
        SeriesInstanceUID=f"{ROOT}.3.2.1",
        SOPInstanceUID=[f"{ROOT}.3.2.1.1", f"{ROOT}.3.2.1.2"],
    )
    (first, _) = archive.index.instances(parse_identifier(ds, STUDY_GET, retrieve=True))
    first.path.write_bytes(b"garbage")
    channel = get(archive, ds)
    final = channel.final
    assert (final.status, final.number_of_completed_suboperations) == (0xB000, 1)
    failed_list = channel.responses[-1][1]
    assert failed_list is not None
    failed = decode_dataset(failed_list, ExplicitVRLittleEndian).FailedSOPInstanceUIDList
    assert failed == first.sop_instance_uid  # listed by its UID, not as an empty value


def test_c_get_with_a_bad_identifier(archive):
    final = get(archive, identifier("STUDY", PatientName="DOE*")).final
    assert final.status == 0xA900
    assert "StudyInstanceUID" in final.error_comment


def test_c_get_of_nothing(archive):
    final = get(archive, identifier("STUDY", StudyInstanceUID="9.9.9")).final
    assert (final.status, final.number_of_completed_suboperations) == (0x0000, 0)


def test_c_move_to_an_unknown_destination(archive):
    channel = FakeChannel()
    command = CMoveRQ(message_id=9, affected_sop_class_uid=STUDY_MOVE, move_destination="NOWHERE")
    ds = identifier("STUDY", StudyInstanceUID=f"{ROOT}.1.1")
    handle_request(request(command, STUDY_MOVE, ds), channel, archive)
    assert channel.final.status == 0xA801


def test_a_final_response_that_cannot_be_sent_still_gets_the_fallback():
    from node.dimse.commands import encode_command
    from workers.handlers.common import Handlers
    from workers.service import handle_request

    class EncodingChannel(FakeChannel):
        """Encodes like the worker's channel: an unencodable response raises."""

        def respond(self, response: Any, dataset: bytes | None, final: bool) -> None:
            encode_command(response)
            super().respond(response, dataset, final)

    def on_c_echo(context: Any, info: Any) -> Any:
        status = Dataset()
        status.Status = 0x0110
        status.ErrorComment = "\u0416" * 10  # not Latin-1: the response cannot be encoded
        return status

    from node.dimse.commands import CEchoRQ
    from node.dispatch import ServiceRequest

    request = ServiceRequest(
        ASSOCIATION, 1, "1.2.840.10008.1.1", ExplicitVRLittleEndian, CEchoRQ(message_id=1)
    )
    channel = EncodingChannel()
    handle_request(request, channel, Handlers(on_c_echo=on_c_echo))
    assert channel.final.status == 0x0110  # the generic failure went out instead
    assert [final for _, _, final in channel.responses] == [True]
