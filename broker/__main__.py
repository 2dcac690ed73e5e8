# The broker process: `python -m broker --frontend EP --backend EP`, and `dicomnode broker`
# through main(argv).
#
# Rules: parse the config, bind, serve until SIGINT/SIGTERM, exit 0; SIGUSR1 logs the stats.
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

import zmq

from broker.config import parse_args
from broker.server import BrokerServer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType

    SignalHandler = Callable[[int, FrameType | None], object] | int | None

logger = logging.getLogger("dicomnode.broker")


def main(argv: Sequence[str] | None = None, prog: str = "dicomnode broker") -> int:
    """Run the broker until SIGINT or SIGTERM; returns the exit status (0, 1 if it cannot bind,
    2 for bad arguments)."""
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, prog)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    from node.logs import configure_logging

    configure_logging(config.verbose, config.log_format, default_level=logging.INFO)
    try:
        server = BrokerServer(config)
    except ValueError as error:  # a CURVE key file that cannot be used
        logger.error("%s", error)
        return 1
    try:
        server.bind()
    except zmq.ZMQError as error:
        logger.error("cannot bind %s / %s: %s", config.frontend, config.backend, error)
        server.close()
        return 1

    health = None
    if config.metrics_port is not None:
        from node import observability

        server.on_stats = observability.set_broker_gauges
        health = observability.HealthEndpoint(config.metrics_port)

    def on_stop(_signal: int, _frame: FrameType | None) -> None:
        server.stop()

    def on_stats(_signal: int, _frame: FrameType | None) -> None:
        server.request_stats()

    handlers = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGUSR1: on_stats}
    previous: dict[signal.Signals, SignalHandler] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        server.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        server.close()
        if health is not None:
            health.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m broker"))
