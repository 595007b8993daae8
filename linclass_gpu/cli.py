"""``linclass-gpu``: train on MNIST-like data or files larger than memory, show the backends, report on the kernels.

Every subcommand takes ``--json`` and then prints one JSON object as its last line. Errors a user can fix (a
backend that cannot run, missing data, a bad argument) print one line to stderr and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time

import numpy as np

from . import __version__
from .backends import BackendUnavailableError, backend_statuses, resolve_name
from .datasets import KINDS, load_mnist
from .distributed import DEFAULT_TIMEOUT_SECONDS, DataParallel, DistributedError, init_from_environment, shard_rows
from .estimators import LogisticRegression, SoftmaxRegression
from .streaming import StreamHistory, fit_stream, open_stream
from .training import TrainingDivergedError

PIXEL_SCALE = 1 / 255  # MNIST pixels stay uint8 on the device; the model sees them in [0, 1]
MEBIBYTE = 2**20


# Subcommands defined beside their code: each module's ``register(subparsers, add_json)`` adds its parser and sets
# ``run`` to a function (args) -> dict, the JSON summary. Registering imports nothing heavy; running may.
SUBCOMMAND_MODULES: tuple[str, ...] = ("linclass_gpu.bench.cli", "linclass_gpu.kernel_report")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="linclass-gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    defaults = SoftmaxRegression()
    train = commands.add_parser("train", help="train on MNIST, Fashion-MNIST or memory-mapped files and report test "
                                              "accuracy")
    train.add_argument("--dataset", choices=KINDS, default="mnist")
    train.add_argument("--data-dir", help="directory holding the four IDX files (default: search, see README)")
    train.add_argument("--model", choices=("softmax", "logistic", "ovr"), default="softmax",
                       help="softmax: 10 classes; logistic: binary, --positive-class against the rest; ovr: one "
                            "sigmoid per class (one-vs-rest logistic regression)")
    train.add_argument("--positive-class", type=int, default=0, choices=range(10), metavar="{0..9}",
                       help="the class the logistic model separates from the other nine (default 0)")
    parallel = train.add_argument_group(
        "data-parallel", "under torchrun, e.g. `torchrun --nproc-per-node 2 -m linclass_gpu.cli train --distributed`: "
        "each process trains on its shard of the rows (NCCL between GPUs, gloo on CPUs); rank 0 alone prints")
    parallel.add_argument("--distributed", action="store_true",
                          help="all-reduce the gradient every step: N processes with --batch-size B each train as "
                          "one with N·B")
    parallel.add_argument("--local-sgd-every", type=int, default=1, metavar="K",
                          help="with --distributed: average the weights every K steps instead (local SGD, for slow "
                          "networks; its effect on accuracy is measured in linclass_gpu.distributed)")
    parallel.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                          help="seconds a process waits for its peers before failing (default %(default)g)")
    train.add_argument("--backend", default="auto", help="auto (default), triton, cupy or numpy")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--seed", type=int, default=0, help="shuffling seed")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    files = train.add_argument_group(
        "data larger than memory", "train on memory-mapped .npy or raw IDX files instead, read one chunk at a time "
        "(uint8 features are scaled by 1/255, others used as they are)")
    files.add_argument("--features", help="rows (N, D) or images (N, h, w); with --labels")
    files.add_argument("--labels", help="the N class labels")
    files.add_argument("--test-features", help="test rows, scored after every epoch; with --test-labels")
    files.add_argument("--test-labels")
    files.add_argument("--chunk-mb", type=float, default=64.0, help="memory budget of one chunk in MiB (default 64)")
    files.add_argument("--blocks-per-chunk", type=int, default=1, metavar="K",
                       help="build each chunk from K blocks drawn from all over the file instead of contiguous rows "
                       "(default 1); for a file sorted by class use 64 or more")
    _add_json(train)
    train.set_defaults(run=run_train)

    info = commands.add_parser("info", help="which backends can run here, and why the others cannot")
    _add_json(info)
    info.set_defaults(run=run_info)

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(commands, _add_json)
    return parser


def run_train(args: argparse.Namespace) -> dict:
    """Train one model and print per-epoch figures and a summary; return the summary."""
    estimator_class = SoftmaxRegression if args.model == "softmax" else LogisticRegression  # ovr: over all labels

    def make_model(input_scale: float):
        return estimator_class(backend=args.backend, epochs=args.epochs, batch_size=args.batch_size,
                               learning_rate=args.learning_rate, random_state=args.seed, input_scale=input_scale,
                               progress=False if args.no_progress else None)

    if args.distributed and (args.features or args.labels):
        raise ValueError("--distributed trains on MNIST loaded whole, not on --features/--labels files")
    if args.local_sgd_every != 1 and not args.distributed:
        raise ValueError("--local-sgd-every applies to --distributed runs only")
    train = _train_on_files if args.features or args.labels else _train_on_mnist
    model, history, task, summary = train(args, make_model)
    if summary.get("rank", 0) != 0:
        return None  # in a distributed run rank 0 alone prints
    if args.model == "logistic":
        task += f" (class {args.positive_class} against the rest)"
        summary["positive_class"] = args.positive_class
    print(f"{task} on {model.backend_}: {summary['train_rows']} training and {summary['test_rows']} test rows")
    print(f"{'epoch':>5}  {'train loss':>10}  {'test acc':>8}  {'seconds':>8}")
    for epoch, (loss, seconds) in enumerate(zip(history.loss, history.epoch_seconds)):
        accuracy = f"{history.validation_score[epoch]:>8.2%}" if history.validation_score else f"{'-':>8}"
        print(f"{epoch + 1:>5}  {loss:>10.4f}  {accuracy}  {seconds:>8.3f}")
    summary.update({
        "model": args.model, "backend": model.backend_, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "seed": args.seed,
        "test_accuracy": history.validation_score[-1] if history.validation_score else None,
        "train_loss": history.loss, "test_accuracy_per_epoch": history.validation_score,
        "epoch_seconds": history.epoch_seconds,
    })
    scored = "" if summary["test_accuracy"] is None else f"test accuracy {summary['test_accuracy']:.2%} "
    print(f"{scored}after {args.epochs} epochs in {summary['fit_seconds']:.2f} s "
          f"(median epoch {np.median(history.epoch_seconds):.3f} s)")
    return summary


def _train_on_mnist(args: argparse.Namespace, make_model):
    """Fit on MNIST or Fashion-MNIST loaded whole, scored on its test split after every epoch.

    Returns
    -------
    model, StreamHistory (per-epoch figures), task description, partial summary
    """
    data = load_mnist(args.data_dir, kind=args.dataset)
    y_train, y_test = data.train_labels, data.test_labels
    if args.model == "logistic":
        y_train, y_test = y_train == args.positive_class, y_test == args.positive_class
    model = make_model(PIXEL_SCALE)
    distributed = _join_process_group(args) if args.distributed else None
    shard = (slice(None) if distributed is None else
             shard_rows(len(y_train), distributed.rank, distributed.world_size))
    started = time.perf_counter()
    try:
        model.fit(data.train_images[shard], y_train[shard], validation_data=(data.test_images, y_test),
                  distributed=distributed)
    finally:  # whatever happened (a disagreement, divergence), leave the group: one left alive can abort at exit
        if distributed is not None:
            _leave_process_group()
    fit_seconds = time.perf_counter() - started
    history = StreamHistory(model.loss_curve_.tolist(), model.validation_scores_.tolist(),
                            model.epoch_seconds_.tolist())
    summary = {"dataset": args.dataset, "train_rows": len(y_train), "test_rows": len(y_test),
               "fit_seconds": fit_seconds}
    if distributed is not None:
        summary.update(rank=distributed.rank, processes=distributed.world_size,
                       local_sgd_every=distributed.local_sgd_every,
                       allreduce_bytes_per_step=distributed.bytes_exchanged / max(distributed.steps, 1))
    return model, history, f"{args.dataset}, {args.model}", summary


def _join_process_group(args: argparse.Namespace) -> DataParallel:
    """Join the process group torchrun started (NCCL or gloo, by the backend) and return the data-parallel books."""
    from .backends import get_backend

    init_from_environment(get_backend(args.backend), args.timeout)
    return DataParallel(args.local_sgd_every)


def _leave_process_group() -> None:
    """Destroy the process group, unless a failed collective already did (see :class:`DistributedError`)."""
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train_on_files(args: argparse.Namespace, make_model):
    """Stream memory-mapped files through ``partial_fit`` (:func:`linclass_gpu.streaming.fit_stream`), one chunk of
    at most ``--chunk-mb`` MiB at a time; the test files, when given, are scored the same way after every epoch.

    Returns
    -------
    model, StreamHistory, task description, partial summary
    """
    for features, labels, pair in ((args.features, args.labels, "--features and --labels"),
                                   (args.test_features, args.test_labels, "--test-features and --test-labels")):
        if (features is None) != (labels is None):
            raise ValueError(f"{pair} go together: give both or neither")
    if not args.chunk_mb > 0:
        raise ValueError(f"--chunk-mb must be positive, got {args.chunk_mb}")
    chunk_bytes = int(args.chunk_mb * MEBIBYTE)
    label_map = (lambda labels: labels == args.positive_class) if args.model == "logistic" else None

    def stream(features, labels):
        return open_stream(features, labels, chunk_bytes=chunk_bytes, batch_size=args.batch_size,
                           blocks_per_chunk=args.blocks_per_chunk, label_map=label_map)

    train = stream(args.features, args.labels)
    test = None if args.test_features is None else stream(args.test_features, args.test_labels)
    # A progress bar per partial_fit call would flash by once per chunk; the per-epoch table follows training.
    model = make_model(PIXEL_SCALE if train.features.dtype == np.uint8 else 1.0).set_params(progress=False)
    started = time.perf_counter()
    history = fit_stream(model, train, seed=args.seed, validation=test)
    summary = {"features": args.features, "labels": args.labels, "test_features": args.test_features,
               "test_labels": args.test_labels, "train_rows": train.n_rows, "test_rows": 0 if test is None else
               test.n_rows, "chunk_mb": args.chunk_mb, "chunk_rows": train.chunk_rows,
               "blocks_per_chunk": train.blocks_per_chunk, "chunks_per_epoch": train.n_chunks,
               "fit_seconds": time.perf_counter() - started}
    return model, history, f"{args.features}, {args.model}", summary


def run_info(args: argparse.Namespace) -> dict:
    """Print every backend, whether it can run here and why not; return the same as a dict.

    The table comes first, so a ``$LINCLASS_BACKEND`` naming a backend that cannot run is explained by it.
    """
    rows = [{"name": s.name, "usable": s.usable, "auto": s.auto, "detail": s.detail} for s in backend_statuses()]
    for row in rows:
        state = "auto" if row["auto"] else ("by name" if row["usable"] else "unavailable")
        print(f"{row['name']:<7} {state:<12} {row['detail']}")
    chosen, _ = resolve_name("auto")
    print(f"auto -> {chosen}")
    return {"version": __version__, "auto": chosen, "backends": rows}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linclass-gpu`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        result = args.run(args)
    except (BackendUnavailableError, FileNotFoundError, ValueError, TrainingDivergedError, DistributedError) as error:
        print(f"linclass-gpu {args.command}: error: {error}", file=sys.stderr)
        return 2
    if args.json and result is not None:  # None: a process that does not print (not rank 0)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
