"""Float64 NumPy reference for every loss, gradient and SGD step in the package.

This module is the truth the backends and kernels are tested against, so it is written for clarity: straight from
the formulas, float64 throughout, NumPy only, no fusion and no tricks beyond the two that numerical stability needs
(subtract the row max before ``exp`` in log-sum-exp; only ever take ``exp`` of a non-positive number in the sigmoid
and the binary cross-entropy). It is never selected as a backend.

Shapes: ``N`` rows, ``D`` features, ``C`` classes. Labels are integer class ids in ``[0, C)`` for the softmax model
and ``{0, 1}`` for the binary sigmoid model (mapping other label values happens in the estimators).

Sample weights ``w_i ≥ 0`` (``None``: every ``w_i = 1``) weight each row's loss: the mean loss is
``(1/N) Σ_i w_i ℓ_i``, divided by the row count ``N``, not by ``Σ_i w_i`` (as scikit-learn's SGD does; see
:meth:`linclass_gpu.backends.base.Backend.fused_sgd`), so its gradient with respect to row ``i``'s logits is
``w_i ∂ℓ_i/∂z_i / N``.
"""

from __future__ import annotations

import numpy as np

from .backends.base import ADAGRAD_EPS, ADAM_BETAS, ADAM_EPS, MODELS, check_optimizer

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


def binary_cross_entropy_with_logits(z, y, sample_weight=None):
    """Mean (weighted) binary cross-entropy of ``σ(z)`` against targets in {0, 1}, computed from the logits.

    Parameters
    ----------
    z : array_like, shape (N,)
        Logits.
    y : array_like, shape (N,)
        Targets in {0, 1}.
    sample_weight : array_like, shape (N,), optional
        ``w_i``; ``None`` is 1 for every row.

    Returns
    -------
    float
        ``(1/N) Σ_i w_i · (max(z_i, 0) − z_i y_i + log1p(exp(−|z_i|)))``, the row loss being
        ``−y log σ(z) − (1 − y) log(1 − σ(z))`` without ever forming ``log σ(z)`` (that is ``−inf`` once ``σ``
        rounds to 0).
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    per_row_loss = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))  # max(z,0) − z·y + log1p(e^{−|z|})
    return float((_row_weights(sample_weight, len(z)) * per_row_loss).mean())  # (1/N) Σ_i w_i ℓ_i


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


def sigmoid_loss_grad(X, y, w, b, x_scale=1.0, sample_weight=None):
    """Mean (weighted) binary cross-entropy of logistic regression (from logits) and its gradients.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like, shape (N,)
        Targets in {0, 1}.
    w : array_like, shape (D,)
    b : float
    x_scale : float
    sample_weight : array_like, shape (N,), optional
        ``w_i ≥ 0``; ``None`` is 1 for every row.

    Returns
    -------
    loss : float
        ``(1/N) Σ_i w_i · (max(z_i, 0) − z_i y_i + log1p(exp(−|z_i|)))`` with ``z = x_scale · X w + b``.
    dw : ndarray, shape (D,)
        ``x_scale · Xᵀ dz`` with ``dz_i = w_i (σ(z_i) − y_i) / N``.
    db : float
        ``Σ_i dz_i``.
    """
    y = np.asarray(y, dtype=np.float64)
    z = _linear_forward(X, w, b, x_scale)  # z = x_scale · X w + b, (N,)
    weights = _row_weights(sample_weight, len(z))
    dz = weights * (sigmoid(z) - y) / len(z)  # ∂((1/N) Σ w_i BCE_i)/∂z_i = w_i (σ(z_i) − y_i) / N
    dw, db = _linear_backward(X, dz, x_scale)
    return binary_cross_entropy_with_logits(z, y, sample_weight), dw, float(db)


def sigmoid_mse_loss_grad(X, y, w, b, x_scale=1.0, sample_weight=None):
    """Mean squared error of the sigmoid model's probabilities and its gradients (for teaching, not for training).

    The gradient carries the factor ``σ(z)(1 − σ(z))``, which goes to 0 as ``|z|`` grows: a confidently *wrong*
    prediction (``σ ≈ 1`` with ``y = 0``, or ``σ ≈ 0`` with ``y = 1``) gets almost no gradient, so MSE learns
    slowest exactly where it is most wrong. Cross-entropy's gradient ``σ(z) − y`` has no such factor.

    Parameters
    ----------
    X : array_like, shape (N, D)
    y : array_like, shape (N,)
        Targets in {0, 1}.
    w : array_like, shape (D,)
    b : float
    x_scale : float
    sample_weight : array_like, shape (N,), optional
        ``w_i ≥ 0``; ``None`` is 1 for every row.

    Returns
    -------
    loss : float
        ``(1/N) Σ_i w_i (σ(z_i) − y_i)²`` with ``z = x_scale · X w + b``.
    dw : ndarray, shape (D,)
        ``x_scale · Xᵀ dz`` with ``dz_i = 2 w_i (σ(z_i) − y_i) σ(z_i) (1 − σ(z_i)) / N``.
    db : float
        ``Σ_i dz_i``.
    """
    y = np.asarray(y, dtype=np.float64)
    z = _linear_forward(X, w, b, x_scale)  # z = x_scale · X w + b, (N,)
    probability = sigmoid(z)
    error = probability - y  # σ(z) − y
    weights = _row_weights(sample_weight, len(z))
    # ∂((1/N) Σ w_i (σ_i − y_i)²)/∂z_i, using σ' = σ(1 − σ)
    dz = 2.0 * weights * error * probability * (1.0 - probability) / len(z)
    dw, db = _linear_backward(X, dz, x_scale)
    return float(np.mean(weights * error**2)), dw, float(db)


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
    model : {"softmax", "sigmoid"}
    X : array_like, shape (B, D)
        The minibatch rows.
    y : array_like, shape (B,)
        Class ids in ``[0, K)`` for softmax, targets in {0, 1} for sigmoid.
    W : array_like, shape (D, K)
        ``K = C`` for softmax, ``K = 1`` for sigmoid.
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
    check_optimizer(optimizer, momentum, nesterov)
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
    elif model == "sigmoid":
        # The binary model is stored as one output column; its loss and gradients are those of w = W[:, 0].
        loss, dw, db_scalar = sigmoid_loss_grad(X, y, W[:, 0], b[0], x_scale, sample_weight)
        dW, db = dw[:, np.newaxis], np.array([db_scalar])
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
