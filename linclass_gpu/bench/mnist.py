"""``bench mnist``: end-to-end MNIST training per provider, each run in a fresh process, all in one invocation.

Every provider of :mod:`.mnist_providers` trains with the same epochs, batch size, learning rate, schedule,
momentum and L2 strength (the estimators' defaults) in a process of its own (:mod:`.isolated`), which also gives its
peak memory above the interpreter's baseline. The providers take turns epoch by epoch (in an order rotated each
round), so a burst of load from elsewhere hits them alike and the ratios between them hold on a noisy machine.

Every provider runs with its library's own choice of threads (unless ``threads`` caps them all), as a user gets it;
``numpy-1-thread`` runs the NumPy backend again with one BLAS thread, so one run gives both and their ratio.
``busy`` processes, each burning a core (:mod:`.busy`), can run beside the whole measurement: the machine a user
shares with other work.

Per provider: the median epoch seconds (training only), the fit seconds, the seconds of training until the test
accuracy first reaches the target (0.92; None if it never does; read off the providers' evaluations, several per
epoch, see :mod:`.mnist_providers`), the final test accuracy and the peak memory.
:func:`targets` puts the ratios the library is held to beside their goals.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import asdict, dataclass

import numpy as np

from ..backends import probe, resolve_name
from ..backends.registry import AUTO_ORDER
from ..estimators import SoftmaxRegression
from .busy import busy_processes
from .isolated import MB, IsolatedWorker, WorkerError, thread_limits
from .mnist_providers import MNIST_FEATURES, MNIST_TEST_ROWS, MNIST_TRAIN_ROWS
from .report import target

_PROVIDERS_MODULE = "linclass_gpu.bench.mnist_providers"
# name -> (class in mnist_providers, modules it needs)
PEERS = {
    "torch-eager": ("TorchTraining", ("torch",)),
    "jax": ("JaxTraining", ("jax",)),
    "sklearn-sgd": ("SklearnSGDTraining", ("sklearn",)),
    "sklearn-lbfgs": ("SklearnLbfgsTraining", ("sklearn",)),
    "numpy-gemm-floor": ("GemmFloor", ()),
    "linclass-gpu-train": ("CliTraining", ()),
}
# Backends run again with one BLAS/OpenMP thread, beside their row with the default threads: name -> backend.
ONE_THREAD = {"numpy-1-thread": "numpy"}
# The library's own thread-count override, pinned with the BLAS pools' for the one-thread rows.
THREADS_VARIABLE = "LINCLASS_NUM_THREADS"
MNIST_PROVIDERS = AUTO_ORDER + tuple(ONE_THREAD) + tuple(PEERS)
# The uint8 images and labels of both splits: what the memory target is measured against.
MNIST_DATASET_BYTES = (MNIST_TRAIN_ROWS + MNIST_TEST_ROWS) * (MNIST_FEATURES + 1)
# Schedules whose rate changes only between epochs, which every peer's loop can follow.
EPOCH_SCHEDULES = ("constant", "step", "exponential")
# Epochs of every SGD provider: the README's "92% in 5 epochs"; their median is the headline epoch time.
DEFAULT_EPOCHS = 5
# --quick: a smoke test of the harness in seconds.
QUICK = {"epochs": 2, "train_rows": 2048, "test_rows": 512, "lbfgs_max_iter": 10}


@dataclass(frozen=True)
class MnistSettings:
    """What every provider trains with.

    Attributes
    ----------
    epochs, batch_size : int
    learning_rate, momentum, alpha : float
        The initial step size, heavy-ball momentum and L2 on W.
    schedule : {"constant", "step", "exponential"}
        How the step size changes between epochs, with ``gamma``, ``step_size`` and the floor ``min_learning_rate``
        (:class:`~linclass_gpu.schedules.LearningRateSchedule`).
    seed : int
    target_accuracy : float
        The test accuracy the seconds-to-target are measured to.
    lbfgs_max_iter : int
        Iteration budget of ``sklearn-lbfgs`` (it stops earlier once at the target).
    data_dir : str, optional
        Where the MNIST files are (default: the library's search path).
    train_rows, test_rows : int, optional
        Use only the first rows (the --quick smoke test).
    threads : int, optional
        Cap on every provider's BLAS, OpenMP and joblib threads (default: each library's own choice, all cores).
    """

    epochs: int
    batch_size: int
    learning_rate: float
    gamma: float
    momentum: float
    alpha: float
    schedule: str = "exponential"
    step_size: int = 5
    min_learning_rate: float = 0.0
    seed: int = 0
    target_accuracy: float = 0.92
    lbfgs_max_iter: int = 100
    data_dir: str | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    threads: int | None = None

    @classmethod
    def library_defaults(cls, **overrides) -> "MnistSettings":
        """The estimators' SGD defaults, :data:`DEFAULT_EPOCHS` epochs, with ``overrides`` (None values keep the
        default)."""
        defaults = SoftmaxRegression()
        if defaults.schedule not in EPOCH_SCHEDULES:
            raise ValueError(f"the peers' loops set their rate once per epoch: {', '.join(EPOCH_SCHEDULES)}, not "
                             f"{defaults.schedule!r}")
        n_rows = overrides.get("train_rows") or MNIST_TRAIN_ROWS
        settings = {"epochs": DEFAULT_EPOCHS, "batch_size": defaults._batch_rows(n_rows),  # "auto" resolved as fit does
                    "learning_rate": defaults.learning_rate, "schedule": defaults.schedule, "gamma": defaults.gamma,
                    "step_size": defaults.step_size, "min_learning_rate": defaults.min_learning_rate,
                    "momentum": defaults.momentum, "alpha": defaults.alpha}
        settings.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**settings)


def unavailable_reason(name: str) -> str:
    """Why provider ``name`` cannot run here, or "" (nothing is imported to find out)."""
    if name not in MNIST_PROVIDERS:
        raise ValueError(f"unknown MNIST provider {name!r}; expected one of {', '.join(MNIST_PROVIDERS)}")
    if name in AUTO_ORDER or name in ONE_THREAD:
        status = probe(ONE_THREAD.get(name, name))
        return "" if status.usable else status.detail
    missing = [module for module in PEERS[name][1] if importlib.util.find_spec(module) is None]
    return f"{' and '.join(missing)} not installed" if missing else ""


def default_providers() -> list[str]:
    """The backends ``auto`` could pick here (not the Triton interpreter), each again with one thread where
    :data:`ONE_THREAD` has it, and every peer; those not installed are reported as skipped."""
    backends = [name for name in AUTO_ORDER if probe(name).auto]
    return backends + [name for name, backend in ONE_THREAD.items() if backend in backends] + list(PEERS)


def _factory(name: str) -> tuple[str, dict]:
    """The ``module:class`` that runs provider ``name`` and its extra keyword arguments."""
    if name in AUTO_ORDER or name in ONE_THREAD:
        return f"{_PROVIDERS_MODULE}:BackendTraining", {"backend": ONE_THREAD.get(name, name)}
    return f"{_PROVIDERS_MODULE}:{PEERS[name][0]}", {}


def provider_environment(name: str, threads: int | None) -> dict:
    """Environment variables of provider ``name``'s process: every thread pool capped at ``threads`` (None: each
    library's default), or at one thread, the library's own choice included, for the :data:`ONE_THREAD` rows."""
    if name in ONE_THREAD:
        return {**thread_limits(1), THREADS_VARIABLE: "1"}
    return thread_limits(threads)


def seconds_to_accuracy(accuracy_curve, target_accuracy: float) -> float | None:
    """The training seconds of the first evaluation whose test accuracy reaches ``target_accuracy``; None if none
    does.

    Parameters
    ----------
    accuracy_curve : sequence of (float, float)
        Training seconds so far and the test accuracy then, one pair per evaluation, in order.
    target_accuracy : float
    """
    return next((seconds for seconds, accuracy in accuracy_curve if accuracy >= target_accuracy), None)


def summarise_run(name: str, run: dict, target_accuracy: float) -> dict:
    """One result row from a provider's summary and memory figures."""
    epochs, accuracy = run["epoch_seconds"], run["test_accuracy"]
    return {
        "provider": name, "status": "ok", "device": run["device"], "input": run["input"], "epochs": len(epochs),
        "median_epoch_s": float(np.median(epochs)) if epochs else None, "fit_s": run["fit_seconds"],
        "seconds_to_target": seconds_to_accuracy(run["accuracy_curve"], target_accuracy),
        "final_accuracy": accuracy[-1] if accuracy else None,
        "peak_above_baseline_mb": run["peak_above_baseline_mb"], "baseline_mb": run["baseline_mb"],
        **({"iterations": run["iterations"]} if "iterations" in run else {}),
    }


def run_mnist_bench(providers: list[str], settings: MnistSettings, *, timeout: float = 900, busy: int = 0,
                    progress=print) -> dict:
    """Train every provider, each in a process of its own, the providers taking turns epoch by epoch.

    Parameters
    ----------
    providers : list of str
        Names from :data:`MNIST_PROVIDERS`.
    settings : MnistSettings
    timeout : float
        Seconds one epoch (or the setup) may take before the provider is killed and reported as an error.
    busy : int
        Processes keeping a core busy each (:func:`.busy.busy_processes`) from the first setup to the last epoch.
    progress : callable (str) -> None
        Told what starts.

    Returns
    -------
    dict
        ``settings``, ``busy``, ``results`` (one row per provider: ``status`` "ok", "skipped" (not installed, no
        device) or "error", with ``reason``), ``dataset_mb`` and ``targets`` (:func:`targets`).
    """
    reasons = {name: unavailable_reason(name) for name in providers}
    outcomes: dict[str, dict] = {name: {"status": "skipped", "reason": reason} for name, reason in reasons.items()
                                 if reason}
    with contextlib.ExitStack() as stack:
        stack.enter_context(busy_processes(busy))  # entered first, so left last: busy until every worker is closed
        active = {}
        for name in providers:
            if reasons[name]:
                continue
            progress(f"mnist {name}: loading and setting up")
            factory, extra = _factory(name)
            try:
                active[name] = stack.enter_context(IsolatedWorker(factory, {**asdict(settings), **extra}, timeout,
                                                                  env=provider_environment(name, settings.threads)))
            except (WorkerError, TimeoutError) as error:
                outcomes[name] = {"status": "error", "reason": str(error)}
        epoch = 0
        while active:
            progress(f"mnist epoch {epoch + 1}: {', '.join(active)}")
            names = list(active)
            shift = epoch % len(names)
            for name in names[shift:] + names[:shift]:  # rotated, so no provider always runs right after another
                worker = active[name]
                try:
                    if worker.call("epoch"):
                        outcomes[name] = summarise_run(name, {**worker.call("summary"), **worker.memory()},
                                                       settings.target_accuracy)
                        del active[name]
                except (WorkerError, TimeoutError) as error:  # one failing provider must not lose the others
                    outcomes[name] = {"status": "error", "reason": str(error)}
                    del active[name]
            epoch += 1
    results = [{"provider": name, **outcomes[name]} for name in providers]
    return {"settings": asdict(settings), "busy": busy, "results": results, "dataset_mb": MNIST_DATASET_BYTES / MB,
            "targets": targets(results, settings.target_accuracy, busy=busy, threads=settings.threads)}


def targets(results: list[dict], target_accuracy: float, busy: int = 0, threads: int | None = None) -> list[dict]:
    """The ratios the library is held to, for the backend ``auto`` picks here, where both sides were measured.

    The thread goals are named with the machine state they were measured in (``busy`` processes beside the
    providers): the default threads within 1.3x of one thread (compared only when ``threads`` capped nothing),
    and the library at least 1.5x faster than the JAX loop.

    Returns
    -------
    list of dict
        ``name``, ``value``, ``goal`` (text) and ``met`` (bool).
    """
    rows = {row["provider"]: row for row in results if row["status"] == "ok"}
    library = rows.get(resolve_name("auto")[0])
    checks = []

    def ratio(numerator, denominator):
        return None if numerator is None or not denominator else numerator / denominator

    if library is not None:
        lib = library["provider"]
        if "torch-eager" in rows:
            checks.append(target(f"median epoch, torch-eager / {lib}", ratio(
                rows["torch-eager"]["median_epoch_s"], library["median_epoch_s"]), ">= 3", lambda v: v >= 3))
        state = f"{busy} busy process{'' if busy == 1 else 'es'}"
        one_thread = next((name for name, backend in ONE_THREAD.items() if backend == lib), None)
        if threads is None and one_thread in rows:
            checks.append(target(f"median epoch, {lib} default threads / {one_thread} ({state})", ratio(
                library["median_epoch_s"], rows[one_thread]["median_epoch_s"]), "<= 1.3", lambda v: v <= 1.3))
        if "jax" in rows:
            checks.append(target(f"median epoch, jax / {lib} ({state})", ratio(
                rows["jax"]["median_epoch_s"], library["median_epoch_s"]), ">= 1.5", lambda v: v >= 1.5))
        if lib == "numpy" and "numpy-gemm-floor" in rows:
            checks.append(target("median epoch, numpy / numpy-gemm-floor", ratio(
                library["median_epoch_s"], rows["numpy-gemm-floor"]["median_epoch_s"]), "<= 1.15",
                lambda v: v <= 1.15))
        if "sklearn-lbfgs" in rows:
            checks.append(target(f"seconds to {target_accuracy:.0%}, sklearn-lbfgs / {lib}", ratio(
                rows["sklearn-lbfgs"]["seconds_to_target"], library["seconds_to_target"]), ">= 20", lambda v: v >= 20))
        if lib != "numpy":
            checks.append(target(f"median epoch ms, {lib}", library["median_epoch_s"] * 1e3, "< 1", lambda v: v < 1))
    train = rows.get("linclass-gpu-train")
    if train is not None:
        checks.append(target("linclass-gpu train peak above baseline / dataset", ratio(
            train["peak_above_baseline_mb"], MNIST_DATASET_BYTES / MB), "<= 1.5", lambda v: v <= 1.5))
    return checks
