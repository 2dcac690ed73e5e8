# Tests of the status tables (PS3.7 Annex C, PS3.4 service classes).
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.dimse.messages import CommandField
from node.dimse.status import (
    QueryRetrieveStatus,
    Status,
    StatusCategory,
    StorageStatus,
    classify,
    describe,
    is_known,
)


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (Status.SUCCESS, StatusCategory.SUCCESS),
        (Status.PENDING, StatusCategory.PENDING),
        (Status.PENDING_WARNING, StatusCategory.PENDING),
        (Status.CANCEL, StatusCategory.CANCEL),
        (Status.WARNING_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED, StatusCategory.WARNING),
        (Status.ATTRIBUTE_LIST_ERROR, StatusCategory.WARNING),
        (Status.ATTRIBUTE_VALUE_OUT_OF_RANGE, StatusCategory.WARNING),
        (StorageStatus.COERCION_OF_DATA_ELEMENTS, StatusCategory.WARNING),
        (StorageStatus.ELEMENTS_DISCARDED, StatusCategory.WARNING),
        (StorageStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING, StatusCategory.WARNING),
        (0xBFFF, StatusCategory.WARNING),
        (Status.PROCESSING_FAILURE, StatusCategory.FAILURE),
        (Status.MISSING_ATTRIBUTE, StatusCategory.FAILURE),
        (Status.SOP_CLASS_NOT_SUPPORTED, StatusCategory.FAILURE),
        (Status.RESOURCE_LIMITATION, StatusCategory.FAILURE),
        (StorageStatus.OUT_OF_RESOURCES, StatusCategory.FAILURE),
        (0xA7FF, StatusCategory.FAILURE),
        (0xA9FF, StatusCategory.FAILURE),
        (QueryRetrieveStatus.MOVE_DESTINATION_UNKNOWN, StatusCategory.FAILURE),
        (QueryRetrieveStatus.INVALID_REQUEST, StatusCategory.FAILURE),
        (0xC000, StatusCategory.FAILURE),
        (0xCFFF, StatusCategory.FAILURE),
        (0x0002, StatusCategory.FAILURE),  # not in any class: never success
        (0xD000, StatusCategory.FAILURE),
        (0xFF02, StatusCategory.FAILURE),
    ],
)
def test_classify(code: int, category: StatusCategory) -> None:
    assert classify(code) is category


@given(st.integers(0, 0xFFFF))
def test_only_0000h_is_success(code: int) -> None:
    assert (classify(code) is StatusCategory.SUCCESS) == (code == 0)


@pytest.mark.parametrize(
    ("code", "known"),
    [
        (0x0000, True),
        (0x0001, True),
        (0x0122, True),
        (0x0213, True),
        (0xA123, True),
        (0xB456, True),
        (0xC789, True),
        (0xFE00, True),
        (0xFF01, True),
        (0x0002, False),
        (0x0300, False),
        (0xD000, False),
        (0xFF02, False),
    ],
)
def test_is_known(code: int, known: bool) -> None:
    assert is_known(code) is known


@pytest.mark.parametrize(
    ("code", "command_field", "text"),
    [
        (0x0000, None, "0000H Success: Success"),
        (0x0110, None, "0110H Failure: Processing failure"),
        (0x0122, CommandField.C_STORE_RSP, "0122H Failure: Refused: SOP Class not supported"),
        (0xA700, CommandField.C_STORE_RQ, "A700H Failure: Refused: out of resources"),
        (0xA7FF, CommandField.C_STORE_RSP, "A7FFH Failure: Refused: out of resources"),
        (
            0xA912,
            CommandField.C_STORE_RSP,
            "A912H Failure: Error: data set does not match SOP Class",
        ),
        (0xC005, CommandField.C_STORE_RSP, "C005H Failure: Error: cannot understand"),
        (0xB000, CommandField.C_STORE_RSP, "B000H Warning: Coercion of data elements"),
        (0xB006, CommandField.C_STORE_RSP, "B006H Warning: Elements discarded"),
        (0xB007, CommandField.C_STORE_RSP, "B007H Warning: Data set does not match SOP Class"),
        (0xA700, CommandField.C_FIND_RSP, "A700H Failure: Refused: out of resources"),
        (0xC001, CommandField.C_FIND_RSP, "C001H Failure: Failed: unable to process"),
        (
            0xFE00,
            CommandField.C_FIND_RSP,
            "FE00H Cancel: Matching terminated due to Cancel request",
        ),
        (
            0xFF01,
            CommandField.C_FIND_RQ,
            "FF01H Pending: Matches are continuing, one or more optional keys were not supported",
        ),
        (
            0xB000,
            CommandField.C_GET_RSP,
            "B000H Warning: Sub-operations complete, one or more failures or warnings",
        ),
        (
            0xA702,
            CommandField.C_GET_RSP,
            "A702H Failure: Refused: out of resources, unable to perform sub-operations",
        ),
        (0xAA04, CommandField.C_GET_RSP, "AA04H Failure: Invalid request"),
        (0xA801, CommandField.C_MOVE_RSP, "A801H Failure: Refused: move destination unknown"),
        (0xA801, CommandField.C_GET_RSP, "A801H Failure: service-specific status"),
        (0xC100, CommandField.C_MOVE_RSP, "C100H Failure: Failed: unable to process"),
        (0xFF00, CommandField.C_MOVE_RSP, "FF00H Pending: Sub-operations are continuing"),
        (0xFF00, None, "FF00H Pending: Pending"),
        (0xFE00, CommandField.N_ACTION_RSP, "FE00H Cancel: Cancel"),
        (0xC000, None, "C000H Failure: service-specific status"),
        (0xB000, CommandField.N_SET_RSP, "B000H Warning: service-specific status"),
        (0xD123, None, "D123H Failure: unknown status"),
    ],
)
def test_describe(code: int, command_field: int | None, text: str) -> None:
    assert describe(code, command_field) == text
