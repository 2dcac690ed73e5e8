# Fixtures shared by the AE, CLI and interop tests: AEs that are always stopped, synthetic data.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.synthetic import make_datasets, write_datasets

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from pydicom.dataset import Dataset

    from node.ae import ApplicationEntity


@pytest.fixture
def make_ae() -> Iterator[Callable[..., ApplicationEntity]]:
    """Create AEs (SCU or SCP); each one is stopped at teardown, whatever happened."""
    from node import AE

    created: list[ApplicationEntity] = []

    def factory(ae_title: str | bytes = b"PYNETDICOM", **attributes: Any) -> ApplicationEntity:
        ae = AE(ae_title=ae_title)
        for name, value in attributes.items():
            setattr(ae, name, value)
        created.append(ae)
        return ae

    yield factory
    for ae in created:
        ae.stop()


@pytest.fixture
def datasets() -> list[Dataset]:
    """2 patients x 2 studies x 1 series x 2 instances, 8x8 pixels."""
    return make_datasets()


@pytest.fixture
def dicom_folder(tmp_path: Path, datasets: list[Dataset]) -> Path:
    folder = tmp_path / "in"
    write_datasets(datasets, folder)
    return folder


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA with server, client and rogue-CA client certificates (tests.certificates)."""
    from tests.certificates import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))
