"""``linclass-gpu``: train on MNIST-like data, show the backends, report on the kernels.

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
from .estimators import LogisticRegression, SoftmaxRegression
from .training import TrainingDivergedError

PIXEL_SCALE = 1 / 255  # MNIST pixels stay uint8 on the device; the model sees them in [0, 1]


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
    train = commands.add_parser("train", help="train on MNIST or Fashion-MNIST and report test accuracy")
    train.add_argument("--dataset", choices=KINDS, default="mnist")
    train.add_argument("--data-dir", help="directory holding the four IDX files (default: search, see README)")
    train.add_argument("--model", choices=("softmax", "logistic"), default="softmax",
                       help="softmax: 10 classes; logistic: binary, --positive-class against the rest")
    train.add_argument("--positive-class", type=int, default=0, choices=range(10), metavar="{0..9}",
                       help="the class the logistic model separates from the other nine (default 0)")
    train.add_argument("--backend", default="auto", help="auto (default), triton, cupy or numpy")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--seed", type=int, default=0, help="shuffling seed")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    data = load_mnist(args.data_dir, kind=args.dataset)
    estimator_class = SoftmaxRegression if args.model == "softmax" else LogisticRegression
    y_train, y_test = data.train_labels, data.test_labels
    if args.model == "logistic":
        y_train, y_test = y_train == args.positive_class, y_test == args.positive_class
    model = estimator_class(backend=args.backend, epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, random_state=args.seed, input_scale=PIXEL_SCALE,
                            progress=False if args.no_progress else None)
    started = time.perf_counter()
    model.fit(data.train_images, y_train, validation_data=(data.test_images, y_test))
    fit_seconds = time.perf_counter() - started
    task = (f"{args.dataset}, {args.model}" +
            (f" (class {args.positive_class} against the rest)" if args.model == "logistic" else ""))
    print(f"{task} on {model.backend_}: {len(y_train)} training and {len(y_test)} test images")
    print(f"{'epoch':>5}  {'train loss':>10}  {'test acc':>8}  {'seconds':>8}")
    for epoch, (loss, accuracy, seconds) in enumerate(
            zip(model.loss_curve_, model.validation_scores_, model.epoch_seconds_), start=1):
        print(f"{epoch:>5}  {loss:>10.4f}  {accuracy:>8.2%}  {seconds:>8.3f}")
    summary = {
        "dataset": args.dataset, "model": args.model, "backend": model.backend_, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": args.seed,
        "test_accuracy": float(model.validation_scores_[-1]), "train_loss": model.loss_curve_.tolist(),
        "test_accuracy_per_epoch": model.validation_scores_.tolist(),
        "epoch_seconds": model.epoch_seconds_.tolist(), "fit_seconds": fit_seconds,
    }
    if args.model == "logistic":
        summary["positive_class"] = args.positive_class
    print(f"test accuracy {summary['test_accuracy']:.2%} after {args.epochs} epochs in {fit_seconds:.2f} s "
          f"(median epoch {np.median(model.epoch_seconds_):.3f} s)")
    return summary


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
    except (BackendUnavailableError, FileNotFoundError, ValueError, TrainingDivergedError) as error:
        print(f"linclass-gpu {args.command}: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
