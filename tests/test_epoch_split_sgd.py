"""The multi-program epoch kernel (kernels/epoch_split_sgd.py) over whole epochs, under the Triton interpreter.

The interpreter runs a grid's programs one after another, so the fused kernel's spin barrier can only run with one
program (it then waits for itself). P > 1 is checked through the phased harness, ``run_split_phases``: the same
phase functions, each phase its own launch, the kernel boundary standing in for the barrier. It tests the feature
split, the exchange of partial logits and its fixed-order sum, the replicated bias and the per-slice updates, not
the barrier itself (which only a GPU can exercise). The fused kernel with one program gives bitwise what the phased
harness gives with one program, which ties the two.

Shapes: N = 37 rows in batches of 8 (a 5-row last step), D = 40 features in P = 3 slices of 16 (the last slice half
empty), K = 5 classes or 3 (and 1) sigmoid outputs; batches of 20 (32-row steps in two 16-row blocks, a 17-row or
5-row last step). Every epoch is compared with the float64 oracle stepped over the same order (test_epoch_kernel's
``oracle_epoch``), at float32's row of the tolerance table with the epoch's row count as the reduction length, as
the single-program epoch kernel is.

The tensor-core mode (``precision="mma"``) runs as fp16 hi/lo pairs for uint8 and fp16 X (W ≈ c·(W_hi + W_lo) and
dZ likewise, ~22 significant bits, X exact), which the interpreter computes as it would on a GPU up to the
summation order of the fp32 accumulation: it meets the same float32 row of the table against the oracle, and stays
within 8 float32 ulps (of max|W|) of the FMA mode after an epoch. For float32 and bfloat16 X the mode is tf32x3,
which the interpreter computes as ieee: only the GPU can check its rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Triton kernels need torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode (the interpreter when there is no CUDA device).
kernels = pytest.importorskip("linclass_gpu.kernels", reason="the Triton kernels need triton")

from test_epoch_kernel import DEVICE, DTYPES, MOMENTA, make_problem, oracle_epoch  # noqa: E402
from tolerances import assert_close  # noqa: E402

from linclass_gpu.backends.triton_backend import TritonBackend  # noqa: E402
from linclass_gpu.kernels import epoch_split_sgd  # noqa: E402

N_ROWS, BATCH, N_FEATURES, N_CLASSES = 37, 8, 40, 5
# Three programs over D = 40: slices of 16, 16 and 8 features.
PROGRAMS = 3
# One program: a slice of 32 features (the FMA mode's widest), 3 of them padding.
FUSED_FEATURES = 29


def run_split_epoch(model, X_dev, y, W, b, order, learning_rates, batch, *, max_programs, phased, precision="ieee",
                    **options):
    """One epoch of the split kernel: ``(W, b, velocity_W, velocity_b, summed weighted loss)`` on the host."""
    theta = torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE)
    velocity = torch.zeros_like(theta) if options["momentum"] else None
    sample_weight = options.pop("sample_weight")
    loss = epoch_split_sgd.train_epoch(
        X_dev, torch.from_numpy(order).to(DEVICE), torch.from_numpy(y).to(DEVICE), theta, learning_rates, model=model,
        n_outputs=W.shape[1], batch_size=batch, velocity=velocity, precision=precision, max_programs=max_programs,
        phased=phased, sample_weight=None if sample_weight is None else torch.from_numpy(sample_weight).to(DEVICE),
        **options)
    host = theta.cpu().numpy()
    host_velocity = np.zeros_like(host) if velocity is None else velocity.cpu().numpy()
    return (host[:W.size].reshape(W.shape), host[W.size:], host_velocity[:W.size].reshape(W.shape),
            host_velocity[W.size:], loss.item())


def check_split_epoch(rng, model, dtype, n_outputs, *, momentum=0.0, nesterov=False, l2=0.0, weighted=False,
                      fit_intercept=True, n_rows=N_ROWS, batch=BATCH, max_programs=PROGRAMS, phased=True,
                      precision="ieee", n_features=N_FEATURES):
    X_dev, X64, x_scale, y, W, b = make_problem(rng, dtype, model, n_outputs, n_rows, n_features)
    order = rng.permutation(n_rows)
    learning_rates = np.linspace(0.5, 0.2, -(-n_rows // batch))
    sample_weight = rng.uniform(0.0, 2.0, size=n_rows).astype(np.float32) if weighted else None
    options = dict(x_scale=x_scale, l2=l2, momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                   sample_weight=sample_weight)
    expected = oracle_epoch(model, X64, y, W, b, order, learning_rates, batch, **options)
    got = run_split_epoch(model, X_dev, y, W, b, order, learning_rates, batch, max_programs=max_programs,
                          phased=phased, precision=precision, **options)
    for name, actual, wanted in zip(("W", "b", "velocity_W", "velocity_b", "loss"), got, expected):
        if momentum or not name.startswith("velocity"):  # without momentum the kernel keeps no velocity
            assert_close(actual, wanted, "float32", n_rows, f"{model} {name}")
    if not fit_intercept:
        np.testing.assert_array_equal(got[1], b)  # b never moves without an intercept
    return got


def test_config_splits_the_features():
    config = epoch_split_sgd.split_config(N_FEATURES, N_CLASSES, BATCH, torch.float32, max_programs=PROGRAMS)
    assert (config.programs, config.slice_d, config.block_b) == (3, 16, 16)
    # MNIST: 13 programs of 64 features for the fp16 passes, which take the step's 128 rows at once; 25 programs of
    # 32 features for tf32x3 and FMA, which takes 16 rows at a time.
    mnist = epoch_split_sgd.split_config(784, 10, 128, torch.uint8, "mma")
    assert (mnist.programs, mnist.slice_d, mnist.block_b, mnist.dot, mnist.block_rows) == (13, 64, 128, "fp16x2", 128)
    tf32 = epoch_split_sgd.split_config(784, 10, 128, torch.float32, "mma")
    assert (tf32.programs, tf32.slice_d, tf32.dot) == (25, 32, "tf32x3")
    fma = epoch_split_sgd.split_config(784, 10, 100, torch.uint8)
    assert (fma.programs, fma.slice_d, fma.block_b, fma.block_rows) == (25, 32, 128, 16)
    for outside in ((1025, 10, 128), (784, 17, 128), (784, 10, 129)):
        assert epoch_split_sgd.split_config(*outside, torch.float32) is None, outside


@pytest.mark.parametrize("dtype", DTYPES)
def test_phased_softmax_epoch_matches_oracle(rng, dtype):
    check_split_epoch(rng, "softmax", dtype, N_CLASSES, momentum=0.9, l2=0.05)


@pytest.mark.parametrize("momentum, nesterov", MOMENTA)
def test_phased_momentum_rules(rng, momentum, nesterov):
    check_split_epoch(rng, "softmax", "float32", N_CLASSES, momentum=momentum, nesterov=nesterov, l2=0.05)


@pytest.mark.parametrize("model", ["sigmoid", "sigmoid_mse"])
def test_phased_sigmoid_epoch_matches_oracle(rng, model):
    """K = 3 independent sigmoids with Nesterov momentum, and the binary model (K = 1)."""
    check_split_epoch(rng, model, "uint8", 3, momentum=0.5, nesterov=True, l2=0.05)
    check_split_epoch(rng, model, "bfloat16", 1, momentum=0.5, l2=0.05)


@pytest.mark.parametrize("model, n_outputs", [("softmax", N_CLASSES), ("sigmoid", 3)])
def test_phased_sample_weights_and_no_intercept(rng, model, n_outputs):
    check_split_epoch(rng, model, "uint8", n_outputs, momentum=0.9, l2=0.01, weighted=True, fit_intercept=False)
    check_split_epoch(rng, model, "float32", n_outputs, weighted=True)


@pytest.mark.parametrize("n_rows", [37, 45, 16])
def test_phased_row_blocks_and_short_steps(rng, n_rows):
    """Batches of 20: 32-row steps in two 16-row blocks, a last step of 17 rows (N = 37), 5 rows whose second block
    is empty (N = 45), or a single short step (N = 16)."""
    check_split_epoch(rng, "softmax", "float32", N_CLASSES, momentum=0.9, l2=0.05, n_rows=n_rows, batch=20)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_phased_tensor_core_mode_matches_oracle(rng, dtype):
    """fp16 hi/lo pairs (uint8, fp16 X; tf32x3 for float32 X) over three programs, in 32-row steps of one block."""
    check_split_epoch(rng, "softmax", dtype, N_CLASSES, momentum=0.9, l2=0.05, precision="mma")
    check_split_epoch(rng, "sigmoid", dtype, 3, momentum=0.5, nesterov=True, weighted=True, batch=20,
                      precision="mma")


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
@pytest.mark.parametrize("model, n_outputs", [("softmax", N_CLASSES), ("sigmoid", 3)])
def test_fp16_pairs_agree_with_fma_to_a_few_ulps(rng, dtype, model, n_outputs):
    """The fp16 hi/lo passes are fp32-grade: after an epoch over three programs, W, v and b differ from the FMA
    mode's by at most 8 float32 ulps of max|W| (the loss by 8 ulps of itself)."""
    X_dev, _, x_scale, y, W, b = make_problem(rng, dtype, model, n_outputs, N_ROWS, N_FEATURES)
    order = rng.permutation(N_ROWS)
    rates = np.linspace(0.5, 0.2, -(-N_ROWS // BATCH))
    options = dict(x_scale=x_scale, l2=0.05, momentum=0.9, nesterov=False, fit_intercept=True, sample_weight=None)
    fma, pairs = (run_split_epoch(model, X_dev, y, W, b, order, rates, BATCH, max_programs=PROGRAMS, phased=True,
                                  precision=precision, **dict(options)) for precision in ("ieee", "mma"))
    ulp = np.finfo(np.float32).eps
    for name, fma_value, pairs_value in zip(("W", "b", "velocity_W", "velocity_b"), fma, pairs):
        np.testing.assert_allclose(pairs_value, fma_value, rtol=0, atol=8 * ulp * np.abs(fma[0]).max(), err_msg=name)
    np.testing.assert_allclose(pairs[4], fma[4], rtol=8 * ulp)


@pytest.mark.parametrize("model, n_outputs, dtype, precision", [
    ("softmax", N_CLASSES, "uint8", "ieee"), ("softmax", N_CLASSES, "float32", "ieee"),
    ("sigmoid", 3, "bfloat16", "ieee"), ("softmax", N_CLASSES, "uint8", "mma")])
def test_fused_kernel_with_one_program(rng, model, n_outputs, dtype, precision):
    """The fused kernel (one launch, barrier included) with P = 1 matches the oracle, and bitwise the phased harness
    with P = 1; batches of 20 cross its prefetch over 32-row steps with a short last one."""
    fused = check_split_epoch(rng, model, dtype, n_outputs, momentum=0.9, l2=0.05, weighted=True, batch=20,
                              max_programs=1, phased=False, precision=precision, n_features=FUSED_FEATURES)
    rng_again = np.random.default_rng(0)
    X_dev, _, x_scale, y, W, b = make_problem(rng_again, dtype, model, n_outputs, N_ROWS, FUSED_FEATURES)
    order = rng_again.permutation(N_ROWS)
    rates = np.linspace(0.5, 0.2, -(-N_ROWS // 20))
    options = dict(x_scale=x_scale, l2=0.05, momentum=0.9, nesterov=False, fit_intercept=True, sample_weight=None)
    runs = [run_split_epoch(model, X_dev, y, W, b, order, rates, 20, max_programs=1, phased=phased,
                            precision=precision, **dict(options)) for phased in (False, True)]
    for fused_value, phased_value in zip(*runs):
        np.testing.assert_array_equal(fused_value, phased_value)
    assert np.isfinite(fused[4])


def test_fused_launch_leaves_the_barrier_zero_and_adds_to_the_loss(rng):
    X_dev, _, x_scale, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES, N_ROWS, FUSED_FEATURES)
    config = epoch_split_sgd.split_config(FUSED_FEATURES, N_CLASSES, BATCH, torch.float32, max_programs=1)
    exchange, barrier = epoch_split_sgd.split_workspace(config, DEVICE)
    theta = torch.from_numpy(np.concatenate([W.ravel(), b])).to(DEVICE)
    loss = torch.full((1,), 100.0, dtype=torch.float64, device=DEVICE)
    rates = torch.zeros(-(-N_ROWS // BATCH), dtype=torch.float32, device=DEVICE)
    for _ in range(2):  # the same workspace serves the next epoch
        epoch_split_sgd.launch_epoch_split_sgd(
            X_dev, torch.arange(N_ROWS, device=DEVICE), torch.from_numpy(y).to(DEVICE), theta, loss, rates,
            model="softmax", n_outputs=N_CLASSES, batch_size=BATCH, x_scale=x_scale, config=config,
            exchange=exchange, barrier=barrier)
        assert barrier.tolist() == [0, 0]
    assert loss.item() > 100.0
    np.testing.assert_array_equal(theta.cpu().numpy(), np.concatenate([W.ravel(), b]))  # rate 0: θ stays


def test_launchers_reject_bad_input(rng):
    X_dev, _, _, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES, N_ROWS, N_FEATURES)
    theta = torch.from_numpy(np.concatenate([W.ravel(), b]))
    order, labels, loss = torch.arange(N_ROWS), torch.from_numpy(y), torch.zeros(1, dtype=torch.float64)
    rates = torch.zeros(-(-N_ROWS // BATCH))
    three = epoch_split_sgd.split_config(N_FEATURES, N_CLASSES, BATCH, torch.float32, max_programs=PROGRAMS)
    exchange, barrier = epoch_split_sgd.split_workspace(three, DEVICE)
    common = dict(model="softmax", n_outputs=N_CLASSES, batch_size=BATCH, x_scale=1.0)
    if kernels.INTERPRET:
        with pytest.raises(ValueError, match="grid barrier forever"):
            epoch_split_sgd.launch_epoch_split_sgd(X_dev, order, labels, theta, loss, rates, config=three,
                                                   exchange=exchange, barrier=barrier, **common)
    with pytest.raises(ValueError, match="slices of 16 features"):
        epoch_split_sgd.run_split_phases(X_dev[:, :8].contiguous(), order, labels, theta[-(8 + 1) * N_CLASSES:], loss,
                                         rates, config=three, **common)
    uint8_mma = epoch_split_sgd.split_config(N_FEATURES, N_CLASSES, BATCH, torch.uint8, "mma", PROGRAMS)
    with pytest.raises(ValueError, match="not exact"):
        epoch_split_sgd.run_split_phases(X_dev, order, labels, theta, loss, rates, config=uint8_mma, **common)
    with pytest.raises(ValueError, match="one per step"):
        epoch_split_sgd.run_split_phases(X_dev, order, labels, theta, loss, rates[:2], config=three, **common)
    with pytest.raises(ValueError, match="precision"):
        epoch_split_sgd.split_config(N_FEATURES, N_CLASSES, BATCH, torch.float32, "tf32")


# ---------------------------------------------------------------------------------------------------------------------
# TritonFusedSGD.run_epoch: the split kernel where the backend allows it, against the per-step path
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split_precision", ["ieee", "mma"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_run_epoch_takes_the_split_kernel_where_the_backend_allows(rng, monkeypatch, split_precision, dtype):
    """A backend that reports an sm_90 GPU (here: the interpreter, told so) trains the epoch on the split kernel, one
    program at D = 13 (one 16-feature slice), and matches the per-step path; with fewer SMs than programs it keeps
    the single-program one."""
    backend = TritonBackend()
    monkeypatch.setattr(backend, "split_epoch_supported", True)
    monkeypatch.setattr(backend, "multiprocessor_count", 132)
    X_dev, _, x_scale, y, W, b = make_problem(rng, dtype, "softmax", N_CLASSES, N_ROWS, 13)
    order = torch.from_numpy(rng.permutation(N_ROWS)).to(DEVICE)
    learning_rates = np.linspace(0.5, 0.2, -(-N_ROWS // BATCH))
    options = dict(l2=0.05, momentum=0.9, x_scale=x_scale)
    states = []
    for use_epoch_kernel in (True, False):
        stepper = backend.fused_sgd("softmax", X_dev, y, W, b, max_batch_size=BATCH, **options)
        stepper.use_epoch_kernel, stepper.split_precision = use_epoch_kernel, split_precision
        stepper.run_epoch(order, learning_rates, BATCH)
        states.append((stepper.get_state(), stepper.pop_loss_sum()))
        if use_epoch_kernel:
            config = stepper._split_epoch(BATCH)[0]
            assert (config.programs, config.dot) == (1, epoch_split_sgd.dot_products(split_precision, X_dev.dtype))
    (split_state, split_loss), (stepped_state, stepped_loss) = states
    for key in ("W", "b", "velocity_W", "velocity_b"):
        assert_close(split_state[key], stepped_state[key], "float32", N_ROWS, key)
    assert_close(split_loss, stepped_loss, "float32", N_ROWS, "loss")
    monkeypatch.setattr(backend, "multiprocessor_count", 0)
    assert backend.fused_sgd("softmax", X_dev, y, W, b, max_batch_size=BATCH, **options)._split_epoch(BATCH) is None


def test_backend_keeps_the_single_program_kernel_under_the_interpreter(rng):
    backend = TritonBackend()
    X_dev, _, _, y, W, b = make_problem(rng, "float32", "softmax", N_CLASSES, N_ROWS, N_FEATURES)
    stepper = backend.fused_sgd("softmax", X_dev, y, W, b, max_batch_size=BATCH)
    assert backend.split_epoch_supported is not kernels.INTERPRET
    if kernels.INTERPRET:
        assert stepper.epoch_kernel_applies() and stepper._split_epoch(BATCH) is None


# ---------------------------------------------------------------------------------------------------------------------
# On a GPU: the fused kernel with P > 1, its grid barrier included (the interpreter cannot run it)
# ---------------------------------------------------------------------------------------------------------------------

# Run in a child process with a time limit: a barrier that never opens would hang the launch, not fail it.
GPU_CHECK = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_epoch_split_sgd import check_split_epoch
rng = np.random.default_rng(20261204)
for precision in ("ieee", "mma"):
    for dtype in ("uint8", "float32"):
        check_split_epoch(rng, "softmax", dtype, 5, momentum=0.9, l2=0.05, max_programs=3, phased=False,
                          precision=precision)
    check_split_epoch(rng, "sigmoid", "uint8", 3, momentum=0.5, nesterov=True, weighted=True, batch=20,
                      max_programs=3, phased=False, precision=precision)
    check_split_epoch(rng, "softmax", "uint8", 10, momentum=0.9, l2=1e-4, n_rows=300, batch=128, phased=False,
                      precision=precision, n_features=784, max_programs=32)
print("split epoch kernel: fused multi-program epochs match the oracle")
"""


@pytest.mark.skipif(kernels.INTERPRET, reason="the grid barrier needs P programs running at once: a CUDA device")
def test_fused_kernel_with_several_programs_on_the_gpu():
    """P = 3 over D = 40, and MNIST's 784 features over 13 (fp16 pairs) or 25 (FMA, tf32x3) programs in 128-row
    steps, against the oracle."""
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-c", GPU_CHECK.format(tests=str(Path(__file__).parent))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
