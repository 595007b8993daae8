"""Float64 NumPy reference for every loss, gradient and SGD step in the package.

This module is the truth the backends and kernels are tested against, so it is written for clarity: straight from
the formulas, float64 throughout, NumPy only, no fusion and no tricks beyond the two that numerical stability needs
(subtract the row max before ``exp`` in log-sum-exp; only ever take ``exp`` of a non-positive number in the sigmoid
and the binary cross-entropy). It is never selected as a backend.

Shapes: ``N`` rows, ``D`` features, ``C`` classes, ``K`` outputs of the sigmoid model. Labels are integer class ids in
``[0, C)`` for the softmax model and ``{0, 1}`` targets for the sigmoid model: one column (binary, ``w`` (D,)), or an
indicator matrix (N, K) with ``W`` (D, K) for ``K`` independent sigmoids (multilabel, or one-vs-rest with
``Y_ik = [y_i = k]``), whose losses add up over the ``K`` outputs of a row (mapping other label values happens in the
estimators).

Sample weights ``w_i ≥ 0`` (``None``: every ``w_i = 1``) weight each row's loss: the mean loss is
``(1/N) Σ_i w_i ℓ_i``, divided by the row count ``N``, not by ``Σ_i w_i`` (as scikit-learn's SGD does; see
:meth:`linclass_gpu.backends.base.Backend.fused_sgd`), so its gradient with respect to row ``i``'s logits is
``w_i ∂ℓ_i/∂z_i / N``.
"""

from __future__ import annotations

import numpy as np

# The oracle's own constants, written here and nowhere else: a reference checks the backends, so it shares no code
# with them (tests/test_oracle.py asserts that these equal linclass_gpu.backends.base's).
# The models sgd_step computes: softmax cross-entropy, sigmoid binary cross-entropy, sigmoid squared error.
MODELS = ("softmax", "sigmoid", "sigmoid_mse")
# The update rules sgd_step computes.
OPTIMIZERS = ("sgd", "adagrad", "adam")
# AdaGrad's ε in p ← p − lr·g/(√G + ε), PyTorch's default.
ADAGRAD_EPS = 1e-10
# Adam's (β₁, β₂) and ε, PyTorch's (and the paper's) defaults.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

__all__ = [
    "sigmoid",
    "log_softmax",
    "softmax",
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "softmax_loss_grad",
    "sigmoid_loss_grad",
    "sigmoid_mse_loss_grad",
    "soft_threshold",
    "sgd_step",
]


def sigmoid(z):
    """Logistic function, stable for logits of either sign.

    Parameters
    ----------
    z : array_like, any shape

    Returns
    -------
    ndarray, same shape as ``z``
        ``σ(z) = 1 / (1 + e^{−z})`` for ``z ≥ 0`` and ``e^{z} / (1 + e^{z})`` for ``z < 0``: the two forms are equal,
        and each branch only takes ``exp`` of ``−|z| ≤ 0``, so nothing overflows.
    """
    z = np.asarray(z, dtype=np.float64)
    exp_minus_abs_z = np.exp(-np.abs(z))  # e^{−z} where z ≥ 0, e^{z} where z < 0; always in (0, 1]
    return np.where(
        z >= 0,
        1.0 / (1.0 + exp_minus_abs_z),  # 1 / (1 + e^{−z})
        exp_minus_abs_z / (1.0 + exp_minus_abs_z),  # e^{z} / (1 + e^{z})
    )


def log_softmax(Z):
    """Row-wise log-softmax by log-sum-exp with the row max subtracted.

    Parameters
    ----------
    Z : array_like, shape (N, C)
        Logits; ``−inf`` entries (padded classes) get probability 0.

    Returns
    -------
    ndarray, shape (N, C)
        ``log softmax(Z)_ij = Z_ij − m_i − log Σ_k exp(Z_ik − m_i)`` with ``m_i = max_k Z_ik``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    row_max = Z.max(axis=1, keepdims=True)  # m_i; every exp below then has a non-positive argument
    shifted = Z - row_max  # Z_ij − m_i ≤ 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # − log Σ_k exp(Z_ik − m_i)


def softmax(Z):
    """Row-wise softmax.

    Parameters
    ----------
    Z : array_like, shape (N, C)

    Returns
    -------
    ndarray, shape (N, C)
        ``softmax(Z)_ij = exp(Z_ij) / Σ_k exp(Z_ik)``, computed as ``exp(log_softmax(Z))``; rows sum to 1.
    """
    return np.exp(log_softmax(Z))


def _row_weights(sample_weight, n_rows):
    """The per-row weights as float64, shape (N,): ones for ``None``.

    Parameters
    ----------
    sample_weight : array_like, shape (N,), or None
    n_rows : int
        ``N``.

    Returns
    -------
    ndarray, shape (N,)
    """
    if sample_weight is None:
        return np.ones(n_rows)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},), got {weights.shape}")
    return weights


def cross_entropy(Z, y, sample_weight=None):
    """Mean (weighted) cross-entropy of softmax probabilities against integer class ids.

    Parameters
    ----------
    Z : array_like, shape (N, C)
        Logits.
    y : array_like of int, shape (N,)
        Class ids in ``[0, C)`` (never one-hot).
    sample_weight : array_like, shape (N,), optional
        ``w_i``; ``None`` is 1 for every row.

    Returns
    -------
    float
        ``(1/N) Σ_i w_i · (−log softmax(Z)_{i, y_i})``.
    """
    y = np.asarray(y, dtype=np.intp)
    log_probabilities = log_softmax(Z)
    rows = np.arange(len(y))
    weights = _row_weights(sample_weight, len(y))
    return float((weights * -log_probabilities[rows, y]).mean())  # (1/N) Σ_i w_i · (−log softmax(Z)_{i, y_i})


def _weighted_row_mean(sample_weight, elementwise_loss):
    """``(1/N) Σ_i w_i Σ_k ℓ_ik`` of a loss given per row (N,) or per row and output (N, K)."""
    per_row = elementwise_loss.reshape(len(elementwise_loss), -1).sum(axis=1)  # Σ_k ℓ_ik: independent outputs add
    return float((_row_weights(sample_weight, len(per_row)) * per_row).mean())


def binary_cross_entropy_with_logits(z, y, sample_weight=None):
    """Mean (weighted) binary cross-entropy of ``σ(z)`` against targets in {0, 1}, computed from the logits.

    Parameters
    ----------
    z : array_like, shape (N,) or (N, K)
        Logits: one per row, or ``K`` independent outputs per row.
    y : array_like, shape of ``z``
        Targets in {0, 1}.
    sample_weight : array_like, shape (N,), optional
        ``w_i``; ``None`` is 1 for every row.

    Returns
    -------
    float
        ``(1/N) Σ_i w_i Σ_k (max(z_ik, 0) − z_ik y_ik + log1p(exp(−|z_ik|)))``, each term being
        ``−y log σ(z) − (1 − y) log(1 − σ(z))`` without ever forming ``log σ(z)`` (that is ``−inf`` once ``σ``
        rounds to 0).
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    elementwise_loss = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))  # max(z,0) − z·y + log1p(e^{−|z|})
    return _weighted_row_mean(sample_weight, elementwise_loss)


def _linear_forward(X, W, b, x_scale):
    """Logits of the linear model: ``x_scale · X W + b``; ``W`` (D, C) gives (N, C), ``W`` (D,) gives (N,)."""
    X = np.asarray(X, dtype=np.float64)
    return x_scale * (X @ np.asarray(W, dtype=np.float64)) + np.asarray(b, dtype=np.float64)


def _linear_backward(X, dZ, x_scale):
    """Gradients through ``Z = x_scale · X W + b`` from ``dZ = ∂loss/∂Z``: ``dW = x_scale · Xᵀ dZ``, ``db = Σ_rows dZ``.

    ``dZ`` (N, C) gives ``dW`` (D, C) and ``db`` (C,); ``dZ`` (N,) gives ``dW`` (D,) and a 0-d ``db``.
    """
    X = np.asarray(X, dtype=np.float64)
    return x_scale * (X.T @ dZ), dZ.sum(axis=0)


def softmax_loss_grad(X, y, W, b, x_scale=1.0, sample_weight=None):
    """Mean (weighted) cross-entropy of softmax regression and its gradients.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like of int, shape (N,)
        Class ids in ``[0, C)``.
    W : array_like, shape (D, C)
    b : array_like, shape (C,)
    x_scale : float
        The model sees ``x_scale · X`` (1/255 for raw pixels).
    sample_weight : array_like, shape (N,), optional
        ``w_i ≥ 0``; ``None`` is 1 for every row.

    Returns
    -------
    loss : float
        ``(1/N) Σ_i w_i · (−log softmax(Z)_{i, y_i})`` with ``Z = x_scale · X W + b``.
    dW : ndarray, shape (D, C)
        ``x_scale · Xᵀ dZ`` with ``dZ_i = w_i (softmax(Z)_i − onehot(y_i)) / N``.
    db : ndarray, shape (C,)
        ``Σ_i dZ_i``.
    """
    y = np.asarray(y, dtype=np.intp)
    Z = _linear_forward(X, W, b, x_scale)  # Z = x_scale · X W + b, (N, C)
    n_rows, n_classes = Z.shape
    one_hot = np.eye(n_classes)[y]  # Y_ij = [y_i = j]; built here only, never passed in
    weights = _row_weights(sample_weight, n_rows)[:, np.newaxis]  # w_i as a column
    dZ = weights * (softmax(Z) - one_hot) / n_rows  # ∂((1/N) Σ w_i CE_i)/∂Z_i = w_i (P_i − Y_i) / N
    dW, db = _linear_backward(X, dZ, x_scale)
    return cross_entropy(Z, y, sample_weight), dW, db


def _sigmoid_targets(y, z):
    """Targets as float64 in the shape of the logits ``z``, which ``y`` must have ((N,) or (N, K))."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != z.shape:
        raise ValueError(f"targets of shape {y.shape} do not match logits of shape {z.shape}")
    return y


def _row_weight_column(sample_weight, z):
    """``w_i`` shaped to broadcast against logits ``z`` (N,) or (N, K)."""
    weights = _row_weights(sample_weight, len(z))
    return weights if z.ndim == 1 else weights[:, np.newaxis]


def sigmoid_loss_grad(X, y, w, b, x_scale=1.0, sample_weight=None):
    """Mean (weighted) binary cross-entropy of logistic regression (from logits) and its gradients.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like, shape (N,) or (N, K)
        Targets in {0, 1}: one per row, or an indicator matrix for ``K`` independent sigmoids.
    w : array_like, shape (D,) or (D, K)
    b : float or array_like, shape (K,)
    x_scale : float
    sample_weight : array_like, shape (N,), optional
        ``w_i ≥ 0``; ``None`` is 1 for every row.

    Returns
    -------
    loss : float
        ``(1/N) Σ_i w_i Σ_k (max(z_ik, 0) − z_ik y_ik + log1p(exp(−|z_ik|)))`` with ``z = x_scale · X w + b``.
    dw : ndarray, shape of ``w``
        ``x_scale · Xᵀ dz`` with ``dz_ik = w_i (σ(z_ik) − y_ik) / N``.
    db : float, or ndarray of shape (K,)
        ``Σ_i dz_i``.
    """
    z = _linear_forward(X, w, b, x_scale)  # z = x_scale · X w + b, (N,) or (N, K)
    y = _sigmoid_targets(y, z)
    # ∂((1/N) Σ_i w_i Σ_k BCE_ik)/∂z_ik = w_i (σ(z_ik) − y_ik) / N: each output's gradient is its own.
    dz = _row_weight_column(sample_weight, z) * (sigmoid(z) - y) / len(z)
    dw, db = _linear_backward(X, dz, x_scale)
    return binary_cross_entropy_with_logits(z, y, sample_weight), dw, db if z.ndim == 2 else float(db)


def sigmoid_mse_loss_grad(X, y, w, b, x_scale=1.0, sample_weight=None):
    """Mean squared error of the sigmoid model's probabilities and its gradients (for teaching, not for training).

    The gradient carries the factor ``σ(z)(1 − σ(z))``, which goes to 0 as ``|z|`` grows: a confidently *wrong*
    prediction (``σ ≈ 1`` with ``y = 0``, or ``σ ≈ 0`` with ``y = 1``) gets almost no gradient, so MSE learns
    slowest exactly where it is most wrong. Cross-entropy's gradient ``σ(z) − y`` has no such factor.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like, shape (N,) or (N, K)
        Targets in {0, 1}.
    w : array_like, shape (D,) or (D, K)
    b : float or array_like, shape (K,)
    x_scale : float
    sample_weight : array_like, shape (N,), optional
        ``w_i ≥ 0``; ``None`` is 1 for every row.

    Returns
    -------
    loss : float
        ``(1/N) Σ_i w_i Σ_k (σ(z_ik) − y_ik)²`` with ``z = x_scale · X w + b``.
    dw : ndarray, shape of ``w``
        ``x_scale · Xᵀ dz`` with ``dz_ik = 2 w_i (σ(z_ik) − y_ik) σ(z_ik) (1 − σ(z_ik)) / N``.
    db : float, or ndarray of shape (K,)
        ``Σ_i dz_i``.
    """
    z = _linear_forward(X, w, b, x_scale)  # z = x_scale · X w + b, (N,) or (N, K)
    y = _sigmoid_targets(y, z)
    probability = sigmoid(z)
    error = probability - y  # σ(z) − y
    # ∂((1/N) Σ_i w_i Σ_k (σ_ik − y_ik)²)/∂z_ik, using σ' = σ(1 − σ)
    dz = 2.0 * _row_weight_column(sample_weight, z) * error * probability * (1.0 - probability) / len(z)
    dw, db = _linear_backward(X, dz, x_scale)
    return _weighted_row_mean(sample_weight, error**2), dw, db if z.ndim == 2 else float(db)


def _check_optimizer(optimizer, momentum, nesterov):
    """Refuse an unknown ``optimizer``, and momentum with AdaGrad or Adam (they have no velocity)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer != "sgd" and (momentum or nesterov):
        raise ValueError(f"momentum and nesterov apply to optimizer='sgd' only, not {optimizer!r}")


def _momentum_update(param, grad, velocity, learning_rate, momentum, nesterov):
    """One (Nesterov) heavy-ball step: ``v ← μ v + g``; ``param ← param − lr · (g + μ v if nesterov else v)``."""
    new_velocity = momentum * velocity + grad  # v ← μ v + g
    step = grad + momentum * new_velocity if nesterov else new_velocity  # Nesterov looks ahead along the new v
    return param - learning_rate * step, new_velocity  # param ← param − lr · step


def _adagrad_update(param, grad, accumulator, learning_rate):
    """One AdaGrad step: ``G ← G + g²``; ``param ← param − lr · g / (√G + ε)``.

    Returns the new parameter, the new ``G`` and the per-parameter step size ``lr / (√G + ε)`` (for L1's proximal
    step).
    """
    new_accumulator = accumulator + grad**2  # G ← G + g²
    step_size = learning_rate / (np.sqrt(new_accumulator) + ADAGRAD_EPS)  # lr / (√G + ε), one per entry
    return param - step_size * grad, new_accumulator, step_size


def _adam_update(param, grad, first_moment, second_moment, learning_rate, step_count):
    """One Adam step (PyTorch's): ``m ← β₁ m + (1 − β₁) g``; ``v ← β₂ v + (1 − β₂) g²``;
    ``param ← param − s · m / (1 − β₁ᵗ)`` with the per-parameter step ``s = lr / (√(v / (1 − β₂ᵗ)) + ε)``.

    Returns the new parameter, ``m``, ``v`` and ``s`` (for L1's proximal step).
    """
    beta1, beta2 = ADAM_BETAS
    first_moment = beta1 * first_moment + (1 - beta1) * grad  # m ← β₁ m + (1 − β₁) g
    second_moment = beta2 * second_moment + (1 - beta2) * grad**2  # v ← β₂ v + (1 − β₂) g²
    m_hat = first_moment / (1 - beta1**step_count)  # bias-corrected: the moments start at 0
    v_hat = second_moment / (1 - beta2**step_count)
    step_size = learning_rate / (np.sqrt(v_hat) + ADAM_EPS)
    return param - step_size * m_hat, first_moment, second_moment, step_size


def soft_threshold(param, threshold):
    """The proximal operator of ``threshold · ‖p‖₁``: ``sign(p) · max(|p| − threshold, 0)``.

    Parameters
    ----------
    param : ndarray, any shape
    threshold : float or ndarray broadcastable to ``param``
        ``lr · l1`` (one step size for plain SGD, one per entry for AdaGrad), ``≥ 0``.

    Returns
    -------
    ndarray, same shape
        Every entry moved ``threshold`` towards 0, and set to exactly 0 where it would cross it.
    """
    return np.sign(param) * np.maximum(np.abs(param) - threshold, 0.0)


def sgd_step(
    model,
    X,
    y,
    W,
    b,
    velocity_W,
    velocity_b,
    *,
    learning_rate,
    l2=0.0,
    l1=0.0,
    momentum=0.0,
    nesterov=False,
    fit_intercept=True,
    x_scale=1.0,
    sample_weight=None,
    optimizer="sgd",
    accumulator_W=None,
    accumulator_b=None,
    step_count=None,
):
    """One minibatch step with L2, L1 (proximal) and (Nesterov) momentum SGD, AdaGrad or Adam: the reference for
    the fused steps.

    Pure: the inputs are not modified; the updated parameters and velocities are new arrays.

    Parameters
    ----------
    model : {"softmax", "sigmoid", "sigmoid_mse"}
        Softmax with cross-entropy, or ``K`` independent sigmoids with binary cross-entropy or squared error.
    X : array_like, shape (B, D)
        The minibatch rows.
    y : array_like, shape (B,) or (B, K)
        Class ids in ``[0, K)`` for softmax; targets in {0, 1} for the sigmoid models, (B,) when ``K = 1``.
    W : array_like, shape (D, K)
        ``K = C`` for softmax; for sigmoid, 1 (binary) or the number of independent outputs.
    b : array_like, shape (K,)
    velocity_W : array_like, shape (D, K)
        Momentum buffer of ``W`` (zeros at the start of training).
    velocity_b : array_like, shape (K,)
        Momentum buffer of ``b``.
    learning_rate : float
        ``lr``.
    l2 : float
        ``λ``: the gradient ``λ W`` of ``λ/2 · ‖W‖²`` is added to ``dW``; the bias is never penalised.
    l1 : float
        ``λ₁``: the penalty ``λ₁ · ‖W‖₁``, applied to ``W`` only (never the bias) by its proximal step after the
        (momentum) update (see Notes). ``l2`` and ``l1`` both non-zero is the elastic net.
    momentum : float
        ``μ``; 0 is plain SGD.
    nesterov : bool
        Step along ``g + μ v`` instead of ``v``.
    fit_intercept : bool
        When False, ``b`` and ``velocity_b`` are returned unchanged.
    x_scale : float
        The model sees ``x_scale · X``.
    sample_weight : array_like, shape (B,), optional
        The weights ``w_i`` of the minibatch rows; the data gradient is that of ``(1/B) Σ_i w_i ℓ_i``.
    optimizer : {"sgd", "adagrad", "adam"}
        ``"adagrad"`` and ``"adam"`` need ``momentum = 0`` and the accumulators; ``"adam"`` also ``step_count``.
    accumulator_W, accumulator_b : array_like, shapes (D, K) and (K,), optional
        AdaGrad's running sums of squared gradients ``G``, or Adam's second moments ``v`` (zeros at the start of
        training). With Adam, ``velocity_W, velocity_b`` are its first moments ``m``.
    step_count : int, optional
        Adam's ``t`` for this step: 1 for the first step of training.

    Returns
    -------
    loss : float
        Mean (weighted) data loss ``(1/B) Σ_i w_i ℓ_i`` (no penalty term) at the parameters *before* the update.
    W, b, velocity_W, velocity_b : ndarray
        The updated values, shapes as given (the velocities unchanged with AdaGrad).
    accumulator_W, accumulator_b : ndarray
        The updated accumulators; returned only when they are passed (the 5-tuple above stays as it was without).

    Notes
    -----
    ``g_W = dW + λ W``, ``g_b = db``; for each parameter ``v ← μ v + g``, ``step = g + μ v`` if ``nesterov`` else
    ``v``, ``param ← param − lr · step``. Then, with ``l1``, the proximal (soft-thresholding) step of
    ``lr · λ₁ ‖W‖₁``: ``W ← sign(W) · max(|W| − lr · λ₁, 0)``. Proximal rather than the subgradient ``λ₁ sign(W)``
    added to ``g``: the subgradient makes a weight that should be 0 oscillate around it by ``lr · λ₁`` and never
    reach it, while the proximal step sets it to exactly 0, so the model comes out sparse. The velocity holds the
    smooth part of the gradient only.

    AdaGrad instead: ``G ← G + g²``, ``param ← param − lr · g / (√G + ε)`` with ``ε = 1e-10``, per entry, for ``W``
    (``g_W`` with L2) and ``b``; L1's threshold is then per entry too, ``lr · λ₁ / (√G + ε)``. Adam: see
    :func:`_adam_update`; L1's threshold is ``λ₁`` times its per-entry step ``lr / (√v̂ + ε)``.
    """
    _check_optimizer(optimizer, momentum, nesterov)
    return_accumulators = accumulator_W is not None or accumulator_b is not None
    if optimizer != "sgd" and not return_accumulators:
        raise ValueError(f"optimizer={optimizer!r} needs accumulator_W and accumulator_b")
    if optimizer == "adam" and (step_count is None or step_count < 1):
        raise ValueError("optimizer='adam' needs step_count >= 1 (the step's t)")
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    velocity_W = np.asarray(velocity_W, dtype=np.float64)
    velocity_b = np.asarray(velocity_b, dtype=np.float64)
    if model == "softmax":
        loss, dW, db = softmax_loss_grad(X, y, W, b, x_scale, sample_weight)
    elif model in ("sigmoid", "sigmoid_mse"):
        loss_grad = sigmoid_loss_grad if model == "sigmoid" else sigmoid_mse_loss_grad
        targets = np.asarray(y, dtype=np.float64).reshape(len(y), W.shape[1])  # (B,) is the binary model's (B, 1)
        loss, dW, db = loss_grad(X, targets, W, b, x_scale, sample_weight)
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")

    if return_accumulators:
        accumulator_W = np.asarray(accumulator_W, dtype=np.float64)
        accumulator_b = np.asarray(accumulator_b, dtype=np.float64)
    grad_W = dW + l2 * W  # g_W = dW + λ W
    if optimizer == "adagrad":
        W, accumulator_W, step_size_W = _adagrad_update(W, grad_W, accumulator_W, learning_rate)
        velocity_W, velocity_b = velocity_W.copy(), velocity_b.copy()
    elif optimizer == "adam":
        W, velocity_W, accumulator_W, step_size_W = _adam_update(W, grad_W, velocity_W, accumulator_W,
                                                                 learning_rate, step_count)
    else:
        W, velocity_W = _momentum_update(W, grad_W, velocity_W, learning_rate, momentum, nesterov)
        step_size_W = learning_rate
    if l1:
        W = soft_threshold(W, step_size_W * l1)  # prox of step·λ₁‖W‖₁, on W only
    if not fit_intercept:
        b, velocity_b = b.copy(), velocity_b.copy()  # pure: never hand back the caller's own arrays
    elif optimizer == "adagrad":
        b, accumulator_b, _ = _adagrad_update(b, db, accumulator_b, learning_rate)  # g_b = db, no λ
    elif optimizer == "adam":
        b, velocity_b, accumulator_b, _ = _adam_update(b, db, velocity_b, accumulator_b, learning_rate, step_count)
    else:
        b, velocity_b = _momentum_update(b, db, velocity_b, learning_rate, momentum, nesterov)  # g_b = db, no λ
    if return_accumulators:
        return loss, W, b, velocity_W, velocity_b, accumulator_W.copy(), accumulator_b.copy()
    return loss, W, b, velocity_W, velocity_b
