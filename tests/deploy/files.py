# The files under deploy/ and small readers shared by the tests of tests/deploy.
#
# Rules: reading and parsing only (YAML, the Dockerfile's instructions); no network, no
# cluster, no Docker engine.
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.synthetic import PATIENCE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.deploy.kustomize import Document

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
COMPOSE = DEPLOY / "compose.yaml"
CONFIG_MAP = K8S / "common" / "configmap.yaml"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "production": K8S / "overlays" / "production",
    "objects": K8S / "overlays" / "objects",
}
EXAMPLE_SECRETS = sorted((K8S / "examples").glob("*.yaml"))


def run(command: list[str], timeout: float = PATIENCE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def by_kind(documents: list[Document], kind: str) -> dict[str, Document]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def pod_specs(documents: list[Document]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in by_kind(documents, "Deployment").items():
        yield name, deployment["spec"]["template"]["spec"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions
