"""Sparse rows (issue 18): the CSR step and loss/gradient against the float64 oracle on the dense equivalent."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import awkward_csr, model_targets

from linclass_gpu import oracle
from linclass_gpu.backends import cpu_loops
from linclass_gpu.backends.sparse_backend import SparseNumpyBackend
from linclass_gpu.backends.sparse_step import MIN_SCALE, BatchGather, RowIndexGather, update_mode
from tests.tolerances import assert_close

N_ROWS, N_FEATURES, N_CLASSES = 37, 29, 5  # odd on purpose


class RowIndexNumpyBackend(SparseNumpyBackend):
    """The NumPy backend gathering its batches as the CuPy backend does (RowIndexGather over scipy's CSR): the
    array-generic route of the sparse step, checked on the CPU."""

    def batch_gather(self, X):
        import scipy.sparse

        return RowIndexGather(X, np, scipy.sparse)


@pytest.fixture(params=["compiled", "scipy", "row-index"])
def sparse_backend(request):
    """The sparse backend on its compiled loops (backends/sparse_loops.py, where Numba is installed), on scipy's
    route (everywhere), or on the CuPy backend's gather over scipy's products."""
    if request.param == "compiled" and not cpu_loops.compiled_loops_enabled():
        pytest.skip("needs Numba (pip install linclass-gpu[cpu])")
    if request.param == "row-index":
        return RowIndexNumpyBackend(compiled=False)
    return SparseNumpyBackend(compiled=request.param == "compiled")


@pytest.mark.parametrize("n_features", [N_FEATURES, 2**20])
def test_row_index_gather_equals_batch_gather(n_features):
    """Both gathers give the batch's rows over its distinct features: duplicates kept, empty rows, unsorted indices."""
    import scipy.sparse

    rng = np.random.default_rng(3)
    X = awkward_csr(rng, N_ROWS, n_features)
    rows = rng.permutation(N_ROWS)[:11]
    expected = X[rows]
    for u, X_u in (BatchGather(X)(rows), RowIndexGather(X, np, scipy.sparse)(rows)):
        assert len(np.unique(u)) == len(u) == X_u.shape[1]
        np.testing.assert_array_equal(np.sort(u), np.unique(expected.indices))
        assert X_u.nnz == expected.nnz, "every nonzero of the batch, duplicates included"
        # Column j of X_u is feature u[j]: mapped back, the batch is X[rows] exactly.
        back = scipy.sparse.csr_array((X_u.data, u[X_u.indices], X_u.indptr), shape=expected.shape)
        assert abs(back - expected).max() == 0


def test_the_awkward_matrix_is_awkward():
    X = awkward_csr(np.random.default_rng(0), N_ROWS, N_FEATURES)
    lengths = np.diff(X.indptr)
    assert not X.has_canonical_format and (lengths == 0).any()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model, n_outputs", [("softmax", N_CLASSES), ("sigmoid", 1), ("sigmoid", 3),
                                              ("sigmoid_mse", 3)])
def test_loss_grad_matches_oracle(model, n_outputs, dtype):
    rng = np.random.default_rng(0)
    X = awkward_csr(rng, N_ROWS, N_FEATURES, dtype)
    y = model_targets(model, rng, N_ROWS, n_outputs)
    W, b = rng.normal(size=(N_FEATURES, n_outputs)).astype(dtype), rng.normal(size=n_outputs).astype(dtype)
    weights = rng.random(N_ROWS).astype(dtype)
    backend = SparseNumpyBackend()
    loss, dW, db = backend._loss_grad(model, X, y, W, b, 0.5, weights)
    reference = {"softmax": oracle.softmax_loss_grad, "sigmoid": oracle.sigmoid_loss_grad,
                 "sigmoid_mse": oracle.sigmoid_mse_loss_grad}[model]
    expected_loss, expected_dW, expected_db = reference(X.toarray(), y, W, b, 0.5, weights)
    assert_close(loss, expected_loss, dtype, N_ROWS * N_FEATURES, "loss")
    assert_close(dW, expected_dW, dtype, N_ROWS, "dW")
    assert_close(db, expected_db, dtype, N_ROWS, "db")
    logits = backend.decision_function(X, W, b, 0.5)
    assert_close(logits, 0.5 * X.toarray() @ W.astype(np.float64) + b, dtype, N_FEATURES, "logits")


# (optimizer, momentum, nesterov, l2, l1) and the update mode each takes.
SETTINGS = [
    ("sgd", 0.0, False, 0.0, 0.0, "lazy"),
    ("sgd", 0.0, False, 0.05, 0.0, "lazy"),
    ("sgd", 0.0, False, 0.0, 0.02, "lazy"),
    ("sgd", 0.0, False, 0.05, 0.02, "lazy"),
    ("sgd", 0.9, False, 0.05, 0.02, "dense"),
    ("sgd", 0.9, True, 0.05, 0.0, "dense"),
    ("adagrad", 0.0, False, 0.0, 0.0, "rows"),
    ("adagrad", 0.0, False, 0.05, 0.02, "dense"),
    ("adam", 0.0, False, 0.05, 0.02, "dense"),
]


def oracle_steps(model, X, y, W, b, batches, learning_rates, *, optimizer, momentum, nesterov, l2, l1, x_scale,
                 weights):
    """The oracle's parameters after the same steps, on the dense rows."""
    X_dense = X.toarray()
    W, b = W.astype(np.float64), b.astype(np.float64)
    velocity_W, velocity_b = np.zeros_like(W), np.zeros_like(b)
    accumulator_W, accumulator_b = np.zeros_like(W), np.zeros_like(b)
    for step, (rows, learning_rate) in enumerate(zip(batches, learning_rates), start=1):
        extra = ({"optimizer": optimizer, "accumulator_W": accumulator_W, "accumulator_b": accumulator_b,
                  "step_count": step} if optimizer != "sgd" else {})
        result = oracle.sgd_step(model, X_dense[rows], y[rows], W, b, velocity_W, velocity_b,
                                 learning_rate=learning_rate, l2=l2, l1=l1, momentum=momentum, nesterov=nesterov,
                                 x_scale=x_scale, sample_weight=weights[rows], **extra)
        W, b, velocity_W, velocity_b = result[1:5]
        if optimizer != "sgd":
            accumulator_W, accumulator_b = result[5:]
    return W, b


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer, momentum, nesterov, l2, l1, mode", SETTINGS)
@pytest.mark.parametrize("model, n_outputs", [("softmax", N_CLASSES), ("sigmoid", 3)])
def test_steps_match_oracle(sparse_backend, model, n_outputs, optimizer, momentum, nesterov, l2, l1, mode, dtype):
    rng = np.random.default_rng(1)
    X = awkward_csr(rng, N_ROWS, N_FEATURES, dtype)
    y = model_targets(model, rng, N_ROWS, n_outputs)
    W = (0.1 * rng.normal(size=(N_FEATURES, n_outputs))).astype(dtype)
    b = (0.1 * rng.normal(size=n_outputs)).astype(dtype)
    weights = rng.random(N_ROWS).astype(dtype)
    batch = 7
    batches = [rng.permutation(N_ROWS)[:batch] for _ in range(12)] + [rng.permutation(N_ROWS)[:3]]
    learning_rates = np.linspace(0.5, 0.2, len(batches))
    stepper = sparse_backend.fused_sgd(model, X, y, W, b, max_batch_size=batch, l2=l2, l1=l1, momentum=momentum,
                                       nesterov=nesterov, x_scale=0.7, sample_weight=weights, optimizer=optimizer)
    assert stepper.mode == mode == update_mode(optimizer, momentum, l2, l1)
    for rows, learning_rate in zip(batches, learning_rates):
        stepper.step(rows, learning_rate)
    expected_W, expected_b = oracle_steps(model, X, y, W, b, batches, learning_rates, optimizer=optimizer,
                                          momentum=momentum, nesterov=nesterov, l2=l2, l1=l1, x_scale=0.7,
                                          weights=weights)
    W_fit, b_fit = stepper.get_params()
    # Thirteen steps of error add up: the reduction length is every row the steps read.
    reads = batch * len(batches)
    assert_close(W_fit, expected_W, dtype, reads, "W")
    assert_close(b_fit, expected_b, dtype, reads, "b")
    if l1:  # the proximal step leaves exact zeros, also in rows the lazy path has not read since
        assert np.array_equal(W_fit == 0, expected_W == 0)


@pytest.mark.parametrize("l2, learning_rate", [(0.9, 1.0), (1.0, 1.0), (1e3, 1.0)])
def test_lazy_scale_folds_exactly(sparse_backend, l2, learning_rate):
    """Steps whose factor 1 − lr·l2 takes |s| out of [MIN_SCALE, 1/MIN_SCALE] fold it into V (0 and negative
    factors included)."""
    rng = np.random.default_rng(2)
    X = awkward_csr(rng, N_ROWS, N_FEATURES)
    y = model_targets("softmax", rng, N_ROWS, N_CLASSES)
    W, b = rng.normal(size=(N_FEATURES, N_CLASSES)), np.zeros(N_CLASSES)
    batches = [rng.permutation(N_ROWS)[:5] for _ in range(int(np.ceil(np.log(MIN_SCALE) / np.log(0.1))) + 4)]
    stepper = sparse_backend.fused_sgd("softmax", X, y, W, b, max_batch_size=5, l2=l2, l1=0.01)
    for rows in batches:
        stepper.step(rows, learning_rate)
    expected_W, expected_b = oracle_steps("softmax", X, y, W, b, batches, [learning_rate] * len(batches),
                                          optimizer="sgd", momentum=0.0, nesterov=False, l2=l2, l1=0.01,
                                          x_scale=1.0, weights=np.ones(N_ROWS))
    W_fit, b_fit = stepper.get_params()
    assert_close(W_fit, expected_W, "float64", 5 * len(batches), "W")
    assert_close(b_fit, expected_b, "float64", 5 * len(batches), "b")


def test_state_round_trip_resumes_bitwise(sparse_backend):
    """get_state mid-run, set_state on a fresh stepper: the rest of the run is bitwise that of the uninterrupted
    one (the lazy L2 scale and L1 thresholds are folded into the state's W)."""
    rng = np.random.default_rng(3)
    X = awkward_csr(rng, N_ROWS, N_FEATURES)
    y = model_targets("softmax", rng, N_ROWS, N_CLASSES)
    W, b = np.zeros((N_FEATURES, N_CLASSES)), np.zeros(N_CLASSES)
    batches = [rng.permutation(N_ROWS)[:6] for _ in range(10)]
    backend = sparse_backend

    def fresh():
        return backend.fused_sgd("softmax", X, y, W, b, max_batch_size=6, l2=0.01, l1=0.005)

    whole, first, second = fresh(), fresh(), fresh()
    for rows in batches:
        whole.step(rows, 0.3)
    for rows in batches[:4]:
        first.step(rows, 0.3)
    second.set_state(first.get_state())
    for rows in batches[4:]:
        second.step(rows, 0.3)
    assert_close(second.get_params()[0], whole.get_params()[0], "float64", 60, "W")


def test_wide_features_stay_small_in_memory(sparse_backend):
    """D = 2**20 with a handful of nonzeros per row: a fit and a prediction allocate O(nnz + D·K), nowhere near the
    N·D of the dense rows."""
    rng = np.random.default_rng(4)
    n_rows, n_features, n_classes = 3001, 2**20, 3
    X = awkward_csr(rng, n_rows, n_features, np.float32, nonzeros_per_row=4)
    y = rng.integers(0, n_classes, n_rows)
    backend = sparse_backend
    tracemalloc.start()
    try:
        stepper = backend.fused_sgd("softmax", X, y, np.zeros((n_features, n_classes), np.float32),
                                    np.zeros(n_classes, np.float32), max_batch_size=64, l2=1e-4, l1=1e-5)
        for start in range(0, n_rows, 64):
            stepper.step(np.arange(start, min(start + 64, n_rows)), 0.5)
        W, b = stepper.get_params()
        logits = backend.decision_function(X, W, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    weights_bytes = n_features * n_classes * 4
    assert peak < 6 * weights_bytes + 100 * X.nnz, f"peak {peak / 2**20:.1f} MiB"
    assert peak < n_rows * n_features * 4 / 100  # the dense rows would be 100x more
    # The oracle over the columns that occur: the others are 0 in X and stay 0 in W.
    used = np.unique(X.indices)
    batches = [np.arange(start, min(start + 64, n_rows)) for start in range(0, n_rows, 64)]
    expected_W, expected_b = oracle_steps("softmax", X[:, used], y, np.zeros((len(used), n_classes)),
                                          np.zeros(n_classes), batches, [0.5] * len(batches), optimizer="sgd",
                                          momentum=0.0, nesterov=False, l2=1e-4, l1=1e-5, x_scale=1.0,
                                          weights=np.ones(n_rows))
    assert not W[np.setdiff1d(np.arange(n_features), used)].any()
    assert_close(W[used], expected_W, "float32", n_rows, "W")
    assert_close(b, expected_b, "float32", n_rows, "b")
    assert_close(logits, X[:, used].toarray() @ expected_W + expected_b, "float32", n_rows, "logits")


def test_reducer_and_non_finite_values_are_refused():
    rng = np.random.default_rng(5)
    X = awkward_csr(rng, N_ROWS, N_FEATURES)
    y = model_targets("softmax", rng, N_ROWS, N_CLASSES)
    backend = SparseNumpyBackend()
    stepper = backend.fused_sgd("softmax", X, y, np.zeros((N_FEATURES, N_CLASSES)), np.zeros(N_CLASSES),
                                max_batch_size=4)
    stepper.reducer = object()
    with pytest.raises(ValueError, match="reducer"):
        stepper.step(np.arange(4), 0.1)
    X.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        backend.asarray(X)


@pytest.mark.parametrize("backend", ["numpy", "cupy"])
@pytest.mark.parametrize("estimator_class", ["SoftmaxRegression", "LogisticRegression"])
@pytest.mark.parametrize("options", [{"momentum": 0.0, "penalty": "elasticnet"}, {"momentum": 0.5},
                                     {"optimizer": "adagrad", "alpha": 0.0}])
def test_estimators_fit_sparse_rows_as_their_dense_equivalent(backend, estimator_class, options):
    """fit, predict_proba, decision_function and score on CSR (and CSC/COO, and on CuPy cupyx CSR) rows give the
    dense rows' results on the NumPy backend."""
    import linclass_gpu
    from linclass_gpu.arrays import to_numpy
    from linclass_gpu.backends import probe

    if backend != "numpy" and not probe(backend).usable:
        pytest.skip(f"{backend} cannot run here: {probe(backend).reason}")
    rng = np.random.default_rng(6)
    X = awkward_csr(rng, 203, 31)
    y = rng.integers(0, 3, 203)
    weights = rng.random(203)
    settings = {"epochs": 4, "batch_size": 16, "learning_rate": 0.3, "tol": None, "dtype": "float64",
                "random_state": 0, "backend": "numpy", "alpha": 1e-3, **options}
    sparse_model = getattr(linclass_gpu, estimator_class)(**{**settings, "backend": backend}).fit(
        X, y, sample_weight=weights)
    dense_model = getattr(linclass_gpu, estimator_class)(**settings).fit(X.toarray(), y, sample_weight=weights)
    reads = 203 * 4
    assert_close(sparse_model.coef_, dense_model.coef_, "float64", reads, "coef_")
    assert_close(sparse_model.intercept_, dense_model.intercept_, "float64", reads, "intercept_")
    placed = [X.tocsc(), X.tocoo(), X]
    if backend == "cupy":
        import cupyx.scipy.sparse

        placed.append(cupyx.scipy.sparse.csr_matrix(X))
    for rows in placed:
        assert_close(to_numpy(sparse_model.predict_proba(rows)), dense_model.predict_proba(X.toarray()), "float64",
                     31, "predict_proba")
    assert_close(to_numpy(sparse_model.decision_function(X)), dense_model.decision_function(X.toarray()), "float64",
                 31, "decision_function")
    assert sparse_model.score(X, y) == dense_model.score(X.toarray(), y)


@pytest.mark.parametrize("layout", ["sparse_csr", "sparse_csc", "sparse_coo"])
@pytest.mark.filterwarnings("ignore:Sparse (CSR|CSC) tensor support is in beta state")
@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
def test_torch_sparse_rows_train_and_predict_as_their_scipy_equivalent(layout):
    """A torch sparse tensor (CSR, CSC, COO) trains as the same rows given to scipy (bitwise for CSR, same seed; the
    other layouts sum duplicate entries first, in their own order), and the predictions come back as torch tensors;
    a NaN among its values is refused by name."""
    torch = pytest.importorskip("torch")
    from linclass_gpu import SoftmaxRegression

    rng = np.random.default_rng(9)
    X = awkward_csr(rng, N_ROWS, N_FEATURES, np.float32)
    y = rng.integers(0, 3, N_ROWS)
    rows = torch.sparse_csr_tensor(torch.from_numpy(X.indptr.astype(np.int64)),
                                   torch.from_numpy(X.indices.astype(np.int64)), torch.from_numpy(X.data.copy()),
                                   size=X.shape)
    if layout != "sparse_csr":  # the CSR tensor keeps the duplicate indices; the conversions sum them
        rows = rows.to_sparse_coo().coalesce() if layout == "sparse_coo" else rows.to_sparse_csc()
    settings = {"epochs": 3, "batch_size": 8, "tol": None, "random_state": 0, "backend": "numpy"}
    scipy_model = SoftmaxRegression(**settings).fit(X, y)
    torch_model = SoftmaxRegression(**settings).fit(rows, torch.from_numpy(y))
    probabilities = torch_model.predict_proba(rows)
    assert isinstance(probabilities, torch.Tensor)
    if layout == "sparse_csr":
        np.testing.assert_array_equal(torch_model.coef_, scipy_model.coef_)
        np.testing.assert_array_equal(probabilities.numpy(), scipy_model.predict_proba(X))
    else:
        assert_close(torch_model.coef_, scipy_model.coef_, "float32", N_ROWS * 3, "coef_")
        assert_close(probabilities.numpy(), scipy_model.predict_proba(X), "float32", N_FEATURES, "predict_proba")
    values = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="NaN or infinity"):
        torch_model.predict(torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 1]]), values, (2, N_FEATURES)))


def test_sparse_rows_on_an_explicit_gpu_backend_are_refused():
    from linclass_gpu import SoftmaxRegression
    from linclass_gpu.backends import probe

    if not probe("triton").usable:
        pytest.skip("triton cannot run here (not even interpreted)")
    X = awkward_csr(np.random.default_rng(7), N_ROWS, N_FEATURES)
    with pytest.raises(ValueError, match="sparse X trains on backend='numpy'"):
        SoftmaxRegression(backend="triton").fit(X, np.arange(N_ROWS) % 3)
    with pytest.raises(ValueError, match="has 29 features, but SoftmaxRegression is expecting 30"):
        SoftmaxRegression(epochs=1, backend="numpy").fit(
            awkward_csr(np.random.default_rng(8), N_ROWS, 30), np.arange(N_ROWS) % 3).predict(X)
