"""Which backends can run here, why the others cannot, and the ``auto`` chain triton → cupy → numpy.

Probing is cheap and happens once per process (cached): it looks for the optional packages without importing them
and for the CUDA driver library, and only where a driver exists imports torch or cupy and touches the device.
A backend asked for by name that cannot run raises :class:`BackendUnavailableError` with the probe's reason; it never
silently runs somewhere else. ``auto`` takes the first backend of :data:`AUTO_ORDER` that probes as runnable on a GPU
(numpy always is) and also moves on when that backend then fails while starting up, recording why.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .base import Backend, BackendUnavailableError

logger = logging.getLogger("linclass_gpu")

AUTO_ORDER = ("triton", "cupy", "numpy")
ENV_VARIABLE = "LINCLASS_BACKEND"
# cudaErrorNoDevice: CUDA's runtime status when a driver is installed but no device is visible.
CUDA_ERROR_NO_DEVICE = 100
# What a backend that cannot run raises while starting up: a failed import, a missing shared library, a CUDA error
# (CuPy's CUDARuntimeError is a RuntimeError, as is BackendUnavailableError). A bad option's TypeError is not one.
STARTUP_ERRORS = (ImportError, OSError, RuntimeError)
# The optional packages that are of use without a GPU (the Triton interpreter and the compile report), and where
# PyTorch publishes its CPU-only wheels (PyPI's Linux torch pulls the CUDA libraries).
CPU_PACKAGES = ("torch", "triton")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class BackendStatus:
    """What the probe found for one backend.

    Attributes
    ----------
    name : str
    usable : bool
        It can run when asked for by name (the Triton interpreter counts).
    auto : bool
        ``auto`` would pick it (it runs on a GPU).
    detail : str
        The device or mode it runs in, or why it cannot run.
    """

    name: str
    usable: bool
    auto: bool
    detail: str

    @property
    def reason(self) -> str:
        """``detail`` without its explanation: the words before the first " (" or ";" (every detail is written
        "what is wrong (why or what to do); how it can still run"), for notes that must fit on one line."""
        return self.detail.split(";")[0].split(" (")[0]


def install_hint(*modules: str) -> str:
    """The command that installs ``modules`` (of torch, triton, cupy) in a form that can run on this machine.

    With a CUDA driver, the ``gpu`` extra (CUDA torch, triton, cupy). Without one no GPU backend can run, and a CUDA
    build of torch is gigabytes of libraries for nothing: torch and triton are worth installing only as PyTorch's
    CPU wheel (the Triton interpreter, ``linclass-gpu kernels report``), and cupy not at all.
    """
    if not _cuda_driver_missing():
        return "pip install 'linclass-gpu[gpu]'"
    wanted = [module for module in modules if module in CPU_PACKAGES]
    if not wanted:
        return "no CUDA driver here, so it could not run anyway; numpy is used"
    commands = ([f"pip install torch --index-url {TORCH_CPU_INDEX}"] if "torch" in wanted else []) + [
        f"pip install {module}" for module in wanted if module != "torch"]
    return "no CUDA driver here; for the Triton kernels on the CPU (interpreter, compile report): " + " && ".join(
        commands)


def not_installed(*modules: str) -> str:
    """Empty when every module can be found (nothing is imported), else which is missing and what to install."""
    for module in modules:
        if sys.modules.get(module) is None and importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({install_hint(*modules)})"
    return ""


@functools.cache
def _cuda_driver_missing() -> str:
    """Empty when the CUDA driver library loads, else why not: a cheap test made before importing torch or cupy."""
    try:
        ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll")
    except OSError as error:
        return f"no CUDA driver ({error})"
    return ""


def _probe_triton() -> BackendStatus:
    missing = not_installed("torch", "triton")
    if missing:
        return BackendStatus("triton", False, False, missing)
    interpreter = ("; runs under the Triton interpreter (TRITON_INTERPRET=1, slow, for testing) when asked for by "
                   "name")
    no_driver = _cuda_driver_missing()
    if no_driver:
        return BackendStatus("triton", True, False, no_driver + interpreter)
    try:
        import torch

        # The kernels package decides the interpreter mode before triton loads (and a broken triton fails here
        # rather than at the first kernel).
        import linclass_gpu.kernels  # noqa: F401
    except Exception as error:  # a broken install raises anything from ImportError to OSError
        return BackendStatus("triton", False, False, f"importing torch or triton failed: {type(error).__name__}: "
                                                     f"{error}")
    try:
        if not torch.cuda.is_available():
            return BackendStatus("triton", True, False, "no CUDA device (torch.cuda.is_available() is False)"
                                 + interpreter)
        name = torch.cuda.get_device_name(0)
    except Exception as error:
        return BackendStatus("triton", True, False, f"CUDA error at first use: {type(error).__name__}: {error}"
                             + interpreter)
    return BackendStatus("triton", True, True, f"CUDA device {name}")


def _probe_cupy() -> BackendStatus:
    unavailable = not_installed("cupy") or _cuda_driver_missing()
    if unavailable:
        return BackendStatus("cupy", False, False, unavailable)
    try:
        import cupy
    except Exception as error:
        return BackendStatus("cupy", False, False, f"importing cupy failed: {type(error).__name__}: {error}")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return BackendStatus("cupy", False, False, "no CUDA device")
        int((cupy.arange(2) + 1).sum())  # first use: driver/runtime mismatches surface here, not at import
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        if getattr(error, "status", None) == CUDA_ERROR_NO_DEVICE:
            return BackendStatus("cupy", False, False, f"no CUDA device ({reason})")
        return BackendStatus("cupy", False, False, f"CUDA error at first use: {reason}")
    return BackendStatus("cupy", True, True, f"CUDA device {name}")


def _probe_numpy() -> BackendStatus:
    from .numpy_backend import description

    return BackendStatus("numpy", True, True, description())


_PROBES = {"triton": _probe_triton, "cupy": _probe_cupy, "numpy": _probe_numpy}
_FACTORIES = {
    "triton": "linclass_gpu.backends.triton_backend:TritonBackend",
    "cupy": "linclass_gpu.backends.cupy_backend:CupyBackend",
    "numpy": "linclass_gpu.backends.numpy_backend:NumpyBackend",
}


@functools.cache
def probe(name: str) -> BackendStatus:
    """Probe one backend by name (cached for the life of the process)."""
    if name not in _PROBES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(('auto',) + AUTO_ORDER)}")
    return _PROBES[name]()


def backend_statuses() -> list[BackendStatus]:
    """Every backend's probe result, in ``auto`` order."""
    return [probe(name) for name in AUTO_ORDER]


def available_backends() -> list[str]:
    """Names of the backends that can run here when asked for by name, in ``auto`` order."""
    return [status.name for status in backend_statuses() if status.usable]


def _requested(name: str | None) -> tuple[str, str]:
    """The backend name asked for (``$LINCLASS_BACKEND`` standing in for ``auto`` when set) and who asked for it."""
    requested = "auto" if name is None else str(name).strip().lower()
    source = f"backend={requested!r}"
    if requested == "auto" and os.environ.get(ENV_VARIABLE, "").strip():
        requested = os.environ[ENV_VARIABLE].strip().lower()
        source = f"${ENV_VARIABLE}={requested}"
    if requested != "auto" and requested not in AUTO_ORDER:
        raise ValueError(f"{source}: unknown backend; expected one of {', '.join(('auto',) + AUTO_ORDER)}")
    return requested, source


def resolve_name(name: str | None = "auto", startup_failures: Mapping[str, str] | None = None
                 ) -> tuple[str, list[str]]:
    """The backend ``name`` stands for, and the skip reasons collected on the way.

    ``None`` and ``"auto"`` defer to ``$LINCLASS_BACKEND`` when it is set, else walk :data:`AUTO_ORDER` and take the
    first backend ``auto`` may pick. An explicit name that cannot run raises :class:`BackendUnavailableError`; an
    unknown one raises ValueError.

    Parameters
    ----------
    name : str or None
    startup_failures : mapping of backend name to reason, optional
        Backends that probed as runnable but failed while starting up; ``auto`` skips them with that reason.
    """
    requested, source = _requested(name)
    if requested != "auto":
        status = probe(requested)
        if not status.usable:
            raise BackendUnavailableError(f"{source} cannot run here: {status.detail}")
        return requested, []
    startup_failures = startup_failures or {}
    skipped = []
    for candidate in AUTO_ORDER:
        status = probe(candidate)
        if status.auto and candidate not in startup_failures:
            return candidate, skipped
        skipped.append(f"{candidate}: {startup_failures.get(candidate, status.detail)}")
    raise BackendUnavailableError("no backend can run here: " + "; ".join(skipped))


def get_backend(name: str | None = "auto", **options) -> Backend:
    """Instantiate the backend ``name`` stands for (see :func:`resolve_name`).

    Parameters
    ----------
    name : {"auto", "triton", "cupy", "numpy"} or None
    **options
        Passed to the backend's constructor (for example ``deterministic=True`` for triton).

    Returns
    -------
    Backend
        ``.name`` says which one was chosen. ``auto`` logs its choice, with the reason for each backend it skipped,
        once per call (logger ``"linclass_gpu"``, level INFO).

    Raises
    ------
    BackendUnavailableError
        An explicitly requested backend (argument or ``$LINCLASS_BACKEND``) cannot run here, by its probe or while
        starting up; the message says why.
    """
    requested, source = _requested(name)
    startup_failures: dict[str, str] = {}
    while True:  # each pass either returns or adds a failed backend, so at most len(AUTO_ORDER) passes
        chosen, skipped = resolve_name(name, startup_failures)
        module_name, class_name = _FACTORIES[chosen].split(":")
        try:
            backend = getattr(importlib.import_module(module_name), class_name)(**options)
        except STARTUP_ERRORS as error:
            reason = f"failed while starting up: {type(error).__name__}: {error}"
            if requested != "auto":
                raise BackendUnavailableError(f"{source} cannot run here: {reason}") from error
            startup_failures[chosen] = reason
            continue
        if requested == "auto":
            logger.info("backend auto -> %s%s", chosen, f" (skipped {'; '.join(skipped)})" if skipped else "")
        return backend
