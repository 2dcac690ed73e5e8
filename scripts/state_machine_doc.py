"""Write docs/state-machine.md from the Upper Layer state table (node.ul.fsm)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.ul.fsm import render_document  # noqa: E402 - after the path above

if __name__ == "__main__":
    target = ROOT / "docs" / "state-machine.md"
    target.write_text(render_document(), encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")
