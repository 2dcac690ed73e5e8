# docs/state-machine.md is the generator's output for the table the association runs on.
from __future__ import annotations

from pathlib import Path

from node.ul.fsm import TRANSITIONS, render_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


def test_committed_state_machine_doc_equals_the_generator_output() -> None:
    assert DOC.read_text(encoding="utf-8") == render_document(), (
        "docs/state-machine.md is stale: run `python scripts/state_machine_doc.py`"
    )


def test_the_doc_lists_every_transition_of_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.startswith("# The DICOM Upper Layer state machine\n")
    for action in set(TRANSITIONS.values()):
        assert f"| {action} |" in text or f" {action} |" in text
