"""Data-parallel training over torch.distributed (gloo on 127.0.0.1, 2 processes): exactness against one process
with the doubled batch, identical weights on every rank, local SGD, uneven shards, disagreement and a dead peer.

Every multi-process test has a deadline: processes still running at it are killed and the test fails, so CI never
hangs. Several configurations share one group of processes, since starting a process (importing torch) costs seconds.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from tolerances import assert_close

from linclass_gpu.backends import available_backends, get_backend
from linclass_gpu.schedules import LearningRateSchedule
from linclass_gpu.training import train_sgd

pytestmark = pytest.mark.slow  # starts several processes per test (gloo over loopback)

torch_distributed = pytest.importorskip("torch.distributed")

WORLD_SIZE = 2
# Seconds a collective waits for a peer in these tests (short in the failure tests, which wait it out), and the
# deadline of a whole group of processes.
COLLECTIVE_TIMEOUT_SECONDS = 20
FAILURE_TIMEOUT_SECONDS = 3
PROCESS_DEADLINE_SECONDS = 120
LOCAL_BATCH = 8
# Small, odd shapes: D and C not powers of two; 96 rows = 6 global batches of 16, so the shards line up exactly.
N_ROWS, N_FEATURES, N_CLASSES = 96, 13, 5
EPOCHS = 3

# name -> (backend, backend options, model, dtype, fused_sgd options, local_sgd_every, rows)
CONFIGURATIONS = {
    "numpy-float32-momentum": ("numpy", {}, "softmax", "float32", {"momentum": 0.5, "l2": 1e-3}, 1, N_ROWS),
    "numpy-float64-adam-weights": ("numpy", {}, "softmax", "float64", {"optimizer": "adam", "sample_weight": True},
                                   1, N_ROWS),
    "numpy-sigmoid-l1": ("numpy", {}, "sigmoid", "float32", {"l1": 1e-3}, 1, N_ROWS),
    "triton-deterministic": ("triton", {"deterministic": True}, "softmax", "float32", {"momentum": 0.5}, 1, N_ROWS),
    "triton-atomics": ("triton", {}, "sigmoid", "float32", {}, 1, N_ROWS),
    "numpy-local-sgd-4": ("numpy", {}, "softmax", "float32", {"momentum": 0.5}, 4, N_ROWS),
    "numpy-uneven-shards": ("numpy", {}, "softmax", "float32", {}, 1, N_ROWS + 1),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_data(model: str, dtype: str, n_rows: int):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n_rows, N_FEATURES)).astype(dtype)
    y = rng.integers(0, N_CLASSES if model == "softmax" else 2, size=n_rows)
    weights = rng.uniform(0.5, 2.0, size=n_rows).astype(dtype)
    return X, y, weights


def train(name: str, rows: np.ndarray, batch_size: int, distributed=None) -> tuple[np.ndarray, ...]:
    """Train configuration ``name`` on ``rows`` of its data (in order, no shuffle); return W, b and the loss curve."""
    backend_name, options, model, dtype, sgd_options, _, n_rows = CONFIGURATIONS[name]
    backend = get_backend(backend_name, **options)
    X, y, weights = make_data(model, dtype, n_rows)
    sgd_options = dict(sgd_options)
    if sgd_options.pop("sample_weight", False):
        sgd_options["sample_weight"] = backend.asarray(weights[rows])
    n_outputs = N_CLASSES if model == "softmax" else 1
    stepper = backend.fused_sgd(model, backend.asarray(X[rows]), backend.asarray(y[rows]),
                                np.zeros((N_FEATURES, n_outputs), dtype), np.zeros(n_outputs, dtype),
                                max_batch_size=batch_size, **sgd_options)
    history = train_sgd(stepper, backend, len(rows), epochs=EPOCHS, batch_size=batch_size,
                        schedule=LearningRateSchedule("exponential", 0.3, 0.8), rng=np.random.default_rng(0),
                        shuffle=False, distributed=distributed)
    W, b = stepper.get_params()
    return W, b, np.asarray(history.loss)


def _join(rank: int, port: int, timeout_seconds: float = COLLECTIVE_TIMEOUT_SECONDS) -> None:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    torch_distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=WORLD_SIZE, timeout=timedelta(seconds=timeout_seconds))


def _train_every_configuration(rank: int, port: int, out_dir: str, names: list[str]) -> None:
    """Process ``rank``: train each configuration on its shard; then provoke a disagreement (other batch sizes)."""
    from linclass_gpu.distributed import DataParallel, DistributedError, shard_rows

    _join(rank, port)
    for name in names:
        *_, local_sgd_every, n_rows = CONFIGURATIONS[name]
        W, b, loss = train(name, shard_rows(n_rows, rank, WORLD_SIZE), LOCAL_BATCH, DataParallel(local_sgd_every))
        np.savez(Path(out_dir) / f"{name}-rank{rank}.npz", W=W, b=b, loss=loss)
    _fit_with_a_checkpoint(rank, out_dir)
    _fit_shards_smaller_than_a_batch(rank, out_dir)
    try:
        train(names[0], shard_rows(N_ROWS, rank, WORLD_SIZE), LOCAL_BATCH + rank, DataParallel())
    except DistributedError as error:
        (Path(out_dir) / f"disagreement-rank{rank}.txt").write_text(str(error))
    torch_distributed.destroy_process_group()


def _fit_shards_smaller_than_a_batch(rank: int, out_dir: str) -> None:
    """Process ``rank``: the estimator on 9 rows (shards of 5 and 4, both under the batch of 8, the smaller padded
    to 5 rows each epoch), for its weights."""
    from linclass_gpu import LogisticRegression
    from linclass_gpu.distributed import DataParallel, shard_rows

    X, _, _ = make_data("sigmoid", "float32", 9)
    y = np.arange(9) // 2 % 2  # both classes in both strided shards
    shard = shard_rows(9, rank, WORLD_SIZE)
    model = LogisticRegression(backend="numpy", epochs=2, batch_size=LOCAL_BATCH, random_state=0)
    model.fit(X[shard], y[shard], distributed=DataParallel())
    np.savez(Path(out_dir) / f"small-shards-rank{rank}.npz", W=model.coef_, b=model.intercept_)


def _fit_with_a_checkpoint(rank: int, out_dir: str) -> None:
    """Process ``rank``: the estimator, shuffled, 3 epochs whole and as 2 epochs then a resumed third (one checkpoint
    file shared by both processes, written by rank 0)."""
    from linclass_gpu import SoftmaxRegression
    from linclass_gpu.distributed import DataParallel, shard_rows

    X, y, _ = make_data("softmax", "float32", N_ROWS)
    shard = shard_rows(N_ROWS, rank, WORLD_SIZE)

    def fit(epochs: int, checkpoint=None):
        return SoftmaxRegression(backend="numpy", epochs=epochs, batch_size=LOCAL_BATCH, random_state=0).fit(
            X[shard], y[shard], checkpoint=checkpoint, distributed=DataParallel())

    whole = fit(EPOCHS)
    checkpoint = Path(out_dir) / "checkpoint.npz"
    fit(EPOCHS - 1, checkpoint)
    resumed = fit(EPOCHS, checkpoint)
    np.savez(Path(out_dir) / f"checkpoint-rank{rank}.npz", whole=whole.coef_, resumed=resumed.coef_,
             loss_whole=whole.loss_curve_, loss_resumed=resumed.loss_curve_)


def run_processes(target, *args) -> list[int]:
    """Run ``target(rank, port, *args)`` in WORLD_SIZE fresh processes; their exit codes (killed at the deadline)."""
    context = multiprocessing.get_context("spawn")
    port = free_port()
    processes = [context.Process(target=target, args=(rank, port, *args)) for rank in range(WORLD_SIZE)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode for process in processes]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every configuration trained by 2 gloo processes, as {name: [rank 0's (W, b, loss), rank 1's]}, and the
    disagreement messages."""
    names = [name for name, configuration in CONFIGURATIONS.items() if configuration[0] in available_backends()]
    out_dir = tmp_path_factory.mktemp("distributed")
    assert run_processes(_train_every_configuration, str(out_dir), names) == [0] * WORLD_SIZE
    results = {}
    for name in names:
        ranks = [np.load(out_dir / f"{name}-rank{rank}.npz") for rank in range(WORLD_SIZE)]
        results[name] = [(r["W"], r["b"], r["loss"]) for r in ranks]
    messages = [(out_dir / f"disagreement-rank{rank}.txt").read_text() for rank in range(WORLD_SIZE)]
    results["checkpoint"] = [np.load(out_dir / f"checkpoint-rank{rank}.npz") for rank in range(WORLD_SIZE)]
    results["small-shards"] = [np.load(out_dir / f"small-shards-rank{rank}.npz") for rank in range(WORLD_SIZE)]
    return results, messages


@pytest.mark.parametrize("name", [name for name, configuration in CONFIGURATIONS.items()
                                  if configuration[5] == 1 and configuration[6] == N_ROWS])
def test_two_processes_train_like_one_with_the_doubled_batch(trained, name):
    results, _ = trained
    if name not in results:
        pytest.skip(f"{CONFIGURATIONS[name][0]} cannot run here")
    (W0, b0, loss0), (W1, b1, loss1) = results[name]
    assert np.array_equal(W0, W1) and np.array_equal(b0, b1), "the ranks ended with different weights"
    np.testing.assert_array_equal(loss0, loss1)
    W, b, loss = train(name, np.arange(N_ROWS), WORLD_SIZE * LOCAL_BATCH)
    dtype = CONFIGURATIONS[name][3]
    # Each step's gradient is a sum over the global batch, split differently between the two sums: rounding only.
    assert_close(W0, W, dtype, EPOCHS * N_ROWS, f"{name}: W")
    assert_close(b0, b, dtype, EPOCHS * N_ROWS, f"{name}: b")
    assert_close(loss0, loss, dtype, N_ROWS, f"{name}: loss")


def test_local_sgd_ends_with_identical_weights_that_differ_from_exact_data_parallelism(trained):
    results, _ = trained
    (W0, b0, loss0), (W1, b1, _) = results["numpy-local-sgd-4"]
    assert np.array_equal(W0, W1) and np.array_equal(b0, b1)
    exact_W, *_ = train("numpy-local-sgd-4", np.arange(N_ROWS), WORLD_SIZE * LOCAL_BATCH)
    assert np.abs(W0 - exact_W).max() > 1e-3  # the averaged model is a different one
    assert np.isfinite(loss0).all() and loss0[-1] < loss0[0]


def test_uneven_shards_take_the_same_steps_and_end_identical(trained):
    results, _ = trained
    (W0, b0, loss0), (W1, b1, _) = results["numpy-uneven-shards"]
    assert np.array_equal(W0, W1) and np.array_equal(b0, b1)
    assert np.isfinite(loss0).all() and loss0[-1] < loss0[0]
    # Shards smaller than a batch, of different sizes: every process's buffers take the padded shard's batch.
    first, second = results["small-shards"]
    assert np.isfinite(first["W"]).all() and np.array_equal(first["W"], second["W"])
    assert np.array_equal(first["b"], second["b"])


def test_a_distributed_fit_resumes_from_rank_0s_checkpoint_bitwise_on_every_rank(trained):
    results, _ = trained
    for rank in results["checkpoint"]:
        np.testing.assert_array_equal(rank["resumed"], rank["whole"])
        np.testing.assert_array_equal(rank["loss_resumed"], rank["loss_whole"])
    np.testing.assert_array_equal(results["checkpoint"][0]["whole"], results["checkpoint"][1]["whole"])


def test_processes_that_disagree_fail_on_every_rank_with_what_differs(trained):
    _, messages = trained
    for message in messages:
        assert "disagree" in message and "batch_size" in message and "rank 0 8" in message and "rank 1 9" in message


def test_local_sgd_every_must_be_a_positive_integer():
    from linclass_gpu.distributed import DataParallel

    with pytest.raises(ValueError, match="local_sgd_every"):
        DataParallel(0)


def test_data_parallel_needs_a_process_group():
    from linclass_gpu.distributed import DataParallel

    if torch_distributed.is_initialized():
        pytest.skip("a process group is already initialised here")
    with pytest.raises(ValueError, match="process group"):
        DataParallel()


def _leave_mid_training(rank: int, port: int, out_dir: str, how: str) -> None:
    """Process ``rank``: train; rank 1 leaves at the end of its second epoch (``how``: it exits, or it hangs); rank 0
    must fail with DistributedError, whose message and time it writes before exiting with status 2."""
    from linclass_gpu.distributed import DataParallel, DistributedError

    _join(rank, port, FAILURE_TIMEOUT_SECONDS)
    backend = get_backend("numpy")
    X, y, _ = make_data("softmax", "float32", N_ROWS)
    stepper = backend.fused_sgd("softmax", X, y, np.zeros((N_FEATURES, N_CLASSES), np.float32),
                                np.zeros(N_CLASSES, np.float32), max_batch_size=LOCAL_BATCH)
    epochs_done = []

    def score(W, b):
        epochs_done.append(1)
        if rank == 1 and len(epochs_done) == 2:
            (Path(out_dir) / f"{how}-left").write_text(repr(time.time()))
            if how == "exits":
                os._exit(3)
            time.sleep(PROCESS_DEADLINE_SECONDS)
        return 0.0

    try:
        train_sgd(stepper, backend, N_ROWS, epochs=10**6, batch_size=LOCAL_BATCH,
                  schedule=LearningRateSchedule("constant", 0.1), rng=np.random.default_rng(0),
                  score_validation=score, distributed=DataParallel())
    except DistributedError as error:
        (Path(out_dir) / f"{how}-failed").write_text(f"{time.time()!r}\n{error}")
        sys.exit(2)


def _run_without_peer(out_dir: str) -> subprocess.Popen:
    """`linclass-gpu train --distributed` as rank 0 of 2 whose rank 1 never starts."""
    environment = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
                   "LOCAL_RANK": "0", "WORLD_SIZE": str(WORLD_SIZE), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "linclass_gpu.cli", "train", "--backend", "numpy",
                             "--distributed", "--no-progress", "--timeout", str(FAILURE_TIMEOUT_SECONDS)],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def failures(tmp_path_factory):
    """Run the three failures at once (starting processes dominates): a peer that exits mid-training, one that
    hangs, one that never comes (through the CLI). Returns ({how: (exit codes, seconds from leaving to the
    survivor's error, its message)}, (CLI status, stderr, seconds))."""
    out_dir = tmp_path_factory.mktemp("failures")
    context = multiprocessing.get_context("spawn")
    groups = {}
    for how in ("exits", "hangs"):
        port = free_port()
        groups[how] = [context.Process(target=_leave_mid_training, args=(rank, port, str(out_dir), how))
                       for rank in range(WORLD_SIZE)]
    started = time.monotonic()
    lone = _run_without_peer(str(out_dir))
    for processes in groups.values():
        for process in processes:
            process.start()
    try:
        _, lone_err = lone.communicate(timeout=PROCESS_DEADLINE_SECONDS)
        lone_seconds = time.monotonic() - started
        for processes in groups.values():
            processes[0].join(max(0.0, PROCESS_DEADLINE_SECONDS - (time.monotonic() - started)))
    finally:
        lone.kill()
        lone.wait()
        for processes in groups.values():
            for process in processes:
                process.kill()
                process.join()
    outcomes = {}
    for how, processes in groups.items():
        left = float((out_dir / f"{how}-left").read_text())
        failed, message = (out_dir / f"{how}-failed").read_text().split("\n", 1)
        outcomes[how] = ([process.exitcode for process in processes], float(failed) - left, message)
    return outcomes, (lone.returncode, lone_err, lone_seconds)


# Generous margins over what a quiet machine shows (0.05-0.08 s after an exit, the timeout after a hang): CI shares 2
# cores with other tests' processes.
@pytest.mark.parametrize(("how", "within_seconds"), [("exits", 15), ("hangs", FAILURE_TIMEOUT_SECONDS + 15)])
def test_a_peer_that_leaves_mid_training_makes_the_survivor_fail_clearly_within_the_timeout(failures, how,
                                                                                            within_seconds):
    """gloo sees the socket of a process that exits close at once; a hung one is caught by the timeout."""
    exit_codes, seconds, message = failures[0][how]
    assert exit_codes[0] == 2 and seconds < within_seconds, (exit_codes, seconds, message)
    assert message.startswith("rank 0 of 2: ") and "a peer process died or did not answer" in message
    print(f"{how}: the survivor failed {seconds:.2f} s after its peer left: {message}")


def test_a_peer_that_never_comes_makes_the_cli_fail_clearly_within_the_timeout(failures):
    _, (status, err, seconds) = failures
    assert status == 2 and "Traceback" not in err, err
    assert "error: rank 0 could not join the 2 processes" in err and seconds < PROCESS_DEADLINE_SECONDS


def test_bench_scaling_row_reports_1_and_2_processes_and_the_gradient_bytes(capsys):
    from linclass_gpu import cli

    status = cli.main(["bench", "scaling", "--quick", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    results = json.loads(out.strip().splitlines()[-1])["results"]
    assert [row["processes"] for row in results] == [1, 2]
    assert [row["global_batch"] for row in results] == [128, 256]
    mnist_gradient_bytes = (784 * 10 + 10) * 4  # dW (D, C) and db (C,) in float32, one all-reduce per step
    assert [row["allreduce_bytes_per_step"] for row in results] == [0, mnist_gradient_bytes]
    assert all(row["rows_per_s"] > 0 and np.isfinite(row["final_loss"]) for row in results)
    assert results[0]["speedup"] == 1.0 and results[1]["speedup"] > 0
    assert "all-reduce B/step" in out
