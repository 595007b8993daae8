"""The providers of ``bench mnist``: one training run each, served epoch by epoch from a process of its own.

Each provider is a class made as ``Provider(mark_baseline, **settings)`` by :class:`.isolated.IsolatedWorker` (see
:class:`.mnist.MnistSettings` for the settings): it imports what it needs, marks the memory baseline, loads MNIST
and sets up. Then every :meth:`~_Training.epoch` call trains one epoch, timing the training apart from the test-set
evaluations, and says whether the run is finished; :meth:`~_Training.summary` returns ``epoch_seconds`` (training
only), ``test_accuracy`` after each epoch, ``accuracy_curve`` (pairs of training seconds so far and the test
accuracy then, one per evaluation), ``fit_seconds`` (setup such as placing the data on the device, plus every
epoch's training; evaluation excluded), ``input`` (what the model is fed) and ``device``.

The SGD providers evaluate after every :data:`EVALUATIONS_PER_EPOCH`-th part of an epoch and at its end, each the
same way: the clock stops (after the device has finished the steps so far), the test set is scored, the clock
starts again. So the seconds to a target accuracy are read at that resolution rather than rounded up to a whole
epoch. L-BFGS is evaluated after each of its warm-start chunks.

- :class:`BackendTraining`: this library's own loop (:func:`linclass_gpu.training.train_sgd` over the backend's
  fused step, as ``SoftmaxRegression.fit`` runs it) on uint8 pixels with ``input_scale=1/255``; driven directly
  rather than through the estimator so that evaluation can be timed apart from training. What a process runs once
  (Numba's runtime and the compiled loops, or Triton's kernels) is loaded in the setup by a throwaway stepper, as
  the JAX provider compiles in its setup.
- :class:`TorchTraining`: the same SGD in a PyTorch eager loop (``torch.optim.SGD`` with momentum and weight decay
  on W, the estimators' schedule through ``LambdaLR``), on float32 pixels in [0, 1].
- :class:`JaxTraining`: the same SGD as JAX users write it, a ``jax.jit`` of a ``lax.scan`` over the minibatches
  (gradient by ``jax.grad``, momentum and L2 on W by hand), on float32 pixels in [0, 1]; one compiled scan per
  evaluation interval, compiled ahead of time in the setup.
- :class:`SklearnSGDTraining`: ``SGDClassifier(loss="log_loss")``, one ``partial_fit`` pass per evaluation interval
  over that part of the rows, so an epoch is one pass over all of them (per-sample SGD with its own "optimal" step
  size: the batch size and learning rate do not apply; ``alpha`` does).
- :class:`SklearnLbfgsTraining`: ``LogisticRegression(solver="lbfgs")`` with the same L2 strength
  (``C = 1/(alpha·N)``), grown by ``warm_start`` fits of a growing number of iterations until the test accuracy
  reaches the target or the iteration budget is spent; each chunk is one "epoch". A warm start restarts L-BFGS's
  curvature memory, which costs it a few iterations per chunk.
- :class:`GemmFloor`: the floor of an epoch: per minibatch, the gather of its uint8 rows, cast to float32, and the
  step's two GEMMs on preallocated buffers, nothing else (no accuracy).
- :class:`CliTraining`: the ``linclass-gpu train`` command itself, run as a user runs it (a process of its own), in
  one go, for its peak memory; its epoch seconds include evaluation (and its first epoch Numba's start).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

from ..datasets import load_mnist
from .isolated import MB

PIXEL_SCALE = 1 / 255
N_CLASSES = 10
MNIST_TRAIN_ROWS, MNIST_TEST_ROWS, MNIST_FEATURES = 60000, 10000, 784
# Test-set evaluations per epoch of the SGD providers: after every quarter of the epoch's steps (the last part may be
# shorter). MNIST reaches 92% after 1.25-2 epochs (seeds 0-5), so the seconds to it are overstated by at most about
# 20%, as the L-BFGS chunks below overstate theirs by at most 25%. Finer costs the measured training too: each
# evaluation evicts the step's buffers from the caches (8 per epoch slowed NumPy's epochs by 4-6%, 4 by less than the
# ±2% noise).
EVALUATIONS_PER_EPOCH = 4
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


def _children_peak_bytes() -> int:
    """The largest resident set among this process's finished children (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def _as_unit_float32(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], what the peers are fed."""
    return images.astype(np.float32) * np.float32(PIXEL_SCALE)


def epoch_schedule(schedule, learning_rate, gamma, step_size, min_learning_rate):
    """The estimators' learning-rate schedule from the settings; every provider sets its rate from it once per
    epoch."""
    from ..schedules import LearningRateSchedule

    return LearningRateSchedule(schedule, learning_rate, gamma, step_size, floor=min_learning_rate)


def steps_between_evaluations(n_rows: int, batch_size: int) -> int:
    """SGD steps from one test-set evaluation to the next: an :data:`EVALUATIONS_PER_EPOCH`-th of an epoch's steps,
    rounded up."""
    return -(-(-(-n_rows // batch_size)) // EVALUATIONS_PER_EPOCH)


class _Training:
    """Books of one run: per-epoch training seconds and test accuracy, setup seconds, what it ran on."""

    input = ""

    def __init__(self, device: str):
        self.device, self.setup_seconds = device, 0.0
        self.epoch_seconds: list[float] = []
        self.test_accuracy: list[float] = []
        self.accuracy_curve: list[tuple[float, float]] = []
        self._trained_seconds = 0.0

    def epoch(self) -> bool:
        """Train one more epoch (or chunk); True when the run is finished."""
        raise NotImplementedError

    def _evaluated(self, training_seconds: float, accuracy: float) -> None:
        """Note the test ``accuracy`` after ``training_seconds`` more of training."""
        self._trained_seconds += training_seconds
        self.accuracy_curve.append((self._trained_seconds, accuracy))

    def _epoch_done(self, accuracy: float) -> None:
        """Close the epoch: its training seconds are those noted since the last epoch ended."""
        self.epoch_seconds.append(self._trained_seconds - sum(self.epoch_seconds))
        self.test_accuracy.append(accuracy)

    def summary(self) -> dict:
        return {"epoch_seconds": self.epoch_seconds, "test_accuracy": self.test_accuracy,
                "accuracy_curve": self.accuracy_curve, "fit_seconds": self.setup_seconds + sum(self.epoch_seconds),
                "input": self.input, "device": self.device}


class _EvaluatedStepper:
    """A fused step for :func:`~linclass_gpu.training.train_sgd` that evaluates every ``every`` steps within an
    epoch: each interval is one :meth:`~linclass_gpu.backends.base.FusedSGD.run_epoch` call of the stepper (its
    epoch kernel, where it has one, over that interval's rows), the host copy of the parameters (which waits for the
    device) ends the training interval, ``evaluate`` runs off the clock. The epoch's last interval is left to
    train_sgd's own end-of-epoch evaluation."""

    def __init__(self, stepper, every: int, evaluate):
        self.stepper, self.every, self.evaluate = stepper, every, evaluate

    def run_epoch(self, rows, learning_rates, batch_size: int, on_steps=None) -> None:
        n_steps = len(learning_rates)
        for first in range(0, n_steps, self.every):
            last = min(first + self.every, n_steps)
            self.stepper.run_epoch(rows[first * batch_size:last * batch_size], learning_rates[first:last],
                                   batch_size, on_steps)
            if last < n_steps:
                self.evaluate(*self.stepper.get_params())

    def __getattr__(self, name):
        return getattr(self.stepper, name)


class BackendTraining(_Training):
    """This library's training loop on ``backend`` with the estimators' schedule (see the module docstring)."""

    input = "uint8, input_scale=1/255"

    def __init__(self, mark_baseline, *, backend, epochs, batch_size, learning_rate, schedule, gamma, step_size,
                 min_learning_rate, momentum, alpha, seed, data_dir=None, train_rows=None, test_rows=None, **_):
        from ..backends import get_backend
        from ..training import TrainingHistory

        be = get_backend(backend)
        super().__init__(be.describe())
        mark_baseline()
        X_train, y_train, X_test, y_test = load_split(data_dir, train_rows, test_rows)
        started = time.perf_counter()
        X_test_device = be.asarray(X_test)

        def stepper(n_rows):
            return be.fused_sgd("softmax", be.asarray(X_train[:n_rows]), be.asarray(y_train[:n_rows]),
                                np.zeros((X_train.shape[1], N_CLASSES), np.float32), np.zeros(N_CLASSES, np.float32),
                                max_batch_size=batch_size, l2=alpha, momentum=momentum, x_scale=PIXEL_SCALE)

        # What runs once per process (Numba's runtime and compiled loops, Triton's kernels) runs in the setup, as the
        # JAX provider's compilation does: a throwaway stepper trains a full and a short batch.
        warm_up_rows = min(batch_size + batch_size // 2, X_train.shape[0])
        stepper(warm_up_rows).run_epoch(be.asarray(np.arange(warm_up_rows)),
                                        np.full(-(-warm_up_rows // batch_size), 1e-3), batch_size)
        self.stepper = stepper(X_train.shape[0])
        self.setup_seconds = time.perf_counter() - started

        def evaluate(W, b):
            """Note the training interval that ends now, score the test set (on the training's threads, as fit scores
            its validation data: waking more BLAS threads between steps would leave them spinning into the next
            interval), start the next interval."""
            self._evaluated(time.perf_counter() - self._interval_started, float(np.mean(
                be.to_numpy(be.decision_function(X_test_device, W, b, PIXEL_SCALE)).argmax(axis=1) == y_test)))
            self._interval_started = time.perf_counter()
            return self.accuracy_curve[-1][1]

        def evaluate_at_epoch_end(W, b):
            accuracy = evaluate(W, b)
            self._epoch_done(accuracy)
            return accuracy

        n_rows = X_train.shape[0]
        self.backend, self.n_rows, self.epochs, self.batch_size = be, n_rows, epochs, batch_size
        # The work of one GEMM of a step, from which the backend picks its threads, as SoftmaxRegression.fit does.
        self.flops_per_step = 2 * min(batch_size, n_rows) * X_train.shape[1] * N_CLASSES
        self.evaluated_stepper = _EvaluatedStepper(self.stepper, steps_between_evaluations(n_rows, batch_size),
                                                   evaluate)
        self.schedule = epoch_schedule(schedule, learning_rate, gamma, step_size, min_learning_rate)
        self.rng, self.history = np.random.default_rng(seed), TrainingHistory()
        self.evaluate_at_epoch_end = evaluate_at_epoch_end

    def epoch(self) -> bool:
        from ..training import train_sgd

        # One epoch of train_sgd per call, as one call over all epochs would run them: the same history (step
        # count), random generator (permutations) and schedule, its origin moved to this epoch.
        done = len(self.history.loss)
        schedule = dataclasses.replace(self.schedule, initial=self.schedule(done, self.history.steps))
        with self.backend.thread_limit(self.flops_per_step):
            self._interval_started = time.perf_counter()
            train_sgd(self.evaluated_stepper, self.backend, self.n_rows, epochs=1, batch_size=self.batch_size,
                      schedule=schedule, rng=self.rng, score_validation=self.evaluate_at_epoch_end, progress=False,
                      history=self.history)
        return len(self.epoch_seconds) >= self.epochs


class TorchTraining(_Training):
    """A PyTorch eager loop with the same SGD, schedule and initial weights (see the module docstring)."""

    input = "float32 in [0, 1]"

    def __init__(self, mark_baseline, *, epochs, batch_size, learning_rate, schedule, gamma, step_size,
                 min_learning_rate, momentum, alpha, seed, data_dir=None, train_rows=None, test_rows=None, **_):
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
        rates = epoch_schedule(schedule, learning_rate, gamma, step_size, min_learning_rate)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: rates(epoch, 0) / learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.setup_seconds = time.perf_counter() - started
        self.torch_device, self.epochs, self.batch_size = device, epochs, batch_size
        self.every = steps_between_evaluations(X_train.shape[0], batch_size)

    def epoch(self) -> bool:
        torch, X, y, W, b = self.torch, self.X, self.y, self.W, self.b
        cross_entropy = torch.nn.functional.cross_entropy
        started = time.perf_counter()
        order = torch.randperm(X.shape[0], generator=self.generator).to(self.torch_device)
        loss_sum = torch.zeros((), device=self.torch_device)
        starts = range(0, X.shape[0], self.batch_size)
        for step, start in enumerate(starts, 1):
            rows = order[start:start + self.batch_size]
            loss = cross_entropy(X[rows] @ W + b, y[rows])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * rows.shape[0]
            if step == len(starts):
                self.schedule.step()
            if step % self.every == 0 or step == len(starts):
                loss_sum.item()  # waits for the device: the epoch's one read, and the same wait at each evaluation
                seconds = time.perf_counter() - started
                with torch.no_grad():
                    accuracy = ((self.X_test @ W + b).argmax(dim=1) == self.y_test).float().mean().item()
                self._evaluated(seconds, accuracy)
                started = time.perf_counter()
        self._epoch_done(accuracy)
        return len(self.epoch_seconds) >= self.epochs


class JaxTraining(_Training):
    """A JAX loop with the same SGD, schedule and initial weights: ``jax.jit`` of a ``lax.scan`` over the minibatches
    (see the module docstring).

    Each evaluation interval is one call of a compiled scan over its minibatches, the last interval's with the
    epoch's short final batch as one more step; the few distinct interval shapes are compiled in the setup, so no
    epoch pays for compilation.
    """

    input = "float32 in [0, 1]"

    def __init__(self, mark_baseline, *, epochs, batch_size, learning_rate, schedule, gamma, step_size,
                 min_learning_rate, momentum, alpha, seed, data_dir=None, train_rows=None, test_rows=None, **_):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        super().__init__(f"jax {jax.__version__} on {jax.devices()[0].platform}")
        mark_baseline()
        X_train, y_train, X_test, y_test = load_split(data_dir, train_rows, test_rows)
        started = time.perf_counter()
        self.X, self.y = jax.device_put(_as_unit_float32(X_train)), jax.device_put(y_train.astype(np.int32))
        self.X_test, self.y_test = jax.device_put(_as_unit_float32(X_test)), jax.device_put(y_test.astype(np.int32))
        n_rows, n_features = X_train.shape
        zeros = (jnp.zeros((n_features, N_CLASSES), jnp.float32), jnp.zeros(N_CLASSES, jnp.float32))
        self.state = (zeros, zeros)  # (W, b) and their momentum buffers

        def mean_cross_entropy(params, X_batch, y_batch):
            W, b = params
            logits = X_batch @ W + b
            target_logits = jnp.take_along_axis(logits, y_batch[:, None], axis=1)[:, 0]
            return jnp.mean(jax.nn.logsumexp(logits, axis=1) - target_logits)

        def sgd_step(state, rows, X, y, rate):
            """torch.optim.SGD's update: g = ∇ + alpha·W (not b); v ← μ v + g; p ← p − rate·v."""
            params, velocity = state
            loss, (grad_W, grad_b) = jax.value_and_grad(mean_cross_entropy)(params, X[rows], y[rows])
            grads = (grad_W + alpha * params[0], grad_b)
            velocity = tuple(momentum * v + g for v, g in zip(velocity, grads))
            params = tuple(p - rate * v for p, v in zip(params, velocity))
            return (params, velocity), loss

        def train_interval(state, batches, last_batch, X, y, rate):
            """``lax.scan`` of the step over the rows of ``batches`` (S, B), then ``last_batch`` (R,) unless None."""
            state, losses = jax.lax.scan(lambda carry, rows: sgd_step(carry, rows, X, y, rate), state, batches)
            loss_sum = losses.sum() * batches.shape[1]
            if last_batch is not None:
                state, loss = sgd_step(state, last_batch, X, y, rate)
                loss_sum += loss * last_batch.shape[0]
            return state, loss_sum

        def accuracy(params, X, y):
            W, b = params
            return jnp.mean(jnp.argmax(X @ W + b, axis=1) == y)

        # The evaluation intervals' minibatches: (first step, full batches, whether the short last batch follows).
        full_batches, last_rows = divmod(n_rows, batch_size)
        steps = full_batches + (last_rows > 0)
        every = steps_between_evaluations(n_rows, batch_size)
        self.intervals = [(start, min(start + every, full_batches) - start, start + every >= steps > full_batches)
                          for start in range(0, steps, every)]
        rows_type = jax.ShapeDtypeStruct
        self.compiled = {}
        for _, n_full, with_last in self.intervals:
            if (n_full, with_last) not in self.compiled:
                self.compiled[n_full, with_last] = jax.jit(train_interval).lower(
                    self.state, rows_type((n_full, batch_size), jnp.int32),
                    rows_type((last_rows,), jnp.int32) if with_last else None, self.X, self.y,
                    rows_type((), jnp.float32)).compile()
        self.accuracy = jax.jit(accuracy).lower(self.state[0], self.X_test, self.y_test).compile()
        self.setup_seconds = time.perf_counter() - started
        self.rng, self.epochs, self.batch_size = np.random.default_rng(seed), epochs, batch_size
        self.schedule = epoch_schedule(schedule, learning_rate, gamma, step_size, min_learning_rate)

    def epoch(self) -> bool:
        jax, batch_size = self.jax, self.batch_size
        rate = np.float32(self.schedule(len(self.epoch_seconds), 0))
        started = time.perf_counter()
        order = self.rng.permutation(self.X.shape[0]).astype(np.int32)
        for start, n_full, with_last in self.intervals:
            batches = order[start * batch_size:(start + n_full) * batch_size].reshape(n_full, batch_size)
            last_batch = order[(start + n_full) * batch_size:] if with_last else None
            self.state, loss_sum = self.compiled[n_full, with_last](self.state, batches, last_batch, self.X, self.y,
                                                                    rate)
            jax.block_until_ready(loss_sum)  # the interval's one wait for the device, as the torch loop's .item()
            seconds = time.perf_counter() - started
            accuracy = float(self.accuracy(self.state[0], self.X_test, self.y_test))
            self._evaluated(seconds, accuracy)
            started = time.perf_counter()
        self._epoch_done(accuracy)
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
        # One partial_fit pass per evaluation interval, over consecutive row ranges (views) that make up the epoch.
        bounds = np.linspace(0, self.X_train.shape[0], EVALUATIONS_PER_EPOCH + 1).astype(int)
        self.parts = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]

    def epoch(self) -> bool:
        for rows in self.parts:
            started = time.perf_counter()
            self.model.partial_fit(self.X_train[rows], self.y_train[rows], classes=np.arange(N_CLASSES))
            seconds = time.perf_counter() - started
            self._evaluated(seconds, float(self.model.score(self.X_test, self.y_test)))
        self._epoch_done(self.accuracy_curve[-1][1])
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
            seconds = time.perf_counter() - started
        self._evaluated(seconds, float(self.model.score(self.X_test, self.y_test)))
        self._epoch_done(self.accuracy_curve[-1][1])
        ran = int(self.model.n_iter_.max())
        self.iterations += ran
        # Converged before its budget: more chunks would change nothing.
        return self.test_accuracy[-1] >= self.target_accuracy or self.iterations >= self.max_iter or ran < budget

    def summary(self) -> dict:
        return {**super().summary(), "iterations": self.iterations}


class GemmFloor(_Training):
    """Per epoch, what no step can skip: every minibatch's gather ``X[rows]`` of the uint8 pixels (in a shuffled
    order, cast to float32), ``X_b W`` and ``X_bᵀ dZ``, nothing else.

    The pixel scale is applied to neither GEMM's input, as the library's step puts it on the (B, C) products. The
    GEMMs run on the threads the NumPy backend takes for them.
    """

    input = "uint8, cast to float32"

    def __init__(self, mark_baseline, *, epochs, batch_size, seed, data_dir=None, train_rows=None, **_):
        from ..backends import get_backend

        super().__init__(f"NumPy {np.__version__}")
        self.backend, self.flops_per_step = get_backend("numpy"), 2 * batch_size * MNIST_FEATURES * N_CLASSES
        mark_baseline()
        self.X = load_split(data_dir, train_rows, 0)[0]
        self.epochs, self.batch_size, self.rng = epochs, batch_size, np.random.default_rng(seed)
        self.raw = np.empty((batch_size, MNIST_FEATURES), np.uint8)
        self.X_batch = np.empty((batch_size, MNIST_FEATURES), np.float32)
        self.W = self.rng.standard_normal((MNIST_FEATURES, N_CLASSES), dtype=np.float32)
        self.Z = np.empty((batch_size, N_CLASSES), np.float32)
        self.dW = np.empty((MNIST_FEATURES, N_CLASSES), np.float32)

    def epoch(self) -> bool:
        X, raw, X_batch, W, Z, dW = self.X, self.raw, self.X_batch, self.W, self.Z, self.dW
        with self.backend.thread_limit(self.flops_per_step):
            started = time.perf_counter()
            order = self.rng.permutation(X.shape[0])
            for start in range(0, X.shape[0], self.batch_size):
                rows = order[start:start + self.batch_size]
                n = rows.shape[0]
                np.take(X, rows, axis=0, out=raw[:n], mode="clip")
                X_batch[:n] = raw[:n]
                np.matmul(X_batch[:n], W, out=Z[:n])
                np.matmul(X_batch[:n].T, Z[:n], out=dW)
            self.epoch_seconds.append(time.perf_counter() - started)
        return len(self.epoch_seconds) >= self.epochs


class CliTraining(_Training):
    """``linclass-gpu train --json`` as a user runs it (auto backend, a process of its own), in one go, for its peak
    memory.

    The baseline is the peak of a process that makes the imports ``train`` makes before it loads the data (the CLI
    and the auto backend) and starts Numba's runtime (:func:`~linclass_gpu.backends.cpu_loops.start_runtime`: a
    fixed cost, whatever the data); the peak is the ``train`` process's. Both are the largest resident
    set among this process's finished children (``ru_maxrss``), read after each child ends.
    """

    input = "uint8, input_scale=1/255"
    _COMMAND = (sys.executable, "-m", "linclass_gpu.cli")

    def __init__(self, mark_baseline, *, epochs, batch_size, learning_rate, seed, data_dir=None, **_):
        from ..backends import get_backend

        super().__init__(f"linclass-gpu train, backend {get_backend('auto').name}")
        imports = ("import linclass_gpu.cli\nfrom linclass_gpu.backends import get_backend\nget_backend('auto')\n"
                   "from linclass_gpu.backends.cpu_loops import start_runtime\nstart_runtime()")
        subprocess.run([sys.executable, "-c", imports], check=True)
        self._baseline_bytes = _children_peak_bytes()
        self._peak_bytes = None
        self.argv = ["train", "--json", "--no-progress", "--epochs", str(epochs), "--batch-size", str(batch_size),
                     "--learning-rate", str(learning_rate), "--seed", str(seed)]
        if data_dir is not None:
            self.argv += ["--data-dir", str(data_dir)]

    def epoch(self) -> bool:
        finished = subprocess.run([*self._COMMAND, *self.argv], capture_output=True, text=True)
        self._peak_bytes = _children_peak_bytes()
        if finished.returncode != 0:
            raise RuntimeError(f"linclass-gpu {' '.join(self.argv)} exited with {finished.returncode}: "
                               f"{finished.stderr.strip()[-2000:]}")
        summary = json.loads(finished.stdout.strip().splitlines()[-1])
        for seconds, accuracy in zip(summary["epoch_seconds"], summary["test_accuracy_per_epoch"]):
            self._evaluated(seconds, accuracy)
            self._epoch_done(accuracy)
        self.setup_seconds = summary["fit_seconds"] - sum(self.epoch_seconds)
        return True

    def memory(self) -> dict:
        """``baseline_mb``, ``peak_mb`` and ``peak_above_baseline_mb`` of the ``train`` process (None before it ran),
        as :meth:`.isolated.IsolatedWorker.memory` gives them for in-process providers."""
        if self._peak_bytes is None:
            return {"baseline_mb": None, "peak_mb": None, "peak_above_baseline_mb": None}
        return {"baseline_mb": self._baseline_bytes / MB, "peak_mb": self._peak_bytes / MB,
                "peak_above_baseline_mb": (self._peak_bytes - self._baseline_bytes) / MB}
