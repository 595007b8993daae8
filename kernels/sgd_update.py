"""The second (and last) launch of an SGD step: reduce the gradient, apply L2 and momentum, update, reset.

Works on the flat parameter vector ``theta = [W (D, K) row-major, b (K,)]`` shared by the softmax (K = C) and the
sigmoid (K outputs) kernels, so one kernel serves every model::

    g  = dW_acc                         fast: the atomic accumulator, then zeroed here for the next step
       = Σ_p partial_p                  deterministic: fixed-order sum of the per-program slices
    g += l2·W                           (W only, never b)
    v  = μ v + g;  step = g + μ v (Nesterov) or v;   θ ← θ − lr·step;   s = lr            SGD
    G  = G + g²;   s = lr/(√G + ε);                  θ ← θ − s·g                      AdaGrad (ADAGRAD)
    m  = β₁ m + (1 − β₁) g;  v = β₂ v + (1 − β₂) g²;  s = lr/(√v/√(1 − β₂ᵗ) + ε);  θ ← θ − s·m/(1 − β₁ᵗ)   Adam (ADAM)
    W ← sign(W)·max(|W| − s·l1, 0)      L1's proximal (soft-thresholding) step, W only, when L1 (see below)

L1 is proximal rather than the subgradient ``l1·sign(W)`` added to g: a weight that should be 0 lands on exactly 0
instead of oscillating around it by lr·l1.

Given ``grad_out`` it only reduces (``grad_out = g``): the deterministic ``*_loss_grad`` path. Absent buffers are
passed as None, which Triton compiles as a constant: the kernel's ``is None`` branches cost nothing at run time.

The step's changing scalars (the rate and Adam's bias corrections) come as arguments, or, given ``step_scalars``, from
device memory: a launch recorded once in a CUDA graph then reads each replay's values from the same address.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._tiles import LAUNCH_OPTIONS

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Elements per program: 8 fp32 values per thread at 4 warps are enough for an elementwise, bandwidth-bound kernel.
BLOCK = 1024
NUM_WARPS = 4
# Deterministic mode keeps one θ-sized gradient slice per program of the step kernel; their total is capped (fewer
# programs, each taking several row blocks, for large D·K): 21 slices of a 784 × 1000 model, one of 784 × 32768.
PARTIALS_BYTES = 64 * 2**20
# The step's scalars in device memory: [learning rate, bias_correction1, bias_correction2_sqrt, unused]. Four fp32 per
# step keep every step's row 16-byte aligned, so all the rows of a table launch one pointer specialisation.
STEP_SCALARS = 4
# Runtime arguments that are not int32 or fp32 buffers, typed for the compile report.
ARG_TYPES = {"loss_sum_ptr": "*fp64", **dict.fromkeys(
    ("learning_rate", "l2", "l1", "momentum", "eps", "beta1", "beta2", "bias_correction1", "bias_correction2_sqrt"),
    "fp32")}


def max_partials(n_params: int, n_blocks: int) -> int:
    """Programs (= partial slices) of a deterministic step over ``n_blocks`` row blocks of a ``n_params`` model."""
    return max(1, min(n_blocks, PARTIALS_BYTES // (4 * n_params)))


# ---------------------------------------------------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def sgd_update_kernel(
    theta_ptr, grad_ptr, velocity_ptr, accumulator_ptr, loss_partials_ptr, loss_sum_ptr, grad_out_ptr,
    step_scalars_ptr, n_weights, n_params, n_partials, learning_rate, l2, l1, momentum, eps, beta1, beta2,
    bias_correction1, bias_correction2_sqrt,
    BLOCK: tl.constexpr, DETERMINISTIC: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
    FIT_INTERCEPT: tl.constexpr, L1: tl.constexpr, ADAGRAD: tl.constexpr, ADAM: tl.constexpr,
):
    """One parameter update (or, given ``grad_out``, only the reduction) over ``BLOCK`` elements of ``theta``."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_params

    # 1. This step's mean gradient.
    if DETERMINISTIC:
        g = tl.zeros((BLOCK,), dtype=tl.float32)
        for p in range(0, n_partials):  # always the same order: bitwise reproducible
            g += tl.load(grad_ptr + p * n_params + offs, mask=mask, other=0.0)
        if pid == 0:
            # The loss partials likewise, by one program, in order, into the fp64 running loss.
            total = tl.zeros((), dtype=tl.float64)
            for p in range(0, n_partials):
                total += tl.load(loss_partials_ptr + p).to(tl.float64)
            tl.store(loss_sum_ptr, tl.load(loss_sum_ptr) + total)
    else:
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0)
        tl.store(grad_ptr + offs, tl.zeros((BLOCK,), dtype=tl.float32), mask=mask)  # ready for the next atomics

    if grad_out_ptr is None:
        if step_scalars_ptr is not None:
            learning_rate = tl.load(step_scalars_ptr)
            bias_correction1 = tl.load(step_scalars_ptr + 1)
            bias_correction2_sqrt = tl.load(step_scalars_ptr + 2)
        theta = tl.load(theta_ptr + offs, mask=mask, other=0.0)
        is_weight = offs < n_weights
        # 2. L2 on W only: ∂(l2/2·‖W‖²)/∂W = l2·W.
        g += tl.where(is_weight, l2 * theta, 0.0)
        # Without an intercept, b keeps its initial value.
        update_mask = mask if FIT_INTERCEPT else mask & is_weight
        if ADAGRAD:
            # 3. AdaGrad: G ← G + g², a step size s = lr/(√G + ε) per parameter (√ rounded to nearest).
            sum_of_squares = tl.load(accumulator_ptr + offs, mask=mask, other=0.0) + g * g
            tl.store(accumulator_ptr + offs, sum_of_squares, mask=update_mask)
            step_size = learning_rate / (tl.sqrt_rn(sum_of_squares) + eps)
            # 4. θ ← θ − s·g
            theta = theta - step_size * g
        elif ADAM:
            # 3. Adam: m in the velocity buffer, v in the accumulator; bias corrections computed on the host from t.
            m = beta1 * tl.load(velocity_ptr + offs, mask=mask, other=0.0) + (1.0 - beta1) * g
            v = beta2 * tl.load(accumulator_ptr + offs, mask=mask, other=0.0) + (1.0 - beta2) * (g * g)
            tl.store(velocity_ptr + offs, m, mask=update_mask)
            tl.store(accumulator_ptr + offs, v, mask=update_mask)
            step_size = learning_rate / (tl.sqrt_rn(v) / bias_correction2_sqrt + eps)
            # 4. θ ← θ − s·m̂
            theta = theta - (m / bias_correction1) * step_size
        else:
            # 3. Heavy-ball / Nesterov momentum.
            if MOMENTUM:
                v = momentum * tl.load(velocity_ptr + offs, mask=mask, other=0.0) + g
                tl.store(velocity_ptr + offs, v, mask=update_mask)
                if NESTEROV:
                    step = g + momentum * v
                else:
                    step = v
            else:
                step = g
            # 4. θ ← θ − lr·step
            theta = theta - learning_rate * step
            step_size = learning_rate
        if L1:
            # 5. Proximal step of s·l1·‖W‖₁ on W only: sign(W)·max(|W| − t, 0) as its three exact cases.
            threshold = step_size * l1
            shrunk = tl.where(theta > threshold, theta - threshold,
                              tl.where(theta < -threshold, theta + threshold, 0.0))
            theta = tl.where(is_weight, shrunk, theta)
        tl.store(theta_ptr + offs, theta, mask=update_mask)
    else:
        tl.store(grad_out_ptr + offs, g, mask=mask)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------------------------------


def sgd_update_arguments(theta, grad, *, n_weights, learning_rate=0.0, l2=0.0, l1=0.0, momentum=0.0, nesterov=False,
                         fit_intercept=True, velocity=None, deterministic=False, n_partials=1, loss_partials=None,
                         loss_sum=None, grad_out=None, accumulator=None, eps=1e-10, adam_step=0, betas=(0.9, 0.999),
                         step_scalars=None):
    """The grid and keyword arguments of :func:`sgd_update_kernel` over ``theta`` (or of the reduce-only launch into
    ``grad_out`` when it is given), checked, not launched: ``(grid, arguments)``.

    An ``accumulator`` (θ-sized, fp32) makes the step AdaGrad's with that ``eps``; with ``adam_step = t ≥ 1`` too it
    is Adam's (``velocity`` holds m, ``accumulator`` v; ``betas``, ``eps``); without either, (momentum) SGD. From one
    step to the next only ``learning_rate`` and Adam's ``bias_correction1`` and ``bias_correction2_sqrt`` change;
    given ``step_scalars`` (a float32 device vector of :data:`STEP_SCALARS` values, 16-byte aligned) the kernel
    reads those three from it instead, and the scalar arguments are ignored.
    """
    n_params = theta.numel()
    if theta.dtype != torch.float32 or grad.dtype != torch.float32:
        raise ValueError("theta and grad must be float32")
    if grad.numel() < n_params * (n_partials if deterministic else 1):
        raise ValueError("grad is smaller than n_partials slices of theta")
    if momentum and velocity is None:
        raise ValueError("momentum needs a velocity buffer")
    if accumulator is not None and momentum:
        raise ValueError("AdaGrad and Adam (an accumulator) take no momentum")
    if adam_step and (accumulator is None or velocity is None):
        raise ValueError("Adam needs the velocity (m) and accumulator (v) buffers")
    beta1, beta2 = betas
    bias_correction1, bias_correction2_sqrt = ((1.0 - beta1**adam_step, (1.0 - beta2**adam_step) ** 0.5)
                                               if adam_step else (1.0, 1.0))
    if step_scalars is not None and (step_scalars.dtype != torch.float32 or step_scalars.numel() < STEP_SCALARS):
        raise ValueError(f"step_scalars must be a float32 vector of {STEP_SCALARS} values")
    if deterministic and (loss_partials is None or loss_sum is None):
        raise ValueError("deterministic mode reduces the loss partials: pass loss_partials and loss_sum")
    return (triton.cdiv(n_params, BLOCK),), dict(
        theta_ptr=theta, grad_ptr=grad, velocity_ptr=velocity, accumulator_ptr=accumulator,
        loss_partials_ptr=loss_partials, loss_sum_ptr=loss_sum, grad_out_ptr=grad_out, step_scalars_ptr=step_scalars,
        n_weights=n_weights, n_params=n_params, n_partials=n_partials, learning_rate=float(learning_rate),
        l2=float(l2), l1=float(l1), momentum=float(momentum), eps=float(eps), beta1=float(beta1), beta2=float(beta2),
        bias_correction1=float(bias_correction1), bias_correction2_sqrt=float(bias_correction2_sqrt),
        BLOCK=BLOCK, DETERMINISTIC=deterministic, MOMENTUM=bool(momentum), NESTEROV=bool(nesterov),
        FIT_INTERCEPT=bool(fit_intercept), L1=bool(l1), ADAGRAD=accumulator is not None and not adam_step,
        ADAM=bool(adam_step), num_warps=NUM_WARPS, **LAUNCH_OPTIONS,
    )


def launch_sgd_update(*args, **kwargs) -> None:
    """Launch :func:`sgd_update_kernel` with :func:`sgd_update_arguments` (same parameters)."""
    grid, arguments = sgd_update_arguments(*args, **kwargs)
    sgd_update_kernel[grid](**arguments)
