"""Row-wise math of the two models, written once for any array module (NumPy or CuPy): probabilities, losses
and the gradient of the loss with respect to the logits.

Both loss functions take the logits ``Z`` of a minibatch, the model's ``targets`` and optional per-row weights ``w``
(``None``: every ``w_i = 1``, at no cost) and overwrite ``Z`` in place with ``w_i (P_i − Y_i)`` (the gradient of the
weighted summed loss ``Σ_i w_i ℓ_i`` with respect to the logits), returning that sum. Working in place on one
preallocated buffer is what keeps the training step free of allocations of the size of the logits.
"""

from __future__ import annotations

from typing import Any


def weighted_sum(values: Any, weights: Any) -> Any:
    """``Σ_i w_i v_i`` over a (B,) array, or ``Σ_i v_i`` when ``weights`` is None; a 0-d array."""
    return values.sum() if weights is None else values @ weights


def softmax_cross_entropy_(xp, Z: Any, targets: Any, weights: Any = None) -> Any:
    """Turn logits into ``w_i (softmax(z_i) − onehot(y_i))`` in place; return the weighted summed cross-entropy.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    Z : array, shape (B, C), C- or F-contiguous
        Logits; overwritten with ``w_i (P_i − Y_i)``. F-contiguous is the classes-major layout (a (C, B) array seen
        through its transpose), in which NumPy's reductions over a row's C logits run along the long B axis.
    targets : integer array, shape (B,)
        Flat index of each row's target logit in ``Z``'s memory: ``i·C + y_i`` (C-contiguous) or ``y_i·B + i``
        (F-contiguous).
    weights : array, shape (B,), optional
        ``w_i``, same float dtype as ``Z``; ``None`` is 1 for every row.

    Returns
    -------
    0-d array
        ``Σ_i w_i (logsumexp(z_i) − z_{i, y_i})``.
    """
    flat = Z.reshape(-1, order="A")  # a view in memory order, for either layout
    # 1. Subtract the row max: logsumexp(z) = m + log Σ exp(z − m), and exp(z − m) <= 1 never overflows.
    Z -= Z.max(axis=1, keepdims=True)
    # 2. Cross-entropy per row: −log p_y = log Σ exp(z − m) − (z_y − m).
    target_logit = flat[targets]
    xp.exp(Z, out=Z)
    row_sum = Z.sum(axis=1, keepdims=True)
    row_loss = xp.log(row_sum[:, 0])
    row_loss -= target_logit
    # 3. dL/dz = softmax(z) − onehot(y), times w_i for row i (the derivative of w_i·CE_i).
    Z /= row_sum
    flat[targets] -= 1
    if weights is not None:
        Z *= weights[:, None]
    return weighted_sum(row_loss, weights)


def _row_sums(xp, elementwise: Any) -> Any:
    """``Σ_k v_ik`` of a (B, K) array as (B,); the single column itself when ``K = 1`` (no reduction launched)."""
    return elementwise[:, 0] if elementwise.shape[1] == 1 else elementwise.sum(axis=1)


def _stable_sigmoid(xp, Z: Any) -> tuple[Any, Any]:
    """``(σ(Z), e^{−|Z|})`` elementwise, taking ``exp`` of non-positive numbers only (nothing overflows).

    σ(z) = 1/(1+e^{−|z|}) for z >= 0 and e^{−|z|}/(1+e^{−|z|}) for z < 0: both forms are stable.
    """
    exp_neg_abs = xp.exp(-xp.abs(Z))  # in (0, 1]
    return xp.where(Z >= 0, 1, exp_neg_abs) / (1 + exp_neg_abs), exp_neg_abs


def sigmoid_binary_cross_entropy_(xp, Z: Any, targets: Any, weights: Any = None) -> Any:
    """Turn logits into ``w_i (σ(z_ik) − y_ik)`` in place; return the weighted summed binary cross-entropy.

    Parameters
    ----------
    xp : module
    Z : array, shape (B, K)
        Logits of ``K`` independent sigmoids (``K = 1``: binary); overwritten with ``w_i (σ(z_ik) − y_ik)``.
    targets : array, shape (B, K)
        Targets in {0, 1}, same float dtype as ``Z``.
    weights : array, shape (B,), optional
        ``w_i``, same float dtype as ``Z``; ``None`` is 1 for every row.

    Returns
    -------
    0-d array
        ``Σ_i w_i Σ_k (max(z,0) − z·y + log1p(exp(−|z|)))``: log σ(z) is never formed, so no log(0) for |z| large.
    """
    probability, exp_neg_abs = _stable_sigmoid(xp, Z)
    loss_sum = weighted_sum(_row_sums(xp, xp.maximum(Z, 0) - Z * targets + xp.log1p(exp_neg_abs)), weights)
    xp.subtract(probability, targets, out=Z)  # ∂BCE/∂z = σ(z) − y
    if weights is not None:
        Z *= weights[:, None]  # the derivative of w_i·BCE_i
    return loss_sum


def sigmoid_squared_error_(xp, Z: Any, targets: Any, weights: Any = None) -> Any:
    """Turn logits into ``2 w_i (σ(z_ik) − y_ik) σ(z_ik)(1 − σ(z_ik))`` in place; return ``Σ_i w_i Σ_k (σ − y)²``.

    Shapes as in :func:`sigmoid_binary_cross_entropy_`. The factor ``σ(1 − σ)`` is ``σ'``; it vanishes for large
    ``|z|``, which is why MSE under a sigmoid learns slowly where it is confidently wrong.
    """
    probability, exp_neg_abs = _stable_sigmoid(xp, Z)
    xp.subtract(probability, targets, out=Z)  # σ − y
    loss_sum = weighted_sum(_row_sums(xp, Z * Z), weights)
    # ∂(σ − y)²/∂z = 2(σ − y)σ'; σ' = σ(1 − σ) = e^{−|z|}/(1 + e^{−|z|})², the form that keeps its digits where σ
    # rounds to 1 (σ(1 − σ) is 0 in float32 from |z| ≈ 17).
    Z *= 2 * exp_neg_abs / (1 + exp_neg_abs) ** 2
    if weights is not None:
        Z *= weights[:, None]
    return loss_sum


def log_softmax(xp, Z: Any) -> Any:
    """Row-wise ``log softmax(Z) = Z − m − log Σ exp(Z − m)`` with ``m`` the row max, shape (N, C) -> (N, C).

    The binary model's class log-probabilities are ``log_softmax([0, z])``: ``[log(1 − σ(z)), log σ(z)]``.
    """
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


ROW_LOSSES = {"softmax": softmax_cross_entropy_, "sigmoid": sigmoid_binary_cross_entropy_,
              "sigmoid_mse": sigmoid_squared_error_}
