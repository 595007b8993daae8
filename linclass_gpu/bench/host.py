"""``linclass-gpu bench host``: the host time of the Triton backend's per-step path, its launches stubbed.

What the CPU spends per SGD step decides whether a small step is host-bound on a GPU. This benchmark measures it on
any machine: compiled-mode kernels (``TRITON_INTERPRET=0``) on CPU tensors, everything real (the estimator's stepper,
argument binding, :class:`~linclass_gpu.backends.triton_launch.PreparedLaunch`) except the launches themselves:
Triton's ``JITFunction.run`` returns a stand-in compiled kernel whose launcher does nothing, and the stand-in launcher
counts its calls. The figure leaves out the CUDA driver's own launch cost (a few microseconds per launch on a fast
host) and any work on the device.

It runs in a child process, since the interpreter mode is fixed per process and the stubs must not leak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

DEFAULTS = {"rows": 60000, "features": 784, "classes": 10, "batch_size": 128, "epochs": 3, "model": "softmax"}
# The goal for the per-step host time with the launches stubbed.
HOST_US_GOAL = 10.0


class _StubCompiledKernel:
    """Stands in for Triton's CompiledKernel: the launcher records what it is given and launches nothing."""

    function, packed_metadata = 0, None

    def __init__(self, kernel):
        self.kernel = kernel
        self.calls: list[tuple] = []

    def run(self, *launch):
        self.calls.append(launch)


def _measure(settings: dict) -> dict:
    """In the child: one stepper on CPU tensors with stubbed launches; host µs per step over the later epochs."""
    import numpy as np
    import torch
    from triton.runtime.jit import JITFunction

    import linclass_gpu.kernels  # noqa: F401  (decides the mode: TRITON_INTERPRET=0 is set by the parent)
    from linclass_gpu.backends import triton_launch
    from linclass_gpu.backends.triton_backend import TritonBackend

    compiled: dict[str, _StubCompiledKernel] = {}
    triton_launches = []

    def stub_run(kernel, *args, grid, warmup, **kwargs):
        triton_launches.append(kernel.fn.__name__)
        return compiled.setdefault(kernel.fn.__name__, _StubCompiledKernel(kernel))

    JITFunction.run = stub_run
    triton_launch._default_stream = lambda: (lambda: 0)
    torch.cuda.is_available = lambda: True  # the backend's checks; every tensor stays on the CPU
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    backend = TritonBackend(device="cpu")

    rng = np.random.default_rng(0)
    rows, features, classes, batch_size = (settings[key] for key in ("rows", "features", "classes", "batch_size"))
    X = rng.integers(0, 256, (rows, features), dtype=np.uint8)
    y = rng.integers(0, classes, rows) if settings["model"] == "softmax" else rng.integers(0, 2, rows)
    outputs = classes if settings["model"] == "softmax" else 1
    stepper = backend.fused_sgd(settings["model"], X, y, np.zeros((features, outputs), np.float32),
                                np.zeros(outputs, np.float32), max_batch_size=batch_size, l2=1e-4, momentum=0.5,
                                nesterov=False, fit_intercept=True, x_scale=1 / 255, sample_weight=None)
    stepper.use_epoch_kernel = False  # the per-step path
    n_steps = -(-rows // batch_size)
    epoch_seconds = []
    for _ in range(settings["epochs"]):
        order = backend.permutation(rows, rng)
        rates = np.full(n_steps, 0.1)
        started = time.perf_counter()
        stepper.run_epoch(order, rates, batch_size)
        epoch_seconds.append(time.perf_counter() - started)
    later = epoch_seconds[1:] or epoch_seconds
    return {"host_us_per_step": 1e6 * min(later) / n_steps, "first_epoch_us_per_step": 1e6 * epoch_seconds[0] / n_steps,
            "steps_per_epoch": n_steps, "epochs": settings["epochs"],
            "triton_launches": len(triton_launches),
            "direct_launches": sum(len(kernel.calls) for kernel in compiled.values()),
            "launches_per_step": sum(len(kernel.calls) for kernel in compiled.values()) / (n_steps * settings["epochs"])
            + len(triton_launches) / (n_steps * settings["epochs"])}


def run_host_bench(settings: dict) -> dict:
    """Measure in a child process (``TRITON_INTERPRET=0``); the result of :func:`_measure`."""
    environment = {**os.environ, "TRITON_INTERPRET": "0"}
    child = subprocess.run([sys.executable, "-m", "linclass_gpu.bench.host", json.dumps(settings)],
                           capture_output=True, text=True, env=environment)
    if child.returncode != 0:
        raise RuntimeError(f"the host benchmark's process failed: {child.stderr.strip()[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def register(benches, add_json) -> None:
    """Add ``host`` to the ``linclass-gpu bench`` subcommands."""
    parser = benches.add_parser("host", help="host microseconds per SGD step of the Triton per-step path, its "
                                "launches stubbed (runs without a GPU)")
    parser.add_argument("--rows", type=int, default=DEFAULTS["rows"], help="training rows (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="default %(default)s")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="the first one binds the launches "
                        "and is reported apart (default %(default)s)")
    parser.add_argument("--model", choices=("softmax", "sigmoid"), default=DEFAULTS["model"],
                        help="default %(default)s")
    add_json(parser)
    parser.set_defaults(run=run)


def run(args) -> dict:
    """Run the measurement and print it with the goal."""
    from .report import format_targets

    for flag, value in (("--rows", args.rows), ("--batch-size", args.batch_size), ("--epochs", args.epochs)):
        if value < 1:
            raise SystemExit(f"linclass-gpu bench host: error: {flag} must be a positive integer, got {value}")
    settings = {**DEFAULTS, "rows": args.rows, "batch_size": args.batch_size, "epochs": args.epochs,
                "model": args.model}
    result = run_host_bench(settings)
    met = result["host_us_per_step"] <= HOST_US_GOAL
    print(f"Triton per-step path, {settings['model']}, B = {settings['batch_size']}, D = {settings['features']}, "
          f"{result['steps_per_epoch']} steps per epoch, launches stubbed: {result['host_us_per_step']:.1f} µs of "
          f"host time per step (first epoch, which binds the launches: {result['first_epoch_us_per_step']:.1f}); "
          f"{result['triton_launches']} launches through Triton, {result['direct_launches']} direct")
    targets = [{"name": "host µs per step, launches stubbed", "value": result["host_us_per_step"],
                "goal": f"<= {HOST_US_GOAL:g}", "met": met}]
    print(format_targets(targets))
    return {"bench": "host", "settings": settings, **result, "targets": targets}


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
