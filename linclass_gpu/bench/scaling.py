"""``bench scaling``: data-parallel MNIST training with 1 and more processes on this machine (gloo on 127.0.0.1).

Each process count is one fresh group of processes, started the way ``torchrun`` starts them (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT in the environment of ``python -m linclass_gpu.bench.scaling``) and joined by
:func:`linclass_gpu.distributed.init_from_environment`; a single process trains without a process group (the
baseline). Every process trains softmax regression on its shard of MNIST (uint8 pixels, scale 1/255) with local
batch ``B`` through :func:`linclass_gpu.training.train_sgd` and the backend's fused step, so ``P`` processes take
global batches of ``P·B`` rows. Each process's BLAS threads are capped (default 1), so ``P`` processes use ``P``
cores and the 1-process row is the fair one-core baseline.

Reported per process count: the median epoch time after the first epoch (training, the end-of-epoch loss
all-reduce and parameter read included), the throughput in training rows per second over all processes, the
speedup over 1 process, and the bytes each process hands to all-reduces per step (the gradient ``(D·C + C)·4``;
a ring all-reduce sends about ``2(P − 1)/P`` of that per process).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys

import numpy as np

from .isolated import thread_limits

QUICK = {"rows": 4096, "epochs": 2}
DEFAULT_PROCESS_COUNTS = (1, 2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_scaling_bench(process_counts=DEFAULT_PROCESS_COUNTS, *, backend: str = "numpy", batch_size: int = 128,
                      local_sgd_every: int = 1, epochs: int = 3, rows: int | None = None, threads: int = 1,
                      data_dir=None, timeout: float = 600.0) -> list[dict]:
    """One row per process count, each from a fresh group of processes.

    Parameters
    ----------
    process_counts : sequence of int
    backend : str
        The backend of every process (gloo carries NumPy arrays; NCCL device arrays).
    batch_size : int
        Each process's ``B``.
    local_sgd_every : int
        ``k > 1``: local SGD, the weights averaged every ``k`` steps (see :mod:`linclass_gpu.distributed`).
    epochs : int
        At least 2: the first is a warm-up, the median of the others is reported.
    rows : int, optional
        Train on the first ``rows`` MNIST training images (default all 60000).
    threads : int
        BLAS/OpenMP threads of each process.
    data_dir : str, optional
    timeout : float
        Seconds a group of processes may take; a collective waits as long for a peer.

    Returns
    -------
    list of dict
        ``processes``, ``global_batch``, ``epoch_s``, ``rows_per_s``, ``speedup``, ``allreduce_bytes_per_step``,
        ``steps_per_epoch``, ``final_loss``.
    """
    if epochs < 2:
        raise ValueError(f"epochs must be at least 2 (the first is a warm-up), got {epochs}")
    if not process_counts or min(process_counts) < 1:
        raise ValueError(f"process counts must be positive, got {list(process_counts)}")
    settings = {"backend": backend, "batch_size": batch_size, "local_sgd_every": local_sgd_every, "epochs": epochs,
                "rows": rows, "data_dir": data_dir, "timeout": timeout}
    results = [_run_group(count, settings, threads, timeout) for count in process_counts]
    baseline = next((row["rows_per_s"] for row in results if row["processes"] == 1), None)
    for row in results:
        row["speedup"] = None if baseline is None else row["rows_per_s"] / baseline
    return results


def _run_group(world_size: int, settings: dict, threads: int, timeout: float) -> dict:
    """Start ``world_size`` worker processes as torchrun would and return rank 0's figures."""
    environment = {**os.environ, **thread_limits(threads), "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world_size)}
    command = [sys.executable, "-m", "linclass_gpu.bench.scaling", json.dumps(settings)]
    workers = [subprocess.Popen(command, env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for rank in range(world_size)]
    try:
        outputs = [worker.communicate(timeout=timeout) for worker in workers]
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"the {world_size}-process run took longer than {timeout:g} s") from error
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    for rank, (worker, (_, err)) in enumerate(zip(workers, outputs)):
        if worker.returncode != 0:
            raise RuntimeError(f"rank {rank} of the {world_size}-process run failed: {err.strip()[-2000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def measure(settings: dict) -> dict:
    """This process's part of one run (rank and world size from the environment); its figures as a dict."""
    from ..backends import get_backend
    from ..datasets import load_mnist
    from ..distributed import DataParallel, init_from_environment, shard_rows
    from ..schedules import LearningRateSchedule
    from ..training import train_sgd

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    backend = get_backend(settings["backend"])
    distributed = None
    if world_size > 1:
        init_from_environment(backend, settings["timeout"])
        distributed = DataParallel(settings["local_sgd_every"])
    data = load_mnist(settings["data_dir"])
    images, labels = data.train_images[:settings["rows"]], data.train_labels[:settings["rows"]].astype(np.int64)
    shard = shard_rows(len(labels), distributed.rank if distributed else 0, world_size)
    n_classes, batch_size = 10, settings["batch_size"]
    stepper = backend.fused_sgd("softmax", backend.asarray(images[shard]), backend.asarray(labels[shard]),
                                np.zeros((images.shape[1], n_classes), np.float32), np.zeros(n_classes, np.float32),
                                max_batch_size=batch_size, momentum=0.5, l2=1e-4, x_scale=1 / 255)
    history = train_sgd(stepper, backend, len(shard), epochs=settings["epochs"], batch_size=batch_size,
                        schedule=LearningRateSchedule("exponential", 0.5, 0.6), rng=np.random.default_rng(0),
                        distributed=distributed)
    epoch_seconds = statistics.median(history.epoch_seconds[1:])
    steps_per_epoch = history.steps // settings["epochs"]
    figures = {"processes": world_size, "global_batch": world_size * batch_size, "epoch_s": epoch_seconds,
               "rows_per_s": len(labels) / epoch_seconds, "steps_per_epoch": steps_per_epoch,
               "final_loss": history.loss[-1],
               "allreduce_bytes_per_step": (0 if distributed is None else
                                            distributed.bytes_exchanged / distributed.steps)}
    if distributed is not None:
        import torch.distributed

        torch.distributed.destroy_process_group()
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
