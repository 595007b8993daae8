"""Model and checkpoint files: .npz written atomically, read without pickle, every member checked before use.

Writing goes through :func:`.files.replace_atomically` (a temporary file beside the target, fsync, rename), so a
reader or a writer killed mid-write only ever sees the old file or the new one. Dicts and lists are stored as JSON
strings; a dict whose keys are not all strings (``class_weight={0: 5.0}``) is stored as its ``[key, value]`` pairs so
that the keys come back with their types, and a NumPy ``Generator`` or ``RandomState`` as its bit generator's state.

Reading trusts nothing in the file. The archive is read with :mod:`zipfile` directly, one member at a time and only
the members the reader names: an unknown member is never decompressed. Every member must be stored uncompressed (as
``np.savez`` writes it), so a member can never be larger than the file holding it; its ``.npy`` header is parsed and
its declared shape and dtype checked against the member's size and against what that member may hold (dtype kinds,
dimensions, finite values) before a byte of its values is read; no pickle is ever loaded. Whatever is wrong with a
file — not a zip, an encrypted or compressed member, a bad CRC, a crafted header, NaN weights, malformed JSON — is a
ValueError naming the file and the member.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tokenize
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .files import open_regular_file, replace_atomically

# 2: dicts with non-string keys and random generators are stored tagged (see _ITEMS_TAG, _RANDOM_TAG); version 1
# files (plain JSON) read the same.
FORMAT_VERSION = 2

# The .npy header of anything these files hold is under 200 bytes (np.save pads it to 64-byte multiples).
_MAX_NPY_HEADER_BYTES = 2048

_ITEMS_TAG = "__linclass_items__"  # {_ITEMS_TAG: [[key, value], ...]}: a dict whose keys keep their types
_RANDOM_TAG = "__linclass_random__"  # {_RANDOM_TAG: ["Generator" | "RandomState", bit generator state]}
_BIT_GENERATORS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")


@dataclass(frozen=True)
class Member:
    """What one member of a file may hold.

    Attributes
    ----------
    kinds : str
        NumPy dtype kinds accepted ("f" floats, "iu" integers, "b" bool, "U" text).
    ndim : int or None
        Dimensions required; None accepts any.
    finite : bool
        Float values must all be finite.
    json : type or None
        The member is a JSON string (0-d text) that must decode to this type (``dict``).
    """

    kinds: str
    ndim: int | None = None
    finite: bool = False
    json: type | None = None


TEXT = Member("U", ndim=0)
JSON_DICT = Member("U", ndim=0, json=dict)
COUNT = Member("iu", ndim=0)

# Every member a model file may hold (estimator.save writes them; extras such as multilabel_ are optional).
MODEL_MEMBERS: dict[str, Member] = {
    "format_version": COUNT,
    "estimator": TEXT,
    "params": JSON_DICT,
    "backend_": TEXT,
    "coef_": Member("f", ndim=2, finite=True),
    "intercept_": Member("f", ndim=1, finite=True),
    "classes_": Member("biufU", ndim=1, finite=True),
    "loss_curve_": Member("f", ndim=1, finite=True),
    "feature_names_in_": Member("U", ndim=1),
    "multilabel_": Member("b", ndim=0),
}


def write_npz_atomically(path, arrays: dict) -> None:
    """Write ``arrays`` (name -> array or JSON-able value stored as a string) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Written through a symbolic link; an existing file's mode is kept. Temporary files that an earlier, killed
        write to the same path left behind are removed.
    arrays : dict
        ndarray values are stored as they are; dicts and lists as JSON strings (:func:`encode_json`).
        ``format_version`` is added.

    Raises
    ------
    ValueError
        A dict or list holds something that cannot be stored (named); nothing is written then.
    FileNotFoundError
        The directory does not exist (named).
    """
    stored = {name: np.array(encode_json(value, name)) if isinstance(value, (dict, list)) else value
              for name, value in arrays.items()}
    stored["format_version"] = np.array(FORMAT_VERSION)
    with replace_atomically(path) as file:
        np.savez(file, **stored)


def encode_json(value, name: str) -> str:
    """``value`` as the JSON string a file stores, keys and random generators kept faithfully.

    Raises
    ------
    ValueError
        Something inside cannot be stored; the message says where (``params['random_state']``) and what it is.
    """
    return json.dumps(_storable(value, name))


def _storable(value, where: str):
    """``value`` in plain JSON types: tagged pairs for a dict with non-string keys, NumPy scalars as Python's."""
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and not {_ITEMS_TAG, _RANDOM_TAG} & set(value):
            return {key: _storable(item, f"{where}[{key!r}]") for key, item in value.items()}
        return {_ITEMS_TAG: [[_storable_key(key, where), _storable(item, f"{where}[{key!r}]")]
                             for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_storable(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.generic) and value.dtype.kind in "biufU":
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.random.Generator):
        return {_RANDOM_TAG: ["Generator", _plain_state(value.bit_generator.state)]}
    if isinstance(value, np.random.RandomState):
        return {_RANDOM_TAG: ["RandomState", _plain_state(value.get_state(legacy=False))]}
    raise ValueError(f"{where}: a {type(value).__name__} cannot be stored in a linclass_gpu file (numbers, "
                     "strings, None, lists and dicts of them, and NumPy random generators can)")


def _storable_key(key, where: str):
    if isinstance(key, np.generic) and key.dtype.kind in "biufU":
        return key.item()
    if key is None or isinstance(key, (str, bool, int, float)):
        return key
    raise ValueError(f"{where}: a dict key of type {type(key).__name__} ({key!r}) cannot be stored; use numbers or "
                     "strings")


def _plain_state(state: dict) -> dict:
    """A bit generator's state with its arrays (MT19937's key) as lists."""
    return {name: value.tolist() if isinstance(value, np.ndarray) else
            _plain_state(value) if isinstance(value, dict) else value for name, value in state.items()}


def json_value(array: np.ndarray):
    """The value stored by :func:`write_npz_atomically` as a JSON string (ValueError if it is malformed)."""
    return json.loads(str(array), object_hook=_decoded_object)


def _decoded_object(stored: dict):
    """Undo :func:`_storable`'s tags (json's object_hook: inner objects are decoded first)."""
    if set(stored) == {_ITEMS_TAG}:
        pairs = stored[_ITEMS_TAG]
        if not (isinstance(pairs, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in pairs)):
            raise ValueError(f"{_ITEMS_TAG} must hold [key, value] pairs")
        if not all(pair[0] is None or isinstance(pair[0], (str, bool, int, float)) for pair in pairs):
            raise ValueError("a dict key is neither a number nor a string")
        return {key: value for key, value in pairs}
    if set(stored) == {_RANDOM_TAG}:
        return _random_generator(stored[_RANDOM_TAG])
    return stored


def _random_generator(stored):
    """A ``Generator`` or ``RandomState`` in the state stored as ``[kind, state]``."""
    kind, state = stored if isinstance(stored, list) and len(stored) == 2 else (None, None)
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if kind not in ("Generator", "RandomState") or name not in _BIT_GENERATORS:
        raise ValueError(f"not a stored random generator: {stored!r:.200}")
    bit_generator = getattr(np.random, name)()
    try:
        if kind == "Generator":
            bit_generator.state = state
            return np.random.Generator(bit_generator)
        random_state = np.random.RandomState(bit_generator)
        random_state.set_state(state)
        return random_state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise ValueError(f"a stored {kind} state is malformed: {error}") from error


# Errors the zipfile and .npy header parsers raise on crafted input (an encrypted flag, an unknown compression method
# or zip version, a header that does not tokenize); each becomes a ValueError naming the file.
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, OSError,
                 ValueError, struct.error, OverflowError, SyntaxError, tokenize.TokenError, RecursionError)


def read_npz(path, required: set[str], what: str,
             members: Mapping[str, Member] = MODEL_MEMBERS) -> dict[str, np.ndarray]:
    """Read the members ``members`` describes from an .npz written by :func:`write_npz_atomically`, checking each.

    Parameters
    ----------
    path : str or Path
    required : set of str
        Members that must be present (each must be in ``members``); the others of ``members`` are read when present.
    what : str
        What the file should be ("model", "checkpoint"), for messages.
    members : mapping of str to Member
        What each member may hold. Members of the file not named here are never read.

    Returns
    -------
    dict of str to ndarray
        Each member read, in native byte order; JSON members as their 0-d text (decode with :func:`json_value`).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        The file is not a regular file or not a zip archive, a required member is missing, a member is encrypted,
        compressed, larger than declared, holds the wrong dtype, dimensions or non-finite values, or malformed
        JSON, or the format is newer than this library reads. The message names the file and the member.
    """
    wanted = {"format_version", *members}
    unknown = set(required) - set(members)
    if unknown:
        raise LookupError(f"read_npz: no Member describes {sorted(unknown)}")  # a bug in the caller, not the file
    try:
        file = open_regular_file(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable linclass_gpu {what} file: {error}") from error
    with file:
        try:
            with zipfile.ZipFile(file) as archive:
                infos = _member_infos(archive, wanted)
                missing = ({"format_version"} | set(required)) - set(infos)
                if missing:
                    raise _NotThisFile(f"not a linclass_gpu {what} file, missing {sorted(missing)}")
                archive_size = os.fstat(file.fileno()).st_size
                contents = {"format_version": _read_member(archive, infos["format_version"], COUNT, archive_size)}
                version = int(contents["format_version"])
                if version > FORMAT_VERSION:
                    raise _NotThisFile(f"{what} format version {version} is newer than this library's "
                                       f"({FORMAT_VERSION}); upgrade linclass-gpu")
                for name, info in infos.items():
                    if name != "format_version":
                        contents[name] = _read_member(archive, info, members[name], archive_size)
        except _NotThisFile as error:
            raise ValueError(f"{path}: {error}") from None
        except _PARSE_ERRORS as error:
            raise ValueError(f"{path}: not a readable linclass_gpu {what} file: {error}") from error
    return contents


class _NotThisFile(Exception):
    """A readable file that is not what the caller asked for (missing members, a newer format)."""


def _member_infos(archive: zipfile.ZipFile, wanted: set[str]) -> dict[str, zipfile.ZipInfo]:
    """The zip entry of each wanted member present (``<name>.npy``); a name stored twice is refused."""
    infos = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name in wanted and info.filename.endswith(".npy"):
            if name in infos:
                raise ValueError(f"member {name} is stored twice")
            infos[name] = info
    return infos


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member, archive_size: int) -> np.ndarray:
    """One member's array, every declared size, the dtype, dims and values checked before they are used."""
    if info.flag_bits & 0x1:
        raise ValueError(f"member {info.filename} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {info.filename} is compressed (method {info.compress_type}); linclass_gpu stores "
                         "members uncompressed")
    if info.file_size != info.compress_size or info.header_offset + info.compress_size > archive_size:
        raise ValueError(f"member {info.filename} declares {info.file_size} bytes, more than the file holds")
    try:
        array = _checked_array(archive, info, member)
    except _PARSE_ERRORS as error:
        raise ValueError(f"member {info.filename}: {error}") from error
    return array


def _checked_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member) -> np.ndarray:
    """The .npy in ``info`` (stored, its size within the file), its header checked before its values are read."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream, max_header_size=_MAX_NPY_HEADER_BYTES)
        if dtype.kind not in member.kinds or dtype.hasobject or dtype.itemsize == 0:
            raise ValueError(f"holds dtype {dtype}, not one of the kinds {member.kinds!r}")
        if member.ndim is not None and len(shape) != member.ndim:
            raise ValueError(f"has shape {shape}, not {member.ndim}-D")
        if any(size < 0 for size in shape):
            raise ValueError(f"declares a negative size in shape {shape}")
        value_bytes = math.prod(shape) * dtype.itemsize
        if stream.tell() + value_bytes != info.file_size:
            raise ValueError(f"holds {info.file_size - stream.tell()} bytes of values but its shape {shape} of "
                             f"{dtype} needs {value_bytes}")
        buffer = bytearray(value_bytes)
        if stream.readinto(buffer) != value_bytes:
            raise ValueError("is truncated")
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    array = array.astype(dtype.newbyteorder("="), copy=False)
    if member.finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("holds NaN or infinite values")
    if member.json is not None:
        try:
            decoded = json_value(array)
        except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            raise ValueError(f"is not valid JSON: {error}") from error
        if not isinstance(decoded, member.json):
            raise ValueError(f"holds a JSON {type(decoded).__name__}, not a {member.json.__name__}")
    return array
