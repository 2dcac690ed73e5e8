# Study-stable detection: a study that received no new instance for a quiet period raises one
# "study stable" event (a user callback `on_study_stable(study_instance_uid, info)`, a log line
# and a metric), for routing, AI pipelines, forwarding... once the study is complete.
#
# Rules: the state lives in the index database, not in a process: Index.add stamps the study's
# row in `study_activity` (last_update_ms, stable_fired = 0) in the same transaction as the
# instance, and a monitor thread in each worker process (or in-process AE) looks for studies
# quiet long enough and claims each with `UPDATE ... SET stable_fired = 1 WHERE stable_fired =
# 0 AND last_update_ms <= cutoff`: only the worker whose UPDATE changed the row fires, so with
# any number of workers the event fires exactly once per quiet period (at most once: a callback
# that fails is logged, not retried). A new instance after the event re-arms the study.
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from workers.store.backend import IndexDatabaseError, now_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from workers.store.index import Index

log = logging.getLogger("dicomnode.stable")

#: Studies claimed per scan (the next scan takes the rest).
BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class StableStudy:
    """What the `on_study_stable` callback is told about the study (also as a dict)."""

    study_instance_uid: str
    last_update_ms: int
    quiet_seconds: float
    patient_id: str
    number_of_series: int
    number_of_instances: int

    def as_info(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "last_update": self.last_update_ms / 1000.0,
            "quiet_seconds": self.quiet_seconds,
            "patient_id": self.patient_id,
            "number_of_series": self.number_of_series,
            "number_of_instances": self.number_of_instances,
        }


def claim_stable_studies(
    index: Index, quiet_seconds: float, *, now: int | None = None
) -> list[StableStudy]:
    """Claim the studies quiet for `quiet_seconds` (at `now`, in ms); each study is returned to
    exactly one caller, however many workers scan the same database at once."""
    cutoff = (now_ms() if now is None else now) - int(quiet_seconds * 1000)
    mark = index.dialect.placeholder
    candidates = index.backend.fetch(
        "SELECT study_uid, last_update_ms FROM study_activity "  # noqa: S608 - placeholders only
        f"WHERE stable_fired = 0 AND last_update_ms <= {mark} "
        f"ORDER BY last_update_ms LIMIT {BATCH}",
        (cutoff,),
    )
    claimed: list[StableStudy] = []
    for study_uid, last_update in candidates:
        with index.backend.transaction() as cursor:
            won = cursor.execute(
                "UPDATE study_activity SET stable_fired = 1 "  # noqa: S608 - placeholders only
                f"WHERE study_uid = {mark} AND stable_fired = 0 AND last_update_ms <= {mark}",
                (study_uid, cutoff),
            ).rowcount
        if won == 1:
            claimed.append(_describe(index, str(study_uid), int(last_update), quiet_seconds))
    return claimed


def _describe(index: Index, study_uid: str, last_update: int, quiet_seconds: float) -> StableStudy:
    mark = index.dialect.placeholder
    rows = index.backend.fetch(
        "SELECT patient.patient_id, "  # noqa: S608 - placeholders only
        "(SELECT COUNT(*) FROM series WHERE series.study_ref = study.id), "
        "(SELECT COUNT(*) FROM instance JOIN series s ON instance.series_ref = s.id "
        "WHERE s.study_ref = study.id) "
        "FROM study JOIN patient ON study.patient_ref = patient.id "
        f"WHERE study.study_uid = {mark}",
        (study_uid,),
    )
    patient, series, instances = rows[0] if rows else ("", 0, 0)
    return StableStudy(
        study_uid, last_update, quiet_seconds, str(patient), int(series), int(instances)
    )


class StudyStableMonitor:
    """A background thread that fires `callback(study_instance_uid, info)` for quiet studies."""

    def __init__(
        self,
        index: Index,
        quiet_seconds: float,
        callback: Callable[[str, dict[str, Any]], Any] | None,
        *,
        interval: float | None = None,
        on_fired: Callable[[], None] | None = None,
    ) -> None:
        if quiet_seconds <= 0:
            raise ValueError(f"the quiet period must be positive, not {quiet_seconds}")
        self.index = index
        self.quiet_seconds = quiet_seconds
        self.callback = callback
        #: How often the database is scanned: a quarter of the quiet period, 50 ms to 5 s.
        self.interval = interval if interval is not None else min(5.0, max(0.05, quiet_seconds / 4))
        #: Called once per fired event (the metric), or None.
        self.on_fired = on_fired
        self.fired = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[StableStudy]:
        """One scan: claim the quiet studies and fire their events; returns them."""
        try:
            studies = claim_stable_studies(self.index, self.quiet_seconds)
        except IndexDatabaseError as error:
            log.warning("study-stable scan failed: %s", error)
            return []
        for study in studies:
            self._fire(study)
        return studies

    def _fire(self, study: StableStudy) -> None:
        self.fired += 1
        log.info(
            "study stable: %s (%d series, %d instances, quiet for %.1f s)",
            study.study_instance_uid,
            study.number_of_series,
            study.number_of_instances,
            self.quiet_seconds,
        )
        if self.on_fired is not None:
            self.on_fired()
        if self.callback is None:
            return
        try:
            self.callback(study.study_instance_uid, study.as_info())
        except Exception:
            log.exception("on_study_stable failed for %s", study.study_instance_uid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def start(self) -> StudyStableMonitor:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="dicomnode-study-stable", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)


def start_monitor(
    index: Index, quiet_seconds: float, callback: Callable[[str, dict[str, Any]], Any] | None
) -> StudyStableMonitor:
    """Start a monitor that also counts events in the prometheus metric
    dicomnode_studies_stable_total (node.observability.STUDIES_STABLE)."""
    from node.observability import STUDIES_STABLE

    return StudyStableMonitor(index, quiet_seconds, callback, on_fired=STUDIES_STABLE.inc).start()
