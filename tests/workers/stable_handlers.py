# A handlers module (`--handlers tests.workers.stable_handlers`) whose on_study_stable appends
# one JSON line per event to $DICOMNODE_TEST_DIR/stable-<pid>.jsonl, so that a test in another
# process can count events and see which worker process fired them.
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def on_study_stable(study_instance_uid: str, info: dict[str, Any]) -> None:
    folder = Path(os.environ["DICOMNODE_TEST_DIR"])
    line = {"study": study_instance_uid, "pid": os.getpid(), **info}
    with (folder / f"stable-{os.getpid()}.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def events(folder: Path) -> list[dict[str, Any]]:
    """Every event the handler wrote under `folder`, from all processes."""
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("stable-*.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found
