"""The label strategies of linclass_gpu.labels: which one a family picks, the targets each trains on, and how each
reads logits back (log-probabilities against the float64 oracle, predictions, labels)."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu import oracle
from linclass_gpu.labels import (
    SIGMOID_LABELS,
    SOFTMAX_LABELS,
    BinaryLabels,
    ClassIds,
    MultilabelLabels,
    OneVsRest,
    encode_class_ids,
)

LOGITS = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0], [0.0, 0.0, 0.0], [-1e3, 1e3, 0.0]])


@pytest.mark.parametrize("family,y,strategy,n_outputs", [
    (SOFTMAX_LABELS, ["b", "a", "b"], ClassIds, 2),
    (SOFTMAX_LABELS, [3, 1, 2, 3], ClassIds, 3),
    (SIGMOID_LABELS, ["b", "a", "b"], BinaryLabels, 1),
    (SIGMOID_LABELS, [3, 1, 2, 3], OneVsRest, 3),
    (SIGMOID_LABELS, [[1, 0], [1, 1], [0, 0]], MultilabelLabels, 2),
    pytest.param(SIGMOID_LABELS, [[5], [7], [5]], BinaryLabels, 1, id="one-column-is-class-labels",
                 marks=pytest.mark.filterwarnings("ignore:A column-vector y was passed")),
])
def test_each_family_picks_its_strategy_from_the_labels(family, y, strategy, n_outputs):
    labels, targets = family.encode(y, len(y))
    assert type(labels) is strategy and labels.n_outputs == n_outputs
    assert labels.multilabel == (strategy is MultilabelLabels) and len(targets) == len(y)
    assert type(family.strategy(labels.classes, labels.multilabel)) is strategy


def test_softmax_family_refuses_an_indicator_matrix():
    with pytest.raises(ValueError):
        SOFTMAX_LABELS.encode([[1, 0], [0, 1]], 2)


def test_class_ids_encode_sorted_labels_and_need_two_classes():
    classes, targets = encode_class_ids(["z", "a", "z"], 3)
    assert classes.tolist() == ["a", "z"] and targets.tolist() == [1, 0, 1] and targets.dtype == np.int64
    with pytest.raises(ValueError, match="1 class"):
        encode_class_ids([4, 4], 2)
    with pytest.raises(ValueError, match="not among the classes"):
        encode_class_ids([1, 9], 2, classes=np.array([1, 2]))


def test_training_targets_are_indices_or_indicators():
    targets = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(ClassIds(np.arange(3)).training_targets(targets), targets)
    np.testing.assert_array_equal(BinaryLabels(np.arange(2)).training_targets(targets % 2), targets % 2)
    indicator = OneVsRest(np.arange(3)).training_targets(targets)
    assert indicator.dtype == np.uint8
    np.testing.assert_array_equal(indicator, np.eye(3, dtype=np.uint8)[targets])
    given = np.array([[1, 0], [1, 1]], dtype=np.uint8)
    assert MultilabelLabels(np.arange(2)).training_targets(given) is given


def test_log_proba_of_each_strategy_matches_the_oracle():
    softmax = ClassIds(np.arange(3)).log_proba(LOGITS)
    np.testing.assert_allclose(softmax, oracle.log_softmax(LOGITS), rtol=1e-12, atol=1e-12)
    z = LOGITS[:, :1]
    binary = BinaryLabels(np.arange(2)).log_proba(z)
    p = oracle.sigmoid(z[:, 0])
    np.testing.assert_allclose(np.exp(binary), np.stack([1 - p, p], axis=1), rtol=1e-12, atol=1e-300)
    sigmoids = oracle.sigmoid(LOGITS)
    one_vs_rest = OneVsRest(np.arange(3)).log_proba(LOGITS)
    np.testing.assert_allclose(np.exp(one_vs_rest), sigmoids / sigmoids.sum(axis=1, keepdims=True), rtol=1e-12)
    multilabel = MultilabelLabels(np.arange(3)).log_proba(LOGITS)
    np.testing.assert_allclose(np.exp(multilabel), sigmoids, rtol=1e-12, atol=1e-300)
    assert np.isfinite(multilabel).all() and np.isfinite(one_vs_rest).all()  # never log(0) at logits of ±1e3


def test_predictions_read_back_as_labels():
    classes = np.array(["cat", "dog", "eel"])
    assert ClassIds(classes).labels_of(ClassIds(classes).predicted_targets(LOGITS)).tolist() == \
        ["cat", "eel", "cat", "dog"]  # a tie goes to the first class, as argmax does
    binary = BinaryLabels(np.array([-1, 1]))
    assert binary.labels_of(binary.predicted_targets(LOGITS[:, 1:2])).tolist() == [-1, -1, -1, 1]
    multilabel = MultilabelLabels(np.arange(3))
    np.testing.assert_array_equal(multilabel.labels_of(multilabel.predicted_targets(LOGITS)),
                                  [[1, 0, 1], [0, 0, 1], [0, 0, 0], [0, 1, 0]])


def test_decision_output_is_one_score_for_two_classes():
    two = LOGITS[:, :2]
    np.testing.assert_array_equal(ClassIds(np.arange(2)).decision_output(two), two[:, 1] - two[:, 0])
    np.testing.assert_array_equal(BinaryLabels(np.arange(2)).decision_output(two[:, :1]), two[:, 0])
    for strategy in (ClassIds(np.arange(3)), OneVsRest(np.arange(3)), MultilabelLabels(np.arange(3))):
        assert strategy.decision_output(LOGITS) is LOGITS
