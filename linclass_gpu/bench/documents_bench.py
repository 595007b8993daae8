"""``linclass-gpu bench documents``: softmax regression on hashed documents (scipy CSR) against scikit-learn.

The task (``--corpus``) is :func:`.documents.hashed_documents` (Zipf words hashed into ``D = 2¹⁸`` columns, ~100
nonzeros per row, 20 classes) or real text, :func:`.man_pages.man_page_documents` (the machine's manual pages, hashed
the same way, classified by section), split into training rows and a held-out test set. Each provider trains on the
same CSR matrix:

- ``linclass-softmax``: :class:`linclass_gpu.SoftmaxRegression` (the sparse step) with AdaGrad and no penalty, a
  fixed number of epochs. AdaGrad's per-feature step sizes suit Zipf-distributed features: a rare word's weight gets
  the larger steps its few rows need. Without penalty its step moves only the rows of the batch's words;
- ``linclass-softmax-sgd``: the same with plain SGD (no momentum: momentum moves every row every step);
- ``linclass-ovr``: :class:`linclass_gpu.LogisticRegression` (one sigmoid per class) as ``linclass-softmax``;
- ``sklearn-sgd``: ``SGDClassifier(loss="log_loss")`` (one-vs-rest, its defaults), the same epochs (``tol=None``);
- ``sklearn-lr``: ``LogisticRegression()`` (L-BFGS, its defaults): the accuracy a full optimiser reaches.

Per epoch seconds: our estimators record each epoch's training time (``epoch_seconds_``, the median is reported);
scikit-learn's SGD reports none, so its fit time is divided by its epochs. The goals (issue 18), checked for each of
our softmax providers: its per-epoch time at most a third of ``sklearn-sgd``'s, its accuracy within 0.01 of
``sklearn-sgd``'s or above it, and within 0.01 of ``sklearn-lr``'s or above it.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .documents import hashed_documents
from .man_pages import man_page_documents

PROVIDERS = ("linclass-softmax", "linclass-softmax-sgd", "linclass-ovr", "sklearn-sgd", "sklearn-lr")
# Our softmax regressions, each checked against the goals.
SOFTMAX_PROVIDERS = ("linclass-softmax", "linclass-softmax-sgd")
CORPORA = ("zipf", "man-pages")
DEFAULTS = {"corpus": "zipf", "n_train": 100_000, "n_test": 20_000, "n_features": 2**18, "n_classes": 20, "epochs": 5,
            "batch_size": 128, "rounds": 3, "seed": 0}
# The optimizer settings of our providers. Rows are unit vectors, so a plain SGD step moves a logit by about lr/B per
# row of the batch: its rate is far larger than MNIST's (pixels in [0, 1], hundreds per row).
ADAGRAD = {"optimizer": "adagrad", "momentum": 0.0, "learning_rate": 0.5, "alpha": 0.0}
PLAIN_SGD = {"optimizer": "sgd", "momentum": 0.0, "learning_rate": 20.0, "alpha": 1e-6}
# The share of the man pages held out for testing.
MAN_PAGES_TEST_SHARE = 0.2
QUICK = {"n_train": 4_000, "n_test": 1_000, "epochs": 2, "rounds": 1}
SPEEDUP_GOAL = 3.0
ACCURACY_MARGIN = 0.01


def _fit_linclass(estimator_class, optimizer: dict, settings, X, y):
    estimator = estimator_class(epochs=settings["epochs"], batch_size=settings["batch_size"], tol=None,
                                random_state=settings["seed"], backend="numpy", **optimizer)
    started = time.perf_counter()
    estimator.fit(X, y)
    return estimator, time.perf_counter() - started, float(np.median(estimator.epoch_seconds_))


def _fit_sklearn_sgd(settings, X, y):
    from sklearn.linear_model import SGDClassifier

    estimator = SGDClassifier(loss="log_loss", max_iter=settings["epochs"], tol=None, random_state=settings["seed"])
    started = time.perf_counter()
    estimator.fit(X, y)
    seconds = time.perf_counter() - started
    return estimator, seconds, seconds / settings["epochs"]


def _fit_sklearn_lr(settings, X, y):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)
    return estimator, time.perf_counter() - started, None


def run_documents_bench(providers, settings: dict, progress=print) -> dict:
    """Train every provider on the same documents; return one row per provider and the goal checks.

    Parameters
    ----------
    providers : sequence of str
        Names from :data:`PROVIDERS`.
    settings : dict
        :data:`DEFAULTS` with any of its keys overridden.
    progress : callable (str) -> None

    Returns
    -------
    dict
        ``results`` (provider, status, epoch_s, fit_s, accuracy), ``targets`` (goal, value, passed) and the data's
        ``nnz_per_row`` and ``generate_s``.
    """
    from linclass_gpu import LogisticRegression, SoftmaxRegression

    started = time.perf_counter()
    X_train, y_train, X_test, y_test = corpus_split(settings)
    generate_s = time.perf_counter() - started
    fits = {"linclass-softmax": lambda: _fit_linclass(SoftmaxRegression, ADAGRAD, settings, X_train, y_train),
            "linclass-softmax-sgd": lambda: _fit_linclass(SoftmaxRegression, PLAIN_SGD, settings, X_train, y_train),
            "linclass-ovr": lambda: _fit_linclass(LogisticRegression, ADAGRAD, settings, X_train, y_train),
            "sklearn-sgd": lambda: _fit_sklearn_sgd(settings, X_train, y_train),
            "sklearn-lr": lambda: _fit_sklearn_lr(settings, X_train, y_train)}
    # The machine's load changes while the benchmark runs (other processes share it): the SGD providers take turns,
    # round after round, and each reports its median epoch over the rounds. sklearn-lr, minutes per fit, fits once.
    results = {}
    for round_index in range(settings["rounds"]):
        for name in providers:
            if round_index and (name == "sklearn-lr" or results[name]["status"] != "ok"):
                continue
            progress(f"documents: {name}, round {round_index + 1} of {settings['rounds']} ...")
            try:
                estimator, fit_s, epoch_s = fits[name]()
            except ImportError as error:
                results[name] = {"provider": name, "status": "skipped", "reason": str(error)}
                continue
            row = results.setdefault(name, {"provider": name, "status": "ok", "epoch_s_per_round": [],
                                            "fit_s_per_round": [],
                                            "accuracy": float(estimator.score(X_test, y_test))})
            row["fit_s_per_round"].append(fit_s)
            if epoch_s is not None:
                row["epoch_s_per_round"].append(epoch_s)
    for row in results.values():
        if row["status"] == "ok":
            row["fit_s"] = float(np.median(row["fit_s_per_round"]))
            row["epoch_s"] = float(np.median(row["epoch_s_per_round"])) if row["epoch_s_per_round"] else None
    results = [results[name] for name in providers]
    return {"results": results, "targets": goal_checks(results), "generate_s": generate_s,
            "nnz_per_row": X_train.nnz / X_train.shape[0], "n_train": X_train.shape[0], "n_test": X_test.shape[0],
            "n_classes": int(max(y_train.max(), y_test.max())) + 1}


def corpus_split(settings: dict) -> tuple:
    """The training and test documents of ``settings["corpus"]``: ``"zipf"``, :func:`.documents.hashed_documents`
    with the settings' sizes; ``"man-pages"``, :func:`.man_pages.man_page_documents` (the machine's manual pages by
    section, ``n_features`` columns) in a random order fixed by the seed, its last :data:`MAN_PAGES_TEST_SHARE` for
    testing.

    Returns
    -------
    X_train, y_train, X_test, y_test
        CSR matrices (N, D) and int class ids (N,).
    """
    if settings["corpus"] == "man-pages":
        X, y, _ = man_page_documents(n_features=settings["n_features"])
        order = np.random.default_rng(settings["seed"]).permutation(X.shape[0])
        X, y = X[order], y[order]
        n_train = X.shape[0] - int(round(MAN_PAGES_TEST_SHARE * X.shape[0]))
    else:
        X, y = hashed_documents(settings["n_train"] + settings["n_test"], n_features=settings["n_features"],
                                n_classes=settings["n_classes"], seed=settings["seed"])
        n_train = settings["n_train"]
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def goal_checks(results: list[dict]) -> list[dict]:
    """The issue's goals (:func:`.report.target` rows) for each of our softmax providers that ran, against the peers
    that ran: its per-epoch speed-up on ``sklearn-sgd`` (at least :data:`SPEEDUP_GOAL`), its accuracy against
    ``sklearn-sgd``'s and ``sklearn-lr``'s (at most :data:`ACCURACY_MARGIN` below, or above). Each provider is
    checked on its own, so a line names the provider it measures: the goals hold together where one provider meets
    all of them."""
    from .report import target

    by_name = {row["provider"]: row for row in results if row["status"] == "ok"}
    sgd, lbfgs = by_name.get("sklearn-sgd"), by_name.get("sklearn-lr")
    targets = []
    for name in SOFTMAX_PROVIDERS:
        ours = by_name.get(name)
        if ours is None:
            continue
        if sgd is not None:
            targets.append(target(f"{name}: epoch time of sklearn-sgd / ours", sgd["epoch_s"] / ours["epoch_s"],
                                  f">= {SPEEDUP_GOAL:g}", lambda value: value >= SPEEDUP_GOAL))
            targets.append(target(f"{name}: accuracy - sklearn-sgd's", ours["accuracy"] - sgd["accuracy"],
                                  f">= -{ACCURACY_MARGIN}", lambda value: value >= -ACCURACY_MARGIN))
        if lbfgs is not None:
            targets.append(target(f"{name}: accuracy - sklearn-lr's", ours["accuracy"] - lbfgs["accuracy"],
                                  f">= -{ACCURACY_MARGIN}", lambda value: value >= -ACCURACY_MARGIN))
    return targets


_TABLE = [("provider", "provider"), ("epoch_s", "epoch s"), ("fit_s", "fit s"), ("accuracy", "test acc")]


def register(benches, add_json) -> None:
    """Add ``documents`` to the ``linclass-gpu bench`` subcommands."""
    parser = benches.add_parser("documents", help="hashed bag-of-words documents (scipy CSR): softmax and "
                                "one-vs-rest vs scikit-learn's SGDClassifier and LogisticRegression")
    parser.add_argument("--providers", type=lambda text: [item.strip() for item in text.split(",") if item.strip()],
                        metavar="NAME,...", help=f"any of {', '.join(PROVIDERS)} (default: all)")
    parser.add_argument("--corpus", choices=CORPORA, help="zipf: synthetic Zipf-distributed documents (default); "
                        "man-pages: this machine's manual pages (/usr/share/man), classified by section")
    parser.add_argument("--rows", type=int, help=f"training documents of the zipf corpus (default "
                        f"{DEFAULTS['n_train']:,})")
    parser.add_argument("--epochs", type=int, help=f"epochs of every SGD provider (default {DEFAULTS['epochs']})")
    parser.add_argument("--rounds", type=int, help="turns each SGD provider takes, its median epoch reported "
                        f"(default {DEFAULTS['rounds']})")
    parser.add_argument("--quick", action="store_true", help="4,000 documents, 2 epochs, 1 round, no sklearn-lr (which "
                        "takes minutes): a smoke test")
    add_json(parser)
    parser.set_defaults(run=run)


def run(args) -> dict:
    """Run the comparison, print its table and the goals; return the results."""
    import sys

    from .report import format_table, format_targets, machine_context

    settings = {**DEFAULTS, **(QUICK if args.quick else {})}
    if args.corpus is not None:
        settings["corpus"] = args.corpus
    if args.rows is not None:
        settings["n_train"] = args.rows
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    providers = args.providers or [name for name in PROVIDERS if not (args.quick and name == "sklearn-lr")]
    unknown = [name for name in providers if name not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider(s) {', '.join(unknown)}; expected {', '.join(PROVIDERS)}")
    context = machine_context()
    outcome = run_documents_bench(providers, settings,
                                  progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(f"documents ({settings['corpus']}): {outcome['n_train']:,} training and {outcome['n_test']:,} test rows, "
          f"D = {settings['n_features']:,}, {outcome['nnz_per_row']:.1f} nonzeros per row, {outcome['n_classes']} "
          f"classes, {settings['epochs']} epochs, batch {settings['batch_size']}, {settings['rounds']} round(s); load "
          f"{context['load_1m']:.1f} on {context['cores']} cores before")
    print(format_table(outcome["results"], _TABLE))
    print("epoch s: median epoch of our estimators (epoch_seconds_), fit time / epochs for sklearn-sgd, then the "
          "median over the rounds (the providers take turns); fit s: median fit; sklearn-lr: L-BFGS to its own "
          "convergence, fitted once")
    if outcome["targets"]:
        print(format_targets(outcome["targets"]))
    return {"bench": "documents", "context": context, "settings": settings, **outcome}
