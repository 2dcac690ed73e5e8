# Prometheus metrics and health endpoints for every role (`--metrics-port`).
#
# Rules: one small HTTP server thread per process serves /metrics (prometheus_client's text
# format), /healthz (the process is alive) and /readyz (ready to take work: a callable the
# role provides, e.g. broker reachable, a worker alive, not draining). The acceptor feeds its
# metrics through ServerObserver, a plain object the transport calls; the transport itself
# never imports prometheus_client.
from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.dispatch import ServiceRequest

log = logging.getLogger("dicomnode.metrics")

ASSOCIATIONS_ACTIVE = Gauge("dicomnode_associations_active", "Associations open now")
ASSOCIATIONS_TOTAL = Counter("dicomnode_associations_total", "Associations by outcome", ["outcome"])
ABORTS = Counter("dicomnode_associations_aborted_total", "Aborted associations", ["reason"])
REQUESTS = Counter(
    "dicomnode_dimse_requests_total", "DIMSE requests answered", ["command", "status_class"]
)
LATENCY = Histogram(
    "dicomnode_dimse_request_seconds",
    "Time from a request's arrival to its final response",
    ["command"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BYTES_RECEIVED = Counter("dicomnode_bytes_received_total", "Data set bytes received")
OBJECTS_STORED = Counter("dicomnode_objects_stored_total", "Objects stored durably")
HANDOFFS = Counter(
    "dicomnode_handoff_spools_total",
    "C-STORE data sets handed to the workers as spool files instead of through the sockets",
)
WORKER_REQUESTS = Counter("dicomnode_worker_requests_total", "Requests run by this worker")
BROKER_QUEUE = Gauge("dicomnode_broker_queue_depth", "Requests waiting for a worker")
BROKER_CREDITS = Gauge("dicomnode_broker_credits", "Free worker credits")
BROKER_WORKERS = Gauge("dicomnode_broker_live_workers", "Workers alive")
BROKER_IN_FLIGHT = Gauge("dicomnode_broker_in_flight", "Requests running on workers")
BROKER_DEAD_WORKERS = Gauge("dicomnode_broker_dead_workers_total", "Workers declared dead")
BROKER_RETRIES = Gauge("dicomnode_broker_retries_total", "Requests sent to another worker")


def set_broker_gauges(stats: dict[str, object]) -> None:
    """The broker gauges from broker.routing.BrokerState.stats() (broker process, or an
    acceptor with the routing embedded)."""
    BROKER_QUEUE.set(float(str(stats["queue"])))
    BROKER_CREDITS.set(float(str(stats["credits"])))
    BROKER_WORKERS.set(float(str(stats["workers"])))
    BROKER_IN_FLIGHT.set(float(str(stats["in_flight"])))
    BROKER_DEAD_WORKERS.set(float(str(stats["dead_workers"])))
    BROKER_RETRIES.set(float(str(stats["retries"])))


WORKER_RESTARTS = Counter(
    "dicomnode_worker_restarts_total", "Role processes restarted by the supervisor", ["role"]
)
STUDIES_STABLE = Counter(
    "dicomnode_studies_stable_total", "Study-stable events fired (studies quiet long enough)"
)


def _status_class(status: int) -> str:
    from node.dimse.status import classify

    return classify(status).name.lower()


class ServerObserver:
    """What the acceptor reports: associations and DIMSE requests (prometheus metrics)."""

    def __init__(self) -> None:
        self._started: dict[tuple[int, int], float] = {}

    def association_accepted(self) -> None:
        ASSOCIATIONS_ACTIVE.inc()
        ASSOCIATIONS_TOTAL.labels("accepted").inc()

    def association_rejected(self) -> None:
        ASSOCIATIONS_TOTAL.labels("rejected").inc()

    def association_ended(self, outcome: str, reason: str = "") -> None:
        ASSOCIATIONS_ACTIVE.dec()
        ASSOCIATIONS_TOTAL.labels(outcome).inc()
        if outcome == "aborted":
            ABORTS.labels(reason or "unknown").inc()

    def request_started(self, request: ServiceRequest) -> None:
        self._started[(request.association.assoc_id, request.message_id)] = time.monotonic()
        if request.dataset is not None:
            BYTES_RECEIVED.inc(len(request.dataset))

    def stream_bytes(self, size: int) -> None:
        BYTES_RECEIVED.inc(size)

    def request_finished(self, request: ServiceRequest, status: int) -> None:
        command = type(request.command).__name__.removesuffix("RQ")
        started = self._started.pop((request.association.assoc_id, request.message_id), None)
        if started is not None:
            LATENCY.labels(command).observe(time.monotonic() - started)
        REQUESTS.labels(command, _status_class(status)).inc()
        if command == "CStore" and status == 0:
            OBJECTS_STORED.inc()


class _Handler(BaseHTTPRequestHandler):
    server: _HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self.server.before_scrape()
            self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready, why = self.server.readiness()
            self._answer(200 if ready else 503, (why + "\n").encode(), "text/plain")
        else:
            self._answer(404, b"not found\n", "text/plain")

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class _HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        readiness: Callable[[], tuple[bool, str]],
        before_scrape: Callable[[], None],
    ) -> None:
        super().__init__(address, _Handler)
        self.readiness = readiness
        self.before_scrape = before_scrape


class HealthEndpoint:
    """/metrics, /healthz and /readyz on `port` (0 picks a free one), in a daemon thread."""

    def __init__(
        self,
        port: int,
        readiness: Callable[[], tuple[bool, str]] = lambda: (True, "ready"),
        *,
        host: str = "0.0.0.0",  # noqa: S104 - scraped from outside the pod
        before_scrape: Callable[[], None] = lambda: None,
    ) -> None:
        self.server = _HealthServer((host, port), readiness, before_scrape)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="dicomnode-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
