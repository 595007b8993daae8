"""The minibatch SGD loop, the same for every backend: shuffle, batches, schedule, epochs, divergence, progress.

The loop never reads the device inside an epoch. Per epoch it moves one permutation to the device, calls the
backend's fused step once per minibatch with a host-computed learning rate, and at the end reads back the summed
loss (the one sync) and a copy of the parameters, which is what a diverged or interrupted fit falls back to.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .backends.base import Backend, FusedSGD
from .schedules import LearningRateSchedule


class TrainingDivergedError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite; the model keeps the parameters of the last finite epoch.

    A ValueError too: the usual cause is a setting (the learning rate) or data (features of huge magnitude) that does
    not suit the problem, and code catching bad input with ``except ValueError`` catches this as well.
    """


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
    """

    loss: list[float] = field(default_factory=list)
    validation_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0


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
        Draws each epoch's permutation (on the host, so every backend sees the same order for a seed).
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
        Called after each finished epoch, with ``rng`` as the next epoch will find it (for checkpoints).

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
    """
    history = TrainingHistory() if history is None else history
    last_finite = stepper.get_params()
    in_order = backend.asarray(np.arange(n_rows))
    bar = _progress_bar(epochs, start_epoch, progress)
    # Overflow is found once per epoch and raised as TrainingDivergedError, so NumPy's per-operation warnings would
    # only repeat it (other array libraries ignore this setting).
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            for epoch in range(start_epoch, epochs):
                started = time.perf_counter()
                rows = backend.asarray(rng.permutation(n_rows)) if shuffle else in_order
                for start in range(0, n_rows, batch_size):
                    learning_rate = schedule(epoch, history.steps)
                    stepper.step(rows[start:start + batch_size], learning_rate)
                    history.steps += 1
                mean_loss = stepper.pop_loss_sum() / n_rows
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
                    history.validation_score.append(float(score_validation(*params)))
                history.epoch_seconds.append(time.perf_counter() - started)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, history, rng)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    bar.update()
        except (TrainingDivergedError, KeyboardInterrupt):
            stepper.set_params(*last_finite)
            raise
        finally:
            if bar is not None:
                bar.close()
    return history
