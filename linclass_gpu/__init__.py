"""linclass_gpu: logistic and softmax regression trained by minibatch SGD, GPU-first.

Importing this package needs only NumPy; triton, torch and cupy are imported when a backend that uses them is chosen.
"""

from .backends import BackendUnavailableError, available_backends, get_backend
from .datasets import load_mnist
from .estimators import LogisticRegression, SoftmaxRegression
from .streaming import fit_stream, open_stream, score_stream
from .training import TrainingDivergedError
from .validation import NotFittedError

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "LogisticRegression",
    "NotFittedError",
    "SoftmaxRegression",
    "TrainingDivergedError",
    "available_backends",
    "fit_stream",
    "get_backend",
    "load_mnist",
    "open_stream",
    "score_stream",
    "__version__",
]
