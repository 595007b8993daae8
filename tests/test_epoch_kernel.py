"""The single-launch epoch kernel (kernels/epoch_sgd.py) over whole epochs, under the Triton interpreter on a CPU.

Each epoch is compared with the float64 oracle looped step by step over the same row order (``oracle.sgd_step``), and
with the per-step Triton path (``TritonFusedSGD.step``, two launches per step), for every input dtype, softmax and
K-output sigmoid models, plain / heavy-ball / Nesterov momentum, L2, sample weights and no intercept. Shapes are
small and odd: N = 37 rows in batches of 8 (a 5-row last step), D = 13 features (one padded 32-feature tile), C = 5
classes; batches of 20 (two 16-row blocks per step, the last step's second block empty at N = 45) cover the row-block
loop and its prefetch across step boundaries.

Tolerance: the kernel widens X exactly to float32 (uint8, fp16 and bf16 values are exact there) and never rounds an
intermediate to the input dtype, so every dtype is checked at float32's row of the table against the oracle fed the
same rounded X. Over an epoch W receives the gradient of every row once, each step's update carrying the earlier
steps' rounding on, so the reduction length is the epoch's row count ``N``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Triton kernels need torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode (the interpreter when there is no CUDA device).
kernels = pytest.importorskip("linclass_gpu.kernels", reason="the Triton kernels need triton")

from helpers import random_features  # noqa: E402
from tolerances import assert_close  # noqa: E402

from linclass_gpu import oracle  # noqa: E402
from linclass_gpu.backends.triton_backend import TritonBackend  # noqa: E402
from linclass_gpu.kernels import epoch_sgd  # noqa: E402

DEVICE = "cpu" if kernels.INTERPRET else "cuda"
DTYPES = ("float32", "bfloat16", "float16", "uint8")
N_ROWS, BATCH, N_FEATURES, N_CLASSES = 37, 8, 13, 5
# (momentum, nesterov): plain SGD, heavy ball, Nesterov.
MOMENTA = [(0.0, False), (0.9, False), (0.9, True)]


def make_problem(rng, dtype, model, n_outputs, n_rows=N_ROWS, n_features=N_FEATURES):
    """Device X in ``dtype`` and the float64 values the kernel sees, the scale, targets, initial W and b."""
    X_dev, x_scale = random_features(rng, n_rows, n_features, dtype)
    X64 = X_dev.to(torch.float64).numpy()
    if model == "softmax":
        y = rng.integers(0, n_outputs, size=n_rows)
    else:
        y = rng.integers(0, 2, size=(n_rows, n_outputs)).astype(np.uint8)
    W = (rng.normal(size=(n_features, n_outputs)) * 0.3).astype(np.float32)
    b = rng.normal(size=n_outputs).astype(np.float32)
    return X_dev.to(DEVICE), X64, x_scale, y, W, b


def oracle_epoch(model, X64, y, W, b, order, learning_rates, batch, *, x_scale, l2, momentum, nesterov,
                 fit_intercept, sample_weight):
    """The float64 oracle stepped over the epoch: ``(W, b, velocity_W, velocity_b, summed weighted loss)``."""
    W, b = W.astype(np.float64), b.astype(np.float64)
    velocity_W, velocity_b = np.zeros_like(W), np.zeros_like(b)
    loss_sum = 0.0
    for step, learning_rate in enumerate(learning_rates):
        rows = order[step * batch:(step + 1) * batch]
        weights = None if sample_weight is None else sample_weight[rows].astype(np.float64)
        loss, W, b, velocity_W, velocity_b = oracle.sgd_step(
            model, X64[rows], y[rows], W, b, velocity_W, velocity_b, learning_rate=float(np.float32(learning_rate)),
            l2=l2, momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept, x_scale=x_scale,
            sample_weight=weights)
        loss_sum += loss * len(rows)
    return W, b, velocity_W, velocity_b, loss_sum


def run_kernel_epoch(model, X_dev, y, W, b, order, learning_rates, batch, *, x_scale, l2, momentum, nesterov,
                     fit_intercept, sample_weight):
    """One launch of the epoch kernel: ``(W, b, velocity_W, velocity_b, summed weighted loss)`` on the host."""
    n_outputs = W.shape[1]
    theta = torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE)
    velocity = torch.zeros_like(theta) if momentum else None
    loss = epoch_sgd.train_epoch(
        X_dev, torch.from_numpy(order).to(DEVICE), torch.from_numpy(y).to(DEVICE), theta, learning_rates,
        model=model, n_outputs=n_outputs, batch_size=batch, x_scale=x_scale, l2=l2, momentum=momentum,
        nesterov=nesterov, fit_intercept=fit_intercept, velocity=velocity,
        sample_weight=None if sample_weight is None else torch.from_numpy(sample_weight).to(DEVICE))
    n_weights = W.size
    host = theta.cpu().numpy()
    host_velocity = np.zeros_like(host) if velocity is None else velocity.cpu().numpy()
    return (host[:n_weights].reshape(W.shape), host[n_weights:], host_velocity[:n_weights].reshape(W.shape),
            host_velocity[n_weights:], loss.item())


def check_epoch(rng, model, dtype, n_outputs, *, momentum=0.0, nesterov=False, l2=0.0, weighted=False,
                fit_intercept=True, n_rows=N_ROWS, batch=BATCH):
    X_dev, X64, x_scale, y, W, b = make_problem(rng, dtype, model, n_outputs, n_rows)
    order = rng.permutation(n_rows)
    learning_rates = np.linspace(0.5, 0.2, -(-n_rows // batch))
    sample_weight = rng.uniform(0.0, 2.0, size=n_rows).astype(np.float32) if weighted else None
    options = dict(x_scale=x_scale, l2=l2, momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                   sample_weight=sample_weight)
    got = run_kernel_epoch(model, X_dev, y, W, b, order, learning_rates, batch, **options)
    expected = oracle_epoch(model, X64, y, W, b, order, learning_rates, batch, **options)
    length = n_rows
    for name, actual, wanted in zip(("W", "b", "velocity_W", "velocity_b", "loss"), got, expected):
        if momentum or not name.startswith("velocity"):  # without momentum the kernel keeps no velocity
            assert_close(actual, wanted, "float32", length, f"{model} {name}")
    if not fit_intercept:
        np.testing.assert_array_equal(got[1], b)  # b never moves without an intercept
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, nesterov", MOMENTA)
def test_softmax_epoch_matches_oracle(rng, dtype, momentum, nesterov):
    check_epoch(rng, "softmax", dtype, N_CLASSES, momentum=momentum, nesterov=nesterov, l2=0.05)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", ["sigmoid", "sigmoid_mse"])
def test_sigmoid_epoch_matches_oracle(rng, dtype, model):
    """K = 3 independent sigmoids, and the binary model (K = 1), with Nesterov momentum and L2."""
    check_epoch(rng, model, dtype, 3, momentum=0.5, nesterov=True, l2=0.05)
    check_epoch(rng, model, dtype, 1, momentum=0.5, l2=0.05)


@pytest.mark.parametrize("model, n_outputs", [("softmax", N_CLASSES), ("sigmoid", 3)])
def test_sample_weights_and_no_intercept(rng, model, n_outputs):
    check_epoch(rng, model, "uint8", n_outputs, momentum=0.9, l2=0.01, weighted=True, fit_intercept=False)
    check_epoch(rng, model, "float32", n_outputs, weighted=True)


@pytest.mark.parametrize("n_rows", [37, 45, 16])
def test_row_blocks_across_steps(rng, n_rows):
    """Batches of 20: two 16-row blocks per step, a last step of 17 rows (N = 37), 5 rows whose second block is
    empty (N = 45), or a single short step (N = 16)."""
    check_epoch(rng, "softmax", "float32", N_CLASSES, momentum=0.9, l2=0.05, n_rows=n_rows, batch=20)


def test_loss_accumulates_on_the_running_loss(rng):
    """The kernel adds the epoch's loss to what the accumulator holds (the running loss of the stepper)."""
    X_dev, _, x_scale, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES)
    order = torch.arange(N_ROWS, device=DEVICE)
    theta = torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE)
    config = epoch_sgd.epoch_config(N_FEATURES, N_CLASSES)
    loss = torch.full((1,), 100.0, dtype=torch.float64, device=DEVICE)
    # Rate 0: θ stays, so every step sees the same W.
    rates = torch.zeros(-(-N_ROWS // BATCH), dtype=torch.float32, device=DEVICE)
    epoch_sgd.launch_epoch_sgd(X_dev, order, torch.from_numpy(y).to(DEVICE), theta, loss, rates, model="softmax",
                               n_outputs=N_CLASSES, batch_size=BATCH, x_scale=x_scale, config=config)
    full_loss = oracle.softmax_loss_grad(X_dev.double().cpu().numpy(), y, W.astype(np.float64),
                                         b.astype(np.float64))[0]
    assert_close(loss.item() - 100.0, full_loss * N_ROWS, "float32", N_FEATURES, "summed loss")
    np.testing.assert_array_equal(theta.cpu().numpy(), np.concatenate([W.ravel(), b]))


def test_launcher_rejects_bad_input(rng):
    X_dev, _, _, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES)
    theta = torch.from_numpy(np.concatenate([W.ravel(), b]))
    order = torch.arange(N_ROWS)
    config = epoch_sgd.epoch_config(N_FEATURES, N_CLASSES)
    loss = torch.zeros(1, dtype=torch.float64)
    launch = epoch_sgd.launch_epoch_sgd
    with pytest.raises(ValueError, match="one per step"):
        launch(X_dev, order, torch.from_numpy(y), theta, loss, torch.zeros(3), model="softmax", n_outputs=N_CLASSES,
               batch_size=BATCH, x_scale=1.0, config=config)
    with pytest.raises(ValueError, match="velocity"):
        launch(X_dev, order, torch.from_numpy(y), theta, loss, torch.zeros(5), model="softmax", n_outputs=N_CLASSES,
               batch_size=BATCH, x_scale=1.0, config=config, momentum=0.9)
    with pytest.raises(ValueError, match="tiles of 32 features"):
        launch(X_dev, order, torch.from_numpy(y), theta, loss, torch.zeros(5), model="softmax", n_outputs=N_CLASSES,
               batch_size=BATCH, x_scale=1.0, config=epoch_sgd.epoch_config(100, N_CLASSES))
    assert epoch_sgd.epoch_config(1025, 10) is None and epoch_sgd.epoch_config(784, 17) is None
    with pytest.raises(ValueError, match="at most 1024 features"):
        epoch_sgd.train_epoch(torch.zeros((2, 1100)), torch.arange(2), torch.zeros(2, dtype=torch.int64),
                              torch.zeros(1100 * 2 + 2), [0.1], model="softmax", n_outputs=2, batch_size=2)


# ---------------------------------------------------------------------------------------------------------------------
# TritonFusedSGD.run_epoch: the epoch kernel against the per-step path of the same backend
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    return TritonBackend()


def stepper_epoch(backend, model, X_dev, y, W, b, order, learning_rates, *, use_epoch_kernel, **options):
    stepper = backend.fused_sgd(model, X_dev, y, W, b, max_batch_size=BATCH, **options)
    stepper.use_epoch_kernel = use_epoch_kernel
    steps = []
    stepper.run_epoch(torch.from_numpy(order).to(DEVICE), learning_rates, BATCH, steps.append)
    assert sum(steps) == len(learning_rates)
    return stepper, stepper.get_state(), stepper.pop_loss_sum()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model, n_outputs", [("softmax", N_CLASSES), ("sigmoid", 3), ("sigmoid_mse", 1)])
def test_run_epoch_matches_the_per_step_path(rng, backend, dtype, model, n_outputs):
    X_dev, _, x_scale, y, W, b = make_problem(rng, dtype, model, n_outputs)
    order = rng.permutation(N_ROWS)
    learning_rates = np.linspace(0.5, 0.2, -(-N_ROWS // BATCH))
    options = dict(l2=0.05, momentum=0.9, nesterov=model == "sigmoid", x_scale=x_scale,
                   sample_weight=rng.uniform(0.0, 2.0, size=N_ROWS).astype(np.float32))
    if n_outputs == 1:
        y = y[:, 0]
    fused, fused_state, fused_loss = stepper_epoch(backend, model, X_dev, y, W, b, order, learning_rates,
                                                   use_epoch_kernel=True, **options)
    assert fused.epoch_kernel_applies()
    _, stepped_state, stepped_loss = stepper_epoch(backend, model, X_dev, y, W, b, order, learning_rates,
                                                   use_epoch_kernel=False, **options)
    length = N_ROWS
    for key in ("W", "b", "velocity_W", "velocity_b"):
        assert_close(fused_state[key], stepped_state[key], "float32", length, key)
    assert int(fused_state["step_count"]) == int(stepped_state["step_count"]) == len(learning_rates)
    assert_close(fused_loss, stepped_loss, "float32", length, "loss")


@pytest.mark.parametrize("options", [dict(optimizer="adam"), dict(optimizer="adagrad"), dict(l1=0.01)])
def test_run_epoch_keeps_the_per_step_path_where_the_kernel_does_not_apply(rng, backend, options):
    """AdaGrad, Adam and L1 are not in the epoch kernel: run_epoch steps, and gives what stepping by hand gives."""
    X_dev, _, x_scale, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES)
    order = rng.permutation(N_ROWS)
    learning_rates = np.full(-(-N_ROWS // BATCH), 0.1)
    stepper, state, loss = stepper_epoch(backend, "softmax", X_dev, y, W, b, order, learning_rates,
                                         use_epoch_kernel=True, **options)
    assert not stepper.epoch_kernel_applies()
    by_hand = backend.fused_sgd("softmax", X_dev, y, W, b, max_batch_size=BATCH, **options)
    rows = torch.from_numpy(order).to(DEVICE)
    for step, learning_rate in enumerate(learning_rates):
        by_hand.step(rows[step * BATCH:(step + 1) * BATCH], float(learning_rate))
    for key, value in by_hand.get_state().items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    assert loss == by_hand.pop_loss_sum()


def test_run_epoch_rejects_a_wrong_number_of_rates(rng, backend):
    X_dev, _, _, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES)
    stepper = backend.fused_sgd("softmax", X_dev, y, W, b, max_batch_size=BATCH)
    with pytest.raises(ValueError, match="one rate per step"):
        stepper.run_epoch(torch.arange(N_ROWS), np.full(4, 0.1), BATCH)
