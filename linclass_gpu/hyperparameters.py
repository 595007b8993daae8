"""The estimators' hyperparameters: the constructor every estimator shares, scikit-learn's parameter protocol
(``get_params``/``set_params``), and the checks that turn the parameters into what a fit needs (the compute dtype,
the rate schedule, the penalty, the momentum, the averaging, the batch and the plateau rule)."""

from __future__ import annotations

import inspect

import numpy as np

from .backends.base import check_optimizer
from .schedules import LearningRateSchedule
from .threads import check_n_threads
from .training import PlateauRule
from .validation import check_in_range, check_positive

# batch_size="auto": MNIST-sized data steps on 128 rows (big enough for efficient GEMMs, small enough for many
# steps per epoch); data sets under 16·128 rows get smaller batches so that an epoch is still 16 steps.
AUTO_BATCH_ROWS = 128
MIN_AUTO_STEPS_PER_EPOCH = 16


class SGDHyperparameters:
    """The constructor parameters of every estimator, their scikit-learn protocol and their checks.

    Each ``_checked_*`` method validates the parameters it reads (a ValueError naming the parameter) and returns the
    setting they make; a fit calls them before any work.
    """

    def __init__(
        self,
        *,
        backend: str = "auto",
        epochs: int = 1000,
        batch_size: int | str = "auto",
        learning_rate: float = 0.5,
        schedule: str = "exponential",
        gamma: float = 0.6,
        min_learning_rate: float = 0.1,
        step_size: int = 5,
        power_t: float = 0.5,
        momentum: float = 0.5,
        nesterov: bool = False,
        alpha: float = 1e-4,
        fit_intercept: bool = True,
        shuffle: bool = True,
        random_state: int | None = None,
        dtype: str = "float32",
        input_scale: float = 1.0,
        progress: bool | None = False,
        output_type: str = "input",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        tol: float | None = 1e-3,
        warm_start: bool = False,
        class_weight: dict | str | None = None,
        penalty: str | None = "l2",
        l1_ratio: float = 0.15,
        optimizer: str = "sgd",
        loss: str = "log_loss",
        average: bool | int = True,
        n_threads: int | None = None,
        deterministic: bool = False,
    ):
        self.backend = backend
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.gamma = gamma
        self.min_learning_rate = min_learning_rate
        self.step_size = step_size
        self.power_t = power_t
        self.momentum = momentum
        self.nesterov = nesterov
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.input_scale = input_scale
        self.progress = progress
        self.output_type = output_type
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.class_weight = class_weight
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.optimizer = optimizer
        self.loss = loss
        self.average = average
        self.n_threads = n_threads
        self.deterministic = deterministic

    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name in inspect.signature(SGDHyperparameters.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters by name (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> SGDHyperparameters:
        """Set constructor parameters by name; unknown names raise ValueError."""
        unknown = set(params) - set(self._param_names())
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {type(self).__name__}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)()
        changed = {k: v for k, v in self.get_params().items() if v != getattr(defaults, k)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- checks -----------------------------------------------------------------------------------------------------

    def _checked_dtype(self) -> np.dtype:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return np.dtype(self.dtype)

    def _checked_schedule(self) -> LearningRateSchedule:
        """Validate the step hyperparameters (epochs, batch, penalty, momentum, rate) and build the schedule."""
        check_positive("epochs", self.epochs, integer=True)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            check_positive("batch_size", self.batch_size, integer=True)
        check_positive("alpha", self.alpha, allow_zero=True)
        check_positive("input_scale", self.input_scale)
        check_in_range("momentum", self.momentum, 0, 1, include_high=False)
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        check_optimizer(self.optimizer, *self._momentum())
        check_positive("learning_rate", self.learning_rate)
        check_n_threads(self.n_threads)
        check_in_range("gamma", self.gamma, 0, 1, include_low=False)
        check_positive("step_size", self.step_size, integer=True)
        check_positive("power_t", self.power_t, allow_zero=True)
        check_positive("min_learning_rate", self.min_learning_rate, allow_zero=True)
        self._average_from()
        self._penalty_strengths()
        return LearningRateSchedule(self.schedule, float(self.learning_rate), float(self.gamma), self.step_size,
                                    float(self.power_t), float(self.alpha),
                                    floor=float(self.min_learning_rate))

    def _average_from(self) -> int | None:
        """The epoch averaging starts from (``average=True``: the first; an int ``k``: after ``k`` epochs), or None.
        Either way the model is the mean of the latest half or more of the averaged epochs (see
        :meth:`~linclass_gpu.training.TrainingHistory.add_to_average`)."""
        if isinstance(self.average, (bool, np.bool_)):
            return 0 if self.average else None
        check_positive("average", self.average, integer=True, allow_zero=True)
        return int(self.average)

    def _momentum(self) -> tuple[float, bool]:
        """``(momentum, nesterov)`` in effect: as given for SGD; none for AdaGrad and Adam, which have their own
        per-parameter scaling (like scikit-learn's parameters that only one mode reads, the others ignore them)."""
        return (self.momentum, self.nesterov) if self.optimizer == "sgd" else (0.0, False)

    def _penalty_strengths(self) -> tuple[float, float]:
        """``(l2, l1)`` from ``penalty``, ``alpha`` and ``l1_ratio``, as scikit-learn maps them: elastic net is
        ``alpha·(1 − l1_ratio)/2·‖W‖² + alpha·l1_ratio·‖W‖₁``."""
        check_in_range("l1_ratio", self.l1_ratio, 0, 1)
        l1_share = {"l2": 0.0, "l1": 1.0, "elasticnet": float(self.l1_ratio), None: None}
        if self.penalty not in l1_share:
            raise ValueError(f"penalty must be 'l2', 'l1', 'elasticnet' or None, got {self.penalty!r}")
        if self.penalty is None:
            return 0.0, 0.0
        return self.alpha * (1.0 - l1_share[self.penalty]), self.alpha * l1_share[self.penalty]

    def _checked_plateau(self) -> PlateauRule | None:
        """scikit-learn's rule: monitor the validation score with ``early_stopping``, else the training loss; act
        when it fails to improve by ``tol`` for ``n_iter_no_change`` epochs (None: never, unless early stopping or
        the adaptive schedule asks, then any improvement counts)."""
        check_positive("n_iter_no_change", self.n_iter_no_change, integer=True)
        if self.tol is not None:
            check_positive("tol", self.tol, allow_zero=True)
        check_in_range("validation_fraction", self.validation_fraction, 0, 1, include_low=False, include_high=False)
        adaptive = self.schedule == "adaptive"
        if self.tol is None and not (self.early_stopping or adaptive):
            return None
        return PlateauRule("validation" if self.early_stopping else "loss", float(self.tol or 0.0),
                           int(self.n_iter_no_change), adaptive=adaptive, restore_best=bool(self.early_stopping))

    def _batch_rows(self, n_rows: int) -> int:
        """Rows per step: ``batch_size``, or for ``"auto"`` :data:`AUTO_BATCH_ROWS`, made smaller on small data so
        that an epoch takes at least :data:`MIN_AUTO_STEPS_PER_EPOCH` steps (112 rows: batches of 7)."""
        if isinstance(self.batch_size, str):
            return min(AUTO_BATCH_ROWS, max(1, n_rows // MIN_AUTO_STEPS_PER_EPOCH))
        return int(self.batch_size)

