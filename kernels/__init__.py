"""Fused Triton kernels for one SGD step of softmax and logistic regression (installed as ``linclass_gpu.kernels``).

Importing this package imports torch, triton and every kernel module; nothing here is imported by
``import linclass_gpu``. Users import the modules by name: ``from linclass_gpu.kernels import softmax_sgd``.

Modules, each in the same order (constants with their reasons, ``@triton.jit`` kernels, a launcher that checks and
launches, then (step kernels) a thin wrapper with no math):

- ``softmax_sgd``: the fused softmax-regression step (forward, cross-entropy, dZ, dW, db), class tiles with an online
  log-sum-exp for large C; its docstring holds the bytes-moved model.
- ``sigmoid_sgd``: the same for ``K`` independent sigmoids (binary, multilabel, one-vs-rest) with binary
  cross-entropy from logits or squared error.
- ``softmax_tiled_sgd``: the softmax step on a 2-D grid (class groups × row splits), dW accumulated on chip by tl.dot
  and flushed once per step (large batches, many classes); deterministic mode at full parallelism.
- ``sgd_update``: the second launch of a step, shared by every model: reduce, L2, momentum, update, reset.
- ``epoch_sgd``: a whole epoch of plain or momentum SGD in one launch.
- ``epoch_split_sgd``: the same over P cooperating programs, the features split between them.
- ``sparse_sgd``: the step on CSR rows, touching only the rows of ``W`` that occur.
- ``_tiles``: the device helpers the kernels share (row gather, X tiles, gradient accumulation).
- ``_launch``: the host side the step launchers share (buffer checks, the grid, loss and gradient over all rows).

The interpreter mode is decided here, once per process, before triton is imported: ``@triton.jit`` builds
interpreted or compilable functions according to ``TRITON_INTERPRET`` at decoration time, for these kernels and for
triton.language's own helpers alike. An explicit ``TRITON_INTERPRET`` (``1`` or ``0``) is honoured, so the compile
report's workers (``TRITON_INTERPRET=0``) build compilable kernels on a machine without a GPU; unset, the kernels run
under the interpreter exactly when torch sees no CUDA device. A triton imported earlier in the other mode cannot be
switched in place: :class:`TritonModeError` says what to set instead.

Attributes
----------
INTERPRET : bool
    True when the kernels run under the Triton interpreter (on CPU tensors), False when they compile for CUDA.
"""

import functools
import os
import threading
from typing import Callable

import torch

# The values triton itself reads as true.
_TRUE = ("1", "y", "yes", "on", "true")


def _choose_mode() -> tuple[bool, str]:
    """Whether to interpret, and why: an explicit ``TRITON_INTERPRET`` wins, else the interpreter without CUDA."""
    requested = os.environ.get("TRITON_INTERPRET", "").strip()
    if requested:
        return requested.lower() in _TRUE, f"TRITON_INTERPRET={requested} is set"
    if torch.cuda.is_available():
        return False, "a CUDA device is present"
    return True, "there is no CUDA device"


INTERPRET, _REASON = _choose_mode()
os.environ["TRITON_INTERPRET"] = "1" if INTERPRET else "0"

import triton.language as tl  # noqa: E402  (after TRITON_INTERPRET is set: triton reads it as it imports)
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402


class TritonModeError(RuntimeError):
    """triton was imported for the interpreter while the kernels need the compiler, or the other way round."""


def _mode(interpret: bool) -> str:
    return "the interpreter (TRITON_INTERPRET=1)" if interpret else "the compiler (TRITON_INTERPRET=0)"


# triton.language's own @jit helpers (tl.zeros, tl.sum …) were built in the mode triton was first imported in.
if isinstance(tl.zeros, InterpretedFunction) != INTERPRET:
    raise TritonModeError(
        f"triton was imported for {_mode(not INTERPRET)} before linclass_gpu.kernels chose {_mode(INTERPRET)} "
        f"because {_REASON}; triton's mode cannot change once it is imported: set "
        f"TRITON_INTERPRET={int(INTERPRET)} in the environment before anything imports triton, or import "
        f"linclass_gpu.kernels first")

# The kernel modules, imported once the mode is settled.
from . import (  # noqa: E402
    _tiles,
    epoch_sgd,
    epoch_split_sgd,
    sgd_update,
    sigmoid_sgd,
    softmax_sgd,
    softmax_tiled_sgd,
    sparse_sgd,
)

# The interpreter patches triton.language for the duration of each launch, process-wide: two interpreted launches
# from two threads would see each other's patches.
_INTERPRETER_LOCK = threading.RLock()


def _one_launch_at_a_time(run: Callable) -> Callable:
    """``run`` of an interpreted kernel, serialised process-wide by ``_INTERPRETER_LOCK``."""

    @functools.wraps(run)
    def serialised(*args, **kwargs):
        with _INTERPRETER_LOCK:
            return run(*args, **kwargs)

    return serialised


def _serialise_interpreted_launches(modules) -> None:
    """Wrap the ``run`` of every interpreted kernel in ``modules`` once (the step kernels share ``_tiles``' helpers,
    so one function can appear in several modules)."""
    for module in modules:
        for kernel in vars(module).values():
            if isinstance(kernel, InterpretedFunction) and not hasattr(kernel.run, "__wrapped__"):
                kernel.run = _one_launch_at_a_time(kernel.run)


if INTERPRET:
    _serialise_interpreted_launches((_tiles, epoch_sgd, epoch_split_sgd, sgd_update, sigmoid_sgd, softmax_sgd,
                                     softmax_tiled_sgd, sparse_sgd))
