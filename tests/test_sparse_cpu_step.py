"""The sparse step's compiled runs (backends/sparse_cpu_step.py): bitwise the Python step over the same compiled loops,
one step at a time or a run at once; the float64 oracle checks of the step itself are in test_sparse.py, whose
compiled route now goes through these runs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import awkward_csr, model_targets

from linclass_gpu.backends import cpu_loops, sparse_cpu_step
from linclass_gpu.backends.sparse_backend import SparseNumpyBackend
from linclass_gpu.backends.sparse_cpu_step import CompiledSparseFusedSGD, runs_compiled
from linclass_gpu.backends.sparse_step import MIN_SCALE
from tests.test_sparse import oracle_steps
from tests.tolerances import assert_close

pytestmark = pytest.mark.skipif(not cpu_loops.compiled_loops_enabled(), reason="needs Numba (pip install "
                                                                                "linclass-gpu[cpu])")

N_ROWS, N_FEATURES, BATCH = 37, 29, 7  # odd on purpose: the epoch ends on a batch of 2
SETTINGS = [("sgd", 0.0), ("sgd", 0.05), ("adagrad", 0.0)]  # the modes the runs take: lazy, lazy with L2, rows
MODELS = [("softmax", 5), ("sigmoid", 3), ("sigmoid_mse", 2)]


def steppers(monkeypatch, model, n_outputs, dtype, *, optimizer="sgd", l2=0.0, l1=0.0, momentum=0.0, weights=True,
             fit_intercept=True, seed=0):
    """The data, and two steppers on it from equal parameters: one whose steps run compiled, one taking every step
    through the Python step (the reference)."""
    rng = np.random.default_rng(seed)
    X = awkward_csr(rng, N_ROWS, N_FEATURES, dtype)
    y = model_targets(model, rng, N_ROWS, n_outputs)
    W = (0.3 * rng.normal(size=(N_FEATURES, n_outputs))).astype(dtype)
    b = (0.3 * rng.normal(size=n_outputs)).astype(dtype)
    sample_weight = rng.random(N_ROWS).astype(dtype) if weights else None
    backend = SparseNumpyBackend(compiled=True)

    def stepper():
        return backend.fused_sgd(model, X, y, W, b, max_batch_size=BATCH, l2=l2, l1=l1, momentum=momentum,
                                 x_scale=0.7, sample_weight=sample_weight, optimizer=optimizer,
                                 fit_intercept=fit_intercept)

    runs = stepper()
    with monkeypatch.context() as patch:
        patch.setattr(sparse_cpu_step, "runs_compiled", lambda mode, l1: False)
        reference = stepper()
    return (X, y, W, b, sample_weight), runs, reference


def outcome(stepper):
    """The stepper's state (parameters, optimizer buffers, step count) and the loss sum it pops."""
    return stepper.get_state(), stepper.pop_loss_sum()


def assert_same(actual, expected):
    """Two :func:`outcome` s bitwise equal."""
    for key in expected[0]:
        np.testing.assert_array_equal(actual[0][key], expected[0][key], err_msg=key)
    assert actual[1] == expected[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer, l2", SETTINGS)
@pytest.mark.parametrize("model, n_outputs", MODELS)
@pytest.mark.parametrize("weights, fit_intercept", [(True, True), (False, True), (True, False)])
def test_epochs_equal_the_python_steps_bitwise(monkeypatch, model, n_outputs, optimizer, l2, dtype, weights,
                                               fit_intercept):
    _, runs, reference = steppers(monkeypatch, model, n_outputs, dtype, optimizer=optimizer, l2=l2,
                                  weights=weights, fit_intercept=fit_intercept)
    assert runs._runs and not reference._runs
    rng = np.random.default_rng(1)
    for epoch in range(3):
        rows = rng.permutation(N_ROWS)
        rates = np.linspace(0.6, 0.3, -(-N_ROWS // BATCH)) / (epoch + 1)
        runs.run_epoch(rows, rates, BATCH)
        for step, rate in enumerate(rates):
            reference.step(rows[step * BATCH:(step + 1) * BATCH], float(rate))
    assert_same(outcome(runs), outcome(reference))


@pytest.mark.parametrize("optimizer, l2", SETTINGS)
def test_single_steps_and_split_epochs_equal_whole_epochs(monkeypatch, optimizer, l2):
    """``step`` is a run of one step; an epoch split over several calls (a small work budget) is the same epoch, and
    ``on_steps`` counts every step once."""
    _, whole, _ = steppers(monkeypatch, "softmax", 5, "float32", optimizer=optimizer, l2=l2)
    _, split, single = steppers(monkeypatch, "softmax", 5, "float32", optimizer=optimizer, l2=l2)
    single._runs = True  # the reference stepper, back on the runs: one step per call
    rows, rates = np.random.default_rng(2).permutation(N_ROWS), np.linspace(0.5, 0.1, 6)
    whole.run_epoch(rows, rates, BATCH)
    counts = []
    # A budget of 1 (nonzero, output) pair: one step per call.
    monkeypatch.setattr(sparse_cpu_step, "NONZERO_OUTPUTS_PER_CALL", 1.0)
    split.run_epoch(rows, rates, BATCH, on_steps=counts.append)
    for step, rate in enumerate(rates):
        single.step(rows[step * BATCH:(step + 1) * BATCH], float(rate))
    assert counts == [1] * len(rates)
    expected = outcome(whole)
    for stepper in (split, single):
        assert_same(outcome(stepper), expected)


# (l2 = 1e3 multiplies W by −999 a step: past float32's range within the run, so float64 only.)
@pytest.mark.parametrize("l2, dtype", [(0.9, "float32"), (1.0, "float32"), (0.9, "float64"), (1.0, "float64"),
                                       (1e3, "float64")])
def test_the_scale_folds_in_a_run_as_in_the_python_step(monkeypatch, l2, dtype):
    """Factors 1 − lr·l2 that take |s| out of [MIN_SCALE, 1/MIN_SCALE] (0 and negative ones included) fold it into V
    inside the run: bitwise the Python step, and within the oracle's tolerance."""
    (X, y, W, b, weights), runs, reference = steppers(monkeypatch, "softmax", 5, dtype, l2=l2)
    n_steps = int(np.ceil(np.log(MIN_SCALE) / np.log(0.1))) + 4
    rng = np.random.default_rng(3)
    batches = [rng.permutation(N_ROWS)[:5] for _ in range(n_steps)]
    runs.run_epoch(np.concatenate(batches), np.ones(n_steps), 5)
    for rows in batches:
        reference.step(rows, 1.0)
    assert_same(outcome(runs), outcome(reference))
    expected_W, expected_b = oracle_steps("softmax", X, y, W, b, batches, [1.0] * n_steps, optimizer="sgd",
                                          momentum=0.0, nesterov=False, l2=l2, l1=0.0, x_scale=0.7, weights=weights)
    W_fit, b_fit = runs.get_params()
    assert_close(W_fit, expected_W, dtype, 5 * n_steps, "W")
    assert_close(b_fit, expected_b, dtype, 5 * n_steps, "b")


@pytest.mark.parametrize("optimizer, momentum, l2, l1", [("sgd", 0.0, 0.05, 0.02), ("sgd", 0.9, 0.0, 0.0),
                                                          ("adagrad", 0.0, 0.05, 0.0), ("adam", 0.0, 0.0, 0.0)])
def test_other_settings_take_the_python_step(monkeypatch, optimizer, momentum, l2, l1):
    """L1 (its lazy catch-up) and the modes that move every row every step are not run compiled; their epochs are
    the Python step's."""
    _, stepper, reference = steppers(monkeypatch, "softmax", 5, "float32", optimizer=optimizer, momentum=momentum,
                                     l2=l2, l1=l1)
    assert isinstance(stepper, CompiledSparseFusedSGD)
    assert not runs_compiled(stepper.mode, stepper.l1) and not stepper._runs
    rows, rates = np.random.default_rng(4).permutation(N_ROWS), np.linspace(0.3, 0.1, 6)
    stepper.run_epoch(rows, rates, BATCH)
    for step, rate in enumerate(rates):
        reference.step(rows[step * BATCH:(step + 1) * BATCH], float(rate))
    assert_same(outcome(stepper), outcome(reference))
