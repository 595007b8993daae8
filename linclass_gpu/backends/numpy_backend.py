"""The CPU backend: :class:`~.array_backend.ArrayBackend` over NumPy, always available.

Where Numba is installed its seams run as compiled loops: the row-wise pass and the update (:mod:`.cpu_loops`), one
pass each instead of about thirty NumPy calls per step, and, for models with few outputs, the step's two products
(:mod:`.cpu_products`), where BLAS runs far below the core's speed; a run of such steps is then one compiled call
(:mod:`.cpu_step`), whose products run on AMX tiles for 8-bit integer inputs where the CPU has them
(:mod:`.cpu_amx`). Without Numba (or with ``LINCLASS_GPU_NUMBA=0``) the array-generic code runs: the same
arithmetic, checked against the same oracle.
"""

from __future__ import annotations

from typing import Any, ContextManager

import numpy as np

from ..arrays import to_numpy
from ..threads import blas_thread_limit, blas_threads_for
from .array_backend import ArrayBackend, ArrayFusedSGD
from .base import ADAGRAD_EPS, ADAM_BETAS, ADAM_EPS, adam_bias_corrections
from .cpu_amx import amx_enabled
from .cpu_loops import (
    NUMBA_AVAILABLE,
    NUMBA_ENV,
    NUMBA_VERSION,
    UPDATE_ADAGRAD,
    UPDATE_ADAM,
    UPDATE_SGD,
    compiled_loops_enabled,
    sigmoid_rows_,
    softmax_rows_,
    update_,
)
from .cpu_products import logits_product_, products_pay, weight_gradient_product_
from .cpu_step import CompiledFusedSGD


class NumpyBackend(ArrayBackend):
    """NumPy on the CPU (float32 or float64); the last link of the ``auto`` chain.

    Parameters
    ----------
    deterministic : bool
        Accepted for the estimators' sake: NumPy's products are bitwise repeatable for a fixed thread count (which
        :meth:`thread_limit` fixes from the problem's size), and so are the compiled loops.
    compiled : bool or None
        Whether the seams run as compiled loops (:mod:`.cpu_loops`); None (default) where Numba is installed and
        ``LINCLASS_GPU_NUMBA`` is not ``0``. True without Numba raises.
    """

    name = "numpy"
    xp = np

    def __init__(self, deterministic: bool = False, compiled: bool | None = None):
        if compiled and not NUMBA_AVAILABLE:
            raise ImportError("compiled CPU loops need Numba: pip install linclass-gpu[cpu]")
        self.compiled = compiled_loops_enabled() if compiled is None else bool(compiled)
        # The array-generic softmax reduces a row's C logits fastest classes-major: over a short last axis (MNIST:
        # C = 10) NumPy takes several times longer. The compiled loop reads rows-major logits in one pass.
        self.classes_major_softmax = not self.compiled
        # With the compiled loops, a run of steps is one compiled call where the compiled products pay.
        self.fused_step = CompiledFusedSGD if self.compiled else ArrayFusedSGD

    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        """Any array kind (CuPy, torch on any device, DLPack) copied to the host once; NumPy arrays as they are."""
        return super().asarray(to_numpy(a), dtype)

    def thread_limit(self, flops_per_call: float, n_threads: int | None = None) -> ContextManager:
        return blas_thread_limit(blas_threads_for(flops_per_call, n_threads))

    def logits_product_(self, X, W, out):
        if self.compiled and products_pay(X.shape[0], X.shape[1], W.shape[1]):
            logits_product_(X, W, out)
        else:
            np.matmul(X, W, out=out)

    def weight_gradient_product_(self, X, dZ, out):
        if self.compiled and products_pay(X.shape[0], X.shape[1], dZ.shape[1]):
            weight_gradient_product_(X, dZ, out)
        else:
            np.matmul(X.T, dZ, out=out)

    def logits_to_grad_(self, model, Z, targets, weights, b, x_scale, loss_sum, db, dz_scale=1.0):
        if not self.compiled:
            super().logits_to_grad_(model, Z, targets, weights, b, x_scale, loss_sum, db, dz_scale)
            return
        # The scales in Z's dtype: a float32 loop then computes (and takes exp) in float32, as NumPy's code does.
        real, weights = Z.dtype.type, _empty(Z.dtype) if weights is None else weights
        if model == "softmax":
            loss_sum += softmax_rows_(Z, targets, weights, b, real(x_scale), real(dz_scale), db)
        else:
            loss_sum += sigmoid_rows_(Z, targets, weights, b, real(x_scale), real(dz_scale), db, model == "sigmoid_mse")

    def sgd_update_(self, param, grad, velocity, scratch, learning_rate, l2, momentum, nesterov, l1=0.0,
                    accumulator=None, adam_step=0):
        """One compiled pass over the entries (``scratch`` is not needed), or the array-generic update."""
        if not self.compiled:
            super().sgd_update_(param, grad, velocity, scratch, learning_rate, l2, momentum, nesterov, l1=l1,
                                accumulator=accumulator, adam_step=adam_step)
            return
        optimizer = UPDATE_ADAM if adam_step else UPDATE_SGD if accumulator is None else UPDATE_ADAGRAD
        corrections = adam_bias_corrections(adam_step) if adam_step else (1.0, 1.0)
        empty = _empty(param.dtype)
        update_(param.reshape(-1), grad.reshape(-1), empty if velocity is None else velocity.reshape(-1),
                empty if accumulator is None else accumulator.reshape(-1), learning_rate, l2, l1, momentum,
                bool(nesterov), optimizer, ADAM_EPS if adam_step else ADAGRAD_EPS, *ADAM_BETAS, *corrections)

    def describe(self) -> str:
        return f"numpy ({description(self.compiled)})"


def description(compiled: bool | None = None) -> str:
    """What the NumPy backend runs on: NumPy's version and the compiled loops, or why there are none."""
    compiled = compiled_loops_enabled() if compiled is None else compiled
    if compiled:
        loops = f"compiled loops: Numba {NUMBA_VERSION}" + (", AMX tiles for 8-bit inputs" if amx_enabled() else "")
    elif NUMBA_AVAILABLE:
        loops = f"array code ({NUMBA_ENV}=0 or compiled=False)"
    else:
        loops = "array code; pip install linclass-gpu[cpu] for compiled loops"
    return f"CPU, NumPy {np.__version__}, {loops}"


_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def _empty(dtype: np.dtype) -> np.ndarray:
    """The empty array the compiled loops read as an absent buffer (no weights, no velocity)."""
    return _EMPTY[np.dtype(dtype)]
