"""Ahead-of-time compile of every shipped kernel configuration for sm_80 and sm_90 on this CPU-only machine: no
spills, sane resources, the atomics where they belong; and the bytes-moved model of one SGD step.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="compiling the Triton kernels needs torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode: this process reads the kernels' configurations.
pytest.importorskip("linclass_gpu.kernels", reason="compiling the Triton kernels needs triton")

import triton  # noqa: E402

from linclass_gpu import kernel_report  # noqa: E402

ARCHS = ("sm_80", "sm_90")
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@pytest.fixture(scope="session")
def report_rows():
    """Compile once per session: about 110 s on 2 cores with a cold Triton cache (each large-C build with X resident
    in 25 chunks takes 6–7 s, the others 2–3 s), about 20 s once the cache holds them."""
    if not CUOBJDUMP.exists() or shutil.which(str(CUOBJDUMP)) is None:
        pytest.skip(f"triton's bundled cuobjdump is missing ({CUOBJDUMP})")
    return kernel_report.compile_report(ARCHS)


def test_every_shipped_configuration_compiles_for_each_arch(report_rows):
    builds = kernel_report.shipped_builds()
    expected = [(b.kernel, b.config, arch) for b in builds for arch in ARCHS if kernel_report.builds_for(b, arch)]
    assert sorted((row["kernel"], row["config"], row["arch"]) for row in report_rows) == sorted(expected)
    for row in report_rows:
        assert row["arch"] in ARCHS
        assert 0 < row["registers"] <= 255, row
        if row["kernel"] == "epoch_sgd_kernel":
            # One program per launch: the whole SM's shared memory is its to use (sm_80's per-block maximum).
            assert row["shared_bytes"] <= 163 * 1024, row
        elif row["kernel"].startswith("softmax_tiled"):
            # W's class tile lives in shared memory beside the dW GEMM's operands: two programs per sm_90 SM (227 KB).
            assert row["shared_bytes"] <= 113 * 1024, row
        elif "tf32" in row["config"] and "chunks" in row["config"]:
            # TF32's mma operands hold the resident X chunks twice (one swizzle per GEMM): one program per SM.
            assert row["shared_bytes"] <= 163 * 1024, row  # sm_80's per-block maximum (sm_90: 227 KB)
        else:
            assert row["shared_bytes"] <= 99 * 1024, row  # fits sm_80 and sm_90 with room for 2 programs per SM
        assert row["sass_instructions"] > 0 and row["global_loads"] > 0, row


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", ["D=784 C=10 ", "D=784 C=1000 ", "D=784 C=32768 ", "D=784 K=1 ", "D=784 K=10 ",
                                   "D=784 K=1000 "])
def test_no_local_memory_no_spills(report_rows, arch, shape):
    rows = [row for row in report_rows if row["arch"] == arch and row["config"].startswith(shape)]
    assert rows, f"no shipped configuration {shape!r} for {arch}"
    spilled = [(row["kernel"], row["config"], row["local_bytes"]) for row in rows if row["local_bytes"]]
    assert not spilled, f"local memory (spills) on {arch}: {spilled}"


def test_whole_report_is_spill_free(report_rows):
    assert all(row["local_bytes"] == 0 and row["stack_bytes"] == 0 for row in report_rows), [
        (row["kernel"], row["config"], row["arch"]) for row in report_rows if row["local_bytes"]]


@pytest.mark.parametrize("arch", ARCHS)
def test_x_read_once_per_row_block_whenever_resident(report_rows, arch):
    """The TTGIR of every resident softmax build loads X[rows] outside the class loops, one load per chunk; streamed
    builds (D > 1024) load it inside them, which shows the check can see a repeated read."""
    rows = [row for row in report_rows if row["arch"] == arch and row["kernel"] == "softmax_sgd_kernel"]
    large_c = {(dtype, mode) for dtype in ("float32", "uint8", "bfloat16", "float16")
               for mode in ("atomics", "deterministic")}
    for row in rows:
        chunks = re.search(r"X resident(?: \((\d+) chunks\))?", row["config"])
        if chunks is None:
            assert "X streamed" in row["config"] and row["x_loads_in_inner_loops"] > 0, row
            continue
        assert row["x_loads"] == int(chunks.group(1) or 1) and row["x_loads_in_inner_loops"] == 0, row
        if row["config"].startswith("D=784 C=32768 "):
            large_c.discard(tuple(row["config"].split()[2:4]))
            assert int(chunks.group(1)) == 25, row  # cdiv(784, 32): 800 features held, not 1024
    assert not large_c, f"large-C builds not resident: {sorted(large_c)}"
    assert any("X streamed" in row["config"] for row in rows)


def test_reductions_use_atomics_only_in_fast_mode(report_rows):
    """Fast training steps write only through atomics (nothing of size B·C); deterministic ones store partials."""
    for row in report_rows:
        if row["kernel"] in ("sgd_update_kernel", "epoch_sgd_kernel"):
            # The epoch kernel keeps the gradient in registers and stores θ once: no atomics at all.
            assert row["global_atomics"] == 0, row
        elif row["kernel"] == "epoch_split_sgd_kernel":
            # The grid barrier's arrival (once per step) and the finished count (once per epoch); no gradient atomics.
            assert row["global_atomics"] == 2 and row["global_stores"] > 0, row
        elif row["kernel"] in ("softmax_tiled_lse_kernel", "softmax_tiled_merge_kernel"):
            # Log-sum-exp partials, each program's own rows: stores, no atomics in either mode.
            assert row["global_atomics"] == 0 and row["global_stores"] > 0, row
        elif row["kernel"] == "sparse_sgd_update_kernel":
            # Rows are claimed by atomic exchange, then updated and their gradient zeroed by plain stores.
            assert row["global_atomics"] > 0 and row["global_stores"] > 0, row
        elif "deterministic" in row["config"]:
            assert row["global_atomics"] == 0 and row["global_stores"] > 0, row
        elif "predict_proba" in row["config"]:
            assert row["global_stores"] > 0, row  # the probabilities
        else:
            assert "atomics" in row["config"] and row["global_atomics"] > 0 and row["global_stores"] == 0, row


def test_epoch_kernel_builds(report_rows):
    """The single-launch epoch kernel at MNIST shapes, on sm_90 (the arch it runs on): every dtype, Nesterov, sample
    weights, sigmoid outputs; never an sm_80 build, where the backend keeps the per-step path."""
    rows = [row for row in report_rows if row["kernel"] == "epoch_sgd_kernel"]
    assert {row["arch"] for row in rows} == {"sm_90"}
    configs = " | ".join(row["config"] for row in rows)
    for part in ("float32 epoch softmax momentum", "uint8 epoch softmax momentum", "bfloat16", "float16", "nesterov",
                 "sample weights", "K=10 uint8 epoch sigmoid"):
        assert part in configs, part
    assert all(row["local_bytes"] == 0 and row["global_atomics"] == 0 and row["global_stores"] > 0 for row in rows)
    # Its dot-operand layout conversions go through shared memory, ordered by CTA barriers.
    assert all(row["barriers"] > 0 for row in rows)


def test_split_epoch_kernel_builds(report_rows):
    """The multi-program epoch kernel at MNIST shapes, on sm_90 only: fp16 passes (uint8, with and without sample
    weights, and binary sigmoid), tf32x3 (float32) and FMA builds, none spilling."""
    rows = [row for row in report_rows if row["kernel"] == "epoch_split_sgd_kernel"]
    assert {row["arch"] for row in rows} == {"sm_90"}
    configs = " | ".join(row["config"] for row in rows)
    for part in ("C=10 uint8 split epoch softmax momentum [13 programs", "C=10 float32 split epoch softmax momentum",
                 "tf32x3", "ieee", "sample weights", "K=1 uint8 split epoch sigmoid"):
        assert part in configs, part
    assert all(row["local_bytes"] == 0 for row in rows)


def test_training_configurations():
    """Per training path at MNIST shapes: the epoch kernel is 1 launch, 1 host sync and no atomics per epoch."""
    paths = {row["path"]: row for row in kernel_report.training_configurations(128, 784, 10, 60000)}
    epoch = paths["triton epoch kernel"]
    assert (epoch["launches_per_epoch"], epoch["host_syncs_per_epoch"], epoch["atomics_per_step"]) == (1, 1, 0)
    steps = paths["triton per-step, atomics"]
    assert steps["steps_per_epoch"] == 469 and steps["launches_per_epoch"] == 2 * 469
    assert steps["atomics_per_step"] == 8 * (784 * 10 + 10 + 1)  # 8 programs add dW, db and the loss
    assert paths["triton per-step, deterministic"]["atomics_per_step"] == 0
    # The epoch kernel moves X[rows] and the row indices and labels per step; θ only once per epoch.
    assert epoch["bytes_per_step"] < steps["bytes_per_step"] and epoch["bytes_per_step"] >= 128 * 784 + 16 * 128
    # Past its limits (D > 1024 or more than 16 outputs) only the per-step paths remain.
    assert "triton epoch kernel" not in {row["path"] for row in kernel_report.training_configurations(128, 784, 100)}
    # The multi-program epoch kernel: 13 programs of 64 features (fp16 passes on uint8 X), one grid barrier per step
    # (13 arrivals), X read once over all programs; the partial logits' exchange is L2 traffic on top.
    split = paths["triton split epoch kernel"]
    assert (split["launches_per_epoch"], split["host_syncs_per_epoch"], split["programs_per_step"]) == (1, 1, 13)
    assert (split["atomics_per_step"], split["grid_barriers_per_step"]) == (13, 1)
    assert split["bytes_per_step"] == epoch["bytes_per_step"]
    assert split["moved_bytes_per_step"] == epoch["bytes_per_step"] + 12 * 16 * 128 + split["exchange_bytes_per_step"]
    assert split["exchange_bytes_per_step"] == 14 * 13 * 128 * 16 * 4  # P partials written, P² read


def test_throughput_model_counts_l2_atomics_and_w_rereads():
    """The model behind ``kernels report``'s ``modelled`` fields: L2 atomics and W re-reads count, and W re-reads
    reach HBM once W outgrows L2. Checked against the formulas by hand, at the report's two scale shapes."""
    large_batch = {row["path"]: row for row in kernel_report.training_configurations(65536, 784, 10, 655360,
                                                                                       x_dtype="float32")}
    atomics = large_batch["triton per-step, atomics"]
    params = 4 * (784 * 10 + 10)
    assert atomics["programs_per_step"] == 4096 and atomics["atomics_per_step"] == 4096 * (784 * 10 + 10 + 1)
    assert atomics["w_reread_bytes_per_step"] == 4096 * params  # one class tile: one sweep of W per program
    h100 = kernel_report.MODEL_DEVICES["H100 SXM"]
    fastest = max(kernel_report.L2_ATOMICS_PER_S)
    expected = (atomics["bytes_per_step"] / h100["hbm_bytes_per_s"]) / (atomics["atomics_per_step"] / fastest)
    assert atomics["modelled"]["H100 SXM"]["hbm_fraction"][0] == pytest.approx(expected)
    assert atomics["modelled"]["H100 SXM"]["hbm_fraction"][0] < 0.7  # the persistent grid is not built yet
    assert large_batch["triton epoch kernel"]["modelled"] is None  # one program: latency, not throughput
    many_classes = {row["path"]: row for row in kernel_report.training_configurations(8192, 784, 32768, 81920)}
    deterministic = many_classes["triton per-step, deterministic"]
    w_bytes = 4 * (784 * 32768 + 32768)
    assert w_bytes > h100["l2_bytes"] and deterministic["programs_per_step"] >= 1
    assert deterministic["w_reread_bytes_per_step"] == deterministic["programs_per_step"] * 2 * w_bytes  # 2 sweeps
    step_seconds = deterministic["modelled"]["H100 SXM"]["step_seconds"][0]
    assert step_seconds >= deterministic["w_reread_bytes_per_step"] / h100["hbm_bytes_per_s"]


def test_tiled_step_builds(report_rows):
    """The tiled step's kernels: exact (FMA) builds for sm_80 and sm_90, tensor-core dW builds for sm_90 only (where
    the backend launches them), at C = 10, 1000 and 32768, none spilling."""
    rows = [row for row in report_rows if row["kernel"].startswith("softmax_tiled")]
    assert {row["arch"] for row in rows if "dW tf32" in row["config"]} == {"sm_90"}
    assert {row["arch"] for row in rows if "dW ieee" in row["config"]} == {"sm_80", "sm_90"}
    for shape in ("D=784 C=10 ", "D=784 C=1000 ", "D=784 C=32768 "):
        assert any(row["config"].startswith(shape) and row["kernel"] == "softmax_tiled_grad_kernel" for row in rows)
    assert any(row["kernel"] == "softmax_tiled_merge_kernel" for row in rows)
    assert all(row["local_bytes"] == 0 for row in rows)


def test_tiled_step_rows():
    """The tiled step (kernels/softmax_tiled_sgd.py) in the model: at B = 65536, C = 10, fp32 X its atomics are
    n_row_splits · (D·C + C + 1) ≤ 2 × SMs × that, and the estimated HBM fraction reaches 0.70 on both devices; at
    B = 8192, C = 32768 W is read once per pass (twice), not once per row block."""
    sms, n_params = 132, 784 * 10 + 10
    large_batch = {row["path"]: row for row in kernel_report.training_configurations(65536, 784, 10, 655360,
                                                                                       x_dtype="float32")}
    tiled = large_batch["triton tiled per-step, atomics"]
    assert tiled["atomics_per_step"] == tiled["programs_per_step"] * (n_params + 1) <= 2 * sms * (n_params + 1)
    assert tiled["launches_per_epoch"] == 2 * tiled["steps_per_epoch"]
    for device in kernel_report.MODEL_DEVICES:
        assert min(tiled["modelled"][device]["hbm_fraction"]) >= 0.70, device
        assert min(large_batch["triton tiled per-step, deterministic"]["modelled"][device]["hbm_fraction"]) >= 0.70
    assert large_batch["triton tiled per-step, deterministic"]["atomics_per_step"] == 0
    many_classes = {row["path"]: row for row in kernel_report.training_configurations(8192, 784, 32768, 81920)}
    w_bytes = 4 * (784 * 32768 + 32768)
    for mode in ("atomics", "deterministic"):
        row = many_classes[f"triton tiled per-step, {mode}"]
        assert row["w_reread_bytes_per_step"] == 2 * w_bytes and row["programs_per_step"] == 256
        assert row["launches_per_epoch"] == 4 * row["steps_per_epoch"]  # log-sum-exp, merge, gradient, update
    assert many_classes["triton tiled per-step, atomics"]["atomics_per_step"] == 784 * 32768 + 32768 + 1
    assert (many_classes["triton tiled per-step, atomics"]["atomics_per_step"]
            < many_classes["triton per-step, atomics"]["atomics_per_step"] / 500)


def test_report_formats_and_serialises(report_rows):
    text = kernel_report.format_report(report_rows)
    for row in report_rows:
        assert row["config"] in text
    assert "no local memory (no spills)" in text
    assert "Bytes moved per SGD step" in text
    decoded = json.loads(json.dumps({"kernels": report_rows}))
    required = {"kernel", "config", "arch", "registers", "shared_bytes", "local_bytes", "global_loads", "global_stores",
                "barriers"}
    assert all(required <= set(row) for row in decoded["kernels"])


@pytest.mark.parametrize("x_dtype", ("float32", "bfloat16", "uint8"))
@pytest.mark.parametrize("shape", [(128, 784, 10), (17, 31, 37), (64, 784, 1000)])
def test_bytes_moved_model(shape, x_dtype):
    B, D, C = shape
    model = kernel_report.bytes_moved(B, D, C, x_dtype)
    itemsize = {"float32": 4, "bfloat16": 2, "uint8": 1}[x_dtype]
    params = 4 * (D * C + C)
    # The fused step kernel reads X[rows] exactly once and writes nothing of size B·C or B·D.
    step = model["fused"][0]
    assert step["read"] == 16 * B + B * D * itemsize + params
    assert step["written"] == params + 8
    assert model["fused_bytes"] == sum(s["read"] + s["written"] for s in model["fused"])
    assert model["fused_bytes"] == 16 * B + B * D * itemsize + 6 * params + 8
    # The unfused sequence moves X[rows] at least 4 times (gather read + write, two GEMM reads) plus the logits.
    assert model["unfused_bytes"] >= 4 * B * D * itemsize + 4 * B * C * 4
    assert model["ratio"] == pytest.approx(model["unfused_bytes"] / model["fused_bytes"])
    # Fusion saves bytes per row: the saving grows with the batch (parameter traffic does not depend on B).
    bigger = kernel_report.bytes_moved(2 * B, D, C, x_dtype)
    saving = model["unfused_bytes"] - model["fused_bytes"]
    assert bigger["unfused_bytes"] - bigger["fused_bytes"] > saving + B * D * 3 * itemsize


def test_bytes_moved_mnist_figures():
    """The MNIST figures quoted in kernels/softmax_sgd.py's docstring."""
    fp32 = kernel_report.bytes_moved(128, 784, 10, "float32")
    u8 = kernel_report.bytes_moved(128, 784, 10, "uint8")
    assert fp32["fused_bytes"] == 591_864 and u8["fused_bytes"] == 290_808
    assert fp32["unfused_bytes"] == 1_802_060 and u8["unfused_bytes"] == 1_701_708
    # uint8 pixels: 4x fewer X bytes in the fused kernel, and the unfused path loses that by widening first.
    assert fp32["fused_bytes"] - u8["fused_bytes"] == 3 * 128 * 784
    assert u8["ratio"] > fp32["ratio"] > 2


def test_kernels_report_subcommand(report_rows, monkeypatch, capsys):
    """``linclass-gpu kernels report --arch sm_90 --json``, registered on a bare parser (cli.py wires the same)."""
    import argparse

    monkeypatch.setattr(kernel_report, "compile_report",
                        lambda archs, workers=None: [row for row in report_rows if row["arch"] in archs])
    parser = argparse.ArgumentParser()
    kernel_report.register(parser.add_subparsers(dest="command"),
                           lambda p: p.add_argument("--json", action="store_true"))
    args = parser.parse_args(["kernels", "report", "--arch", "90", "--json"])
    summary = args.run(args)
    assert summary["archs"] == ["sm_90"] and summary["spilling_builds"] == 0
    assert summary["kernels"] and all(row["arch"] == "sm_90" for row in summary["kernels"])
    assert [model["x_dtype"] for model in summary["bytes_moved"]] == ["float32", "uint8"]
    assert {row["path"] for row in summary["training"]} >= {"triton epoch kernel", "triton per-step, atomics"}
    json.dumps(summary)
    assert "softmax_sgd_kernel" in capsys.readouterr().out
