# The whole malformed-input battery (issue 7): every case, with a unique id.
from __future__ import annotations

from typing import TYPE_CHECKING

from tests.robustness.cases_dimse import command_cases, context_id_cases
from tests.robustness.cases_negotiation import identity_cases, item_cases
from tests.robustness.cases_upper_layer import (
    length_cases,
    pdu_type_cases,
    probe_cases,
    random_cases,
    sequence_cases,
    truncation_cases,
)

if TYPE_CHECKING:
    from tests.robustness.case import Case


def all_cases() -> list[Case]:
    """Every case of the battery, in a stable order."""
    cases = [
        *truncation_cases(),
        *length_cases(),
        *pdu_type_cases(),
        *sequence_cases(),
        *item_cases(),
        *identity_cases(),
        *context_id_cases(),
        *command_cases(),
        *probe_cases(),
        *random_cases(),
    ]
    ids = [case.id for case in cases]
    duplicated = {name for name in ids if ids.count(name) > 1}
    if duplicated:
        raise ValueError(f"duplicated case names: {sorted(duplicated)}")
    return cases
