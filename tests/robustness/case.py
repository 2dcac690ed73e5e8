# The cases of the malformed-input battery (issue 7) as data, and the outcome sets they accept.
#
# Rules: a case is data (bytes to send, whether an association is established first, whether
# the write side is half-closed, whether the probe C-ECHO follows, the acceptable outcomes).
# Cases that leave the server waiting for bytes that never come half-close, so the server sees
# EOF at once instead of waiting for its ARTIM timer (that timer is checked separately, by
# connections left open while the battery runs).
from __future__ import annotations

from dataclasses import dataclass

from tests.robustness.golden import BASE_RQ
from tests.robustness.wire import Outcome

ABORTS = frozenset({Outcome.ABORT})
CLOSES = frozenset({Outcome.CLOSE})
ENDS = frozenset({Outcome.ABORT, Outcome.CLOSE})
REFUSED = frozenset({Outcome.ABORT, Outcome.REJECT})
#: A proposed context the server cannot use is answered in the A-ASSOCIATE-AC (PS3.8 9.3.3.2).
CONTEXT_REFUSED = frozenset({Outcome.ACCEPT_NONE, Outcome.REJECT, Outcome.ABORT})
#: A request refused with a failure response, the association going on (PS3.7 C.5).
FAILS = frozenset({Outcome.FAILURE})


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    payload: tuple[bytes, ...]
    expect: frozenset[Outcome]
    #: The A-ASSOCIATE-RQ sent, and answered with an A-ASSOCIATE-AC, before the payload.
    association: bytes | None = None
    #: Shut the write side after the payload (the server reads EOF, Evt17).
    half_close: bool = False
    #: Send the probe C-ECHO-RQ after the payload; its success response ends the read.
    probe: bool = False
    #: When not empty, each non-probe DIMSE response status must be one of these.
    statuses: frozenset[int] = frozenset()

    @property
    def id(self) -> str:
        return f"{self.category}-{self.name}"


def make_case(category: str, name: str, *payload: bytes, **options: object) -> Case:
    """A case; `established=True` stands for `association=BASE_RQ`."""
    expect = options.pop("expect")
    if options.pop("established", False):
        options["association"] = BASE_RQ
    return Case(category, name, tuple(payload), expect, **options)  # type: ignore[arg-type]
