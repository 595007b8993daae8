"""The minibatch SGD loop, the same for every backend: shuffle, batches, schedule, epochs, divergence, progress.

The loop never reads the device inside an epoch. Per epoch it has the backend shuffle the rows, calls the
backend's fused step once per minibatch with a host-computed learning rate, and at the end reads back the summed
loss (the one sync) and a copy of the parameters, which is what a diverged or interrupted fit falls back to.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .backends.base import Backend, FusedSGD
from .distributed import DataParallel, SingleProcess
from .schedules import LearningRateSchedule


def _fold_mean(mean: tuple[np.ndarray, ...] | None, count: int,
               values: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], int]:
    """The running mean of ``count`` arrays-tuples with ``values`` added: ``m_n = m_{n−1} + (x − m_{n−1}) / n``
    (exact in any order of magnitude of ``n``, no growing sum)."""
    if mean is None:
        return tuple(v.copy() for v in values), 1
    return tuple(_mean_step(m, v, count + 1) for m, v in zip(mean, values)), count + 1


def _mean_step(mean: np.ndarray, value: np.ndarray, count: int) -> np.ndarray:
    """``mean + (value − mean) / count`` as a new array, computed in it with no other temporary (``mean`` may be
    held elsewhere, e.g. as the best parameters, so it is not changed): a (D, K) mean of hashed features is tens of
    MB, and each temporary a pass over it every epoch."""
    step = np.subtract(value, mean)
    step /= count
    step += mean  # the same sum as mean + step: addition commutes in IEEE arithmetic
    return step


class TrainingDivergedError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite; the model keeps the parameters of the last finite epoch.

    A ValueError too: the usual cause is a setting (the learning rate) or data (features of huge magnitude) that does
    not suit the problem, and code catching bad input with ``except ValueError`` catches this as well.
    """


class ConvergenceWarning(UserWarning):
    """Training ended on its epoch limit before its stopping rule was met (scikit-learn's class too, once loaded)."""


# scikit-learn's floor for "adaptive": a plateau divides the rate while it is above this, then stops training.
MIN_ADAPTIVE_RATE = 1e-6
# scikit-learn's factor for "adaptive": each plateau divides the rate by it.
ADAPTIVE_DIVISOR = 5.0


@dataclass(frozen=True)
class PlateauRule:
    """What counts as a plateau and what to do at one (scikit-learn's SGD rule).

    An epoch fails to improve when its metric does not beat the best so far by more than ``tol``; after ``patience``
    such epochs in a row the learning rate is divided by 5 (``adaptive``, while it stays above 1e-6) or training stops.

    Attributes
    ----------
    monitor : {"loss", "validation"}
        The training loss (lower is better) or the validation score (higher is better).
    tol : float
    patience : int
        ``n_iter_no_change``.
    adaptive : bool
        Divide the rate instead of stopping.
    restore_best : bool
        On stopping or at the end, go back to the parameters of the best epoch (early stopping).
    """

    monitor: str
    tol: float
    patience: int
    adaptive: bool = False
    restore_best: bool = False


@dataclass
class TrainingHistory:
    """What a fit recorded, one entry per finished epoch (filled in as training goes, so it survives an error).

    Attributes
    ----------
    loss : list of float
        Mean data loss over the epoch's minibatches.
    validation_score : list of float
        Score of the validation set after each epoch (empty without one).
    epoch_seconds : list of float
        Wall time of each epoch, the end-of-epoch read included.
    steps : int
        SGD steps taken.
    rate_scale : float
        Factor on the schedule's rate (``adaptive`` shrinks it).
    best_metric : float
        Best value of the monitored metric so far (for a :class:`PlateauRule`).
    epochs_without_improvement : int
    stopped_early : bool
        Training stopped before its epoch limit because the :class:`PlateauRule` said so (it converged).
    average : (W (D, K), b (K,)) or None
        With averaging, the mean of the parameters at the end of the latest averaged epochs (the model's weights;
        see :meth:`add_to_average`).
    averaged_epochs : int
        Epochs in ``average``.
    pending_average : (W, b) or None
    pending_epochs : int
        The mean that takes over from ``average`` at the next power-of-two epoch count, and its epochs.
    best_params : (W, b) or None
        With early stopping, the model's weights after the best epoch so far.
    """

    loss: list[float] = field(default_factory=list)
    validation_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0
    rate_scale: float = 1.0
    best_metric: float = math.nan
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    average: tuple[np.ndarray, np.ndarray] | None = None
    averaged_epochs: int = 0
    pending_average: tuple[np.ndarray, np.ndarray] | None = None
    pending_epochs: int = 0
    best_params: tuple[np.ndarray, np.ndarray] | None = None

    def add_to_average(self, params: tuple[np.ndarray, np.ndarray], epochs_averaged: int) -> None:
        """Fold one epoch's final parameters into the tail average (Polyak–Ruppert over the latest epochs).

        The early iterates, far from the optimum, would slow the mean's convergence for as long again as they took,
        so the average covers only the latest half to three quarters of the averaged epochs, whenever training
        stops: ``average`` holds the mean since the last power-of-two count ``2^j`` but one, ``pending_average``
        the mean since the last, and at each power-of-two count the pending mean takes over and a new one starts.
        ``epochs_averaged`` counts the averaged epochs, this one included.
        """
        self.average, self.averaged_epochs = _fold_mean(self.average, self.averaged_epochs, params)
        self.pending_average, self.pending_epochs = _fold_mean(self.pending_average, self.pending_epochs, params)
        if epochs_averaged & (epochs_averaged - 1) == 0:  # a power of two
            self.average, self.averaged_epochs = self.pending_average, self.pending_epochs
            self.pending_average, self.pending_epochs = None, 0

    def model_params(self, params: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """What the model is after an epoch whose final parameters are ``params``: their tail average while
        averaging, else ``params``."""
        return params if self.average is None else self.average

    def note_plateau(self, rule: PlateauRule) -> tuple[bool, bool]:
        """Score the last epoch against ``rule``; return (it is the best so far, patience has run out)."""
        value = self.validation_score[-1] if rule.monitor == "validation" else self.loss[-1]
        sign = 1.0 if rule.monitor == "validation" else -1.0  # compare so that higher is better
        first = math.isnan(self.best_metric)
        if not first and sign * value <= sign * self.best_metric + rule.tol:
            self.epochs_without_improvement += 1
        else:
            self.epochs_without_improvement = 0
        is_best = first or sign * value > sign * self.best_metric
        if is_best:
            self.best_metric = value
        exhausted = self.epochs_without_improvement >= rule.patience
        if exhausted:
            self.epochs_without_improvement = 0
        return is_best, exhausted


def holdout_rows(targets: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into kept and held-out ones, stratified: each class gives ``fraction`` of its rows (at least
    one row of a class with two or more), so the held-out score sees every class.

    Parameters
    ----------
    targets : ndarray, shape (N,)
        Class indices (or {0, 1} labels).
    fraction : float
        In (0, 1).
    rng : numpy.random.Generator

    Returns
    -------
    kept, held : ndarray of int
        Sorted row indices.
    """
    held = []
    for label in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == label))
        held.append(rows[:int(round(fraction * len(rows))) or (1 if len(rows) > 1 else 0)])
    held = np.sort(np.concatenate(held))
    if len(held) == 0 or len(held) == len(targets):
        raise ValueError(f"validation_fraction={fraction} of {len(targets)} rows leaves no rows to train on or "
                         "none to validate on")
    return np.setdiff1d(np.arange(len(targets)), held), held


def _progress_bar(progress: bool | None):
    """A tqdm bar over one epoch's steps (reset every epoch), or None: on when asked, or by default when stderr is a
    terminal and tqdm is there."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(unit="step", leave=False)


def train_sgd(
    stepper: FusedSGD,
    backend: Backend,
    n_rows: int,
    *,
    epochs: int,
    batch_size: int,
    schedule: LearningRateSchedule,
    rng: np.random.Generator,
    shuffle: bool = True,
    score_validation: Callable[[np.ndarray, np.ndarray], float] | None = None,
    progress: bool | None = None,
    history: TrainingHistory | None = None,
    start_epoch: int = 0,
    on_epoch_end: Callable[[int, TrainingHistory, np.random.Generator], None] | None = None,
    plateau: PlateauRule | None = None,
    distributed: DataParallel | SingleProcess | None = None,
    average_from: int | None = None,
) -> TrainingHistory:
    """Train ``stepper`` in place for ``epochs`` passes over ``n_rows`` rows.

    Parameters
    ----------
    stepper : FusedSGD
        Holds the parameters and the device-resident data.
    backend : Backend
        Places each epoch's row order on the device.
    n_rows : int
        ``N``; the last minibatch of an epoch holds ``N mod batch_size`` rows when that is not 0.
    epochs, batch_size : int
    schedule : LearningRateSchedule
    rng : numpy.random.Generator
        Fixes each epoch's shuffle (:meth:`Backend.permutation`); its state is what a checkpoint saves.
    shuffle : bool
        When False, rows are visited in order every epoch.
    score_validation : callable (W (D, K), b (K,)) -> float, optional
        Called after every epoch with the host parameters.
    progress : bool or None
        Show a progress bar over each epoch's steps: always, never, or (None) when stderr is a terminal.
    history : TrainingHistory, optional
        Appended to as epochs finish; pass one in to keep what was recorded if this raises.
    start_epoch : int
        Epochs already done (a resumed run): training continues from this epoch to ``epochs``.
    on_epoch_end : callable (epoch, history, rng) -> None, optional
        Called after each finished epoch (its figures are the last entries of ``history``), with ``rng`` as the next
        epoch will find it (for checkpoints and progress reports); in a distributed run on rank 0 only.
    plateau : PlateauRule, optional
        Adapt the rate or stop early when the monitored metric stops improving.
    average_from : int, optional
        Averaged SGD: from this epoch (counted from 0) on, the model is the running mean of the parameters at the end
        of each epoch (``history.average``), which is what validation scores, early stopping keeps and the fit
        returns; SGD itself continues from its last iterate.
    distributed : DataParallel or SingleProcess, optional
        Data-parallel training (:mod:`linclass_gpu.distributed`): ``stepper`` holds this process's shard of ``n_rows``
        rows; gradients (or, with local SGD, parameters) are reduced over the processes, every process visits as many
        rows per epoch as the largest shard, the epoch's loss is the mean over the rows the processes visited (a
        smaller shard's repeated rows included) and the validation score the mean of the processes' scores; progress
        shows on rank 0 only, and at the end the processes check that they hold identical parameters. None: one
        process, whose books :class:`~linclass_gpu.distributed.SingleProcess` keeps through the same calls.

    Returns
    -------
    TrainingHistory

    Raises
    ------
    TrainingDivergedError
        The epoch's loss is not finite; ``stepper`` is reset to the parameters of the last finite epoch (or the
        initial ones).
    KeyboardInterrupt
        Re-raised after resetting ``stepper`` to the parameters of the last finished epoch.
    linclass_gpu.distributed.DistributedError
        A peer process died or timed out, or the processes disagree on the run.
    """
    history = TrainingHistory() if history is None else history
    last_finite = stepper.get_params()
    if history.best_params is None:
        history.best_params = last_finite
    in_order = backend.asarray(np.arange(n_rows))
    processes = SingleProcess() if distributed is None else distributed
    epoch_rows = processes.attach(stepper, backend, n_rows, batch_size)
    rows_per_epoch = epoch_rows * processes.world_size
    bar = _progress_bar(progress if processes.is_writer else False)
    # Overflow is found once per epoch and raised as TrainingDivergedError, so NumPy's per-operation warnings would
    # only repeat it (other array libraries ignore this setting).
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            # A resumed run whose checkpoint recorded the stop has nothing left to do, as the uninterrupted run did.
            for epoch in range(start_epoch, start_epoch if history.stopped_early else epochs):
                started = time.perf_counter()
                rows = processes.epoch_order(backend, n_rows, rng, shuffle, in_order)
                n_steps = -(-epoch_rows // batch_size)
                learning_rates = np.array([schedule(epoch, history.steps + t) for t in range(n_steps)])
                learning_rates *= history.rate_scale
                if bar is not None:
                    bar.reset(total=n_steps)
                    bar.set_description(f"epoch {epoch + 1}/{epochs}")
                stepper.run_epoch(rows, learning_rates, batch_size, None if bar is None else bar.update)
                learning_rate = float(learning_rates[-1])
                history.steps += n_steps
                loss_sum = stepper.pop_loss_sum()
                mean_loss = processes.sum(loss_sum) / rows_per_epoch
                params = stepper.get_params()
                if not (math.isfinite(mean_loss) and all(np.isfinite(p).all() for p in params)):
                    raise TrainingDivergedError(
                        f"training diverged: the loss became {mean_loss} in epoch {epoch + 1} at learning_rate="
                        f"{learning_rate:g}; the model keeps the weights of the last finite epoch ({epoch}). "
                        f"Use a smaller learning_rate, e.g. {schedule.initial / 10:g}, or scale the features if "
                        "their magnitudes are large."
                    )
                last_finite = params
                history.loss.append(mean_loss)
                if average_from is not None and epoch >= average_from:
                    history.add_to_average(params, epoch - average_from + 1)
                model_params = history.model_params(params)
                if score_validation is not None:
                    score = float(score_validation(*model_params))
                    history.validation_score.append(processes.mean(score))
                history.epoch_seconds.append(time.perf_counter() - started)
                stop = False
                if plateau is not None:
                    is_best, exhausted = history.note_plateau(plateau)
                    if is_best:
                        history.best_params = model_params
                    if exhausted and plateau.adaptive and learning_rate > MIN_ADAPTIVE_RATE:
                        history.rate_scale /= ADAPTIVE_DIVISOR
                    else:
                        stop = exhausted
                history.stopped_early = stop  # before on_epoch_end, so that a checkpoint records the decision
                if on_epoch_end is not None and processes.is_writer:
                    on_epoch_end(epoch, history, rng)
                if stop:
                    break
            if plateau is not None and plateau.restore_best:
                stepper.set_params(*history.best_params)
            processes.check_identical(stepper.get_params())
        except (TrainingDivergedError, KeyboardInterrupt):
            stepper.set_params(*last_finite)
            raise
        finally:
            processes.detach(stepper)
            if bar is not None:
                bar.close()
    return history
