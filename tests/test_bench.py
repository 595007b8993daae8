"""The benchmark harness: providers run, the arithmetic is right, outputs have their formats. No timing assertions.

Tiny shapes and ``--quick`` keep it fast. The CUDA paths (do_bench, the device's peaks) cannot run here; the rows a
CUDA provider produces are checked with a stand-in server that reports fixed do_bench quantiles.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest

from linclass_gpu import cli
from linclass_gpu.bench import mnist, mnist_providers, report, step, step_providers
from linclass_gpu.bench.busy import busy_processes
from linclass_gpu.bench.isolated import IsolatedWorker, WorkerError, thread_limits
from linclass_gpu.bench.roofline import DevicePeak, cuda_device_peak, step_bytes, step_flop
from linclass_gpu.bench.timing import LocalSampler, Timing, do_bench_timing, interleaved_wall_clock
from linclass_gpu.kernel_report import bytes_moved

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAS_TRITON = HAS_TORCH and importlib.util.find_spec("triton") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None


def run_cli(capsys, argv):
    """``linclass-gpu *argv``: (exit status, printed lines, the JSON of the last line)."""
    status = cli.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    return status, lines, json.loads(lines[-1])


# -- arithmetic -----------------------------------------------------------------------------------------------------


def test_step_flop_counts_the_two_gemms():
    B, D, C = 128, 784, 10
    assert step_flop(B, D, C) == 2 * B * D * C + 2 * D * B * C


@pytest.mark.parametrize("x_dtype", ["float32", "uint8"])
def test_step_bytes_are_the_fused_steps_compulsory_traffic(x_dtype):
    B, D, C = 128, 784, 10
    assert step_bytes(B, D, C, x_dtype) == bytes_moved(B, D, C, x_dtype)["fused_bytes"]
    # X[rows] dominates at MNIST shapes: read once, B·D elements.
    itemsize = 4 if x_dtype == "float32" else 1
    assert B * D * itemsize < step_bytes(B, D, C, x_dtype) < B * D * itemsize + 8 * (D * C + C) * 4 + 64 * B


def test_roofline_is_the_slower_of_bandwidth_and_flops():
    peak = DevicePeak("test", bytes_per_second=1e12, flop_per_second=1e13)
    assert peak.roofline_seconds(2e9, 1e9) == pytest.approx(2e-3)  # memory-bound
    assert peak.roofline_seconds(1e6, 1e12) == pytest.approx(0.1)  # compute-bound


def test_sweep_is_the_product_and_large_shapes_are_skipped_with_a_reason():
    shapes = step.sweep_shapes([128, 1024], [784], [10, 32768])
    assert shapes == [(128, 784, 10), (1024, 784, 10), (128, 784, 32768), (1024, 784, 32768)]
    assert step.shape_skip_reason((128, 784, 10), "float32", 20.0, 2**30) == ""
    assert "max-gflop" in step.shape_skip_reason((1024, 784, 32768), "float32", 20.0, 2**40)
    assert "GiB" in step.shape_skip_reason((1024, 784, 32768), "float32", None, 2**20)


def test_timing_quantiles():
    timing = Timing.from_samples([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (timing.median, timing.low, timing.high) == (3.0, pytest.approx(1.8), pytest.approx(4.2))


class CountingSampler:
    """A sampler whose every call takes ``seconds_per_call`` and that logs the order of its samples."""

    def __init__(self, name, seconds_per_call, log):
        self.name, self.seconds_per_call, self.log = name, seconds_per_call, log

    def calls_per_sample(self):
        return 4

    def seconds(self, calls):
        self.log.append(self.name)
        return calls * self.seconds_per_call


def test_interleaved_rounds_rotate_and_give_seconds_per_call():
    log = []
    samplers = {name: CountingSampler(name, seconds, log) for name, seconds in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    timings = interleaved_wall_clock(samplers, repeats=3)
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: timing.median for name, timing in timings.items()} == {"a": 1.0, "b": 2.0, "c": 3.0}


def test_local_sampler_calls_the_function():
    calls = []
    sampler = LocalSampler(lambda: calls.append(1), min_sample_seconds=0.0)
    assert sampler.calls_per_sample() == 1
    sampler.seconds(5)
    assert len(calls) == 6


def test_seconds_to_accuracy_is_that_of_the_first_evaluation_at_the_target():
    assert mnist.seconds_to_accuracy([(1.0, 0.90), (3.0, 0.93), (6.0, 0.95)], 0.92) == 3.0
    assert mnist.seconds_to_accuracy([(1.0, 0.90), (3.0, 0.91)], 0.92) is None


def test_targets_are_ratios_of_the_measured_rows():
    rows = [
        {"provider": "numpy", "status": "ok", "median_epoch_s": 0.1, "seconds_to_target": 0.2},
        {"provider": "torch-eager", "status": "ok", "median_epoch_s": 0.5, "seconds_to_target": 1.0},
        {"provider": "numpy-gemm-floor", "status": "ok", "median_epoch_s": 0.04, "seconds_to_target": None},
        {"provider": "sklearn-lbfgs", "status": "ok", "median_epoch_s": None, "seconds_to_target": None},
        {"provider": "linclass-gpu-train", "status": "ok", "peak_above_baseline_mb": 55.0},
        {"provider": "sklearn-sgd", "status": "skipped", "reason": "sklearn not installed"},
    ]
    checks = {check["name"]: check for check in mnist.targets(rows, 0.92)}
    assert checks["median epoch, torch-eager / numpy"]["value"] == pytest.approx(5.0)
    assert checks["median epoch, torch-eager / numpy"]["met"]
    assert checks["median epoch, numpy / numpy-gemm-floor"]["value"] == pytest.approx(2.5)
    assert not checks["median epoch, numpy / numpy-gemm-floor"]["met"]
    assert checks["seconds to 92%, sklearn-lbfgs / numpy"] == {
        "name": "seconds to 92%, sklearn-lbfgs / numpy", "value": None, "goal": ">= 20", "met": False}
    ratio = checks["linclass-gpu train peak above baseline / dataset"]["value"]
    assert ratio == pytest.approx(55e6 / mnist.MNIST_DATASET_BYTES)


def test_thread_goals_name_the_machine_state_and_compare_default_threads_one_thread_and_jax():
    rows = [{"provider": "numpy", "status": "ok", "median_epoch_s": 0.12, "seconds_to_target": 0.2},
            {"provider": "numpy-1-thread", "status": "ok", "median_epoch_s": 0.10, "seconds_to_target": 0.2},
            {"provider": "jax", "status": "ok", "median_epoch_s": 0.15, "seconds_to_target": 0.3}]
    checks = {check["name"]: check for check in mnist.targets(rows, 0.92, busy=1)}
    threads = checks["median epoch, numpy default threads / numpy-1-thread (1 busy process)"]
    assert threads["value"] == pytest.approx(1.2) and threads["goal"] == "<= 1.3" and threads["met"]
    versus_jax = checks["median epoch, jax / numpy (1 busy process)"]
    assert versus_jax["value"] == pytest.approx(1.25) and versus_jax["goal"] == ">= 1.5" and not versus_jax["met"]
    idle = [check["name"] for check in mnist.targets(rows, 0.92)]
    assert idle == ["median epoch, numpy default threads / numpy-1-thread (0 busy processes)",
                    "median epoch, jax / numpy (0 busy processes)"]
    # Every pool capped by --threads: there are no default threads to compare.
    assert [check["name"] for check in mnist.targets(rows, 0.92, threads=2)] == idle[1:]


def test_one_thread_rows_pin_every_pool_and_the_librarys_own_choice():
    from linclass_gpu.threads import THREADS_ENVIRONMENT_VARIABLE

    assert mnist.THREADS_VARIABLE == THREADS_ENVIRONMENT_VARIABLE
    assert mnist.provider_environment("numpy-1-thread", None) == {
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", THREADS_ENVIRONMENT_VARIABLE: "1"}
    assert mnist.provider_environment("numpy", None) == {}  # the defaults, as a user gets them
    assert mnist.provider_environment("jax", 2)["OPENBLAS_NUM_THREADS"] == "2"
    assert {"numpy", "numpy-1-thread", "jax"} <= set(mnist.default_providers())


def test_busy_processes_run_for_the_block_and_are_reaped_after():
    with busy_processes(2) as processes:
        assert len(processes) == 2 and all(process.poll() is None for process in processes)
    assert all(process.returncode is not None for process in processes)
    with pytest.raises(ValueError, match="--busy"), busy_processes(-1):
        pass


def test_mnist_dataset_size():
    assert mnist.MNIST_DATASET_BYTES == 60000 * 784 + 10000 * 784 + 70000


# -- output formats -------------------------------------------------------------------------------------------------


def test_table_aligns_ok_rows_and_lists_the_others_below():
    rows = [{"provider": "numpy", "B": 128, "median_ms": 0.123456, "gbps": None, "status": "ok"},
            {"provider": "torch-eager", "B": 128, "status": "skipped", "reason": "torch is not installed"}]
    lines = report.format_table(rows, [("provider", "provider"), ("B", "B"), ("median_ms", "ms"), ("gbps", "GB/s")])
    lines = lines.splitlines()
    assert lines[0].split() == ["provider", "B", "ms", "GB/s"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["numpy", "128", "0.123", "-"]
    assert lines[3] == "torch-eager 128: skipped: torch is not installed"


def test_csv_rows_carry_the_machine_and_versions(tmp_path):
    path = tmp_path / "results.csv"
    context = report.machine_context()
    assert set(context) == set(report.CONTEXT_COLUMNS)
    assert context["numpy version"] == np.__version__ and context["gpu"] == "none"
    report.append_csv(path, [{"provider": "numpy", "median_ms": 1.5}], ["provider", "median_ms"], context)
    report.append_csv(path, [{"provider": "floor", "median_ms": None}], ["provider", "median_ms"], context)
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["provider"], row["median_ms"]) for row in rows] == [("numpy", "1.5"), ("floor", "")]
    assert rows[0]["cores"] == str(context["cores"]) and rows[0]["linclass-gpu version"]
    with pytest.raises(ValueError, match="other columns"):
        report.append_csv(path, [], ["provider", "fit_s"], context)


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_plots_are_written(tmp_path):
    from linclass_gpu.bench.plot import plot_mnist, plot_step

    step_rows = [{"provider": p, "status": "ok", "B": B, "D": 784, "C": 10, "median_ms": t * B, "low_ms": t,
                  "high_ms": 2 * t * B, "gbps": 10.0 * B} for p, t in (("numpy", 1e-3), ("torch-eager", 5e-3))
                 for B in (128, 1024)]
    plot_step(step_rows, tmp_path / "step.png")
    plot_step(step_rows, tmp_path / "step_gpu.png", peak={"device": "test", "gbps": 3000.0, "tflops": 60.0})
    mnist_rows = [{"provider": "numpy", "status": "ok", "median_epoch_s": 0.1, "seconds_to_target": 0.3},
                  {"provider": "sklearn-lbfgs", "status": "ok", "median_epoch_s": 1.0, "seconds_to_target": None},
                  {"provider": "torch-eager", "status": "skipped", "reason": "torch not installed"}]
    plot_mnist(mnist_rows, tmp_path / "mnist.png")
    for name in ("step.png", "step_gpu.png", "mnist.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- isolated processes ---------------------------------------------------------------------------------------------


def test_isolated_worker_serves_calls_reports_memory_and_errors():
    server = f"{step_providers.__name__}:ProviderServer"
    with IsolatedWorker(server, {"name": "numpy-gemm-floor"}, timeout=120, env=thread_limits(1)) as worker:
        assert worker.call("build", 8, 16, 4, "float32") == {"device": "cpu", "setup_seconds": pytest.approx(0, abs=5)}
        assert worker.call("seconds", 3) >= 0
        memory = worker.memory()
        assert memory["peak_mb"] >= memory["baseline_mb"] > 0
        with pytest.raises(WorkerError) as error:
            worker.call("build", 8, 16, 4, "float16")
        assert error.value.kind == "ValueError" and "x_dtype" in error.value.message
    with IsolatedWorker(server, {"name": "cuda-gemm-floor"}, timeout=120) as worker:
        with pytest.raises(WorkerError) as error:
            worker.call("build", 8, 16, 4, "float32")
        assert error.value.kind == "ProviderUnavailable"


# -- bench step -----------------------------------------------------------------------------------------------------


def test_step_bench_runs_every_provider_and_reports_the_unavailable_as_skipped():
    providers = ["numpy", "numpy-gemm-floor", "cuda-gemm-floor"] + ["torch-eager"] * HAS_TORCH
    outcome = step.run_step_bench([(16, 32, 4), (4096, 4096, 4096)], providers, repeats=2, max_gflop=1.0,
                                  progress=lambda message: None)
    rows = {(row["provider"], row["B"]): row for row in outcome["results"]}
    assert rows["*", 4096]["status"] == "skipped" and "max-gflop" in rows["*", 4096]["reason"]
    assert rows["cuda-gemm-floor", 16] == {"provider": "cuda-gemm-floor", "B": 16, "D": 32, "C": 4,
                                           "x_dtype": "float32", "status": "skipped", "reason": "no CUDA device"}
    numpy_row, floor_row = rows["numpy", 16], rows["numpy-gemm-floor", 16]
    assert numpy_row["status"] == floor_row["status"] == "ok"
    assert numpy_row["low_ms"] <= numpy_row["median_ms"] <= numpy_row["high_ms"]
    assert numpy_row["gbps"] == pytest.approx(step_bytes(16, 32, 4, "float32") / numpy_row["median_ms"] / 1e6)
    assert numpy_row["time_vs_floor"] == pytest.approx(numpy_row["median_ms"] / floor_row["median_ms"])
    assert floor_row["gbps"] is None and floor_row["time_vs_floor"] == 1.0
    assert numpy_row["bandwidth_fraction"] is None and outcome["peak"] is None
    if HAS_TORCH:
        assert rows["torch-eager", 16]["speedup_vs_torch_eager"] == 1.0
        assert numpy_row["speedup_vs_torch_eager"] == pytest.approx(
            rows["torch-eager", 16]["median_ms"] / numpy_row["median_ms"])


def test_default_step_providers_run_natively_here(monkeypatch):
    assert step_providers.default_providers(quick=True)[:1] == ["numpy"]
    assert "torch-compile" not in step_providers.default_providers(quick=True)
    assert "triton" not in step_providers.default_providers()  # the interpreter is for tests, not timings
    on_gpu = {"triton": True, "cupy": False, "numpy": True}
    monkeypatch.setattr(step_providers, "probe", lambda name: SimpleNamespace(usable=True, auto=on_gpu[name],
                                                                               detail=""))
    monkeypatch.setattr(step_providers, "_torch_device", lambda: "cuda")
    expected = ["triton"] + ["torch-eager", "torch-compile", "cuda-gemm-floor"] * HAS_TORCH
    assert step_providers.default_providers() == expected


def test_step_bench_reports_missing_torch_as_skipped(monkeypatch):
    monkeypatch.setattr(step_providers.importlib.util, "find_spec", lambda name: None)
    rows = step.run_step_bench([(8, 16, 4)], ["torch-eager", "torch-compile", "numpy-gemm-floor"], repeats=1,
                               progress=lambda message: None)["results"]
    assert [(row["provider"], row["status"], row.get("reason")) for row in rows] == [
        ("numpy-gemm-floor", "ok", None), ("torch-eager", "skipped", "torch is not installed"),
        ("torch-compile", "skipped", "torch is not installed")]


class FakeCudaServer:
    """Stands in for a ProviderServer on a CUDA device: do_bench reports fixed quantiles."""

    def __init__(self, seconds):
        self.seconds = seconds

    def call(self, method, *args):
        return {"build": {"device": "cuda", "setup_seconds": 0.0}, "do_bench": self.seconds}[method]


def test_cuda_rows_are_put_against_the_peak_and_the_cuda_floor():
    shape, peak = (65536, 784, 10), DevicePeak("test GPU", bytes_per_second=2e12, flop_per_second=2e13)
    servers = {"triton": FakeCudaServer([1e-4, 0.9e-4, 1.2e-4]), "cuda-gemm-floor": FakeCudaServer([5e-5] * 3)}
    rows = {row["provider"]: row for row in step.measure_shape(shape, servers, "uint8", 1, peak)}
    triton = rows["triton"]
    n_bytes, flop = step_bytes(*shape, "uint8"), step_flop(*shape)
    assert triton["method"] == "do_bench" and triton["median_ms"] == pytest.approx(0.1)
    assert triton["bandwidth_fraction"] == pytest.approx(n_bytes / 1e-4 / 2e12)
    assert triton["roofline_fraction"] == pytest.approx(max(n_bytes / 2e12, flop / 2e13) / 1e-4)
    assert triton["tflops"] == pytest.approx(flop / 1e-4 / 1e12)
    assert triton["time_vs_floor"] == pytest.approx(2.0)
    assert rows["cuda-gemm-floor"]["bandwidth_fraction"] is None


def test_step_targets_hold_the_bandwidth_and_mnist_shape_goals():
    rows = [
        {"provider": "triton", "status": "ok", "device": "cuda", "B": 65536, "D": 784, "C": 10,
         "bandwidth_fraction": 0.9},
        {"provider": "triton", "status": "ok", "device": "cuda", "B": 65536, "D": 784, "C": 1024,
         "bandwidth_fraction": 0.5},
        {"provider": "triton", "status": "ok", "device": "cuda", "B": 128, "D": 784, "C": 10,
         "bandwidth_fraction": 0.2},
        {"provider": "cuda-gemm-floor", "status": "ok", "device": "cuda", "B": 65536, "D": 784, "C": 10},
        {"provider": "numpy", "status": "ok", "device": "cpu", "B": 128, "D": 784, "C": 10,
         "speedup_vs_torch_eager": 4.0, "time_vs_floor": 2.5},
        {"provider": "cupy", "status": "skipped", "B": 128, "D": 784, "C": 10, "reason": "no CUDA driver"},
    ]
    assert [(t["name"], t["value"], t["met"]) for t in step.step_targets(rows)] == [
        ("triton step 65536x784x10, fraction of peak bandwidth", 0.9, True),
        ("step 128x784x10, torch-eager / numpy", 4.0, True),
        ("step 128x784x10, numpy / numpy-gemm-floor", 2.5, False)]


@pytest.fixture
def fake_do_bench(monkeypatch):
    """triton.testing.do_bench answering [2, 1.5, 3] ms (median, 20%, 80%), as it would on a GPU; records its calls."""
    import triton.testing

    calls = []

    def do_bench(fn, warmup, rep, quantiles):
        fn()
        calls.append(quantiles)
        return [2.0, 1.5, 3.0]

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    return calls


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_do_bench_quantiles_become_seconds_per_call(fake_do_bench):
    assert do_bench_timing(lambda: None) == Timing(2e-3, 1.5e-3, 3e-3, "do_bench")
    assert fake_do_bench == [[0.5, 0.2, 0.8]]
    server = step_providers.ProviderServer(lambda: None, "numpy-gemm-floor")
    server.build(8, 16, 4, "float32")
    assert server.do_bench() == [2e-3, 1.5e-3, 3e-3]


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_cuda_device_peak_comes_from_the_device_attributes(monkeypatch):
    """triton.testing's formulas over a faked driver: an A100's attributes give its data-sheet peaks."""
    import torch
    from triton.runtime import driver

    properties = {"sm_clock_rate": 1_410_000, "mem_clock_rate": 1_215_000, "mem_bus_width": 5120}  # A100, kHz
    monkeypatch.setattr(driver, "_active", SimpleNamespace(utils=SimpleNamespace(
        get_device_properties=lambda device: {**properties, "multiprocessor_count": 108})))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "A100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    peak = cuda_device_peak()
    assert peak.name == "A100"
    assert peak.bytes_per_second == pytest.approx(1555.2e9)  # 1215 MHz × 2 (DDR) × 5120 bits / 8
    assert peak.flop_per_second == pytest.approx(19.49e12, rel=1e-3)  # 108 SMs × 4 × 32 lanes × 1.41 GHz


@pytest.mark.parametrize("name", ["numpy", "numpy-gemm-floor"])
def test_numpy_step_providers_are_timed_on_the_threads_fit_takes(name):
    from threadpoolctl import threadpool_info

    from linclass_gpu.threads import blas_threads_for

    def blas_threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    server = step_providers.ProviderServer(lambda: None, name)
    try:
        server.build(128, 784, 10, "uint8")
        assert blas_threads() == {blas_threads_for(2 * 128 * 784 * 10)}
        assert server.seconds(2) > 0
    finally:
        server._threads.close()
    assert blas_threads() == before


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_step_provider_trains():
    problem = step_providers.StepProblem.random(16, 8, 3, x_dtype="uint8")
    provider = step_providers.build_provider("torch-eager", problem)
    assert provider.device == "cpu"
    provider.step()


def test_triton_step_provider_runs_under_the_interpreter():
    if "triton" not in step_providers.STEP_PROVIDERS or step_providers.unavailable_reason("triton"):
        pytest.skip("triton cannot run here")
    rows = step.run_step_bench([(8, 16, 4)], ["triton"], repeats=1, progress=lambda message: None)["results"]
    assert rows[0]["status"] == "ok" and rows[0]["median_ms"] > 0


def test_step_cli_prints_a_table_json_csv_and_plot(capsys, tmp_path):
    argv = ["bench", "step", "--quick", "--providers", "numpy,numpy-gemm-floor", "--threads", "1",
            "--csv", str(tmp_path / "step.csv"), "--json"]
    if HAS_MATPLOTLIB:
        argv += ["--plot", str(tmp_path / "step.png")]
    status, lines, result = run_cli(capsys, argv)
    assert status == 0
    assert lines[0].split()[:5] == ["provider", "B", "D", "C", "median"]
    assert result["bench"] == "step" and result["repeats"] == step.QUICK_REPEATS
    assert len(result["results"]) == 2 * len(step.QUICK_SWEEP["batch_sizes"])
    with (tmp_path / "step.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(result["results"]) and rows[0]["threads"] == "1"
    assert not HAS_MATPLOTLIB or (tmp_path / "step.png").exists()


def test_unknown_provider_is_a_usage_error(capsys):
    assert cli.main(["bench", "step", "--providers", "numpy,fortran"]) == 2
    assert "fortran" in capsys.readouterr().err


def test_negative_busy_is_a_usage_error(capsys):
    assert cli.main(["bench", "mnist", "--quick", "--providers", "numpy-gemm-floor", "--busy", "-1"]) == 2
    assert "--busy" in capsys.readouterr().err


# -- bench mnist ----------------------------------------------------------------------------------------------------


QUICK_SETTINGS = dict(epochs=2, batch_size=128, learning_rate=0.5, schedule="exponential", gamma=0.2, step_size=5,
                      min_learning_rate=0.2, momentum=0.5, alpha=1e-4, seed=0,
                      target_accuracy=0.5, lbfgs_max_iter=10, train_rows=512, test_rows=256)


@pytest.mark.parametrize("provider, needs", [
    ("BackendTraining", None), ("GemmFloor", None), ("TorchTraining", "torch"), ("JaxTraining", "jax"),
    ("SklearnSGDTraining", "sklearn"), ("SklearnLbfgsTraining", "sklearn")])
def test_mnist_providers_train_epoch_by_epoch(provider, needs):
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    marks = []
    training = getattr(mnist_providers, provider)(lambda: marks.append(1), backend="numpy", **QUICK_SETTINGS)
    epochs = 1
    while not training.epoch():
        epochs += 1
    summary = training.summary()
    assert marks == [1]
    assert len(summary["epoch_seconds"]) == epochs and all(s > 0 for s in summary["epoch_seconds"])
    assert summary["fit_seconds"] >= sum(summary["epoch_seconds"])
    if provider == "GemmFloor":
        assert summary["test_accuracy"] == [] and summary["accuracy_curve"] == []
    else:
        assert len(summary["test_accuracy"]) == epochs and summary["test_accuracy"][-1] > 0.5
        seconds, accuracy = zip(*summary["accuracy_curve"])
        # Training seconds only grow between evaluations and end at the epochs' total; the last is the epoch end's.
        assert all(later > earlier for earlier, later in zip(seconds, seconds[1:]))
        assert seconds[-1] == pytest.approx(sum(summary["epoch_seconds"]))
        assert accuracy[-1] == summary["test_accuracy"][-1]
        # The SGD providers evaluate within epochs too, EVALUATIONS_PER_EPOCH times (minibatch SGD: every
        # ceil(4 steps / 4) steps of an epoch of 512 rows); L-BFGS after each chunk.
        per_epoch = 1 if provider == "SklearnLbfgsTraining" else mnist_providers.EVALUATIONS_PER_EPOCH
        assert len(seconds) == epochs * per_epoch
    if provider == "TorchTraining":  # the estimators' schedule, floor included: 0.5, then max(0.5·0.2, 0.2)
        assert training.optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    if provider == "SklearnLbfgsTraining":
        assert summary["iterations"] <= QUICK_SETTINGS["lbfgs_max_iter"]
    else:
        assert epochs == QUICK_SETTINGS["epochs"]


def test_backend_training_warms_up_on_data_smaller_than_a_batch():
    """The setup's throwaway stepper takes at most the rows there are (100 rows, batch 128: one short batch)."""
    training = mnist_providers.BackendTraining(lambda: None, backend="numpy", **{**QUICK_SETTINGS, "train_rows": 100})
    while not training.epoch():
        pass
    assert len(training.summary()["epoch_seconds"]) == QUICK_SETTINGS["epochs"]


def test_backend_training_matches_one_train_sgd_call():
    """Epoch by epoch with the schedule's origin moved is the same computation as the estimator's single call."""
    from linclass_gpu import SoftmaxRegression
    from linclass_gpu.bench.mnist_providers import PIXEL_SCALE, load_split

    training = mnist_providers.BackendTraining(lambda: None, backend="numpy", **QUICK_SETTINGS)
    while not training.epoch():
        pass
    X, y, _, _ = load_split(None, QUICK_SETTINGS["train_rows"], 0)
    settings = {key: QUICK_SETTINGS[key] for key in ("epochs", "batch_size", "learning_rate", "schedule", "gamma",
                                                     "step_size", "min_learning_rate", "momentum", "alpha")}
    model = SoftmaxRegression(backend="numpy", **settings, average=False, tol=None, input_scale=PIXEL_SCALE,
                              random_state=0).fit(X, y)
    W, b = training.stepper.get_params()
    np.testing.assert_array_equal(W.T, model.coef_)
    np.testing.assert_array_equal(b, model.intercept_)


def test_mnist_bench_reports_missing_peers_as_skipped_and_failures_as_errors(monkeypatch):
    monkeypatch.setitem(mnist.PEERS, "sklearn-sgd", ("SklearnSGDTraining", ("no_such_module_for_linclass",)))
    monkeypatch.setitem(mnist.PEERS, "numpy-gemm-floor", ("NoSuchTraining", ()))
    outcome = mnist.run_mnist_bench(["sklearn-sgd", "numpy-gemm-floor"], mnist.MnistSettings(**QUICK_SETTINGS),
                                    progress=lambda message: None)
    skipped, failed = outcome["results"]
    assert skipped == {"provider": "sklearn-sgd", "status": "skipped",
                       "reason": "no_such_module_for_linclass not installed"}
    assert failed["status"] == "error" and "NoSuchTraining" in failed["reason"]


def test_mnist_bench_skips_the_jax_peer_without_jax(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None if name == "jax" else real_find_spec(name))
    outcome = mnist.run_mnist_bench(["jax"], mnist.MnistSettings(**QUICK_SETTINGS), progress=lambda message: None)
    assert outcome["results"] == [{"provider": "jax", "status": "skipped", "reason": "jax not installed"}]
    assert outcome["targets"] == []


def test_mnist_settings_follow_the_estimators_sgd_defaults():
    from linclass_gpu import SoftmaxRegression

    defaults, settings = SoftmaxRegression(), mnist.MnistSettings.library_defaults(epochs=None, momentum=0.9)
    assert settings.epochs == mnist.DEFAULT_EPOCHS and settings.momentum == 0.9
    assert (settings.batch_size, settings.learning_rate, settings.alpha) == (
        defaults._batch_rows(mnist.MNIST_TRAIN_ROWS), defaults.learning_rate, defaults.alpha)
    assert (settings.schedule, settings.gamma, settings.step_size, settings.min_learning_rate) == (
        defaults.schedule, defaults.gamma, defaults.step_size, defaults.min_learning_rate)


def test_mnist_cli_trains_each_provider_in_its_own_process(capsys, tmp_path):
    providers = (["numpy", "numpy-1-thread", "numpy-gemm-floor", "linclass-gpu-train"] + ["sklearn-lbfgs"] * HAS_SKLEARN
                 + ["jax"] * HAS_JAX)
    argv = ["bench", "mnist", "--quick", "--epochs", "1", "--providers", ",".join(providers), "--busy", "1",
            "--csv", str(tmp_path / "mnist.csv"), "--json"]
    if HAS_MATPLOTLIB:
        argv += ["--plot", str(tmp_path / "mnist.png")]
    status, lines, result = run_cli(capsys, argv)
    assert status == 0
    rows = {row["provider"]: row for row in result["results"]}
    assert list(rows) == providers and all(row["status"] == "ok" for row in rows.values())
    assert rows["numpy"]["input"] == "uint8, input_scale=1/255" and rows["numpy"]["epochs"] == 1
    assert rows["numpy"]["peak_above_baseline_mb"] > 0 and rows["numpy-gemm-floor"]["final_accuracy"] is None
    assert rows["linclass-gpu-train"]["final_accuracy"] > 0.85  # trains on all of MNIST
    assert rows["numpy-1-thread"]["final_accuracy"] == rows["numpy"]["final_accuracy"]  # the same training
    assert result["busy"] == 1 and "1 busy process(es) beside" in lines[0]
    goals = {target["name"] for target in result["targets"]}
    assert goals >= {"median epoch, numpy / numpy-gemm-floor", "linclass-gpu train peak above baseline / dataset",
                     "median epoch, numpy default threads / numpy-1-thread (1 busy process)"}
    assert not HAS_JAX or "median epoch, jax / numpy (1 busy process)" in goals
    goal_lines = [line for line in lines if line.startswith("target ")]
    assert len(goal_lines) == len(goals) and all(line.endswith((" pass", " FAIL")) for line in goal_lines)
    with (tmp_path / "mnist.csv").open(newline="") as file:
        csv_rows = list(csv.DictReader(file))
    assert [row["provider"] for row in csv_rows] == providers
    assert {(row["provider"], row["threads"], row["busy"]) for row in csv_rows if "numpy" in row["provider"]} == {
        ("numpy", "", "1"), ("numpy-1-thread", "1", "1"), ("numpy-gemm-floor", "", "1")}
    assert not HAS_MATPLOTLIB or (tmp_path / "mnist.png").exists()
