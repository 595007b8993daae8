"""The CuPy backend: its CUDA source built for the GPU, run on the CPU, and run for real where a GPU exists.

No machine of this project has a GPU, so the CUDA kernels are checked three ways without one:

1. nvcc, and NVRTC where its library is installed (CuPy's run-time compiler; it needs no GPU), build
   ``cuda_rowwise.cu`` for sm_80 and sm_90 with the ``-D`` options CuPy uses, warning-free and without register
   spills (cuobjdump's LOCAL and STACK bytes);
2. ``cuda_warp_emulator.cpp`` runs that same source on the CPU (each lane a coroutine, shuffles where all 32 meet)
   under :class:`CupyBackend`'s own Python launch code on NumPy arrays ("cpu-emulator"), checking every argument's
   type against the kernel's C signature: the backend contract, the two fused seams, 20 fused steps and whole
   estimator fits, against the float64 oracle and the NumPy backend;
3. the NumPy backend's versions of the two seams -- the array-generic mirror of the kernels' per-row formulas, step
   for step: max, exp, sum, loss, dZ -- against the oracle, beside the kernels ("numpy-mirror").

Each such test also has a "gpu" case running the real backend, skipped with the probe's reason where CuPy cannot run.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import re
import shutil
import subprocess
import sysconfig
import warnings
from pathlib import Path

import backend_contract as contract
import numpy as np
import pytest
from tolerances import assert_close, tolerance

from linclass_gpu import LogisticRegression, SoftmaxRegression, oracle
from linclass_gpu.backends import cpu_loops, cupy_backend, probe, registry
from linclass_gpu.backends.cupy_backend import (
    KERNEL_SOURCE,
    MAX_VALUES_PER_LANE,
    CupyBackend,
    compile_options,
    values_per_lane,
)
from linclass_gpu.backends.numpy_backend import NumpyBackend
from linclass_gpu.backends.registry import BackendStatus

CUDA_SOURCE = Path(cupy_backend.__file__).with_name("cuda_rowwise.cu")
EMULATOR_SOURCE = Path(__file__).with_name("cuda_warp_emulator.cpp")
NVCC = shutil.which("nvcc")
# cuobjdump ships with the CUDA toolkit and, on machines without one, inside triton's NVIDIA backend.
CUOBJDUMP = shutil.which("cuobjdump") or next(
    (str(path) for path in Path(sysconfig.get_paths()["purelib"]).glob("triton/backends/nvidia/bin/cuobjdump")), None)

# The C parameters of each kernel in cuda_rowwise.cu, in order ("real" is the compute dtype; "?" marks a pointer that
# may be null, passed as cupy_backend.NULL_POINTER). The emulator checks every launch against them: a GPU would
# silently misread an argument of the wrong width.
KERNEL_PARAMETERS = {
    "softmax_cross_entropy_rows": ("real*", "int64*", "real*?", "real*", "float64*", "int32", "int32", "real",
                                   "real"),
    "sigmoid_loss_elements": ("real*", "real*", "real*?", "real*", "float64*", "int32", "int32", "int32", "real",
                              "real"),
    "sgd_update": ("real*", "real*", "real*", "real*?", "int32", "real", "real", "real", "real", "int32", "int32",
                   "real", "real", "real", "real", "real"),
}
# Input dtypes of the contract tests: float16 inputs compute in float32, like every non-float64 input.
DTYPES = ("float32", "float64", "float16")
# The oracle's loss and gradients of each model.
ORACLE_LOSS_GRAD = {"softmax": oracle.softmax_loss_grad, "sigmoid": oracle.sigmoid_loss_grad,
                    "sigmoid_mse": oracle.sigmoid_mse_loss_grad}


def random_targets(rng, model: str, n_rows: int, n_outputs: int) -> np.ndarray:
    """Class ids (N,) for softmax; {0, 1} targets for the sigmoid models, (N,) when ``K = 1`` and (N, K) otherwise."""
    if model == "softmax":
        return rng.integers(0, n_outputs, size=n_rows)
    return rng.integers(0, 2, size=n_rows if n_outputs == 1 else (n_rows, n_outputs))


# -- nvcc: the source as the GPU gets it ----------------------------------------------------------------------


def test_kernel_source_is_self_contained_for_nvrtc():
    """NVRTC compiles without the host's headers: the source may include nothing."""
    assert not re.search(r"^\s*#\s*include", KERNEL_SOURCE, flags=re.MULTILINE)
    assert set(re.findall(r'extern "C" __global__ void (\w+)\(', KERNEL_SOURCE)) == set(KERNEL_PARAMETERS)


def build_with_nvcc(arch: int, options: tuple[str, ...], directory: Path) -> Path:
    """The cubin nvcc builds (warnings are errors)."""
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    cubin = directory / "cuda_rowwise.cubin"
    build = subprocess.run([NVCC, f"-arch=sm_{arch}", "-cubin", "-Werror", "all-warnings", *options, str(CUDA_SOURCE),
                            "-o", str(cubin)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return cubin


def build_with_nvrtc(arch: int, options: tuple[str, ...], directory: Path) -> None:
    """Compile with the compiler CuPy uses at run time, which needs no GPU, only its library
    (``pip install nvidia-cuda-nvrtc-cu12``). Its cubin is not returned: CuPy's ``getCUBIN`` drops the last byte."""
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except (ImportError, OSError, RuntimeError) as error:  # no CuPy; the library missing; NVRTCError
        pytest.skip(f"NVRTC cannot be loaded here ({type(error).__name__}: {str(error).splitlines()[0]})")
    program = nvrtc.createProgram(KERNEL_SOURCE, CUDA_SOURCE.name, (), ())
    try:
        try:
            nvrtc.compileProgram(program, (f"-arch=sm_{arch}", *options))
        except nvrtc.NVRTCError as error:
            pytest.fail(f"{error}\n{nvrtc.getProgramLog(program)}")
        assert nvrtc.getProgramLog(program).strip("\x00\n ") == "", "NVRTC warned"
    finally:
        nvrtc.destroyProgram(program)


@pytest.mark.parametrize("values_per_lane_", [1, MAX_VALUES_PER_LANE])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("build", [build_with_nvcc, build_with_nvrtc], ids=["nvcc", "nvrtc"])
def test_cuda_source_compiles_warning_free_without_spills(tmp_path, build, arch, dtype, values_per_lane_):
    cubin = build(arch, compile_options(dtype, values_per_lane_), tmp_path)
    if cubin is None:
        return  # compiled without a warning; the nvcc case checks the registers
    if CUOBJDUMP is None:
        pytest.skip("cuobjdump not found: built, but register use not checked")
    usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
    functions = re.findall(r"Function (\w+):\s+REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage)
    assert {name for name, *_ in functions} == set(KERNEL_PARAMETERS), usage
    for name, registers, stack, local in functions:
        assert (stack, local) == ("0", "0"), f"{name} spills to local memory: {usage}"
        assert int(registers) <= 255, f"{name} uses {registers} registers"


@pytest.mark.parametrize("n_classes,expected", [(1, 1), (32, 1), (33, 2), (65, 4), (200, 8), (1024, 32),
                                                (1025, None)])
def test_values_per_lane_is_the_next_power_of_two_up_to_the_register_limit(n_classes, expected):
    assert values_per_lane(n_classes) == expected


# -- the CPU emulator of the kernels ------------------------------------------------------------------------------


class EmulatedKernel:
    """A kernel of ``cuda_rowwise.cu`` compiled for the CPU, called like a ``cupy.RawKernel``."""

    def __init__(self, library: ctypes.CDLL, name: str, dtype_name: str):
        self.name, self.dtype_name = name, dtype_name
        self._run = getattr(library, f"run_{name}")

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        assert len(grid) == len(block) == 1 and block[0] % 32 == 0, (grid, block)
        parameters = KERNEL_PARAMETERS[self.name]
        assert len(args) == len(parameters), f"{self.name} takes {len(parameters)} arguments, got {len(args)}"
        converted = []
        for position, (parameter, value) in enumerate(zip(parameters, args)):
            dtype = np.dtype(self.dtype_name if parameter.startswith("real") else parameter.rstrip("*?"))
            where = f"{self.name} argument {position} ({parameter} = {dtype})"
            if parameter.endswith("?") and value is cupy_backend.NULL_POINTER:
                converted.append(ctypes.c_void_p(None))
            elif parameter.endswith("*") or parameter.endswith("?"):
                assert isinstance(value, np.ndarray) and value.dtype == dtype, f"{where}: got {value!r}"
                assert value.flags.c_contiguous, f"{where}: not C-contiguous"
                converted.append(ctypes.c_void_p(value.ctypes.data))
            else:
                assert type(value) is dtype.type, f"{where}: got {type(value).__name__}"
                converted.append(np.ctypeslib.as_ctypes_type(dtype)(value))
        self._run(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), *converted)


@pytest.fixture(scope="session")
def emulated_kernel(tmp_path_factory):
    """A stand-in for ``cupy_backend._kernel``: ``(dtype name, values per lane, kernel name) -> EmulatedKernel``."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the CUDA kernels cannot be emulated on the CPU")
    directory = tmp_path_factory.mktemp("cuda_warp_emulator")

    @functools.cache
    def library(dtype_name: str, values_per_lane_: int) -> ctypes.CDLL:
        path = directory / f"emulator_{dtype_name}_{values_per_lane_}.so"
        # No FMA contraction: the host's rounding is then plain IEEE, a stricter check than the GPU's fused ops.
        subprocess.run([compiler, "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                        "-Wall", "-Wno-unknown-pragmas", *compile_options(dtype_name, values_per_lane_),
                        f'-DKERNEL_SOURCE="{CUDA_SOURCE}"', str(EMULATOR_SOURCE), "-o", str(path)],
                       check=True, capture_output=True)
        return ctypes.CDLL(str(path))

    def kernel(dtype_name: str, values_per_lane_: int, name: str) -> EmulatedKernel:
        return EmulatedKernel(library(dtype_name, values_per_lane_), name, dtype_name)

    return kernel


class EmulatedCupyBackend(CupyBackend):
    """:class:`CupyBackend`'s Python code on NumPy arrays; its kernels run by the CPU emulator."""

    xp = np

    def __init__(self):  # no cupy import
        pass

    def describe(self):
        return "cupy (kernels on the CPU warp emulator)"

    def to_numpy(self, a):
        return np.array(a)


def skip_without_gpu() -> None:
    status = probe("cupy")
    if not status.usable:
        pytest.skip(f"needs a GPU: cupy cannot run here ({status.detail})")


def make_backend_flavour(flavour: str, request, monkeypatch):
    """The backend a flavour stands for; "gpu" is skipped with the probe's reason where CuPy cannot run."""
    if flavour in ("numpy-mirror", "numpy-compiled"):
        if flavour == "numpy-compiled" and not cpu_loops.compiled_loops_enabled():
            pytest.skip("needs Numba (pip install linclass-gpu[cpu])")
        return NumpyBackend(compiled=flavour == "numpy-compiled")
    if flavour == "gpu":
        skip_without_gpu()
        return CupyBackend()
    monkeypatch.setattr(cupy_backend, "_kernel", request.getfixturevalue("emulated_kernel"))
    return EmulatedCupyBackend()


@pytest.fixture(params=["cpu-emulator", "gpu"])
def cupy_flavour(request, monkeypatch):
    """The CuPy backend, on the CPU emulator or on the GPU."""
    return make_backend_flavour(request.param, request, monkeypatch)


@pytest.fixture(params=["numpy-mirror", "numpy-compiled", "cpu-emulator", "gpu"])
def seam_backend(request, monkeypatch):
    """The array-generic seams (NumPy), the NumPy backend's compiled loops, or the CuPy backend's kernels (emulated or
    on the GPU)."""
    return make_backend_flavour(request.param, request, monkeypatch)


# -- the two fused seams against the oracle -------------------------------------------------------------------

# Softmax: 1000 classes take 32 values per lane, 1100 are wider than a warp's registers. Sigmoid models, one thread per
# logit: with K = 3 rows straddle the warps, and 37·37 logits end in a partial warp and block.
SEAM_CASES = ([("softmax", c) for c in (2, 3, 10, 37, 1000, 1100)]
              + [(model, k) for model in ("sigmoid", "sigmoid_mse") for k in (1, 3, 37)])


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("logit_scale", [1.0, 1e4])  # 1e4: exp of a raw logit would overflow in any dtype
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model,n_outputs", SEAM_CASES)
def test_logits_to_grad_matches_the_oracle(seam_backend, rng, model, n_outputs, dtype, logit_scale, weighted):
    backend, n_rows, x_scale, previous_loss = seam_backend, 37, 0.5, 1.5  # 37 rows: a partial last block of rows
    product = (logit_scale * rng.normal(size=(n_rows, n_outputs))).astype(dtype)  # X_b W
    b = rng.normal(size=n_outputs).astype(dtype)
    # Weights in [0, 3), every third row's 0; without weights the kernels get a null pointer.
    weights = np.where(np.arange(n_rows) % 3 == 0, 0, rng.uniform(0, 3, size=n_rows)).astype(dtype) if weighted \
        else None
    y = random_targets(rng, model, n_rows, n_outputs)
    if model == "softmax":
        targets = np.arange(n_rows) * n_outputs + y  # flat indices of the target logits (rowwise.py)
    else:
        y = y.reshape(n_rows, n_outputs)  # the seam takes (B, K) targets for any K
        targets = y.astype(dtype)
    # The oracle's linear model on X = I has the logits x_scale·product + b and dW = x_scale·Iᵀ dZ: its own loss and
    # dZ of these very logits (products with 1 and sums with 0 are exact).
    mean_loss, dW, _ = ORACLE_LOSS_GRAD[model](np.eye(n_rows), y, product, b, x_scale, weights)
    expected_loss, expected_dZ = n_rows * mean_loss, dW / x_scale
    Z, loss_sum = backend.asarray(product), backend.xp.full((), previous_loss, dtype=np.float64)
    db, dz_scale = backend.asarray(np.empty(n_outputs, dtype=dtype)), 0.25  # dZ scaled for dW's sake, db not
    backend.logits_to_grad_(model, Z, backend.asarray(targets), None if weights is None else backend.asarray(weights),
                            backend.asarray(b), x_scale, loss_sum, db, dz_scale)
    assert_close(backend.to_numpy(Z), dz_scale * expected_dZ, dtype, n_outputs, "dZ")
    assert_close(backend.to_numpy(db), expected_dZ.sum(axis=0), dtype, n_rows, "db")
    assert_close(float(loss_sum), previous_loss + expected_loss, dtype, n_rows * n_outputs, "loss sum (added to)")


def test_squared_error_gradient_keeps_its_digits_where_the_sigmoid_rounds_to_one(cupy_flavour):
    """dZ = 2(σ − y)σ' with y = 0 and z in [10, 20]: confidently wrong, a tiny float32 gradient of full relative
    accuracy.

    The kernel takes σ' = e^{−z}/(1 + e^{−z})²; σ(1 − σ) would lose every digit in float32 (1 − σ rounds to 0 from
    z ≈ 17), invisible under an absolute tolerance, hence the relative one alone. The float64 oracle forms σ(1 − σ)
    itself, accurate to 4e-8 up to z = 20: far below float32's rtol, too coarse to check a float64 kernel this way.
    """
    backend, n_rows = cupy_flavour, 11
    logits = np.linspace(10, 20, n_rows).astype(np.float32)[:, np.newaxis]
    _, expected_dZ, _ = oracle.sigmoid_mse_loss_grad(np.eye(n_rows), np.zeros((n_rows, 1)), logits, np.zeros(1))
    Z, loss_sum = backend.asarray(logits.copy()), backend.xp.zeros((), dtype=np.float64)
    backend.logits_to_grad_("sigmoid_mse", Z, backend.asarray(np.zeros_like(logits)), None,
                            backend.asarray(np.zeros(1, np.float32)), 1.0, loss_sum,
                            backend.asarray(np.empty(1, np.float32)))
    np.testing.assert_allclose(backend.to_numpy(Z), expected_dZ, rtol=tolerance("float32", 1)[0], atol=0)


@pytest.mark.parametrize("l2,momentum,nesterov,l1,optimizer", [
    (0.0, 0.0, False, 0.0, "sgd"), (0.1, 0.0, False, 0.0, "sgd"), (0.1, 0.9, False, 0.0, "sgd"),
    (0.0, 0.9, True, 0.0, "sgd"), (0.1, 0.5, True, 0.0, "sgd"), (0.0, 0.0, False, 1.0, "sgd"),
    (0.1, 0.9, True, 1.0, "sgd"), (0.0, 0.0, False, 0.0, "adagrad"), (0.1, 0.0, False, 0.3, "adagrad"),
    (0.0, 0.0, False, 0.0, "adam"), (0.1, 0.0, False, 0.3, "adam")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sgd_update_matches_the_oracle(seam_backend, rng, dtype, l2, momentum, nesterov, l1, optimizer):
    backend, learning_rate, shape = seam_backend, 0.3, (13, 37)  # 481 values: a partial last block of threads
    param, grad, velocity = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    accumulator = rng.uniform(0, 2, size=shape).astype(dtype)
    g = grad + l2 * param.astype(np.float64)
    adagrad, adam_step = optimizer == "adagrad", 3 if optimizer == "adam" else 0  # Adam at its third step
    if adagrad:
        expected_param, expected_accumulator, step_size = oracle._adagrad_update(
            param.astype(np.float64), g, accumulator.astype(np.float64), learning_rate)
    elif adam_step:
        expected_param, expected_velocity, expected_accumulator, step_size = oracle._adam_update(
            param.astype(np.float64), g, velocity.astype(np.float64), accumulator.astype(np.float64), learning_rate,
            adam_step)
    else:
        expected_param, expected_velocity = oracle._momentum_update(
            param.astype(np.float64), g, velocity if momentum else 0.0, learning_rate, momentum, nesterov)
        step_size = learning_rate
    if l1:  # a threshold of 0.3 zeroes about a quarter of the N(0, 1) values
        expected_param = oracle.soft_threshold(expected_param, step_size * l1)
    param_d, velocity_d = backend.asarray(param), backend.asarray(velocity) if momentum or adam_step else None
    accumulator_d = backend.asarray(accumulator) if optimizer != "sgd" else None
    backend.sgd_update_(param_d, backend.asarray(grad), velocity_d, backend.asarray(np.empty_like(param)),
                        learning_rate, l2, momentum, nesterov, l1=l1, accumulator=accumulator_d, adam_step=adam_step)
    assert_close(backend.to_numpy(param_d), expected_param, dtype, 1, "param")
    if optimizer != "sgd":
        assert_close(backend.to_numpy(accumulator_d), expected_accumulator, dtype, 1, "accumulator")
    if l1:
        assert (backend.to_numpy(param_d)[expected_param == 0] == 0).all(), "soft-thresholding gives exact zeros"
    if momentum or adam_step:
        assert_close(backend.to_numpy(velocity_d), expected_velocity, dtype, 1, "velocity")


# -- the backend contract (the same checks every backend passes), on the emulator and the GPU ----------------


@contract.WEIGHTED
@pytest.mark.parametrize("n,d,c", contract.SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_loss_grad_matches_oracle(cupy_flavour, rng, dtype, n, d, c, weighted):
    contract.softmax_loss_grad_matches_oracle(cupy_flavour, rng, dtype, n, d, c, weighted)


@contract.WEIGHTED
@pytest.mark.parametrize("n,d", [(n, d) for n in (1, 7, 129) for d in (1, 13, 784)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_loss_grad_matches_oracle(cupy_flavour, rng, dtype, n, d, weighted):
    contract.sigmoid_loss_grad_matches_oracle(cupy_flavour, rng, dtype, n, d, weighted)


def strided_view(xp, a):
    """The values of a 1-d array ``a`` of module ``xp`` in a view with a stride of two items: not C-contiguous."""
    return xp.repeat(a, 2)[::2]


@contract.WEIGHTED
@pytest.mark.parametrize("n_outputs", [1, 3, 37])
@pytest.mark.parametrize("n,d", [(7, 13), (129, 784)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", ["sigmoid", "sigmoid_mse"])
def test_sigmoid_models_loss_grad_match_the_oracle(cupy_flavour, rng, model, dtype, n, d, n_outputs, weighted):
    """K independent sigmoids under either loss; K = 1 in the binary model's shapes (w (D,), b scalar, y (N,)).

    Targets, weights and bias come as the caller's non-contiguous views (a Fortran-ordered target matrix, strided
    vectors), which the kernel would misread if handed on as they are.
    """
    backend, xp = cupy_flavour, cupy_flavour.xp
    X, _, W, b = contract.random_problem(rng, n, d, n_outputs, dtype)
    y = random_targets(rng, model, n, n_outputs)
    weights = contract.random_weights(rng, n, dtype, weighted)
    binary = n_outputs == 1
    w, bias = (W[:, 0], b[0]) if binary else (W, strided_view(np, b))
    targets = backend.asarray(y.astype(dtype))
    loss, dw, db = getattr(backend, f"{model}_loss_grad")(
        backend.asarray(X), targets if binary else xp.asfortranarray(targets), w, bias,
        sample_weight=None if weights is None else strided_view(xp, backend.asarray(weights)))
    expected_loss, expected_dw, expected_db = ORACLE_LOSS_GRAD[model](X, y, w, bias, sample_weight=weights)
    assert np.shape(dw) == np.shape(w) and np.shape(db) == np.shape(bias)
    assert_close(loss, expected_loss, dtype, d * n_outputs, "loss")
    assert_close(backend.to_numpy(dw), expected_dw, dtype, n, "dw")
    assert_close(backend.to_numpy(db), expected_db, dtype, n, "db")


@pytest.mark.parametrize("check", [contract.uint8_inputs_with_a_scale_match_the_oracle,
                                   contract.extreme_logits_stay_finite,
                                   contract.decision_function_is_the_affine_map,
                                   contract.set_params_overwrites_weights_and_clears_momentum,
                                   contract.sample_weight_of_the_wrong_length_is_rejected,
                                   contract.unknown_optimizer_and_momentum_with_adagrad_are_rejected],
                         ids=lambda check: check.__name__)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_contract_checks(cupy_flavour, rng, dtype, check):
    arguments = {"backend": cupy_flavour, "rng": rng, "dtype": dtype}
    check(**{name: arguments[name] for name in inspect.signature(check).parameters})


@contract.WEIGHTED
@pytest.mark.parametrize("model,n,d,c,batch,l2,momentum,nesterov,fit_intercept", contract.STEP_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twenty_fused_steps_match_twenty_oracle_steps(cupy_flavour, rng, dtype, model, n, d, c, batch, l2,
                                                      momentum, nesterov, fit_intercept, weighted):
    contract.twenty_fused_steps_match_twenty_oracle_steps(cupy_flavour, rng, dtype, model, n, d, c, batch, l2, momentum,
                                                          nesterov, fit_intercept, weighted)


@contract.WEIGHTED
@pytest.mark.parametrize("model,n,d,c,batch,options", contract.OPTION_CASES,
                         ids=[contract.option_id(case) for case in contract.OPTION_CASES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twenty_fused_steps_with_options_match_the_oracle(cupy_flavour, rng, dtype, model, n, d, c, batch, options,
                                                          weighted):
    contract.twenty_fused_steps_with_options_match_the_oracle(cupy_flavour, rng, dtype, model, n, d, c, batch, options,
                                                              weighted)


@pytest.mark.parametrize("options", contract.ROUND_TRIP_OPTIONS, ids=["momentum", "adagrad", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_get_state_set_state_round_trip_resumes_bitwise(cupy_flavour, rng, dtype, options):
    contract.get_state_set_state_round_trip_resumes_bitwise(cupy_flavour, rng, dtype, options)


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_batch_of_zero_weights_makes_no_step(cupy_flavour, rng, dtype, model):
    contract.a_batch_of_zero_weights_makes_no_step(cupy_flavour, rng, dtype, model)


# The contract's cases, and K = 5 sigmoids under either loss (rows of 5 logits straddle the kernel's warps).
NUMPY_STEP_CASES = contract.STEP_CASES + [
    ("sigmoid", 129, 13, 5, 20, 1e-2, 0.5, True, True),
    ("sigmoid_mse", 129, 13, 5, 20, 0.0, 0.9, False, True),
    ("sigmoid_mse", 7, 1, 1, 7, 1e-2, 0.0, False, False),
]


@contract.WEIGHTED
@pytest.mark.parametrize("model,n,d,c,batch,l2,momentum,nesterov,fit_intercept", NUMPY_STEP_CASES)
@pytest.mark.parametrize("input_dtype", ["float32", "float64", "uint8"])
def test_twenty_fused_steps_match_the_numpy_backend(cupy_flavour, rng, input_dtype, model, n, d, c, batch, l2,
                                                    momentum, nesterov, fit_intercept, weighted):
    """Both backends take the same 20 steps over the same batches; uint8 pixels are scaled by 1/255 on the way."""
    x_scale = 1 / 255 if input_dtype == "uint8" else 1.0
    X = rng.integers(0, 256, size=(n, d)).astype(input_dtype) if input_dtype == "uint8" else \
        rng.normal(size=(n, d)).astype(input_dtype)
    y = random_targets(rng, model, n, c)
    compute = "float64" if input_dtype == "float64" else "float32"
    W, b = (rng.normal(size=(d, c)) / np.sqrt(d)).astype(compute), rng.normal(size=c).astype(compute)
    weights = contract.random_weights(rng, n, compute, weighted)
    order = rng.permutation(n)
    results = []
    for backend in (cupy_flavour, NumpyBackend()):
        stepper = backend.fused_sgd(model, backend.asarray(X), backend.asarray(y), W, b, max_batch_size=batch,
                                    l2=l2, momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                                    x_scale=x_scale, sample_weight=contract.on_device(backend, weights))
        rows = backend.asarray(order)
        for step in range(20):
            start = (step * batch) % n
            stepper.step(rows[start:start + batch], 0.3 / (1 + step))
        results.append((*stepper.get_params(), stepper.pop_loss_sum()))
    (W_cupy, b_cupy, loss_cupy), (W_numpy, b_numpy, loss_numpy) = results
    assert_close(W_cupy, W_numpy, input_dtype, 20 * max(d, batch), "W after 20 steps")
    assert_close(b_cupy, b_numpy, input_dtype, 20 * batch, "b after 20 steps")
    assert_close(loss_cupy, loss_numpy, input_dtype, 20 * d * batch, "summed loss")


@pytest.mark.parametrize("model,n_outputs", [("softmax", 10), ("sigmoid", 1), ("sigmoid", 10), ("sigmoid_mse", 10)])
def test_fused_steps_never_synchronise_with_the_host(model, n_outputs, rng):
    """A whole epoch of steps runs without one device-to-host wait (CuPy's sync detector raises on any)."""
    skip_without_gpu()
    import cupyx

    backend, n_rows, n_features, batch_size = CupyBackend(), 1000, 784, 128
    pixels = rng.integers(0, 256, size=(n_rows, n_features), dtype=np.uint8)
    y = random_targets(rng, model, n_rows, n_outputs)
    stepper = backend.fused_sgd(model, backend.asarray(pixels), backend.asarray(y), np.zeros((n_features, n_outputs),
                                np.float32), np.zeros(n_outputs, np.float32), max_batch_size=batch_size, l2=1e-4,
                                momentum=0.9, x_scale=1 / 255)
    rows = backend.asarray(rng.permutation(n_rows))
    stepper.step(rows[:batch_size], 0.1)  # compiles the kernels first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # allow_synchronize is deprecated, but still the detector CuPy ships
        with cupyx.allow_synchronize(False):
            for start in range(batch_size, n_rows, batch_size):
                stepper.step(rows[start:start + batch_size], 0.1)
    assert np.isfinite(stepper.pop_loss_sum())


# -- end to end: the estimators on the CuPy backend -------------------------------------------------------------


@pytest.mark.parametrize("estimator_class,labels", [(SoftmaxRegression, np.array([3, 5, 7, 9])),
                                                    (LogisticRegression, np.array(["no", "yes"]))])
def test_estimators_fit_on_the_cupy_backend_as_on_numpy(cupy_flavour, monkeypatch, rng, estimator_class, labels):
    """get_backend("cupy"), the training loop, validation scoring and prediction, against the same fit on NumPy."""
    if isinstance(cupy_flavour, EmulatedCupyBackend):  # let get_backend("cupy") build the emulated backend
        real_probe = registry.probe
        monkeypatch.setattr(registry, "probe", lambda name: BackendStatus("cupy", True, True, "CPU emulator")
                            if name == "cupy" else real_probe(name))
        monkeypatch.setitem(registry._FACTORIES, "cupy", f"{__name__}:EmulatedCupyBackend")
    n_rows, n_features = 300, 20  # 300 = 4·64 + 44: every epoch ends on a short batch
    centres = rng.uniform(40, 215, size=(len(labels), n_features))
    classes = rng.integers(0, len(labels), size=n_rows)
    pixels = np.clip(centres[classes] + rng.normal(0, 30, size=(n_rows, n_features)), 0, 255).astype(np.uint8)
    y = labels[classes]
    # Each backend shuffles on its own device, so the row order is fixed here to compare the arithmetic alone.
    models = [estimator_class(backend=name, epochs=3, batch_size=64, shuffle=False, input_scale=1 / 255)
              .fit(pixels, y, validation_data=(pixels[:50], y[:50])) for name in ("cupy", "numpy")]
    on_cupy, on_numpy = models
    assert on_cupy.backend_ == "cupy" and on_numpy.backend_ == "numpy"
    steps, batch_size = on_cupy.t_, 64  # rounding compounds over the steps, as in the contract's 20-step test
    assert_close(on_cupy.coef_, on_numpy.coef_, "uint8", steps * max(n_features, batch_size), "coef_")
    assert_close(on_cupy.intercept_, on_numpy.intercept_, "uint8", steps * batch_size, "intercept_")
    assert_close(on_cupy.loss_curve_, on_numpy.loss_curve_, "uint8", steps * n_features, "loss_curve_")
    np.testing.assert_array_equal(on_cupy.validation_scores_, on_numpy.validation_scores_)
    np.testing.assert_array_equal(on_cupy.predict(pixels), on_numpy.predict(pixels))
    assert on_cupy.score(pixels, y) > 0.9
