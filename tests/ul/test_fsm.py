"""node.ul.fsm against PS3.8 section 9.2, cell by cell."""

from __future__ import annotations

import pytest

from node.ul.fsm import (
    ACTIONS,
    EVENT_DEFINITIONS,
    STATE_DEFINITIONS,
    TRANSITIONS,
    Action,
    Evt,
    Role,
    Sta,
    render_markdown,
)

# An independent transcription of PS3.8 Table 9-10 (DICOM Upper Layer Protocol State
# Transition Table), in the standard's layout: 19 event rows, 13 state columns, blank = no action.
STANDARD_TABLE_9_10 = """
      | Sta1 | Sta2 | Sta3 | Sta4 | Sta5 | Sta6 | Sta7 | Sta8 | Sta9 | Sta10 | Sta11 | Sta12 | Sta13
Evt1  | AE-1 |      |      |      |      |      |      |      |      |       |       |       |
Evt2  |      |      |      | AE-2 |      |      |      |      |      |       |       |       |
Evt3  |      | AA-1 | AA-8 |      | AE-3 | AA-8 | AA-8 | AA-8 | AA-8 | AA-8  | AA-8  | AA-8  | AA-6
Evt4  |      | AA-1 | AA-8 |      | AE-4 | AA-8 | AA-8 | AA-8 | AA-8 | AA-8  | AA-8  | AA-8  | AA-6
Evt5  | AE-5 |      |      |      |      |      |      |      |      |       |       |       |
Evt6  |      | AE-6 | AA-8 |      | AA-8 | AA-8 | AA-8 | AA-8 | AA-8 | AA-8  | AA-8  | AA-8  | AA-7
Evt7  |      |      | AE-7 |      |      |      |      |      |      |       |       |       |
Evt8  |      |      | AE-8 |      |      |      |      |      |      |       |       |       |
Evt9  |      |      |      |      |      | DT-1 |      | AR-7 |      |       |       |       |
Evt10 |      | AA-1 | AA-8 |      | AA-8 | DT-2 | AR-6 | AA-8 | AA-8 | AA-8  | AA-8  | AA-8  | AA-6
Evt11 |      |      |      |      |      | AR-1 |      |      |      |       |       |       |
Evt12 |      | AA-1 | AA-8 |      | AA-8 | AR-2 | AR-8 | AA-8 | AA-8 | AA-8  | AA-8  | AA-8  | AA-6
Evt13 |      | AA-1 | AA-8 |      | AA-8 | AA-8 | AR-3 | AA-8 | AA-8 | AR-10 | AR-3  | AA-8  | AA-6
Evt14 |      |      |      |      |      |      |      | AR-4 | AR-9 |       |       | AR-4  |
Evt15 |      |      | AA-1 | AA-2 | AA-1 | AA-1 | AA-1 | AA-1 | AA-1 | AA-1  | AA-1  | AA-1  |
Evt16 |      | AA-2 | AA-3 |      | AA-3 | AA-3 | AA-3 | AA-3 | AA-3 | AA-3  | AA-3  | AA-3  | AA-2
Evt17 |      | AA-5 | AA-4 | AA-4 | AA-4 | AA-4 | AA-4 | AA-4 | AA-4 | AA-4  | AA-4  | AA-4  | AR-5
Evt18 |      | AA-2 |      |      |      |      |      |      |      |       |       |       | AA-2
Evt19 |      | AA-1 | AA-8 |      | AA-8 | AA-8 | AA-8 | AA-8 | AA-8 | AA-8  | AA-8  | AA-8  | AA-7
"""

# Next states from PS3.8 Tables 9-6..9-9 ("Next state is ...").
STANDARD_NEXT_STATES = {
    "AE-1": 4, "AE-2": 5, "AE-3": 6, "AE-4": 1, "AE-5": 2, "AE-6": 3, "AE-7": 6, "AE-8": 13,
    "DT-1": 6, "DT-2": 6,
    "AR-1": 7, "AR-2": 8, "AR-3": 1, "AR-4": 13, "AR-5": 1, "AR-6": 7, "AR-7": 8,
    "AR-8": 9, "AR-9": 11, "AR-10": 12,
    "AA-1": 13, "AA-2": 1, "AA-3": 1, "AA-4": 1, "AA-5": 1, "AA-6": 13, "AA-7": 13, "AA-8": 13,
}  # fmt: skip


def parse_standard_table() -> list[tuple[str, str, str]]:
    """(event label, state label, cell) for each of the 19 x 13 cells."""
    header, *rows = STANDARD_TABLE_9_10.strip("\n").splitlines()
    states = [label.strip() for label in header.split("|")[1:]]
    cells: list[tuple[str, str, str]] = []
    for row in rows:
        label, *values = (value.strip() for value in row.split("|"))
        assert len(values) == 13, row
        cells.extend(zip([label] * 13, states, values, strict=True))
    return cells


CELLS = parse_standard_table()


def test_transcription_has_19_rows_of_13_cells() -> None:
    assert len(CELLS) == 19 * 13 == 247
    assert [event for event, _, _ in CELLS[::13]] == [f"Evt{n}" for n in range(1, 20)]
    assert [state for _, state, _ in CELLS[:13]] == [f"Sta{n}" for n in range(1, 14)]


@pytest.mark.parametrize(("event", "state", "expected"), CELLS)
def test_every_cell_matches_the_standard(event: str, state: str, expected: str) -> None:
    key = (Evt(int(event[3:])), Sta(int(state[3:])))
    assert TRANSITIONS.get(key, "") == expected


def test_no_key_outside_the_standard() -> None:
    defined = {(event, state) for event, state, cell in CELLS if cell}
    assert {(e.label, s.label) for e, s in TRANSITIONS} == defined
    assert len(TRANSITIONS) == 123


def test_rows_are_in_the_standards_order() -> None:
    order = [(event.value, state.value) for event, state in TRANSITIONS]
    assert order == sorted(order)


def test_every_action_used_is_defined_and_every_action_is_used() -> None:
    assert set(TRANSITIONS.values()) == set(ACTIONS)
    assert list(ACTIONS) == list(STANDARD_NEXT_STATES)


@pytest.mark.parametrize(("name", "state"), STANDARD_NEXT_STATES.items())
def test_next_state_matches_the_standard(name: str, state: int) -> None:
    action = ACTIONS[name]
    assert action.name == name
    assert action.next_state is Sta(state)
    assert action.next_state_for(Role.REQUESTOR) is Sta(state)
    if name != "AR-8":
        assert action.next_state_for(Role.ACCEPTOR) is Sta(state)
        assert action.acceptor_next_state is None


def test_ar_8_depends_on_the_role() -> None:
    action = ACTIONS["AR-8"]
    assert action.next_state_for(Role.REQUESTOR) is Sta.STA9
    assert action.next_state_for(Role.ACCEPTOR) is Sta.STA10
    assert "if association-requestor, next state is Sta9" in action.definition
    assert "if not, next state is Sta10" in action.definition


def test_ae_6_has_the_reject_branch() -> None:
    action = ACTIONS["AE-6"]
    assert action.next_state is Sta.STA3
    assert action.otherwise_next_state is Sta.STA13
    assert all(a.otherwise_next_state is None for a in ACTIONS.values() if a is not action)


def test_definitions_quote_the_standard() -> None:
    assert ACTIONS["AE-1"].definition == (
        "Issue TRANSPORT CONNECT request primitive to local transport service"
    )
    assert ACTIONS["AA-6"].definition == "Ignore PDU"
    assert ACTIONS["AA-8"].definition.startswith("Send A-ABORT PDU (service-provider source)")
    assert ACTIONS["AA-1"].definition.startswith("Send A-ABORT PDU (service-user source)")
    assert all(action.definition for action in ACTIONS.values())


def test_artim_flags_follow_the_definitions() -> None:
    starts = {name for name, action in ACTIONS.items() if action.starts_artim}
    stops = {name for name, action in ACTIONS.items() if action.stops_artim}
    closes = {name for name, action in ACTIONS.items() if action.closes_transport}
    assert starts == {"AE-5", "AE-8", "AR-4", "AA-1", "AA-8"}
    assert stops == {"AE-6", "AR-5", "AA-2", "AA-5"}
    assert closes == {"AE-4", "AR-3", "AA-2", "AA-3"}
    for name in starts:
        assert "start" in ACTIONS[name].definition
    for name in stops:
        assert "Stop ARTIM timer" in ACTIONS[name].definition
    for name in closes:
        assert "close transport connection" in ACTIONS[name].definition.lower()


def test_states_and_events_carry_their_definitions() -> None:
    assert len(STATE_DEFINITIONS) == 13
    assert len(EVENT_DEFINITIONS) == 19
    assert Sta.STA1.description == "Idle"
    assert Sta.STA6.label == "Sta6"
    assert Sta.STA13.description.startswith("Awaiting Transport Connection Close Indication")
    assert Evt.EVT19.description == "Unrecognized or invalid PDU received"
    assert Evt.EVT10.label == "Evt10"


def test_action_is_frozen() -> None:
    action = ACTIONS["DT-1"]
    assert isinstance(action, Action)
    with pytest.raises(AttributeError):
        action.name = "DT-2"  # type: ignore[misc]


def test_render_markdown_draws_the_same_table() -> None:
    text = render_markdown()
    lines = text.splitlines()
    assert lines[0] == "| Event | " + " | ".join(f"Sta{n}" for n in range(1, 14)) + " |"
    rows = {line.split(" ", 2)[1]: line for line in lines[2:21]}
    for event, state, expected in CELLS:
        cells = [cell.strip() for cell in rows[event].split("|")[2:-1]]
        assert cells[int(state[3:]) - 1] == expected
    assert "| AR-8 | " in text
    assert "Sta9 (requestor), Sta10 (acceptor)" in text
    assert "Sta3 or Sta13" in text
    assert "| Sta13 | Awaiting Transport Connection Close Indication" in text
    assert text.endswith("\n")
