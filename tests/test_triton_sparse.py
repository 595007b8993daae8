"""The Triton sparse step (kernels/sparse_sgd.py, backends/triton_sparse.py) against the float64 oracle on the dense
equivalent, under the Triton interpreter on a CPU-only machine.

The CSR matrices are awkward on purpose: odd N, D and K, empty rows, a column repeated within a row (the dense row
holds the sum) and unsorted indices. Each case is small: an interpreted launch costs tens of milliseconds.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Triton kernels need torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode (the interpreter when there is no CUDA device).
kernels = pytest.importorskip("linclass_gpu.kernels", reason="the Triton kernels need triton")

from helpers import awkward_csr, model_targets  # noqa: E402
from tolerances import assert_close  # noqa: E402

from linclass_gpu import oracle  # noqa: E402
from linclass_gpu.backends import triton_sparse  # noqa: E402
from linclass_gpu.backends.triton_sparse import TritonSparseBackend  # noqa: E402
from linclass_gpu.kernels import sparse_sgd  # noqa: E402

DEVICE = "cpu" if kernels.INTERPRET else "cuda"
# (model, K): the softmax, binary logistic regression, K independent sigmoids with BCE and with squared error.
MODELS = [("softmax", 5), ("sigmoid", 1), ("sigmoid", 3), ("sigmoid_mse", 3)]
# Wider outputs: K past the smallest output tile (BLOCK_K 64), and past 1024 (BLOCK_K 2048, 2 rows per program).
WIDE_MODELS = [("softmax", 37), ("sigmoid", 37), ("softmax", 1025)]
ORACLE_LOSS_GRAD = {"softmax": oracle.softmax_loss_grad, "sigmoid": oracle.sigmoid_loss_grad,
                    "sigmoid_mse": oracle.sigmoid_mse_loss_grad}


@pytest.fixture(scope="module")
def backend():
    return TritonSparseBackend()


def dense_steps(model, X, y, W, b, batches, learning_rates, *, l2, x_scale, weights, fit_intercept=True):
    """The oracle's ``(W, b, loss_sum)`` after the same plain-SGD steps on the dense rows, in float64: the summed
    weighted data loss of every step at the parameters before it (what pop_loss_sum returns)."""
    X_dense = X.toarray().astype(np.float64)
    W, b = W.astype(np.float64), b.astype(np.float64)
    loss_sum = 0.0
    for rows, learning_rate in zip(batches, learning_rates):
        loss, W, b, _, _ = oracle.sgd_step(model, X_dense[rows], y[rows], W, b, np.zeros_like(W), np.zeros_like(b),
                                           learning_rate=learning_rate, l2=l2, x_scale=x_scale,
                                           fit_intercept=fit_intercept,
                                           sample_weight=None if weights is None else weights[rows])
        loss_sum += loss * len(rows)
    return W, b, loss_sum


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_rows, n_features", [(37, 29), (1, 1), (17, 3)])
@pytest.mark.parametrize("model, n_outputs", MODELS + WIDE_MODELS)
def test_loss_grad_matches_oracle(model, n_outputs, n_rows, n_features, weighted):
    rng = np.random.default_rng(n_rows * 31 + n_features)
    X = awkward_csr(rng, n_rows, n_features, np.float32, nonzeros_per_row=5)
    y = model_targets(model, rng, n_rows, n_outputs)
    W = rng.normal(size=(n_features, n_outputs)).astype(np.float32)
    b = rng.normal(size=n_outputs).astype(np.float32)
    weights = rng.random(n_rows).astype(np.float32) if weighted else None
    device_y = torch.from_numpy(y if model == "softmax" else y.astype(np.uint8)).to(DEVICE)
    loss_sum, dW, db = sparse_sgd.sparse_loss_grad(
        *(torch.from_numpy(a).to(DEVICE) for a in (X.indptr, X.indices, X.data)), device_y,
        torch.from_numpy(W).to(DEVICE), torch.from_numpy(b).to(DEVICE), model=model, x_scale=0.5,
        sample_weight=None if weights is None else torch.from_numpy(weights).to(DEVICE))
    expected_loss, expected_dW, expected_db = ORACLE_LOSS_GRAD[model](
        X.toarray().astype(np.float64), y, W.astype(np.float64), b.astype(np.float64), 0.5,
        None if weights is None else weights.astype(np.float64))
    assert_close(loss_sum.item() / n_rows, expected_loss, "float32", n_features * n_outputs, "loss")
    assert_close(dW.cpu().numpy(), expected_dW, "float32", n_rows, "dW")
    assert_close(db.cpu().numpy(), expected_db, "float32", n_rows, "db")


@pytest.mark.parametrize("l2, learning_rates", [(0.0, np.linspace(0.5, 0.2, 9)), (0.05, np.linspace(0.5, 0.2, 9)),
                                                (1.0, [1.0, 0.5, 1.0, 0.3]), (30.0, [0.1, 1.0, 0.2])])
@pytest.mark.parametrize("model, n_outputs", MODELS)
def test_steps_match_oracle(backend, model, n_outputs, l2, learning_rates):
    """A few SGD steps with L2 against the dense float64 steps; ``lr·l2 = 1`` (factor 0) and ``lr·l2 > 2`` (a
    negative factor) fold the scale into V."""
    rng = np.random.default_rng(len(learning_rates) + n_outputs)
    n_rows, n_features = 31, 23
    X = awkward_csr(rng, n_rows, n_features, np.float32, nonzeros_per_row=5)
    y = model_targets(model, rng, n_rows, n_outputs)
    W = (0.1 * rng.normal(size=(n_features, n_outputs))).astype(np.float32)
    b = (0.1 * rng.normal(size=n_outputs)).astype(np.float32)
    weights = rng.random(n_rows).astype(np.float32)
    batches = [rng.permutation(n_rows)[:9] for _ in learning_rates[:-1]] + [rng.permutation(n_rows)[:2]]
    stepper = backend.fused_sgd(model, X, y, W, b, max_batch_size=9, l2=l2, x_scale=0.7, sample_weight=weights)
    assert isinstance(stepper, triton_sparse.TritonSparseFusedSGD)
    for rows, learning_rate in zip(batches, learning_rates):
        stepper.step(torch.from_numpy(rows).to(DEVICE), float(learning_rate))
    expected_W, expected_b, expected_loss = dense_steps(model, X, y, W, b, batches, learning_rates, l2=l2,
                                                        x_scale=0.7, weights=weights)
    W_fit, b_fit = stepper.get_params()
    reads = 9 * len(batches)  # the steps' errors add up over every row they read
    assert_close(W_fit, expected_W, "float32", reads, "W")
    assert_close(b_fit, expected_b, "float32", reads, "b")
    assert_close(stepper.pop_loss_sum(), expected_loss, "float32", reads * n_features, "loss")
    assert stepper.pop_loss_sum() == 0.0


def test_bias_without_intercept_and_state_round_trip(backend):
    """``fit_intercept=False`` leaves b alone; get_state mid-run and set_state on a fresh stepper continue the run;
    the step ids wrapping past int32 reset the owner array and change nothing."""
    rng = np.random.default_rng(3)
    X = awkward_csr(rng, 25, 19, np.float32, nonzeros_per_row=5)
    y = model_targets("softmax", rng, 25, 3)
    W, b = np.zeros((19, 3), np.float32), np.full(3, 0.25, np.float32)
    batches = [rng.permutation(25)[:6] for _ in range(6)]

    def fresh():
        return backend.fused_sgd("softmax", X, y, W, b, max_batch_size=6, l2=0.02, fit_intercept=False)

    whole, first, second = fresh(), fresh(), fresh()
    second._step_id = triton_sparse.MAX_STEP_ID - 1
    for rows in batches:
        whole.step(torch.from_numpy(rows).to(DEVICE), 0.4)
    for rows in batches[:3]:
        first.step(torch.from_numpy(rows).to(DEVICE), 0.4)
    second.set_state(first.get_state())
    assert int(second.get_state()["step_count"]) == 3
    for rows in batches[3:]:
        second.step(torch.from_numpy(rows).to(DEVICE), 0.4)
    assert second._step_id == 2  # wrapped
    assert_close(second.get_params()[0], whole.get_params()[0], "float32", 36, "W")
    np.testing.assert_array_equal(whole.get_params()[1], b)
    expected_W, _, _ = dense_steps("softmax", X, y, W, b, batches, [0.4] * 6, l2=0.02, x_scale=1.0, weights=None,
                                     fit_intercept=False)
    assert_close(whole.get_params()[0], expected_W, "float32", 36, "W")


@pytest.mark.parametrize("option, value", [("momentum", 0.5), ("nesterov", True), ("optimizer", "adagrad"),
                                           ("optimizer", "adam"), ("l1", 0.01)])
def test_options_the_kernels_lack_are_refused_by_name(backend, option, value):
    rng = np.random.default_rng(4)
    X = awkward_csr(rng, 7, 5, np.float32, nonzeros_per_row=5)
    with pytest.raises(ValueError, match=f"backend='numpy' only with {option}={re.escape(repr(value))} "):
        backend.fused_sgd("softmax", X, np.arange(7) % 2, np.zeros((5, 2)), np.zeros(2), max_batch_size=4,
                          **{option: value})
    with pytest.raises(ValueError, match="backend='numpy' only with deterministic=True "):
        TritonSparseBackend(deterministic=True).fused_sgd("softmax", X, np.arange(7) % 2, np.zeros((5, 2)),
                                                          np.zeros(2), max_batch_size=4)
    stepper = backend.fused_sgd("softmax", X, np.arange(7) % 2, np.zeros((5, 2)), np.zeros(2), max_batch_size=4)
    stepper.reducer = object()
    with pytest.raises(ValueError, match="reducer"):
        stepper.step(torch.arange(4, device=DEVICE), 0.1)


def test_decision_function_of_sparse_rows(backend):
    rng = np.random.default_rng(5)
    X = awkward_csr(rng, 21, 13, np.float32, nonzeros_per_row=5)
    W, b = rng.normal(size=(13, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    logits = backend.to_numpy(backend.decision_function(backend.asarray(X.tocoo()), W, b, 0.5))
    assert_close(logits, 0.5 * X.toarray().astype(np.float64) @ W + b, "float32", 13, "logits")


def memory_kib(field):
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1))


def test_wide_features_stay_small_in_memory(backend):
    """D = 2**20 with a handful of nonzeros per row: the steps' peak memory is O(nnz + D·K) (V, G, owner), far from
    the B·D of a dense minibatch; the result is the dense steps' on the columns that occur."""
    rng = np.random.default_rng(6)
    n_rows, n_features, n_classes, batch = 769, 2**20, 3, 256
    X = awkward_csr(rng, n_rows, n_features, np.float32, nonzeros_per_row=3)
    y = model_targets("softmax", rng, n_rows, n_classes)
    stepper = backend.fused_sgd("softmax", X, y, np.zeros((n_features, n_classes), np.float32),
                                np.zeros(n_classes, np.float32), max_batch_size=batch, l2=1e-3)
    batches = [np.arange(start, min(start + batch, n_rows)) for start in range(0, n_rows, batch)]
    device_batches = [torch.from_numpy(rows).to(DEVICE) for rows in batches]
    peak_check = DEVICE == "cpu"
    if peak_check:
        with open("/proc/self/clear_refs", "w") as clear:  # the peak RSS starts again from the current RSS
            clear.write("5")
        start_kib = memory_kib("VmRSS")
    for rows in device_batches:
        stepper.step(rows, 0.5)
    if peak_check:
        grown = (memory_kib("VmHWM") - start_kib) * 1024
        dense_batch = batch * n_features * 4
        assert grown < dense_batch / 8, f"peak grew by {grown / 2**20:.1f} MiB"
    W, b = stepper.get_params()
    used = np.unique(X.indices)
    assert not W[np.setdiff1d(np.arange(n_features), used)].any()
    expected_W, expected_b, _ = dense_steps("softmax", X[:, used], y, np.zeros((len(used), n_classes), np.float32),
                                         np.zeros(n_classes, np.float32), batches, [0.5] * len(batches), l2=1e-3,
                                         x_scale=1.0, weights=None)
    assert_close(W[used], expected_W, "float32", n_rows, "W")
    assert_close(b, expected_b, "float32", n_rows, "b")


@pytest.mark.parametrize("estimator_class", ["SoftmaxRegression", "LogisticRegression"])
def test_estimators_on_sparse_rows_agree_with_the_numpy_backend(estimator_class):
    """backend="triton" asked for by name trains sparse rows on the Triton sparse step: fit, predict_proba,
    decision_function and score agree with backend="numpy" (same row order: no shuffle, the backends draw theirs
    differently)."""
    import linclass_gpu

    rng = np.random.default_rng(7)
    X = awkward_csr(rng, 101, 17, np.float32, nonzeros_per_row=5)
    y = rng.integers(0, 3, 101)
    weights = rng.random(101)
    settings = {"epochs": 3, "batch_size": 16, "learning_rate": 0.3, "tol": None, "dtype": "float32",
                "shuffle": False, "momentum": 0.0, "alpha": 1e-3, "random_state": 0}
    models = {name: getattr(linclass_gpu, estimator_class)(backend=name, **settings).fit(X, y, sample_weight=weights)
              for name in ("triton", "numpy")}
    assert models["triton"].backend_ == "triton"
    reads = 101 * 3
    assert_close(models["triton"].coef_, models["numpy"].coef_, "float32", reads, "coef_")
    assert_close(models["triton"].intercept_, models["numpy"].intercept_, "float32", reads, "intercept_")
    assert_close(models["triton"].loss_curve_, models["numpy"].loss_curve_, "float32", reads, "loss_curve_")
    assert_close(models["triton"].predict_proba(X.tocsc()), models["numpy"].predict_proba(X), "float32", 17,
                 "predict_proba")
    assert_close(models["triton"].decision_function(X), models["numpy"].decision_function(X), "float32", 17,
                 "decision_function")
    assert models["triton"].score(X, y) == models["numpy"].score(X, y)


@pytest.mark.parametrize("l2, rates", [(0.05, (0.5, 0.3, 0.2)), (0.99, (1.0, 1.0, 1.0))],
                         ids=("scale-in-range", "fold-mid-epoch"))
@pytest.mark.parametrize("model, n_outputs", [("softmax", 5), ("sigmoid", 3)])
def test_graph_path_epochs_equal_step_by_step(model, n_outputs, l2, rates):
    """Epochs through the CUDA graph path's table and buffers (run eagerly under the interpreter; recorded and replayed
    on a GPU) equal one step per minibatch bit for bit: three epochs of 7 steps with a tail batch, rates changing each
    step and epoch. At ``lr·l2 ≈ 0.99`` the scale shrinks 100-fold a step and leaves its range within an epoch, which
    then runs step by step."""
    rng = np.random.default_rng(11)
    n_rows, n_features, batch_size = 40, 19, 6
    X = awkward_csr(rng, n_rows, n_features, np.float32, nonzeros_per_row=5)
    y = model_targets(model, rng, n_rows, n_outputs)
    W = (0.1 * rng.normal(size=(n_features, n_outputs))).astype(np.float32)
    b = (0.1 * rng.normal(size=n_outputs)).astype(np.float32)
    orders = [rng.permutation(n_rows) for _ in rates]
    n_steps = -(-n_rows // batch_size)
    results = []
    for graph in (True, False):
        # A fresh backend each: atomics under the interpreter run in one order, so both runs repeat bitwise.
        stepper = TritonSparseBackend().fused_sgd(model, X, y, W, b, max_batch_size=batch_size, l2=l2, x_scale=0.7)
        stepper.use_cuda_graph = graph
        losses = []
        for order, rate in zip(orders, rates):
            # Decaying rates, but for the fold case, where a constant rate keeps lr·l2 near 1 at every step.
            decay = 1 + np.arange(n_steps) if l2 < 0.5 else np.ones(n_steps)
            stepper.run_epoch(torch.from_numpy(order).to(DEVICE), rate / decay, batch_size)
            losses.append(stepper.pop_loss_sum())
        results.append((*stepper.get_params(), losses, stepper._step_id, len(stepper._graphed_epochs._epochs)))
    (W_graph, b_graph, loss_graph, ids_graph, shapes), (W_steps, b_steps, loss_steps, ids_steps, _) = results
    assert W_graph.tobytes() == W_steps.tobytes() and b_graph.tobytes() == b_steps.tobytes()
    assert loss_graph == loss_steps and ids_graph == ids_steps == 3 * n_steps
    assert shapes == (1 if l2 < 0.5 else 0), "the graph path's buffers once per shape; none when each epoch folds"


def test_step_scalar_tables_are_checked(backend):
    rng = np.random.default_rng(12)
    X = awkward_csr(rng, 10, 7, np.float32)
    stepper = backend.fused_sgd("softmax", X, rng.integers(0, 3, 10), np.zeros((7, 3), np.float32),
                                np.zeros(3, np.float32), max_batch_size=4)
    rows = torch.arange(4, device=DEVICE)
    with pytest.raises(ValueError, match="step_scalars must be a float32 vector of 4"):
        stepper._launch_grad(rows, step_scalars=torch.zeros(3, device=DEVICE))
    with pytest.raises(ValueError, match="step must be a positive int32 id"):
        stepper._launch_update(rows, weight_step=0.1, bias_step=0.1)
