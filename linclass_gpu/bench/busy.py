"""Processes that keep cores busy beside a measurement: how a provider holds up when the machine is not idle.

On a shared machine another job is the common case, and a BLAS pool with one thread per core then waits at every
call for a thread that has no core: ``bench mnist --busy 1`` measures exactly that, with one process burning one
core for the duration of the measurement.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

# One core at 100% in pure Python: no memory traffic, no I/O, no threads of its own, so it takes a core and nothing
# else from the providers.
BURN_ONE_CORE = "while True:\n    pass"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[subprocess.Popen]]:
    """Keep ``count`` cores busy, one process each, for the duration of the ``with`` block.

    Parameters
    ----------
    count : int
        Processes to start (0: none).

    Yields
    ------
    list of subprocess.Popen
        The running processes; they are killed and reaped when the block ends, however it ends.

    Raises
    ------
    ValueError
        ``count`` is negative.
    """
    if count < 0:
        raise ValueError(f"--busy must be 0 or more processes, got {count}")
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", BURN_ONE_CORE], stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()
