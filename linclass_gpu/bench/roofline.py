"""The work of one softmax-regression SGD step (bytes and FLOPs) and the peaks of the device that runs it.

A step's time is bounded below by ``max(bytes / peak bandwidth, FLOPs / peak FLOP rate)``, the roofline. The bytes
are the fused step's compulsory global-memory traffic from :func:`linclass_gpu.kernel_report.bytes_moved` (read
``X[rows]``, the row ids, labels and parameters once; write the gradient and the update): the useful traffic, so
every provider's GB/s is that figure over its own time, as in Triton's fused-softmax tutorial, and an unfused
provider shows how far its extra traffic sets it back. The FLOPs are the two GEMMs' ``2·B·D·C`` each; the row-wise
softmax and the update are O(B·C + D·C) and left out.

On a CUDA device the peaks come from the device's attributes through ``triton.testing`` (DRAM clock × bus width,
SM count × clock × FP32 lanes). A CPU has no such figures to trust (turbo, shared cores), so there the roofline is
measured instead: the bare-GEMM floor provider of :mod:`.step_providers`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel_report import bytes_moved


def step_flop(B: int, D: int, C: int) -> int:
    """FLOPs of the two GEMMs of one step: ``X_b W`` (B, D)·(D, C) and ``X_bᵀ dZ`` (D, B)·(B, C)."""
    return 2 * (2 * B * D * C)


def step_bytes(B: int, D: int, C: int, x_dtype: str) -> int:
    """Compulsory global-memory bytes of one fused step (see :func:`linclass_gpu.kernel_report.bytes_moved`)."""
    return bytes_moved(B, D, C, x_dtype)["fused_bytes"]


@dataclass(frozen=True)
class DevicePeak:
    """Peak rates of one device.

    Attributes
    ----------
    name : str
    bytes_per_second : float
        DRAM bandwidth.
    flop_per_second : float
        FP32 FMA rate (IEEE products, no tensor cores: what the kernels use by default).
    """

    name: str
    bytes_per_second: float
    flop_per_second: float

    def roofline_seconds(self, n_bytes: float, flop: float) -> float:
        """The least time a step moving ``n_bytes`` and doing ``flop`` can take here."""
        return max(n_bytes / self.bytes_per_second, flop / self.flop_per_second)


def cuda_device_peak(device: int = 0) -> DevicePeak:
    """The peaks of CUDA device ``device``, from its attributes (``triton.testing.get_dram_gbps`` and
    ``get_max_simd_tflops``; the latter counts 32 FP32 lanes per SM sub-core, right for A100 and conservative by 2×
    for GPUs with 64 such as H100)."""
    import torch
    import triton.testing
    from triton.runtime import driver

    clock_khz = driver.active.utils.get_device_properties(device)["sm_clock_rate"]
    return DevicePeak(
        name=torch.cuda.get_device_name(device),
        bytes_per_second=triton.testing.get_dram_gbps(device) * 1e9,
        flop_per_second=triton.testing.get_max_simd_tflops(torch.float32, clock_khz, device) * 1e12,
    )
