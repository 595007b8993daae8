"""All-vs-all (one-vs-one) logistic regression: the ``P = C(C−1)/2`` pairwise sigmoids trained in the same passes.

Output ``k`` is the binary model of the class pair ``(a_k, b_k)``, ``a_k < b_k``: ``P(b_k | x, class ∈ {a_k, b_k}) =
σ(z_k)``. A row of class ``c`` reaches the ``C − 1`` outputs whose pair holds ``c`` (target 1 when ``c = b_k``, 0 when
``c = a_k``) and weighs 0 in the others, so each output sees exactly its two classes' rows. Each output's loss is
divided by its pair's share of the rows, ``N_k/N``:

    L_k = (1/N) Σ_i [c_i ∈ pair k] (N/N_k) w_i ℓ(z_ik, y_ik) = (1/N_k) Σ_{i ∈ pair k} w_i ℓ(z_ik, y_ik),

the mean loss of a binary model trained alone on the ``N_k`` rows of its two classes. With the same penalty the
joint objective is the sum of the ``P`` standalone objectives over disjoint columns of ``W``: the pairs share the
passes over ``X`` (one sparse product per step for all of them) and nothing else. A full-batch step is exactly each
standalone model's full-batch step; a minibatch step is, in expectation over the shuffle, its standalone step scaled
by the pair's batch share.
"""

from __future__ import annotations

import numpy as np

from .sparse_step import SparseFusedSGD


def class_pairs(n_classes: int) -> np.ndarray:
    """The ``(a, b)`` class pairs with ``a < b``, in scikit-learn's ``OneVsOneClassifier`` order, shape (P, 2)."""
    first, second = np.triu_indices(n_classes, k=1)
    return np.stack([first, second], axis=1)


def pair_tables(pairs: np.ndarray, n_classes: int, class_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class and output: the target and the loss weight of a row of that class.

    Parameters
    ----------
    pairs : int ndarray, shape (P, 2)
    n_classes : int
    class_counts : ndarray, shape (C,)
        Rows of each class in the training data.

    Returns
    -------
    targets : ndarray, shape (C, P)
        1 for class ``b_k``, 0 otherwise.
    weights : ndarray, shape (C, P)
        ``N/N_k`` for the classes of pair ``k`` (``N_k`` their rows), 0 for the others and for a pair without rows.
    """
    classes = np.arange(n_classes)[:, None]
    first, second = pairs[:, 0], pairs[:, 1]
    pair_rows = class_counts[first] + class_counts[second]
    share = np.divide(class_counts.sum(), pair_rows, out=np.zeros(len(pairs)), where=pair_rows > 0)
    weights = ((classes == first) | (classes == second)) * share
    return (classes == second).astype(np.float64), weights


class PairwiseSparseSGD(SparseFusedSGD):
    """The fused step of the ``P`` pairwise sigmoids over CSR rows (see the module notes).

    Parameters
    ----------
    backend, X, W, b, and the keyword parameters
        As :class:`.SparseFusedSGD` (``W`` (D, P), ``b`` (P,)); the model is the sigmoid with cross-entropy.
    classes : int ndarray, shape (N,)
        Each row's class id in ``[0, C)``.
    n_classes : int
        ``C``.
    """

    def __init__(self, backend, X, classes: np.ndarray, n_classes: int, W: np.ndarray, b: np.ndarray, **options):
        super().__init__(backend, "sigmoid", X, np.asarray(classes, dtype=np.int64), W, b, **options)
        self.pairs = class_pairs(n_classes)
        if len(self.pairs) != self.n_outputs:
            raise ValueError(f"{n_classes} classes make {len(self.pairs)} pairs, but W has {self.n_outputs} columns")
        counts = np.bincount(self._y, minlength=n_classes)
        targets, weights = pair_tables(self.pairs, n_classes, counts)
        self._class_targets, self._class_weights = targets.astype(self._V.dtype), weights.astype(self._V.dtype)

    def _logits_to_grad_(self, rows: np.ndarray, Z: np.ndarray) -> np.ndarray:
        batch_classes = self._y[rows]
        targets = self._class_targets[batch_classes]  # (B, P)
        weights = self._class_weights[batch_classes]  # (B, P): 0 outside the row's C − 1 pairs
        if self._sample_weight is not None:
            weights *= self._sample_weight[rows][:, None]
        Z *= self._scale * self.x_scale
        Z += self.b
        # BCE from the logits: log(1 + e^z) − z·y, with log(1 + e^z) = logaddexp(0, z) (never exp of a large z).
        softplus = np.logaddexp(0, Z)
        self._loss_sum += float(np.sum(weights * (softplus - Z * targets), dtype=np.float64))
        # ∂/∂z = σ(z) − y, σ(z) = exp(z − log(1 + e^z)), an exp of a non-positive number.
        np.exp(Z - softplus, out=Z)
        Z -= targets
        Z *= weights
        Z *= 1.0 / len(rows)
        db = Z.sum(axis=0)
        if self.x_scale != 1.0:
            Z *= self.x_scale
        return db


def vote(decisions: np.ndarray, pairs: np.ndarray, n_classes: int) -> np.ndarray:
    """Votes plus confidences, as scikit-learn's ``OneVsOneClassifier.decision_function``, shape (N, C).

    Output ``k`` votes for ``b_k`` where its logit is > 0 and for ``a_k`` otherwise; each class's summed confidence
    (``+z_k`` for ``b_k``, ``−z_k`` for ``a_k``) is squashed into (−1/3, 1/3) by ``s / (3(|s| + 1))`` and added, so it
    only breaks ties between equal vote counts.

    Parameters
    ----------
    decisions : ndarray, shape (N, P)
    pairs : int ndarray, shape (P, 2)
    n_classes : int
    """
    n_rows = len(decisions)
    votes = np.zeros((n_rows, n_classes))
    confidence = np.zeros((n_rows, n_classes))
    for k, (first, second) in enumerate(pairs):
        wins_second = decisions[:, k] > 0
        votes[:, second] += wins_second
        votes[:, first] += ~wins_second
        confidence[:, second] += decisions[:, k]
        confidence[:, first] -= decisions[:, k]
    return votes + confidence / (3 * (np.abs(confidence) + 1))
