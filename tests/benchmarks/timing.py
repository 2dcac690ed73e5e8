# One timing loop shared by every side of a benchmark, ours and the peers' (it is imported by
# the scripts that run in tests/benchmarks/.venv-peers too), so the numbers differ only by the
# code under test. Stdlib only; no import from `node`.
#
# Method, as timeit's autorange: grow the number of calls per run until one run takes at least
# `min_time`, then time `repeat` runs of that many calls. The garbage collector stays enabled:
# both codecs allocate, and a real server pays for its collections.
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class Timing:
    """`repeat` runs of `number` calls each; `seconds` holds each run's wall time."""

    number: int
    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        """Seconds per call in the fastest run (the least disturbed by other load)."""
        return min(self.seconds) / self.number

    @property
    def median(self) -> float:
        """Seconds per call in the median run."""
        return statistics.median(self.seconds) / self.number

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timing:
        return cls(int(data["number"]), tuple(float(s) for s in data["seconds"]))


def _run(call: Callable[[], object], number: int) -> float:
    clock = time.perf_counter
    start = clock()
    for _ in range(number):
        call()
    return clock() - start


def measure(call: Callable[[], object], *, min_time: float, repeat: int) -> Timing:
    """Time `call` (no arguments) as the module comment says; one untimed call warms it up."""
    call()
    number = 1
    while True:
        elapsed = _run(call, number)
        if elapsed >= min_time:
            break
        # Aim a little past min_time so the first timed run does not fall just short.
        number = max(number * 2, int(number * 1.2 * min_time / max(elapsed, 1e-9)))
    return Timing(number, tuple(_run(call, number) for _ in range(repeat)))
