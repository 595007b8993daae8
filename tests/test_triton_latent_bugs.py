"""Latent GPU bugs that a sequential interpreter does not show by itself, each pinned by a test.

- int64 row offsets: the probability stores index ``lanes·C``, which passes 2^31 once N·C does (``predict_proba``
  covers all N rows in one launch); checked on the offsets helper itself at such a position, where int32 would wrap.
- An explicit barrier before a thread reads another thread's global write: the deterministic read-add-write of
  ``_tiles.accumulate``; checked in the compiled TTGIR (a ``ttg.barrier`` at that line), compiled for sm_90 in a
  subprocess with no GPU needed.
- The gradient accumulator's reset does not depend on the previous step's update launch having run: a step cut short
  between its launches leaves its gradient in the accumulator, and ``set_params`` (how training resumes) clears it.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Triton kernels need torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode (the interpreter when there is no CUDA device).
kernels = pytest.importorskip("linclass_gpu.kernels", reason="the Triton kernels need triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from linclass_gpu.backends.triton_backend import TritonBackend  # noqa: E402
from linclass_gpu.kernels import _tiles, sigmoid_sgd, softmax_sgd  # noqa: E402

DEVICE = "cpu" if kernels.INTERPRET else "cuda"


@triton.jit
def _probability_offsets_kernel(out_ptr, block, C, BLOCK_B: tl.constexpr):
    """The offsets a probability store of row block ``block`` uses: ``lanes·C``."""
    lanes = _tiles.row_block_lanes(block, BLOCK_B)
    tl.store(out_ptr + tl.arange(0, BLOCK_B), lanes * C)


def test_probability_offsets_are_int64_past_2_31():
    block, n_classes, block_b = 2**26 + 3, 32768, 16  # lanes ≈ 2^30, lanes·C ≈ 2^45
    out = torch.zeros(block_b, dtype=torch.int64, device=DEVICE)
    _probability_offsets_kernel[(1,)](out, block, n_classes, BLOCK_B=block_b)
    expected = (block * block_b + np.arange(block_b, dtype=np.int64)) * n_classes
    assert expected.min() > 2**31
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_step_kernels_index_rows_through_the_int64_helper():
    """Both step kernels take their lanes from row_block_lanes (the only place the row-block positions are formed)."""
    for module in (softmax_sgd, sigmoid_sgd):
        source = inspect.getsource(module)
        assert "lanes = row_block_lanes(pid + visit * n_programs, BLOCK_B)" in source
        assert "* BLOCK_B + tl.arange(0, BLOCK_B)" not in source


_BARRIER_PROBE = textwrap.dedent('''
    import inspect, json, os, re, sys
    os.environ["TRITON_INTERPRET"] = "0"
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from linclass_gpu import kernels
    from linclass_gpu.kernel_report import _softmax_build, _source_line

    lines, first = inspect.getsourcelines(kernels._tiles.accumulate.fn)
    site = ("_tiles.py", first + next(i for i, line in enumerate(lines) if "tl.debug_barrier()" in line))
    counts = {}
    for deterministic in (True, False):
        build = _softmax_build(31, 10, "float32", deterministic=deterministic)
        fn = getattr(getattr(kernels, build.module), build.kernel)
        compiled = triton.compile(ASTSource(fn, build.signature, build.constexprs),
                                  target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": build.num_warps, "num_stages": build.num_stages})
        ttgir = compiled.asm["ttgir"]
        aliases = dict(re.findall(r"^(#loc\\d+) = loc\\((.*)\\)$", ttgir, flags=re.MULTILINE))
        counts[deterministic] = sum(
            _source_line(found.group(1), aliases) == site
            for found in re.finditer(r"ttg\\.barrier all loc\\((.*)\\)$", ttgir, flags=re.MULTILINE))
    print(json.dumps({"deterministic": counts[True], "atomics": counts[False]}))
''')


def test_deterministic_accumulate_has_a_barrier_before_reading_back():
    done = subprocess.run([sys.executable, "-c", _BARRIER_PROBE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    # Deterministic: the dW columns and db each read back a previous visit's stores; fast mode only adds atomics.
    assert counts["deterministic"] >= 1 and counts["atomics"] == 0, counts


class _FailingReducer:
    """A data-parallel reducer whose exchange fails: the step stops between its gradient and its update launch."""

    def gradient_divisor(self, batch_size):
        return batch_size

    def reduce_gradient_(self, gradient):
        raise RuntimeError("peer gone")

    def reduce_parameters_(self, parameters):
        raise AssertionError("not reached")


def test_a_step_cut_short_leaves_no_gradient_behind(rng):
    backend = TritonBackend()
    n_rows, n_features, n_classes = 20, 7, 3
    X = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, size=n_rows)
    W, b = rng.normal(size=(n_features, n_classes)).astype(np.float32), np.zeros(n_classes, np.float32)
    rows = torch.arange(n_rows, device=DEVICE)
    interrupted = backend.fused_sgd("softmax", X, y, W, b, max_batch_size=n_rows, momentum=0.5)
    interrupted.reducer = _FailingReducer()
    with pytest.raises(RuntimeError, match="peer gone"):
        interrupted.step(rows, 0.1)
    interrupted.reducer = None
    interrupted.set_params(W, b)  # what train_sgd does after an interrupted epoch
    interrupted.step(rows, 0.1)
    fresh = backend.fused_sgd("softmax", X, y, W, b, max_batch_size=n_rows, momentum=0.5)
    fresh.step(rows, 0.1)
    np.testing.assert_array_equal(interrupted.get_params()[0], fresh.get_params()[0])
    np.testing.assert_array_equal(interrupted.get_params()[1], fresh.get_params()[1])
