# Several copies of one role on a host (`--processes N`): a parent that supervises them.
#
# Rules: the parent runs `python -m MODULE` N times with the same arguments (minus
# --processes), restarts a copy that dies, and on SIGTERM/SIGINT passes the signal on and
# waits for every copy before returning 0. No DICOM knowledge; used by workers and acceptors.
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("dicomnode.processes")


def without_option(argv: Sequence[str], option: str, *, takes_value: bool = True) -> list[str]:
    """`argv` without `option` (and its value, or `option=value`)."""
    result: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument == option:
            skip = takes_value
            continue
        if argument.startswith(option + "="):
            continue
        result.append(argument)
    return result


def supervise_copies(
    module: str, argv: Sequence[str], count: int, *, extra: Sequence[str] = ()
) -> int:
    """Run `count` copies of `python -m module argv...`; returns 0 once stopped by a signal."""
    command = [sys.executable, "-m", module, *without_option(argv, "--processes"), *extra]
    children = [subprocess.Popen(command) for _ in range(count)]
    stopping = threading.Event()

    def stop(number: int, _frame: Any) -> None:
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(number)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for index, child in enumerate(children):
            if child.poll() is not None and not stopping.is_set():
                log.warning(
                    "%s process %d exited (%s): restarting", module, child.pid, child.returncode
                )
                children[index] = subprocess.Popen(command)
        if stopping.is_set() and all(child.poll() is not None for child in children):
            return 0
        stopping.wait(0.2)
