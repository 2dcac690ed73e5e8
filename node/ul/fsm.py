# The DICOM Upper Layer state machine as data: states, events, actions and the state
# transition table of PS3.8 section 9.2 (Tables 9-1..9-10).
#
# Rules: this module holds data only; `node.ul.association` runs it. Every action quotes its
# definition from PS3.8 Tables 9-6..9-9 and names its next state; AR-8 is the one action whose
# next state depends on the role, and it says so explicitly. `TRANSITIONS` lists Table 9-10
# row by row in the standard's order; a missing (event, state) key is a blank cell of the
# standard, i.e. no action is defined. `render_markdown()` draws the docs from the same data,
# so the two cannot drift. No I/O, no clock, stdlib only.
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Role(enum.Enum):
    """Which end of the association this Upper Layer entity is (PS3.8 7.1.2)."""

    REQUESTOR = "association-requestor"
    ACCEPTOR = "association-acceptor"


class Sta(enum.Enum):
    """Upper Layer machine states, PS3.8 section 9.2.1 (Tables 9-1..9-5)."""

    STA1 = 1
    STA2 = 2
    STA3 = 3
    STA4 = 4
    STA5 = 5
    STA6 = 6
    STA7 = 7
    STA8 = 8
    STA9 = 9
    STA10 = 10
    STA11 = 11
    STA12 = 12
    STA13 = 13

    @property
    def label(self) -> str:
        """The standard's name for the state, e.g. ``Sta6``."""
        return f"Sta{self.value}"

    @property
    def description(self) -> str:
        """The state's definition in PS3.8 Tables 9-1..9-5."""
        return STATE_DEFINITIONS[self]


STATE_DEFINITIONS: Final[dict[Sta, str]] = {
    # Table 9-1: No association
    Sta.STA1: "Idle",
    # Table 9-2: Association establishment
    Sta.STA2: "Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)",
    Sta.STA3: "Awaiting local A-ASSOCIATE response primitive (from local user)",
    Sta.STA4: "Awaiting transport connection opening to complete (from local transport service)",
    Sta.STA5: "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    # Table 9-3: Data transfer
    Sta.STA6: "Association established and ready for data transfer",
    # Table 9-4: Association release
    Sta.STA7: "Awaiting A-RELEASE-RP PDU",
    Sta.STA8: "Awaiting local A-RELEASE response primitive (from local user)",
    Sta.STA9: "Release collision requestor side; awaiting A-RELEASE response (from local user)",
    Sta.STA10: "Release collision acceptor side; awaiting A-RELEASE-RP PDU",
    Sta.STA11: "Release collision requestor side; awaiting A-RELEASE-RP PDU",
    Sta.STA12: "Release collision acceptor side; awaiting A-RELEASE response primitive "
    "(from local user)",
    # Table 9-5: Waiting for transport connection close
    Sta.STA13: "Awaiting Transport Connection Close Indication (Association no longer exists)",
}


class Evt(enum.Enum):
    """Upper Layer events, the rows of PS3.8 Table 9-10."""

    EVT1 = 1
    EVT2 = 2
    EVT3 = 3
    EVT4 = 4
    EVT5 = 5
    EVT6 = 6
    EVT7 = 7
    EVT8 = 8
    EVT9 = 9
    EVT10 = 10
    EVT11 = 11
    EVT12 = 12
    EVT13 = 13
    EVT14 = 14
    EVT15 = 15
    EVT16 = 16
    EVT17 = 17
    EVT18 = 18
    EVT19 = 19

    @property
    def label(self) -> str:
        """The standard's name for the event, e.g. ``Evt10``."""
        return f"Evt{self.value}"

    @property
    def description(self) -> str:
        """The event's definition in PS3.8 Table 9-10."""
        return EVENT_DEFINITIONS[self]


EVENT_DEFINITIONS: Final[dict[Evt, str]] = {
    Evt.EVT1: "A-ASSOCIATE Request (local user)",
    Evt.EVT2: "Transport Conn. Confirm (local transport service)",
    Evt.EVT3: "A-ASSOCIATE-AC PDU (received on transport connection)",
    Evt.EVT4: "A-ASSOCIATE-RJ PDU (received on transport connection)",
    Evt.EVT5: "Transport Connection Indication (local transport service)",
    Evt.EVT6: "A-ASSOCIATE-RQ PDU (received on transport connection)",
    Evt.EVT7: "A-ASSOCIATE-response primitive (accept)",
    Evt.EVT8: "A-ASSOCIATE-response primitive (reject)",
    Evt.EVT9: "P-DATA request primitive",
    Evt.EVT10: "P-DATA-TF PDU",
    Evt.EVT11: "A-RELEASE Request primitive",
    Evt.EVT12: "A-RELEASE-RQ PDU (received on open transport connection)",
    Evt.EVT13: "A-RELEASE-RP PDU (received on transport connection)",
    Evt.EVT14: "A-RELEASE Response primitive",
    Evt.EVT15: "A-ABORT Request primitive",
    Evt.EVT16: "A-ABORT PDU (received on open transport connection)",
    Evt.EVT17: "Transport connection closed indication (local transport service)",
    Evt.EVT18: "ARTIM timer expired (Association reject/release timer)",
    Evt.EVT19: "Unrecognized or invalid PDU received",
}


@dataclass(frozen=True, slots=True)
class Action:
    """One state machine action of PS3.8 section 9.2.2 (Tables 9-6..9-9).

    `definition` quotes the standard. `next_state` is the state the action leads to; the
    flags say what the action does to the ARTIM timer (PS3.8 9.1.5) and to the transport.
    """

    name: str
    definition: str
    next_state: Sta
    #: AR-8 only: the association-acceptor's next state (`next_state` is the requestor's).
    acceptor_next_state: Sta | None = None
    #: AE-6 only: the next state when the service-provider cannot accept the A-ASSOCIATE-RQ.
    otherwise_next_state: Sta | None = None
    starts_artim: bool = False
    stops_artim: bool = False
    closes_transport: bool = False

    def next_state_for(self, role: Role) -> Sta:
        """The next state for an entity playing `role` (differs only for AR-8, PS3.8 Table 9-8)."""
        if role is Role.ACCEPTOR and self.acceptor_next_state is not None:
            return self.acceptor_next_state
        return self.next_state


_ACTION_LIST: Final = (
    # Table 9-6: Association establishment related actions
    Action(
        "AE-1",
        "Issue TRANSPORT CONNECT request primitive to local transport service",
        Sta.STA4,
    ),
    Action("AE-2", "Send A-ASSOCIATE-RQ-PDU", Sta.STA5),
    Action("AE-3", "Issue A-ASSOCIATE confirmation (accept) primitive", Sta.STA6),
    Action(
        "AE-4",
        "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection",
        Sta.STA1,
        closes_transport=True,
    ),
    Action(
        "AE-5",
        "Issue Transport connection response primitive; start ARTIM timer",
        Sta.STA2,
        starts_artim=True,
    ),
    Action(
        "AE-6",
        "Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by service-provider: "
        "issue A-ASSOCIATE indication primitive (next state is Sta3); otherwise: "
        "issue A-ASSOCIATE-RJ-PDU and start ARTIM timer (next state is Sta13)",
        Sta.STA3,
        otherwise_next_state=Sta.STA13,
        stops_artim=True,
    ),
    Action("AE-7", "Send A-ASSOCIATE-AC PDU", Sta.STA6),
    Action("AE-8", "Send A-ASSOCIATE-RJ PDU and start ARTIM timer", Sta.STA13, starts_artim=True),
    # Table 9-7: Data transfer related actions
    Action("DT-1", "Send P-DATA-TF PDU", Sta.STA6),
    Action("DT-2", "Send P-DATA indication primitive", Sta.STA6),
    # Table 9-8: Association release related actions
    Action("AR-1", "Send A-RELEASE-RQ PDU", Sta.STA7),
    Action("AR-2", "Issue A-RELEASE indication primitive", Sta.STA8),
    Action(
        "AR-3",
        "Issue A-RELEASE confirmation primitive, and close transport connection",
        Sta.STA1,
        closes_transport=True,
    ),
    Action("AR-4", "Issue A-RELEASE-RP PDU and start ARTIM timer", Sta.STA13, starts_artim=True),
    Action("AR-5", "Stop ARTIM timer", Sta.STA1, stops_artim=True),
    Action("AR-6", "Issue P-DATA indication", Sta.STA7),
    Action("AR-7", "Issue P-DATA-TF PDU", Sta.STA8),
    Action(
        "AR-8",
        "Issue A-RELEASE indication (release collision): if association-requestor, "
        "next state is Sta9; if not, next state is Sta10",
        Sta.STA9,
        acceptor_next_state=Sta.STA10,
    ),
    Action("AR-9", "Send A-RELEASE-RP PDU", Sta.STA11),
    Action("AR-10", "Issue A-RELEASE confirmation primitive", Sta.STA12),
    # Table 9-9: Association abort related actions
    Action(
        "AA-1",
        "Send A-ABORT PDU (service-user source) and start (or restart if already started) "
        "ARTIM timer",
        Sta.STA13,
        starts_artim=True,
    ),
    Action(
        "AA-2",
        "Stop ARTIM timer if running. Close transport connection",
        Sta.STA1,
        stops_artim=True,
        closes_transport=True,
    ),
    Action(
        "AA-3",
        "If (service-user initiated abort): issue A-ABORT indication and close transport "
        "connection; otherwise (service-provider initiated abort): issue A-P-ABORT indication "
        "and close transport connection",
        Sta.STA1,
        closes_transport=True,
    ),
    Action("AA-4", "Issue A-P-ABORT indication primitive", Sta.STA1),
    Action("AA-5", "Stop ARTIM timer", Sta.STA1, stops_artim=True),
    Action("AA-6", "Ignore PDU", Sta.STA13),
    Action("AA-7", "Send A-ABORT PDU", Sta.STA13),
    Action(
        "AA-8",
        "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, "
        "and start ARTIM timer",
        Sta.STA13,
        starts_artim=True,
    ),
)

#: Every action of PS3.8 Tables 9-6..9-9, by name ("AE-1" ... "AA-8").
ACTIONS: Final[dict[str, Action]] = {action.name: action for action in _ACTION_LIST}

# PS3.8 Table 9-10, transcribed row by row in the standard's layout: one row per event (Evt1
# first), one column per state (Sta1..Sta13 across). "." is a blank cell of the standard: no
# action is defined for that event in that state.
_TABLE_9_10: Final = """
        Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
Evt1    AE-1  .     .     .     .     .     .     .     .     .     .     .     .
Evt2    .     .     .     AE-2  .     .     .     .     .     .     .     .     .
Evt3    .     AA-1  AA-8  .     AE-3  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt4    .     AA-1  AA-8  .     AE-4  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt5    AE-5  .     .     .     .     .     .     .     .     .     .     .     .
Evt6    .     AE-6  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
Evt7    .     .     AE-7  .     .     .     .     .     .     .     .     .     .
Evt8    .     .     AE-8  .     .     .     .     .     .     .     .     .     .
Evt9    .     .     .     .     .     DT-1  .     AR-7  .     .     .     .     .
Evt10   .     AA-1  AA-8  .     AA-8  DT-2  AR-6  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt11   .     .     .     .     .     AR-1  .     .     .     .     .     .     .
Evt12   .     AA-1  AA-8  .     AA-8  AR-2  AR-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt13   .     AA-1  AA-8  .     AA-8  AA-8  AR-3  AA-8  AA-8  AR-10 AR-3  AA-8  AA-6
Evt14   .     .     .     .     .     .     .     AR-4  AR-9  .     .     AR-4  .
Evt15   .     .     AA-1  AA-2  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  .
Evt16   .     AA-2  AA-3  .     AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-2
Evt17   .     AA-5  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AR-5
Evt18   .     AA-2  .     .     .     .     .     .     .     .     .     .     AA-2
Evt19   .     AA-1  AA-8  .     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
"""


def _parse_table(text: str) -> dict[tuple[Evt, Sta], str]:
    header, *rows = text.strip().splitlines()
    states = [Sta(int(label.removeprefix("Sta"))) for label in header.split()]
    table: dict[tuple[Evt, Sta], str] = {}
    for row in rows:
        label, *cells = row.split()
        event = Evt(int(label.removeprefix("Evt")))
        for state, cell in zip(states, cells, strict=True):
            if cell != ".":
                table[(event, state)] = cell
    return table


#: PS3.8 Table 9-10: (event, current state) -> action name. A missing key is a blank cell.
TRANSITIONS: Final[dict[tuple[Evt, Sta], str]] = _parse_table(_TABLE_9_10)


def render_markdown() -> str:
    """Draw PS3.8 Table 9-10 and the action definitions (Tables 9-6..9-9) as Markdown.

    The docs are generated from `TRANSITIONS` and `ACTIONS`, the same data the association
    runs on (PS3.8 section 9.2).
    """
    lines = [
        "| Event | " + " | ".join(state.label for state in Sta) + " |",
        "|---|" + "---|" * len(Sta),
    ]
    for event in Evt:
        cells = [TRANSITIONS.get((event, state), "") for state in Sta]
        lines.append(f"| {event.label} {event.description} | " + " | ".join(cells) + " |")
    lines += ["", "| State | Definition |", "|---|---|"]
    lines.extend(f"| {state.label} | {state.description} |" for state in Sta)
    lines += ["", "| Action | Definition | Next state |", "|---|---|---|"]
    for action in ACTIONS.values():
        next_state = action.next_state.label
        if action.acceptor_next_state is not None:
            next_state = (
                f"{action.next_state.label} (requestor), "
                f"{action.acceptor_next_state.label} (acceptor)"
            )
        elif action.otherwise_next_state is not None:
            next_state = f"{action.next_state.label} or {action.otherwise_next_state.label}"
        lines.append(f"| {action.name} | {action.definition} | {next_state} |")
    return "\n".join(lines) + "\n"


DOCUMENT_HEADER: Final = """# The DICOM Upper Layer state machine

Generated from `node/ul/fsm.py` (the table the association runs on) by
`python scripts/state_machine_doc.py`; `tests/ul/test_state_machine_doc.py` fails when this
file and the table differ. Source: PS3.8 section 9.2, Tables 9-1..9-10. Each cell of the
transition table names the action taken for an event in a state; a blank cell is a blank of
the standard: a local primitive there is refused (LocalProtocolError) and changes nothing.

"""


def render_document() -> str:
    """docs/state-machine.md: the header above, then render_markdown()."""
    return DOCUMENT_HEADER + render_markdown()
