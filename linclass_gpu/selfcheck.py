"""``linclass-gpu selfcheck [--json]``: one command that checks and times the GPU paths on the machine at hand.

On a CUDA machine it runs, each part isolated so that one failure is reported and the others still run:

1. the GPU test subset: the Triton and CuPy test files against the float64 oracle (``pytest`` in a subprocess, from
   the repository's ``tests/``; an install without them reports that part as skipped);
2. the step microbenchmark (``linclass-gpu bench step`` on triton and cupy, its GB/s against the device's peak);
3. MNIST, 5 epochs of softmax regression at the estimators' defaults (batch 128, η0 = 0.5 decaying by 0.6 per
   epoch, momentum 0.5, L2 1e-4, uint8 pixels scaled by 1/255), timed per epoch (device synchronised) with the test
   accuracy after the last: triton through the multi-program epoch kernel (1 cooperative launch per epoch, on
   tensor cores and on FMA), the single-program epoch kernel and the per-step path (replayed from a CUDA graph, and
   launched step by step), cupy, a PyTorch eager loop and the same PyTorch loop captured once per epoch shape as a
   CUDA graph and replayed.

and returns one JSON object (printed with ``--json``). Without a CUDA GPU it prints one line saying so, lists what it
would run, and exits 0 (CI runs that).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

# The test files that exercise the GPU backends against the oracle (on a GPU they run on it, not the interpreter).
GPU_TEST_FILES = ("test_triton_kernels.py", "test_triton_sigmoid_outputs.py", "test_triton_backend.py",
                  "test_epoch_kernel.py", "test_epoch_split_sgd.py", "test_softmax_tiled_sgd.py",
                  "test_triton_sparse.py", "test_triton_launch.py", "test_triton_graph.py", "test_cupy_backend.py",
                  "test_sparse.py")
MNIST_EPOCHS = 5
MNIST_BATCH = 128
MNIST_LEARNING_RATE, MNIST_DECAY, MNIST_MOMENTUM, MNIST_L2 = 0.5, 0.6, 0.5, 1e-4
MNIST_PROVIDERS = ("triton-split-epoch-mma", "triton-split-epoch-ieee", "triton-epoch-kernel", "triton-per-step-graph",
                   "triton-per-step", "cupy", "torch-eager", "torch-cuda-graph")
# Each part's wall-clock limit; together they keep the whole check within 8 minutes on a fresh install (most of the
# test time is Triton's first compile of each kernel shape).
TESTS_TIMEOUT_S = 300
STEP_BENCH_TIMEOUT_S = 120


def plan() -> list[str]:
    """What the check runs, one line per part."""
    return [f"pytest {' '.join(GPU_TEST_FILES)} (Triton and CuPy against the float64 oracle)",
            "linclass-gpu bench step --providers triton,cupy (GB/s against the device's peak)",
            f"MNIST {MNIST_EPOCHS} epochs, batch {MNIST_BATCH}: " + ", ".join(MNIST_PROVIDERS)]


def cuda_device() -> str | None:
    """The CUDA device's name, or None when torch sees none (or torch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _tests_dir() -> Path | None:
    tests = Path(__file__).resolve().parents[1] / "tests"
    return tests if (tests / "tolerances.py").is_file() else None


def run_gpu_tests() -> dict:
    """The GPU test subset in a subprocess: its exit status and pytest's summary line."""
    tests = _tests_dir()
    if tests is None:
        return {"status": "skipped", "reason": "the tests/ directory is not part of this install"}
    files = [str(tests / name) for name in GPU_TEST_FILES if (tests / name).is_file()]
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                              cwd=tests.parent, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": TESTS_TIMEOUT_S}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"status": "passed" if done.returncode == 0 else "failed", "returncode": done.returncode,
            "summary": lines[-1] if lines else done.stderr[-500:], "seconds": time.perf_counter() - started}


def run_step_bench() -> dict:
    """``linclass-gpu bench step`` for triton and cupy, its JSON summary."""
    command = [sys.executable, "-m", "linclass_gpu.cli", "bench", "step", "--providers", "triton,cupy", "--json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=STEP_BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": STEP_BENCH_TIMEOUT_S}
    if done.returncode != 0:
        return {"status": "failed", "returncode": done.returncode, "stderr": done.stderr[-1000:]}
    return {"status": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}


def _learning_rates(epoch: int, n_steps: int):
    import numpy as np

    return np.full(n_steps, MNIST_LEARNING_RATE * MNIST_DECAY**epoch)


def _train_stepper(backend_name: str, data, *, epoch_kernel: bool, split_precision: str | None = None,
                   cuda_graph: bool = False) -> dict:
    """MNIST epochs through a backend's fused stepper (``run_epoch``); ms per epoch and the final test accuracy.
    Triton's ``split_precision`` picks the multi-program epoch kernel's products (None: the single-program one),
    ``cuda_graph`` whether its per-step epochs replay from a CUDA graph."""
    import numpy as np

    from .backends import get_backend

    backend = get_backend(backend_name)
    n_features, n_classes = data.train_images.shape[1], 10
    X = backend.asarray(data.train_images)
    stepper = backend.fused_sgd("softmax", X, backend.asarray(data.train_labels.astype(np.int64)),
                                np.zeros((n_features, n_classes), np.float32), np.zeros(n_classes, np.float32),
                                max_batch_size=MNIST_BATCH, l2=MNIST_L2, momentum=MNIST_MOMENTUM, x_scale=1 / 255)
    if hasattr(stepper, "use_epoch_kernel"):
        stepper.use_epoch_kernel, stepper.split_precision = epoch_kernel, split_precision
        stepper.use_cuda_graph = cuda_graph
    rng = np.random.default_rng(0)
    n_rows = X.shape[0]
    epoch_ms = []
    for epoch in range(MNIST_EPOCHS):
        rows = backend.permutation(n_rows, rng)
        _synchronise()
        started = time.perf_counter()
        stepper.run_epoch(rows, _learning_rates(epoch, -(-n_rows // MNIST_BATCH)), MNIST_BATCH)
        loss = stepper.pop_loss_sum()  # the epoch's one read back (a sync)
        epoch_ms.append((time.perf_counter() - started) * 1e3)
    W, b = stepper.get_params()
    scores = data.test_images.astype(np.float32) / 255 @ W + b
    return {"epoch_ms": epoch_ms, "median_epoch_ms": float(np.median(epoch_ms)), "final_loss": loss / n_rows,
            "test_accuracy": float((scores.argmax(axis=1) == data.test_labels).mean()),
            "epoch_kernel": bool(getattr(stepper, "epoch_kernel_applies", lambda: False)()),
            "split_epoch_kernel": bool(getattr(stepper, "split_epoch_applies", lambda _: False)(MNIST_BATCH))}


def _synchronise() -> None:
    import torch

    torch.cuda.synchronize()


def _train_torch(data, *, cuda_graph: bool) -> dict:
    """The same SGD in plain PyTorch on the GPU (autograd-free, the gradient written out), eager or replayed from a
    CUDA graph captured once per epoch: the epoch's row order and rates are static device buffers refilled in place.
    """
    import numpy as np
    import torch

    device = torch.device("cuda")
    X = torch.from_numpy(data.train_images).to(device)
    y = torch.from_numpy(data.train_labels.astype(np.int64)).to(device)
    n_rows, n_features = X.shape
    W = torch.zeros((n_features, 10), device=device)
    b = torch.zeros(10, device=device)
    velocity_W, velocity_b = torch.zeros_like(W), torch.zeros_like(b)
    n_steps = -(-n_rows // MNIST_BATCH)
    order = torch.empty(n_rows, dtype=torch.int64, device=device)
    rates = torch.empty(n_steps, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def epoch_steps():
        for step in range(n_steps):
            rows = order[step * MNIST_BATCH:(step + 1) * MNIST_BATCH]
            x = X[rows].to(torch.float32) * (1 / 255)
            logits = x @ W + b
            log_p = torch.log_softmax(logits, dim=1)
            target = y[rows]
            loss_sum.add_(-log_p.gather(1, target[:, None]).sum().to(torch.float64))
            dz = log_p.exp()
            dz[torch.arange(rows.shape[0], device=device), target] -= 1
            dz /= rows.shape[0]
            velocity_W.mul_(MNIST_MOMENTUM).add_(x.T @ dz + MNIST_L2 * W)
            velocity_b.mul_(MNIST_MOMENTUM).add_(dz.sum(0))
            W.sub_(rates[step] * velocity_W)
            b.sub_(rates[step] * velocity_b)

    graph = None
    if cuda_graph:
        # Capture on a side stream after a warm-up, then restore the state the warm-up changed.
        torch.randperm(n_rows, generator=generator, device=device, out=order)
        rates.fill_(0.0)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            epoch_steps()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            epoch_steps()
        for tensor in (W, b, velocity_W, velocity_b, loss_sum):
            tensor.zero_()
    epoch_ms = []
    for epoch in range(MNIST_EPOCHS):
        torch.randperm(n_rows, generator=generator, device=device, out=order)
        rates.copy_(torch.from_numpy(_learning_rates(epoch, n_steps).astype(np.float32)))
        loss_sum.zero_()
        torch.cuda.synchronize()
        started = time.perf_counter()
        if graph is not None:
            graph.replay()
        else:
            epoch_steps()
        loss = float(loss_sum.item())
        epoch_ms.append((time.perf_counter() - started) * 1e3)
    scores = (torch.from_numpy(data.test_images).to(device).float() / 255) @ W + b
    accuracy = float((scores.argmax(1).cpu().numpy() == data.test_labels).mean())
    return {"epoch_ms": epoch_ms, "median_epoch_ms": float(np.median(epoch_ms)), "final_loss": loss / n_rows,
            "test_accuracy": accuracy}


def run_mnist() -> dict:
    """Every MNIST provider; a provider that fails reports its error instead of its figures."""
    from .datasets import load_mnist

    data = load_mnist(download=False)
    runs = {
        "triton-split-epoch-mma": lambda: _train_stepper("triton", data, epoch_kernel=True, split_precision="mma"),
        "triton-split-epoch-ieee": lambda: _train_stepper("triton", data, epoch_kernel=True, split_precision="ieee"),
        "triton-epoch-kernel": lambda: _train_stepper("triton", data, epoch_kernel=True),
        "triton-per-step-graph": lambda: _train_stepper("triton", data, epoch_kernel=False, cuda_graph=True),
        "triton-per-step": lambda: _train_stepper("triton", data, epoch_kernel=False),
        "cupy": lambda: _train_stepper("cupy", data, epoch_kernel=False),
        "torch-eager": lambda: _train_torch(data, cuda_graph=False),
        "torch-cuda-graph": lambda: _train_torch(data, cuda_graph=True),
    }
    results = {}
    for name in MNIST_PROVIDERS:
        try:
            results[name] = {"status": "ok", **runs[name]()}
        except Exception as error:  # noqa: BLE001 - one provider's failure is part of the report, not the end of it
            results[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return results


def selfcheck() -> dict:
    """Run the check (see the module notes); the JSON summary."""
    device = cuda_device()
    if device is None:
        print(f"linclass-gpu selfcheck: no CUDA GPU here, nothing run; on one it would run: {'; '.join(plan())}")
        return {"gpu": None, "ran": False, "would_run": plan()}
    started = time.perf_counter()
    result = {"gpu": device, "ran": True, "tests": run_gpu_tests(), "step_bench": run_step_bench(),
              "mnist": run_mnist()}
    result["seconds"] = time.perf_counter() - started
    for name, run in result["mnist"].items():
        figure = (f"{run['median_epoch_ms']:.2f} ms/epoch, accuracy {run['test_accuracy']:.4f}"
                  if run["status"] == "ok" and math.isfinite(run["median_epoch_ms"]) else run.get("error", ""))
        print(f"mnist {name}: {figure}")
    print(f"tests: {result['tests'].get('summary', result['tests']['status'])}")
    return result


def register(subparsers, add_json) -> None:
    """Add ``selfcheck`` to the ``linclass-gpu`` parser (imports nothing heavy)."""
    parser = subparsers.add_parser("selfcheck", help="on a CUDA GPU: the GPU tests, the step benchmark and MNIST "
                                   "epochs per path, as one JSON object; without one, say so and exit 0")
    add_json(parser)
    parser.set_defaults(run=lambda args: selfcheck())
