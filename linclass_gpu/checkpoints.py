"""Resumable training: a checkpoint every K epochs, and a fit that finds one picks up where it stopped.

A checkpoint holds the parameters, the momentum buffers, the epoch and step counts, the history so far and the
state of the shuffling RNG as it stands after the last finished epoch, so a run killed at any moment and started
again with the same arguments ends bitwise where an uninterrupted run ends (on NumPy; other backends within their
own reproducibility). Files are written atomically (:mod:`.persistence`).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from .arrays import to_numpy
from .backends.base import FusedSGD
from .persistence import (
    COUNT,
    JSON_DICT,
    MODEL_MEMBERS,
    Member,
    encode_json,
    json_value,
    read_npz,
    write_npz_atomically,
)
from .training import TrainingHistory

# Parameters that may differ between the run that wrote a checkpoint and the one resuming it: training longer,
# another backend, how progress and outputs are shown.
RESUMABLE_CHANGES = frozenset({"epochs", "backend", "progress", "output_type"})

# FusedSGD.get_state's keys: parameters, momentum (Adam's first moment), AdaGrad's Σg² (Adam's second moment), and
# the step count Adam's bias correction needs.
_STATE = ("W", "b", "velocity_W", "velocity_b", "accumulator_W", "accumulator_b", "step_count")
# TrainingHistory's scalars: the step count and the plateau rule's state.
_HISTORY_SCALARS = ("steps", "rate_scale", "best_metric", "epochs_without_improvement", "stopped_early",
                    "averaged_epochs", "pending_epochs")
# TrainingHistory's parameter pairs (W, b), None until the loop sets them: the averages of averaged SGD and the best
# epoch's weights that early stopping returns to. A resumed run needs them to end where an uninterrupted one does.
_HISTORY_PARAMS = ("average", "pending_average", "best_params")
_FINITE_FLOATS = Member("f", finite=True)
# What each member of a checkpoint may hold; the shapes are checked against the resuming run's in resume().
_MEMBERS = {
    **{name: MODEL_MEMBERS[name] for name in ("estimator", "params", "classes_")},
    "fingerprint": JSON_DICT, "rng_state": JSON_DICT, "epochs_done": COUNT,
    "loss": Member("f", ndim=1, finite=True), "validation_score": Member("f", ndim=1, finite=True),
    "epoch_seconds": Member("f", ndim=1, finite=True),
    **{name: _FINITE_FLOATS for name in _STATE if name != "step_count"}, "step_count": COUNT,
    "steps": COUNT, "rate_scale": Member("f", ndim=0, finite=True), "epochs_without_improvement": COUNT,
    "best_metric": Member("f", ndim=0),  # NaN until the plateau rule has scored an epoch
    "stopped_early": Member("b", ndim=0), "averaged_epochs": COUNT, "pending_epochs": COUNT,
    **{f"{name}_{part}": _FINITE_FLOATS for name in _HISTORY_PARAMS for part in "Wb"},
}
# Rows hashed per block when fingerprinting features: a device array is brought to the host a block at a time.
_FINGERPRINT_BLOCK_BYTES = 1 << 26


def data_fingerprint(n_features: int, targets: np.ndarray, weights: np.ndarray | None = None,
                     features=None) -> dict:
    """What identifies the training data: its shape and CRC-32s of the encoded labels, the row weights and, when
    given, the feature values.

    Parameters
    ----------
    n_features : int
    targets : ndarray, shape (N,) or (N, L)
        The encoded labels.
    weights : ndarray, shape (N,), optional
    features : array, shape (N, D), optional
        The training rows (NumPy, CuPy or torch): their dtype and a CRC-32 of their values in row order, so that a
        run on changed features (other preprocessing, another scaling) does not resume a stale checkpoint. It reads
        every byte once: about 30 ms for MNIST's 47 MB of uint8 pixels, 120 ms as float32 (once per fit).
    """
    fingerprint = {"rows": len(targets), "features": int(n_features),
                   "labels_crc32": zlib.crc32(np.ascontiguousarray(targets).tobytes()),
                   "weights_crc32": None if weights is None else zlib.crc32(np.ascontiguousarray(weights).tobytes())}
    if features is not None:
        fingerprint["features_dtype"], fingerprint["features_crc32"] = _features_checksum(features)
    return fingerprint


def _features_checksum(features) -> tuple[str, int]:
    """The NumPy dtype of the rows and the CRC-32 of their values in C order, whatever the array's library or
    memory layout."""
    dtype = to_numpy(features[:1]).dtype
    block_rows = max(1, _FINGERPRINT_BLOCK_BYTES // max(1, math.prod(features.shape[1:]) * dtype.itemsize))
    crc = 0
    for start in range(0, features.shape[0], block_rows):
        block = np.ascontiguousarray(to_numpy(features[start:start + block_rows]))
        crc = zlib.crc32(memoryview(block).cast("B"), crc)
    return str(dtype), crc


def check_resumable_params(params: dict) -> None:
    """Refuse, before any training, estimator parameters a checkpoint cannot store or a resumed run cannot match.

    Raises
    ------
    ValueError
        A parameter holds something no file can store (named), or ``random_state`` is a NumPy ``Generator`` or
        ``RandomState``: a fit draws from such an object and so changes it, so a resumed run could not start from
        the state the checkpointed run started from.
    """
    encode_json(params, "params")
    random_state = params.get("random_state")
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        raise ValueError(  # noqa: TRY004 (a valid random_state, refused only for resuming)
            f"random_state is a {type(random_state).__name__}, which a checkpointed fit cannot resume from (the fit "
            "draws from it and changes it): pass an int seed, or None")


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
        check_resumable_params(params)
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
        optional = {f"{name}_{part}" for name in _HISTORY_PARAMS for part in "Wb"}
        stored = read_npz(self.path, set(_MEMBERS) - optional, "checkpoint", _MEMBERS)
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
        epochs_done = self._checked_state(stored)
        self.stepper.set_state({name: stored[name] for name in _STATE})
        history.loss[:] = stored["loss"].tolist()
        history.validation_score[:] = stored["validation_score"].tolist()
        history.epoch_seconds[:] = stored["epoch_seconds"].tolist()
        for name in _HISTORY_SCALARS:
            setattr(history, name, type(getattr(history, name))(stored[name]))
        for name in _HISTORY_PARAMS:
            setattr(history, name, (stored[f"{name}_W"], stored[f"{name}_b"]) if f"{name}_W" in stored else None)
        try:
            rng.bit_generator.state = json_value(stored["rng_state"])
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise ValueError(f"{self.path}: checkpoint member rng_state is not a {type(rng.bit_generator).__name__} "
                             f"state: {error}") from error
        return epochs_done

    def _checked_state(self, stored: dict) -> int:
        """The epochs done, once every array's shape fits this run's model and the history fits the epochs done."""
        expected = self.stepper.get_state()
        problems = [f"{name} has shape {stored[name].shape}, this model's {np.shape(expected[name])}"
                    for name in _STATE if stored[name].shape != np.shape(expected[name])]
        epochs_done = int(stored["epochs_done"])
        if epochs_done < 1:
            problems.append(f"epochs_done is {epochs_done}")
        for name in ("loss", "epoch_seconds", "validation_score"):
            allowed = (0, epochs_done) if name == "validation_score" else (epochs_done,)
            if len(stored[name]) not in allowed:
                problems.append(f"{name} holds {len(stored[name])} epochs, not {epochs_done}")
        if min(int(stored[name]) for name in ("steps", "epochs_without_improvement", "averaged_epochs",
                                              "pending_epochs")) < 0:
            problems.append("a negative step or epoch count")
        for name in _HISTORY_PARAMS:
            present = [f"{name}_{part}" in stored for part in "Wb"]
            if present[0] != present[1]:
                problems.append(f"{name} has only one of its W and b")
            elif present[0] and (stored[f"{name}_W"].shape, stored[f"{name}_b"].shape) != (
                    np.shape(expected["W"]), np.shape(expected["b"])):
                problems.append(f"{name} has shapes {stored[f'{name}_W'].shape} and {stored[f'{name}_b'].shape}, "
                                f"this model's {np.shape(expected['W'])} and {np.shape(expected['b'])}")
        if problems:
            raise ValueError(f"{self.path}: not a usable checkpoint: {'; '.join(problems)}")
        return epochs_done

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
            **{f"{name}_{part}": value for name in _HISTORY_PARAMS if getattr(history, name) is not None
               for part, value in zip("Wb", getattr(history, name))},
        })
