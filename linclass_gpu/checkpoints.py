"""Resumable training: a checkpoint every K epochs, and a fit that finds one picks up where it stopped.

A checkpoint holds the parameters, the momentum buffers, the epoch and step counts, the history so far and the
state of the shuffling RNG as it stands after the last finished epoch, so a run killed at any moment and started
again with the same arguments ends bitwise where an uninterrupted run ends (on NumPy; other backends within their
own reproducibility). Files are written atomically (:mod:`.persistence`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .backends.base import FusedSGD
from .persistence import json_value, read_npz, write_npz_atomically
from .training import TrainingHistory

# Parameters that may differ between the run that wrote a checkpoint and the one resuming it: training longer,
# another backend, how progress and outputs are shown.
RESUMABLE_CHANGES = frozenset({"epochs", "backend", "progress", "output_type"})

# FusedSGD.get_state's keys: parameters, momentum (Adam's first moment), AdaGrad's Σg² (Adam's second moment), and
# the step count Adam's bias correction needs.
_STATE = ("W", "b", "velocity_W", "velocity_b", "accumulator_W", "accumulator_b", "step_count")
# TrainingHistory's scalars: the step count and the plateau rule's state.
_HISTORY_SCALARS = ("steps", "rate_scale", "best_metric", "epochs_without_improvement")
_KEYS = {"estimator", "params", "classes_", "fingerprint", "epochs_done", "loss", "validation_score",
         "epoch_seconds", "rng_state", *_STATE, *_HISTORY_SCALARS}


def data_fingerprint(n_features: int, targets: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """What identifies the training data cheaply: its shape and CRCs of the encoded labels and the row weights."""
    return {"rows": int(len(targets)), "features": int(n_features),
            "labels_crc32": zlib.crc32(np.ascontiguousarray(targets).tobytes()),
            "weights_crc32": None if weights is None else zlib.crc32(np.ascontiguousarray(weights).tobytes())}


class CheckpointKeeper:
    """Resumes a fit from ``path`` when it holds a matching checkpoint, and writes one every ``every`` epochs.

    Parameters
    ----------
    path : str or Path
    every : int
        Write after every ``every``-th epoch, and after the last.
    epochs : int
        The fit's total epochs.
    estimator_name : str
    params : dict
        The estimator's constructor parameters.
    classes : ndarray, shape (C,)
    fingerprint : dict
        From :func:`data_fingerprint`.
    stepper : FusedSGD
    """

    def __init__(self, path, every: int, epochs: int, estimator_name: str, params: dict, classes: np.ndarray,
                 fingerprint: dict, stepper: FusedSGD):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
        self.path, self.every, self.epochs = Path(path), int(every), epochs
        self.estimator_name, self.params, self.classes = estimator_name, params, classes
        self.fingerprint, self.stepper = fingerprint, stepper

    def resume(self, history: TrainingHistory, rng: np.random.Generator) -> int:
        """Restore the stepper, ``history`` and ``rng`` from the checkpoint if there is one; return the epochs done.

        Raises
        ------
        ValueError
            The file is not a checkpoint, or it was written by a different model, data or settings.
        """
        if not self.path.exists():
            return 0
        stored = read_npz(self.path, _KEYS, "checkpoint")
        params = json_value(stored["params"])
        changed = sorted(name for name in set(params) | set(self.params)
                         if name not in RESUMABLE_CHANGES and params.get(name) != self.params.get(name))
        problems = []
        if str(stored["estimator"]) != self.estimator_name:
            problems.append(f"it holds a {stored['estimator']}")
        if changed:
            problems.append(f"parameters differ: {', '.join(changed)}")
        if json_value(stored["fingerprint"]) != self.fingerprint:
            problems.append("it was written for other training data")
        if not np.array_equal(stored["classes_"], self.classes):
            problems.append("its classes differ")
        if problems:
            raise ValueError(f"cannot resume from checkpoint {self.path}: {'; '.join(problems)}. Delete it or pass "
                             "another path to start afresh.")
        self.stepper.set_state({name: stored[name] for name in _STATE})
        history.loss[:] = stored["loss"].tolist()
        history.validation_score[:] = stored["validation_score"].tolist()
        history.epoch_seconds[:] = stored["epoch_seconds"].tolist()
        for name in _HISTORY_SCALARS:
            setattr(history, name, type(getattr(history, name))(stored[name]))
        rng.bit_generator.state = json_value(stored["rng_state"])
        return int(stored["epochs_done"])

    def write_if_due(self, epoch: int, history: TrainingHistory, rng: np.random.Generator) -> None:
        """After epoch ``epoch`` (from 0) has finished: write the checkpoint every ``every`` epochs and at the end."""
        done = epoch + 1
        if done % self.every and done != self.epochs:
            return
        write_npz_atomically(self.path, {
            **self.stepper.get_state(), "estimator": np.array(self.estimator_name), "params": self.params,
            "classes_": self.classes, "fingerprint": self.fingerprint, "epochs_done": np.array(done),
            **{name: np.array(getattr(history, name)) for name in _HISTORY_SCALARS}, "loss": np.asarray(history.loss),
            "validation_score": np.asarray(history.validation_score),
            "epoch_seconds": np.asarray(history.epoch_seconds), "rng_state": rng.bit_generator.state,
        })
