"""The Triton backend: contract, fused training steps against the oracle and the NumPy backend, launch and sync
counts per step, deterministic mode, sample weights and a MNIST subset (under the interpreter on a CPU-only machine).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DLPackOnly

torch = pytest.importorskip("torch", reason="the Triton backend needs torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode (the interpreter when there is no CUDA device).
pytest.importorskip("linclass_gpu.kernels", reason="the Triton backend needs triton")

from tolerances import assert_close  # noqa: E402

from linclass_gpu import oracle  # noqa: E402
from linclass_gpu.backends import get_backend  # noqa: E402
from linclass_gpu.backends.triton_backend import TritonBackend  # noqa: E402
from linclass_gpu.kernels import sgd_update, sigmoid_sgd, softmax_sgd  # noqa: E402


@pytest.fixture(scope="module")
def triton_backend():
    return TritonBackend()


@pytest.fixture(scope="module")
def deterministic_backend():
    return TritonBackend(deterministic=True)


def problem(rng, model, n_rows, n_features, n_classes, dtype):
    if dtype == "uint8":
        X, x_scale = rng.integers(0, 256, size=(n_rows, n_features), dtype=np.uint8), 1.0 / 255
    else:
        X, x_scale = rng.normal(size=(n_rows, n_features)).astype(np.float32), 1.0
    n_outputs = n_classes if model == "softmax" else 1
    y = rng.integers(0, n_classes if model == "softmax" else 2, size=n_rows)
    W = (rng.normal(size=(n_features, n_outputs)) * 0.1).astype(np.float32)
    b = (rng.normal(size=n_outputs) * 0.1).astype(np.float32)
    return X, y, W, b, x_scale


# -- contract ----------------------------------------------------------------------------------------------------------


def test_name_describe_and_registry_options(triton_backend):
    assert triton_backend.name == "triton"
    if triton_backend.interpreted:
        assert "Triton interpreter on CPU (TRITON_INTERPRET=1)" in triton_backend.describe()
    else:
        assert "CUDA device" in triton_backend.describe()
    chosen = get_backend("triton", deterministic=True, tf32=True)
    assert chosen.name == "triton" and chosen.deterministic and chosen.input_precision == "tf32"


@pytest.mark.parametrize("dtype", ("float32", "uint8", "bfloat16", "float16", "int64"))
def test_asarray_accepts_numpy_torch_and_dlpack(triton_backend, dtype, rng):
    host = rng.integers(0, 100, size=(5, 3)).astype(np.float32 if dtype == "bfloat16" else dtype)
    from_numpy = triton_backend.asarray(host, dtype)
    from_torch = triton_backend.asarray(torch.from_numpy(host), dtype)
    from_dlpack = triton_backend.asarray(DLPackOnly(host), dtype)
    for tensor in (from_numpy, from_torch, from_dlpack):
        assert isinstance(tensor, torch.Tensor) and tensor.device == triton_backend.device
        assert str(tensor.dtype) == f"torch.{dtype}" and tensor.is_contiguous()
        np.testing.assert_array_equal(triton_backend.to_numpy(tensor).astype(np.float64), host.astype(np.float64))


@pytest.mark.parametrize("model", ("softmax", "sigmoid"))
def test_loss_grad_decision_function_and_probabilities(triton_backend, model, rng):
    X, y, W, b, x_scale = problem(rng, model, 37, 31, 7, "uint8")
    Xd, yd = triton_backend.asarray(X), triton_backend.asarray(y)
    X64 = X.astype(np.float64)
    if model == "softmax":
        loss, dW, db = triton_backend.softmax_loss_grad(Xd, yd, W, b, x_scale)
        ref = oracle.softmax_loss_grad(X64, y, W.astype(np.float64), b.astype(np.float64), x_scale)
        assert tuple(dW.shape) == W.shape and tuple(db.shape) == b.shape
    else:
        loss, dW, db = triton_backend.sigmoid_loss_grad(Xd, yd, W[:, 0], b[0], x_scale)
        ref = oracle.sigmoid_loss_grad(X64, y, W[:, 0].astype(np.float64), float(b[0]), x_scale)
        assert tuple(dW.shape) == (31,) and triton_backend.to_numpy(db).shape == ()
    assert isinstance(loss, float)
    for actual, expected, what in zip((loss, dW, db), ref, ("loss", "dW", "db")):
        assert_close(triton_backend.to_numpy(torch.as_tensor(actual)), expected, "uint8", 37, what)
    Z = triton_backend.decision_function(Xd, W, b, x_scale)
    Z_ref = x_scale * X64 @ W.astype(np.float64) + b
    assert_close(triton_backend.to_numpy(Z), Z_ref, "uint8", 31, "decision_function")
    probs = triton_backend.to_numpy(triton_backend.predict_proba(model, Xd, W, b, x_scale))
    expected = oracle.softmax(Z_ref) if model == "softmax" else oracle.sigmoid(Z_ref[:, 0])
    assert_close(probs, expected, "uint8", 31, "probabilities")


def test_fused_sgd_validates(triton_backend, rng):
    X, y, W, b, _ = problem(rng, "softmax", 20, 5, 3, "float32")
    with pytest.raises(ValueError, match="class ids"):
        triton_backend.fused_sgd("softmax", triton_backend.asarray(X), triton_backend.asarray(y + 1), W, b,
                                 max_batch_size=8)
    with pytest.raises(ValueError, match="model"):
        triton_backend.fused_sgd("hinge", triton_backend.asarray(X), triton_backend.asarray(y), W, b,
                                 max_batch_size=8)


# -- fused steps against the oracle and the NumPy backend -------------------------------------------------------------

STEP_OPTIONS = [
    dict(),
    dict(l2=1e-2, momentum=0.9),
    dict(l2=1e-3, momentum=0.5, nesterov=True, fit_intercept=False),
    dict(l2=1e-3, l1=1e-2, momentum=0.9),
    dict(l2=1e-3, l1=1e-2, optimizer="adagrad"),
    dict(l2=1e-3, l1=1e-2, optimizer="adam"),
]


def run_steps(backend, model, X, y, W, b, orders, batch_size, learning_rate, options, x_scale):
    stepper = backend.fused_sgd(model, backend.asarray(X), backend.asarray(y), W, b, max_batch_size=batch_size,
                                x_scale=x_scale, **options)
    losses, steps = [], 0
    for order in orders:
        rows = backend.asarray(order)
        for start in range(0, len(order), batch_size):
            stepper.step(rows[start:start + batch_size], learning_rate)
            steps += 1
        losses.append(stepper.pop_loss_sum())
    return stepper.get_params(), losses, steps


def run_oracle(model, X, y, W, b, orders, batch_size, learning_rate, options, x_scale):
    X64, W, b = X.astype(np.float64), W.astype(np.float64), b.astype(np.float64)
    vW, vb, aW, ab = np.zeros_like(W), np.zeros_like(b), np.zeros_like(W), np.zeros_like(b)
    losses, steps = [], 0
    for order in orders:
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            steps += 1
            loss, W, b, vW, vb, aW, ab = oracle.sgd_step(model, X64[rows], y[rows], W, b, vW, vb,
                                                         learning_rate=learning_rate, x_scale=x_scale,
                                                         accumulator_W=aW, accumulator_b=ab, step_count=steps,
                                                         **options)
            total += loss * len(rows)
        losses.append(total)
    return (W, b), losses


@pytest.mark.parametrize("options", STEP_OPTIONS, ids=("plain", "l2-momentum", "nesterov-no-intercept", "elastic-net",
                                                  "adagrad-elastic-net", "adam-elastic-net"))
@pytest.mark.parametrize("dtype", ("float32", "uint8"))
@pytest.mark.parametrize("model", ("softmax", "sigmoid"))
def test_twenty_steps_match_oracle_and_numpy_backend(triton_backend, model, dtype, options, rng):
    n_rows, batch_size = 70, 16  # 5 steps per epoch, the last one a 6-row tail
    X, y, W, b, x_scale = problem(rng, model, n_rows, 31, 10, dtype)
    orders = [rng.permutation(n_rows) for _ in range(4)]  # 4 epochs = 20 steps
    (W_t, b_t), losses_t, steps = run_steps(triton_backend, model, X, y, W, b, orders, batch_size, 0.5, options,
                                            x_scale)
    assert steps == 20
    (W_o, b_o), losses_o = run_oracle(model, X, y, W, b, orders, batch_size, 0.5, options, x_scale)
    length = steps * batch_size  # rounding accumulates over every row of every step
    assert_close(W_t, W_o, dtype, length, "W vs oracle")
    assert_close(b_t, b_o, dtype, length, "b vs oracle")
    assert_close(losses_t, losses_o, dtype, length, "epoch loss sums vs oracle")
    if options.get("fit_intercept") is False:
        np.testing.assert_array_equal(b_t, b)
    (W_n, b_n), losses_n, _ = run_steps(get_backend("numpy"), model, X, y, W, b, orders, batch_size, 0.5, options,
                                        x_scale)
    assert_close(W_t, W_n, dtype, length, "W vs numpy backend")
    assert_close(b_t, b_n, dtype, length, "b vs numpy backend")
    assert_close(losses_t, losses_n, dtype, length, "loss vs numpy backend")


@pytest.mark.parametrize("n_classes", (37, 1000))
def test_large_c_steps_match_oracle(triton_backend, n_classes, rng):
    X, y, W, b, x_scale = problem(rng, "softmax", 12, 31, n_classes, "float32")
    orders = [rng.permutation(12)]
    options = dict(l2=1e-3, momentum=0.9)
    (W_t, b_t), losses_t, steps = run_steps(triton_backend, "softmax", X, y, W, b, orders, 5, 0.5, options, x_scale)
    (W_o, b_o), losses_o = run_oracle("softmax", X, y, W, b, orders, 5, 0.5, options, x_scale)
    assert_close(W_t, W_o, "float32", steps * 5, "W")
    assert_close(b_t, b_o, "float32", steps * 5, "b")
    assert_close(losses_t, losses_o, "float32", steps * 5, "loss")


# -- launches and host synchronisations --------------------------------------------------------------------------------


class LaunchCounter:
    """Counts kernel launches and device-to-host reads (``item``, ``cpu``, ``numpy``, ``tolist``, ``bool`` …)."""

    HOST_READS = ("item", "cpu", "numpy", "tolist", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch):
        self.launches, self.host_reads, self._inside_launch = 0, 0, False
        for module, name in ((softmax_sgd, "softmax_sgd_kernel"), (sigmoid_sgd, "sigmoid_sgd_kernel"),
                             (sgd_update, "sgd_update_kernel")):
            monkeypatch.setattr(module, name, self._count_launches(getattr(module, name)))
        for method in self.HOST_READS:
            monkeypatch.setattr(torch.Tensor, method, self._count_reads(getattr(torch.Tensor, method)))
        monkeypatch.setattr(torch.cuda, "synchronize", self._count_reads(torch.cuda.synchronize))

    def _count_launches(self, kernel):
        counter = self

        class Counted:
            def __getitem__(self, grid):
                launch = kernel[grid]

                def run(*args, **kwargs):
                    counter.launches += 1
                    counter._inside_launch = True  # the interpreter copies arguments to the host itself
                    try:
                        return launch(*args, **kwargs)
                    finally:
                        counter._inside_launch = False

                return run

        return Counted()

    def _count_reads(self, method):
        def counted(*args, **kwargs):
            if not self._inside_launch:
                self.host_reads += 1
            return method(*args, **kwargs)

        return counted


@pytest.mark.parametrize("options", (dict(momentum=0.9), dict(optimizer="adagrad", l1=1e-3),
                                     dict(optimizer="adam", l1=1e-3)), ids=("momentum", "adagrad-l1", "adam-l1"))
@pytest.mark.parametrize("deterministic", (False, True), ids=("atomics", "deterministic"))
@pytest.mark.parametrize("model", ("softmax", "sigmoid"))
def test_epoch_is_two_launches_per_step_and_one_host_read(monkeypatch, model, deterministic, options, rng):
    backend = TritonBackend(deterministic=deterministic)
    n_rows, batch_size = 100, 16
    X, y, W, b, x_scale = problem(rng, model, n_rows, 31, 10, "uint8")
    stepper = backend.fused_sgd(model, backend.asarray(X), backend.asarray(y), W, b, max_batch_size=batch_size,
                                l2=1e-3, x_scale=x_scale, **options)
    rows = backend.asarray(rng.permutation(n_rows))
    counter = LaunchCounter(monkeypatch)
    n_steps = 0
    for start in range(0, n_rows, batch_size):
        stepper.step(rows[start:start + batch_size], 0.1)
        n_steps += 1
    assert n_steps == 7
    assert counter.launches == 2 * n_steps, "at most 2 kernel launches per SGD step"
    assert counter.host_reads == 0, "no device-to-host read during the epoch's steps"
    loss_sum = stepper.pop_loss_sum()
    assert counter.host_reads == 1, "pop_loss_sum is the epoch's one device-to-host read"
    assert np.isfinite(loss_sum) and loss_sum > 0


# -- deterministic mode and sample weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("options", (dict(momentum=0.9), dict(optimizer="adagrad", l1=1e-3),
                                     dict(optimizer="adam", l1=1e-3)), ids=("momentum", "adagrad-l1", "adam-l1"))
@pytest.mark.parametrize("n_classes", (10, 1000))
def test_deterministic_mode_is_bitwise_reproducible(deterministic_backend, triton_backend, n_classes, options, rng):
    X, y, W, b, x_scale = problem(rng, "softmax", 40, 31, n_classes, "uint8")
    orders = [rng.permutation(40)]
    runs = [run_steps(deterministic_backend, "softmax", X, y, W, b, orders, 32, 0.5, options, x_scale)
            for _ in range(2)]
    (W1, b1), loss1, _ = runs[0]
    (W2, b2), loss2, _ = runs[1]
    assert W1.tobytes() == W2.tobytes() and b1.tobytes() == b2.tobytes() and loss1 == loss2
    (W_fast, b_fast), loss_fast, steps = run_steps(triton_backend, "softmax", X, y, W, b, orders, 32, 0.5, options,
                                                   x_scale)
    assert_close(W1, W_fast, "uint8", 40, "deterministic vs atomics W")
    assert_close(loss1, loss_fast, "uint8", 40, "deterministic vs atomics loss")


def test_partials_are_capped_for_large_models(rng):
    """Deterministic mode keeps one gradient slice per program, capped in bytes: fewer programs for huge D·C."""
    backend = TritonBackend(deterministic=True)
    X, y, W, b, _ = problem(rng, "softmax", 64, 31, 10, "float32")
    small = backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=64)
    assert small._max_programs == 4  # 64 rows / 16-row blocks
    assert small._grad.numel() * 4 <= sgd_update.PARTIALS_BYTES
    assert sgd_update.max_partials(784 * 32768 + 32768, 8) == 1  # one 103 MB slice at C = 32768, not 8
    assert sgd_update.max_partials(784 * 1000 + 1000, 8) == 8  # 3.1 MB slices: 8 fit in 64 MB
    assert sgd_update.max_partials(784 * 1000 + 1000, 64) == sgd_update.PARTIALS_BYTES // (4 * 785000)


@pytest.mark.parametrize("model", ("softmax", "sigmoid"))
def test_sample_weights_scale_loss_and_gradient(triton_backend, model, rng):
    X, y, W, b, x_scale = problem(rng, model, 48, 31, 10, "float32")
    orders = [np.arange(48)]

    def run(weights):
        stepper = triton_backend.fused_sgd(model, triton_backend.asarray(X), triton_backend.asarray(y), W, b,
                                           max_batch_size=16, sample_weight=weights)
        rows = triton_backend.asarray(orders[0])
        stepper.step(rows[:16], 0.5)
        return stepper.get_params(), stepper.pop_loss_sum()

    (W1, b1), loss1 = run(None)
    (W_ones, b_ones), loss_ones = run(np.ones(48, np.float32))
    (W_two, b_two), loss_two = run(np.full(48, 2.0, np.float32))
    assert_close(W_ones, W1, "float32", 16, "weights of 1")
    assert_close(loss_ones, loss1, "float32", 16, "loss with weights of 1")
    assert_close(loss_two, 2 * loss1, "float32", 16, "weights of 2 double the loss")
    assert_close(W_two - W, 2 * (W1 - W), "float32", 16, "weights of 2 double the step")
    zero_first = np.ones(48, np.float32)
    zero_first[:8] = 0  # rows 0..7 ignored: the step equals one on rows 8..15 with the mean still over B = 16
    (W_zero, _), loss_zero = run(zero_first)
    loss_ref, dW_ref, _ = (oracle.softmax_loss_grad if model == "softmax" else
                           (lambda X, y, W, b: oracle.sigmoid_loss_grad(X, y, W[:, 0], b[0])))(
        X[8:16].astype(np.float64), y[8:16], W.astype(np.float64), b.astype(np.float64))
    assert_close(loss_zero, loss_ref * 8, "float32", 16, "zero weights drop rows")
    assert_close(W_zero, W - 0.5 * np.reshape(dW_ref, W.shape) / 2, "float32", 16, "zero weights drop rows")


# -- MNIST subset ------------------------------------------------------------------------------------------------------


def test_mnist_subset_trains_to_numpy_accuracy(triton_backend):
    from linclass_gpu.datasets import load_mnist

    data = load_mnist(download=False)
    rng = np.random.default_rng(0)
    # 1000 rows, 2 epochs: each row costs ~0.1 s per epoch under the interpreter (NumPy reaches ~0.83 here).
    train = rng.choice(len(data.train_labels), 1000, replace=False)
    X, y = data.train_images[train], data.train_labels[train].astype(np.int64)
    X_test, y_test = data.test_images[:1000], data.test_labels[:1000]
    W, b = np.zeros((784, 10), np.float32), np.zeros(10, np.float32)
    orders = [rng.permutation(len(y)) for _ in range(2)]
    accuracy = {}
    for backend in (triton_backend, get_backend("numpy")):
        (W_fit, b_fit), losses, _ = run_steps(backend, "softmax", X, y, W, b, orders, 128, 0.5,
                                              dict(momentum=0.9, l2=1e-4), 1 / 255)
        assert losses[-1] < losses[0]
        Z = backend.to_numpy(backend.decision_function(backend.asarray(X_test), W_fit, b_fit, 1 / 255))
        accuracy[backend.name] = float((Z.argmax(axis=1) == y_test).mean())
    assert accuracy["triton"] > 0.8, accuracy
    assert abs(accuracy["triton"] - accuracy["numpy"]) <= 0.01, accuracy
