"""The minibatch SGD loop, the same for every backend: shuffle, batches, schedule, epochs, divergence, progress.

The loop never reads the device inside an epoch. Per epoch it has the backend shuffle the rows, calls the
backend's fused step once per minibatch with a host-computed learning rate, and at the end reads back the summed
loss (the one sync) and a copy of the parameters, which is what a diverged or interrupted fit falls back to.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .backends.base import Backend, FusedSGD
from .schedules import LearningRateSchedule

if TYPE_CHECKING:
    from .distributed import DataParallel


class TrainingDivergedError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite; the model keeps the parameters of the last finite epoch.

    A ValueError too: the usual cause is a setting (the learning rate) or data (features of huge magnitude) that does
    not suit the problem, and code catching bad input with ``except ValueError`` catches this as well.
    """


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
    """

    loss: list[float] = field(default_factory=list)
    validation_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0
    rate_scale: float = 1.0
    best_metric: float = math.nan
    epochs_without_improvement: int = 0

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


def _progress_bar(epochs: int, start_epoch: int, progress: bool | None):
    """A tqdm bar over epochs, or None: on when asked, or by default when stderr is a terminal and tqdm is there."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, initial=start_epoch, unit="epoch", leave=False)


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
    distributed: DataParallel | None = None,
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
        Show a progress bar: always, never, or (None) when stderr is a terminal.
    history : TrainingHistory, optional
        Appended to as epochs finish; pass one in to keep what was recorded if this raises.
    start_epoch : int
        Epochs already done (a resumed run): training continues from this epoch to ``epochs``.
    on_epoch_end : callable (epoch, history, rng) -> None, optional
        Called after each finished epoch, with ``rng`` as the next epoch will find it (for checkpoints); in a
        distributed run on rank 0 only.
    plateau : PlateauRule, optional
        Adapt the rate or stop early when the monitored metric stops improving.
    distributed : DataParallel, optional
        Data-parallel training (:mod:`linclass_gpu.distributed`): ``stepper`` holds this process's shard of
        ``n_rows`` rows; gradients (or, with local SGD, parameters) are reduced over the processes, every process
        visits as many rows per epoch as the largest shard, the epoch's loss is the mean over the rows the processes
        visited (a smaller shard's repeated rows included)
        and the validation score the mean of the processes' scores; progress shows on rank 0 only, and at the end
        the processes check that they hold identical parameters.

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
    last_finite = best = stepper.get_params()
    in_order = backend.asarray(np.arange(n_rows))
    epoch_rows = n_rows if distributed is None else distributed.attach(stepper, backend, n_rows, batch_size)
    rows_per_epoch = epoch_rows if distributed is None else epoch_rows * distributed.world_size
    writer = distributed is None or distributed.is_writer
    bar = _progress_bar(epochs, start_epoch, progress if writer else False)
    # Overflow is found once per epoch and raised as TrainingDivergedError, so NumPy's per-operation warnings would
    # only repeat it (other array libraries ignore this setting).
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            for epoch in range(start_epoch, epochs):
                started = time.perf_counter()
                if distributed is None:
                    rows = backend.permutation(n_rows, rng) if shuffle else in_order
                else:
                    rows = distributed.epoch_order(backend, n_rows, rng, shuffle, in_order)
                for start in range(0, epoch_rows, batch_size):
                    learning_rate = schedule(epoch, history.steps) * history.rate_scale
                    stepper.step(rows[start:start + batch_size], learning_rate)
                    history.steps += 1
                loss_sum = stepper.pop_loss_sum()
                mean_loss = (loss_sum if distributed is None else distributed.sum(loss_sum)) / rows_per_epoch
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
                if score_validation is not None:
                    score = float(score_validation(*params))
                    history.validation_score.append(score if distributed is None else distributed.mean(score))
                history.epoch_seconds.append(time.perf_counter() - started)
                stop = False
                if plateau is not None:
                    is_best, exhausted = history.note_plateau(plateau)
                    best = params if is_best else best
                    if exhausted and plateau.adaptive and learning_rate > MIN_ADAPTIVE_RATE:
                        history.rate_scale /= ADAPTIVE_DIVISOR
                    else:
                        stop = exhausted
                if on_epoch_end is not None and writer:
                    on_epoch_end(epoch, history, rng)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    bar.update()
                if stop:
                    break
            if plateau is not None and plateau.restore_best:
                stepper.set_params(*best)
            if distributed is not None:
                distributed.check_identical(stepper.get_params())
        except (TrainingDivergedError, KeyboardInterrupt):
            stepper.set_params(*last_finite)
            raise
        finally:
            if distributed is not None:
                distributed.detach(stepper)
            if bar is not None:
                bar.close()
    return history
