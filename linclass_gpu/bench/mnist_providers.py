"""The providers of ``bench mnist``: one training run each, served epoch by epoch from a process of its own.

Each provider is a class made as ``Provider(mark_baseline, **settings)`` by :class:`.isolated.IsolatedWorker` (see
:class:`.mnist.MnistSettings` for the settings): it imports what it needs, marks the memory baseline, loads MNIST
and sets up. Then every :meth:`~_Training.epoch` call trains one epoch, timing the training apart from the test-set
evaluation that follows it, and says whether the run is finished; :meth:`~_Training.summary` returns
``epoch_seconds`` (training only), ``test_accuracy`` after each epoch, ``fit_seconds`` (setup such as placing the
data on the device, plus every epoch's training; evaluation excluded), ``input`` (what the model is fed) and
``device``.

- :class:`BackendTraining`: this library's own loop (:func:`linclass_gpu.training.train_sgd` over the backend's
  fused step, as ``SoftmaxRegression.fit`` runs it) on uint8 pixels with ``input_scale=1/255``; driven directly
  rather than through the estimator so that evaluation can be timed apart from training.
- :class:`TorchTraining`: the same SGD in a PyTorch eager loop (``torch.optim.SGD`` with momentum and weight decay
  on W, ``ExponentialLR``), on float32 pixels in [0, 1].
- :class:`SklearnSGDTraining`: ``SGDClassifier(loss="log_loss")``, one ``partial_fit`` pass per epoch (per-sample
  SGD with its own "optimal" step size: the batch size and learning rate do not apply; ``alpha`` does).
- :class:`SklearnLbfgsTraining`: ``LogisticRegression(solver="lbfgs")`` with the same L2 strength
  (``C = 1/(alpha·N)``), grown by ``warm_start`` fits of a growing number of iterations until the test accuracy
  reaches the target or the iteration budget is spent; each chunk is one "epoch". A warm start restarts L-BFGS's
  curvature memory, which costs it a few iterations per chunk.
- :class:`GemmFloor`: the bare-GEMM floor of an epoch: per minibatch, the step's two GEMMs in float32 on
  preallocated buffers, nothing else (no accuracy).
- :class:`CliTraining`: ``linclass-gpu train`` itself, in one go, for its peak memory; its epoch seconds include
  evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
import warnings

import numpy as np

from ..datasets import load_mnist

PIXEL_SCALE = 1 / 255
N_CLASSES = 10
MNIST_TRAIN_ROWS, MNIST_TEST_ROWS, MNIST_FEATURES = 60000, 10000, 784
# L-BFGS iterations per warm-start chunk: at least this many, and a quarter of those done so far, so the chunks grow
# and the seconds to the target are overstated by at most about a quarter.
LBFGS_MIN_CHUNK = 5


def load_split(data_dir, train_rows, test_rows):
    """MNIST as uint8, optionally cut to the first ``train_rows`` and ``test_rows`` rows.

    Returns
    -------
    X_train : ndarray, shape (N, 784), uint8
    y_train : ndarray, shape (N,), int64
    X_test : ndarray, shape (M, 784), uint8
    y_test : ndarray, shape (M,), int64
    """
    data = load_mnist(data_dir)
    return (data.train_images[:train_rows], data.train_labels[:train_rows].astype(np.int64),
            data.test_images[:test_rows], data.test_labels[:test_rows].astype(np.int64))


def _as_unit_float32(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], what the peers are fed."""
    return images.astype(np.float32) * np.float32(PIXEL_SCALE)


class _Training:
    """Books of one run: per-epoch training seconds and test accuracy, setup seconds, what it ran on."""

    input = ""

    def __init__(self, device: str):
        self.device, self.setup_seconds = device, 0.0
        self.epoch_seconds: list[float] = []
        self.test_accuracy: list[float] = []

    def epoch(self) -> bool:
        """Train one more epoch (or chunk); True when the run is finished."""
        raise NotImplementedError

    def summary(self) -> dict:
        return {"epoch_seconds": self.epoch_seconds, "test_accuracy": self.test_accuracy,
                "fit_seconds": self.setup_seconds + sum(self.epoch_seconds), "input": self.input,
                "device": self.device}


class BackendTraining(_Training):
    """This library's training loop on ``backend`` with the estimators' schedule (see the module docstring)."""

    input = "uint8, input_scale=1/255"

    def __init__(self, mark_baseline, *, backend, epochs, batch_size, learning_rate, gamma, momentum, alpha, seed,
                 data_dir=None, train_rows=None, test_rows=None, **_):
        from ..backends import get_backend
        from ..schedules import LearningRateSchedule
        from ..training import TrainingHistory

        be = get_backend(backend)
        super().__init__(be.describe())
        mark_baseline()
        X_train, y_train, X_test, y_test = load_split(data_dir, train_rows, test_rows)
        started = time.perf_counter()
        X_test_device = be.asarray(X_test)
        self.stepper = be.fused_sgd("softmax", be.asarray(X_train), be.asarray(y_train),
                                    np.zeros((X_train.shape[1], N_CLASSES), np.float32),
                                    np.zeros(N_CLASSES, np.float32), max_batch_size=batch_size, l2=alpha,
                                    momentum=momentum, x_scale=PIXEL_SCALE)
        self.setup_seconds = time.perf_counter() - started

        def accuracy(W, b):
            started = time.perf_counter()
            logits = be.to_numpy(be.decision_function(X_test_device, W, b, PIXEL_SCALE))
            self.test_accuracy.append(float(np.mean(logits.argmax(axis=1) == y_test)))
            self._evaluation_seconds = time.perf_counter() - started
            return self.test_accuracy[-1]

        self.backend, self.n_rows, self.epochs, self.batch_size = be, X_train.shape[0], epochs, batch_size
        self.schedule = LearningRateSchedule("exponential", learning_rate, gamma)
        self.rng, self.history, self.accuracy = np.random.default_rng(seed), TrainingHistory(), accuracy

    def epoch(self) -> bool:
        from ..training import train_sgd

        # One epoch of train_sgd per call, as one call over all epochs would run them: the same history (step
        # count), random generator (permutations) and schedule, its origin moved to this epoch.
        done = len(self.history.loss)
        schedule = dataclasses.replace(self.schedule, initial=self.schedule(done, self.history.steps))
        train_sgd(self.stepper, self.backend, self.n_rows, epochs=1, batch_size=self.batch_size, schedule=schedule,
                  rng=self.rng, score_validation=self.accuracy, progress=False, history=self.history)
        self.epoch_seconds.append(self.history.epoch_seconds[-1] - self._evaluation_seconds)
        return len(self.epoch_seconds) >= self.epochs


class TorchTraining(_Training):
    """A PyTorch eager loop with the same SGD, schedule and initial weights (see the module docstring)."""

    input = "float32 in [0, 1]"

    def __init__(self, mark_baseline, *, epochs, batch_size, learning_rate, gamma, momentum, alpha, seed,
                 data_dir=None, train_rows=None, test_rows=None, **_):
        import torch

        self.torch, device = torch, torch.device("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(f"torch {torch.__version__} on {device}")
        mark_baseline()
        X_train, y_train, X_test, y_test = load_split(data_dir, train_rows, test_rows)
        X_train, X_test = _as_unit_float32(X_train), _as_unit_float32(X_test)
        started = time.perf_counter()
        self.X, self.y = torch.from_numpy(X_train).to(device), torch.from_numpy(y_train).to(device)
        self.X_test, self.y_test = torch.from_numpy(X_test).to(device), torch.from_numpy(y_test).to(device)
        self.W = torch.zeros(X_train.shape[1], N_CLASSES, device=device, requires_grad=True)
        self.b = torch.zeros(N_CLASSES, device=device, requires_grad=True)
        self.optimizer = torch.optim.SGD(
            [{"params": [self.W], "weight_decay": alpha}, {"params": [self.b], "weight_decay": 0.0}],
            lr=learning_rate, momentum=momentum)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma)
        self.generator = torch.Generator().manual_seed(seed)
        self.setup_seconds = time.perf_counter() - started
        self.torch_device, self.epochs, self.batch_size = device, epochs, batch_size

    def epoch(self) -> bool:
        torch, X, y, W, b = self.torch, self.X, self.y, self.W, self.b
        cross_entropy = torch.nn.functional.cross_entropy
        started = time.perf_counter()
        order = torch.randperm(X.shape[0], generator=self.generator).to(self.torch_device)
        loss_sum = torch.zeros((), device=self.torch_device)
        for start in range(0, X.shape[0], self.batch_size):
            rows = order[start:start + self.batch_size]
            loss = cross_entropy(X[rows] @ W + b, y[rows])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * rows.shape[0]
        self.schedule.step()
        loss_sum.item()  # the epoch's one device read, as in the library's loop
        self.epoch_seconds.append(time.perf_counter() - started)
        with torch.no_grad():
            self.test_accuracy.append(((self.X_test @ W + b).argmax(dim=1) == self.y_test).float().mean().item())
        return len(self.epoch_seconds) >= self.epochs


class SklearnSGDTraining(_Training):
    """``SGDClassifier(loss="log_loss")``, one ``partial_fit`` pass per epoch, one-vs-rest over every core (or
    ``threads``)."""

    input = "float32 in [0, 1]"

    def __init__(self, mark_baseline, *, epochs, alpha, seed, threads=None, data_dir=None, train_rows=None,
                 test_rows=None, **_):
        import sklearn
        from sklearn.linear_model import SGDClassifier

        n_jobs = threads or -1
        super().__init__(f"scikit-learn {sklearn.__version__}, n_jobs={n_jobs}")
        mark_baseline()
        X_train, self.y_train, X_test, self.y_test = load_split(data_dir, train_rows, test_rows)
        self.X_train, self.X_test = _as_unit_float32(X_train), _as_unit_float32(X_test)
        self.model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=seed, n_jobs=n_jobs)
        self.epochs = epochs

    def epoch(self) -> bool:
        started = time.perf_counter()
        self.model.partial_fit(self.X_train, self.y_train, classes=np.arange(N_CLASSES))
        self.epoch_seconds.append(time.perf_counter() - started)
        self.test_accuracy.append(float(self.model.score(self.X_test, self.y_test)))
        return len(self.epoch_seconds) >= self.epochs


class SklearnLbfgsTraining(_Training):
    """``LogisticRegression(solver="lbfgs")`` in growing warm-start chunks until ``target_accuracy`` or
    ``lbfgs_max_iter`` iterations (see the module docstring)."""

    input = "float32 in [0, 1]"

    def __init__(self, mark_baseline, *, alpha, target_accuracy, lbfgs_max_iter, data_dir=None, train_rows=None,
                 test_rows=None, **_):
        import sklearn
        from sklearn.linear_model import LogisticRegression

        super().__init__(f"scikit-learn {sklearn.__version__}, C=1/(alpha·N)")
        mark_baseline()
        X_train, self.y_train, X_test, self.y_test = load_split(data_dir, train_rows, test_rows)
        self.X_train, self.X_test = _as_unit_float32(X_train), _as_unit_float32(X_test)
        self.model = LogisticRegression(C=1 / (alpha * X_train.shape[0]), solver="lbfgs", warm_start=True)
        self.target_accuracy, self.max_iter, self.iterations = target_accuracy, lbfgs_max_iter, 0

    def epoch(self) -> bool:
        from sklearn.exceptions import ConvergenceWarning

        budget = min(max(LBFGS_MIN_CHUNK, self.iterations // 4), self.max_iter - self.iterations)
        self.model.max_iter = budget
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # every chunk but the last stops at max_iter
            started = time.perf_counter()
            self.model.fit(self.X_train, self.y_train)
            self.epoch_seconds.append(time.perf_counter() - started)
        self.test_accuracy.append(float(self.model.score(self.X_test, self.y_test)))
        ran = int(self.model.n_iter_.max())
        self.iterations += ran
        # Converged before its budget: more chunks would change nothing.
        return self.test_accuracy[-1] >= self.target_accuracy or self.iterations >= self.max_iter or ran < budget

    def summary(self) -> dict:
        return {**super().summary(), "iterations": self.iterations}


class GemmFloor(_Training):
    """Per epoch, the two GEMMs of every minibatch's step, ``X_b W`` and ``X_bᵀ dZ``, in float32, nothing else."""

    input = "float32"

    def __init__(self, mark_baseline, *, epochs, batch_size, train_rows=None, **_):
        super().__init__(f"NumPy {np.__version__}")
        mark_baseline()
        rng = np.random.default_rng(0)
        self.n_rows, self.epochs, self.batch_size = train_rows or MNIST_TRAIN_ROWS, epochs, batch_size
        self.X_batch = rng.random((batch_size, MNIST_FEATURES), dtype=np.float32)
        self.W = rng.standard_normal((MNIST_FEATURES, N_CLASSES), dtype=np.float32)
        self.Z = np.empty((batch_size, N_CLASSES), np.float32)
        self.dW = np.empty((MNIST_FEATURES, N_CLASSES), np.float32)

    def epoch(self) -> bool:
        X_batch, W, Z, dW = self.X_batch, self.W, self.Z, self.dW
        started = time.perf_counter()
        for start in range(0, self.n_rows, self.batch_size):
            rows = min(self.batch_size, self.n_rows - start)
            np.matmul(X_batch[:rows], W, out=Z[:rows])
            np.matmul(X_batch[:rows].T, Z[:rows], out=dW)
        self.epoch_seconds.append(time.perf_counter() - started)
        return len(self.epoch_seconds) >= self.epochs


class CliTraining(_Training):
    """``linclass-gpu train --json`` as a user runs it (auto backend), in one go, for its peak memory."""

    input = "uint8, input_scale=1/255"

    def __init__(self, mark_baseline, *, epochs, batch_size, learning_rate, seed, data_dir=None, **_):
        from .. import cli
        from ..backends import get_backend

        super().__init__(f"linclass-gpu train, backend {get_backend('auto').name}")
        mark_baseline()  # after the backend's imports, which ``train`` makes before it loads the data
        self.main = cli.main
        self.argv = ["train", "--json", "--no-progress", "--epochs", str(epochs), "--batch-size", str(batch_size),
                     "--learning-rate", str(learning_rate), "--seed", str(seed)]
        if data_dir is not None:
            self.argv += ["--data-dir", str(data_dir)]

    def epoch(self) -> bool:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = self.main(self.argv)
        if status != 0:
            raise RuntimeError(f"linclass-gpu {' '.join(self.argv)} exited with {status}")
        summary = json.loads(output.getvalue().strip().splitlines()[-1])
        self.epoch_seconds, self.test_accuracy = summary["epoch_seconds"], summary["test_accuracy_per_epoch"]
        self.setup_seconds = summary["fit_seconds"] - sum(self.epoch_seconds)
        return True
