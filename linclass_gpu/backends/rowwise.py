"""Row-wise math of the two models, written once for any array module (NumPy or CuPy): probabilities, losses
and the gradient of the loss with respect to the logits.

Both loss functions take the logits ``Z`` of a minibatch and the model's ``targets`` and overwrite them in place with ``P − Y`` (the gradient of the
summed loss with respect to the logits), returning the summed loss. Working in place on one preallocated buffer is
what keeps the training step free of allocations of the size of the logits.
"""

from __future__ import annotations

from typing import Any


def softmax_cross_entropy_(xp, Z: Any, targets: Any) -> Any:
    """Turn logits into ``softmax(Z) − onehot(y)`` in place; return the summed cross-entropy.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    Z : array, shape (B, C), C-contiguous
        Logits; overwritten with ``P − Y``.
    targets : integer array, shape (B,)
        Flat indices ``i·C + y_i`` of each row's target logit in ``Z.ravel()`` (see :func:`softmax_targets`).

    Returns
    -------
    0-d array
        ``Σ_i logsumexp(z_i) − z_{i, y_i}``.
    """
    flat = Z.reshape(-1)
    # 1. Subtract the row max: logsumexp(z) = m + log Σ exp(z − m), and exp(z − m) <= 1 never overflows.
    Z -= Z.max(axis=1, keepdims=True)
    # 2. Cross-entropy per row: −log p_y = log Σ exp(z − m) − (z_y − m).
    target_logit = flat[targets]
    xp.exp(Z, out=Z)
    row_sum = Z.sum(axis=1, keepdims=True)
    loss_sum = xp.log(row_sum).sum() - target_logit.sum()
    # 3. dL/dz = softmax(z) − onehot(y).
    Z /= row_sum
    flat[targets] -= 1
    return loss_sum


def sigmoid_binary_cross_entropy_(xp, Z: Any, targets: Any) -> Any:
    """Turn logits into ``σ(Z) − y`` in place; return the summed binary cross-entropy from logits.

    Parameters
    ----------
    xp : module
    Z : array, shape (B, 1)
        Logits; overwritten with ``σ(z) − y``.
    targets : array, shape (B,)
        Labels in {0, 1}, same float dtype as ``Z``.

    Returns
    -------
    0-d array
        ``Σ_i max(z,0) − z·y + log1p(exp(−|z|))``: log σ(z) is never formed, so no log(0) for |z| large.
    """
    z = Z[:, 0]
    exp_neg_abs = xp.exp(-xp.abs(z))  # in (0, 1]: never overflows
    loss_sum = (xp.maximum(z, 0) - z * targets + xp.log1p(exp_neg_abs)).sum()
    # σ(z) = 1/(1+e^{−|z|}) for z >= 0 and e^{−|z|}/(1+e^{−|z|}) for z < 0: both forms stable.
    probability = xp.where(z >= 0, 1, exp_neg_abs) / (1 + exp_neg_abs)
    xp.subtract(probability, targets, out=z)
    return loss_sum


def log_softmax(xp, Z: Any) -> Any:
    """Row-wise ``log softmax(Z) = Z − m − log Σ exp(Z − m)`` with ``m`` the row max, shape (N, C) -> (N, C).

    The binary model's class log-probabilities are ``log_softmax([0, z])``: ``[log(1 − σ(z)), log σ(z)]``.
    """
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


ROW_LOSSES = {"softmax": softmax_cross_entropy_, "sigmoid": sigmoid_binary_cross_entropy_}
