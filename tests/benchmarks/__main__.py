# Runs the benchmarks: ``python -m tests.benchmarks [NAME [ARGS...]]``; with no NAME, all of
# them with ARGS (e.g. ``--quick``). Each one is also runnable as
# ``python -m tests.benchmarks.NAME``.
from __future__ import annotations

import importlib
import sys
from typing import Final

#: Benchmark name -> module with a ``main(argv) -> int``.
BENCHMARKS: Final = {
    "codec": "tests.benchmarks.codec",
    "index_find": "tests.benchmarks.index_find",
    "objects": "tests.benchmarks.objects",
    "roles": "tests.benchmarks.roles",
    "scaleout": "tests.benchmarks.scaleout",
    "suite": "tests.benchmarks.suite",
}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__ or "python -m tests.benchmarks [NAME [ARGS...]]")
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    if argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        names = [name]
    else:
        names, rest = list(BENCHMARKS), argv
    status = 0
    for name in names:
        status |= int(importlib.import_module(BENCHMARKS[name]).main(rest))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
