"""Host side shared by the softmax and the sigmoid step launchers: buffer checks, the grid, and the loss and
gradient over all rows in either reduction mode (atomics, or per-program partials summed by ``sgd_update``).
"""

from __future__ import annotations

import torch
import triton

from ._tiles import LAUNCH_OPTIONS
from .sgd_update import launch_sgd_update, max_partials

# Offsets into theta and the gradient partials are int32 in the kernels.
MAX_BUFFER_VALUES = 2**31


def step_grid(X, rows, theta, grad, *, n_outputs, outputs_name, block_b, max_programs, deterministic):
    """Check the buffers of one step launch and return its grid: ``(n_programs, blocks_per_program)``.

    ``X`` is (N, D), ``theta`` the float32 (D·K + K,) parameters, ``grad`` the (D·K + K,) accumulator or the
    (P_max, D·K + K) partials; ``outputs_name`` names K in the messages. Only shapes are read: no synchronisation.
    """
    n_params = X.shape[1] * n_outputs + n_outputs
    counted = f"D*{outputs_name} + {outputs_name} = {n_params}"
    if X.stride(1) != 1:
        raise ValueError("X must have contiguous rows (X.stride(1) == 1)")
    if theta.dtype != torch.float32 or theta.numel() != n_params:
        raise ValueError(f"theta must be float32 with {counted} values")
    if grad.shape[-1] != n_params and grad.numel() != n_params:
        raise ValueError(f"grad must hold {counted} values per slice")
    if n_params * max(1, grad.numel() // n_params) >= MAX_BUFFER_VALUES:
        raise ValueError("parameter buffers beyond 2^31 values are not supported")
    n_blocks = triton.cdiv(rows.shape[0], block_b)
    n_programs = n_blocks if max_programs is None else max(1, min(max_programs, n_blocks))
    if deterministic and grad.numel() < n_programs * n_params:
        raise ValueError("the partial buffer has fewer slices than programs")
    return n_programs, triton.cdiv(n_blocks, n_programs)


def step_arguments(X, rows, y, theta, grad, loss, *, n_outputs, outputs_name, config, x_scale, grad_scale,
                   max_programs, deterministic, input_precision, sample_weight, probs, maxnreg, **model_arguments):
    """The grid and keyword arguments of a step kernel (softmax: ``outputs_name`` ``"C"``, sigmoid: ``"K"``), its
    buffers checked by :func:`step_grid`: ``((P,), arguments)``. ``model_arguments`` are the model's own constexprs."""
    n_programs, blocks_per_program = step_grid(X, rows, theta, grad, n_outputs=n_outputs, outputs_name=outputs_name,
                                               block_b=config.block_b, max_programs=max_programs,
                                               deterministic=deterministic)
    return (n_programs,), dict(
        X_ptr=X, stride_xn=X.stride(0), rows_ptr=rows, y_ptr=y, sample_weight_ptr=sample_weight, theta_ptr=theta,
        grad_ptr=grad, loss_ptr=loss, probs_ptr=probs, B=rows.shape[0], D=X.shape[1], **{outputs_name: n_outputs},
        x_scale=float(x_scale), grad_scale=float(grad_scale), blocks_per_program=blocks_per_program,
        **config.constexprs, **model_arguments, DETERMINISTIC=deterministic, INPUT_PRECISION=input_precision,
        num_warps=config.num_warps, num_stages=config.num_stages, maxnreg=maxnreg, **LAUNCH_OPTIONS,
    )


def loss_grad_over_rows(launch_step, X, theta, *, n_outputs, block_b, deterministic):
    """``(loss_sum, grad)`` over all rows of ``X``: the (1,) float64 summed loss and (D·K + K,) mean gradient.

    ``launch_step(rows, grad, loss, max_programs=, deterministic=)`` launches a step kernel and returns its number of
    programs; in deterministic mode ``sgd_update``'s reduce-only launch then sums the partials in a fixed order.
    """
    n_rows, n_features = X.shape
    n_params = n_features * n_outputs + n_outputs
    rows = torch.arange(n_rows, device=X.device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=X.device)
    if not deterministic:
        grad = torch.zeros(n_params, dtype=torch.float32, device=X.device)
        launch_step(rows, grad, loss_sum, max_programs=None, deterministic=False)
        return loss_sum, grad
    n_programs = max_partials(n_params, triton.cdiv(n_rows, block_b))
    partials = torch.empty((n_programs, n_params), dtype=torch.float32, device=X.device)
    loss_partials = torch.empty(n_programs, dtype=torch.float32, device=X.device)
    n_programs = launch_step(rows, partials, loss_partials, max_programs=n_programs, deterministic=True)
    grad = torch.empty(n_params, dtype=torch.float32, device=X.device)
    launch_sgd_update(theta, partials, n_weights=n_features * n_outputs, deterministic=True, n_partials=n_programs,
                      loss_partials=loss_partials, loss_sum=loss_sum, grad_out=grad)
    return loss_sum, grad
