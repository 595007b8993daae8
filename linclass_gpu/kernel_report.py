"""Ahead-of-time compile report of the shipped Triton kernels, and the bytes-moved model of one SGD step.

No GPU is needed: every shipped kernel configuration is compiled with
``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 80 or 90, 32))`` and the cubin is read
with the ``cuobjdump`` bundled in ``triton/backends/nvidia/bin``: registers per thread, shared memory (static plus
the dynamic amount Triton launches with), local memory (the ``LOCAL`` segment plus the per-thread ``STACK`` frame,
which is where ptxas puts spilled registers), from the SASS the count of global load, store and atomic
instructions, and from the TTGIR where X is read: the loads that come from ``_tiles.load_x_block`` and whether any of
them sits inside a class or feature loop (read more than once per row block) rather than only in the row-block loop.

Compilation runs in worker subprocesses with ``TRITON_INTERPRET=0``: ``@triton.jit`` decides at import time whether
it builds compilable or interpreted functions, ``linclass_gpu.kernels`` honours that explicit setting on a machine
without a GPU, and a test session (or a CPU-only backend) in this process may already have imported the kernels for
the interpreter. This process imports them too, in whichever mode, for their configuration functions only.

Builds are compiled for the archs the backend launches them on: every kernel for sm_80 and sm_90, except the
single-launch epoch kernel, which runs on sm_90 and later only (its sm_80 build spills). Beside the builds,
:func:`training_configurations` counts per training path (per-step atomics, per-step deterministic, epoch kernel)
the launches and host synchronisations per epoch and the global atomics and bytes per step.

``linclass-gpu kernels report [--arch sm_80,sm_90] [--json]`` prints :func:`format_report` of :func:`compile_report`.
The kernel sources quote no such figures (registers, spills, loads found on one day): this report regenerates them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ARCHS = ("sm_80", "sm_90")
# Worker processes compiling in parallel: each compile is single threaded, two cover the CI machines' two cores.
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
# MNIST shapes: the figures of the bytes-moved model in the report and in kernels/softmax_sgd.py.
MNIST_SHAPE = (128, 784, 10)

_TRITON_TYPES = {"float32": "*fp32", "uint8": "*u8", "bfloat16": "*bf16", "float16": "*fp16", "float64": "*fp64"}
_ITEMSIZE = {"float32": 4, "uint8": 1, "bfloat16": 2, "float16": 2, "float64": 8}


@dataclass(frozen=True)
class KernelBuild:
    """One shipped kernel configuration: what to hand ``triton.compile``."""

    kernel: str
    config: str
    module: str  # the kernel's module in linclass_gpu.kernels
    signature: dict
    constexprs: dict = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3  # Triton's default
    maxnreg: int | None = None  # ptxas' own choice
    # Integer arguments' values in the configuration's scenario: like a launch, the compile assumes 16-divisibility
    # (vectorised, aligned accesses) for the ones that are multiples of 16, and for every pointer (torch allocates
    # 256-byte aligned).
    int_values: dict = field(default_factory=dict)
    # The oldest arch the backend launches this build on (90 for sm_90); None for every arch asked for.
    min_arch: int | None = None


def _signature(module: str, kernel: str, constexprs: dict, **types: str) -> dict:
    """The ``triton.compile`` signature of ``kernel`` in ``linclass_gpu.kernels.<module>``, from its parameter list.

    Parameters annotated ``tl.constexpr``, and absent pointers (``None`` in ``constexprs``), are ``"constexpr"``; the
    others take their type from ``types`` (what this build launches with), else from the module's ``ARG_TYPES``,
    else ``"*fp32"`` for a pointer (``*_ptr``) and ``"i32"`` for a scalar.
    """
    import inspect

    from linclass_gpu import kernels

    kernel_module = getattr(kernels, module)
    parameters = inspect.signature(getattr(kernel_module, kernel).fn).parameters
    unknown = set(types) - set(parameters) | set(constexprs) - set(parameters)
    if unknown:
        raise ValueError(f"{kernel} has no parameters {sorted(unknown)}")
    module_types = getattr(kernel_module, "ARG_TYPES", {})
    signature = {}
    for name, parameter in parameters.items():
        if name in constexprs or "constexpr" in str(parameter.annotation):
            signature[name] = "constexpr"
        else:
            default = "*fp32" if name.endswith("_ptr") else "i32"
            signature[name] = types.get(name) or module_types.get(name) or default
    missing = sorted(name for name, kind in signature.items() if kind == "constexpr" and name not in constexprs)
    if missing:
        raise ValueError(f"no value for {kernel}'s constexprs {missing}")
    return signature


def _absent(**present: bool) -> dict:
    """The optional pointers a build launches without, as the ``None`` constexprs a launch passes for them."""
    return {name: None for name, given in present.items() if not given}


def _softmax_build(n_features, n_classes, x_dtype, *, deterministic=False, tf32=False, sample_weight=False,
                   probabilities=False, batch=128):
    from linclass_gpu.kernels import softmax_sgd

    config = softmax_sgd.softmax_config(n_features, n_classes, deterministic)
    input_precision = "tf32" if tf32 else "ieee"
    constexprs = {
        **config.constexprs, "DETERMINISTIC": deterministic, "INPUT_PRECISION": input_precision,
        **_absent(sample_weight_ptr=sample_weight, probs_ptr=probabilities),
    }
    signature = _signature("softmax_sgd", "softmax_sgd_kernel", constexprs, X_ptr=_TRITON_TYPES[x_dtype],
                           loss_ptr="*fp32" if deterministic else "*fp64")
    # The probability-storing variant serves predict_proba, not training: named by that, not by its reduction mode.
    flags = ["predict_proba" if probabilities else "deterministic" if deterministic else "atomics"]
    flags += ["tf32"] * tf32 + ["sample weights"] * sample_weight
    label = f"D={n_features} C={n_classes} {x_dtype} {' '.join(flags)} [{config.label}]"
    return KernelBuild("softmax_sgd_kernel", label, "softmax_sgd", signature, constexprs, config.num_warps,
                       config.num_stages,
                       config.register_cap(input_precision),
                       {"stride_xn": n_features, "B": batch, "D": n_features, "C": n_classes})


def _sigmoid_build(n_features, x_dtype, *, n_outputs=1, loss="bce", deterministic=False, sample_weight=False,
                   probabilities=False, batch=128):
    from linclass_gpu.kernels import sigmoid_sgd

    config = sigmoid_sgd.sigmoid_config(n_features, n_outputs, deterministic)
    constexprs = {
        **config.constexprs, "LOSS": loss, "DETERMINISTIC": deterministic, "INPUT_PRECISION": "ieee",
        **_absent(sample_weight_ptr=sample_weight, probs_ptr=probabilities),
    }
    # As the backend launches it: targets as a uint8 (N, K) matrix; K = 1 and BCE is binary logistic regression.
    signature = _signature("sigmoid_sgd", "sigmoid_sgd_kernel", constexprs, X_ptr=_TRITON_TYPES[x_dtype],
                           y_ptr="*u8", loss_ptr="*fp32" if deterministic else "*fp64")
    flags = ["predict_proba" if probabilities else "deterministic" if deterministic else "atomics", loss]
    flags += ["sample weights"] * sample_weight
    label = f"D={n_features} K={n_outputs} {x_dtype} {' '.join(flags)} [{config.label}]"
    return KernelBuild("sigmoid_sgd_kernel", label, "sigmoid_sgd", signature, constexprs, config.num_warps,
                       config.num_stages, config.max_registers,
                       {"stride_xn": n_features, "B": batch, "D": n_features, "K": n_outputs})


def _epoch_build(n_features, n_outputs, x_dtype, *, model="softmax", nesterov=False, sample_weight=False,
                 batch=128, n_rows=60000):
    """The single-launch epoch kernel as ``TritonFusedSGD.run_epoch`` launches it, with momentum (heavy ball or
    Nesterov: the tile sets it keeps on chip differ)."""
    from linclass_gpu.kernels import epoch_sgd

    config = epoch_sgd.epoch_config(n_features, n_outputs, nesterov, sample_weight)
    constexprs = {
        **config.constexprs, "LOSS": epoch_sgd.MODEL_LOSSES[model], "MOMENTUM": True, "NESTEROV": nesterov,
        "FIT_INTERCEPT": True, "INPUT_PRECISION": "ieee", **_absent(sample_weight_ptr=sample_weight),
    }
    signature = _signature("epoch_sgd", "epoch_sgd_kernel", constexprs, X_ptr=_TRITON_TYPES[x_dtype],
                           y_ptr="*i64" if model == "softmax" else "*u8")
    outputs = "C" if model == "softmax" else "K"
    flags = ["epoch", model, "nesterov" if nesterov else "momentum"] + ["sample weights"] * sample_weight
    label = f"D={n_features} {outputs}={n_outputs} {x_dtype} {' '.join(flags)} [{config.label}]"
    return KernelBuild("epoch_sgd_kernel", label, "epoch_sgd", signature, constexprs, config.num_warps,
                       config.num_stages, None,
                       {"stride_xn": n_features, "D": n_features, "K": n_outputs, "batch_size": batch, "N": n_rows},
                       min_arch=10 * epoch_sgd.MIN_CAPABILITY[0] + epoch_sgd.MIN_CAPABILITY[1])


def _split_build(n_features, n_outputs, x_dtype, *, model="softmax", precision="mma", sample_weight=False,
                 batch=128, n_rows=60000):
    """The multi-program epoch kernel as ``TritonFusedSGD.run_epoch`` launches it, with heavy-ball momentum."""
    import torch

    from linclass_gpu.kernels import epoch_split_sgd

    config = epoch_split_sgd.split_config(n_features, n_outputs, batch, getattr(torch, x_dtype), precision)
    constexprs = {
        **config.constexprs, "LOSS": epoch_split_sgd.MODEL_LOSSES[model], "MOMENTUM": True, "NESTEROV": False,
        "FIT_INTERCEPT": True, **_absent(sample_weight_ptr=sample_weight),
    }
    signature = _signature("epoch_split_sgd", "epoch_split_sgd_kernel", constexprs, X_ptr=_TRITON_TYPES[x_dtype],
                           y_ptr="*i64" if model == "softmax" else "*u8")
    outputs = "C" if model == "softmax" else "K"
    flags = ["split epoch", model, "momentum"] + ["sample weights"] * sample_weight
    label = f"D={n_features} {outputs}={n_outputs} {x_dtype} {' '.join(flags)} [{config.label}]"
    return KernelBuild("epoch_split_sgd_kernel", label, "epoch_split_sgd", signature, constexprs, config.num_warps,
                       config.num_stages, None,
                       {"stride_xn": n_features, "D": n_features, "K": n_outputs, "batch_size": batch, "N": n_rows},
                       min_arch=10 * epoch_split_sgd.MIN_CAPABILITY[0] + epoch_split_sgd.MIN_CAPABILITY[1])


def _update_build(*, deterministic=False, momentum=False, nesterov=False, apply_update=True, l1=False,
                  adagrad=False, adam=False, step_scalars=False, n_features=784, n_classes=10):
    from linclass_gpu.kernels import sgd_update

    constexprs = {
        "BLOCK": sgd_update.BLOCK, "DETERMINISTIC": deterministic, "MOMENTUM": momentum, "NESTEROV": nesterov,
        "FIT_INTERCEPT": True, "L1": l1, "ADAGRAD": adagrad, "ADAM": adam,
        **_absent(velocity_ptr=momentum or adam, accumulator_ptr=adagrad or adam, loss_partials_ptr=deterministic,
                  loss_sum_ptr=deterministic, grad_out_ptr=not apply_update, step_scalars_ptr=step_scalars),
    }
    signature = _signature("sgd_update", "sgd_update_kernel", constexprs)
    flags = ["deterministic" if deterministic else "atomics"]
    rule = "nesterov momentum" if nesterov else "momentum" if momentum else "plain"
    flags += ["adam" if adam else "adagrad" if adagrad else rule]
    flags += [] if apply_update else ["reduce only"]
    flags += ["l1"] if l1 else []
    flags += ["scalars from memory (CUDA graph)"] if step_scalars else []
    flags += [f"D={n_features} C={n_classes}"]
    n_weights = n_features * n_classes
    return KernelBuild("sgd_update_kernel", " ".join(flags), "sgd_update", signature, constexprs,
        sgd_update.NUM_WARPS, 3, None,
        {"n_weights": n_weights, "n_params": n_weights + n_classes, "n_partials": 8})


def _sparse_builds() -> list[KernelBuild]:
    """The sparse step's two kernels (documents: 20 classes, 20 one-vs-rest sigmoids, binary, the squared error, sample
    weights) and its widest tile (K = 4096)."""
    from linclass_gpu.kernels import sparse_sgd

    builds = []
    graphed = " (scalars from memory: CUDA graph)"
    for model, n_outputs, weighted, from_memory in (
            ("softmax", 20, False, False), ("softmax", 20, True, False), ("sigmoid", 20, False, False),
            ("sigmoid", 1, False, False), ("sigmoid_mse", 20, False, False), ("softmax", 4096, False, False),
            ("softmax", 20, False, True)):
        block_b, block_k = sparse_sgd.sparse_tile_shape(n_outputs)
        constexprs = {"SOFTMAX": model == "softmax", "SIGMOID_LOSS": sparse_sgd.SIGMOID_LOSSES.get(model, "bce"),
                      "BLOCK_B": block_b, "BLOCK_K": block_k,
                      **_absent(sample_weight_ptr=weighted, step_scalars_ptr=from_memory)}
        targets = {} if model == "softmax" else {"y_ptr": "*u8"}
        signature = _signature("sparse_sgd", "sparse_sgd_grad_kernel", constexprs, **targets)
        builds.append(KernelBuild("sparse_sgd_grad_kernel", f"K={n_outputs} {model} atomics"
                                  + (" weighted" if weighted else "") + (graphed if from_memory else ""), "sparse_sgd",
                                  signature, constexprs, sparse_sgd.NUM_WARPS, 3, None, {"B": 128, "K": n_outputs}))
    for n_outputs, from_memory in ((20, False), (4096, False), (20, True)):
        block_b, block_k = sparse_sgd.sparse_tile_shape(n_outputs)
        constexprs = {"FIT_INTERCEPT": True, "BLOCK_B": block_b, "BLOCK_K": block_k,
                      **_absent(step_scalars_ptr=from_memory)}
        builds.append(KernelBuild("sparse_sgd_update_kernel", f"K={n_outputs} rows claimed once"
                                  + (graphed if from_memory else ""), "sparse_sgd",
                                  _signature("sparse_sgd", "sparse_sgd_update_kernel", constexprs), constexprs,
                                  sparse_sgd.NUM_WARPS, 3, None, {"B": 128, "K": n_outputs, "step": 3}))
    return builds


def _tiled_builds() -> list[KernelBuild]:
    """The tiled step's kernels (``kernels/softmax_tiled_sgd.py``) as ``TritonFusedSGD`` launches them at large B or C:
    the gradient kernel at C = 10 (one class tile), and past one tile with its log-sum-exp pass; the merge once.
    Tensor-core dW builds (64-feature chunks) for sm_90 only, where the backend launches them."""
    from linclass_gpu.kernels import softmax_tiled_sgd

    mma_arch = 10 * softmax_tiled_sgd.MMA_MIN_CAPABILITY[0] + softmax_tiled_sgd.MMA_MIN_CAPABILITY[1]
    builds = []
    # (C, X dtype, deterministic, the dW GEMM's precision: exact FMA, tensor cores fp32-grade or TF32)
    for n_classes, x_dtype, deterministic, dw_precision in (
            (10, "uint8", False, "ieee"), (10, "float32", False, "ieee"), (10, "float32", True, "ieee"),
            (10, "uint8", False, "tf32x3"), (10, "float32", False, "tf32x3"), (1000, "uint8", False, "ieee"),
            (1000, "float32", False, "ieee"), (32768, "uint8", False, "ieee"), (32768, "float32", False, "ieee"),
            (32768, "uint8", True, "ieee"), (32768, "uint8", False, "tf32x3"), (32768, "float32", False, "tf32")):
        config = softmax_tiled_sgd.tiled_config(784, n_classes, dw_precision)
        int_values = {"stride_xn": 784, "B": 8192, "D": 784, "C": n_classes}
        kernels = [("softmax_tiled_grad_kernel", "deterministic" if deterministic else "atomics", {
            "ONE_CLASS_TILE": config.one_class_tile, "DETERMINISTIC": deterministic, "DW_PRECISION": dw_precision,
            **_absent(sample_weight_ptr=False, lse_ptr=not config.one_class_tile)})]
        if not config.one_class_tile and not deterministic:  # the same pass in either mode: built once
            kernels.append(("softmax_tiled_lse_kernel", "log-sum-exp pass", {}))
        for kernel, what, own in kernels:
            constexprs = {**config.constexprs, **own}
            types = {"X_ptr": _TRITON_TYPES[x_dtype]}
            if kernel == "softmax_tiled_grad_kernel":
                types["loss_ptr"] = "*fp32" if deterministic else "*fp64"
            builds.append(KernelBuild(
                kernel, f"D=784 C={n_classes} {x_dtype} {what} [{config.label}]", "softmax_tiled_sgd",
                _signature("softmax_tiled_sgd", kernel, constexprs, **types), constexprs, config.num_warps,
                config.num_stages, None, int_values, min_arch=None if dw_precision == "ieee" else mma_arch))
    constexprs = {"BLOCK": softmax_tiled_sgd.MERGE_BLOCK, **_absent(sample_weight_ptr=False)}
    builds.append(KernelBuild("softmax_tiled_merge_kernel", "D=784 C=32768 merge of 256 class groups",
                              "softmax_tiled_sgd", _signature("softmax_tiled_sgd", "softmax_tiled_merge_kernel",
                                                              constexprs),
                              constexprs, softmax_tiled_sgd.MERGE_NUM_WARPS, 3, None, {"B": 8192, "n_groups": 256}))
    return builds


def shipped_builds() -> list[KernelBuild]:
    """Every kernel configuration the backend launches for MNIST (D=784, C=10), large C (32768) and the others."""
    builds = [_softmax_build(784, 10, dtype) for dtype in ("float32", "uint8", "bfloat16", "float16")]
    builds += [
        _softmax_build(784, 10, "float32", deterministic=True),
        _softmax_build(784, 10, "float32", tf32=True),
        _softmax_build(784, 10, "float32", sample_weight=True),
        _softmax_build(784, 10, "uint8", probabilities=True),
        _softmax_build(31, 10, "float32"),
        _softmax_build(784, 37, "float32"),
    ]
    # Large C: X resident in chunks for every dtype and both reduction modes; past D = 1024 it is streamed.
    builds += [_softmax_build(784, 32768, dtype, deterministic=deterministic) for deterministic in (False, True)
               for dtype in ("float32", "uint8", "bfloat16", "float16")]
    builds += [
        _softmax_build(784, 32768, "float32", tf32=True),
        _softmax_build(784, 1000, "float32"),
        _softmax_build(784, 1000, "uint8", deterministic=True),
        _softmax_build(1100, 1000, "float32"),
    ]
    builds += [_sigmoid_build(784, dtype) for dtype in ("float32", "uint8", "bfloat16")]
    builds += [
        _sigmoid_build(784, "float32", deterministic=True),
        _sigmoid_build(784, "uint8", sample_weight=True),
        _sigmoid_build(784, "uint8", probabilities=True),
        _sigmoid_build(4096, "float32"),
    ]
    # K independent sigmoids: one-vs-rest MNIST (K = 10, X resident, one output column at a time), the squared
    # error, and 1000 labels (output tiles through tl.dot).
    builds += [
        _sigmoid_build(784, "uint8", n_outputs=10),
        _sigmoid_build(784, "float32", n_outputs=10, loss="mse", deterministic=True),
        _sigmoid_build(784, "float32", n_outputs=1000),
        _sigmoid_build(784, "uint8", n_outputs=1000, loss="mse", deterministic=True),
    ]
    # The epoch kernel at MNIST shapes (sm_90 only): every dtype with heavy-ball momentum, Nesterov (a third tile set
    # on chip), sample weights, both, and one-vs-rest sigmoids.
    builds += [_epoch_build(784, 10, dtype) for dtype in ("float32", "uint8", "bfloat16", "float16")]
    builds += [
        _epoch_build(784, 10, "float32", nesterov=True),
        _epoch_build(784, 10, "uint8", sample_weight=True),
        _epoch_build(784, 10, "float32", nesterov=True, sample_weight=True),
        _epoch_build(784, 10, "uint8", model="sigmoid"),
    ]
    # The multi-program epoch kernel at MNIST shapes (sm_90 only): tensor cores for uint8 (fp16 hi/lo) and float32
    # (tf32x3) X, the FMA mode, sample weights, and binary logistic regression.
    builds += [
        _split_build(784, 10, "uint8"), _split_build(784, 10, "float32"),
        _split_build(784, 10, "uint8", precision="ieee"), _split_build(784, 10, "uint8", sample_weight=True),
        _split_build(784, 1, "uint8", model="sigmoid"),
    ]
    builds += [
        _update_build(), _update_build(momentum=True, nesterov=True),
        _update_build(deterministic=True, momentum=True), _update_build(deterministic=True, apply_update=False),
        _update_build(momentum=True, l1=True), _update_build(adagrad=True, l1=True),
        _update_build(deterministic=True, adagrad=True), _update_build(adam=True, l1=True),
        _update_build(deterministic=True, adam=True), _update_build(momentum=True, step_scalars=True),
        _update_build(adam=True, step_scalars=True),
    ]
    return builds + _sparse_builds() + _tiled_builds()


# ---------------------------------------------------------------------------------------------------------------------
# Compiling and reading the cubin (inside a worker process)
# ---------------------------------------------------------------------------------------------------------------------


def _nvidia_tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _resource_usage(cubin: Path) -> dict:
    out = subprocess.run([_nvidia_tool("cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                         text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if found is None:
        raise RuntimeError(f"unexpected cuobjdump output:\n{out}")
    registers, stack, shared, local = (int(v) for v in found.groups())
    return {"registers": registers, "stack_bytes": stack, "static_shared_bytes": shared, "local_segment_bytes": local}


def _sass_counts(cubin: Path) -> dict:
    sass = subprocess.run([_nvidia_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    opcodes = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(?:\.[A-Z0-9_.]+)?", sass)
    return {
        # LDGSTS is cp.async (global → shared, used by the software pipeliner), UTMALDG a Hopper TMA load.
        "global_loads": sum(op in ("LDG", "LDGSTS", "UTMALDG") for op in opcodes),
        "global_stores": sum(op == "STG" for op in opcodes),
        "global_atomics": sum(op in ("RED", "ATOM", "ATOMG", "REDG") for op in opcodes),
        # CTA barriers in the binary (static: a barrier inside a loop counts once), bar.sync / barrier.sync.
        "barriers": sum(op in ("BAR", "BARRIER") for op in opcodes),
        "sass_instructions": len(opcodes),
    }


def _x_load_site() -> tuple[str, int]:
    """File and line of the one ``tl.load`` that reads X in every step kernel (``_tiles.load_x_block``)."""
    import inspect

    from linclass_gpu.kernels import _tiles

    load_x_block = _tiles.load_x_block.fn
    lines, first = inspect.getsourcelines(load_x_block)
    offset = next(i for i, line in enumerate(lines) if "tl.load(" in line)
    return Path(inspect.getsourcefile(load_x_block)).name, first + offset


def _source_line(location: str, aliases: dict) -> tuple[str, int] | None:
    """``(file name, line)`` of an MLIR location: a ``#locN`` alias, ``callsite(callee at caller)`` (the callee, i.e.
    the innermost inlined function), ``"name"(loc)`` or ``"file":line:column``; None for ``unknown``."""
    location = location.strip()
    for _ in range(64):  # alias chains are short; the bound only guards against a malformed file
        if location.startswith("#loc"):
            location = aliases.get(location, "unknown")
        elif location.startswith("callsite("):
            location = location[len("callsite("):].split(" at ", 1)[0]
        elif (named := re.match(r'"[^"]*"\((.*)\)$', location)) is not None:
            location = named.group(1)
        else:
            found = re.match(r'"([^"]*)":(\d+):\d+', location)
            return (Path(found.group(1)).name, int(found.group(2))) if found else None
    return None


def _x_loads(ttgir: str) -> dict:
    """Where the kernel reads X, from the TTGIR: the loads issued by ``load_x_block``, and how many of them sit in a
    loop nested inside the row-block loop (the class or feature loops), i.e. run more than once per row block.

    Regions are tracked by their braces (every ``scf.for``/``scf.if``/reduction body opens a line ending in ``{`` and
    closes one starting with ``}``); only ``scf.for`` regions count as loops.
    """
    aliases = dict(re.findall(r"^(#loc\d+) = loc\((.*)\)$", ttgir, flags=re.MULTILINE))
    site = _x_load_site()
    regions, x_loads, in_inner_loops = [], 0, 0
    for line in ttgir.splitlines():
        code = line.strip()
        if code.startswith("}"):
            regions.pop()
        if re.search(r"= (tt\.load|ttg\.async_copy_global_to_local) ", code):
            location = re.search(r"loc\((.*)\)$", code)
            if location and _source_line(location.group(1), aliases) == site:
                x_loads += 1
                in_inner_loops += regions.count("scf.for") > 1
        if code.endswith("{"):
            regions.append("scf.for" if "scf.for" in code and not code.startswith("}") else "region")
    return {"x_loads": x_loads, "x_loads_in_inner_loops": in_inner_loops}


def _compile_one(build: KernelBuild, arch: str, workdir: Path) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from linclass_gpu import kernels
    from linclass_gpu.kernels._tiles import LAUNCH_OPTIONS

    fn = getattr(getattr(kernels, build.module), build.kernel)
    capability = int(arch.removeprefix("sm_"))
    divisible = {
        (fn.arg_names.index(name),): [["tt.divisibility", 16]]
        for name, kind in build.signature.items()
        if kind.startswith("*") or (kind == "i32" and build.int_values.get(name, 1) % 16 == 0)
    }
    # As every launch states it (kernels/_tiles.py), not as this Triton release defaults.
    options = {"num_warps": build.num_warps, "num_stages": build.num_stages, **LAUNCH_OPTIONS}
    if build.maxnreg is not None:
        options["maxnreg"] = build.maxnreg
    compiled = triton.compile(ASTSource(fn, build.signature, build.constexprs, divisible),
                              target=GPUTarget("cuda", capability, 32), options=options)
    cubin = workdir / f"{build.kernel}_{abs(hash((build.config, arch)))}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = _resource_usage(cubin)
    row = {
        "kernel": build.kernel, "config": build.config, "arch": arch, "num_warps": build.num_warps,
        "num_stages": build.num_stages,
        "registers": usage["registers"],
        "shared_bytes": usage["static_shared_bytes"] + int(compiled.metadata.shared),
        # ptxas spills into the per-thread stack frame; LOCAL counts local arrays. Either means local memory traffic.
        "local_bytes": usage["local_segment_bytes"] + usage["stack_bytes"],
        "stack_bytes": usage["stack_bytes"],
    }
    row.update(_sass_counts(cubin))
    row.update(_x_loads(compiled.asm["ttgir"]))
    return row


def builds_for(build: KernelBuild, arch: str) -> bool:
    """Whether the backend launches ``build`` on ``arch`` (and so the report compiles it for that arch)."""
    return build.min_arch is None or int(arch.removeprefix("sm_")) >= build.min_arch


def _worker(payload: str) -> None:
    """Entry point of a compile worker: ``payload`` is JSON ``{"indices": [...], "archs": [...]}``."""
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated to silence its warning
    request = json.loads(payload)
    builds = shipped_builds()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in request["indices"]:
            for arch in request["archs"]:
                if not builds_for(builds[index], arch):
                    continue
                rows.append({"index": index, **_compile_one(builds[index], arch, Path(tmp))})
    print(json.dumps(rows))


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def _normalise_arch(arch: str) -> str:
    arch = str(arch).strip().lower()
    arch = arch if arch.startswith("sm_") else f"sm_{arch.removeprefix('sm')}"
    if not arch.removeprefix("sm_").isdigit() or int(arch.removeprefix("sm_")) < 80:
        raise ValueError(f"arch must be sm_80 or newer, like sm_80 or sm_90 (the kernels need Ampere or later), got "
                         f"{arch!r}")
    return arch


def compile_report(archs=ARCHS, workers: int | None = None) -> list[dict]:
    """Compile every shipped kernel configuration for each arch it runs on (:func:`builds_for`) and read its
    resource usage.

    Parameters
    ----------
    archs : iterable of str
        ``"sm_80"``, ``"sm_90"`` … (``"80"`` and ``"sm80"`` are accepted too).
    workers : int, optional
        Compile processes run in parallel (default: 2, or 1 on a single core).

    Returns
    -------
    list of dict
        One row per (configuration, arch) with ``kernel``, ``config``, ``arch``, ``num_warps``, ``registers``,
        ``shared_bytes``, ``local_bytes`` (0 means no spills), ``stack_bytes``, ``global_loads``, ``global_stores``,
        ``global_atomics``, ``barriers`` (BAR instructions in the SASS, static), ``sass_instructions``, ``x_loads``
        (X tile loads in the TTGIR) and ``x_loads_in_inner_loops`` (those inside a class or feature loop, i.e.
        repeated within a row block: 0 means X[rows] is read once per row block); ordered by configuration, then arch.
    """
    archs = [_normalise_arch(arch) for arch in (archs.split(",") if isinstance(archs, str) else archs)]
    n_builds = len(shipped_builds())
    workers = max(1, min(workers or DEFAULT_WORKERS, n_builds))
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    processes = []
    for worker in range(workers):
        payload = json.dumps({"indices": list(range(worker, n_builds, workers)), "archs": archs})
        code = f"from linclass_gpu.kernel_report import _worker; _worker({payload!r})"
        processes.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    rows = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kernel compile worker failed:\n{err[-4000:]}")
        rows += json.loads(out.strip().splitlines()[-1])
    rows.sort(key=lambda row: (row["index"], archs.index(row["arch"])))
    for row in rows:
        del row["index"]
    return rows


def bytes_moved(B: int, D: int, C: int, x_dtype: str = "float32") -> dict:
    """Global-memory bytes of one softmax-regression SGD step: the fused kernels versus an unfused sequence.

    Compulsory traffic: every distinct array a kernel touches is counted once per kernel (re-reads a kernel serves
    from L2, such as each program's copy of W, are not DRAM traffic and are left out). Row indices and labels are
    int64, parameters and gradients float32, plain SGD (momentum adds a read and a write of θ-sized ``v`` to both).

    Fused (2 launches): the step kernel reads ``rows``, ``y``, ``X[rows]`` and ``θ = [W, b]`` and adds the gradient
    into the θ-sized accumulator (atomics resolve in L2; the accumulator's bytes are counted once); the update kernel
    reads the gradient and θ and writes θ and the zeroed accumulator.

    Unfused (the eager sequence): gather ``X[rows]`` → widen to float32 (non-float32 X only) → ``Z = X W + b`` →
    ``P = softmax(Z)`` → loss from ``P[y]`` → ``dZ = (P − Y)/B`` → ``dW = Xᵀ dZ`` → ``db = Σ dZ`` → update.

    The saving is per row: the fused path moves ``X[rows]`` once instead of four or five times and no (B, C) array,
    but it also moves six θ-sized arrays per step (read θ, the atomic accumulator, the update's read of it, read and
    write θ, the accumulator's reset) against the unfused four. For few rows and very many classes (B=64, D=784,
    C=1000) parameter traffic dominates and the fused step moves ~4% more; at MNIST shapes it moves 3x to 6x less.

    Returns
    -------
    dict
        ``fused_bytes``, ``unfused_bytes``, ``ratio`` (unfused / fused), and the itemised ``fused`` and ``unfused``
        steps, each ``{"step": …, "read": bytes, "written": bytes}``.
    """
    e = _ITEMSIZE[str(x_dtype).removeprefix("torch.")]
    params = 4 * (D * C + C)
    x_b, x_f, logits = B * D * e, B * D * 4, B * C * 4
    fused = [
        {"step": "fused step kernel", "read": 8 * B + 8 * B + x_b + params, "written": params + 8},
        {"step": "update kernel", "read": 2 * params, "written": 2 * params},
    ]
    unfused = [{"step": "gather X[rows]", "read": 8 * B + x_b, "written": x_b}]
    if e != 4:
        unfused.append({"step": "widen X[rows] to float32", "read": x_b, "written": x_f})
    unfused += [
        {"step": "Z = X W + b", "read": x_f + params, "written": logits},
        {"step": "P = softmax(Z)", "read": logits, "written": logits},
        {"step": "loss = mean −log P[y]", "read": 8 * B + 4 * B, "written": 4},
        {"step": "dZ = (P − Y)/B", "read": logits + 8 * B, "written": logits},
        {"step": "dW = Xᵀ dZ", "read": x_f + logits, "written": 4 * D * C},
        {"step": "db = Σ dZ", "read": logits, "written": 4 * C},
        {"step": "update W, b", "read": 2 * params, "written": params},
    ]
    fused_bytes = sum(s["read"] + s["written"] for s in fused)
    unfused_bytes = sum(s["read"] + s["written"] for s in unfused)
    return {"B": B, "D": D, "C": C, "x_dtype": str(x_dtype), "fused_bytes": fused_bytes,
            "unfused_bytes": unfused_bytes, "ratio": unfused_bytes / fused_bytes, "fused": fused, "unfused": unfused}


# The throughput model's devices (vendor peak figures, not measurements) and its one assumption: scattered fp32 atomic
# adds (RED) resolve in L2 at 50–150 G/s on either device, a range, since no GPU has measured it for these kernels.
MODEL_DEVICES = {"H100 SXM": {"hbm_bytes_per_s": 3.35e12, "fp32_flop_per_s": 66.9e12, "l2_bytes": 50e6},
                 "H200": {"hbm_bytes_per_s": 4.8e12, "fp32_flop_per_s": 66.9e12, "l2_bytes": 50e6}}
L2_ATOMICS_PER_S = (50e9, 150e9)
# Shapes of the report's throughput rows besides MNIST's: a large batch, and many classes.
SCALE_SHAPES = ({"B": 65536, "D": 784, "C": 10, "x_dtype": "float32"},
                {"B": 8192, "D": 784, "C": 32768, "x_dtype": "uint8"})


def modelled_step(compulsory_bytes: int, moved_bytes: int, w_reread_bytes: int, param_bytes: int,
                  atomics: int, flop: int) -> dict:
    """The throughput model of one step (estimated, labelled so), per device in :data:`MODEL_DEVICES`.

    The step takes the slowest of: its HBM traffic (``moved_bytes``, plus the programs' re-reads of W when W does not
    fit in L2), its L2 atomics (at the high and the low assumed rate) and its FP32 FMAs. ``hbm_fraction`` is the
    time the compulsory traffic alone needs at peak bandwidth over that step time: 1 would be a step that moves only
    what it must, at full bandwidth. Latency is left out, which flatters a path with few programs: the model is not
    applied to the single-program epoch kernel.

    Returns
    -------
    dict
        ``{device: {"step_seconds": [best, worst], "hbm_fraction": [best, worst]}}``.
    """
    model = {}
    for device, peak in MODEL_DEVICES.items():
        hbm_bytes = moved_bytes + (w_reread_bytes if param_bytes > peak["l2_bytes"] else 0)
        seconds = [max(hbm_bytes / peak["hbm_bytes_per_s"], atomics / rate, flop / peak["fp32_flop_per_s"])
                   for rate in sorted(L2_ATOMICS_PER_S, reverse=True)]
        ideal = compulsory_bytes / peak["hbm_bytes_per_s"]
        model[device] = {"step_seconds": seconds, "hbm_fraction": [ideal / time for time in seconds]}
    return model


def training_configurations(B: int = 128, D: int = 784, C: int = 10, N: int = 60000,
                            x_dtype: str = "uint8") -> list[dict]:
    """Launches, host synchronisations, global atomics and bytes of softmax-regression training, per path.

    ``launches_per_epoch`` and ``host_syncs_per_epoch`` count what ``FusedSGD.run_epoch`` and ``pop_loss_sum`` do
    (the training loop's own once-per-epoch ``get_params`` copy comes on top, the same for every path);
    ``host_launch_calls_per_epoch`` is what the host issues for them on a CUDA device: the per-step paths' launches
    replay from a CUDA graph recorded at the first epoch (``backends/triton_graph.py``), one call, as the epoch
    kernels' one launch;
    ``atomics_per_step`` counts global atomic operations (elements), ``bytes_per_step`` the compulsory global traffic
    (by :func:`bytes_moved`'s rules; plain SGD). The epoch kernel reads each step only the rows, labels and
    ``X[rows]``; θ is read and written once per epoch, spread here over the epoch's steps.

    What moves beyond the compulsory bytes is counted too: ``moved_bytes_per_step`` adds the deterministic mode's
    partial slices (each program writes one θ-sized slice, the update reads them all; programs capped by
    ``sgd_update.max_partials``); ``w_reread_bytes_per_step`` is the copies of θ the programs read (each reads W once
    per class sweep, twice when the classes take more than one tile), from L2 while W fits there; the atomics above
    are L2 read-modify-writes.
    ``flop_per_step`` is the two GEMMs' ``4·B·D·C``; ``modelled`` is :func:`modelled_step` for the per-step paths and
    None for the epoch kernel (one program: its time is the latency chain modelled in its docstring).
    """
    from linclass_gpu.kernels import epoch_sgd, sgd_update, softmax_sgd

    n_steps = -(-N // B)
    programs = -(-B // softmax_sgd.BLOCK_B)
    per_step = bytes_moved(B, D, C, x_dtype)["fused_bytes"]
    params = 4 * (D * C + C)
    flop = 4 * B * D * C
    config = softmax_sgd.softmax_config(D, C)
    sweeps = 1 if config.one_class_tile else 2  # past one class tile the backward pass recomputes the logits
    partial_programs = sgd_update.max_partials(D * C + C, programs)
    rows = [
        {"path": "triton per-step, atomics", "launches_per_epoch": 2 * n_steps, "host_syncs_per_epoch": 1,
         # each of the cdiv(B, 16) programs adds its dW, db and loss
         "atomics_per_step": programs * (D * C + C + 1), "bytes_per_step": per_step, "moved_bytes_per_step": per_step,
         "w_reread_bytes_per_step": programs * sweeps * params, "programs_per_step": programs},
        {"path": "triton per-step, deterministic", "launches_per_epoch": 2 * n_steps, "host_syncs_per_epoch": 1,
         "atomics_per_step": 0, "bytes_per_step": per_step,
         # the accumulator's read and reset (in per_step) become P slices written once and read once
         "moved_bytes_per_step": per_step + (2 * partial_programs - 2) * params,
         "w_reread_bytes_per_step": partial_programs * sweeps * params, "programs_per_step": partial_programs},
    ]
    for row in rows:
        row["flop_per_step"] = flop
        row["modelled"] = modelled_step(per_step, row["moved_bytes_per_step"], row["w_reread_bytes_per_step"], params,
                                        row["atomics_per_step"], flop)
    rows += _tiled_training_rows(B, D, C, x_dtype, n_steps)
    if epoch_sgd.epoch_config(D, C) is not None:
        epoch_bytes = 16 * B + B * D * _ITEMSIZE[x_dtype] + 4 + round(2 * params / n_steps)
        rows.append({"path": "triton epoch kernel", "launches_per_epoch": 1, "host_syncs_per_epoch": 1,
                     "atomics_per_step": 0, "bytes_per_step": epoch_bytes, "moved_bytes_per_step": epoch_bytes,
                     "w_reread_bytes_per_step": 0, "programs_per_step": 1, "flop_per_step": flop, "modelled": None})
        rows += _split_training_rows(B, D, C, x_dtype, epoch_bytes)
    for row in rows:
        row.update({"B": B, "D": D, "C": C, "N": N, "x_dtype": x_dtype, "steps_per_epoch": n_steps,
                    "host_launch_calls_per_epoch": 1})
    return rows


def _split_training_rows(B: int, D: int, C: int, x_dtype: str, epoch_bytes: int) -> list[dict]:
    """:func:`training_configurations`' row of the multi-program epoch kernel (``kernels/epoch_split_sgd.py``) as
    the backend launches it (tensor-core products), where it applies.

    Its compulsory bytes are the single-program epoch kernel's ``epoch_bytes``; beyond them, every program reads the
    step's rows and labels, writes its (B_pad, 16) fp32 partial logits and reads all P of them back (L2 traffic:
    ``exchange_bytes_per_step``). ``atomics_per_step`` is the grid barrier's P arrivals (its polls are loads); the
    SASS holds one more atomic per program and epoch, the count of finished programs. ``modelled`` is None: the
    step is a latency chain, modelled in the kernel's docstring.
    """
    import torch

    from linclass_gpu.kernels import epoch_split_sgd

    config = epoch_split_sgd.split_config(D, C, B, getattr(torch, x_dtype), "mma")
    if config is None:
        return []
    partials = config.programs * config.block_b * config.block_k * 4
    exchange = partials + config.programs * partials
    return [{"path": "triton split epoch kernel", "launches_per_epoch": 1,
             "host_syncs_per_epoch": 1, "atomics_per_step": config.programs, "grid_barriers_per_step": 1,
             "bytes_per_step": epoch_bytes,
             "moved_bytes_per_step": epoch_bytes + (config.programs - 1) * 16 * B + exchange,
             "exchange_bytes_per_step": exchange, "w_reread_bytes_per_step": 0,
             "programs_per_step": config.programs, "flop_per_step": 4 * B * D * C, "modelled": None}]


def _tiled_training_rows(B: int, D: int, C: int, x_dtype: str, n_steps: int) -> list[dict]:
    """:func:`training_configurations`' rows of the tiled step (``kernels/softmax_tiled_sgd.py``), both modes, as
    the backend builds it on sm_90 (dW by tf32x3); none past its feature limit. Every ``modelled`` figure is an
    estimate, and counts the dW GEMM's tensor-core passes as FP32 FMAs (an upper bound on their time).

    Beyond :func:`bytes_moved`'s compulsory bytes, past one class tile the log-sum-exp pass reads the rows, labels and
    ``X[rows]`` once more and writes 12 bytes per row and class group, which the merge reads back before writing 12
    bytes per row for the gradient pass's programs to read (each class group's). ``w_reread_bytes_per_step`` is W
    read once per program and pass (each program holds its class tiles across its row blocks);
    ``x_reread_bytes_per_step`` the tile loads of X[rows] from L1/L2 (every class tile sweeps the rows, once per
    pass and again for dW), which the HBM model leaves out. ``flop_per_step`` counts the padded tiles the kernels
    compute (D to the feature chunks, C to 16-class tiles), the logits twice past one class tile.
    """
    from linclass_gpu.kernels import softmax_tiled_sgd

    config = softmax_tiled_sgd.tiled_config(D, C, "tf32x3")
    if config is None:
        return []
    per_step = bytes_moved(B, D, C, x_dtype)["fused_bytes"]
    params, x_bytes = 4 * (D * C + C), B * D * _ITEMSIZE[x_dtype]
    passes = 1 if config.one_class_tile else 2
    rows = []
    for deterministic in (False, True):
        layout = softmax_tiled_sgd.tiled_layout(B, D, C, deterministic=deterministic)
        lse_bytes = 0 if config.one_class_tile else (
            16 * B + x_bytes + 2 * 12 * B * layout.n_class_groups + 12 * B * (1 + layout.n_class_groups))
        # deterministic: the accumulator's read and reset (in per_step) become the split's slices, written and read
        partial_bytes = (2 * layout.n_row_splits - 2) * params if deterministic else 0
        padded_flop = 2 * (passes + 1) * B * config.block_d * config.d_chunks * layout.n_class_tiles * config.block_c
        row = {"path": f"triton tiled per-step, {'deterministic' if deterministic else 'atomics'}",
               # the gradient launch and the update, after the log-sum-exp and merge launches past one class tile
               "launches_per_epoch": (2 if config.one_class_tile else 4) * n_steps, "host_syncs_per_epoch": 1,
               "atomics_per_step": 0 if deterministic else layout.atomics_per_step, "bytes_per_step": per_step,
               "moved_bytes_per_step": per_step + lse_bytes + partial_bytes,
               "w_reread_bytes_per_step": layout.n_row_splits * passes * params,
               "x_reread_bytes_per_step": layout.n_class_tiles * (passes + 1) * x_bytes,
               "programs_per_step": layout.programs, "flop_per_step": padded_flop}
        row["modelled"] = modelled_step(per_step, row["moved_bytes_per_step"], row["w_reread_bytes_per_step"], params,
                                        row["atomics_per_step"], padded_flop)
        rows.append(row)
    return rows


def format_report(rows: list[dict], bytes_model: bool = True) -> str:
    """A plain-text table of :func:`compile_report` rows, then (optionally) the MNIST bytes-moved figures."""
    header = ("kernel", "config", "arch", "warps", "regs", "shared B", "local B", "LDG", "STG", "atomics", "BAR",
              "X loads (in loops)")
    table = [header] + [
        (row["kernel"], row["config"], row["arch"], str(row["num_warps"]), str(row["registers"]),
         str(row["shared_bytes"]), str(row["local_bytes"]), str(row["global_loads"]), str(row["global_stores"]),
         str(row["global_atomics"]), str(row["barriers"]), f"{row['x_loads']} ({row['x_loads_in_inner_loops']})")
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    spills = [row for row in rows if row["local_bytes"]]
    lines.append("")
    lines.append(f"{len(rows)} builds, " + (f"{len(spills)} with local memory (spills)" if spills else
                                             "no local memory (no spills)"))
    if bytes_model:
        B, D, C = MNIST_SHAPE
        lines.append("")
        lines.append(f"Bytes moved per SGD step, softmax regression B={B} D={D} C={C} (compulsory global traffic):")
        for x_dtype in ("float32", "uint8"):
            model = bytes_moved(B, D, C, x_dtype)
            lines.append(f"  X {x_dtype:8s} fused {model['fused_bytes']:>10,d} B   "
                         f"unfused {model['unfused_bytes']:>10,d} B   unfused/fused {model['ratio']:.2f}x")
        lines.append("")
        lines.append(f"Training per path, B={B} D={D} C={C} N=60000 uint8:")
        for config in training_configurations(B, D, C):
            lines.append(f"  {config['path']:32s} {config['launches_per_epoch']:>5d} launches/epoch   "
                         f"{config['host_syncs_per_epoch']} host sync/epoch   {config['atomics_per_step']:>7,d} "
                         f"atomics/step   {config['bytes_per_step']:>8,d} B/step")
        lines.append("")
        lines.append("Throughput model per step (estimated: vendor peaks, L2 atomics assumed at "
                     f"{L2_ATOMICS_PER_S[0] / 1e9:g}-{L2_ATOMICS_PER_S[1] / 1e9:g} G/s; latency left out):")
        for shape in SCALE_SHAPES:
            for config in training_configurations(shape["B"], shape["D"], shape["C"], N=10 * shape["B"],
                                                  x_dtype=shape["x_dtype"]):
                if config["modelled"] is None:
                    continue
                h100 = config["modelled"]["H100 SXM"]
                lines.append(f"  B={config['B']} C={config['C']} {config['x_dtype']:8s} {config['path']:32s} "
                             f"{config['atomics_per_step']:.2e} atomics, W re-read "
                             f"{config['w_reread_bytes_per_step']:.2e} B; H100 {1e3 * h100['step_seconds'][0]:.3g}-"
                             f"{1e3 * h100['step_seconds'][1]:.3g} ms, HBM fraction {h100['hbm_fraction'][1]:.3f}-"
                             f"{h100['hbm_fraction'][0]:.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# ``linclass-gpu kernels report``: registered by linclass_gpu.cli (SUBCOMMAND_MODULES)
# ---------------------------------------------------------------------------------------------------------------------


def register(subparsers, add_json) -> None:
    """Add ``kernels`` with its ``report`` subcommand to the ``linclass-gpu`` parser (imports nothing heavy)."""
    kernels = subparsers.add_parser("kernels", help="the shipped Triton kernels: ahead-of-time compile report")
    commands = kernels.add_subparsers(dest="kernels_command", required=True)
    report = commands.add_parser(
        "report", help="compile every shipped kernel configuration for each arch (no GPU needed) and report "
        "registers, shared and local memory (spills), SASS global loads/stores, and the bytes-moved model")
    report.add_argument("--arch", default=",".join(ARCHS), metavar="sm_XX,...",
                        help=f"target architectures (default {','.join(ARCHS)})")
    report.add_argument("--workers", type=int, default=None, help=f"compile processes (default {DEFAULT_WORKERS})")
    add_json(report)
    report.set_defaults(run=run_report)


def run_report(args) -> dict:
    """Print the compile report table (and the MNIST bytes-moved figures); return it as the JSON summary."""
    archs = [_normalise_arch(arch) for arch in args.arch.split(",") if arch.strip()]
    rows = compile_report(archs, workers=args.workers)
    print(format_report(rows))
    B, D, C = MNIST_SHAPE
    return {
        "archs": archs,
        "kernels": rows,
        "spilling_builds": sum(1 for row in rows if row["local_bytes"]),
        "bytes_moved": [bytes_moved(B, D, C, x_dtype) for x_dtype in ("float32", "uint8")],
        "training": training_configurations(B, D, C),
        "training_at_scale": [row for shape in SCALE_SHAPES for row in training_configurations(
            shape["B"], shape["D"], shape["C"], N=10 * shape["B"], x_dtype=shape["x_dtype"])],
    }
