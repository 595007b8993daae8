"""The backend contract written once over an array module: NumPy on the CPU, and the base of the CuPy backend.

One forward/backward function, :func:`linear_loss_grad_`, serves both the checkable core (``softmax_loss_grad``,
``sigmoid_loss_grad``) and the fused training step, which adds only the row gather before it and the update after
it. The step allocates nothing of the size of X or the logits: rows (and their sample weights) are gathered into
buffers made once for the largest batch, and every intermediate of shape (B, K) or (D, K) lives in a buffer of its
own.

Two methods of :class:`ArrayBackend` are the seams a subclass may fuse: :meth:`~ArrayBackend.logits_to_grad_`
(logits to ``dZ``, ``db`` and the loss) and :meth:`~ArrayBackend.sgd_update_` (L2, momentum, AdaGrad or Adam, the
update and L1's soft-thresholding). Here they are plain array code; the CuPy backend replaces each by one CUDA kernel,
and the NumPy backend by a compiled loop where Numba is installed (:mod:`.cpu_loops`), doing the same arithmetic.
The step's two products are seams too (:meth:`~ArrayBackend.logits_product_`,
:meth:`~ArrayBackend.weight_gradient_product_`, the array module's matmul here), which the NumPy backend replaces by
compiled loops where a model's few outputs leave BLAS slow (:mod:`.cpu_products`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ADAGRAD_EPS, ADAM_BETAS, ADAM_EPS, MODELS, Backend, FusedSGD, adam_bias_corrections, check_optimizer
from .rowwise import ROW_LOSSES

# Rows per chunk when predicting on non-float inputs: bounds the float copy of X (2048 MNIST rows: 6.4 MB) while
# keeping each GEMM large enough to run at full speed.
PREDICT_CHUNK_ROWS = 2048


def compute_dtype(input_dtype) -> np.dtype:
    """float64 stays float64; every other input (float32, float16, uint8 pixels …) computes in float32."""
    return np.dtype(np.float64) if np.dtype(input_dtype) == np.float64 else np.dtype(np.float32)


def gather_rows(xp, source: Any, rows: Any, out: Any) -> Any:
    """``out[:] = source[rows]`` without a temporary (NumPy buffers ``out`` unless told the indices are valid)."""
    if xp is np:  # the method skips np.take's Python wrapper, a microsecond of a ~100 µs MNIST step
        return source.take(rows, axis=0, out=out, mode="clip")  # rows come from our own permutation
    return xp.take(source, rows, axis=0, out=out)


def linear_loss_grad_(backend: "ArrayBackend", model: str, X: Any, targets: Any, weights: Any, W: Any, b: Any,
                      x_scale: float, Z: Any, dW: Any, db: Any, loss_sum: Any) -> None:
    """Forward and backward pass of the linear model on a batch, into preallocated buffers.

    Parameters
    ----------
    backend : ArrayBackend
        Supplies ``xp``, :meth:`ArrayBackend.logits_to_grad_` and :attr:`ArrayBackend.classes_major_softmax`.
    model : {"softmax", "sigmoid", "sigmoid_mse"}
    X : array, shape (B, D), float
    targets : array, shape (B,) or (B, K)
        Flat target indices in the logits' memory order, shape (B,) (softmax; see :func:`target_logit_indices_`),
        or {0, 1} targets, shape (B, K) (sigmoid models): see :mod:`.rowwise`.
    weights : array, shape (B,), or None
        Per-row sample weights ``w_i`` in ``X``'s float dtype; None is 1 for every row.
    W : array, shape (D, K)
    b : array, shape (K,)
    x_scale : float
    Z : array, shape (B, K), or (B, 2K) for a classes-major softmax
        Scratch for the logits and ``dZ_i = w_i (P_i − Y_i)/B``, C-contiguous. A classes-major softmax (see
        :func:`classes_major_logits`) takes two logits' worth; given one, it allocates the other.
    dW : array, shape (D, K)
        Receives ``x_scale·Xᵀ dZ``.
    db : array, shape (K,)
        Receives ``Σ_rows dZ``.
    loss_sum : 0-d float64 array
        The weighted summed (not mean) data loss ``Σ_i w_i ℓ_i`` over the B rows is added to it.
    """
    xp = backend.xp
    if model == "softmax" and backend.classes_major_softmax:
        Z = classes_major_logits(xp, X, W, x_scale, Z)
        logits_scale = 1.0  # applied by the copy
    else:
        backend.logits_product_(X, W, Z)
        logits_scale = x_scale
    # dW = s·Xᵀ dZ: the scale goes on the smaller of dZ and dW.
    scale_dZ = x_scale != 1.0 and Z.size < dW.size
    backend.logits_to_grad_(model, Z, targets, weights, b, logits_scale, loss_sum, db,
                            x_scale if scale_dZ else 1.0)
    backend.weight_gradient_product_(X, Z, dW)
    if x_scale != 1.0 and not scale_dZ:
        dW *= x_scale


def target_logit_indices_(labels: Any, row_offsets: Any, classes_major: bool) -> Any:
    """Turn the class ids ``y_i`` of a batch of B rows, in place, into the flat index of row i's target logit in the
    logits' memory: ``y_i·B + i`` classes-major (see :func:`classes_major_logits`), ``i·K + y_i`` rows-major.

    Parameters
    ----------
    labels : integer array, shape (B,)
        Overwritten.
    row_offsets : integer array, shape (B,)
        ``i`` (classes-major) or ``i·K`` (rows-major), made once for the largest batch.
    classes_major : bool

    Returns
    -------
    labels
    """
    if classes_major:
        labels *= labels.shape[0]
    labels += row_offsets
    return labels


def classes_major_logits(xp, X: Any, W: Any, x_scale: float, scratch: Any) -> Any:
    """``x_scale·X W`` laid out classes-major for the softmax.

    BLAS writes ``X W`` fastest rows-major, (B, K); one transposing copy, which applies the scale on the way, lays it
    out as a C-contiguous (K, B) array. Seen through its transpose, that is the (B, K) logits, F-contiguous: a row's
    K logits are then reduced along the long B axis, where NumPy reduces a short last axis (K = 10) several times
    slower.

    Parameters
    ----------
    xp : module
    X : array, shape (B, D), float
    W : array, shape (D, K)
    x_scale : float
    scratch : array, shape (B, 2K) or (B, K), C-contiguous
        Room for the product and its copy, one after the other; (B, K): room for the product, the copy is allocated.

    Returns
    -------
    logits : array, shape (B, K), F-contiguous
        Row i's target logit is at flat index ``y_i·B + i`` of its memory (:func:`target_logit_indices_`).
    """
    n_rows, n_outputs = X.shape[0], W.shape[1]
    size = n_rows * n_outputs
    if scratch.shape[1] == 2 * n_outputs:
        values = scratch.reshape(-1)
        product, logits = values[:size].reshape(n_rows, n_outputs), values[size:].reshape(n_outputs, n_rows).T
    else:
        product, logits = scratch, xp.empty((n_outputs, n_rows), dtype=scratch.dtype).T
    xp.matmul(X, W, out=product)
    xp.multiply(product, x_scale, out=logits)
    return logits


def soft_threshold_(xp, param: Any, threshold: Any, scratch: Any) -> None:
    """``param ← sign(param)·max(|param| − threshold, 0)`` in place (``scratch``: ``param``'s shape, overwritten).

    ``threshold ≥ 0`` is a scalar or an array like ``param`` (not ``scratch`` itself). The sign is put back by
    ``copysign``, so an entry that lands on 0 keeps its sign bit (−0.0 == 0).
    """
    xp.abs(param, out=scratch)
    scratch -= threshold
    xp.maximum(scratch, 0, out=scratch)
    xp.copysign(scratch, param, out=param)


def _per_parameter_step_(xp, param: Any, direction: Any, denominator: Any, learning_rate: float, l1: float) -> None:
    """AdaGrad's and Adam's last step: ``s = lr/denominator`` per entry, ``p ← p − s·direction``, then the proximal
    L1 step ``p ← sign(p)·max(|p| − s·l1, 0)``. ``direction`` and ``denominator`` are overwritten."""
    xp.divide(learning_rate, denominator, out=denominator)  # s
    direction *= denominator
    param -= direction
    if l1:
        denominator *= l1
        soft_threshold_(xp, param, denominator, direction)


class ArrayFusedSGD(FusedSGD):
    """The fused SGD step of :class:`ArrayBackend`: gather, forward, backward and update on preallocated buffers.

    Parameters are described in :meth:`Backend.fused_sgd`.
    """

    def __init__(self, backend: "ArrayBackend", model: str, X: Any, y: Any, W: np.ndarray, b: np.ndarray, *,
                 max_batch_size: int, l2: float, momentum: float, nesterov: bool, fit_intercept: bool,
                 x_scale: float, sample_weight: Any, l1: float = 0.0, optimizer: str = "sgd"):
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        check_optimizer(optimizer, momentum, nesterov)
        xp = backend.xp
        self.backend, self.xp, self.model = backend, xp, model
        self.n_features, self.n_outputs = W.shape
        self.l2, self.l1 = float(l2), float(l1)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.fit_intercept, self.x_scale = bool(fit_intercept), float(x_scale)
        dtype = compute_dtype(X.dtype)
        self._X, self._y = X, y
        self.W = xp.array(W, dtype=dtype)
        self.b = xp.array(b, dtype=dtype)
        self.optimizer = optimizer
        # The momentum buffers, or Adam's first moments m.
        self._velocity = ((xp.zeros_like(self.W), xp.zeros_like(self.b)) if momentum or optimizer == "adam"
                          else (None, None))
        # AdaGrad's running Σ g², or Adam's second moments v.
        self._accumulator = ((xp.zeros_like(self.W), xp.zeros_like(self.b)) if optimizer != "sgd"
                             else (None, None))
        self._step_count = 0  # on the host: Adam's t, for its bias corrections
        rows, (features, outputs) = max_batch_size, W.shape
        # A raw gather buffer only when X must be converted (uint8, float16) before the GEMM.
        self._raw_rows = None if X.dtype == dtype else xp.empty((rows, features), dtype=X.dtype)
        self._rows = xp.empty((rows, features), dtype=dtype)
        self._targets = xp.empty((rows,) + y.shape[1:], dtype=y.dtype)
        self._sample_weight = sample_weight
        self._weights = None if sample_weight is None else xp.empty(rows, dtype=dtype)
        # Row i's target logit sits at flat index y_i·B + i of classes-major logits, i·C + y_i of rows-major ones.
        self._classes_major = model == "softmax" and backend.classes_major_softmax
        self._row_offsets = (xp.arange(rows, dtype=y.dtype) * (1 if self._classes_major else outputs)
                             if model == "softmax" else None)
        # The logits, and for a classes-major softmax room for their classes-major copy too (linear_loss_grad_).
        logits_copies = 2 if self._classes_major else 1
        self._Z = xp.empty((rows, logits_copies * outputs), dtype=dtype)
        self._dW, self._scratch_W = xp.empty_like(self.W), xp.empty_like(self.W)
        self._db, self._scratch_b = xp.empty_like(self.b), xp.empty_like(self.b)
        self._loss_sum = xp.zeros((), dtype=np.float64)

    def step(self, rows: Any, learning_rate: float) -> None:
        xp, backend, batch_size = self.xp, self.backend, rows.shape[0]
        if self._raw_rows is None:
            X_batch = gather_rows(xp, self._X, rows, self._rows[:batch_size])
        else:
            X_batch = self._rows[:batch_size]
            X_batch[...] = gather_rows(xp, self._X, rows, self._raw_rows[:batch_size])
        targets = gather_rows(xp, self._y, rows, self._targets[:batch_size])
        if self._row_offsets is not None:
            target_logit_indices_(targets, self._row_offsets[:batch_size], self._classes_major)
        weights = None if self._weights is None else gather_rows(xp, self._sample_weight, rows,
                                                                  self._weights[:batch_size])
        linear_loss_grad_(backend, self.model, X_batch, targets, weights, self.W, self.b, self.x_scale,
                          self._Z[:batch_size], self._dW, self._db, self._loss_sum)
        if self.reducer is not None:  # data-parallel: the mean over the global batch, summed over the processes
            divisor = self.reducer.gradient_divisor(batch_size)
            if divisor != batch_size:  # linear_loss_grad_ divided by the local B: Σ/B · B/divisor = Σ/divisor
                self._dW *= batch_size / divisor
                self._db *= batch_size / divisor
            self.reducer.reduce_gradient_((self._dW, self._db))
        (velocity_W, velocity_b), (accumulator_W, accumulator_b) = self._velocity, self._accumulator
        self._step_count += 1
        adam_step = self._step_count if self.optimizer == "adam" else 0
        backend.sgd_update_(self.W, self._dW, velocity_W, self._scratch_W, learning_rate, self.l2, self.momentum,
                            self.nesterov, l1=self.l1, accumulator=accumulator_W, adam_step=adam_step)
        if self.fit_intercept:  # the bias is never penalised
            backend.sgd_update_(self.b, self._db, velocity_b, self._scratch_b, learning_rate, 0.0, self.momentum,
                                self.nesterov, accumulator=accumulator_b, adam_step=adam_step)
        if self.reducer is not None:
            self.reducer.reduce_parameters_((self.W, self.b))

    def pop_loss_sum(self) -> float:
        loss_sum = float(self._loss_sum)
        self._loss_sum[...] = 0
        return loss_sum

    def get_params(self) -> tuple[np.ndarray, np.ndarray]:
        return self._to_host(self.W), self._to_host(self.b)

    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W[...] = self.xp.asarray(W)
        self.b[...] = self.xp.asarray(b)
        for buffer in self._velocity + self._accumulator:
            if buffer is not None:
                buffer[...] = 0
        self._step_count = 0

    def get_state(self) -> dict[str, np.ndarray]:
        W, b = self.get_params()
        state = {"W": W, "b": b}
        for prefix, buffers in (("velocity", self._velocity), ("accumulator", self._accumulator)):
            for param, suffix, buffer in zip((W, b), ("W", "b"), buffers):
                state[f"{prefix}_{suffix}"] = np.zeros_like(param) if buffer is None else self._to_host(buffer)
        state["step_count"] = np.array(self._step_count, dtype=np.int64)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.set_params(state["W"], state["b"])  # zeroes the buffers: a key the state lacks stays 0
        for prefix, buffers in (("velocity", self._velocity), ("accumulator", self._accumulator)):
            for suffix, buffer in zip(("W", "b"), buffers):
                if buffer is not None and f"{prefix}_{suffix}" in state:
                    buffer[...] = self.xp.asarray(state[f"{prefix}_{suffix}"])
        self._step_count = int(state.get("step_count", 0))

    def _to_host(self, a: Any) -> np.ndarray:
        return np.array(a) if self.xp is np else self.xp.asnumpy(a)


class ArrayBackend(Backend):
    """The backend contract over the array module ``xp`` (set by subclasses)."""

    xp: Any
    # Whether the softmax works on a classes-major copy of the logits (classes_major_logits). The CuPy kernel reads
    # rows-major logits.
    classes_major_softmax = False
    # The class of fused_sgd's steppers.
    fused_step: type[ArrayFusedSGD] = ArrayFusedSGD

    def logits_product_(self, X: Any, W: Any, out: Any) -> None:
        """``out = X W``: X (B, D) and W (D, K) float, out (B, K) C-contiguous."""
        self.xp.matmul(X, W, out=out)

    def weight_gradient_product_(self, X: Any, dZ: Any, out: Any) -> None:
        """``out = Xᵀ dZ``: X (B, D) and dZ (B, K) float, out (D, K) C-contiguous."""
        self.xp.matmul(X.T, dZ, out=out)

    def logits_to_grad_(self, model: str, Z: Any, targets: Any, weights: Any, b: Any, x_scale: float,
                        loss_sum: Any, db: Any, dz_scale: float = 1.0) -> None:
        """Turn ``X_b W`` into ``dz_scale·dZ`` with ``dZ_i = w_i (P_i − Y_i)/B`` in place, write ``db = Σ_i dZ_i``
        and add ``Σ_i w_i ℓ_i`` to ``loss_sum``.

        Parameters
        ----------
        model : {"softmax", "sigmoid", "sigmoid_mse"}
        Z : array, shape (B, K), C-contiguous, or F-contiguous from :func:`classes_major_logits`
            ``X_b W`` on entry; the logits are ``x_scale·Z + b``.
        targets : array, shape (B,) or (B, K)
            As in :func:`linear_loss_grad_`; for the softmax, flat indices in ``Z``'s memory order (see
            :func:`.rowwise.softmax_cross_entropy_`).
        weights : array, shape (B,), or None
            Per-row sample weights in ``Z``'s dtype; None is 1 for every row.
        b : array, shape (K,)
        x_scale : float
        loss_sum : 0-d float64 array
        db : array, shape (K,)
            Receives the bias gradient, taken before ``dz_scale``.
        dz_scale : float
            The scale of ``dW = dz_scale·Xᵀ (what Z holds)``, put on ``dZ`` where that is cheaper than on ``dW``.
        """
        if x_scale != 1.0:
            Z *= x_scale
        Z += b
        loss_sum += ROW_LOSSES[model](self.xp, Z, targets, weights)
        Z *= 1.0 / Z.shape[0]  # the mean over the batch's rows
        Z.sum(axis=0, out=db)
        if dz_scale != 1.0:
            Z *= dz_scale

    def sgd_update_(self, param: Any, grad: Any, velocity: Any, scratch: Any, learning_rate: float, l2: float,
                    momentum: float, nesterov: bool, l1: float = 0.0, accumulator: Any = None,
                    adam_step: int = 0) -> None:
        """In-place (momentum) SGD, AdaGrad or Adam with L2 and L1: ``g = grad + l2·p``; then

        - SGD: ``v ← μ v + g``; ``p ← p − lr·(g + μ v if nesterov else v)``; the step size is ``s = lr``;
        - AdaGrad (``accumulator`` given): ``G ← G + g²``; ``s = lr/(√G + ε)`` per entry; ``p ← p − s·g``;
        - Adam (``adam_step = t ≥ 1``; ``velocity`` is ``m``, ``accumulator`` is ``v``): ``m ← β₁ m + (1 − β₁) g``;
          ``v ← β₂ v + (1 − β₂) g²``; ``s = lr/(√v/√(1 − β₂ᵗ) + ε)``; ``p ← p − s·m/(1 − β₁ᵗ)``;

        and, with ``l1``, ``p ← sign(p)·max(|p| − s·l1, 0)`` (the proximal step of ``s·l1·‖p‖₁``, see
        :meth:`Backend.fused_sgd`).

        ``grad`` is overwritten; ``velocity`` is None for plain SGD and AdaGrad; ``accumulator`` is AdaGrad's ``G``
        (None for SGD); ``scratch`` has ``param``'s shape.
        """
        xp, step = self.xp, grad
        if l2:
            xp.multiply(param, l2, out=scratch)  # d/dp of l2/2·‖p‖² is l2·p
            grad += scratch
        if adam_step:
            beta1, beta2 = ADAM_BETAS
            bias_correction1, bias_correction2_sqrt = adam_bias_corrections(adam_step)
            velocity *= beta1
            xp.multiply(grad, 1 - beta1, out=scratch)
            velocity += scratch  # m ← β₁ m + (1 − β₁) g
            accumulator *= beta2
            xp.multiply(grad, grad, out=scratch)
            scratch *= 1 - beta2
            accumulator += scratch  # v ← β₂ v + (1 − β₂) g²
            xp.sqrt(accumulator, out=scratch)
            scratch /= bias_correction2_sqrt
            scratch += ADAM_EPS  # √v̂ + ε
            xp.divide(velocity, bias_correction1, out=grad)  # m̂
            _per_parameter_step_(xp, param, grad, scratch, learning_rate, l1)
            return
        if accumulator is not None:
            xp.multiply(grad, grad, out=scratch)
            accumulator += scratch  # G ← G + g²
            xp.sqrt(accumulator, out=scratch)
            scratch += ADAGRAD_EPS  # √G + ε
            _per_parameter_step_(xp, param, grad, scratch, learning_rate, l1)
            return
        if velocity is not None:
            velocity *= momentum
            velocity += grad
            if nesterov:
                xp.multiply(velocity, momentum, out=scratch)
                grad += scratch
            else:
                step = velocity
        xp.multiply(step, learning_rate, out=scratch)
        param -= scratch
        if l1:
            soft_threshold_(xp, param, learning_rate * l1, scratch)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype, order="C")  # C-contiguous, and a 0-d array stays 0-d

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def softmax_loss_grad(self, X, y, W, b, x_scale=1.0, sample_weight=None):
        return self._loss_grad("softmax", X, y, W, b, x_scale, sample_weight)

    def sigmoid_loss_grad(self, X, y, w, b, x_scale=1.0, sample_weight=None):
        return self._sigmoid_loss_grad("sigmoid", X, y, w, b, x_scale, sample_weight)

    def sigmoid_mse_loss_grad(self, X, y, w, b, x_scale=1.0, sample_weight=None):
        return self._sigmoid_loss_grad("sigmoid_mse", X, y, w, b, x_scale, sample_weight)

    def _sigmoid_loss_grad(self, model: str, X: Any, y: Any, w: Any, b: Any, x_scale: float,
                           sample_weight: Any) -> tuple[float, Any, Any]:
        """A sigmoid model's loss and gradients; ``w`` (D,) with scalar ``b`` is the binary model, given back in
        those shapes, ``w`` (D, K) with ``b`` (K,) the ``K``-output one."""
        xp = self.xp
        w = xp.asarray(w)
        W = w if w.ndim == 2 else xp.reshape(w, (-1, 1))
        loss, dW, db = self._loss_grad(model, X, y, W, xp.reshape(xp.asarray(b), (W.shape[1],)), x_scale,
                                       sample_weight)
        return (loss, dW, db) if w.ndim == 2 else (loss, dW[:, 0], db[0])

    def _loss_grad(self, model: str, X: Any, y: Any, W: Any, b: Any, x_scale: float,
                   sample_weight: Any) -> tuple[float, Any, Any]:
        """Mean loss and gradients over all rows of X: :func:`linear_loss_grad_` with freshly allocated outputs."""
        xp = self.xp
        dtype = compute_dtype(X.dtype)
        weights = self._weights(sample_weight, X.shape[0], dtype)
        X_float = X.astype(dtype, copy=False)
        W, b = xp.asarray(W, dtype=dtype), xp.asarray(b, dtype=dtype)
        n_rows, n_outputs = X.shape[0], W.shape[1]
        if model == "softmax":
            classes_major = self.classes_major_softmax
            targets = target_logit_indices_(xp.array(y, dtype=np.int64), xp.arange(n_rows) * (
                1 if classes_major else n_outputs), classes_major)
        else:
            targets = self._sigmoid_targets(y, n_outputs, dtype)
        Z = xp.empty((n_rows, n_outputs), dtype=dtype)
        dW, db, loss_sum = xp.empty_like(W), xp.empty_like(b), xp.zeros((), dtype=np.float64)
        linear_loss_grad_(self, model, X_float, targets, weights, W, b, float(x_scale), Z, dW, db, loss_sum)
        return float(loss_sum) / n_rows, dW, db

    def decision_function(self, X, W, b, x_scale=1.0):
        xp = self.xp
        dtype = compute_dtype(X.dtype)
        W, b = xp.asarray(W, dtype=dtype), xp.asarray(b, dtype=dtype)
        Z = xp.empty((X.shape[0], W.shape[1]), dtype=dtype)
        # Float inputs need no copy; others are converted a bounded chunk of rows at a time.
        chunk = X.shape[0] if X.dtype == dtype else PREDICT_CHUNK_ROWS
        for start in range(0, X.shape[0], chunk):
            xp.matmul(X[start:start + chunk].astype(dtype, copy=False), W, out=Z[start:start + chunk])
        if x_scale != 1.0:
            Z *= x_scale
        Z += b
        return Z

    def fused_sgd(self, model, X, y, W, b, *, max_batch_size, l2=0.0, l1=0.0, momentum=0.0, nesterov=False,
                  fit_intercept=True, x_scale=1.0, sample_weight=None, optimizer="sgd"):
        dtype = compute_dtype(X.dtype)
        if model != "softmax":
            y = self._sigmoid_targets(y, np.shape(W)[1], dtype)
        return self.fused_step(self, model, X, y, np.asarray(W), np.asarray(b), max_batch_size=max_batch_size,
                             l2=l2, l1=l1, momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                             x_scale=x_scale, sample_weight=self._weights(sample_weight, X.shape[0], dtype),
                             optimizer=optimizer)

    def _sigmoid_targets(self, y: Any, n_outputs: int, dtype: np.dtype) -> Any:
        """A sigmoid model's {0, 1} targets as a (N, K) array of the compute ``dtype`` ((N,) is (N, 1))."""
        targets = self.xp.asarray(y, dtype=dtype)
        if targets.shape[1:] != (n_outputs,) and not (targets.ndim == 1 and n_outputs == 1):
            raise ValueError(f"targets of shape {targets.shape} do not fit a model with {n_outputs} outputs")
        return targets.reshape(targets.shape[0], n_outputs)

    def _weights(self, sample_weight: Any, n_rows: int, dtype: np.dtype) -> Any:
        """``sample_weight`` as a device array (N,) of the compute ``dtype``, or None.

        The shape is checked here, once: the fused step's gather clips out-of-range indices instead of raising.
        """
        if sample_weight is None:
            return None
        weights = self.asarray(sample_weight, dtype=dtype)
        if weights.shape != (n_rows,):
            raise ValueError(f"sample_weight must have shape ({n_rows},), got {weights.shape}")
        return weights
