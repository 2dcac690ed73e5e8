# Index benchmark (not a test): bulk-load N synthetic instance rows through the Index API, time
# single durable adds (what each C-STORE pays), then C-FIND-style queries through the built-in
# SCP (matching, paging, identifiers), printing milliseconds.
#
#   python -m tests.benchmarks.index_find [--rows 100000] [--repeat 5] [--keep DIR]
#
# Target: every STUDY-level query well under 100 ms on 100 000 instances.
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from workers.handlers.qr import QueryRetrieveSCP
from workers.store.index import Index
from workers.store.matching import parse_identifier
from workers.store.schema import InstanceRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = "1.2.826.0.1.3680043.8.498.99"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
SURNAMES = ("SMITH", "JONES", "MILLER", "GARCIA", "MARTIN", "LEE", "WALKER", "YOUNG", "KING")
STUDIES_PER_PATIENT = 2
SERIES_PER_STUDY = 2
INSTANCES_PER_SERIES = 5


class Context:
    abstract_syntax = STUDY_FIND


def records(rows: int, seed: int = 7, root: str = ROOT) -> Iterator[InstanceRecord]:
    """`rows` instances: patients x 2 studies x 2 series x 5 images; 1 patient in 40 is a DOE."""
    rng = random.Random(seed)
    per_patient = STUDIES_PER_PATIENT * SERIES_PER_STUDY * INSTANCES_PER_SERIES
    for patient in range(rows // per_patient):
        surname = "DOE" if patient % 40 == 0 else rng.choice(SURNAMES)
        name = f"{surname}^{rng.choice('ABCDEFGH')}{patient}"
        for study in range(STUDIES_PER_PATIENT):
            study_uid = f"{root}.{patient}.{study}"
            date = f"{rng.randint(2000, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            for series in range(SERIES_PER_STUDY):
                series_uid = f"{study_uid}.{series}"
                for instance in range(INSTANCES_PER_SERIES):
                    sop = f"{series_uid}.{instance}"
                    yield InstanceRecord(
                        sop,
                        "1.2.840.10008.5.1.4.1.1.2",
                        "1.2.840.10008.1.2.1",
                        f"objects/{study_uid}/{series_uid}/{sop}.dcm",
                        {
                            "PatientID": f"PID{patient:07d}" if root == ROOT else f"X{patient}",
                            "PatientName": name,
                            "PatientBirthDate": f"19{rng.randint(30, 99)}0101",
                            "PatientSex": rng.choice("MF"),
                            "StudyInstanceUID": study_uid,
                            "StudyDate": date,
                            "StudyTime": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00",
                            "AccessionNumber": f"A{patient:07d}{study}",
                            "StudyDescription": "CT CHEST" if study else "MR HEAD",
                            "SeriesInstanceUID": series_uid,
                            "Modality": ("CT", "MR")[(series + study) % 2],
                            "SeriesNumber": str(series + 1),
                            "InstanceNumber": str(instance + 1),
                        },
                        2_000_000,
                    )


def identifier(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def study_query(**keys: object) -> Dataset:
    returned = dict.fromkeys(
        (
            "StudyInstanceUID",
            "PatientName",
            "PatientID",
            "StudyDate",
            "AccessionNumber",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
        ),
        "",
    )
    return identifier("STUDY", **{**returned, **keys})


QUERIES: dict[str, tuple[str, Dataset]] = {
    "STUDY PatientName=DOE*": (STUDY_FIND, study_query(PatientName="DOE*")),
    "STUDY StudyDate=Jan 2020": (STUDY_FIND, study_query(StudyDate="20200101-20200131")),
    "STUDY PatientName=DOE* + StudyDate 2020-2021": (
        STUDY_FIND,
        study_query(PatientName="DOE*", StudyDate="20200101-20211231"),
    ),
    "STUDY ModalitiesInStudy=MR + StudyDate Jan 2020": (
        STUDY_FIND,
        study_query(ModalitiesInStudy="MR", StudyDate="20200101-20200131"),
    ),
    "STUDY AccessionNumber=exact": (STUDY_FIND, study_query(AccessionNumber="A00012341")),
    "STUDY PatientName=*^B12* (no prefix)": (STUDY_FIND, study_query(PatientName="*^B12*")),
    "PATIENT PatientID=PID00012*": (
        PATIENT_FIND,
        identifier(
            "PATIENT", PatientID="PID00012*", PatientName="", NumberOfPatientRelatedStudies=""
        ),
    ),
    "SERIES in one study": (
        STUDY_FIND,
        identifier("SERIES", StudyInstanceUID=f"{ROOT}.1234.1", SeriesInstanceUID="", Modality=""),
    ),
}


def timed(action: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best, median) milliseconds over `repeat` runs, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.index_find")
    parser.add_argument("--rows", type=int, default=100_000, help="instance rows to load")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="build the index in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep or scratch)
        print(f"index in {folder}, {args.rows} instance rows")
        with Index.open(folder, synchronous="OFF") as index:
            start = time.perf_counter()
            batch: list[InstanceRecord] = []
            for record in records(args.rows):
                batch.append(record)
                if len(batch) == 5000:
                    index.add_many(batch)
                    batch.clear()
            index.add_many(batch)
            index.backend.optimize()
            load = time.perf_counter() - start
            counts = index.counts()
            print(
                f"bulk load (add_many, 5000 per transaction): {load:.1f} s, "
                f"{counts['instance'] / load:,.0f} rows/s; {counts}"
            )
        for synchronous in ("FULL", "NORMAL"):
            with Index.open(folder, synchronous=synchronous) as index:
                extra = list(records(200, seed=99, root=f"{ROOT}.9.{len(synchronous)}"))
                start = time.perf_counter()
                for record in extra:
                    index.add(record)
                each = (time.perf_counter() - start) / len(extra) * 1000
                print(f"add() one committed row, synchronous={synchronous}: {each:.2f} ms")
        print(f"\nC-FIND through the built-in SCP ({args.repeat} runs; best / median ms)")
        print(f"{'query':50} {'matches':>8} {'first':>8} {'all':>16}")
        worst = 0.0
        with Index.open(folder) as index:
            scp = QueryRetrieveSCP(index)
            for name, (sop_class, ds) in QUERIES.items():
                context = type("Context", (), {"abstract_syntax": sop_class})()
                parse_identifier(ds, sop_class)  # fail early on a broken benchmark query

                def first(ds: Dataset = ds, context: Any = context) -> Any:
                    return next(iter(scp.on_c_find(ds, context, {})), None)

                def everything(ds: Dataset = ds, context: Any = context) -> int:
                    return sum(1 for _ in scp.on_c_find(ds, context, {}))

                first_best, _, _ = timed(first, args.repeat)
                best, median, matches = timed(everything, args.repeat)
                worst = max(worst, median) if name.startswith("STUDY") else worst
                print(f"{name:50} {matches:8d} {first_best:8.2f} {best:7.2f} / {median:6.2f}")
        print(f"\nworst STUDY-level median: {worst:.2f} ms (target < 100 ms)")
    return 0 if worst < 100 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
