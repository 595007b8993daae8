"""The contract every compute backend fulfils.

A backend owns where arrays live (host memory, a CUDA device) and how one SGD step is computed on them. The
estimators and the training loop only ever talk to the two abstract classes below, so a new backend is a new
subclass, nothing else.

Shapes used throughout: ``N`` rows, ``D`` features, ``C`` classes, ``B`` rows in one minibatch, ``K`` output
columns of the linear map (``K = C`` for softmax regression; for the sigmoid models ``K = 1`` for binary logistic
regression, or ``K`` independent sigmoids: multilabel, or one-vs-rest over ``C = K`` classes).

Models (:data:`MODELS`): ``"softmax"`` (softmax + cross-entropy over integer class ids, never one-hot),
``"sigmoid"`` (``K`` sigmoids + binary cross-entropy from the logits) and ``"sigmoid_mse"`` (``K`` sigmoids + squared
error ``(σ(z) − y)²``, for teaching: its gradient ``2(σ − y)σ(1 − σ)`` vanishes where the model is confidently
wrong). The sigmoid models' targets are {0, 1} values of shape (N,) when ``K = 1`` or an indicator matrix (N, K); a
row's loss is the sum over its ``K`` outputs.

Sample weights. Every loss and step takes optional per-row weights ``w_i ≥ 0`` (``None``: every ``w_i = 1``). Row
``i``'s loss ``ℓ_i`` counts ``w_i`` times: the summed loss is ``Σ_i w_i ℓ_i`` and the gradient with respect to row
``i``'s logits is ``dZ_i = w_i (P_i − Y_i) / B``. The divisor is the row count ``B`` (``N`` for the loss/gradient over
all rows), never ``Σ_i w_i``, as in scikit-learn's ``SGDClassifier`` (each row's gradient is scaled by its weight): a
row's step is then a fixed multiple of its own weight, whatever weights the other rows of its minibatch carry, a
batch whose weights are all 0 makes no step (not 0/0), and an integer weight ``k`` counts the row ``k`` times in its
batch's sum.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any, Callable, ContextManager, Protocol

import numpy as np

MODELS = ("softmax", "sigmoid", "sigmoid_mse")
# The update rules of the fused step (see Backend.fused_sgd).
OPTIMIZERS = ("sgd", "adagrad", "adam")
# AdaGrad's ε in p ← p − lr·g/(√G + ε): PyTorch's default, small enough to matter only while G is ~0.
ADAGRAD_EPS = 1e-10
# Adam's (β₁, β₂) and ε: PyTorch's (and the paper's) defaults.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def adam_bias_corrections(step_count):
    """``(1 − β₁ᵗ, √(1 − β₂ᵗ))`` for Adam's step ``t = step_count ≥ 1`` (an int, or an integer array of steps), in
    float64 on the host (no device work)."""
    beta1, beta2 = ADAM_BETAS
    return 1.0 - beta1**step_count, (1.0 - beta2**step_count) ** 0.5


def check_optimizer(optimizer: str, momentum: float, nesterov: bool) -> None:
    """Reject an unknown ``optimizer``, and momentum with an optimizer other than ``"sgd"`` (AdaGrad has none)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer != "sgd" and (momentum or nesterov):
        raise ValueError(f"momentum and nesterov apply to optimizer='sgd' only, not {optimizer!r}")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run on this machine; the message says why."""


class StepReducer(Protocol):
    """What a data-parallel run plugs into :meth:`FusedSGD.step` (``linclass_gpu.distributed.DataParallel``).

    With ``FusedSGD.reducer`` set, every step asks it for the divisor of its gradient before computing it, hands it
    the device arrays holding the gradient between the gradient and the update, and the parameter arrays after the
    update. Every call is on device arrays, in place, with no host round trip; which arrays are handed over is the
    backend's layout (documented on each implementation), the reducer treats them as opaque buffers to sum across
    processes.
    """

    def gradient_divisor(self, batch_size: int) -> int:
        """The ``B`` that divides this step's gradient, given the local batch's row count: the global batch (the
        sum of every process's local batch) when gradients are summed across processes, else ``batch_size``."""

    def reduce_gradient_(self, gradient: tuple[Any, ...]) -> None:
        """Sum this step's gradient buffers over the processes, in place (before L2, momentum and the update)."""

    def reduce_parameters_(self, parameters: tuple[Any, ...]) -> None:
        """Called after the update with the parameter buffers, which it may average in place (local SGD)."""


class FusedSGD(abc.ABC):
    """The parameters of one linear model and the fused SGD step that updates them in place on the device.

    One ``step`` call computes, for the rows of one minibatch,
    ``Z = s·X_b W + b``, the softmax or sigmoid of ``Z``, the weighted summed loss ``Σ_i w_i ℓ_i``,
    ``dZ_i = w_i (P_i − Y_i)``, ``dW = s·X_bᵀ dZ / B + l2·W``, ``db = Σ dZ / B``, the (momentum) SGD update of ``W``
    and ``b`` and, with L1, the soft-thresholding of ``W`` (see :meth:`Backend.fused_sgd`), where ``s`` is the input
    scale and ``w_i`` the row's sample weight (1 without weights). It never reads
    anything back to the host: the loss is accumulated on the device and fetched by :meth:`pop_loss_sum`, once per
    epoch.

    Attributes
    ----------
    model : {"softmax", "sigmoid", "sigmoid_mse"}
    n_features : int
        ``D``.
    n_outputs : int
        ``K``.
    reducer : StepReducer or None
        Data-parallel training: consulted by every ``step`` (see :class:`StepReducer`). None (the default): the
        gradient is divided by the local ``B`` and nothing is exchanged.
    """

    model: str
    n_features: int
    n_outputs: int
    reducer: StepReducer | None = None

    @abc.abstractmethod
    def step(self, rows: Any, learning_rate: float) -> None:
        """Run one SGD step on the minibatch ``X[rows]``.

        Parameters
        ----------
        rows : device integer array, shape (B,)
            Indices of the minibatch rows into the device-resident ``X`` and ``y``; ``X`` is never copied whole.
        learning_rate : float
            Step size for this step (the schedule is evaluated on the host; passing it costs no sync).
        """

    def run_epoch(self, rows: Any, learning_rates: np.ndarray, batch_size: int,
                  on_steps: Callable[[int], None] | None = None) -> None:
        """Run the SGD steps of one epoch: step ``t`` on ``X[rows[t·B:(t+1)·B]]`` with ``learning_rates[t]``.

        This default makes one :meth:`step` call per minibatch; a backend that can train a whole epoch in one
        launch overrides it (and falls back to this where its epoch kernel does not apply, e.g. with a
        :attr:`reducer`).

        Parameters
        ----------
        rows : device integer array, shape (N_epoch,)
            The epoch's row order; the last minibatch takes the ``N_epoch mod B`` rows left, when that is not 0.
        learning_rates : ndarray of float, shape (ceil(N_epoch / B),)
            One rate per step, on the host.
        batch_size : int
            ``B``.
        on_steps : callable (int) -> None, optional
            Told how many steps have finished since its last call (a progress bar); an epoch kernel calls it once.
        """
        for index, learning_rate in enumerate(learning_rates):
            self.step(rows[index * batch_size:(index + 1) * batch_size], float(learning_rate))
            if on_steps is not None:
                on_steps(1)

    @abc.abstractmethod
    def pop_loss_sum(self) -> float:
        """Sum of the per-row data losses ``Σ_i w_i ℓ_i`` of every step since the last call, then reset it to 0.

        The one device-to-host read of the training loop; call it once per epoch.
        """

    @abc.abstractmethod
    def get_params(self) -> tuple[np.ndarray, np.ndarray]:
        """Copy the parameters to the host.

        Returns
        -------
        W : ndarray, shape (D, K)
        b : ndarray, shape (K,)
        """

    @abc.abstractmethod
    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        """Overwrite the parameters (and zero the momentum and AdaGrad buffers) from host arrays of shapes (D, K) and
        (K,)."""

    @abc.abstractmethod
    def get_state(self) -> dict[str, np.ndarray]:
        """Everything a resumed run needs to continue bitwise: host copies of ``W`` (D, K), ``b`` (K,),
        ``velocity_W`` (D, K) and ``velocity_b`` (K,) (zeros without momentum), ``accumulator_W`` (D, K) and
        ``accumulator_b`` (K,) (AdaGrad's running ``Σ g²``; zeros for the other optimizers) and ``step_count`` (a 0-d
        int64 array: the steps taken, which Adam's bias correction needs). With Adam, ``velocity_*`` hold its first
        moment ``m`` and ``accumulator_*`` its second moment ``v``."""

    @abc.abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned. Keys a state of an older version lacks (the accumulators,
        ``step_count``) are taken as zeros."""


class Backend(abc.ABC):
    """A compute path: array placement, the checkable loss/gradient core, prediction and the fused step.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"`` or ``"triton"``.
    compute_dtypes : tuple of str
        The parameter and arithmetic precisions it trains in (an estimator's ``dtype``).
    stored_feature_dtypes : tuple of str
        Feature dtypes its steps read as stored, converting on the fly (uint8 pixels: a quarter of float32's bytes);
        other features are converted to the compute dtype once, before training.
    """

    name: str
    compute_dtypes: tuple[str, ...] = ("float32", "float64")
    stored_feature_dtypes: tuple[str, ...] = ("uint8",)

    @abc.abstractmethod
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Place ``a`` (NumPy, CuPy, torch or any DLPack producer) on this backend's device, zero-copy where possible.

        ``dtype`` is a NumPy dtype or its name (``"float32"``, ``"uint8"``, ``"int64"`` …); ``None`` keeps it.
        """

    @abc.abstractmethod
    def to_numpy(self, a: Any) -> np.ndarray:
        """Copy a device array back to a host NumPy array."""

    @abc.abstractmethod
    def softmax_loss_grad(self, X: Any, y: Any, W: Any, b: Any, x_scale: float = 1.0,
                          sample_weight: Any = None) -> tuple[float, Any, Any]:
        """Mean (weighted) cross-entropy of softmax regression and its gradients.

        Parameters
        ----------
        X : device array, shape (N, D)
            float32, float64, float16, bfloat16 (backends that have it) or uint8 with ``x_scale``.
        y : device integer array, shape (N,)
            Class ids in ``[0, C)``.
        W : array, shape (D, C)
        b : array, shape (C,)
        x_scale : float
            The model sees ``x_scale * X`` (1/255 for raw pixels).
        sample_weight : device float array, shape (N,), optional
            ``w_i ≥ 0`` (see the module notes); None is 1 for every row.

        Returns
        -------
        loss : float
            ``(1/N) Σ_i w_i · (−log softmax(z_i)[y_i])``.
        dW : device array, shape (D, C)
            ``x_scale · Xᵀ dZ`` with ``dZ_i = w_i (P_i − Y_i) / N``.
        db : device array, shape (C,)
            ``Σ_i dZ_i``.
        """

    @abc.abstractmethod
    def sigmoid_loss_grad(self, X: Any, y: Any, w: Any, b: Any, x_scale: float = 1.0,
                          sample_weight: Any = None) -> tuple[float, Any, Any]:
        """Mean (weighted) binary cross-entropy of logistic regression (from logits) and its gradients.

        Parameters
        ----------
        X : device array, shape (N, D)
        y : device array, shape (N,) or (N, K)
            Targets in {0, 1}: one column for the binary model, an indicator matrix for ``K`` independent sigmoids.
        w : array, shape (D,) or (D, K)
        b : float or 0-d array, or array of shape (K,) with ``w`` (D, K)
        x_scale : float
        sample_weight : device float array, shape (N,), optional
            ``w_i ≥ 0``; None is 1 for every row.

        Returns
        -------
        loss : float
            ``(1/N) Σ_i w_i Σ_k (max(z_ik,0) − z_ik·y_ik + log1p(exp(−|z_ik|)))``.
        dw : device array, shape of ``w``
            ``x_scale · Xᵀ dz`` with ``dz_ik = w_i (σ(z_ik) − y_ik) / N``.
        db : device 0-d array or float (shape (K,) with ``w`` (D, K))
            ``Σ_i dz_i``.
        """

    @abc.abstractmethod
    def sigmoid_mse_loss_grad(self, X: Any, y: Any, w: Any, b: Any, x_scale: float = 1.0,
                              sample_weight: Any = None) -> tuple[float, Any, Any]:
        """Mean (weighted) squared error ``(σ(z) − y)²`` of the sigmoid model and its gradients.

        Parameters and shapes are those of :meth:`sigmoid_loss_grad`.

        Returns
        -------
        loss : float
            ``(1/N) Σ_i w_i Σ_k (σ(z_ik) − y_ik)²``.
        dw : device array, shape of ``w``
            ``x_scale · Xᵀ dz`` with ``dz_ik = 2 w_i (σ(z_ik) − y_ik) σ(z_ik) (1 − σ(z_ik)) / N``.
        db : device 0-d array or float (shape (K,) with ``w`` (D, K))
            ``Σ_i dz_i``.
        """

    @abc.abstractmethod
    def decision_function(self, X: Any, W: np.ndarray, b: np.ndarray, x_scale: float = 1.0) -> Any:
        """Logits ``x_scale·X W + b`` as a device array of shape (N, K), for parameters given on the host."""

    @abc.abstractmethod
    def fused_sgd(
        self,
        model: str,
        X: Any,
        y: Any,
        W: np.ndarray,
        b: np.ndarray,
        *,
        max_batch_size: int,
        l2: float = 0.0,
        l1: float = 0.0,
        momentum: float = 0.0,
        nesterov: bool = False,
        fit_intercept: bool = True,
        x_scale: float = 1.0,
        sample_weight: Any = None,
        optimizer: str = "sgd",
    ) -> FusedSGD:
        """Build the fused SGD step for one model over device-resident data.

        Parameters
        ----------
        model : {"softmax", "sigmoid", "sigmoid_mse"}
        X : device array, shape (N, D)
        y : device array, shape (N,) or (N, K)
            Integer class ids for softmax; {0, 1} targets for the sigmoid models, (N,) or (N, 1) when ``K = 1``.
        W, b : ndarray, shapes (D, K) and (K,)
            Initial parameters on the host; ``K = C`` for softmax, the number of independent outputs for the
            sigmoid models (1 for binary).
        max_batch_size : int
            Largest ``B`` that ``step`` will be given (buffers are allocated once for it).
        l2 : float
            L2 strength: the gradient of ``l2/2·‖W‖²`` is added to ``dW``; never applied to ``b``.
        l1 : float
            L1 strength: the penalty ``l1·‖W‖₁``, never on ``b``, applied after the (momentum) update of ``W`` by its
            proximal (soft-thresholding) step ``W ← sign(W)·max(|W| − lr·l1, 0)``. Proximal, not the subgradient
            ``l1·sign(W)`` added to ``dW``: the subgradient leaves a weight that should be 0 oscillating around it
            by ``lr·l1``, the proximal step sets it to exactly 0 (a sparse model), and it needs no ``sign(0)``
            convention. The velocity holds the smooth part of the gradient only. ``l2`` and ``l1`` both non-zero is
            the elastic net (an estimator's ``alpha, l1_ratio`` map to ``l2 = alpha·(1 − l1_ratio)``,
            ``l1 = alpha·l1_ratio``). With ``l1 = 0`` the step is exactly the one without the L1 code.
        momentum : float
            Heavy-ball coefficient μ in ``v ← μ v + g``; 0 is plain SGD.
        nesterov : bool
            Step along ``g + μ v`` instead of ``v``.
        fit_intercept : bool
            When False, ``b`` stays at its initial value.
        x_scale : float
            The model sees ``x_scale * X``.
        sample_weight : device float array, shape (N,), optional
            ``w_i ≥ 0`` for every row of ``X`` (indexed like ``X``, not like a minibatch); a step weights row ``i`` of
            its batch by ``w_i``: ``dZ_i = w_i (P_i − Y_i) / B`` and the loss ``Σ_i w_i ℓ_i`` (see the module notes).
            None is 1 for every row.
        optimizer : {"sgd", "adagrad", "adam"}
            The update rule, for ``W`` and ``b`` alike, given the gradient ``g`` (``dW + l2·W`` or ``db``):

            - ``"sgd"``: ``p ← p − lr·step`` with the (Nesterov) momentum step above (``v`` is ``velocity``);
            - ``"adagrad"``: per-parameter learning rates, ``G ← G + g²``, ``p ← p − lr·g/(√G + ε)`` with
              ``ε = 1e-10`` (:data:`ADAGRAD_EPS`, PyTorch's); ``G`` is ``accumulator`` in :meth:`FusedSGD.get_state`.
              L2 enters ``g`` (so also ``G``); L1 stays proximal with the per-parameter step ``lr/(√G + ε)``:
              ``W ← sign(W)·max(|W| − lr·l1/(√G + ε), 0)``. No momentum (``momentum`` must be 0).
            - ``"adam"``: as PyTorch's Adam (L2 added to ``g``, not decoupled): ``m ← β₁ m + (1 − β₁) g``,
              ``v ← β₂ v + (1 − β₂) g²``, ``p ← p − lr·(m/(1 − β₁ᵗ))/(√v/√(1 − β₂ᵗ) + ε)`` with
              (β₁, β₂) = (0.9, 0.999), ε = 1e-8 and ``t`` the step count (kept on the host, passed as scalars:
              no sync). L1 is proximal with the per-parameter step ``lr/(√v/√(1 − β₂ᵗ) + ε)``. No momentum.
        """

    def thread_limit(self, flops_per_call: float, n_threads: int | None = None) -> ContextManager:
        """A context in which this backend's host work runs on the CPU threads suited to products of
        ``flops_per_call`` operations (see :mod:`linclass_gpu.threads`), or on ``n_threads`` when given. Backends
        that compute on a GPU leave the host's threads alone."""
        return contextlib.nullcontext()

    def permutation(self, n: int, rng: np.random.Generator) -> Any:
        """A random order of ``range(n)`` as a device integer array: each epoch's shuffle, drawn from ``rng``.

        Here it is drawn on the host and copied over; GPU backends draw it on the device from a seed taken from
        ``rng``, so only the seed crosses the bus. Either way ``rng``'s state alone fixes the order, so a resumed
        run replays it.
        """
        return self.asarray(rng.permutation(n))

    def describe(self) -> str:
        """One line for logs and ``linclass-gpu info``: the backend and the device it runs on."""
        return self.name
