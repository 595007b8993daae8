"""Model and checkpoint files: .npz written atomically, read without pickle, checked before use.

A file is written to a temporary name in the same directory, flushed and fsynced, then renamed over the target, so
a reader (or a run killed mid-write) only ever sees the old file or the new one, never half of one. Reading uses
``allow_pickle=False``: a file can hold arrays and strings, never code.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


def write_npz_atomically(path, arrays: dict) -> None:
    """Write ``arrays`` (name -> array or JSON-able value stored as a string) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
    arrays : dict
        ndarray values are stored as they are; dicts and lists are stored as JSON strings. ``format_version`` is
        added.
    """
    path = Path(path)
    stored = {name: np.array(json.dumps(value, default=_plain)) if isinstance(value, (dict, list)) else value
              for name, value in arrays.items()}
    stored["format_version"] = np.array(FORMAT_VERSION)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **stored)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _plain(value):
    """JSON for NumPy scalars (an ``np.int64`` epoch count from a parameter grid, say)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_npz(path, required: set[str], what: str) -> dict[str, np.ndarray]:
    """Read every array of an .npz written by :func:`write_npz_atomically`, checking keys and version.

    Parameters
    ----------
    path : str or Path
    required : set of str
        Keys that must be present.
    what : str
        What the file should be ("model", "checkpoint"), for messages.

    Raises
    ------
    ValueError
        Not an .npz, a key missing, or a format newer than this library reads.
    """
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise ValueError("an .npy array, not an .npz archive")
        with stored:
            contents = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # truncated, corrupt, pickled objects
        raise ValueError(f"{path}: not a readable linclass_gpu {what} file: {error}") from error
    missing = (required | {"format_version"}) - set(contents)
    if missing:
        raise ValueError(f"{path}: not a linclass_gpu {what} file, missing {sorted(missing)}")
    version = int(contents["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: {what} format version {version} is newer than this library's ({FORMAT_VERSION}); "
                         f"upgrade linclass-gpu")
    return contents


def json_value(array: np.ndarray):
    """The value stored by :func:`write_npz_atomically` as a JSON string."""
    return json.loads(str(array))
