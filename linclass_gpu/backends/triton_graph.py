"""Epochs of per-step launches recorded once as a CUDA graph and replayed: the Triton per-step path's epoch on a GPU.

An epoch of the per-step path is 2 launches per step (``TritonFusedSGD.step``); even bound once
(:mod:`.triton_launch`), each costs the host a few microseconds, about as long as the GPU work of a small step. A CUDA
graph makes the epoch one host call. A graph replays the launches exactly as recorded, pointers and scalars included,
so everything that changes between epochs lives in device buffers whose addresses stay fixed: the epoch's row order
(copied into a buffer the steps' row slices point into) and per-step tables the kernels read (the dense path's
learning rate and Adam's bias corrections, see ``kernels/sgd_update.py``; the sparse path's scales and row-claim ids,
see ``kernels/sparse_sgd.py``). The parameters, gradient, optimizer and loss buffers are allocated once per stepper
and never move.

The first epoch of each shape (rows per epoch, batch size, and whatever else the caller's launches depend on) runs
the steps eagerly: Triton compiles or loads every launch variant there (the tail batch's, say), which must not happen
during a capture. It then records the same steps into a graph, which every later epoch of that shape replays. Should
the recording fail (an operation CUDA cannot capture), a warning says so and that shape's epochs run eagerly. Under
the Triton interpreter (no CUDA) the steps run eagerly every epoch through the same buffers: the tests check that
path against the per-step one.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

# steps(rows_buffer, tables): the epoch's launches over the row order and the per-step tables (device, by name).
EpochSteps = Callable[[Any, dict[str, Any]], None]


def graph_applies(use_cuda_graph: bool | None, reducer: Any, device) -> bool:
    """Whether a stepper's per-step epochs go through :class:`GraphedEpochs`: never with a data-parallel reducer
    (it exchanges on the host between a step's launches), else as ``use_cuda_graph`` says, by default on a CUDA
    device."""
    if reducer is not None:
        return False
    return use_cuda_graph if use_cuda_graph is not None else device.type == "cuda"


class GraphedEpochs:
    """Per-shape static buffers and CUDA graphs of an epoch's per-step launches.

    Parameters
    ----------
    torch : module
    device : torch.device
        Where the buffers live; a CUDA device also pins the host copies of the tables (asynchronous copies).
    record : bool, optional
        Record and replay graphs (default: on a CUDA device); otherwise the steps run eagerly every epoch.

    Attributes
    ----------
    recorded : int
        Graphs recorded so far (one per epoch shape).
    replays : int
        Epochs run by replaying a graph.
    """

    def __init__(self, torch, device, record: bool | None = None):
        self._torch, self._device = torch, device
        self._pinned = device.type == "cuda"
        self._record = self._pinned if record is None else bool(record)
        self._epochs: dict[tuple, dict[str, Any]] = {}
        self.recorded = self.replays = 0

    def run(self, steps: EpochSteps, rows, tables: dict[str, np.ndarray], batch_size: int,
            variant: tuple = ()) -> None:
        """One epoch: ``steps`` over ``rows`` (device integer vector (N_epoch,)) in batches of ``batch_size`` with
        the host ``tables`` (NumPy arrays, one row per step, their shapes and dtypes the same every epoch of this
        shape) copied to the device; recorded at the first epoch of this shape, replayed after it. ``variant``
        names what else the launches depend on (settings that may change between epochs): a new one is a new shape.
        """
        torch = self._torch
        key = (int(rows.shape[0]), int(batch_size), *variant)
        epoch = self._epochs.get(key)
        if epoch is None:
            host = {name: torch.from_numpy(np.ascontiguousarray(table)) for name, table in tables.items()}
            epoch = self._epochs[key] = {
                "rows": torch.empty_like(rows, device=self._device),
                "tables": {name: torch.empty_like(table, device=self._device) for name, table in host.items()},
                # Page-locked, so the copies to the device are asynchronous; the event says when they may be refilled.
                "host": {name: torch.empty_like(table, pin_memory=self._pinned) for name, table in host.items()},
                "copied": torch.cuda.Event() if self._pinned else None, "graph": None}
        if epoch["copied"] is not None:
            epoch["copied"].synchronize()  # the previous epoch's copies have left the host buffers (long since)
        for name, table in tables.items():
            epoch["host"][name].copy_(torch.from_numpy(np.ascontiguousarray(table)))
            # Stream-ordered after the previous epoch's steps, which read the old values.
            epoch["tables"][name].copy_(epoch["host"][name], non_blocking=self._pinned)
        epoch["rows"].copy_(rows)
        if epoch["copied"] is not None:
            epoch["copied"].record()
        if epoch["graph"]:
            epoch["graph"].replay()
            self.replays += 1
            return
        steps(epoch["rows"], epoch["tables"])
        if self._record and epoch["graph"] is None:
            epoch["graph"] = self._recorded(steps, epoch)

    def _recorded(self, steps: EpochSteps, epoch: dict[str, Any]) -> Any:
        """``steps`` over ``epoch``'s buffers recorded as a CUDA graph (not run: the next epoch of this shape is its
        first replay), or False, with a warning, where the recording fails."""
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                steps(epoch["rows"], epoch["tables"])
        except RuntimeError as error:
            warnings.warn(f"recording an epoch's launches as a CUDA graph failed ({error}); epochs of this shape "
                          "launch step by step", RuntimeWarning, stacklevel=3)
            return False
        self.recorded += 1
        return graph
