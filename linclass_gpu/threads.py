"""How many BLAS threads the NumPy backend's own work runs on, chosen from the work per call.

An MNIST step multiplies (128, 784) by (784, 10): about 2 MFLOP, tens of microseconds on one core. Splitting that
over threads saves nothing on an idle machine, and when another process holds a core OpenBLAS's threads wait for
each other at every call (a step then takes many times longer). So a call runs on one thread unless each thread
gets enough work to pay for waking and joining it, and large problems (D = 4096, C = 1000, batch 4096: 34 GFLOP
per product) still use every core.

The limit is set with threadpoolctl around the estimator's own calls (``fit``, ``partial_fit``, prediction) and the
previous limits are restored afterwards, so the rest of the user's process keeps its BLAS settings. A limit covers
the BLAS libraries loaded when the call starts; one loaded during it (Numba loads SciPy's while compiling the NumPy
backend's loops, which never call it) keeps its own setting until the next call.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

# The smallest product (in floating-point operations) worth a thread of its own: at ~50 GFLOP/s per core it is
# ~160 µs of work, well above the ~10 µs it costs to wake and join a BLAS thread.
FLOPS_PER_THREAD = 8e6
# Overrides the automatic choice (an ``n_threads`` passed to an estimator overrides both).
THREADS_ENVIRONMENT_VARIABLE = "LINCLASS_NUM_THREADS"

# threadpoolctl's controller and the number of imported modules it was built at (see _threadpool_controller).
_controller, _controller_modules = None, -1
_controller_lock = threading.Lock()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def check_n_threads(n_threads, name: str = "n_threads") -> int | None:
    """Validate an explicit thread count: None (automatic) or a positive integer."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) and not hasattr(n_threads, "__index__"):
        raise ValueError(f"{name} must be None or a positive integer, got {n_threads!r}")
    if int(n_threads) < 1:
        raise ValueError(f"{name} must be None or a positive integer, got {n_threads!r}")
    return int(n_threads)


def _environment_threads() -> int | None:
    value = os.environ.get(THREADS_ENVIRONMENT_VARIABLE)
    if value is None or value.strip() == "":
        return None
    try:
        return check_n_threads(int(value), f"${THREADS_ENVIRONMENT_VARIABLE}")
    except ValueError:
        raise ValueError(f"${THREADS_ENVIRONMENT_VARIABLE} must be a positive integer, got {value!r}") from None


def blas_threads_for(flops_per_call: float, n_threads: int | None = None) -> int:
    """The BLAS thread count for products of ``flops_per_call`` operations each.

    Parameters
    ----------
    flops_per_call : float
        Work of the largest product one call makes (``2·B·D·K`` for a training step's GEMM).
    n_threads : int, optional
        An explicit choice, returned as it is.

    Returns
    -------
    int
        ``n_threads``; else ``$LINCLASS_NUM_THREADS``; else one thread per :data:`FLOPS_PER_THREAD` of work, at least
        1 and at most the cores available.
    """
    chosen = check_n_threads(n_threads)
    if chosen is None:
        chosen = _environment_threads()
    if chosen is None:
        chosen = int(min(available_cores(), max(1.0, flops_per_call // FLOPS_PER_THREAD)))
    return chosen


def _threadpool_controller():
    """threadpoolctl's controller, kept while no module has been imported since it was built: finding the loaded
    BLAS libraries takes milliseconds, and a BLAS library is loaded by importing an extension (SciPy, PyTorch)."""
    global _controller, _controller_modules
    with _controller_lock:
        if _controller is None or len(sys.modules) != _controller_modules:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
            _controller_modules = len(sys.modules)
        return _controller


@contextlib.contextmanager
def blas_thread_limit(threads: int) -> Iterator[None]:
    """Run the block with every loaded BLAS library limited to ``threads`` threads, restoring the limits after."""
    with _threadpool_controller().limit(limits=threads, user_api="blas"):
        yield
