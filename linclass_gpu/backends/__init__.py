"""Compute backends and the chain that chooses one: triton → cupy → numpy."""

from .base import Backend, BackendUnavailableError, FusedSGD
from .registry import available_backends, backend_statuses, get_backend, probe, resolve_name

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "FusedSGD",
    "available_backends",
    "backend_statuses",
    "get_backend",
    "probe",
    "resolve_name",
]
