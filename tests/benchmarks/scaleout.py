# Horizontal scale on one box (issue 16): `python -m tests.benchmarks.scaleout [options]`.
#
# Every simulated host (a network namespace, tests.multihost) gets its own CPU budget (a cgroup
# quota), so adding a host adds CPU the way a machine would. Rows: ingest through HAProxy with
# DCMTK storescu (several associations) into 1, 2 and 4 capped worker hosts, then into 1 and 2
# capped acceptor hosts; each row on a fresh cluster and data directory. For each: objects/s,
# the ratio to the row's 1-host case, CPU per object (every host's group, reaped processes
# included), and which hosts used (nearly) all their budget: the part that saturates. Then the
# elastic run: a worker host joins a running ingest and later leaves by SIGTERM (drain), with
# the rate before, during and after, and a check that every acknowledged object is stored once.
#
# Rules: a benchmark, not a test: it prints ratios and writes tests/benchmarks/results/
# scaleout.md; needs root (namespaces, cgroups), DCMTK and HAProxy. Machine shared: numbers are
# only as steady as the other load lets them be; the per-host CPU columns show it.
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.benchmarks.suite import machine
from tests.multihost.cgroups import cgroups_writable
from tests.multihost.cluster import ClientRun, Cluster
from tests.multihost.netns import Network
from tests.multihost.scaling import (
    SCALE_HOSTS,
    Ingest,
    Usage,
    add_worker,
    apply_budget,
    check_stored_exactly_once,
    cpu_usage,
    drain_worker,
    saturated,
    start_roles,
    usage_between,
    worker_requests,
    write_objects,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.md"
WORKERS = ("worker1", "worker2", "worker3", "worker4")
ACCEPTORS = ("acceptor1", "acceptor2")


@dataclass(frozen=True)
class Settings:
    worker_cores: float
    acceptor_cores: float
    enough: Mapping[str, float]  # the budgets of the parts not under test
    objects_per_host: int
    clients: int
    threads: int
    fsync: bool

    @property
    def worker_options(self) -> list[object]:
        return ["--threads", self.threads, *([] if self.fsync else ["--no-fsync"])]


@dataclass
class Row:
    part: str  # "worker" or "acceptor": the capped part
    hosts: int
    objects: int
    elapsed: float
    usages: list[Usage]
    work: dict[str, float] = field(default_factory=dict)  # requests per worker host

    @property
    def rate(self) -> float:
        return self.objects / self.elapsed

    @property
    def cpu_per_object_ms(self) -> float:
        return 1000 * sum(u.seconds for u in self.usages) / self.objects

    def saturation(self) -> str:
        full = saturated(self.usages)
        if full:
            return ", ".join(f"{u.host} {u.share:.0%}" for u in full)
        busiest = max((u for u in self.usages if u.share is not None), key=lambda u: u.share or 0.0)
        return f"none (busiest {busiest.host} {busiest.share:.0%})"

    def hosts_cpu(self) -> str:
        return ", ".join(
            f"{u.host} {u.cores_used:.2f}/{u.cores:.2f}" for u in sorted(self.usages, key=_order)
        )


def _order(usage: Usage) -> int:
    return list(SCALE_HOSTS).index(usage.host)


def log(line: str) -> None:
    print(line, flush=True)


def network_for(hosts: Sequence[str]) -> Network:
    return Network({name: SCALE_HOSTS[name] for name in ("lb", "broker", "client", *hosts)})


def budget_for(
    settings: Settings, part: str, acceptors: Sequence[str], workers: Sequence[str]
) -> dict[str, float | None]:
    budget: dict[str, float | None] = {
        "lb": settings.enough["lb"],
        "broker": settings.enough["broker"],
        "client": settings.enough["client"],
    }
    for host in acceptors:
        budget[host] = (
            settings.acceptor_cores if part == "acceptor" else settings.enough["acceptor"]
        )
    for host in workers:
        budget[host] = settings.worker_cores if part == "worker" else settings.enough["worker"]
    return budget


def measure_row(
    settings: Settings,
    part: str,
    acceptors: Sequence[str],
    workers: Sequence[str],
    files: list[Path],
    warm: list[Path],
) -> Row:
    net = network_for([*acceptors, *workers])
    root = Path(tempfile.mkdtemp(prefix="dn-scaleout-"))
    try:
        net.create()
        apply_budget(net, budget_for(settings, part, acceptors, workers))
        cluster = Cluster(net, root)
        start_roles(cluster, acceptors, workers, settings.worker_options)
        # Warm-up: connections made, code paths hot, every host once through.
        ClientRun(net, "warm", warm, clients=settings.clients, batch=len(warm), limit=120).wait()
        work_before = {host: worker_requests(cluster, host) for host in workers}
        before = cpu_usage(net)
        run = ClientRun(
            net,
            "scu",
            files,
            clients=settings.clients,
            batch=-(-len(files) // settings.clients),
            limit=600,
        )
        elapsed = run.wait()
        after = cpu_usage(net)
        if run.acknowledged != {path.stem for path in files}:
            missing = len(files) - len(run.acknowledged)
            raise AssertionError(f"{missing} objects not acknowledged")
        check_stored_exactly_once(cluster, {path.stem for path in [*files, *warm]})
        work = {host: worker_requests(cluster, host) - work_before[host] for host in workers}
        hosts = len(workers) if part == "worker" else len(acceptors)
        return Row(
            part, hosts, len(files), elapsed, usage_between(net, before, after, elapsed), work
        )
    finally:
        net.destroy()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Elastic:
    lines: list[str]
    rates: dict[str, float]


def _rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [(t, n) for t, n in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def elastic_run(settings: Settings, files: list[Path], phase: float) -> Elastic:
    """worker1 alone, worker2 joins mid-ingest, then worker2 leaves by SIGTERM."""
    net = network_for(["acceptor1", "acceptor2", "worker1", "worker2"])
    root = Path(tempfile.mkdtemp(prefix="dn-elastic-"))
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    try:
        net.create()
        apply_budget(net, budget_for(settings, "worker", ACCEPTORS, ("worker1", "worker2")))
        cluster = Cluster(net, root)
        start_roles(cluster, ACCEPTORS, ["worker1"], settings.worker_options)

        def sample() -> None:
            while not done.is_set():
                samples.append((time.monotonic(), len(cluster.stored_files())))
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        ingest = Ingest(net, files, clients=settings.clients, batch=50, name="el")
        sampler.start()
        pause = threading.Event()
        t_one = time.monotonic()
        pause.wait(phase)
        joining = time.monotonic()
        add_worker(cluster, "worker2", settings.worker_options)
        t_two = time.monotonic()
        pause.wait(phase)
        leaving = time.monotonic()
        two_work = worker_requests(cluster, "worker2")
        code = drain_worker(cluster, "worker2")
        t_after = time.monotonic()
        pause.wait(phase)
        t_end = time.monotonic()
        ingest.stop()
        ingest.wait()
        done.set()
        sampler.join(10)
        acknowledged = ingest.acknowledged
        stored = set(cluster.stored_files())
        lost = acknowledged - stored
        check_stored_exactly_once(cluster, ingest.attempted)
        rates = {
            "one": _rate(samples, t_one + 1, joining),
            "joining": _rate(samples, joining, t_two),
            "two": _rate(samples, t_two, leaving),
            "after": _rate(samples, t_after, t_end),
        }
        exhausted = len(ingest.attempted) >= len(files)
        lines = [
            f"1 worker host: {rates['one']:.1f} objects/s",
            f"worker2 started on the running cluster: routed to after {t_two - joining:.1f} s "
            f"(its start-up under a {settings.worker_cores} core cap), "
            f"{rates['joining']:.1f} objects/s meanwhile",
            f"2 worker hosts: {rates['two']:.1f} objects/s "
            f"(x{rates['two'] / rates['one']:.2f}; worker2 handled {two_work:.0f} requests)",
            f"worker2 SIGTERM: drained and exited with {code} in {t_after - leaving:.1f} s; "
            f"then 1 worker host: {rates['after']:.1f} objects/s",
            f"{len(acknowledged)} objects acknowledged, {len(lost)} of them lost; "
            f"{len(stored)} stored, each once (files and index rows); "
            f"{ingest.failed_runs} storescu runs retried"
            + ("; the object pool ran out (rates low)" if exhausted else ""),
        ]
        if lost:
            raise AssertionError(f"acknowledged but not stored: {sorted(lost)[:5]}")
        return Elastic(lines, rates)
    finally:
        done.set()
        net.destroy()
        shutil.rmtree(root, ignore_errors=True)


def table(rows: list[Row], settings: Settings) -> list[str]:
    lines = [
        "| capped part | hosts | objects | objects/s | vs 1 host | CPU/object | saturated "
        "(CPU used vs quota) | CPU per host (cores used/quota) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    base: dict[str, float] = {}
    for row in rows:
        base.setdefault(row.part, row.rate) if row.hosts == 1 else None
        ratio = row.rate / base[row.part] if row.part in base else float("nan")
        cores = settings.worker_cores if row.part == "worker" else settings.acceptor_cores
        lines.append(
            f"| {row.part} ({cores} core each) | {row.hosts} | {row.objects} | {row.rate:.1f} | "
            f"{ratio:.2f}x | {row.cpu_per_object_ms:.2f} ms | {row.saturation()} | "
            f"{row.hosts_cpu()} |"
        )
    return lines


def write_report(
    rows: list[Row], elastic: Elastic | None, settings: Settings, seconds: float
) -> str:
    enough = ", ".join(f"{name} {cores}" for name, cores in settings.enough.items())
    text = [
        "# dicomnode horizontal scale on one box (issue 16)",
        "",
        f"Machine: {machine()}; whole run {seconds:.0f} s. Every simulated host is a network "
        "namespace in its own CPU cgroup (quota per host). Ingest: DCMTK storescu, "
        f"{settings.clients} associations at once through HAProxy, 8 KiB CT objects, "
        f"{settings.objects_per_host} per capped host; workers --threads {settings.threads}, "
        + ("fsync before success (durable)" if settings.fsync else "--no-fsync")
        + f", one SQLite index on the shared data directory. Parts not under test get: {enough}"
        " cores. CPU/object: every host's CPU (all its processes, the storescu runs included) "
        "per stored object. Saturated: capped hosts that used >= 75% of their quota (with a 20 ms "
        "CFS period a host held at its quota shows 75-95%: the rest is the gaps between its "
        "slices).",
        "",
        *table(rows, settings),
    ]
    if elastic is not None:
        text += ["", "Elastic run (worker hosts capped the same, one ingest throughout):", ""]
        text += [f"- {line}" for line in elastic.lines]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(text) + "\n")
    return "\n".join(text)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.scaleout")
    parser.add_argument("--worker-cores", type=float, default=0.1)
    parser.add_argument("--acceptor-cores", type=float, default=0.1)
    parser.add_argument("--objects-per-host", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16, help="storescu associations at once")
    parser.add_argument("--threads", type=int, default=4, help="worker --threads")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--workers", default="1,2,4", help="worker host counts to measure")
    parser.add_argument("--acceptors", default="1,2", help="acceptor host counts ('' for none)")
    parser.add_argument("--elastic-phase", type=float, default=12.0, help="seconds (0: skip)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    reason = cgroups_writable()
    if reason is not None or shutil.which("storescu") is None or shutil.which("haproxy") is None:
        print(f"scaleout needs CPU cgroups, DCMTK and HAProxy: {reason}", file=sys.stderr)
        return 2
    settings = Settings(
        worker_cores=args.worker_cores,
        acceptor_cores=args.acceptor_cores,
        enough={"lb": 0.15, "broker": 0.3, "client": 0.5, "acceptor": 0.25, "worker": 0.6},
        objects_per_host=args.objects_per_host,
        clients=args.clients,
        threads=args.threads,
        fsync=not args.no_fsync,
    )
    worker_counts = [int(n) for n in args.workers.split(",") if n]
    acceptor_counts = [int(n) for n in args.acceptors.split(",") if n]
    biggest = max([*worker_counts, *acceptor_counts, 4 if args.elastic_phase else 1])
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="dn-scaleout-files-"))
    try:
        pool = write_objects(folder / "pool", args.objects_per_host * biggest)
        warm = write_objects(folder / "warm", 10 * args.clients, first_patient=9000)
        rows = []
        for count in worker_counts:
            row = measure_row(
                settings,
                "worker",
                ACCEPTORS,
                WORKERS[:count],
                pool[: args.objects_per_host * count],
                warm,
            )
            log(
                f"{count} worker host(s): {row.rate:.1f} objects/s; {row.saturation()}; "
                f"{row.hosts_cpu()}; requests per worker {row.work}"
            )
            rows.append(row)
        for count in acceptor_counts:
            row = measure_row(
                settings,
                "acceptor",
                ACCEPTORS[:count],
                ("worker1", "worker2"),
                pool[: args.objects_per_host * count],
                warm,
            )
            log(
                f"{count} acceptor host(s): {row.rate:.1f} objects/s; {row.saturation()}; "
                f"{row.hosts_cpu()}"
            )
            rows.append(row)
        elastic = None
        if args.elastic_phase:
            elastic = elastic_run(settings, pool, args.elastic_phase)
            for line in elastic.lines:
                log(f"elastic: {line}")
        log("")
        log(write_report(rows, elastic, settings, time.monotonic() - started))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
