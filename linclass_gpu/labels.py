"""Label strategies: how a model turns the user's labels into training targets and its logits back into labels.

One object per strategy, chosen from the model kind and the labels a fit sees:

=========================  ===================  ==========  ======================  ======================
strategy                   labels               outputs K   trained on              predicted
=========================  ===================  ==========  ======================  ======================
:class:`ClassIds`          C >= 2 classes       C           class index (N,)        argmax softmax
:class:`BinaryLabels`      2 classes            1           class index 0/1 (N,)    σ(z) > 1/2
:class:`OneVsRest`         C > 2 classes        C           indicator (N, C) uint8  argmax of σ_k / Σ σ_j
:class:`MultilabelLabels`  indicator (N, L)     L           the indicator itself    σ(z_k) > 1/2 each
=========================  ===================  ==========  ======================  ======================

A :class:`LabelFamily` says which strategies a model kind uses: softmax regression reads class labels only
(:data:`SOFTMAX_LABELS`), logistic regression class labels or an indicator matrix (:data:`SIGMOID_LABELS`).
No training math lives here; the log-probabilities are the host-side reading of a fitted model's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .arrays import to_numpy
from .backends.rowwise import log_softmax
from .validation import check_label_indicator, check_labels, encode_labels


def encode_class_ids(y, n_rows: int, classes: np.ndarray | None = None,
                     name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Check class labels and encode them.

    Parameters
    ----------
    y : array-like, shape (N,)
        Labels of any values (see :func:`~linclass_gpu.validation.check_labels`).
    n_rows : int
        ``N``, the rows of ``X``.
    classes : ndarray, shape (C,), optional
        The known sorted classes to encode against (an unseen label is an error); by default those of ``y``.
    name : str
        What to call ``y`` in messages.

    Returns
    -------
    classes : ndarray, shape (C,)
        The sorted labels, at least 2.
    targets : ndarray of int64, shape (N,)
        Each row's class index.
    """
    classes, targets = encode_labels(check_labels(y, n_rows, name), classes, name)
    if len(classes) < 2:
        raise ValueError(f"{name} has {len(classes)} class ({classes.tolist()}); at least 2 are needed")
    return classes, targets.astype(np.int64)


def _log_sigmoid(logits: np.ndarray) -> np.ndarray:
    """``log σ(z) = −log(1 + e^{−z})``, never ``log(0)``."""
    return -np.logaddexp(0.0, -logits)


class ClassIds:
    """Mutually exclusive classes with one logit each (softmax regression).

    Parameters
    ----------
    classes : ndarray, shape (C,)
        The sorted labels; ``classes[k]`` is the label of logit ``k``.
    """

    multilabel = False

    def __init__(self, classes: np.ndarray):
        self.classes = classes

    @property
    def n_outputs(self) -> int:
        """``K``, the columns of the linear map."""
        return len(self.classes)

    def training_targets(self, targets: np.ndarray) -> np.ndarray:
        """What the backend trains on, from the encoded ``targets`` (N,): here the class indices themselves."""
        return targets

    def decision_output(self, logits: np.ndarray) -> np.ndarray:
        """``decision_function``'s result from the logits (N, K)."""
        # Two classes: one score, as scikit-learn's binary classifiers give, whose sign picks classes_[1] (the
        # log-odds z_1 − z_0, since softmax([z_0, z_1])_1 = σ(z_1 − z_0)).
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def log_proba(self, logits: np.ndarray) -> np.ndarray:
        """Log-probability of each class (N, C) from the logits (N, K)."""
        return log_softmax(np, logits)

    def predicted_targets(self, logits: np.ndarray) -> np.ndarray:
        """The encoded prediction (as the targets are encoded): each row's most probable class index (N,)."""
        return np.argmax(self.log_proba(logits), axis=1)

    def labels_of(self, predicted_targets: np.ndarray) -> np.ndarray:
        """Encoded predictions as the user's labels."""
        return self.classes[predicted_targets]


class BinaryLabels(ClassIds):
    """Two classes and one sigmoid: ``P(classes[1] | x) = σ(z)``, trained on the class index 0/1 (N,)."""

    @property
    def n_outputs(self) -> int:
        return 1

    def decision_output(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0]

    def log_proba(self, logits: np.ndarray) -> np.ndarray:
        # P = σ(z) = softmax([0, z])[1], so the two-class logits are [0, z].
        return log_softmax(np, np.concatenate([np.zeros_like(logits), logits], axis=1))


class OneVsRest(ClassIds):
    """More than two classes, one sigmoid per class trained on ``[y = classes[k]]``; the probabilities are the
    sigmoids normalised to sum to 1, as scikit-learn's ``OneVsRestClassifier`` gives them."""

    def training_targets(self, targets: np.ndarray) -> np.ndarray:
        """The indicator ``Y_ik = [y_i = k]`` (N, C) of the encoded ``targets`` (N,)."""
        return (targets[:, np.newaxis] == np.arange(len(self.classes))).astype(np.uint8)

    def decision_output(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def log_proba(self, logits: np.ndarray) -> np.ndarray:
        # σ_k / Σ_j σ_j, whose log is log_softmax of log σ.
        return log_softmax(np, _log_sigmoid(logits))


class MultilabelLabels(ClassIds):
    """Labels that are not mutually exclusive: an indicator matrix (N, L), one independent sigmoid per label;
    ``classes`` is ``arange(L)`` and a prediction is the (N, L) indicator of ``σ > 1/2``."""

    multilabel = True

    def training_targets(self, targets: np.ndarray) -> np.ndarray:
        """The indicator matrix (N, L) itself."""
        return targets

    def decision_output(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def log_proba(self, logits: np.ndarray) -> np.ndarray:
        return _log_sigmoid(logits)

    def predicted_targets(self, logits: np.ndarray) -> np.ndarray:
        return (logits > 0).astype(np.int64)  # σ(z) > 1/2

    def labels_of(self, predicted_targets: np.ndarray) -> np.ndarray:
        return predicted_targets


@dataclass(frozen=True)
class LabelFamily:
    """The label strategies of one model kind.

    Attributes
    ----------
    for_classes : callable (classes) -> ClassIds
        The strategy for class labels, given the sorted classes.
    reads_indicators : bool
        Whether a 2-D ``y`` of two or more columns is a multilabel indicator matrix (:class:`MultilabelLabels`).
    """

    for_classes: Callable[[np.ndarray], ClassIds]
    reads_indicators: bool

    def encode(self, y, n_rows: int, classes: np.ndarray | None = None,
               name: str = "y") -> tuple[ClassIds, np.ndarray]:
        """The strategy for ``y`` and its encoded targets.

        Parameters
        ----------
        y : array-like, shape (N,), or (N, L) 0/1 indicators where the family reads them
        n_rows : int
        classes : ndarray, optional
            The known classes to encode against (an unseen label, or an indicator whose columns are not
            ``arange(len(classes))``, is an error).
        name : str
            What to call ``y`` in messages.

        Returns
        -------
        strategy : ClassIds
        targets : ndarray, int64 (N,) class indices, or uint8 (N, L) indicators
        """
        if not self.reads_indicators or np.ndim(to_numpy(y)) != 2 or np.shape(y)[1] == 1:
            classes, targets = encode_class_ids(y, n_rows, classes, name)
            return self.for_classes(classes), targets
        indicator = check_label_indicator(y, n_rows, name)
        labels = np.arange(indicator.shape[1])
        if classes is not None and not np.array_equal(classes, labels):
            raise ValueError(f"{name} has {len(labels)} label columns, but the model has classes {classes.tolist()}")
        return MultilabelLabels(labels), indicator

    def strategy(self, classes: np.ndarray, multilabel: bool = False) -> ClassIds:
        """The strategy of a fitted model with these ``classes`` (``multilabel``: fitted on an indicator)."""
        return MultilabelLabels(classes) if multilabel else self.for_classes(classes)


SOFTMAX_LABELS = LabelFamily(ClassIds, reads_indicators=False)
SIGMOID_LABELS = LabelFamily(lambda classes: BinaryLabels(classes) if len(classes) == 2 else OneVsRest(classes),
                             reads_indicators=True)
