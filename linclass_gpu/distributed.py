"""Data-parallel SGD over ``torch.distributed``: NCCL between GPUs, gloo on CPUs.

Each process holds a shard of the rows (:func:`shard_rows`: rows ``rank, rank + P, rank + 2P, …`` of ``P``
processes) and its own copy of the parameters. :class:`DataParallel` plugs into the fused step as its
:class:`~linclass_gpu.backends.base.StepReducer`:

- every step divides the gradient by the global batch ``P·B`` instead of the local ``B`` and all-reduces (sums) it in
  place between the gradient and the update, so ``P`` processes with local batch ``B`` take the same steps as one
  process with batch ``P·B`` whose batches are the union of theirs (up to the order of the float sums). The arrays
  are the backend's own device buffers, handed to torch without a copy: ``torch.from_numpy`` for NumPy (gloo),
  ``torch.from_dlpack`` for CuPy and the torch tensors themselves for Triton (NCCL). CuPy and torch must share a
  stream (both use the default stream unless told otherwise), so the update launched after the all-reduce sees it;
- shards of different sizes are padded per epoch: every process visits ``n_max`` rows (the largest shard), a
  smaller shard repeating the head of its epoch order, so every process takes the same number of steps of the same
  sizes (no all-reduce waits for a process that has run out) and the global batch ``P·B`` is known on the host
  with no communication. With :func:`shard_rows`, shards differ by at most one row;
- each process shuffles its own shard: the epoch's seed is drawn from the shared training RNG (the same draw on
  every process, so the RNG, which checkpoints save, stays in step) and combined with the rank;
- at the end of an epoch the summed loss and the validation score are reduced (the loss summed, the score averaged
  over processes), so divergence, plateau and early-stopping decisions agree on every process; after the last epoch
  the processes check that their parameters are bitwise identical;
- rank 0 alone writes: checkpoints, progress, CLI output (``is_writer``).

A collective that fails (a peer died: gloo sees its socket close at once; a peer hung: the process group's
``timeout`` expires) raises :class:`DistributedError` naming the rank and the operation, never a silent hang
beyond that timeout.

Local SGD (``local_sgd_every = k > 1``), for slow networks: the gradients are not exchanged; each process takes
``k`` steps on its own batches (its gradient divided by its own ``B``), then the parameters are averaged over the
processes (all-reduce, then ``1/P``), and also after the last step of every epoch. It exchanges ``1/k`` of the bytes.
The optimizer state (momentum, AdaGrad's and Adam's moments) stays per process and is not averaged: it is a running
summary of each process's own gradients and would cost as much again to exchange; only the weights must agree.

On a convex problem such as softmax regression, averaging every ``k`` steps costs little accuracy: each process's
``k`` local steps move in nearly the same direction, and the average of models trained on parts of the data is about
as good as the model trained on their union; each process also takes ``P`` times as many updates per row as the exact
run's global batches. Non-convex models, larger learning rates or shards that differ in distribution may drift
further apart between averagings. ``linclass-gpu bench scaling --local-sgd-every K`` measures the epoch time and
bytes per step on this machine; test accuracy per ``K`` comes from ``torchrun --nproc-per-node P -m
linclass_gpu.cli train --distributed --local-sgd-every K --json``.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import numpy as np

from .backends.base import Backend, FusedSGD

# torchrun's environment: without it there is no process group to join.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Seconds a collective may wait for a peer before it fails (the process group's timeout): long enough for the slowest
# process to finish an epoch's evaluation, short enough that a hung peer is reported the same hour.
DEFAULT_TIMEOUT_SECONDS = 600.0


class DistributedError(RuntimeError):
    """A collective failed (a peer died or did not answer within the timeout; the process group is then destroyed) or
    the processes disagree on the run."""


def collective_backend(backend: Backend) -> str:
    """The torch.distributed backend for ``backend``'s arrays: NCCL for CUDA device arrays (CuPy, Triton on a GPU),
    gloo for host arrays (NumPy, the Triton interpreter)."""
    return "gloo" if backend.name == "numpy" or getattr(backend, "interpreted", False) else "nccl"


def init_from_environment(backend: Backend, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Join the process group ``torchrun`` describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT and
    LOCAL_RANK, the GPU of this process), with :func:`collective_backend`'s backend.

    Raises
    ------
    ValueError
        Not started by ``torchrun`` (the variables are missing).
    DistributedError
        The other processes did not all join within ``timeout_seconds``.
    """
    import torch
    import torch.distributed as dist

    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(f"distributed training runs under torchrun, e.g. `torchrun --nproc-per-node 2 -m "
                         f"linclass_gpu.cli train --distributed`: {', '.join(missing)} not set")
    name = collective_backend(backend)
    if name == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        if backend.name == "cupy":
            import cupy

            cupy.cuda.Device(local_rank).use()
    try:
        dist.init_process_group(name, timeout=timedelta(seconds=timeout_seconds))
    except RuntimeError as error:  # torch.distributed.DistStoreError (a peer never came) is a RuntimeError
        raise DistributedError(f"rank {os.environ['RANK']} could not join the {os.environ['WORLD_SIZE']} processes at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_seconds:g} s: "
                               f"{str(error).splitlines()[0]}") from error


def shard_rows(n_rows: int, rank: int, world_size: int) -> np.ndarray:
    """Row indices of process ``rank``'s shard: ``rank, rank + P, rank + 2P, …`` (``P = world_size``).

    Strided rather than contiguous: shards differ by at most one row, each sees every part of the file (data sorted
    by class stays balanced), and with ``shuffle=False`` the union of the ``P`` processes' ``s``-th batches of ``B``
    rows is exactly the ``s``-th batch of ``P·B`` rows of the unsharded data.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    return np.arange(rank, n_rows, world_size)


def as_torch(array: Any):
    """A torch view of a backend's device array, sharing its memory: NumPy, CuPy (DLPack) or a torch tensor."""
    import torch

    if isinstance(array, torch.Tensor):
        return array
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


class SingleProcess:
    """The books of training in one process, with :class:`DataParallel`'s interface: what the training loop and the
    estimators call, so that one loop serves both. Nothing to reduce or to check; the step stays a single-process
    step (no reducer) and the process writes.

    Attributes
    ----------
    rank, world_size : int
        0 and 1.
    """

    rank, world_size = 0, 1
    is_writer = True

    def attach(self, stepper: FusedSGD, backend: Backend, n_rows: int, batch_size: int) -> int:
        """Return the rows visited per epoch: all ``n_rows``."""
        return n_rows

    @staticmethod
    def detach(stepper: FusedSGD) -> None:
        """Nothing to undo: :meth:`attach` left ``stepper`` as it was."""

    @staticmethod
    def epoch_order(backend: Backend, n_rows: int, rng: np.random.Generator, shuffle: bool, in_order: Any):
        """One epoch's rows as a device integer array: a permutation drawn from ``rng``, or ``in_order``."""
        return backend.permutation(n_rows, rng) if shuffle else in_order

    @staticmethod
    def sum(value: float, what: str = "") -> float:
        """``value`` itself (the sum over one process)."""
        return value

    @staticmethod
    def mean(value: float, what: str = "") -> float:
        """``value`` itself (the mean over one process)."""
        return value

    @staticmethod
    def gather(value: Any) -> list:
        """``[value]``."""
        return [value]

    @staticmethod
    def agree(**values) -> None:
        """One process always agrees with itself."""

    @staticmethod
    def check_identical(params: tuple[np.ndarray, ...]) -> None:
        """One process always holds the same parameters as itself."""


class DataParallel:
    """Data-parallel training over the default (initialised) ``torch.distributed`` process group.

    Pass one to ``fit(..., distributed=DataParallel())`` on every process (each with its own shard), or to
    :func:`linclass_gpu.training.train_sgd`. It is the fused step's reducer while training runs.

    Parameters
    ----------
    local_sgd_every : int
        1: all-reduce the gradient every step (exact data parallelism). ``k > 1``: local SGD, average the parameters
        every ``k`` steps and at the end of every epoch (see the module notes).

    Attributes
    ----------
    rank, world_size : int
    bytes_exchanged : int
        Bytes handed to all-reduces by the steps (gradients or parameters) since the last :meth:`attach`.
    steps : int
        Steps since the last :meth:`attach`.
    """

    def __init__(self, local_sgd_every: int = 1):
        import torch
        import torch.distributed as dist

        if isinstance(local_sgd_every, bool) or not isinstance(local_sgd_every, (int, np.integer)) or \
                local_sgd_every < 1:
            raise ValueError(f"local_sgd_every must be a positive integer, got {local_sgd_every!r}")
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("DataParallel needs an initialised torch.distributed process group: run under torchrun "
                             "and call torch.distributed.init_process_group (or linclass_gpu.distributed."
                             "init_from_environment) first")
        self._torch, self._dist = torch, dist
        self.local_sgd_every = int(local_sgd_every)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        # Host values (loss, scores, checks) travel in tensors on the device the collective backend serves.
        self._device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
                        else torch.device("cpu"))
        self._padding = None
        self._steps_per_epoch = 1
        self._staging = None  # the flat buffer several arrays are all-reduced through
        self.bytes_exchanged = self.steps = 0

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files and output: rank 0 alone."""
        return self.rank == 0

    # -- what the training loop calls ---------------------------------------------------------------------------------

    def attach(self, stepper: FusedSGD, backend: Backend, n_rows: int, batch_size: int) -> int:
        """Check that the processes agree on the run, make this the ``stepper``'s reducer; return the rows every
        process visits per epoch (the largest shard's ``n_max``).

        Raises
        ------
        DistributedError
            The processes differ in the model's shape, dtype, batch size or ``local_sgd_every``.
        """
        W, _ = stepper.get_params()
        self.agree(model=stepper.model, n_features=stepper.n_features, n_outputs=stepper.n_outputs,
                   dtype=str(W.dtype), batch_size=int(batch_size), local_sgd_every=self.local_sgd_every)
        shard_sizes = self.gather(int(n_rows))
        if min(shard_sizes) == 0:  # raised on every process alike: none is left waiting for the others
            raise DistributedError(f"rank {shard_sizes.index(0)} has no rows to train on")
        epoch_rows = max(shard_sizes)
        # A smaller shard repeats the head of its epoch order up to n_max rows: the same steps on every process.
        self._padding = (None if epoch_rows == n_rows else backend.asarray(np.arange(epoch_rows) % n_rows))
        self._steps_per_epoch = math.ceil(epoch_rows / batch_size)
        self.bytes_exchanged = self.steps = 0
        stepper.reducer = self
        return epoch_rows

    @staticmethod
    def detach(stepper: FusedSGD) -> None:
        """Make ``stepper`` a single-process step again."""
        stepper.reducer = None

    def epoch_order(self, backend: Backend, n_rows: int, rng: np.random.Generator, shuffle: bool, in_order: Any):
        """This process's rows for one epoch as a device integer array of ``n_max`` indices into its shard."""
        if shuffle:
            seed = int(rng.integers(2**63))  # one draw on every process: the shared RNG stays in step
            in_order = backend.permutation(n_rows, np.random.default_rng([seed, self.rank]))
        return in_order if self._padding is None else in_order[self._padding]

    def sum(self, value: float, what: str = "the sum of the epoch's loss") -> float:
        """``value`` summed over the processes (float64); ``what`` names it if the all-reduce fails."""
        tensor = self._torch.tensor([value], dtype=self._torch.float64, device=self._device)
        self._all_reduce(tensor, what)
        return float(tensor.item())

    def mean(self, value: float, what: str = "the mean of the validation score") -> float:
        """``value`` averaged over the processes (float64)."""
        return self.sum(value, what) / self.world_size

    def gather(self, value: Any) -> list:
        """Every process's ``value`` (any picklable object), in rank order."""
        gathered = [None] * self.world_size
        self._collective("gathering the run's settings", self._dist.all_gather_object, gathered, value)
        return gathered

    def agree(self, **values) -> None:
        """Check that every process passes the same ``values``.

        Raises
        ------
        DistributedError
            On every process, naming each differing value and every rank's.
        """
        gathered = self.gather(values)
        differing = [f"{name}: " + ", ".join(f"rank {rank} {ranks_values[name]!r}"
                                             for rank, ranks_values in enumerate(gathered))
                     for name in values if len({repr(ranks_values[name]) for ranks_values in gathered}) > 1]
        if differing:
            raise DistributedError("the processes disagree on the run; " + "; ".join(differing))

    def check_identical(self, params: tuple[np.ndarray, ...]) -> None:
        """Check that every process holds bitwise the same parameters (host arrays): their elementwise maximum and
        minimum over the processes must both equal this process's.

        Raises
        ------
        DistributedError
        """
        local = self._torch.from_numpy(np.concatenate([np.ravel(p) for p in params])).to(self._device)
        highest, lowest = local.clone(), local.clone()
        self._all_reduce(highest, "the parameter check", self._dist.ReduceOp.MAX)
        self._all_reduce(lowest, "the parameter check", self._dist.ReduceOp.MIN)
        if not (self._torch.equal(highest, local) and self._torch.equal(lowest, local)):
            spread = float((highest - lowest).abs().max())
            raise DistributedError(f"rank {self.rank}: the processes ended with different parameters (largest "
                                   f"difference {spread:g})")

    # -- the StepReducer the fused step calls -------------------------------------------------------------------------

    def gradient_divisor(self, batch_size: int) -> int:
        # Every process's batch has batch_size rows at this step (the shards are padded to the same length).
        return batch_size * self.world_size if self.local_sgd_every == 1 else batch_size

    def reduce_gradient_(self, gradient: tuple[Any, ...]) -> None:
        if self.local_sgd_every == 1:
            self._sum_in_place(gradient, f"the gradient all-reduce of step {self.steps + 1}")

    def reduce_parameters_(self, parameters: tuple[Any, ...]) -> None:
        self.steps += 1
        step_in_epoch = (self.steps - 1) % self._steps_per_epoch + 1
        if self.local_sgd_every == 1 or (step_in_epoch % self.local_sgd_every
                                         and step_in_epoch != self._steps_per_epoch):
            return
        for tensor in self._sum_in_place(parameters, f"the parameter averaging of step {self.steps}"):
            tensor.mul_(1.0 / self.world_size)

    # -- collectives --------------------------------------------------------------------------------------------------

    def _sum_in_place(self, arrays: tuple[Any, ...], what: str) -> list:
        """Sum the device ``arrays`` over the processes in place with one all-reduce (several arrays travel
        together through a flat buffer: the latency of a collective, not its bytes, dominates at these sizes);
        return their torch views. Their bytes count in ``bytes_exchanged``."""
        tensors = [as_torch(array) for array in arrays]
        if len(tensors) == 1:
            flat = tensors[0]
        else:
            sizes = [tensor.numel() for tensor in tensors]
            if self._staging is None or self._staging.numel() != sum(sizes) or \
                    self._staging.dtype != tensors[0].dtype or self._staging.device != tensors[0].device:
                self._staging = self._torch.empty(sum(sizes), dtype=tensors[0].dtype, device=tensors[0].device)
            flat = self._staging
            self._torch.cat([tensor.reshape(-1) for tensor in tensors], out=flat)
        self.bytes_exchanged += flat.numel() * flat.element_size()
        self._all_reduce(flat, what)
        if flat is self._staging:
            for tensor, part in zip(tensors, flat.split(sizes)):
                tensor.copy_(part.view(tensor.shape))
        return tensors

    def _all_reduce(self, tensor, what: str, op=None) -> None:
        """All-reduce ``tensor`` in place: a sum unless ``op``."""
        self._collective(what, self._dist.all_reduce, tensor, *(() if op is None else (op,)))

    def _collective(self, what: str, collective, *args) -> None:
        """Run one collective; on failure destroy the process group (it cannot serve another collective, and a group
        left with a failed operation in flight made the interpreter abort at exit: "terminate called without an
        active exception") and raise DistributedError."""
        try:
            collective(*args)
        except RuntimeError as error:  # torch.distributed.DistBackendError and gloo's errors are RuntimeErrors
            self._dist.destroy_process_group()
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {what} failed: a peer process died or did not answer "
                f"within the process group's timeout ({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from error
