"""Data larger than memory: rows memory-mapped from raw IDX or .npy files, read one chunk at a time, trained on by
``partial_fit``.

A file is mapped, never loaded whole: its pages belong to the OS page cache, which drops them under memory pressure
(they are clean copies of the file), so the process's own memory holds one chunk at a time — a copy in native byte
order, its pixels still uint8 — plus what ``partial_fit`` allocates for it. The chunk's size comes from a byte budget
or a row count.

One epoch reads every row once, a chunk at a time, the chunks in an order drawn afresh each epoch; ``partial_fit``
shuffles the rows inside each chunk with the estimator's own random state. Unlike ``fit``, a minibatch never mixes rows
of two chunks, so rows sorted on disk (by class, by date) stay grouped when a chunk is contiguous rows: for such a file
build each chunk from many small blocks drawn from all over it (``blocks_per_chunk``), or shuffle it once.

A mapped file must not change while it is streamed: reading a page of a file truncated under the mapping kills the
process with SIGBUS, beyond any exception handler. So each file's size, modification time and inode are noted when
the stream is opened and checked again before every chunk is read; a change is a ValueError naming the file. (A
truncation in the instant between that check and the chunk's copy still crashes: only a private copy could close
that window.) Only regular files are mapped: a FIFO would block the reader forever.
"""

from __future__ import annotations

import math
import os
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .files import open_regular_file
from .idx import GZIP_MAGIC, read_idx_header
from .training import PlateauRule, TrainingDivergedError, TrainingHistory
from .validation import check_labels, check_positive

__all__ = ["RowStream", "StreamHistory", "fit_stream", "map_rows", "open_stream", "score_stream"]

NPY_MAGIC = np.lib.format.MAGIC_PREFIX  # b"\x93NUMPY"
# NumPy dtype kinds each role accepts: features are real numbers (bool, int, uint, float); labels may also be strings.
FEATURE_KINDS = "biuf"
LABEL_KINDS = "biufUS"

PathOrArray = str | os.PathLike | np.ndarray


def map_rows(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a raw IDX or .npy file read-only, without reading its values.

    Parameters
    ----------
    path : str or path-like
        A .npy file (any version NumPy writes) or an uncompressed IDX file; the format is recognised by its magic
        bytes, not by the name.

    Returns
    -------
    numpy.memmap, shape as stored
        IDX values keep their big-endian dtype and .npy values theirs; :meth:`RowStream.read_chunk` brings each chunk
        to native order.

    Raises
    ------
    ValueError
        Not a regular file (a FIFO, a directory), a gzip-compressed file (it cannot be mapped: decompress it first), a
        file that is neither .npy nor valid IDX, a truncated file, or one that holds no values.
    TypeError
        A .npy file of Python objects.
    """
    path = Path(path)
    with open_regular_file(path) as file:
        start = file.read(len(NPY_MAGIC))
        if start.startswith(GZIP_MAGIC):
            raise ValueError(f"{path} is gzip-compressed, and a compressed file cannot be memory-mapped: decompress it "
                             f"once (gunzip -k {path}) and stream the raw file")
        if start == NPY_MAGIC:
            file.seek(0)
            try:
                version = np.lib.format.read_magic(file)
                # Versions 2 and 3 share the header layout (3 only allows UTF-8 field names, which no numeric array
                # has).
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(file)
            # NumPy parses the header dict with Python's tokenizer: a crafted one raises any of these.
            except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as exc:
                raise ValueError(f"{path}: not a valid .npy header: {exc}") from exc
            offset = file.tell()
            if dtype.hasobject:
                raise TypeError(f"{path} holds Python objects (dtype {dtype}), which cannot be memory-mapped; save "
                                "the values as numbers (e.g. float32, or uint8 pixels)")
    if start != NPY_MAGIC:
        try:
            header = read_idx_header(path)
        except ValueError as exc:
            raise ValueError(f"expected a .npy or raw IDX file: {exc}") from exc
        shape, fortran_order, dtype, offset = header.dims, False, header.dtype, header.offset
    needed = math.prod(shape) * dtype.itemsize
    if needed == 0:
        raise ValueError(f"{path} holds no values (shape {tuple(shape)})")
    held = path.stat().st_size - offset
    if held < needed:
        raise ValueError(f"{path} is truncated: {held} bytes of values, but shape {tuple(shape)} of {dtype} needs "
                         f"{needed}")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                     order="F" if fortran_order else "C")


@dataclass(frozen=True)
class MappedFile:
    """A memory-mapped file as the stream found it: what must not change while its rows are read."""

    path: str
    size: int
    modified_ns: int
    inode: int

    @classmethod
    def of(cls, array: np.ndarray) -> MappedFile | None:
        """The file ``array`` maps (a ``numpy.memmap`` or a view of one), as it is now; None for memory."""
        while array is not None and not isinstance(array, np.memmap):
            array = array.base if isinstance(array.base, np.ndarray) else None
        if array is None or array.filename is None:
            return None
        status = os.stat(array.filename)
        return cls(str(array.filename), status.st_size, status.st_mtime_ns, status.st_ino)

    def check_unchanged(self) -> None:
        """Raise ValueError if the file was truncated, rewritten or replaced since it was noted."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            status = None
        if status is None or (status.st_size, status.st_mtime_ns, status.st_ino) != (
                self.size, self.modified_ns, self.inode):
            now = "removed" if status is None else f"{status.st_size} bytes, modified at {status.st_mtime_ns} ns"
            raise ValueError(f"{self.path} changed while it was being streamed ({self.size} bytes, modified at "
                             f"{self.modified_ns} ns, when the stream was opened; now {now}): a mapped file must stay "
                             "as it is until training ends (reading a truncated one would kill the process)")


@dataclass(frozen=True)
class RowStream:
    """Features, labels and optional weights of the same rows, read in chunks of ``blocks_per_chunk`` blocks of
    ``block_rows`` rows.

    Made by :func:`open_stream`, which validates everything; the arrays are usually memory-mapped files. The rows are
    cut into blocks in file order (the last block holds the rest); an epoch visits the blocks in an order drawn from a
    random generator (or in file order) and reads each run of ``blocks_per_chunk`` of them as one chunk. With one
    block per chunk, chunks are contiguous rows and only their order is shuffled; with more, every chunk mixes rows
    from all over the file.

    Attributes
    ----------
    features : ndarray, shape (N, ...)
        One row per sample; trailing dims (an image's 28×28) are flattened when read.
    labels : ndarray, shape (N,) or (N, 1), or (N, L) 0/1 indicators of L labels (multilabel)
    sample_weight : ndarray, shape (N,), or None
    block_rows : int
        Rows per block, the unit read from the file.
    blocks_per_chunk : int
    label_map : callable (ndarray) -> ndarray, or None
        Applied to each chunk's labels ((n,), or (n, L) indicators) as it is read (e.g. one class against the rest).
    mapped_files : tuple of MappedFile
        The files the arrays map, as they were when the stream was opened; checked before every read.
    """

    features: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    sample_weight: np.ndarray | None = field(repr=False)
    block_rows: int
    blocks_per_chunk: int = 1
    label_map: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    mapped_files: tuple[MappedFile, ...] = ()

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]

    @property
    def n_features(self) -> int:
        return math.prod(self.features.shape[1:])

    @property
    def chunk_rows(self) -> int:
        """Rows of a chunk (but the one holding the last, shorter block)."""
        return self.block_rows * self.blocks_per_chunk

    @property
    def n_blocks(self) -> int:
        return -(-self.n_rows // self.block_rows)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_blocks // self.blocks_per_chunk)

    def chunk_blocks(self, rng: np.random.Generator | None) -> list[np.ndarray]:
        """One epoch's chunks, each as the indices of its blocks: the blocks in an order drawn from ``rng`` (in file
        order when it is None), taken ``blocks_per_chunk`` at a time."""
        order = np.arange(self.n_blocks) if rng is None else rng.permutation(self.n_blocks)
        return [order[start:start + self.blocks_per_chunk] for start in range(0, self.n_blocks, self.blocks_per_chunk)]

    def read_chunk(self, blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The rows of ``blocks`` (block indices), one after another, read into memory: one new array each for the
        features, labels and weights, in native byte order with the dtypes kept (uint8 stays uint8).

        Returns
        -------
        X : ndarray, shape (n, D)
        y : ndarray, shape (n,), or (n, L) for multilabel indicators
        sample_weight : ndarray, shape (n,), or None
        """
        self.check_files_unchanged()
        spans = self._spans(blocks)
        X = _gather(self.features, spans)
        weights = None if self.sample_weight is None else _gather(self.sample_weight, spans)
        return X.reshape(len(X), self.n_features), self._read_labels(spans), weights

    def chunks(self, rng: np.random.Generator | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Every chunk of one epoch, as :meth:`read_chunk` gives it, in the order of :meth:`chunk_blocks`.

        A loop whose names still hold one chunk while the next is read holds two; :func:`fit_stream` drops each
        before reading the next.
        """
        for blocks in self.chunk_blocks(rng):
            yield self.read_chunk(blocks)

    @property
    def multilabel(self) -> bool:
        """Whether the labels are an indicator matrix (N, L), L >= 2."""
        return self.labels.ndim == 2 and self.labels.shape[1] > 1

    def classes(self) -> np.ndarray:
        """The sorted distinct labels of all rows (after ``label_map``), gathered one chunk of labels at a time;
        ``arange(L)`` for multilabel indicators, whose columns are the labels."""
        if self.multilabel:
            return np.arange(self.labels.shape[1])
        uniques = []
        for blocks in self.chunk_blocks(None):
            self.check_files_unchanged()
            uniques.append(np.unique(self._read_labels(self._spans(blocks))))
        return np.unique(np.concatenate(uniques))

    def check_files_unchanged(self) -> None:
        """Raise ValueError naming a mapped file that changed since the stream was opened (see :class:`MappedFile`)."""
        for mapped in self.mapped_files:
            mapped.check_unchanged()

    def _spans(self, blocks) -> list[slice]:
        return [slice(block * self.block_rows, min((block + 1) * self.block_rows, self.n_rows)) for block in blocks]

    def _read_labels(self, spans: list[slice]) -> np.ndarray:
        """The labels of the rows in ``spans``, in memory, shape (n,) (or (n, L) indicators), through ``label_map``."""
        labels = _gather(self.labels, spans)
        labels = labels if self.multilabel else labels.reshape(-1)
        return labels if self.label_map is None else self.label_map(labels)


def open_stream(features: PathOrArray, labels: PathOrArray, *, chunk_bytes: int | None = None,
                chunk_rows: int | None = None, sample_weight: PathOrArray | None = None,
                batch_size: int | None = None, blocks_per_chunk: int = 1,
                label_map: Callable[[np.ndarray], np.ndarray] | None = None) -> RowStream:
    """Map features and labels (and weights) from files and check they describe the same rows.

    Parameters
    ----------
    features : str, path-like or ndarray
        A .npy or raw IDX file (see :func:`map_rows`) of shape (N, D) or (N, d1, d2, …), or an array already in
        memory or mapped. Real numbers: bool, integers or floats; uint8 pixels stay uint8.
    labels : str, path-like or ndarray
        Shape (N,) or (N, 1): numbers or strings; or (N, L) 0/1 indicators for a multilabel LogisticRegression.
    chunk_bytes : int, optional
        The budget of one chunk in memory: ``chunk_rows = chunk_bytes // row_bytes``, where a row's bytes are those of
        its features, label and weight as stored. Give this or `chunk_rows`. ``partial_fit`` adds its own per-chunk
        arrays: the row order and class ids (16 bytes a row; a one-vs-rest or multilabel LogisticRegression also
        holds its (n, K) targets, as bytes and, on NumPy, in the compute dtype), and a copy of the features in the
        estimator's dtype unless they are uint8 or already in it.
    chunk_rows : int, optional
        Rows per chunk.
    sample_weight : str, path-like or ndarray, optional
        Shape (N,): each row's non-negative loss weight.
    batch_size : int, optional
        Round a chunk's rows down to a multiple of it, as ``blocks_per_chunk`` blocks of equal rows (possible when a
        block holds at least ``batch_size / gcd(batch_size, blocks_per_chunk)`` rows), so that no chunk but the last
        ends in a short minibatch and an epoch takes as many SGD steps as ``fit`` would.
    blocks_per_chunk : int, default 1
        Assemble each chunk from this many blocks of ``chunk_rows // blocks_per_chunk`` rows drawn at random from the
        whole file, rather than from contiguous rows: needed when the file is sorted (by class, by date), where a
        contiguous chunk holds one or two classes. Reads get smaller (a block at a time); memory does not grow.
    label_map : callable, optional
        Applied to each chunk's labels as it is read.

    Returns
    -------
    RowStream

    Raises
    ------
    ValueError
        Shapes that disagree (features not 2-D or more, labels not (N,) or (N, L), weights not 1-D, different numbers
        of rows), no rows, a gzip or otherwise unreadable file, one that is not a regular file (a FIFO), neither or
        both of `chunk_bytes` and `chunk_rows`, or a budget smaller than one row.
    TypeError
        Features or weights that are not real numbers, labels that are neither numbers nor strings.
    """
    X = _rows(features, "features", FEATURE_KINDS)
    y = _rows(labels, "labels", LABEL_KINDS)
    weights = None if sample_weight is None else _rows(sample_weight, "sample_weight", FEATURE_KINDS)
    if X.ndim < 2 or math.prod(X.shape[1:]) == 0:
        raise ValueError(f"features must have a row per sample and at least one feature, shape (N, D) or (N, d1, "
                         f"d2, ...): got shape {X.shape}")
    for name, array in (("labels", y), ("sample_weight", weights)):
        if array is not None and not (array.ndim == 1 or (name == "labels" and array.ndim == 2)):
            raise ValueError(f"{name} must be one value per row, shape (N,)"
                             f"{', or an indicator matrix (N, L)' if name == 'labels' else ''}, got shape "
                             f"{array.shape}")
        if array is not None and array.shape[0] != X.shape[0]:
            raise ValueError(f"features hold {X.shape[0]} rows but {name} hold {array.shape[0]}: the files must "
                             "describe the same rows")
    if y.ndim == 1 or y.shape[1] == 1:  # class labels, checked as stored (before label_map), rows as in the file
        check_labels(y.reshape(-1), X.shape[0], name="labels" if isinstance(labels, np.ndarray) else
                     f"labels ({labels})")
    if (chunk_bytes is None) == (chunk_rows is None):
        raise ValueError("give exactly one of chunk_bytes (a memory budget) and chunk_rows")
    if chunk_rows is None:
        check_positive("chunk_bytes", chunk_bytes, integer=True)
        row_bytes = X.dtype.itemsize * math.prod(X.shape[1:]) + y.dtype.itemsize * math.prod(y.shape[1:]) + (
            0 if weights is None else weights.dtype.itemsize)
        if chunk_bytes < row_bytes:
            raise ValueError(f"chunk_bytes={chunk_bytes} is smaller than one row ({row_bytes} bytes of features, "
                             "label and weight): raise the budget")
        chunk_rows = chunk_bytes // row_bytes
    check_positive("chunk_rows", chunk_rows, integer=True)
    check_positive("blocks_per_chunk", blocks_per_chunk, integer=True)
    chunk_rows = min(chunk_rows, X.shape[0])
    if blocks_per_chunk > chunk_rows:
        raise ValueError(f"blocks_per_chunk={blocks_per_chunk} is more than the {chunk_rows} rows of a chunk: every "
                         "block needs a row")
    block_rows = chunk_rows // blocks_per_chunk
    if batch_size is not None:
        check_positive("batch_size", batch_size, integer=True)
        # A chunk of blocks_per_chunk·block_rows rows is whole minibatches when block_rows is a multiple of
        # batch_size / gcd(batch_size, blocks_per_chunk); a single chunk holding every row is left whole.
        unit = batch_size // math.gcd(batch_size, blocks_per_chunk)
        if block_rows >= unit and block_rows * blocks_per_chunk < X.shape[0]:
            block_rows -= block_rows % unit
    mapped_files = tuple(dict.fromkeys(mapped for mapped in map(MappedFile.of, (X, y, weights)) if mapped))
    return RowStream(X, y, weights, int(block_rows), int(blocks_per_chunk), label_map, mapped_files)


@dataclass
class StreamHistory:
    """What :func:`fit_stream` recorded, one entry per epoch.

    Attributes
    ----------
    loss : list of float
        Mean training loss of the epoch's rows (each chunk's mean weighted by its rows), as ``fit``'s ``loss_curve_``.
    validation_score : list of float
        Accuracy on the validation stream after each epoch (empty without one).
    epoch_seconds : list of float
        Wall time of each epoch, reading the chunks and scoring included.
    chunks_per_epoch : int
    stopped_early : bool
        The training loss stopped improving by ``tol`` before the epoch limit (``fit``'s rule), which ended training.
    """

    loss: list[float] = field(default_factory=list)
    validation_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    chunks_per_epoch: int = 0
    stopped_early: bool = False


def fit_stream(estimator, stream: RowStream, *, epochs: int | None = None, seed: int | None = None,
               classes=None, validation: RowStream | None = None, epoch_callback=None) -> StreamHistory:
    """Train an unfitted estimator from zero weights over `stream` for `epochs` epochs, one ``partial_fit`` per chunk.

    Each epoch visits the stream's blocks in an order drawn from `seed` (file order when ``estimator.shuffle`` is
    False), ``blocks_per_chunk`` of them to a chunk; ``partial_fit`` shuffles the rows inside each chunk. Momentum and
    optimizer state carry from chunk to chunk. Only one chunk is in memory at a time: each is read just before its
    ``partial_fit`` call and dropped after it.

    The learning rate follows ``fit``'s: every chunk of epoch ``e`` is a ``partial_fit(..., epoch=e)`` call, so the
    schedules indexed by epoch (``"step"``, ``"exponential"``) decay once per pass over the stream, not per chunk; the
    others count SGD steps, which carry across calls. With ``shuffle=False`` and chunks of a multiple
    of ``batch_size`` rows (``open_stream(batch_size=...)``) the result equals ``fit`` on the whole data. Like
    ``fit``, training stops once the epoch's loss has failed to improve by ``estimator.tol`` for ``n_iter_no_change``
    epochs (unless ``tol`` is None); there is no early stopping on a validation split and no ``"adaptive"`` plateau.
    With ``average``, the mean runs over the weights at the end of each ``partial_fit`` call (each chunk), so it is
    ``fit``'s exactly only with one chunk per epoch.

    Parameters
    ----------
    estimator : SoftmaxRegression or LogisticRegression
        Unfitted; it is trained in place with its own parameters (backend, batch_size, input_scale, ...).
    stream : RowStream
    epochs : int, optional
        Passes over the stream; default ``estimator.epochs``.
    seed : int, optional
        Seeds the block order of every epoch.
    classes : array-like, optional
        Every label; by default gathered from the stream's labels in one chunked pass.
    validation : RowStream, optional
        Scored (accuracy, :func:`score_stream`) after every epoch.
    epoch_callback : callable (epoch, history) -> None, optional
        Called as each epoch ends, with its number (from 0) and the :class:`StreamHistory` whose last entries are that
        epoch's figures, as ``fit(..., epoch_callback=...)`` is; for progress reports. An interrupted run's finished
        epochs are those it was called for.

    Returns
    -------
    StreamHistory

    Raises
    ------
    ValueError
        An estimator already fitted, a stream and validation stream with different numbers of features, or what
        ``partial_fit`` refuses (``class_weight="balanced"``, a bad parameter).
    TrainingDivergedError
        A chunk's loss became NaN or infinite; the message says which epoch and chunk, and the model keeps the
        weights from before that chunk.
    """
    if hasattr(estimator, "coef_"):
        raise ValueError(f"this {type(estimator).__name__} is already fitted, and fit_stream trains from zero weights "
                         "as fit does: pass an unfitted copy (sklearn.base.clone), or continue it with partial_fit "
                         "over stream.chunks()")
    epochs = estimator.epochs if epochs is None else epochs
    check_positive("epochs", epochs, integer=True)
    if validation is not None and validation.n_features != stream.n_features:
        raise ValueError(f"the validation stream has {validation.n_features} features but the training stream "
                         f"{stream.n_features}")
    classes = stream.classes() if classes is None else classes
    order_rng = np.random.default_rng(seed) if estimator.shuffle else None
    history = StreamHistory(chunks_per_epoch=stream.n_chunks)
    plateau = None if estimator.tol is None else PlateauRule("loss", float(estimator.tol),
                                                             int(estimator.n_iter_no_change))
    plateau_books = TrainingHistory()  # the rule's counters, fed the stream's epoch losses
    for epoch in range(epochs):
        started, loss_sum = time.perf_counter(), 0.0
        for position, blocks in enumerate(stream.chunk_blocks(order_rng)):
            X, y, weights = stream.read_chunk(blocks)
            try:
                estimator.partial_fit(X, y, classes=classes, sample_weight=weights, epoch=epoch)
            except TrainingDivergedError as exc:  # its epoch is partial_fit's call count: say where in the stream
                raise TrainingDivergedError(f"epoch {epoch + 1} of the stream, its chunk {position + 1} of "
                                            f"{stream.n_chunks} (blocks {blocks.tolist()} of "
                                            f"{stream.block_rows} rows): {exc}") from exc
            loss_sum += float(estimator.loss_curve_[-1]) * len(y)
            del X, y, weights  # the next chunk is read only after this one is gone
        history.loss.append(loss_sum / stream.n_rows)
        if validation is not None:
            history.validation_score.append(score_stream(estimator, validation))
        history.epoch_seconds.append(time.perf_counter() - started)
        if epoch_callback is not None:
            epoch_callback(epoch, history)
        if plateau is not None:
            plateau_books.loss.append(history.loss[-1])
            if plateau_books.note_plateau(plateau)[1]:
                history.stopped_early = True
                break
    return history


def score_stream(estimator, stream: RowStream) -> float:
    """Accuracy of a fitted estimator over every row of `stream`, predicted one chunk at a time.

    Returns
    -------
    float
        The fraction of rows whose predicted class equals their label (a multilabel row: every label right), as
        ``estimator.score`` counts them; sample weights not applied.
    """
    correct = 0.0
    for X, y, _ in stream.chunks():
        correct += estimator.score(X, y) * len(y)  # the chunk's count of rows predicted right
    return correct / stream.n_rows


def _rows(source: PathOrArray, name: str, kinds: str) -> np.ndarray:
    """``source`` as an array, mapped when it is a path, whose dtype kind is among ``kinds``."""
    array = source if isinstance(source, np.ndarray) else map_rows(source)
    if array.dtype.kind not in kinds:
        described = "real numbers" if kinds == FEATURE_KINDS else "numbers or strings"
        where = "" if isinstance(source, np.ndarray) else f" ({source})"
        raise TypeError(f"{name}{where} must hold {described}, got dtype {array.dtype}")
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{name} hold no rows (shape {array.shape})")
    return array


def _gather(array: np.ndarray, spans: list[slice]) -> np.ndarray:
    """The rows of ``array`` in ``spans``, one after another, copied into one new C-ordered array in native byte order
    (a big-endian IDX value is swapped as it is copied): the only allocation, whatever the file's layout."""
    rows = np.empty((sum(span.stop - span.start for span in spans), *array.shape[1:]),
                    dtype=array.dtype.newbyteorder("="))
    start = 0
    for span in spans:
        rows[start:start + span.stop - span.start] = array[span]
        start += span.stop - span.start
    return rows
