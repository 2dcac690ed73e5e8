# Event types for the pynetdicom-style event-handler API (`evt_handlers=[(evt.EVT_C_STORE, fn)]`).
#
# Rules: plain data, importable by workers (handlers of intervention events run there).
# Intervention events (DIMSE requests, association negotiation) take one handler whose return
# value is the answer; notification events take any number of handlers, answers ignored.
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventType:
    """An event a handler can be bound to."""

    name: str
    description: str
    is_intervention: bool

    def __repr__(self) -> str:
        return self.name


EVT_C_ECHO = EventType("EVT_C_ECHO", "C-ECHO request received", True)
EVT_C_STORE = EventType("EVT_C_STORE", "C-STORE request received", True)
EVT_C_FIND = EventType("EVT_C_FIND", "C-FIND request received", True)
EVT_C_GET = EventType("EVT_C_GET", "C-GET request received", True)
EVT_C_MOVE = EventType("EVT_C_MOVE", "C-MOVE request received", True)
EVT_N_ACTION = EventType("EVT_N_ACTION", "N-ACTION request received", True)
EVT_N_CREATE = EventType("EVT_N_CREATE", "N-CREATE request received", True)
EVT_N_DELETE = EventType("EVT_N_DELETE", "N-DELETE request received", True)
EVT_N_EVENT_REPORT = EventType("EVT_N_EVENT_REPORT", "N-EVENT-REPORT request received", True)
EVT_N_GET = EventType("EVT_N_GET", "N-GET request received", True)
EVT_N_SET = EventType("EVT_N_SET", "N-SET request received", True)
EVT_USER_ID = EventType("EVT_USER_ID", "user identity negotiation requested", True)
EVT_ASYNC_OPS = EventType("EVT_ASYNC_OPS", "asynchronous operations window proposed", True)
EVT_SOP_EXTENDED = EventType("EVT_SOP_EXTENDED", "SOP class extended negotiation", True)
EVT_SOP_COMMON = EventType("EVT_SOP_COMMON", "SOP class common extended negotiation", True)

EVT_REQUESTED = EventType("EVT_REQUESTED", "association requested", False)
EVT_ACCEPTED = EventType("EVT_ACCEPTED", "association accepted", False)
EVT_REJECTED = EventType("EVT_REJECTED", "association rejected", False)
EVT_RELEASED = EventType("EVT_RELEASED", "association released", False)
EVT_ABORTED = EventType("EVT_ABORTED", "association aborted", False)
EVT_ESTABLISHED = EventType("EVT_ESTABLISHED", "association established", False)
EVT_CONN_OPEN = EventType("EVT_CONN_OPEN", "connection opened", False)
EVT_CONN_CLOSE = EventType("EVT_CONN_CLOSE", "connection closed", False)

DIMSE_EVENTS = (
    EVT_C_ECHO,
    EVT_C_STORE,
    EVT_C_FIND,
    EVT_C_GET,
    EVT_C_MOVE,
    EVT_N_ACTION,
    EVT_N_CREATE,
    EVT_N_DELETE,
    EVT_N_EVENT_REPORT,
    EVT_N_GET,
    EVT_N_SET,
)
