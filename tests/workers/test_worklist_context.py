# Modality Worklist FIND is offered only when a handler serves it (issue 14 item 5): the
# built-in archive answers no worklist query, so like dcmqrscp the acceptor refuses the
# context instead of accepting it and failing every C-FIND; with an on_c_find it is served.
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydicom.dataset import Dataset

from node.acceptor.main import (
    MODALITY_WORKLIST_FIND,
    build_parser,
    build_server_ae,
    serves_worklist,
)
from tests.synthetic import run_tool

if TYPE_CHECKING:
    from collections.abc import Iterator

    from node import AE

TITLE = "WLSCP"


def _worklist_item(ds: Dataset, context: object, info: object) -> Iterator[tuple[int, Dataset]]:
    item = Dataset()
    item.PatientName = "DOE^JANE"
    item.PatientID = "WL001"
    item.AccessionNumber = "ACC1"
    yield 0xFF00, item


def _offered(ae: AE) -> set[str]:
    return {context.abstract_syntax for context in ae.supported_contexts}


def test_the_worklist_context_is_offered_only_when_asked() -> None:
    plain = build_server_ae(TITLE, 0, "127.0.0.1", maximum_associations=2, maximum_pdu=16382)
    served = build_server_ae(
        TITLE, 0, "127.0.0.1", maximum_associations=2, maximum_pdu=16382, worklist=True
    )
    assert MODALITY_WORKLIST_FIND not in _offered(plain)
    assert _offered(served) - _offered(plain) == {MODALITY_WORKLIST_FIND}
    assert build_parser().parse_args(["--broker", "ipc:///x", "--worklist"]).worklist


def test_serves_worklist_looks_for_on_c_find_in_the_handlers_module() -> None:
    assert serves_worklist("tests.workers.test_worklist_context") is False  # no on_c_find
    assert serves_worklist("tests.cluster.handlers") is True
    assert serves_worklist(None) is False


def _findscu_worklist(port: int) -> tuple[int, str]:
    result = run_tool(
        [
            "findscu",
            "-W",
            "-aec",
            TITLE,
            "-k",
            "PatientName=",
            "-k",
            "AccessionNumber=",
            "127.0.0.1",
            port,
        ]
    )
    return result.returncode, result.output


@pytest.mark.interop
def test_findscu_worklist_is_refused_without_a_worklist_service(make_ae) -> None:
    ae = build_server_ae(TITLE, 0, "127.0.0.1", maximum_associations=2, maximum_pdu=16382)
    ae.start(block=False)
    try:
        code, output = _findscu_worklist(ae.port)
    finally:
        ae.stop()
    assert code != 0
    assert "No Acceptable Presentation Contexts" in output, output


@pytest.mark.interop
def test_findscu_worklist_is_answered_by_an_on_c_find() -> None:
    ae = build_server_ae(
        TITLE, 0, "127.0.0.1", maximum_associations=2, maximum_pdu=16382, worklist=True
    )
    ae.on_c_find = _worklist_item
    ae.start(block=False)
    try:
        code, output = _findscu_worklist(ae.port)
    finally:
        ae.stop()
    assert code == 0, output
    assert "DOE^JANE" in output
