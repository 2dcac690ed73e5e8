# Interop fixtures: a small synthetic archive, a matcher for it, and DCMTK servers that are
# always killed at teardown.
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import pytest
from pydicom.dataset import Dataset

from tests.synthetic import free_port, make_datasets, running, write_datasets

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

LEVEL_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("PatientID", "StudyInstanceUID"),
    "SERIES": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


def _matches(candidate: Dataset, query: Dataset) -> bool:
    for element in query:
        if element.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or not element.value:
            continue
        if element.keyword not in candidate:
            return False
        wanted = str(element.value)
        have = str(candidate[element.keyword].value)
        if element.VR == "UI" and "\\" in wanted:
            if have not in wanted.split("\\"):
                return False
        elif not fnmatch.fnmatchcase(have, wanted):
            return False
    return True


class Archive:
    """The synthetic data sets plus a minimal Q/R matcher over them (PS3.4 C.2.2)."""

    def __init__(self, datasets: list[Dataset], paths: list[Path]) -> None:
        self.datasets = datasets
        self.paths = paths

    def instances(self, query: Dataset) -> list[Dataset]:
        return [ds for ds in self.datasets if _matches(ds, query)]

    def find(self, query: Dataset) -> list[Dataset]:
        """One identifier per unique entity at the query's level, with the requested keys."""
        level = str(query.get("QueryRetrieveLevel", "STUDY"))
        seen: dict[tuple[str, ...], Dataset] = {}
        for ds in self.instances(query):
            key = tuple(str(ds.get(keyword, "")) for keyword in LEVEL_KEYS[level])
            if key in seen:
                continue
            answer = Dataset()
            answer.QueryRetrieveLevel = level
            for element in query:
                if element.keyword and element.keyword != "QueryRetrieveLevel":
                    setattr(answer, element.keyword, ds.get(element.keyword, ""))
            seen[key] = answer
        return list(seen.values())


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    """2 patients x 2 studies x 2 series x 2 instances = 16 small images on disk."""
    datasets = make_datasets(patients=2, studies=2, series=2, instances=2)
    return Archive(datasets, write_datasets(datasets, tmp_path / "archive"))


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    """Start DCMTK storescp processes: factory(ae_title) -> (port, output folder)."""
    stack: list[Any] = []

    def start(ae_title: str = "STORESCP") -> tuple[int, Path]:
        port = free_port()
        folder = tmp_path / f"storescp-{ae_title}-{port}"
        folder.mkdir()
        context = running(["storescp", "-aet", ae_title, "-od", folder, port], port)
        context.__enter__()
        stack.append(context)
        return port, folder

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
