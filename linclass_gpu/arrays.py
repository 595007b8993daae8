"""Where the data lives: recognise NumPy, CuPy and torch arrays (and other DLPack producers), check them where they
are, and hand results back in the kind the caller gave.

This is the "data placement" half of the library; the compute path is the backend's. The two are chosen
independently: a torch CUDA tensor can be trained on by the numpy backend (copied to the host once) and a NumPy
array by the triton backend (copied to the device once).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARRAY_KINDS = ("numpy", "cupy", "torch")
OUTPUT_TYPES = ("input",) + ARRAY_KINDS
# The layouts of torch sparse tensors that hold a matrix's rows (block layouts are not taken).
TORCH_SPARSE_LAYOUTS = ("torch.sparse_csr", "torch.sparse_csc", "torch.sparse_coo")

# DLPack device type codes (dlpack.h): host memory, and the ones CuPy or torch can import.
_DLPACK_CPU = 1
_DLPACK_CUDA_DEVICES = (2, 3, 13)  # CUDA, CUDA host (pinned), CUDA managed


def is_sparse_rows(X: Any) -> bool:
    """Whether ``X`` is a scipy.sparse or cupyx.scipy.sparse matrix or array, told without importing either."""
    return type(X).__module__.startswith(("scipy.sparse", "cupyx.scipy.sparse"))


def is_torch_sparse(X: Any) -> bool:
    """Whether ``X`` is a torch sparse tensor (CSR, CSC or COO), told without importing torch."""
    return type(X).__module__.startswith("torch") and str(getattr(X, "layout", "")) in TORCH_SPARSE_LAYOUTS


def array_kind(a: Any) -> str:
    """``"numpy"``, ``"cupy"`` or ``"torch"``: the library an array belongs to.

    Lists, pandas objects and anything else NumPy converts count as ``"numpy"``. A foreign DLPack producer counts as
    the library that will import it: NumPy for host memory, CuPy or torch (whichever is installed) for a GPU.
    """
    module = type(a).__module__.partition(".")[0]
    if module in ("cupy", "torch"):
        return module
    if isinstance(a, np.ndarray) or not (hasattr(a, "__dlpack__") or hasattr(a, "__cuda_array_interface__")):
        return "numpy"
    if hasattr(a, "__dlpack_device__") and a.__dlpack_device__()[0] == _DLPACK_CPU:
        return "numpy"
    for library in ("cupy", "torch"):
        try:
            __import__(library)
            return library
        except ImportError:
            continue
    raise TypeError(f"{type(a).__name__} holds GPU memory, but neither cupy nor torch is installed to read it")


def common_kind(*arrays: Any, names: tuple[str, ...]) -> str:
    """The one kind shared by the arrays among ``arrays``; mixed kinds raise TypeError naming them.

    Plain Python sequences (a list of string labels beside a torch ``X``) and None belong to no kind and are skipped.
    """
    kinds = {name: array_kind(a) for name, a in zip(names, arrays) if _is_array(a)}
    if len(set(kinds.values())) > 1:
        described = ", ".join(f"{name} is {kind}" for name, kind in kinds.items())
        raise TypeError(f"inputs of one call must be of one array kind, but {described}; convert them to one kind")
    return next(iter(kinds.values()), "numpy")


def _is_array(a: Any) -> bool:
    return hasattr(a, "dtype") or hasattr(a, "__dlpack__") or hasattr(a, "__cuda_array_interface__")


def native(a: Any, kind: str) -> Any:
    """``a`` as an array of its kind's own type (a foreign DLPack producer is imported, zero-copy)."""
    if kind == "numpy":
        return np.from_dlpack(a) if hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray) else np.asarray(a)
    if kind == "torch":
        import torch

        return a if isinstance(a, torch.Tensor) else torch.from_dlpack(a)
    import cupy

    return a if isinstance(a, cupy.ndarray) else cupy.asarray(a)


def to_numpy(a: Any) -> np.ndarray:
    """A host NumPy array with the contents of ``a``, of any kind (no copy when it already is one)."""
    kind = array_kind(a)
    a = native(a, kind)
    if kind == "torch":
        return a.detach().cpu().numpy()
    return a.get() if kind == "cupy" else a


def convert(a: Any, kind: str, like: Any = None) -> Any:
    """``a`` (any kind) as ``kind``; for torch, on the device of ``like`` when given. Zero-copy where possible."""
    if array_kind(a) == kind and (kind != "torch" or like is None or a.device == like.device):
        return a
    if kind == "numpy":
        return to_numpy(a)
    if kind == "torch":
        import torch

        device = like.device if like is not None else None
        if array_kind(a) == "cupy":
            return torch.from_dlpack(a).to(device)
        return torch.as_tensor(to_numpy(a), device=device)
    import cupy

    return cupy.from_dlpack(a) if array_kind(a) == "torch" else cupy.asarray(a)


def numeric_kind(a: Any) -> str:
    """NumPy's dtype kind letter of ``a`` (``"f"`` float, ``"u"``/``"i"`` integer, ``"b"`` bool, …), any library."""
    name = str(a.dtype).removeprefix("torch.")
    if name == "bfloat16":  # not a NumPy dtype
        return "f"
    try:
        return np.dtype(name).kind
    except TypeError:
        return "O"


def all_finite(a: Any, kind: str) -> bool:
    """Whether every entry of the float array ``a`` is finite, computed where ``a`` lives (one scalar read back)."""
    if kind == "torch":
        import torch

        return bool(torch.isfinite(a).all())
    return bool((np if kind == "numpy" else __import__("cupy")).isfinite(a).all())


def first_non_finite(a: Any) -> tuple[int, int, float]:
    """Row, column and value of the first NaN or infinite entry of a 2-D array (for error messages)."""
    host = to_numpy(a)
    row, column = np.argwhere(~np.isfinite(host))[0]
    return int(row), int(column), float(host[row, column])


def astype(a: Any, kind: str, dtype: np.dtype) -> Any:
    """``a`` converted to the NumPy ``dtype`` in its own library, without a copy when it already has it."""
    if kind == "torch":
        import torch

        return a.to(getattr(torch, np.dtype(dtype).name))
    with np.errstate(over="ignore"):  # values beyond the range become inf, which the caller reports
        return a.astype(dtype, copy=False)
