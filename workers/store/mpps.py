# Modality Performed Procedure Step instances (PS3.4 Annex F) kept in the index database, in
# the `mpps` table: one row per SOP instance with its status and its attributes (DICOM JSON,
# PS3.18 F.2), so every worker process sees every step.
#
# Rules: the state machine of F.7.2: N-CREATE makes a step IN PROGRESS (any other Performed
# Procedure Step Status is refused); N-SET is accepted only while the step is IN PROGRESS, and
# may leave it IN PROGRESS or make it COMPLETED or DISCONTINUED; after that the step may no
# longer be updated (0110H with Error ID A710, F.7.2.2.4). Each change is one transaction
# (the row is locked on PostgreSQL: two N-SETs never both see IN PROGRESS).
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from pydicom.dataset import Dataset

from node.dimse.status import Status
from workers.store.backend import now_ms

if TYPE_CHECKING:
    from workers.store.index import Index

IN_PROGRESS: Final = "IN PROGRESS"
COMPLETED: Final = "COMPLETED"
DISCONTINUED: Final = "DISCONTINUED"
STATUSES: Final = (IN_PROGRESS, COMPLETED, DISCONTINUED)
#: Performed Procedure Step Status (0040,0252).
STATUS_TAG: Final = 0x00400252

DUPLICATE_SOP_INSTANCE: Final = 0x0111
INVALID_ATTRIBUTE_VALUE: Final = 0x0106
MISSING_ATTRIBUTE: Final = 0x0120
#: Error ID of "Performed Procedure Step Object may no longer be updated" (Table F.7.2-2).
MAY_NO_LONGER_BE_UPDATED: Final = 0xA710


class MppsError(Exception):
    """A refused MPPS operation: the status (and fields) to answer with (PS3.4 F.7.2)."""

    def __init__(
        self,
        status: int,
        comment: str,
        *,
        error_id: int | None = None,
        offending_element: int | None = None,
    ) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.error_id = error_id
        self.offending_element = offending_element


def _status_of(attributes: Dataset) -> str | None:
    if STATUS_TAG not in attributes:
        return None
    return str(attributes[STATUS_TAG].value or "").strip()


def _to_text(attributes: Dataset) -> str:
    return json.dumps(attributes.to_json_dict(), sort_keys=True)


def _from_text(text: str) -> Dataset:
    return Dataset.from_json(json.loads(text))


class MppsStore:
    """The Performed Procedure Steps of one index database."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._mark = index.dialect.placeholder
        self._lock_row = " FOR UPDATE" if index.dialect.name == "postgresql" else ""

    def create(self, sop_instance_uid: str, attributes: Dataset) -> None:
        """N-CREATE (PS3.4 F.7.2.1): a new step, which must be IN PROGRESS."""
        status = _status_of(attributes)
        if status is None:
            raise MppsError(
                MISSING_ATTRIBUTE,
                "Performed Procedure Step Status is missing",
                offending_element=STATUS_TAG,
            )
        if status != IN_PROGRESS:
            raise MppsError(
                INVALID_ATTRIBUTE_VALUE,
                f"a new step must be IN PROGRESS, not {status!r}",
                offending_element=STATUS_TAG,
            )
        now = now_ms()
        mark = self._mark
        with self.index.backend.transaction() as cursor:
            inserted = cursor.execute(
                "INSERT INTO mpps (sop_instance_uid, status, attributes, created_ms, "  # noqa: S608
                f"updated_ms) VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) "
                "ON CONFLICT (sop_instance_uid) DO NOTHING",
                (sop_instance_uid, status, _to_text(attributes), now, now),
            ).rowcount
        if inserted != 1:
            raise MppsError(DUPLICATE_SOP_INSTANCE, f"step {sop_instance_uid} already exists")

    def update(self, sop_instance_uid: str, changes: Dataset) -> Dataset:
        """N-SET (PS3.4 F.7.2.2): replace the given attributes of a step that is IN PROGRESS;
        returns the step as it now is."""
        new_status = _status_of(changes)
        if new_status is not None and new_status not in STATUSES:
            raise MppsError(
                INVALID_ATTRIBUTE_VALUE,
                f"Performed Procedure Step Status {new_status!r} is not "
                "IN PROGRESS, COMPLETED or DISCONTINUED",
                offending_element=STATUS_TAG,
            )
        mark = self._mark
        with self.index.backend.transaction() as cursor:
            row = cursor.execute(
                f"SELECT status, attributes FROM mpps WHERE sop_instance_uid = {mark}"  # noqa: S608
                + self._lock_row,
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                raise MppsError(Status.NO_SUCH_SOP_INSTANCE, f"no step {sop_instance_uid}")
            if row[0] != IN_PROGRESS:
                raise MppsError(
                    Status.PROCESSING_FAILURE,
                    "Performed Procedure Step Object may no longer be updated",
                    error_id=MAY_NO_LONGER_BE_UPDATED,
                )
            attributes = _from_text(row[1])
            for element in changes:
                attributes[element.tag] = element
            status = _status_of(attributes) or IN_PROGRESS
            cursor.execute(
                f"UPDATE mpps SET status = {mark}, attributes = {mark}, "  # noqa: S608
                f"updated_ms = {mark} WHERE sop_instance_uid = {mark}",
                (status, _to_text(attributes), now_ms(), sop_instance_uid),
            )
        return attributes

    def get(self, sop_instance_uid: str) -> Dataset | None:
        """The attributes of a step (N-GET), or None when there is no such step."""
        rows = self.index.backend.fetch(
            f"SELECT attributes FROM mpps WHERE sop_instance_uid = {self._mark}",  # noqa: S608
            (sop_instance_uid,),
        )
        return _from_text(rows[0][0]) if rows else None
