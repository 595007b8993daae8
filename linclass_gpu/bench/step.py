"""``bench step``: one SGD step per provider over a B × D × C sweep, timed in one run and put against the roofline.

Every provider of :mod:`.step_providers` is served from its own process (:mod:`.isolated`) and built per shape on
the same data; the host providers are timed together in interleaved rounds (:func:`.timing.interleaved_wall_clock`),
the CUDA ones with ``do_bench``. Each result row holds the time quantiles, the GB/s of the fused step's compulsory
traffic and the GEMMs' TFLOP/s, the speed-up over ``torch-eager``, the time relative to the bare-GEMM floor of the
same device and, on a GPU, the fractions of the peak bandwidth and of the roofline (:mod:`.roofline`).

The sweep is this package's own loop rather than ``triton.testing.perf_report``: the report's loop measures one
(shape, provider) cell after another, which cannot interleave providers sample by sample, and its ``run`` needs
pandas; the results here go to a table, JSON, CSV and :func:`.plot.plot_step` instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os

from ..backends.registry import AUTO_ORDER
from ..kernel_report import MNIST_SHAPE
from .isolated import IsolatedWorker, WorkerError, thread_limits
from .report import target
from .roofline import DevicePeak, cuda_device_peak, step_bytes, step_flop
from .step_providers import FLOOR_PROVIDERS, ProviderServer, ProviderUnavailable, unavailable_reason
from .timing import Timing, interleaved_wall_clock

# The sweeps ``bench step`` runs by default. On the CPU: the MNIST shapes, a wide D and a large C, what 2 cores finish
# in two to three minutes (``max_gflop`` drops the larger large-C shapes); on a GPU: up to the sizes where the fused
# step is bandwidth-bound (large B) or GEMM-bound (large C).
CPU_SWEEP = {"batch_sizes": (128, 1024, 8192), "features": (784, 4096), "classes": (10, 32768), "max_gflop": 20.0}
CUDA_SWEEP = {"batch_sizes": (128, 1024, 8192, 65536), "features": (784, 4096), "classes": (10, 1024, 32768),
              "max_gflop": None}
# --quick: tiny shapes for a smoke test of the harness.
QUICK_SWEEP = {"batch_sizes": (16, 64), "features": (32,), "classes": (4,), "max_gflop": None}
DEFAULT_REPEATS = 9
QUICK_REPEATS = 3
# Seconds one call to a provider's process may take: building torch-compile takes a minute or two on 2 cores.
CALL_TIMEOUT_SECONDS = 900
_ITEMSIZE = {"float32": 4, "uint8": 1}


def sweep_shapes(batch_sizes, features, classes) -> list[tuple[int, int, int]]:
    """Every ``(B, D, C)`` of the product ``batch_sizes × features × classes``, in that nesting order."""
    return [(B, D, C) for D, C, B in itertools.product(features, classes, batch_sizes)]


def working_set_bytes(B: int, D: int, C: int, x_dtype: str) -> int:
    """Memory one shape needs at most: X, three (B, C) arrays of the unfused path (logits, probabilities, their
    gradient) and four (D, C) ones (W, its gradient, momentum, the floor's product)."""
    return B * D * _ITEMSIZE[x_dtype] + 4 * (3 * B * C + 4 * D * C)


def memory_budget_bytes(on_cuda: bool) -> int:
    """Largest working set the sweep takes on: half the GPU's memory, or a quarter of the host's."""
    if on_cuda:
        import torch

        return torch.cuda.get_device_properties(0).total_memory // 2
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


def shape_skip_reason(shape: tuple[int, int, int], x_dtype: str, max_gflop: float | None, budget_bytes: int) -> str:
    """Why a shape is left out of the sweep, or "" when it is measured."""
    flop, need = step_flop(*shape), working_set_bytes(*shape, x_dtype)
    if max_gflop is not None and flop > max_gflop * 1e9:
        return f"the GEMMs are {flop / 1e9:.0f} GFLOP per step, above --max-gflop {max_gflop:g}"
    if need > budget_bytes:
        return f"needs {need / 2**30:.1f} GiB, above the budget of {budget_bytes / 2**30:.1f} GiB"
    return ""


def _row(name: str, shape, x_dtype: str, **fields) -> dict:
    B, D, C = shape
    return {"provider": name, "B": B, "D": D, "C": C, "x_dtype": x_dtype, **fields}


class _RemoteSampler:
    """The :class:`.timing.Sampler` of a :class:`.step_providers.ProviderServer` in its own process."""

    def __init__(self, worker: IsolatedWorker):
        self.worker = worker

    def calls_per_sample(self) -> int:
        return self.worker.call("calls_per_sample")

    def seconds(self, calls: int) -> float:
        return self.worker.call("seconds", calls)


def measure_shape(shape: tuple[int, int, int], servers: dict[str, IsolatedWorker], x_dtype: str, repeats: int,
                  peak: DevicePeak | None) -> list[dict]:
    """Time every provider on one shape; one result row per provider, skipped ones included.

    Parameters
    ----------
    shape : (B, D, C)
    servers : dict of provider name to IsolatedWorker
        Each serving a :class:`.step_providers.ProviderServer` of that name.
    x_dtype : {"float32", "uint8"}
    repeats : int
        Interleaved wall-clock rounds for the host providers.
    peak : DevicePeak or None
        The CUDA device's peaks, for the bandwidth and roofline fractions of CUDA rows.

    Returns
    -------
    list of dict
        ``status`` "ok" with ``median_ms``, ``low_ms``, ``high_ms`` (20th/80th percentiles), ``method``, ``gbps``,
        ``tflops``, ``speedup_vs_torch_eager``, ``time_vs_floor``, ``bandwidth_fraction`` and ``roofline_fraction``
        (CUDA rows), ``setup_s``; or ``status`` "skipped" (the provider cannot run here) or "error", with ``reason``.
    """
    built, rows = {}, {}
    for name, server in servers.items():
        try:
            built[name] = server.call("build", *shape, x_dtype)
        except WorkerError as error:
            status = "skipped" if error.kind == ProviderUnavailable.__name__ else "error"
            rows[name] = _row(name, shape, x_dtype, status=status, reason=error.message)
    timings = interleaved_wall_clock(
        {name: _RemoteSampler(servers[name]) for name, info in built.items() if info["device"] == "cpu"}, repeats)
    timings.update({name: Timing(*servers[name].call("do_bench"), "do_bench")
                    for name, info in built.items() if info["device"] == "cuda"})
    n_bytes, flop = step_bytes(*shape, x_dtype), step_flop(*shape)
    floors = {built[name]["device"]: timings[name].median for name in FLOOR_PROVIDERS if name in built}
    eager = timings["torch-eager"].median if "torch-eager" in timings else None
    for name, info in built.items():
        timing, device = timings[name], info["device"]
        floor = floors.get(device)
        is_floor = name in FLOOR_PROVIDERS
        on_peak = peak is not None and device == "cuda" and not is_floor
        rows[name] = _row(
            name, shape, x_dtype, status="ok", device=device, method=timing.method,
            median_ms=timing.median * 1e3, low_ms=timing.low * 1e3, high_ms=timing.high * 1e3,
            gbps=None if is_floor else n_bytes / timing.median / 1e9, tflops=flop / timing.median / 1e12,
            speedup_vs_torch_eager=eager / timing.median if eager else None,
            time_vs_floor=timing.median / floor if floor else None,
            bandwidth_fraction=n_bytes / timing.median / peak.bytes_per_second if on_peak else None,
            roofline_fraction=peak.roofline_seconds(n_bytes, flop) / timing.median if on_peak else None,
            setup_s=info["setup_seconds"],
        )
    return [rows[name] for name in servers]


def step_targets(results: list[dict]) -> list[dict]:
    """The step-level goals, where measured.

    On a GPU: each CUDA backend's fused step at its largest B (and smallest C, the bandwidth-bound end) at 85% or more
    of the peak bandwidth. On the CPU, at the MNIST shape (128, 784, 10): the NumPy step at least 3× faster than
    ``torch-eager`` and at most 1.15× the floor of its gather and two GEMMs (per step; ``bench mnist`` holds the same
    ratios per epoch).

    Returns
    -------
    list of dict
        :func:`.report.target` rows.
    """
    rows = [row for row in results if row["status"] == "ok"]
    checks = []
    for name in sorted({row["provider"] for row in rows if row["device"] == "cuda" and row["provider"] in AUTO_ORDER}):
        own = [row for row in rows if row["provider"] == name]
        largest = max(own, key=lambda row: (row["B"], -row["C"]))
        checks.append(target(f"{name} step {largest['B']}x{largest['D']}x{largest['C']}, fraction of peak bandwidth",
                             largest["bandwidth_fraction"], ">= 0.85", lambda v: v >= 0.85))
    mnist_numpy = [row for row in rows if row["provider"] == "numpy" and (row["B"], row["D"], row["C"]) == MNIST_SHAPE]
    if mnist_numpy:
        row, label = mnist_numpy[0], "x".join(map(str, MNIST_SHAPE))
        checks.append(target(f"step {label}, torch-eager / numpy", row["speedup_vs_torch_eager"], ">= 3",
                             lambda v: v >= 3))
        checks.append(target(f"step {label}, numpy / numpy-gemm-floor", row["time_vs_floor"], "<= 1.15",
                             lambda v: v <= 1.15))
    return checks


def run_step_bench(shapes: list[tuple[int, int, int]], providers: list[str], *, x_dtype: str = "float32",
                   repeats: int = DEFAULT_REPEATS, max_gflop: float | None = None, on_cuda: bool = False,
                   threads: int | None = None, progress=print) -> dict:
    """Measure every provider on every shape (shapes too large for ``max_gflop`` or memory are skipped rows).

    Each provider that can run here is served from its own process for the whole sweep.

    Parameters
    ----------
    shapes : list of (B, D, C)
    providers : list of str
    x_dtype : {"float32", "uint8"}
    repeats : int
    max_gflop : float, optional
        Skip shapes whose two GEMMs exceed this many GFLOP per step.
    on_cuda : bool
        A CUDA device is present: read its peaks and size the memory budget on it.
    threads : int, optional
        Cap on every provider's BLAS and OpenMP threads (default: each library's own choice, all cores).
    progress : callable (str) -> None
        Told which shape is being measured.

    Returns
    -------
    dict
        ``results`` (rows of :func:`measure_shape`, with the providers that cannot run here as skipped rows and
        one ``provider="*"`` skipped row per shape left out), ``peak`` (the CUDA device's peak GB/s and TFLOP/s, or
        None), ``bytes_model`` and ``targets`` (:func:`step_targets`).
    """
    peak = cuda_device_peak() if on_cuda else None
    budget = memory_budget_bytes(on_cuda)
    reasons = {name: unavailable_reason(name) for name in providers}
    results = []
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(IsolatedWorker(f"{ProviderServer.__module__}:ProviderServer",
                                                            {"name": name}, CALL_TIMEOUT_SECONDS,
                                                            env=thread_limits(threads)))
                   for name in providers if not reasons[name]}
        for shape in shapes:
            reason = shape_skip_reason(shape, x_dtype, max_gflop, budget)
            if reason:
                results.append(_row("*", shape, x_dtype, status="skipped", reason=reason))
                continue
            progress(f"step {shape[0]}x{shape[1]}x{shape[2]} {x_dtype}: {', '.join(servers)}")
            results += measure_shape(shape, servers, x_dtype, repeats, peak)
            results += [_row(name, shape, x_dtype, status="skipped", reason=reasons[name])
                        for name in providers if reasons[name]]
    return {
        "results": results, "targets": step_targets(results),
        "peak": None if peak is None else {"device": peak.name, "gbps": peak.bytes_per_second / 1e9,
                                           "tflops": peak.flop_per_second / 1e12},
        "bytes_model": "compulsory traffic of the fused step (linclass_gpu.kernel_report.bytes_moved fused_bytes); "
                       "FLOPs = the two GEMMs, 4·B·D·C",
    }
