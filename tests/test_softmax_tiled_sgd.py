"""The tiled softmax step (``kernels/softmax_tiled_sgd.py``) against the float64 oracle, under the Triton interpreter.

Grids are kept small by passing a small ``target_programs``: with it the same few rows exercise several row splits
(C = 10: three 16-row blocks over up to three programs) and several class groups (C = 100: seven class tiles in
groups of two), so the flush of a split's partial, the per-group log-sum-exp partials and their merge all run.
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
from linclass_gpu.kernels import sgd_update, softmax_tiled_sgd  # noqa: E402

DEVICE = "cpu" if kernels.INTERPRET else "cuda"
H100_SMS = 132


def make_problem(rng, n_rows, n_features, n_classes, dtype, weighted=False):
    """Device inputs ``(X, y, theta, sample_weight, x_scale)`` and the float64 values the kernels see."""
    X, x_scale = random_features(rng, n_rows, n_features, dtype)
    W = (rng.normal(size=(n_features, n_classes)) / np.sqrt(n_features)).astype(np.float32)
    b = rng.normal(size=n_classes).astype(np.float32)
    y = rng.integers(0, n_classes, size=n_rows)
    weight = rng.uniform(0.0, 2.0, size=n_rows).astype(np.float32) if weighted else None
    device = dict(X=X.to(DEVICE), y=torch.from_numpy(y).to(DEVICE),
                  theta=torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE),
                  sample_weight=None if weight is None else torch.from_numpy(weight).to(DEVICE), x_scale=x_scale)
    return device, (X.to(torch.float64).numpy(), y, W.astype(np.float64), b.astype(np.float64), weight)


def oracle_loss_grad(X64, y, W, b, weight, x_scale):
    """Mean weighted cross-entropy and its gradient in float64 (the oracle's own function without weights)."""
    if weight is None:
        return oracle.softmax_loss_grad(X64, y, W, b, x_scale=x_scale)
    n_rows, n_classes = X64.shape[0], W.shape[1]
    P = oracle.softmax(x_scale * X64 @ W + b)
    dZ = (P - np.eye(n_classes)[y]) * weight[:, None] / n_rows
    return (-np.log(P[np.arange(n_rows), y]) * weight).mean(), x_scale * X64.T @ dZ, dZ.sum(axis=0)


def run_tiled(device, n_classes, **options):
    loss_sum, grad = softmax_tiled_sgd.softmax_tiled_loss_grad(
        device["X"], device["y"], device["theta"], n_classes, x_scale=device["x_scale"],
        sample_weight=device["sample_weight"], **options)
    return loss_sum, grad


def check_against_oracle(rng, n_rows, n_features, n_classes, dtype, *, weighted=False, **options):
    device, (X64, y, W, b, weight) = make_problem(rng, n_rows, n_features, n_classes, dtype, weighted)
    loss_sum, grad = run_tiled(device, n_classes, **options)
    loss, dW, db = oracle_loss_grad(X64, y, W, b, weight, device["x_scale"])
    grad = grad.cpu().numpy()
    n_weights = n_features * n_classes
    assert_close(loss_sum.item() / n_rows, loss, dtype, n_features, "loss")
    assert_close(grad[:n_weights].reshape(n_features, n_classes), dW, dtype, n_rows, "dW")
    assert_close(grad[n_weights:], db, dtype, n_rows, "db")


@pytest.mark.parametrize("deterministic", (False, True), ids=("atomics", "deterministic"))
@pytest.mark.parametrize("dtype", ("float32", "uint8", "bfloat16"))
@pytest.mark.parametrize("shape", [(37, 5, 10), (37, 33, 3), (1, 31, 16), (37, 7, 100)],
                         ids=lambda s: "N{}-D{}-C{}".format(*s))
def test_matches_oracle(shape, dtype, deterministic, rng):
    """One class tile (C ≤ 16: one launch) and several (C = 100: log-sum-exp partials of 4 groups, merged), odd D
    (a partial last feature chunk; 33 features take two), a lone row, masked tails, over 3 row splits or fewer."""
    check_against_oracle(rng, *shape, dtype, deterministic=deterministic, target_programs=8)


@pytest.mark.parametrize("deterministic", (False, True), ids=("atomics", "deterministic"))
@pytest.mark.parametrize("shape", [(37, 5, 10), (37, 7, 100)], ids=lambda s: "N{}-D{}-C{}".format(*s))
def test_sample_weights(shape, deterministic, rng):
    check_against_oracle(rng, *shape, "uint8", weighted=True, deterministic=deterministic, target_programs=8)


@pytest.mark.parametrize("dw_precision", ("tf32x3", "tf32"))
def test_tensor_core_dw_builds_run(dw_precision, rng):
    """The dW GEMM's tensor-core variants in 64-feature chunks (the interpreter computes them exactly: on a GPU
    ``tf32x3`` stays within the float32 tolerances and ``tf32`` rounds dZ to 10 bits)."""
    config = softmax_tiled_sgd.tiled_config(100, 10, dw_precision)
    assert (config.block_d, config.d_chunks, config.dw_precision) == (64, 2, dw_precision)
    check_against_oracle(rng, 37, 100, 10, "uint8", deterministic=True, target_programs=8, dw_precision=dw_precision)


def test_1000_classes(rng):
    """63 class tiles in 8 groups of 8 (the last holds 7), two row splits."""
    check_against_oracle(rng, 37, 5, 1000, "float32", deterministic=True, target_programs=16)


def test_32768_classes(rng):
    """The largest C the report compiles: 2048 class tiles in 4 groups, extra memory O(B · groups), not O(B · C).
    One row block (a masked tail of 11 lanes): the interpreter's time grows with tiles × row blocks (80 s or more)."""
    check_against_oracle(rng, 5, 5, 32768, "float32", target_programs=4)


@pytest.mark.parametrize("shape", [(37, 5, 10), (37, 7, 100)], ids=lambda s: "N{}-D{}-C{}".format(*s))
def test_deterministic_mode_is_bitwise_reproducible(shape, rng):
    device, _ = make_problem(rng, *shape, "float32", weighted=True)
    first = run_tiled(device, shape[2], deterministic=True, target_programs=8)
    second = run_tiled(device, shape[2], deterministic=True, target_programs=8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_layout_spreads_classes_then_rows_and_bounds_atomics():
    """Fast mode at the report's scale shapes: atomics per step are n_row_splits · (D·C + C + 1) (each split flushes
    dW, db and its loss once), at most 2 × SMs × that, whatever B."""
    layout = softmax_tiled_sgd.tiled_layout
    n_params = 784 * 10 + 10
    large_batch = layout(65536, 784, 10, target_programs=2 * H100_SMS)
    # 4096 row blocks in splits of 16: 256 programs, each flushing once.
    assert (large_batch.n_class_groups, large_batch.n_row_splits, large_batch.blocks_per_split) == (1, 256, 16)
    assert large_batch.atomics_per_step == 256 * (n_params + 1) <= 2 * H100_SMS * (n_params + 1)
    assert large_batch.n_row_splits * large_batch.blocks_per_split >= large_batch.n_row_blocks == 4096
    many_classes = layout(8192, 784, 32768, target_programs=2 * H100_SMS)
    assert many_classes.n_class_tiles == 2048 and many_classes.tiles_per_group == 8
    assert (many_classes.n_class_groups, many_classes.n_row_splits) == (256, 1)
    assert many_classes.programs <= 2 * H100_SMS
    assert many_classes.atomics_per_step == 784 * 32768 + 32768 + 1
    # Every program has work: no empty split or group.
    for shape in [(37, 5, 10), (1, 5, 10), (65536, 784, 1000), (100, 5, 33)]:
        chosen = layout(*shape, target_programs=8)
        assert (chosen.n_row_splits - 1) * chosen.blocks_per_split < chosen.n_row_blocks
        assert (chosen.n_class_groups - 1) * chosen.tiles_per_group < chosen.n_class_tiles


def test_deterministic_partials_stay_bounded():
    """The partial slices beyond the first stay under sgd_update.PARTIALS_BYTES: at C = 10 the row splits give the
    parallelism, at C = 32768 (one θ is 103 MB) the class groups alone do, with one slice."""
    for batch, n_classes in [(65536, 10), (8192, 1000), (8192, 32768), (60000, 100)]:
        chosen = softmax_tiled_sgd.tiled_layout(batch, 784, n_classes, deterministic=True)
        assert chosen.n_row_splits == 1 or chosen.partial_bytes <= sgd_update.PARTIALS_BYTES, (batch, n_classes)
        assert chosen.programs >= H100_SMS, (batch, n_classes, chosen)  # full parallelism in either mode
    assert softmax_tiled_sgd.tiled_layout(65536, 784, 10, deterministic=True).n_row_splits == 256
    # The log-sum-exp buffer: 12 bytes per row and class group, plus the merged row.
    groups_plus_merged, three, batch = softmax_tiled_sgd.lse_buffer_shape(8192, 32768)
    assert (groups_plus_merged, three, batch) == (257, 3, 8192)
    assert 4 * groups_plus_merged * three * batch < 8192 * 32768 * 4 / 10  # far below the logits' bytes


def test_launcher_checks_its_buffers(rng):
    device, _ = make_problem(rng, 20, 5, 100, "float32")
    config = softmax_tiled_sgd.tiled_config(5, 100)
    rows = torch.arange(20, device=DEVICE)
    arguments = dict(n_classes=100, x_scale=1.0, grad_scale=0.05, target_programs=8)
    grad, loss = torch.zeros(5 * 100 + 100, device=DEVICE), torch.zeros(1, dtype=torch.float64, device=DEVICE)
    with pytest.raises(ValueError, match="lse must be float32 of shape"):
        softmax_tiled_sgd.softmax_tiled_launches(device["X"], rows, device["y"], device["theta"], grad, loss, None,
                                                 config=config, **arguments)
    with pytest.raises(ValueError, match="does not fit D=5"):
        softmax_tiled_sgd.softmax_tiled_launches(device["X"], rows, device["y"], device["theta"], grad, loss, None,
                                                 config=softmax_tiled_sgd.tiled_config(100, 100), **arguments)
    assert softmax_tiled_sgd.tiled_config(1025, 10) is None
    with pytest.raises(ValueError, match="dw_precision must be one of"):
        softmax_tiled_sgd.tiled_config(5, 10, "tf32x6")


@pytest.mark.parametrize("tf32", (False, True), ids=("ieee", "tf32"))
@pytest.mark.parametrize("deterministic", (False, True), ids=("atomics", "deterministic"))
@pytest.mark.parametrize("n_classes", (10, 100))
def test_backend_steps_match_oracle(n_classes, deterministic, tf32, rng, monkeypatch):
    """``TritonFusedSGD`` with the tiled step forced on (on a GPU it is chosen at large B or C): 6 momentum steps of
    16 rows and a 5-row tail, weighted rows, against the oracle's steps; deterministic runs repeat bitwise. With
    ``tf32`` the dW GEMM takes its tensor-core build (exact under the interpreter)."""
    from linclass_gpu.backends.triton_backend import TritonBackend

    n_rows, n_features, batch_size = 37, 7, 16
    device, (X64, y, W, b, weight) = make_problem(rng, n_rows, n_features, n_classes, "uint8", weighted=True)
    W, b = W.astype(np.float32), b.astype(np.float32)
    orders = [rng.permutation(n_rows) for _ in range(2)]
    options = dict(l2=0.01, momentum=0.9, x_scale=device["x_scale"])
    bound = []  # the batch sizes whose tiled launches the backend bound
    launches = softmax_tiled_sgd.softmax_tiled_launches

    def counted(X, rows, *args, **kwargs):
        bound.append(rows.shape[0])
        assert kwargs["config"].dw_precision == ("tf32" if tf32 else "tf32x3")
        return launches(X, rows, *args, **kwargs)

    monkeypatch.setattr(softmax_tiled_sgd, "softmax_tiled_launches", counted)

    def run():
        backend = TritonBackend(deterministic=deterministic, tf32=tf32)
        stepper = backend.fused_sgd("softmax", device["X"], device["y"], W, b, max_batch_size=batch_size,
                                    sample_weight=weight, **options)
        stepper.use_tiled_step = True
        losses = []
        for order in orders:
            rows = backend.asarray(order)
            for start in range(0, n_rows, batch_size):
                stepper.step(rows[start:start + batch_size], 0.5)
            losses.append(stepper.pop_loss_sum())
        return stepper.get_params(), losses

    (W_fit, b_fit), losses = run()
    assert bound == [16, 5]  # bound once per batch size, then replayed
    W_ref, b_ref, vW, vb = W.astype(np.float64), b.astype(np.float64), np.zeros(W.shape), np.zeros(b.shape)
    for order, loss in zip(orders, losses):
        total = 0.0
        for start in range(0, n_rows, batch_size):
            rows = order[start:start + batch_size]
            step_loss, W_ref, b_ref, vW, vb, *_ = oracle.sgd_step(
                "softmax", X64[rows], y[rows], W_ref, b_ref, vW, vb, learning_rate=0.5, sample_weight=weight[rows],
                **options)
            total += step_loss * len(rows)
        assert_close(loss, total, "uint8", n_features, "epoch loss")
    assert_close(W_fit, W_ref, "uint8", n_rows, "W")
    assert_close(b_fit, b_ref, "uint8", n_rows, "b")
    if deterministic:
        (W_again, b_again), losses_again = run()
        assert np.array_equal(W_fit, W_again) and np.array_equal(b_fit, b_again) and losses == losses_again
