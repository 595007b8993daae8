"""The providers of ``bench step``: one SGD step of softmax regression, each built ready to call.

A provider is one way to run a step (forward, loss, backward, update) on a minibatch of ``B`` rows gathered from
``X``:

- each backend of this library (``numpy``, ``cupy``, ``triton``): its fused step;
- ``torch-eager``: the unfused PyTorch sequence, ``X[rows] @ W + b``, ``cross_entropy``, autograd and
  ``torch.optim.SGD`` (momentum, weight decay on W only), on the CUDA device when there is one;
- ``torch-compile``: the same with the forward (gather, GEMM, loss) through ``torch.compile`` (AOTAutograd compiles
  its backward too); the optimizer step stays eager;
- ``numpy-gemm-floor`` and ``cuda-gemm-floor``: the gather ``X[rows]`` (cast to float32 for uint8 pixels) and the
  step's two GEMMs, ``X_b W`` and ``X_bᵀ dZ``, on preallocated buffers, nothing else: the floor no step on that
  device can beat.

Every provider takes the same hyperparameters (the estimators' defaults) and starts from zero weights. Each is
served from a process of its own by :class:`ProviderServer` (see :mod:`.isolated` for why).
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..backends import get_backend, probe
from ..backends.registry import AUTO_ORDER
from ..estimators import SoftmaxRegression
from .timing import LocalSampler, do_bench_timing

# The step microbenchmark's learning rate: small, so that thousands of steps on random data never overflow.
STEP_LEARNING_RATE = 0.01
TORCH_PROVIDERS = ("torch-eager", "torch-compile")
FLOOR_PROVIDERS = ("numpy-gemm-floor", "cuda-gemm-floor")
STEP_PROVIDERS = AUTO_ORDER + TORCH_PROVIDERS + FLOOR_PROVIDERS
# Providers that never use a GPU.
CPU_ONLY = ("numpy", "numpy-gemm-floor")
# torch.compile takes about a minute per shape on a 2-core CPU: --quick leaves it out.
SLOW_TO_BUILD = ("torch-compile",)
X_DTYPES = ("float32", "uint8")


class ProviderUnavailable(RuntimeError):
    """The provider cannot run here; the message says why (reported as a skipped row, not an error)."""


@dataclass(frozen=True)
class StepProblem:
    """One shape's data on the host, shared by every provider.

    Attributes
    ----------
    X : ndarray, shape (B, D), float32 in [0, 1) or uint8 pixels
    y : ndarray, shape (B,), int64 class ids in [0, C)
    rows : ndarray, shape (B,), int64
        A permutation of ``range(B)``: the minibatch, gathered (not sliced) as in training.
    n_classes : int
        ``C``.
    x_scale : float
        1/255 for uint8 pixels, else 1.
    """

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    n_classes: int
    x_scale: float

    @classmethod
    def random(cls, B: int, D: int, C: int, x_dtype: str = "float32", seed: int = 0) -> "StepProblem":
        """Random features and labels of shape (B, D) and (B,) in ``x_dtype`` (float32 or uint8)."""
        if x_dtype not in X_DTYPES:
            raise ValueError(f"x_dtype must be one of {X_DTYPES}, got {x_dtype!r}")
        rng = np.random.default_rng(seed)
        if x_dtype == "uint8":
            X, x_scale = rng.integers(0, 256, size=(B, D), dtype=np.uint8), 1 / 255
        else:
            X, x_scale = rng.random((B, D), dtype=np.float32), 1.0
        return cls(X, rng.integers(0, C, size=B), rng.permutation(B), C, x_scale)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, D, C)``."""
        return len(self.rows), self.X.shape[1], self.n_classes


@dataclass
class StepProvider:
    """One provider, built for one :class:`StepProblem`.

    Attributes
    ----------
    name : str
    device : {"cpu", "cuda"}
        Where ``step`` runs: "cuda" work is enqueued and timed with ``do_bench``, "cpu" work by the wall clock.
    step : callable () -> None
        One SGD step (or, for a floor, the gather and the two GEMMs).
    setup_seconds : float
        Time to build it, compilation included.
    threads : context manager
        Entered while ``step`` is timed: the host threads the provider's library picks for this work (see
        :meth:`.Backend.thread_limit`), as ``fit`` runs it; nothing for the libraries that choose their own.
    """

    name: str
    device: str
    step: Callable[[], None]
    setup_seconds: float = 0.0
    threads: AbstractContextManager = field(default_factory=contextlib.nullcontext)


def _hyperparameters() -> tuple[float, float]:
    """``(l2, momentum)``: the estimators' defaults, so every provider solves the same problem."""
    defaults = SoftmaxRegression()
    return defaults.alpha, defaults.momentum


def _torch_device() -> str:
    """The device the torch providers use: the CUDA device when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def unavailable_reason(name: str) -> str:
    """Why provider ``name`` cannot run here, or "" when it can (only ``cuda-gemm-floor`` imports torch to find out)."""
    if name not in STEP_PROVIDERS:
        raise ValueError(f"unknown step provider {name!r}; expected one of {', '.join(STEP_PROVIDERS)}")
    if name in AUTO_ORDER:
        status = probe(name)
        return "" if status.usable else status.detail
    if importlib.util.find_spec("torch") is None and name != "numpy-gemm-floor":
        return "torch is not installed"
    if name == "cuda-gemm-floor" and _torch_device() != "cuda":
        return "no CUDA device"
    return ""


def default_providers(quick: bool = False) -> list[str]:
    """Providers that run natively here: backends ``auto`` could pick (not the Triton interpreter), the torch
    baselines and the floors of the devices present. With a CUDA device, only those that run on it (the CPU ones
    would take hours on the GPU sweep's shapes; name them to have them). ``quick`` leaves out those slow to build."""
    on_cuda = any(probe(name).auto for name in AUTO_ORDER if name not in CPU_ONLY)
    names = []
    for name in STEP_PROVIDERS:
        native = probe(name).auto if name in AUTO_ORDER else not unavailable_reason(name)
        if native and not (quick and name in SLOW_TO_BUILD) and not (on_cuda and name in CPU_ONLY):
            names.append(name)
    return names


def build_provider(name: str, problem: StepProblem) -> StepProvider:
    """Build provider ``name`` for ``problem``.

    Raises
    ------
    ProviderUnavailable
        It cannot run here (not installed, no device, or torch.compile failed).
    """
    reason = unavailable_reason(name)
    if reason:
        raise ProviderUnavailable(reason)
    started = time.perf_counter()
    if name in AUTO_ORDER:
        device, step = _backend_step(name, problem)
    elif name in TORCH_PROVIDERS:
        device, step = _torch_step(problem, compiled=name == "torch-compile")
    else:
        device, step = _gemm_floor(problem, on_cuda=name == "cuda-gemm-floor")
    # The library's backends, and the NumPy floor like the NumPy backend, on the threads fit takes for a step's GEMM.
    threads_of = name if name in AUTO_ORDER else "numpy" if name == "numpy-gemm-floor" else None
    B, D, C = problem.shape
    threads = get_backend(threads_of).thread_limit(2 * B * D * C) if threads_of else contextlib.nullcontext()
    return StepProvider(name, device, step, time.perf_counter() - started, threads)


def _backend_step(name: str, problem: StepProblem) -> tuple[str, Callable[[], None]]:
    """This library's fused step on backend ``name`` (the Triton interpreter when there is no GPU)."""
    backend = get_backend(name)
    B, D, C = problem.shape
    l2, momentum = _hyperparameters()
    stepper = backend.fused_sgd("softmax", backend.asarray(problem.X), backend.asarray(problem.y),
                                np.zeros((D, C), np.float32), np.zeros(C, np.float32), max_batch_size=B, l2=l2,
                                momentum=momentum, x_scale=problem.x_scale)
    rows = backend.asarray(problem.rows)
    device = "cuda" if name != "numpy" and probe(name).auto else "cpu"
    return device, lambda: stepper.step(rows, STEP_LEARNING_RATE)


def _torch_step(problem: StepProblem, compiled: bool) -> tuple[str, Callable[[], None]]:
    """PyTorch's unfused step, eager or with the forward through ``torch.compile`` (compiled on the first call)."""
    import torch
    import torch.nn.functional as F

    device = _torch_device()
    B, D, C = problem.shape
    l2, momentum = _hyperparameters()
    X, y = torch.from_numpy(problem.X).to(device), torch.from_numpy(problem.y).to(device)
    rows = torch.from_numpy(problem.rows).to(device)
    W = torch.zeros(D, C, device=device, requires_grad=True)
    b = torch.zeros(C, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([{"params": [W], "weight_decay": l2}, {"params": [b], "weight_decay": 0.0}],
                                lr=STEP_LEARNING_RATE, momentum=momentum)
    x_scale = problem.x_scale

    def batch_loss():
        X_batch = X[rows]
        if X_batch.dtype != torch.float32:
            X_batch = X_batch.float() * x_scale
        return F.cross_entropy(X_batch @ W + b, y[rows])

    loss = torch.compile(batch_loss) if compiled else batch_loss

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    if compiled:
        try:
            step()  # compiles forward and backward now, so the build time is setup, not a slow first sample
        except Exception as error:  # inductor raises anything from a missing compiler to an internal assertion
            first_line = next(iter(str(error).strip().splitlines()), "")
            raise ProviderUnavailable(f"torch.compile failed: {type(error).__name__}: {first_line}") from error
    return device, step


def _gemm_floor(problem: StepProblem, on_cuda: bool) -> tuple[str, Callable[[], None]]:
    """What no step can skip, on preallocated buffers: the gather ``X[rows]`` (cast to float32 when X holds uint8
    pixels), ``Z = X_b W`` and ``dW = X_bᵀ Z``.

    The pixel scale is applied to neither GEMM's input: a step puts it on the (B, C) logits and gradient, which cost
    B·C multiplications against the gather's B·D.
    """
    B, D, C = problem.shape
    W = np.random.default_rng(0).standard_normal((D, C), dtype=np.float32)
    if on_cuda:
        import torch

        X, rows, W = (torch.from_numpy(a).cuda() for a in (problem.X, problem.rows, W))
        raw, X_batch = torch.empty(B, D, dtype=X.dtype, device="cuda"), torch.empty(B, D, device="cuda")
        Z, dW = torch.empty(B, C, device="cuda"), torch.empty(D, C, device="cuda")

        def floor():
            X_batch.copy_(torch.index_select(X, 0, rows, out=raw))
            torch.matmul(X_batch, W, out=Z)
            torch.matmul(X_batch.T, Z, out=dW)

        return "cuda", floor
    X, rows = problem.X, problem.rows
    X_batch = np.empty((B, D), np.float32)
    raw = X_batch if X.dtype == np.float32 else np.empty((B, D), X.dtype)  # float32 rows go straight into X_batch
    Z, dW = np.empty((B, C), np.float32), np.empty((D, C), np.float32)

    def floor():
        np.take(X, rows, axis=0, out=raw, mode="clip")
        if raw is not X_batch:
            X_batch[...] = raw
        np.matmul(X_batch, W, out=Z)
        np.matmul(X_batch.T, Z, out=dW)

    return "cpu", floor


class ProviderServer:
    """One provider in its own process (made by :class:`.isolated.IsolatedWorker`): built per shape, then timed.

    Its methods are the :class:`.timing.Sampler` protocol plus :meth:`build` and :meth:`do_bench`.
    """

    def __init__(self, mark_baseline, name: str):
        self.name, self._sampler, self._threads = name, None, contextlib.ExitStack()
        mark_baseline()

    def build(self, B: int, D: int, C: int, x_dtype: str) -> dict:
        """Build the provider for a fresh :class:`StepProblem` of this shape (raises :class:`ProviderUnavailable`).

        Returns
        -------
        dict
            ``device`` and ``setup_seconds``.
        """
        self._sampler = None  # drop the previous shape's buffers first
        self._threads.close()  # and its thread limits
        provider = build_provider(self.name, StepProblem.random(B, D, C, x_dtype))
        self._threads.enter_context(provider.threads)
        self._sampler = LocalSampler(provider.step)
        return {"device": provider.device, "setup_seconds": provider.setup_seconds}

    def calls_per_sample(self) -> int:
        return self._sampler.calls_per_sample()

    def seconds(self, calls: int) -> float:
        return self._sampler.seconds(calls)

    def do_bench(self) -> list[float]:
        """``[median, low, high]`` seconds per step on the CUDA device (:func:`.timing.do_bench_timing`)."""
        timing = do_bench_timing(self._sampler.fn)
        return [timing.median, timing.low, timing.high]
