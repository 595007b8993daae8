"""linclass_gpu: logistic and softmax regression trained by minibatch SGD, GPU-first.

Importing this package needs only NumPy; triton, torch and cupy are imported when a backend that uses them is chosen.
"""

from .backends import available_backends, get_backend

__version__ = "0.1.0"

__all__ = ["available_backends", "get_backend", "__version__"]
