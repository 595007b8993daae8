"""All-vs-all logistic regression: one sigmoid per pair of classes, all trained in the same SGD passes.

The lecture notes name two ways to build a multi-class classifier from binary ones: one-vs-all (one model per class
against the rest: :class:`linclass_gpu.LogisticRegression`) and all-vs-all (one model per pair of classes, each
trained only on its two classes' rows, the class with most pairwise wins predicted). The ``C(C−1)/2`` pairwise models
here share each minibatch's sparse product (:class:`.backends.pairwise_step.PairwiseSparseSGD`): a row reaches the
``C − 1`` models of its class and weighs 0 in the others. Prediction is scikit-learn's ``OneVsOneClassifier``'s:
votes, ties broken by the summed confidences.
"""

from __future__ import annotations

import numpy as np

from .arrays import to_numpy
from .backends.pairwise_step import PairwiseSparseSGD, class_pairs, vote
from .hyperparameters import SGDHyperparameters
from .labels import encode_class_ids
from .training import TrainingHistory, train_sgd
from .validation import NotFittedError, as_sklearn, check_features, check_sample_weight

__all__ = ["OneVsOneLogisticRegression"]


class OneVsOneLogisticRegression(SGDHyperparameters):
    """All-vs-all logistic regression trained by minibatch SGD on the CPU (scipy.sparse or dense rows).

    Model ``k`` of the class pair ``(a_k, b_k)`` (``a_k < b_k`` in the order of ``classes_``) is the binary
    logistic regression ``P(b_k | x, y ∈ {a_k, b_k}) = σ(input_scale·x·coef_[k] + intercept_[k])``, fitted on the
    rows of those two classes alone with the mean loss over them plus the penalty (see
    :mod:`.backends.pairwise_step`: the joint objective is the sum of the standalone ones).

    Parameters
    ----------
    The hyperparameters of :class:`linclass_gpu.SoftmaxRegression` (``epochs``, ``batch_size``, ``learning_rate``,
    ``schedule``, ``alpha``, ``penalty``, ``optimizer``, ``momentum``, ``average``, ``tol`` …); ``backend`` must be
    ``"auto"`` or ``"numpy"`` (the pairwise step runs on NumPy and scipy). Dense ``X`` is trained as CSR (one copy of
    its nonzeros). Not taken here: ``class_weight``, ``early_stopping``, ``warm_start``, checkpoints, ``partial_fit``.

    Attributes
    ----------
    classes_ : ndarray, shape (C,)
    pairs_ : ndarray of int, shape (P, 2)
        Indices into ``classes_`` of each model's two classes, ``P = C(C−1)/2``.
    coef_ : ndarray, shape (P, D)
    intercept_ : ndarray, shape (P,)
    n_iter_ : int
    loss_curve_ : ndarray, shape (n_iter_,)
        The summed pairwise losses per epoch.
    """

    def fit(self, X, y, sample_weight=None):
        """Train every pairwise model from zero weights.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix, shape (N, D)
        y : array-like, shape (N,)
            Class labels of any values, at least two classes.
        sample_weight : array-like, shape (N,), optional

        Returns
        -------
        self
        """
        import scipy.sparse

        from .backends.sparse_backend import SparseNumpyBackend

        if self.backend not in ("auto", "numpy"):
            raise ValueError(f"OneVsOneLogisticRegression trains on backend='numpy' (or 'auto'), not {self.backend!r}")
        if self.class_weight is not None or self.early_stopping or self.warm_start:
            raise ValueError("OneVsOneLogisticRegression takes no class_weight, early_stopping or warm_start")
        dtype, schedule, plateau = self._checked_dtype(), self._checked_schedule(), self._checked_plateau()
        X = check_features(X, dtype=dtype, keep_dtypes=())
        X = X if scipy.sparse.issparse(X) else scipy.sparse.csr_array(to_numpy(X))
        classes, targets = encode_class_ids(y, X.shape[0])
        weights = check_sample_weight(sample_weight, X.shape[0])
        pairs = class_pairs(len(classes))
        (l2, l1), (momentum, nesterov) = self._penalty_strengths(), self._momentum()
        backend = SparseNumpyBackend()
        stepper = PairwiseSparseSGD(backend, X, targets, len(classes), np.zeros((X.shape[1], len(pairs)), dtype),
                                    np.zeros(len(pairs), dtype), l2=l2, l1=l1, momentum=momentum, nesterov=nesterov,
                                    fit_intercept=self.fit_intercept, x_scale=self.input_scale,
                                    sample_weight=None if weights is None else weights.astype(dtype),
                                    optimizer=self.optimizer)
        rng = np.random.default_rng(self.random_state)
        history = train_sgd(stepper, backend, X.shape[0], epochs=self.epochs, batch_size=self._batch_rows(X.shape[0]),
                            schedule=schedule, rng=rng, shuffle=self.shuffle, progress=self.progress,
                            history=TrainingHistory(), plateau=plateau, average_from=self._average_from())
        W, b = history.model_params(stepper.get_params())
        self.classes_, self.pairs_ = classes, pairs
        self.coef_, self.intercept_ = W.T.copy(), b.copy()
        self.n_features_in_ = X.shape[1]
        self.loss_curve_ = np.asarray(history.loss)
        self.n_iter_ = len(history.loss)
        return self

    def _pairwise_decisions(self, X) -> np.ndarray:
        """Each pairwise model's logit, shape (N, P); > 0 votes for the pair's second class."""
        from .backends.sparse_backend import SparseNumpyBackend

        if not hasattr(self, "coef_"):
            raise as_sklearn(NotFittedError, "NotFittedError")(
                f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")
        X = check_features(X, dtype=self._checked_dtype(), n_features=self.n_features_in_,
                           estimator=type(self).__name__, keep_dtypes=())
        backend = SparseNumpyBackend()
        return to_numpy(backend.decision_function(backend.asarray(X), self.coef_.T, self.intercept_,
                                                  self.input_scale))

    def decision_function(self, X):
        """Votes plus squashed confidences per class, shape (N, C), as scikit-learn's ``OneVsOneClassifier``."""
        return vote(self._pairwise_decisions(X), self.pairs_, len(self.classes_))

    def predict(self, X):
        """The class with the most pairwise wins (ties: the larger summed confidence), shape (N,)."""
        scores = self.decision_function(X)  # checks that the model is fitted
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean (weighted) accuracy of :meth:`predict` against ``y``."""
        predicted = self.predict(X)
        _, expected = encode_class_ids(y, len(predicted), self.classes_)
        weights = check_sample_weight(sample_weight, len(expected))
        return float(np.average(self.classes_[expected] == predicted, weights=weights))
