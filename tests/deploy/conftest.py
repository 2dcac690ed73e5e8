# The three kustomizations of deploy/k8s, rendered once for every test of tests/deploy.
from __future__ import annotations

import pytest

from tests.deploy.files import KUSTOMIZATIONS
from tests.deploy.kustomize import Document, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Document]]:
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}
