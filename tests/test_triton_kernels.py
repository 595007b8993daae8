"""The fused Triton kernels against the float64 oracle, under the Triton interpreter on a CPU-only machine.

Every output is compared (loss, dW, db, probabilities) with the one tolerance table, for each input dtype on odd
shapes: B not a multiple of the 16-row block (masked tails), D = 1 and 31 (padded feature tiles), 100 and 784 (X
resident: one class column at a time for C ≤ 64, else in 32-feature chunks, the last one partial) and 1100 (past the
resident limit: streamed in chunks), C = 2 (padded with −inf classes), 10, 37, 100 and 1000 (a class-tile loop with the
online log-sum-exp). The GEMMs run with
``input_precision="ieee"`` so TF32 cannot hide an error. Large C runs on few rows to keep CI time sane.
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
from linclass_gpu.kernels import sgd_update, sigmoid_sgd, softmax_sgd  # noqa: E402

DEVICE = "cpu" if kernels.INTERPRET else "cuda"

DTYPES = ("float32", "bfloat16", "float16", "uint8")
# (B, D, C): every B in {1, 17, 128}, D in {1, 31, 784}, C in {2, 10, 37, 1000} appears; C = 1000 only with few rows.
# D = 1100 is the streamed path of a single class tile (the resident tile stops at D = 1024).
SOFTMAX_SHAPES = [
    (1, 1, 2), (17, 31, 2), (128, 784, 2), (17, 784, 10), (128, 31, 10), (17, 1, 37), (128, 31, 37),
    (1, 784, 37), (17, 31, 1000), (1, 784, 1000), (17, 1100, 10),
]
SIGMOID_SHAPES = [(1, 1), (17, 31), (128, 784), (17, 784), (128, 1)]
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "uint8": torch.uint8}


def make_inputs(rng, n_rows, n_features, dtype, logit_scale=1.0):
    """X on the device in ``dtype``, the float64 values the kernel sees (already rounded), and the input scale."""
    X, x_scale = random_features(rng, n_rows, n_features, dtype)
    X_dev = X.to(DEVICE)
    X64 = X_dev.to(torch.float64).cpu().numpy()
    return X_dev, X64, x_scale


def make_params(rng, n_features, n_outputs, scale):
    W = (rng.normal(size=(n_features, n_outputs)) * scale).astype(np.float32)
    b = rng.normal(size=n_outputs).astype(np.float32)
    theta = torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE)
    return W, b, theta


def check_softmax(X_dev, X64, y, W, b, theta, x_scale, dtype, *, deterministic=False, sample_weight=None):
    n_rows, n_features = X64.shape
    n_classes = W.shape[1]
    y_dev = torch.from_numpy(y).to(DEVICE)
    weight_dev = None if sample_weight is None else torch.from_numpy(sample_weight).to(DEVICE)
    loss_sum, grad, probs = softmax_sgd.softmax_loss_grad(
        X_dev, y_dev, theta, n_classes, x_scale=x_scale, deterministic=deterministic, input_precision="ieee",
        sample_weight=weight_dev, return_probs=True)
    grad = grad.cpu().numpy()
    Z = x_scale * X64 @ W.astype(np.float64) + b
    if sample_weight is None:
        loss, dW, db = oracle.softmax_loss_grad(X64, y, W.astype(np.float64), b.astype(np.float64), x_scale=x_scale)
    else:  # weighted rows: loss Σ w_i CE_i / B, dZ_i = w_i (P_i − Y_i) / B
        P = oracle.softmax(Z)
        losses = -np.log(P[np.arange(n_rows), y])
        dZ = (P - np.eye(n_classes)[y]) * sample_weight[:, None] / n_rows
        loss, dW, db = (losses * sample_weight).mean(), x_scale * X64.T @ dZ, dZ.sum(axis=0)
    n_weights = n_features * n_classes
    assert_close(loss_sum.item() / n_rows, loss, dtype, n_features, "loss")
    assert_close(grad[:n_weights].reshape(n_features, n_classes), dW, dtype, n_rows, "dW")
    assert_close(grad[n_weights:], db, dtype, n_rows, "db")
    assert_close(probs.cpu().numpy(), oracle.softmax(Z), dtype, n_features, "probabilities")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: "B{}-D{}-C{}".format(*s))
def test_softmax_matches_oracle(dtype, shape, rng):
    n_rows, n_features, n_classes = shape
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    W, b, theta = make_params(rng, n_features, n_classes, scale=1.0 / np.sqrt(n_features))
    y = rng.integers(0, n_classes, size=n_rows)
    check_softmax(X_dev, X64, y, W, b, theta, x_scale, dtype)


def test_x_stays_resident_for_every_d_up_to_1024():
    """X[rows] is loaded once per row block wherever D ≤ 1024, in both reduction modes: one class column at a time
    over the whole tile when C fits one class tile (C ≤ 64), else as cdiv(D, 32) chunks that serve every class tile's
    tl.dot. Beyond D = 1024 the kernel streams it."""
    config = softmax_sgd.softmax_config
    for deterministic in (False, True):
        for n_features, n_classes in [(784, 10), (784, 2), (784, 37), (784, 64), (1024, 10), (31, 10), (1, 2)]:
            chosen = config(n_features, n_classes, deterministic)
            assert chosen.x_resident and chosen.one_class_tile, (n_features, n_classes, deterministic, chosen)
            assert chosen.x_chunks == 1 and chosen.block_d >= n_features and chosen.num_stages == 1
        for n_features, n_classes in [(784, 65), (784, 1000), (784, 32768), (1024, 1000), (31, 1000), (1, 100)]:
            chosen = config(n_features, n_classes, deterministic)
            assert chosen.x_resident and not chosen.one_class_tile, (n_features, n_classes, deterministic, chosen)
            # Only the last chunk may pass D: the kernel masks features there alone.
            assert (chosen.x_chunks - 1) * chosen.block_d < n_features <= chosen.x_chunks * chosen.block_d
        assert not config(1025, 10, deterministic).x_resident and config(1025, 10, deterministic).one_class_tile
        assert not config(1025, 65, deterministic).x_resident and not config(1025, 65, deterministic).one_class_tile


def test_launch_rejects_a_config_made_for_other_features(rng):
    X_dev, _, _ = make_inputs(rng, 4, 100, "float32")
    W, b, theta = make_params(rng, 100, 200, scale=0.1)
    with pytest.raises(ValueError, match="chunks of 32 features, X has 100"):
        softmax_sgd.launch_softmax_sgd(
            X_dev, torch.arange(4, device=DEVICE), torch.zeros(4, dtype=torch.int64, device=DEVICE), theta,
            torch.zeros_like(theta), torch.zeros(1, dtype=torch.float64, device=DEVICE), n_classes=200,
            x_scale=1.0, grad_scale=0.25, config=softmax_sgd.softmax_config(784, 200))


@pytest.mark.parametrize("dtype", ("float32", "uint8"))
@pytest.mark.parametrize("shape", [(17, 31, 10), (128, 784, 10), (17, 31, 1000), (17, 100, 100), (17, 1100, 10)],
                         ids=lambda s: "B{}-D{}-C{}".format(*s))
def test_softmax_deterministic_mode_matches_oracle(dtype, shape, rng):
    n_rows, n_features, n_classes = shape
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    W, b, theta = make_params(rng, n_features, n_classes, scale=1.0 / np.sqrt(n_features))
    y = rng.integers(0, n_classes, size=n_rows)
    check_softmax(X_dev, X64, y, W, b, theta, x_scale, dtype, deterministic=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(17, 31, 10), (1, 784, 37), (128, 1, 2)], ids=lambda s: "B{}-D{}-C{}".format(*s))
def test_softmax_all_rows_one_class(dtype, shape, rng):
    n_rows, n_features, n_classes = shape
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    W, b, theta = make_params(rng, n_features, n_classes, scale=1.0 / np.sqrt(n_features))
    y = np.full(n_rows, n_classes - 1)
    check_softmax(X_dev, X64, y, W, b, theta, x_scale, dtype)


def huge_logit_inputs(rng, n_rows, n_features, n_outputs, dtype):
    """Logits of about ±1e4 that fp32 represents exactly: small integer X (exact in every dtype) times integer W.

    Exact logits leave only the kernel's own rounding to compare (a logit of 1e4 rounded to fp32 is already off by
    5e-4, and so would be every probability, whatever the kernel did).
    """
    values = rng.integers(0 if dtype == "uint8" else -3, 4, size=(n_rows, n_features))
    X_dev = torch.from_numpy(values.astype(np.float32)).to(device=DEVICE, dtype=TORCH_DTYPES[dtype])
    W = rng.integers(-1000, 1001, size=(n_features, n_outputs)).astype(np.float32)
    b = rng.integers(-10, 11, size=n_outputs).astype(np.float32)
    theta = torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE)
    return X_dev, values.astype(np.float64), W, b, theta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(17, 31, 10), (17, 31, 1000)], ids=lambda s: "B{}-D{}-C{}".format(*s))
def test_softmax_huge_logits_stay_finite(dtype, shape, rng):
    """Logits of about ±1e4: exp of a raw logit would overflow; the kernel's log-sum-exp must not."""
    n_rows, n_features, n_classes = shape
    X_dev, X64, W, b, theta = huge_logit_inputs(rng, n_rows, n_features, n_classes, dtype)
    assert np.abs(X64 @ W).max() > 5e3
    y = rng.integers(0, n_classes, size=n_rows)
    loss_sum, grad, probs = softmax_sgd.softmax_loss_grad(
        X_dev, torch.from_numpy(y).to(DEVICE), theta, n_classes, return_probs=True)
    assert np.isfinite(loss_sum.item()) and torch.isfinite(grad).all() and torch.isfinite(probs).all()
    check_softmax(X_dev, X64, y, W, b, theta, 1.0, dtype)


@pytest.mark.parametrize("dtype", ("float32", "uint8"))
@pytest.mark.parametrize("shape", [(17, 31, 10), (17, 31, 1000)], ids=lambda s: "B{}-D{}-C{}".format(*s))
def test_softmax_sample_weights(dtype, shape, rng):
    n_rows, n_features, n_classes = shape
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    W, b, theta = make_params(rng, n_features, n_classes, scale=1.0 / np.sqrt(n_features))
    y = rng.integers(0, n_classes, size=n_rows)
    weight = rng.uniform(0.0, 3.0, size=n_rows).astype(np.float32)
    check_softmax(X_dev, X64, y, W, b, theta, x_scale, dtype, sample_weight=weight)


def check_sigmoid(X_dev, X64, y, w, b, theta, x_scale, dtype, *, deterministic=False):
    n_rows, n_features = X64.shape
    loss_sum, grad, probs = sigmoid_sgd.sigmoid_loss_grad(
        X_dev, torch.from_numpy(y.astype(np.float32)).to(DEVICE), theta, x_scale=x_scale,
        deterministic=deterministic, return_probs=True)
    grad = grad.cpu().numpy()
    loss, dw, db = oracle.sigmoid_loss_grad(X64, y, w.astype(np.float64), float(b), x_scale=x_scale)
    assert_close(loss_sum.item() / n_rows, loss, dtype, n_features, "loss")
    assert_close(grad[:n_features], np.reshape(dw, -1), dtype, n_rows, "dw")
    assert_close(grad[n_features], db, dtype, n_rows, "db")
    z = x_scale * X64 @ w.astype(np.float64) + float(b)
    assert_close(probs.cpu().numpy(), oracle.sigmoid(z), dtype, n_features, "probabilities")


@pytest.mark.parametrize("deterministic", (False, True), ids=("atomics", "deterministic"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SIGMOID_SHAPES, ids=lambda s: "B{}-D{}".format(*s))
def test_sigmoid_matches_oracle(dtype, shape, deterministic, rng):
    n_rows, n_features = shape
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    W, b, theta = make_params(rng, n_features, 1, scale=1.0 / np.sqrt(n_features))
    y = rng.integers(0, 2, size=n_rows)
    check_sigmoid(X_dev, X64, y, W[:, 0], b[0], theta, x_scale, dtype, deterministic=deterministic)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label", (0, 1))
def test_sigmoid_huge_logits_and_one_class(dtype, label, rng):
    """Logits of ±1e4 with every row of one class: BCE from logits stays finite and exact (no log σ(z))."""
    X_dev, X64, W, b, theta = huge_logit_inputs(rng, 17, 31, 1, dtype)
    assert np.abs(X64 @ W).max() > 5e3
    check_sigmoid(X_dev, X64, np.full(17, label), W[:, 0], b[0], theta, 1.0, dtype)


@pytest.mark.parametrize("dtype", ("float32", "uint8"))
@pytest.mark.parametrize("model", ("softmax", "sigmoid"))
def test_gathered_rows_and_masked_tail(model, dtype, rng):
    """The step kernel on a minibatch of row indices (with a repeat) equals the oracle on X[rows]."""
    n_rows, n_features, n_classes = 50, 31, (10 if model == "softmax" else 1)
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    W, b, theta = make_params(rng, n_features, n_classes, scale=0.3)
    y = rng.integers(0, n_classes if model == "softmax" else 2, size=n_rows)
    rows = np.concatenate([rng.permutation(n_rows)[:20], [3]])  # B = 21: one full block and a masked tail
    grad = torch.zeros(theta.numel(), dtype=torch.float32, device=DEVICE)
    loss = torch.zeros(1, dtype=torch.float64, device=DEVICE)
    rows_dev, batch = torch.from_numpy(rows).to(DEVICE), len(rows)
    if model == "softmax":
        softmax_sgd.launch_softmax_sgd(
            X_dev, rows_dev, torch.from_numpy(y).to(DEVICE), theta, grad, loss, n_classes=n_classes, x_scale=x_scale,
            grad_scale=1.0 / batch, config=softmax_sgd.softmax_config(n_features, n_classes))
        ref_loss, dW, db = oracle.softmax_loss_grad(X64[rows], y[rows], W.astype(np.float64), b.astype(np.float64),
                                                    x_scale=x_scale)
    else:
        sigmoid_sgd.launch_sigmoid_sgd(
            X_dev, rows_dev, torch.from_numpy(y.astype(np.float32)).to(DEVICE), theta, grad, loss, x_scale=x_scale,
            grad_scale=1.0 / batch, config=sigmoid_sgd.sigmoid_config(n_features))
        ref_loss, dW, db = oracle.sigmoid_loss_grad(X64[rows], y[rows], W[:, 0].astype(np.float64), float(b[0]),
                                                    x_scale=x_scale)
    grad = grad.cpu().numpy()
    assert_close(loss.item() / batch, ref_loss, dtype, n_features, "loss")
    assert_close(grad[:n_features * n_classes], np.reshape(dW, -1), dtype, batch, "dW")
    assert_close(grad[n_features * n_classes:], np.reshape(db, -1), dtype, batch, "db")


@pytest.mark.parametrize("momentum, nesterov, l2, fit_intercept, l1, adagrad", [
    (0.0, False, 0.0, True, 0.0, False), (0.9, False, 1e-2, True, 0.0, False), (0.9, True, 1e-3, False, 0.0, False),
    (0.0, False, 0.0, True, 1.0, False), (0.9, True, 1e-2, True, 1.0, False),
    (0.0, False, 0.0, True, 0.0, True), (0.0, False, 1e-2, False, 0.3, True),
    (0.0, False, 0.0, True, 0.0, "adam"), (0.0, False, 1e-2, False, 0.3, "adam"),
])
def test_update_kernel_matches_oracle_step(momentum, nesterov, l2, fit_intercept, l1, adagrad, rng):
    """The second launch: L2 and L1 (proximal) on W only, (Nesterov) momentum, AdaGrad or Adam (at its third
    step), frozen intercept, accumulator reset to zero."""
    adam, adagrad = adagrad == "adam", adagrad is True
    n_features, n_classes = 31, 10
    W, b, theta = make_params(rng, n_features, n_classes, scale=0.3)
    grad_host = rng.normal(size=theta.numel()).astype(np.float32)
    grad = torch.from_numpy(grad_host.copy()).to(DEVICE)
    velocity = torch.from_numpy(rng.normal(size=theta.numel()).astype(np.float32)).to(DEVICE)
    v0 = velocity.cpu().numpy().astype(np.float64)
    sums_host = rng.uniform(0, 2, size=theta.numel()).astype(np.float32)
    sums = torch.from_numpy(sums_host.copy()).to(DEVICE) if adagrad or adam else None
    n_weights = n_features * n_classes
    sgd_update.launch_sgd_update(theta, grad, n_weights=n_weights, learning_rate=0.1, l2=l2, l1=l1,
                                 momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                                 velocity=velocity if momentum or adam else None, accumulator=sums,
                                 eps=1e-8 if adam else 1e-10, adam_step=3 if adam else 0)
    g = grad_host.astype(np.float64)
    g[:n_weights] += l2 * W.ravel()
    params = np.concatenate([W.ravel(), b]).astype(np.float64)
    if adagrad:
        expected, expected_sums, step_size = oracle._adagrad_update(params, g, sums_host.astype(np.float64), 0.1)
    elif adam:
        expected, _, expected_sums, step_size = oracle._adam_update(params, g, v0, sums_host.astype(np.float64),
                                                                    0.1, 3)
    else:
        v = momentum * v0 + g
        step = (g + momentum * v if nesterov else v) if momentum else g
        expected, step_size = params - 0.1 * step, np.full_like(params, 0.1)
    # L1's soft-thresholding by s·l1 on W only; the bias keeps its plain step.
    if l1:
        expected[:n_weights] = oracle.soft_threshold(expected[:n_weights], step_size[:n_weights] * l1)
    if not fit_intercept:
        expected[n_weights:] = b
    assert_close(theta.cpu().numpy(), expected, "float32", 1, "theta")
    if adagrad or adam:
        if not fit_intercept:
            expected_sums[n_weights:] = sums_host[n_weights:]
        assert_close(sums.cpu().numpy(), expected_sums, "float32", 1, "AdaGrad's sums of squares")
    assert not grad.any(), "the atomic accumulator must be zeroed for the next step"


@pytest.mark.parametrize("n_programs", (1, 2, 3))
@pytest.mark.parametrize("model, n_features, n_classes", [("softmax", 31, 37), ("softmax", 784, 10),
                                                          ("softmax", 31, 100), ("sigmoid", 31, 1)])
def test_deterministic_programs_taking_several_row_blocks(model, n_features, n_classes, n_programs, rng):
    """Fewer programs than row blocks (what the partial-buffer cap does for huge models): each program overwrites its
    slice on its first block and adds on the later ones; the update kernel's fixed-order reduce gives the gradient.
    Bitwise the same when run again."""
    n_rows = 70  # 5 row blocks, the last a tail
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, "uint8")
    W, b, theta = make_params(rng, n_features, n_classes, scale=0.3)
    y = rng.integers(0, n_classes if model == "softmax" else 2, size=n_rows)
    rows = rng.permutation(n_rows)
    n_params = theta.numel()
    common = dict(x_scale=x_scale, grad_scale=1.0 / n_rows, max_programs=n_programs, deterministic=True)

    def launch():
        partials = torch.full((n_programs, n_params), float("nan"), device=DEVICE)  # must be overwritten, never read
        loss_partials = torch.full((n_programs,), float("nan"), device=DEVICE)
        if model == "softmax":
            used = softmax_sgd.launch_softmax_sgd(
                X_dev, torch.from_numpy(rows).to(DEVICE), torch.from_numpy(y).to(DEVICE), theta, partials,
                loss_partials, n_classes=n_classes,
                config=softmax_sgd.softmax_config(n_features, n_classes, True), **common)
        else:
            used = sigmoid_sgd.launch_sigmoid_sgd(
                X_dev, torch.from_numpy(rows).to(DEVICE), torch.from_numpy(y.astype(np.float32)).to(DEVICE), theta,
                partials, loss_partials, config=sigmoid_sgd.sigmoid_config(n_features), **common)
        return used, partials, loss_partials

    used, partials, loss_partials = launch()
    _, partials_again, loss_partials_again = launch()
    assert partials.cpu().numpy().tobytes() == partials_again.cpu().numpy().tobytes()
    assert loss_partials.cpu().numpy().tobytes() == loss_partials_again.cpu().numpy().tobytes()
    if model == "softmax":
        ref_loss, dW, db = oracle.softmax_loss_grad(X64, y, W.astype(np.float64), b.astype(np.float64), x_scale)
    else:
        ref_loss, dW, db = oracle.sigmoid_loss_grad(X64, y, W[:, 0].astype(np.float64), float(b[0]), x_scale)
    assert used == n_programs
    grad = torch.empty(n_params, device=DEVICE)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=DEVICE)
    sgd_update.launch_sgd_update(theta, partials, n_weights=n_features * n_classes, deterministic=True,
                                 n_partials=used, loss_partials=loss_partials, loss_sum=loss_sum, grad_out=grad)
    grad = grad.cpu().numpy()
    assert_close(loss_sum.item() / n_rows, ref_loss, "uint8", n_features, "loss")
    assert_close(grad[:n_features * n_classes], np.reshape(dW, -1), "uint8", n_rows, "dW")
    assert_close(grad[n_features * n_classes:], np.reshape(db, -1), "uint8", n_rows, "db")


hypothesis = pytest.importorskip("hypothesis", reason="the property test needs hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, derandomize=True)
@given(dtype=st.sampled_from(DTYPES), n_rows=st.integers(1, 40), n_features=st.integers(1, 80),
       n_classes=st.integers(1, 80), deterministic=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_any_shape_matches_oracle(dtype, n_rows, n_features, n_classes, deterministic, seed):
    """Arbitrary small shapes (n_classes = 1 stands for the sigmoid model): every output within the table."""
    rng = np.random.default_rng(seed)
    X_dev, X64, x_scale = make_inputs(rng, n_rows, n_features, dtype)
    if n_classes == 1:
        W, b, theta = make_params(rng, n_features, 1, scale=1.0 / np.sqrt(n_features))
        check_sigmoid(X_dev, X64, rng.integers(0, 2, size=n_rows), W[:, 0], b[0], theta, x_scale, dtype,
                      deterministic=deterministic)
    else:
        W, b, theta = make_params(rng, n_features, n_classes, scale=1.0 / np.sqrt(n_features))
        check_softmax(X_dev, X64, rng.integers(0, n_classes, size=n_rows), W, b, theta, x_scale, dtype,
                      deterministic=deterministic)


@pytest.mark.parametrize("dtype", ("float32",))  # a minute under the interpreter: one dtype (others run at C = 1000)
def test_softmax_32768_classes_on_two_rows(dtype, rng):
    """The largest C the report compiles, run: 512 class tiles swept twice, extra memory O(B)."""
    X_dev, X64, x_scale = make_inputs(rng, 2, 31, dtype)
    W, b, theta = make_params(rng, 31, 32768, scale=0.2)
    check_softmax(X_dev, X64, np.array([0, 32767]), W, b, theta, x_scale, dtype)
