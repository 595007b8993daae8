"""scikit-learn-style estimators: validate, encode labels, hand device arrays to the training loop, keep the books.

No math lives here: the loss, gradients and updates are the backend's, the loop is :mod:`.training`'s and the
row-wise probabilities are :mod:`.backends.rowwise`'s.
"""

from __future__ import annotations

import inspect
import logging

import numpy as np

from .arrays import OUTPUT_TYPES, array_kind, common_kind, convert, to_numpy
from .backends import get_backend
from .backends.rowwise import log_softmax
from .checkpoints import CheckpointKeeper, data_fingerprint
from .persistence import json_value, read_npz, write_npz_atomically
from .schedules import LearningRateSchedule
from .training import TrainingHistory, train_sgd
from .validation import NotFittedError, check_features, check_labels, check_positive

logger = logging.getLogger("linclass_gpu")

_FITTED_ARRAYS = ("coef_", "intercept_", "classes_", "loss_curve_")


class _LinearClassifier:
    """Shared bookkeeping of :class:`SoftmaxRegression` and :class:`LogisticRegression`.

    Subclasses set ``_model`` (the backend's model name) and implement ``_encode_labels``, ``_decision_output`` and
    ``_class_logits``.
    """

    _model: str

    def __init__(
        self,
        *,
        backend: str = "auto",
        epochs: int = 10,
        batch_size: int = 128,
        learning_rate: float = 0.5,
        schedule: str = "exponential",
        gamma: float = 0.6,
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
    ):
        self.backend = backend
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.gamma = gamma
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

    # -- parameters -------------------------------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name in inspect.signature(_LinearClassifier.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters by name (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "_LinearClassifier":
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

    _estimator_type = "classifier"  # scikit-learn before 1.6 reads this; later versions read the tags below

    def __sklearn_tags__(self):
        """scikit-learn's description of this estimator (imported only when scikit-learn asks)."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(multi_class=self._model == "softmax"), input_tags=InputTags())

    def _checked_dtype(self) -> np.dtype:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return np.dtype(self.dtype)

    def _checked_schedule(self) -> LearningRateSchedule:
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("alpha", self.alpha, allow_zero=True)
        check_positive("input_scale", self.input_scale)
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        check_positive("learning_rate", self.learning_rate)
        return LearningRateSchedule(self.schedule, float(self.learning_rate), float(self.gamma), self.step_size,
                                    float(self.power_t))

    @classmethod
    def _n_outputs(cls, n_classes: int) -> int:
        """``K``, the columns of the linear map: one logit for the binary model, one per class for softmax."""
        return 1 if cls._model == "sigmoid" else n_classes

    # -- fitting ----------------------------------------------------------------------------------------------

    def fit(self, X, y, validation_data=None, *, checkpoint=None, checkpoint_every: int = 1):
        """Train by minibatch SGD from zero weights.

        Parameters
        ----------
        X : array-like, shape (N, D)
            Features; uint8 pixels may stay uint8 with ``input_scale=1/255``.
        y : array-like, shape (N,)
            Class labels of any values.
        validation_data : (X_val, y_val), optional
            Scored (accuracy) after every epoch into ``validation_scores_``; labels must be among those of ``y``.
        checkpoint : str or Path, optional
            Resumable training: when the file exists and was written by a fit of the same model on the same data,
            training resumes from it (bitwise as if never interrupted, on NumPy); checkpoints are written there.
            ``epochs``, ``backend``, ``progress`` and ``output_type`` may change between the two runs.
        checkpoint_every : int
            Write the checkpoint after every this many epochs (and after the last).

        Returns
        -------
        self
        """
        dtype, schedule = self._checked_dtype(), self._checked_schedule()
        if validation_data is not None and len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        common_kind(X, y, *(validation_data or ()), names=("X", "y", "validation X", "validation y"))
        X = check_features(X, dtype=dtype)
        classes, targets = self._encode_labels(check_labels(y, X.shape[0]))
        backend = get_backend(self.backend)
        logger.info("%s: training on %s", type(self).__name__, backend.describe())
        n_outputs = self._n_outputs(len(classes))
        stepper = backend.fused_sgd(
            self._model, backend.asarray(X), backend.asarray(targets),
            np.zeros((X.shape[1], n_outputs), dtype=dtype), np.zeros(n_outputs, dtype=dtype),
            max_batch_size=min(self.batch_size, X.shape[0]), l2=self.alpha, momentum=self.momentum,
            nesterov=self.nesterov, fit_intercept=self.fit_intercept, x_scale=self.input_scale,
        )
        score_validation = None
        if validation_data is not None:
            score_validation = self._validation_scorer(backend, classes, X.shape[1], dtype, *validation_data)
        history, rng, start_epoch, on_epoch_end = TrainingHistory(), np.random.default_rng(self.random_state), 0, None
        if checkpoint is not None:
            keeper = CheckpointKeeper(checkpoint, checkpoint_every, self.epochs, type(self).__name__,
                                      self.get_params(), classes, data_fingerprint(X.shape[1], targets), stepper)
            start_epoch, on_epoch_end = keeper.resume(history, rng), keeper.write_if_due
        self.classes_, self.n_features_in_, self.backend_ = classes, X.shape[1], backend.name
        try:
            train_sgd(stepper, backend, X.shape[0], epochs=self.epochs, batch_size=self.batch_size,
                      schedule=schedule, rng=rng, shuffle=self.shuffle, score_validation=score_validation,
                      progress=self.progress, history=history, start_epoch=start_epoch, on_epoch_end=on_epoch_end)
        finally:  # a diverged or interrupted fit still leaves the last finite epoch's model
            W, b = stepper.get_params()
            self.coef_, self.intercept_ = W.T.copy(), b
            self.loss_curve_ = np.asarray(history.loss)
            self.validation_scores_ = np.asarray(history.validation_score) if score_validation else None
            self.epoch_seconds_ = np.asarray(history.epoch_seconds)
            self.n_iter_, self.t_ = len(history.loss), history.steps
        return self

    def _validation_scorer(self, backend, classes, n_features, dtype, X_val, y_val):
        """A function (W, b) -> accuracy on the validation set, which is placed on the device once."""
        X_val = check_features(X_val, dtype=dtype, name="validation X", n_features=n_features)
        y_val = check_labels(y_val, X_val.shape[0], name="validation y")
        unseen = np.setdiff1d(y_val, classes)
        if unseen.size:
            raise ValueError(f"validation y has labels not in the training y: {unseen[:5].tolist()}")
        X_device, expected = backend.asarray(X_val), np.searchsorted(classes, y_val)

        def accuracy(W, b):
            logits = to_numpy(backend.decision_function(X_device, W, b, self.input_scale))
            return float(np.mean(self._class_index(logits) == expected))

        return accuracy

    # -- prediction -------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    def _host_logits(self, X):
        """Logits ``input_scale·X·coef_ᵀ + intercept_`` on the host, shape (N, K), and a function that hands a
        result back in the array kind the caller asked for (``output_type``; by default the kind of ``X``)."""
        self._check_fitted()
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {self.output_type!r}")
        kind = array_kind(X)
        X = check_features(X, dtype=self._checked_dtype(), n_features=self.n_features_in_)
        backend = get_backend(self.backend)
        logits = to_numpy(backend.decision_function(backend.asarray(X), self.coef_.T, self.intercept_,
                                                    self.input_scale))
        target = kind if self.output_type == "input" else self.output_type

        def deliver(result: np.ndarray):
            if result.dtype.kind in "OUS":  # string labels exist only as NumPy arrays
                return result
            return convert(result, target, like=X if target == kind == "torch" else None)

        return logits, deliver

    def decision_function(self, X):
        """Logits: shape (N, C) for softmax regression, (N,) for the binary model (> 0 means ``classes_[1]``)."""
        logits, deliver = self._host_logits(X)
        return deliver(self._decision_output(logits))

    def predict_log_proba(self, X):
        """Log-probability of each class, shape (N, C), columns in the order of ``classes_``."""
        logits, deliver = self._host_logits(X)
        return deliver(log_softmax(np, self._class_logits(logits)))

    def predict_proba(self, X):
        """Probability of each class, shape (N, C); rows sum to 1."""
        logits, deliver = self._host_logits(X)
        return deliver(np.exp(log_softmax(np, self._class_logits(logits))))

    def predict(self, X):
        """The most probable class label of each row, shape (N,)."""
        logits, deliver = self._host_logits(X)
        return deliver(self.classes_[self._class_index(logits)])

    def _class_index(self, logits: np.ndarray) -> np.ndarray:
        return np.argmax(self._class_logits(logits), axis=1)

    def score(self, X, y) -> float:
        """Mean accuracy of ``predict(X)`` against ``y``."""
        logits, _ = self._host_logits(X)
        predictions = self.classes_[self._class_index(logits)]
        return float(np.mean(predictions == check_labels(y, len(predictions))))

    # -- persistence --------------------------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the fitted model to ``path`` as .npz (no pickle), atomically: a temporary file, fsync, rename."""
        self._check_fitted()
        if self.classes_.dtype.kind == "O":
            raise TypeError("cannot save labels stored as Python objects; use numbers or strings")
        write_npz_atomically(path, {**{name: getattr(self, name) for name in _FITTED_ARRAYS},
                                    "estimator": np.array(type(self).__name__), "params": self.get_params(),
                                    "backend_": np.array(self.backend_)})

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; never runs code from the file (``allow_pickle=False``)."""
        stored = read_npz(path, {"estimator", "params", "backend_", *_FITTED_ARRAYS}, "model")
        if str(stored["estimator"]) != cls.__name__:
            raise ValueError(f"{path} holds a {stored['estimator']}, not a {cls.__name__}")
        model = cls(**json_value(stored["params"]))
        for name in _FITTED_ARRAYS:
            setattr(model, name, stored[name])
        model.backend_ = str(stored["backend_"])
        n_outputs = cls._n_outputs(len(model.classes_))
        if model.coef_.ndim != 2 or model.coef_.shape[0] != n_outputs or model.intercept_.shape != (n_outputs,):
            raise ValueError(f"{path}: coef_ {model.coef_.shape} and intercept_ {model.intercept_.shape} do not fit "
                             f"{len(model.classes_)} classes")
        model.n_features_in_ = model.coef_.shape[1]
        model.n_iter_ = len(model.loss_curve_)
        return model


class SoftmaxRegression(_LinearClassifier):
    """Multinomial logistic (softmax) regression trained by minibatch SGD.

    X may be a NumPy, CuPy or torch array (CPU or CUDA) or any DLPack producer; device data stays on its device
    when the backend runs there. ``P(class k | x) = softmax(input_scale·x Wᵀ + b)_k``, fitted by minimising the mean cross-entropy plus
    ``alpha/2·‖W‖²`` (never on ``b``). Labels may be any values; they are never stored one-hot.

    Parameters
    ----------
    backend : {"auto", "triton", "cupy", "numpy"}
        Where to compute; ``auto`` takes the first that runs here (``$LINCLASS_BACKEND`` overrides it).
    epochs : int
        Passes over the training set.
    batch_size : int
        Rows per SGD step; the last step of an epoch takes the remainder.
    learning_rate : float
        Initial step size ``η0``.
    schedule : {"constant", "step", "exponential", "invscaling"}
        How the step size decays (see :class:`~linclass_gpu.schedules.LearningRateSchedule`).
    gamma, step_size, power_t : float, int, float
        Schedule parameters.
    momentum : float
        Heavy-ball momentum in [0, 1).
    nesterov : bool
        Nesterov momentum.
    alpha : float
        L2 strength on the weights (not the bias).
    fit_intercept : bool
        Learn the bias ``b``; when False it stays 0.
    shuffle : bool
        Reshuffle rows every epoch.
    random_state : int or None
        Seed for shuffling; the same seed gives bitwise the same weights on the numpy backend.
    dtype : {"float32", "float64"}
        Compute and weight precision.
    input_scale : float
        The model sees ``input_scale·X``: with uint8 pixels and ``1/255`` the data stays uint8 in memory.
    progress : bool or None
        Progress bar over epochs (needs tqdm): always, never, or (None) when stderr is a terminal.
    output_type : {"input", "numpy", "cupy", "torch"}
        Array kind of ``predict``/``predict_proba``/``decision_function`` results: by default the kind of their
        ``X`` (a torch CUDA tensor in, a tensor on that device out). String labels are always NumPy arrays.

    Notes
    -----
    The defaults (batch 128, ``η0 = 0.5`` decaying by 0.6 per epoch, momentum 0.5, ``alpha = 1e-4``) reach 92% test
    accuracy on MNIST (pixels scaled to [0, 1]) in 5 epochs for every seed we tried, with no tuning.

    Attributes
    ----------
    coef_ : ndarray, shape (C, D)
    intercept_ : ndarray, shape (C,)
    classes_ : ndarray, shape (C,)
    n_features_in_ : int
    n_iter_ : int
        Epochs completed.
    t_ : int
        SGD steps taken.
    loss_curve_ : ndarray, shape (n_iter_,)
        Mean training cross-entropy of each epoch.
    validation_scores_ : ndarray or None
        Validation accuracy after each epoch, when ``fit`` was given ``validation_data``.
    epoch_seconds_ : ndarray, shape (n_iter_,)
    backend_ : str
        The backend that trained the model.
    """

    _model = "softmax"

    def _encode_labels(self, y):
        classes, targets = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y has {len(classes)} class ({classes.tolist()}); at least 2 are needed")
        return classes, targets.astype(np.int64)

    def _decision_output(self, logits):
        return logits

    def _class_logits(self, logits):
        return logits


class LogisticRegression(_LinearClassifier):
    """Binary logistic regression trained by minibatch SGD.

    ``P(classes_[1] | x) = σ(input_scale·x·w + b)``, fitted by minimising the mean binary cross-entropy (the
    negative log-likelihood) computed from the logits, plus ``alpha/2·‖w‖²``. Labels are any two values: {0, 1},
    {−1, +1}, strings…; the larger (in sorted order) is the positive class. Parameters are those of
    :class:`SoftmaxRegression`.

    Attributes
    ----------
    coef_ : ndarray, shape (1, D)
    intercept_ : ndarray, shape (1,)
    classes_ : ndarray, shape (2,)
    n_features_in_, n_iter_, t_, loss_curve_, validation_scores_, epoch_seconds_, backend_
        As for :class:`SoftmaxRegression`.
    """

    _model = "sigmoid"

    def _encode_labels(self, y):
        classes, targets = np.unique(y, return_inverse=True)
        if len(classes) != 2:
            raise ValueError(f"LogisticRegression is binary, but y has {len(classes)} classes "
                             f"({classes[:10].tolist()}); use SoftmaxRegression for more than two")
        return classes, targets.astype(np.float64)

    def _decision_output(self, logits):
        return logits[:, 0]

    def _class_logits(self, logits):
        # P = σ(z) = softmax([0, z])[1], so the two-class logits are [0, z].
        return np.concatenate([np.zeros_like(logits), logits], axis=1)
