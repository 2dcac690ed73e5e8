# A small archive for the index and Query/Retrieve tests: 3 patients x 2 studies x 2 series x
# 3 images (16x16 pixels), with names, dates and times chosen to exercise each matching rule.
#
# Rules: deterministic (UIDs under tests.synthetic.ROOT: <root>.<patient>.<study>.<series>.<n>),
# made with pydicom only; nothing here touches the network.
from __future__ import annotations

from typing import TYPE_CHECKING

from tests.synthetic import make_dataset

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

NAMES = {1: "DOE^JOHN", 2: "DOE^JANE", 3: "SMITH^ANNA"}
#: (StudyDate, StudyTime) per (patient, study).
WHEN = {
    (1, 1): ("20200105", "083000"),
    (1, 2): ("20200610", "141500.5"),
    (2, 1): ("20201231", "235959"),
    (2, 2): ("20210101", "000000"),
    (3, 1): ("20190715", "1200"),
    (3, 2): ("20220202", "101010.123"),
}


def archive_dataset(patient: int, study: int, series: int, instance: int) -> Dataset:
    """One image of the archive: series 1 is CT, series 2 MR (so studies hold both)."""
    ds = make_dataset(
        patient, study, series, instance, modality="CT" if series == 1 else "MR", size=16
    )
    ds.PatientName = NAMES[patient]
    ds.PatientSex = "MF"[patient % 2]
    ds.PatientBirthDate = f"19{50 + patient * 10}0101"
    ds.StudyDate, ds.StudyTime = WHEN[(patient, study)]
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.SeriesDescription = f"series {series}"
    return ds


def archive_datasets() -> list[Dataset]:
    return [
        archive_dataset(patient, study, series, instance)
        for patient in (1, 2, 3)
        for study in (1, 2)
        for series in (1, 2)
        for instance in (1, 2, 3)
    ]
