"""``linclass-gpu``: train on MNIST-like data or files larger than memory, show the backends, report on the kernels.

Every subcommand takes ``--json`` and then prints one JSON object as its last line. Errors a user can fix (a
backend that cannot run, missing data, a bad argument, a missing optional package) print one line to stderr, naming
the flag at fault, and exit 2, without a traceback. Ctrl-C prints one line and exits 130; ``train`` first reports the
epochs that finished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import __version__, kernel_report, selfcheck
from .backends import BackendUnavailableError, backend_statuses, probe, resolve_name
from .backends.registry import AUTO_ORDER, ENV_VARIABLE, not_installed
from .bench import cli as bench_cli
from .datasets import KINDS, load_mnist
from .distributed import DEFAULT_TIMEOUT_SECONDS, DataParallel, DistributedError, init_from_environment, shard_rows
from .estimators import AUTO_BATCH_ROWS, LogisticRegression, SoftmaxRegression
from .streaming import fit_stream, open_stream
from .threads import THREADS_ENVIRONMENT_VARIABLE
from .training import ConvergenceWarning, TrainingDivergedError

PIXEL_SCALE = 1 / 255  # MNIST pixels stay uint8 on the device; the model sees them in [0, 1]
MEBIBYTE = 2**20
# The shell's status for a run stopped by Ctrl-C (128 + SIGINT), which scripts test for.
EXIT_INTERRUPTED = 130
# The estimator parameters `train` sets, each with its flag: the one table that builds the estimator from the
# arguments and names the flag, not the Python parameter, in the estimator's error messages.
PARAMETER_FLAGS = {
    "backend": "--backend", "epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--learning-rate",
    "tol": "--tol", "random_state": "--seed", "n_threads": "--threads", "deterministic": "--deterministic",
}
# Optional packages a subcommand cannot start without, checked before it runs so that it fails with one line.
SUBCOMMAND_PACKAGES = {"kernels": ("torch", "triton")}


# Subcommands defined beside their code: each module's ``register(subparsers, add_json)`` adds its parser and sets
# ``run`` to a function (args) -> dict, the JSON summary. Registering imports nothing heavy; running may.
SUBCOMMAND_MODULES = (bench_cli, kernel_report, selfcheck)


def _batch_size(text: str) -> int | str:
    """``--batch-size``: "auto" or a positive integer (checked by the estimator, which names the flag)."""
    return text if text == "auto" else int(text)


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
    train.add_argument("--dataset", choices=KINDS, default="mnist", help="the data set (default: %(default)s)")
    train.add_argument("--data-dir", help="directory holding the four IDX files (default: search, see README)")
    train.add_argument("--model", choices=("softmax", "logistic", "ovr"), default="softmax",
                       help="softmax: 10 classes; logistic: binary, --positive-class against the rest; ovr: one "
                            "sigmoid per class (one-vs-rest logistic regression) (default: %(default)s)")
    train.add_argument("--positive-class", type=int, default=0, choices=range(10), metavar="{0..9}",
                       help="the class the logistic model separates from the other nine (default: %(default)s)")
    parallel = train.add_argument_group(
        "data-parallel", "under torchrun, e.g. `torchrun --nproc-per-node 2 -m linclass_gpu.cli train --distributed`: "
        "each process trains on its shard of the rows (NCCL between GPUs, gloo on CPUs); rank 0 alone prints")
    parallel.add_argument("--distributed", action="store_true",
                          help="all-reduce the gradient every step: N processes with --batch-size B each train as "
                          "one with N·B")
    parallel.add_argument("--local-sgd-every", type=int, default=1, metavar="K",
                          help="with --distributed: average the weights every K steps instead (local SGD, for slow "
                          "networks; its effect on accuracy is measured in linclass_gpu.distributed) (default: "
                          "%(default)s)")
    parallel.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                          help="seconds a process waits for its peers before failing (default: %(default)g)")
    train.add_argument("--backend", default=defaults.backend,
                       help=f"auto, triton, cupy or numpy (default: %(default)s, or ${ENV_VARIABLE} when set)")
    train.add_argument("--epochs", type=int, default=defaults.epochs,
                       help="the most passes over the data: training stops sooner once the training loss improves "
                       f"by less than --tol for {defaults.n_iter_no_change} epochs in a row (default: %(default)s)")
    train.add_argument("--tol", type=float, default=defaults.tol,
                       help="the improvement of the training loss that counts (default: %(default)g)")
    train.add_argument("--batch-size", type=_batch_size, default=defaults.batch_size,
                       help="rows per SGD step, or auto: 128, fewer on data under 2048 rows so that an epoch still "
                       "takes 16 steps (default: %(default)s)")
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help="SGD step size (default: %(default)g)")
    train.add_argument("--seed", type=int, default=0, help="shuffling seed (default: %(default)s)")
    train.add_argument("--threads", type=int, default=defaults.n_threads, metavar="N",
                       help="BLAS threads of the numpy backend (default: chosen from the work per step, so small "
                       f"problems run on one; ${THREADS_ENVIRONMENT_VARIABLE} overrides)")
    train.add_argument("--deterministic", action="store_true", default=defaults.deterministic,
                       help="triton: fixed-order reductions instead of atomics, so a run repeats bitwise (slower); "
                       "the numpy and cupy backends always repeat (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar within each epoch (default: a bar when stderr is a terminal and tqdm "
                       "is installed)")
    files = train.add_argument_group(
        "data larger than memory", "train on memory-mapped .npy or raw IDX files instead, read one chunk at a time "
        "(uint8 features are scaled by 1/255, others used as they are)")
    files.add_argument("--features", help="rows (N, D) or images (N, h, w); with --labels. A .npz written by "
                       "scipy.sparse.save_npz (documents, hashed features) is loaded whole as sparse rows")
    files.add_argument("--labels", help="the N class labels (.npy with a .npz --features)")
    files.add_argument("--test-features", help="test rows, scored after every epoch; with --test-labels")
    files.add_argument("--test-labels", help="the test rows' class labels")
    files.add_argument("--chunk-mb", type=float, default=64.0,
                       help="memory budget of one chunk in MiB (default: %(default)g)")
    files.add_argument("--blocks-per-chunk", type=int, default=1, metavar="K",
                       help="build each chunk from K blocks drawn from all over the file instead of contiguous rows "
                       "(default: %(default)s); for a file sorted by class use 64 or more")
    _add_json(train)
    train.set_defaults(run=run_train)

    info = commands.add_parser("info", help="which backends can run here, and why the others cannot")
    _add_json(info)
    info.set_defaults(run=run_info)

    for module in SUBCOMMAND_MODULES:
        module.register(commands, _add_json)
    return parser


def estimator_params(args: argparse.Namespace) -> dict:
    """The estimator parameters the ``train`` arguments set (by :data:`PARAMETER_FLAGS`)."""
    return {parameter: getattr(args, _dest(flag)) for parameter, flag in PARAMETER_FLAGS.items()}


def _dest(flag: str) -> str:
    """The attribute argparse stores ``flag`` under: ``--batch-size`` -> ``batch_size``."""
    return flag.lstrip("-").replace("-", "_")


def name_flags(message: str) -> str:
    """``message`` with the estimator's parameter names replaced by their flags (``learning_rate must be > 0`` ->
    ``--learning-rate must be > 0``). A name with an underscore is an identifier wherever it stands; a plain word
    (``epochs``, ``tol``) only where it is used as one, before ``=`` or ``must``."""
    for parameter, flag in PARAMETER_FLAGS.items():
        used_as_name = r"\b" if "_" in parameter else r"(?=\s+must\b|=)"
        message = re.sub(rf"(?<![\w$-]){parameter}{used_as_name}", flag, message)
    return message


def run_train(args: argparse.Namespace) -> dict | None:
    """Train one model, printing each epoch's figures as it ends and a summary; return the summary.

    Ctrl-C stops training: the finished epochs' lines stay, the summary covers them (``"interrupted": true``), and
    :func:`main` exits with :data:`EXIT_INTERRUPTED`.
    """
    estimator_class = SoftmaxRegression if args.model == "softmax" else LogisticRegression  # ovr: over all labels

    def make_model(input_scale: float):
        return estimator_class(**estimator_params(args), input_scale=input_scale,
                               progress=False if args.no_progress else None)

    if args.distributed and (args.features or args.labels):
        raise ValueError("--distributed trains on MNIST loaded whole, not on --features/--labels files")
    if args.local_sgd_every != 1 and not args.distributed:
        raise ValueError("--local-sgd-every applies to --distributed runs only")
    if args.features is not None and args.features.endswith(".npz"):
        prepare = _prepare_sparse_files
    else:
        prepare = _prepare_files if args.features or args.labels else _prepare_mnist
    model, fit, task, summary = prepare(args, make_model)
    if args.model == "logistic":
        task += f" (class {args.positive_class} against the rest)"
        summary["positive_class"] = args.positive_class
    table = EpochTable(model, args.backend)
    if summary.get("rank", 0) == 0:  # in a distributed run rank 0 alone prints
        table.print_header(task, summary)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, interrupts_noted() as table.interrupt:
        warnings.simplefilter("always", ConvergenceWarning)  # recorded whatever filters the process set
        try:
            fit(table.add)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
    summary["fit_seconds"] = time.perf_counter() - started
    if summary.get("rank", 0) != 0:
        return None
    unconverged = _show_warnings(caught, args)
    history = table.history
    epochs_run = 0 if history is None else len(history.loss)
    if interrupted:
        print(f"linclass-gpu train: interrupted in epoch {epochs_run + 1} (epochs finished: {epochs_run})",
              file=sys.stderr, flush=True)
    losses = [] if history is None else history.loss
    scores = [] if history is None else history.validation_score
    seconds = [] if history is None else history.epoch_seconds
    # The settings as the estimator holds them, under their flags' names (proof that each flag reached it).
    summary.update({_dest(PARAMETER_FLAGS[parameter]): value for parameter, value in model.get_params().items()
                    if parameter in PARAMETER_FLAGS})
    converged = None if interrupted or args.features else not unconverged  # None: no stopping rule ran to its end
    summary.update({
        "model": args.model, "backend": getattr(model, "backend_", table.backend), "epochs_run": epochs_run,
        "interrupted": interrupted, "converged": converged,
        "test_accuracy": scores[-1] if scores else None,
        "train_loss": losses, "test_accuracy_per_epoch": scores, "epoch_seconds": seconds,
    })
    scored = "" if summary["test_accuracy"] is None else f"test accuracy {summary['test_accuracy']:.2%} "
    median = f" (median epoch {np.median(seconds):.3f} s)" if seconds else ""
    settled = " (the loss settled within --tol)" if converged else ""
    epochs = f"{epochs_run} epoch{'' if epochs_run == 1 else 's'}"
    print(f"{'interrupted: ' if interrupted else ''}{scored}after {epochs}{settled} in {summary['fit_seconds']:.2f} s"
          f"{median}", flush=True)
    return summary


class EpochTable:
    """The table ``train`` prints: a header (what trains where, and why better backends were skipped) before training
    starts, then one line per epoch, printed and flushed as the epoch ends (:meth:`add` is the fit's epoch callback).

    Attributes
    ----------
    backend : str
        The backend the header names: the one ``--backend`` resolves to (an explicit one that cannot run raises
        :class:`BackendUnavailableError` here, before training).
    history : TrainingHistory or StreamHistory or None
        The fit's record as of the last finished epoch (None before the first).
    interrupt : threading.Event or None
        Set by Ctrl-C (:func:`interrupts_noted`): :meth:`add` then ends the fit after printing its epoch's line.
    """

    def __init__(self, model, requested_backend: str):
        self.model, self.requested_backend = model, requested_backend
        self.backend = resolve_name(requested_backend)[0]
        self.history = None
        self.interrupt = None

    def print_header(self, task: str, summary: dict) -> None:
        _print_now(f"{task} on {self.backend}: {summary['train_rows']} training and {summary['test_rows']} test rows")
        note = skipped_note(self.requested_backend)
        if note:
            _print_now(note)
        _print_now(f"{'epoch':>5}  {'train loss':>10}  {'test acc':>8}  {'seconds':>8}")

    def add(self, epoch: int, history) -> None:
        """Print epoch ``epoch``'s line (its figures are the last entries of ``history``)."""
        if self.history is None and self.model.backend_ != self.backend:  # auto moved on after the header
            _print_now(f"{self.backend} failed while starting up; training on {self.model.backend_}")
        self.history = history
        accuracy = f"{history.validation_score[-1]:>8.2%}" if history.validation_score else f"{'-':>8}"
        _print_now(f"{epoch + 1:>5}  {history.loss[-1]:>10.4f}  {accuracy}  {history.epoch_seconds[-1]:>8.3f}")
        if self.interrupt is not None and self.interrupt.is_set():
            raise KeyboardInterrupt  # a Ctrl-C whose own exception Python dropped (see interrupts_noted)


@contextlib.contextmanager
def interrupts_noted():
    """Within the block, Ctrl-C (SIGINT) raises KeyboardInterrupt as Python's own handler does and is also noted in
    the yielded event. Python drops an exception raised inside a finalizer or a callback from C code (it prints
    "Exception ignored"), so a Ctrl-C landing there would go unseen; the event lets the epoch callback end the fit
    at the latest when the epoch ends. The handler replaces Python's default one only, from the main thread only, and
    the previous one is restored after; a process started with SIGINT ignored (a shell's background job) keeps
    ignoring it, as Python itself does."""
    noted = threading.Event()

    def handler(signum, frame):
        noted.set()
        raise KeyboardInterrupt

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield noted
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def skipped_note(requested: str) -> str:
    """One line saying why ``auto`` passed over the backends ahead of its choice (``skipped triton: no CUDA driver,
    cupy: no CUDA driver``), or empty when it passed over none or the backend was asked for by name."""
    chosen, skipped = resolve_name(requested)  # skipped is empty unless auto walked past a backend
    if not skipped:
        return ""
    return "skipped " + ", ".join(f"{name}: {probe(name).reason}" for name in AUTO_ORDER[:AUTO_ORDER.index(chosen)])


def _print_now(line: str) -> None:
    """Print ``line`` to stdout at once, above the progress bar when one is on screen (tqdm clears and redraws it)."""
    tqdm = sys.modules.get("tqdm")  # a bar can be on screen only once the training loop has imported tqdm
    if tqdm is None:
        print(line, flush=True)
    else:
        tqdm.tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()


def _show_warnings(caught: list[warnings.WarningMessage], args: argparse.Namespace) -> bool:
    """Show the warnings a fit raised: a :class:`ConvergenceWarning` as one line in the flags' terms, the others as
    Python shows them. Returns whether a ConvergenceWarning was among them."""
    unconverged = False
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            unconverged = True
            print(f"linclass-gpu train: not converged in --epochs {args.epochs} (the training loss still improves "
                  f"by more than --tol {args.tol:g})", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return unconverged


def _prepare_mnist(args: argparse.Namespace, make_model):
    """Load MNIST or Fashion-MNIST whole, to be scored on its test split after every epoch.

    Returns
    -------
    model, fit (callable (epoch_callback) -> None), task description, partial summary
    """
    data = load_mnist(args.data_dir, kind=args.dataset)
    y_train, y_test = data.train_labels, data.test_labels
    if args.model == "logistic":
        y_train, y_test = y_train == args.positive_class, y_test == args.positive_class
    model = make_model(PIXEL_SCALE)
    distributed = _join_process_group(args) if args.distributed else None
    shard = (slice(None) if distributed is None else
             shard_rows(len(y_train), distributed.rank, distributed.world_size))
    summary = {"dataset": args.dataset, "train_rows": len(y_train), "test_rows": len(y_test)}
    if distributed is not None:
        summary.update(rank=distributed.rank, processes=distributed.world_size,
                       local_sgd_every=distributed.local_sgd_every)

    def fit(epoch_callback) -> None:
        try:
            model.fit(data.train_images[shard], y_train[shard], validation_data=(data.test_images, y_test),
                      distributed=distributed, epoch_callback=epoch_callback)
        finally:  # whatever happened (a disagreement, divergence), leave the group: one left alive can abort at exit
            if distributed is not None:
                _leave_process_group()
                summary["allreduce_bytes_per_step"] = distributed.bytes_exchanged / max(distributed.steps, 1)

    return model, fit, f"{args.dataset}, {args.model}", summary
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


def _prepare_files(args: argparse.Namespace, make_model):
    """Open memory-mapped files to stream through ``partial_fit`` (:func:`linclass_gpu.streaming.fit_stream`), one
    chunk of at most ``--chunk-mb`` MiB at a time; the test files, when given, are scored the same way after every
    epoch.

    Returns
    -------
    model, fit (callable (epoch_callback) -> None), task description, partial summary
    """
    for features, labels, pair in ((args.features, args.labels, "--features and --labels"),
                                   (args.test_features, args.test_labels, "--test-features and --test-labels")):
        if (features is None) != (labels is None):
            raise ValueError(f"{pair} go together: give both or neither")
    if not 0 < args.chunk_mb < math.inf:
        raise ValueError(f"--chunk-mb must be a positive finite number of MiB, got {args.chunk_mb}")
    chunk_bytes = int(args.chunk_mb * MEBIBYTE)
    # Chunks are laid out in whole batches, so "auto" takes its size for large data here, where N is known only as
    # chunks arrive.
    batch_rows = AUTO_BATCH_ROWS if args.batch_size == "auto" else args.batch_size
    label_map = (lambda labels: labels == args.positive_class) if args.model == "logistic" else None

    def stream(features, labels):
        return open_stream(features, labels, chunk_bytes=chunk_bytes, batch_size=batch_rows,
                           blocks_per_chunk=args.blocks_per_chunk, label_map=label_map)

    train = stream(args.features, args.labels)
    test = None if args.test_features is None else stream(args.test_features, args.test_labels)
    # A progress bar per partial_fit call would flash by once per chunk; the per-epoch table follows training.
    model = make_model(PIXEL_SCALE if train.features.dtype == np.uint8 else 1.0).set_params(progress=False,
                                                                                         batch_size=batch_rows)
    summary = {"features": args.features, "labels": args.labels, "test_features": args.test_features,
               "test_labels": args.test_labels, "train_rows": train.n_rows, "test_rows": 0 if test is None else
               test.n_rows, "chunk_mb": args.chunk_mb, "chunk_rows": train.chunk_rows,
               "blocks_per_chunk": train.blocks_per_chunk, "chunks_per_epoch": train.n_chunks}

    def fit(epoch_callback) -> None:
        fit_stream(model, train, seed=args.seed, validation=test, epoch_callback=epoch_callback)

    return model, fit, f"{args.features}, {args.model}", summary


def _load_sparse_rows(features: str, labels: str, flags: tuple[str, str]) -> tuple:
    """A scipy.sparse .npz matrix (never unpickled) and its .npy labels, checked to have one label per row;
    ``flags`` names the two files' flags in messages."""
    import scipy.sparse

    features_flag, labels_flag = flags
    try:
        X = scipy.sparse.load_npz(features)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:  # TypeError: a plain .npy under a .npz name
        raise ValueError(f"{features_flag} {features} is not a sparse matrix written by scipy.sparse.save_npz "
                         f"({type(error).__name__}: {error})") from None
    try:
        y = np.load(labels, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise ValueError(f"{labels_flag} {labels} is not a .npy array of labels ({error})") from None
    if not isinstance(y, np.ndarray):  # np.load opens a .npz archive as a mapping of arrays
        raise ValueError(f"{labels_flag} {labels} is a .npz archive, not a .npy array of labels")
    if y.ndim != 1 or len(y) != X.shape[0]:
        raise ValueError(f"{labels_flag} {labels} holds labels of shape {y.shape}, but {features_flag} {features} "
                         f"has {X.shape[0]} rows")
    return X, y


def _prepare_sparse_files(args: argparse.Namespace, make_model):
    """Load sparse rows (a scipy.sparse .npz, e.g. hashed documents) whole, with the test rows, when given, scored
    after every epoch; memory is the matrix's nonzeros plus the weights, never N·D.

    Returns
    -------
    model, fit (callable (epoch_callback) -> None), task description, partial summary
    """
    for features, labels, pair in ((args.features, args.labels, "--features and --labels"),
                                   (args.test_features, args.test_labels, "--test-features and --test-labels")):
        if (features is None) != (labels is None):
            raise ValueError(f"{pair} go together: give both or neither")
    X, y = _load_sparse_rows(args.features, args.labels, ("--features", "--labels"))
    test = (None if args.test_features is None else
            _load_sparse_rows(args.test_features, args.test_labels, ("--test-features", "--test-labels")))
    if args.model == "logistic":
        y = y == args.positive_class
        test = None if test is None else (test[0], test[1] == args.positive_class)
    model = make_model(1.0)
    summary = {"features": args.features, "labels": args.labels, "test_features": args.test_features,
               "test_labels": args.test_labels, "train_rows": X.shape[0],
               "test_rows": 0 if test is None else test[0].shape[0], "n_features": X.shape[1], "nonzeros": X.nnz}

    def fit(epoch_callback) -> None:
        model.fit(X, y, validation_data=test, epoch_callback=epoch_callback)

    return model, fit, f"{args.features}, {args.model}", summary


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
    """Entry point of the ``linclass-gpu`` console script; returns the exit status (2: an error a user can fix,
    :data:`EXIT_INTERRUPTED`: Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    missing = not_installed(*SUBCOMMAND_PACKAGES.get(args.command, ()))
    if missing:
        print(f"linclass-gpu {args.command}: error: {missing}", file=sys.stderr)
        return 2
    try:
        result = args.run(args)
    # TypeError: what validation raises for values of the wrong kind (an object array, strings as features).
    except (BackendUnavailableError, FileNotFoundError, ValueError, TypeError, TrainingDivergedError,
            DistributedError) as error:
        message = name_flags(str(error)) if args.command == "train" else str(error)
        print(f"linclass-gpu {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before anything finished that could be reported (train reports what did)
        print(f"linclass-gpu {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json and result is not None:  # None: a process that does not print (not rank 0)
        print(json.dumps(result), flush=True)
    return EXIT_INTERRUPTED if result is not None and result.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
