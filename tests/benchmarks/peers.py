# The peer implementations the benchmarks compare against (pynetdicom) live in their own venv,
# tests/benchmarks/.venv-peers, made on demand and never in the project's venv: the project
# does not depend on them. The venv is built from the interpreter that runs the benchmark, so
# both sides run on the same Python. Its own .gitignore keeps git and ruff out of it.
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

BENCHMARKS: Final = Path(__file__).resolve().parent
#: Where the peers' venv lives (gitignored).
PEER_VENV: Final = BENCHMARKS / ".venv-peers"
#: The repository root: the peer scripts run from here as ``-m tests.benchmarks.<name>``.
ROOT: Final = BENCHMARKS.parent.parent
#: What the codec benchmark needs, pinned first, then unpinned as the fallback.
PYNETDICOM: Final = (("pynetdicom==3.0.4", "pydicom"), ("pynetdicom", "pydicom"))


def peer_python() -> Path:
    """The peer venv's interpreter (it may not exist yet)."""
    return PEER_VENV / "bin" / "python"


def _can_import(python: Path, modules: tuple[str, ...]) -> bool:
    code = "import " + ", ".join(modules)
    return subprocess.run([python, "-c", code], capture_output=True, check=False).returncode == 0


def ensure_peer_venv(
    modules: tuple[str, ...] = ("pynetdicom", "pydicom"),
    requirements: tuple[tuple[str, ...], ...] = PYNETDICOM,
) -> Path:
    """Make the peer venv if needed and install the first of `requirements` that pip accepts,
    unless `modules` already import there; return its interpreter."""
    python = peer_python()
    if not python.exists():
        print(f"creating {PEER_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", PEER_VENV], check=True)
        (PEER_VENV / ".gitignore").write_text("# made by tests/benchmarks/peers.py\n*\n")
    if _can_import(python, modules):
        return python
    for packages in requirements:
        print(f"installing {' '.join(packages)} into {PEER_VENV} ...", file=sys.stderr)
        done = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
            check=False,
        )
        if done.returncode == 0 and _can_import(python, modules):
            return python
    raise RuntimeError(f"could not install {requirements[-1]} into {PEER_VENV}")
