"""Training from memory-mapped files (linclass_gpu.streaming): chunked reads of .npy and raw IDX, equality with
partial_fit and fit, the errors for bad input, the memory bound, and the ``train --features`` command line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import BACKEND_DTYPE_PAIRS
from helpers import idx_bytes

from linclass_gpu import LogisticRegression, SoftmaxRegression, cli
from linclass_gpu.streaming import fit_stream, map_rows, open_stream, score_stream
from linclass_gpu.training import TrainingDivergedError

MEBIBYTE = 2**20


@pytest.fixture
def blobs(rng):
    """Three Gaussian classes in 13 features, 203 rows: an odd count, so the last chunk is a short one."""
    centres = rng.normal(scale=2.0, size=(3, 13))
    y = rng.integers(0, 3, size=203)
    return centres[y] + rng.normal(size=(203, 13)), y


def write(tmp_path, name: str, array: np.ndarray, file_format: str):
    """``array`` written as ``name`` in ``file_format`` ("npy" or "idx"); returns the path."""
    path = tmp_path / f"{name}.{file_format}"
    if file_format == "npy":
        np.save(path, array)
    else:
        path.write_bytes(idx_bytes(array))
    return path


def as_dtype(X: np.ndarray, dtype: str) -> np.ndarray:
    """Features in ``dtype``; uint8 as pixels spread over 0..255."""
    if dtype == "uint8":
        return np.clip(X * 30 + 128, 0, 255).astype(np.uint8)
    return X.astype(dtype)


# ---------------------------------------------------------------------------------------------------------------------
# reading chunks


@pytest.mark.parametrize("file_format", ["npy", "idx"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_chunks_reassemble_the_file_in_its_own_dtype(tmp_path, blobs, file_format, dtype):
    X = as_dtype(blobs[0], dtype)
    stream = open_stream(write(tmp_path, "X", X, file_format), write(tmp_path, "y", blobs[1].astype(np.uint8),
                                                                        file_format), chunk_rows=50)
    assert isinstance(stream.features, np.memmap) and stream.n_chunks == 5
    chunks = list(stream.chunks())
    assert [len(y) for _, y, _ in chunks] == [50, 50, 50, 50, 3]
    for X_chunk, _, weights in chunks:
        assert type(X_chunk) is np.ndarray and X_chunk.dtype == np.dtype(dtype) and X_chunk.dtype.isnative
        assert X_chunk.flags.c_contiguous and weights is None
    np.testing.assert_array_equal(np.concatenate([X_chunk for X_chunk, _, _ in chunks]), X)
    np.testing.assert_array_equal(np.concatenate([y for _, y, _ in chunks]), blobs[1])
    np.testing.assert_array_equal(stream.classes(), [0, 1, 2])


@pytest.mark.parametrize("variant", ["fortran-order", "big-endian", "version-2.0", "column-of-labels"])
def test_npy_layouts_read_alike(tmp_path, blobs, variant):
    X, y = blobs[0].astype(np.float32), blobs[1]
    stored_X = {"fortran-order": np.asfortranarray(X), "big-endian": X.astype(">f4")}.get(variant, X)
    stored_y = y[:, None] if variant == "column-of-labels" else y
    with open(tmp_path / "X.npy", "wb") as file:
        np.lib.format.write_array(file, stored_X, version=(2, 0) if variant == "version-2.0" else None)
    stream = open_stream(tmp_path / "X.npy", write(tmp_path, "y", stored_y, "npy"), chunk_rows=64)
    np.testing.assert_array_equal(np.concatenate([chunk for chunk, _, _ in stream.chunks()]), X)
    np.testing.assert_array_equal(np.concatenate([labels for _, labels, _ in stream.chunks()]), y)


def test_idx_images_are_flattened_per_chunk(tmp_path, rng):
    images = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    stream = open_stream(write(tmp_path, "X", images, "idx"), np.arange(7) % 2, chunk_rows=3)
    assert stream.n_features == 15
    np.testing.assert_array_equal(np.concatenate([X for X, _, _ in stream.chunks()]), images.reshape(7, 15))


@pytest.mark.parametrize(("chunk_bytes", "batch_size", "expected_rows"), [
    (13 * 8 + 8, None, 1),             # float64 features and int64 labels: 112 bytes a row
    (112 * 50 + 111, None, 50),        # the budget rounds down to whole rows
    (112 * 50, 16, 48),                # ... then to whole minibatches
    (112 * 10, 16, 10),                # less than a minibatch stays as it is
    (112 * 10_000, None, 203),         # never more than the data
])
def test_chunk_rows_from_a_byte_budget(blobs, chunk_bytes, batch_size, expected_rows):
    stream = open_stream(*blobs, chunk_bytes=chunk_bytes, batch_size=batch_size)
    assert stream.chunk_rows == expected_rows


def test_chunk_order_is_shuffled_per_epoch_from_the_seed(blobs):
    stream = open_stream(*blobs, chunk_rows=20)
    rng = np.random.default_rng(5)
    orders = [np.concatenate(stream.chunk_blocks(rng)) for _ in range(3)]
    assert all(sorted(order) == list(range(11)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3
    np.testing.assert_array_equal(stream.chunk_blocks(None), np.arange(11)[:, None])


def test_blocks_per_chunk_mix_a_sorted_file(blobs):
    X, y = blobs[0].astype(np.float32), blobs[1]
    order = np.argsort(y, kind="stable")
    contiguous = open_stream(X[order], y[order], chunk_rows=40)
    mixed = open_stream(X[order], y[order], chunk_rows=40, blocks_per_chunk=8)
    assert (mixed.block_rows, mixed.chunk_rows, mixed.n_blocks, mixed.n_chunks) == (5, 40, 41, 6)
    rng = np.random.default_rng(0)
    assert min(len(np.unique(labels)) for _, labels, _ in contiguous.chunks(rng)) == 1
    assert min(len(np.unique(labels)) for _, labels, _ in mixed.chunks(rng) if len(labels) == 40) == 3
    chunks = list(mixed.chunks(rng))
    rows = np.concatenate([chunk for chunk, _, _ in chunks])
    np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(X, axis=0))  # every row once per epoch
    np.testing.assert_array_equal(np.sort(np.concatenate([labels for _, labels, _ in chunks])), np.sort(y))


# ---------------------------------------------------------------------------------------------------------------------
# training: equal to partial_fit on the same chunks, and to fit


# Every backend with .npy files and contiguous chunks; the NumPy backend also with IDX files (big-endian values
# swapped as they are read) and with chunks of two blocks.
@pytest.mark.parametrize(("backend", "dtype", "file_format", "blocks_per_chunk"), [
    (backend, dtype, file_format, blocks_per_chunk)
    for backend, dtype in BACKEND_DTYPE_PAIRS + [("numpy", "uint8")]
    for file_format in (("npy", "idx") if backend == "numpy" else ("npy",))
    for blocks_per_chunk in ((1, 2) if backend == "numpy" else (1,))])
def test_streaming_equals_partial_fit_on_the_same_chunks_in_memory(tmp_path, blobs, estimator_backend, backend, dtype,
                                                                   file_format, blocks_per_chunk):
    X, y = as_dtype(blobs[0], dtype), blobs[1].astype(np.uint8)
    weights = np.linspace(0.5, 1.5, len(y))
    parameters = dict(backend=estimator_backend(backend), schedule="constant", learning_rate=0.05, momentum=0.9,
                      batch_size=32, random_state=2, input_scale=1 / 255 if dtype == "uint8" else 1.0,
                      dtype="float64" if dtype == "float64" else "float32")
    stream = open_stream(write(tmp_path, "X", X, file_format), write(tmp_path, "y", y, file_format), chunk_rows=64,
                         sample_weight=write(tmp_path, "w", weights, file_format), blocks_per_chunk=blocks_per_chunk)
    streamed = SoftmaxRegression(**parameters)
    history = fit_stream(streamed, stream, epochs=2, seed=7)

    in_memory = SoftmaxRegression(**parameters)
    order_rng, losses, block_rows = np.random.default_rng(7), [], 64 // blocks_per_chunk
    block_starts = np.arange(0, len(y), block_rows)
    for _ in range(2):
        loss_sum = 0.0
        order = order_rng.permutation(len(block_starts))
        for first in range(0, len(order), blocks_per_chunk):
            rows = np.concatenate([np.arange(start, min(start + block_rows, len(y)))
                                   for start in block_starts[order[first:first + blocks_per_chunk]]])
            in_memory.partial_fit(X[rows], y[rows], classes=[0, 1, 2], sample_weight=weights[rows])
            loss_sum += in_memory.loss_curve_[-1] * len(rows)
        losses.append(loss_sum / len(y))
    np.testing.assert_array_equal(streamed.coef_, in_memory.coef_)
    np.testing.assert_array_equal(streamed.intercept_, in_memory.intercept_)
    np.testing.assert_allclose(history.loss, losses, rtol=1e-12)
    assert history.chunks_per_epoch == 4 and len(history.epoch_seconds) == 2


@pytest.mark.parametrize("schedule", ["constant", "exponential", "step", "invscaling", "optimal"])
@pytest.mark.parametrize(("shuffle", "chunk_rows"), [(False, 48), (True, 203)])
def test_streaming_equals_fit_when_the_rows_are_visited_alike(blobs, schedule, shuffle, chunk_rows):
    """Rows in file order (chunks a multiple of the batch), or one chunk shuffled: the same steps at the same rates."""
    X, y = blobs[0].astype(np.float32), blobs[1]
    parameters = dict(backend="numpy", schedule=schedule, gamma=0.5, step_size=2, learning_rate=0.1, momentum=0.5,
                      batch_size=16, epochs=4, random_state=1, shuffle=shuffle, average=False)
    fitted = SoftmaxRegression(**parameters).fit(X, y)
    streamed = SoftmaxRegression(**parameters)
    history = fit_stream(streamed, open_stream(X, y, chunk_rows=chunk_rows), seed=3)
    np.testing.assert_array_equal(streamed.coef_, fitted.coef_)
    np.testing.assert_array_equal(streamed.intercept_, fitted.intercept_)
    np.testing.assert_allclose(history.loss, fitted.loss_curve_, rtol=1e-6)
    assert streamed.t_ == fitted.t_
    assert streamed.get_params() == fitted.get_params()


def test_streaming_a_shuffled_file_trains_as_well_as_fit(blobs):
    X, y = blobs[0].astype(np.float32), blobs[1]
    fitted = SoftmaxRegression(backend="numpy", epochs=5, random_state=0).fit(X, y)
    streamed = SoftmaxRegression(backend="numpy", epochs=5, random_state=0)
    history = fit_stream(streamed, open_stream(X, y, chunk_rows=30), seed=0, validation=open_stream(X, y,
                                                                                                  chunk_rows=30))
    assert history.validation_score[-1] == score_stream(streamed, open_stream(X, y, chunk_rows=7))
    assert history.validation_score[-1] >= fitted.score(X, y) - 0.02
    assert history.loss[-1] < history.loss[0]


def test_logistic_one_class_against_the_rest_through_a_label_map(blobs):
    X, y = blobs[0].astype(np.float32), blobs[1]
    model = LogisticRegression(backend="numpy", epochs=3, random_state=0)
    stream = open_stream(X, y, chunk_rows=50, label_map=lambda labels: labels == 2)
    fit_stream(model, stream, seed=0)
    np.testing.assert_array_equal(model.classes_, [False, True])
    assert score_stream(model, stream) == model.score(X, y == 2) > 0.9


# ---------------------------------------------------------------------------------------------------------------------
# bad input


@pytest.fixture
def good_files(tmp_path, blobs):
    return write(tmp_path, "X", blobs[0].astype(np.float32), "npy"), write(tmp_path, "y", blobs[1], "npy")


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda X, y, tmp: (X, y[:-1]), ValueError, "features hold 203 rows but labels hold 202"),
    (lambda X, y, tmp: (X[:, 0], y), ValueError, r"at least one feature, shape \(N, D\).*got shape \(203,\)"),
    (lambda X, y, tmp: (X, np.stack([y, y], axis=1)[:, :, None]), ValueError,
     r"labels must be one value per row.*\(203, 2, 1\)"),
    (lambda X, y, tmp: (X[:0], y[:0]), ValueError, "features hold no rows"),
    (lambda X, y, tmp: (X.astype(complex), y), TypeError, "features must hold real numbers, got dtype complex128"),
    (lambda X, y, tmp: (X.astype(str), y), TypeError, "features must hold real numbers, got dtype <U"),
    (lambda X, y, tmp: (X, y.astype(complex)), TypeError, "labels must hold numbers or strings"),
    (lambda X, y, tmp: (write(tmp, "objects", X.astype(object), "npy"), y), TypeError,
     "holds Python objects .*cannot be memory-mapped"),
    (lambda X, y, tmp: (write(tmp, "words", np.array([["a"]] * 203), "npy"), y), TypeError,
     r"features \(.*words.npy\) must hold real numbers, got dtype <U1"),
])
def test_bad_sources_are_refused_naming_the_problem(tmp_path, blobs, make, error, message):
    features, labels = make(blobs[0].astype(np.float32), blobs[1], tmp_path)
    with pytest.raises(error, match=message):
        open_stream(features, labels, chunk_rows=10)


@pytest.mark.parametrize("file_format", ["npy", "idx"])
def test_gzip_files_are_refused_with_the_way_out(tmp_path, blobs, file_format):
    path = write(tmp_path, "X", blobs[0].astype(np.float32), file_format)
    zipped = tmp_path / f"{path.name}.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match=rf"{zipped} is gzip-compressed.*cannot be memory-mapped.*gunzip -k"):
        open_stream(zipped, blobs[1], chunk_rows=10)


@pytest.mark.parametrize(("content", "message"), [
    (lambda good: good[:-5], r"is truncated: 10551 bytes of values, but shape \(203, 13\) of float32 needs 10556"),
    (lambda good: b"a,b\n1,2\n" * 10, "expected a .npy or raw IDX file: .*not a valid IDX file: bad magic number"),
    (lambda good: idx_bytes(np.zeros((4, 3), np.float32))[:-1], "not a valid IDX file: payload is 47 bytes"),
])
def test_unreadable_files_are_refused(tmp_path, blobs, good_files, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content(good_files[0].read_bytes()))
    with pytest.raises(ValueError, match=message):
        map_rows(path)


@pytest.mark.parametrize(("budget", "message"), [
    (dict(chunk_bytes=50), r"chunk_bytes=50 is smaller than one row \(60 bytes of features, label and weight\)"),
    (dict(), "give exactly one of chunk_bytes"),
    (dict(chunk_bytes=1000, chunk_rows=10), "give exactly one of chunk_bytes"),
    (dict(chunk_rows=0), "chunk_rows must be a positive integer"),
    (dict(chunk_bytes=2.5e6), "chunk_bytes must be a positive integer"),
    (dict(chunk_rows=10, blocks_per_chunk=11), "blocks_per_chunk=11 is more than the 10 rows of a chunk"),
    (dict(chunk_rows=10, blocks_per_chunk=0), "blocks_per_chunk must be a positive integer"),
])
def test_chunk_budgets_that_cannot_hold_a_row_are_refused(good_files, budget, message):
    with pytest.raises(ValueError, match=message):  # a row: 13 float32 features and an int64 label
        open_stream(*good_files, **budget)


def test_fit_stream_refuses_a_fitted_model_and_mismatched_validation(blobs, good_files):
    stream = open_stream(*good_files, chunk_rows=50)
    fitted = SoftmaxRegression(epochs=1).fit(*blobs)
    with pytest.raises(ValueError, match="already fitted.*clone"):
        fit_stream(fitted, stream)
    narrow = open_stream(blobs[0][:, :5], blobs[1], chunk_rows=50)
    with pytest.raises(ValueError, match="validation stream has 5 features but the training stream 13"):
        fit_stream(SoftmaxRegression(), stream, validation=narrow)


def test_divergence_names_the_epoch_and_chunk(blobs):
    model = SoftmaxRegression(backend="numpy", learning_rate=1e30, schedule="exponential", shuffle=False,
                              batch_size=128)
    where = r"epoch 1 of the stream, its chunk 2 of 5 \(blocks \[1\] of 50 rows\)"
    with pytest.raises(TrainingDivergedError, match=where):
        fit_stream(model, open_stream(blobs[0] * 1e6, blobs[1], chunk_rows=50))
    assert model.n_iter_ == 1 and np.isfinite(model.coef_).all()  # the weights from before chunk 2


# ---------------------------------------------------------------------------------------------------------------------
# memory: a file 14 times the chunk budget trains in about one chunk of memory

MEMORY_PROBE = textwrap.dedent("""
    import sys, tracemalloc
    import numpy as np
    from linclass_gpu import SoftmaxRegression
    from linclass_gpu.streaming import fit_stream, open_stream

    features, labels, chunk_bytes, whole = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "whole"
    model = SoftmaxRegression(backend="numpy", epochs=1, batch_size=256, input_scale=1 / 255, random_state=0)
    stream = open_stream(features, labels, chunk_bytes=chunk_bytes, batch_size=256)
    # Once per process, not per chunk: the backend's imports and the compiled loops' first calls, made on a few rows.
    X_few, y_few, _ = stream.read_chunk([0])
    SoftmaxRegression(backend="numpy", epochs=1, tol=None, input_scale=1 / 255).fit(X_few[:512], y_few[:512])
    del X_few, y_few
    tracemalloc.start()
    if whole:  # the control: the same file read into memory is seen whole
        model.fit(np.array(stream.features), np.array(stream.labels))
    else:
        fit_stream(model, stream, seed=0)
    print(tracemalloc.get_traced_memory()[1], model.score(*stream.read_chunk([0])[:2]))
""")


def test_peak_memory_is_bounded_by_the_chunk_not_the_file(tmp_path):
    """Streaming a 120 MB (114 MiB) file with an 8 MiB budget allocates under 2 budgets (measured: 9.5 MiB), while
    reading it whole allocates the file.

    tracemalloc counts every NumPy buffer and Python object the process allocates, and nothing that is mapped from a
    file: those pages are the OS page cache's, dropped under memory pressure and never the process's own memory. It
    gives an exact peak, where RssAnon (/proc/self/status) is a momentary figure that a freed chunk leaves at once.
    A fresh interpreter measures nothing but this run, after a fit on a few rows has paid the one-time costs (imports,
    Numba's compiled loops: ≈ 17 MiB of Python objects for importing Numba alone).
    """
    n_rows, n_features, chunk_bytes = 150_000, 800, 8 * MEBIBYTE
    features = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.uint8, shape=(n_rows, n_features))
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, 10_000):
        features[start:start + 10_000] = rng.integers(0, 256, size=(10_000, n_features), dtype=np.uint8)
    features.flush()
    del features
    labels = write(tmp_path, "y", rng.integers(0, 10, n_rows).astype(np.uint8), "npy")
    file_bytes = (tmp_path / "X.npy").stat().st_size
    assert file_bytes > 14 * chunk_bytes

    def peak_bytes(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "X.npy"), str(labels),
                                 str(chunk_bytes), mode], capture_output=True, text=True, check=True)
        peak, accuracy = result.stdout.split()
        assert 0 <= float(accuracy) <= 1
        return int(peak)

    model_bytes = 3 * n_features * 10 * 4  # W, its velocity and its gradient in float32
    assert peak_bytes("stream") < 2 * chunk_bytes + model_bytes
    assert peak_bytes("whole") > file_bytes


# ---------------------------------------------------------------------------------------------------------------------
# command line


def test_cli_trains_from_files_chunk_by_chunk(capsys, tmp_path, blobs):
    X, y = as_dtype(blobs[0], "uint8"), blobs[1].astype(np.uint8)
    paths = [write(tmp_path, name, array, "npy") for name, array in
             (("X", X[:150]), ("y", y[:150]), ("X_test", X[150:]), ("y_test", y[150:]))]
    arguments = ["train", "--backend", "numpy", "--epochs", "3", "--batch-size", "16", "--learning-rate", "0.1",
                 "--blocks-per-chunk", "4", "--features", str(paths[0]), "--labels", str(paths[1]),
                 "--test-features", str(paths[2]), "--test-labels", str(paths[3]),
                 "--chunk-mb", str(50 * 14 / MEBIBYTE), "--json"]
    assert cli.main(arguments) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    # 50 rows of 14 bytes, rounded to whole minibatches, in 4 blocks of 12 rows; 13 blocks hold the 150 rows
    assert (summary["chunk_rows"], summary["blocks_per_chunk"], summary["chunks_per_epoch"]) == (48, 4, 4)
    assert summary["train_rows"] == 150 and summary["test_rows"] == 53
    assert len(summary["train_loss"]) == len(summary["test_accuracy_per_epoch"]) == 3
    assert summary["test_accuracy"] > 0.9 and "test accuracy" in out

    assert cli.main(arguments[:-7] + ["--model", "logistic", "--positive-class", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["test_accuracy"] is None and summary["positive_class"] == 1


@pytest.mark.parametrize(("extra", "message"), [
    (["--labels", "y.npy"], "--features and --labels go together"),
    (["--features", "X.npy", "--labels", "y.npy", "--test-features", "X.npy"], "--test-features and --test-labels"),
    (["--features", "X.npy.gz", "--labels", "y.npy"], "gzip-compressed"),
    (["--features", "X.npy", "--labels", "y.npy", "--chunk-mb", "0"], "--chunk-mb must be a positive finite number"),
    (["--features", "X.npy", "--labels", "y.npy", "--blocks-per-chunk", "0"], "blocks_per_chunk must be a positive"),
])
def test_cli_file_errors_are_one_line_without_traceback(capsys, tmp_path, good_files, monkeypatch, extra, message):
    (tmp_path / "X.npy.gz").write_bytes(gzip.compress(good_files[0].read_bytes()))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--backend", "numpy", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("file_format", ["npy", "idx"])
def test_multilabel_indicators_stream_like_partial_fit(tmp_path, blobs, file_format):
    """Labels (N, L) of 0/1 stream as indicator rows: the same model as partial_fit over the same chunks, scored by
    subset accuracy."""
    X, y = blobs
    Y = np.stack([y == 0, y != 1, X[:, 0] > 0], axis=1).astype(np.uint8)  # three overlapping labels
    features, labels = write(tmp_path, "X", X.astype(np.float32), file_format), write(tmp_path, "Y", Y, file_format)
    stream = open_stream(features, labels, chunk_rows=64)
    assert stream.multilabel and stream.classes().tolist() == [0, 1, 2]
    parameters = dict(backend="numpy", epochs=2, batch_size=16, random_state=0, shuffle=False)
    streamed = LogisticRegression(**parameters)
    fit_stream(streamed, stream)
    in_memory = LogisticRegression(**parameters)
    for epoch in range(2):
        for start in range(0, len(X), 64):
            in_memory.partial_fit(X[start:start + 64].astype(np.float32), Y[start:start + 64], epoch=epoch)
    assert streamed.multilabel_ and streamed.coef_.shape == (3, 13)
    np.testing.assert_array_equal(streamed.coef_, in_memory.coef_)
    accuracy = score_stream(streamed, open_stream(features, labels, chunk_rows=50))
    assert accuracy == pytest.approx(streamed.score(X.astype(np.float32), Y)) and accuracy > 0.6
    with pytest.raises(ValueError, match=r"indicator matrix \(N, L\)"):
        open_stream(features, np.zeros((len(X), 2, 2)), chunk_rows=64)


@pytest.mark.parametrize(("chunk_rows", "batch_size", "blocks_per_chunk"), [(2000, 256, 5), (999, 128, 1),
                                                                            (600, 48, 64), (2500, 256, 3)])
def test_chunks_are_whole_minibatches_whatever_the_blocks(chunk_rows, batch_size, blocks_per_chunk):
    """Equal blocks whose sum is a multiple of the batch (5 blocks of 256 rows for batches of 256, not 5 of 400)."""
    X, y = np.zeros((3000, 2), np.float32), np.arange(3000) % 2
    stream = open_stream(X, y, chunk_rows=chunk_rows, batch_size=batch_size, blocks_per_chunk=blocks_per_chunk)
    assert stream.chunk_rows % batch_size == 0 and 0 < stream.chunk_rows <= chunk_rows
    assert stream.blocks_per_chunk == blocks_per_chunk
    # All rows in one chunk: left whole, whatever the batch.
    assert open_stream(X[:203], y[:203], chunk_rows=1000, batch_size=16).n_chunks == 1


# ---------------------------------------------------------------------------------------------------------------------
# files that change or are not files

# Streams X.npy with a label_map that truncates X.npy to its header once the first chunk is read: the next chunk's
# read used to touch pages past the end of the file (SIGBUS, exit 135).
TRUNCATE_WHILE_STREAMING = textwrap.dedent("""
    import os, sys
    import numpy as np
    from linclass_gpu import SoftmaxRegression
    from linclass_gpu.streaming import fit_stream, open_stream

    features, labels = sys.argv[1], sys.argv[2]
    def truncate_features(y):
        os.truncate(features, 128)
        return y
    stream = open_stream(features, labels, chunk_rows=50, label_map=truncate_features)
    try:
        fit_stream(SoftmaxRegression(epochs=2), stream, classes=[0, 1, 2], seed=0)
    except ValueError as error:
        print("ValueError:", error)
""")


def test_a_file_truncated_while_streaming_is_a_value_error_not_sigbus(tmp_path, blobs):
    X, y = blobs
    features, labels = write(tmp_path, "X", X, "npy"), write(tmp_path, "y", y, "npy")
    script = tmp_path / "truncate.py"
    script.write_text(TRUNCATE_WHILE_STREAMING)
    result = subprocess.run([sys.executable, str(script), str(features), str(labels)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert f"ValueError: {features} changed while it was being streamed" in result.stdout
    assert "now 128 bytes" in result.stdout


def test_a_file_rewritten_in_place_between_chunks_is_refused(tmp_path, blobs):
    X, y = blobs
    features, labels = write(tmp_path, "X", X, "npy"), write(tmp_path, "y", y.astype(np.uint8), "idx")
    stream = open_stream(features, labels, chunk_rows=50)
    first = stream.read_chunk(np.array([0]))
    np.testing.assert_array_equal(first[1], y[:50])
    with open(labels, "r+b") as file:  # same size, other content
        file.seek(-1, 2)
        file.write(b"\x02")
    os.utime(labels, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime, whatever the clock resolution
    with pytest.raises(ValueError, match=f"{labels} changed while it was being streamed"):
        stream.read_chunk(np.array([1]))
    with pytest.raises(ValueError, match="changed while it was being streamed"):
        stream.classes()


def test_arrays_in_memory_need_no_file_checks(blobs):
    X, y = blobs
    assert open_stream(X, y, chunk_rows=50).mapped_files == ()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_open_stream_refuses_what_is_not_a_regular_file(tmp_path, blobs, kind):
    """A FIFO blocked open_stream forever; it is refused at once (run apart, so a regression cannot hang the suite)."""
    _, y = blobs
    labels = write(tmp_path, "y", y, "npy")
    features = tmp_path / "features"
    os.mkfifo(features) if kind == "fifo" else features.mkdir()
    code = ("import sys; from linclass_gpu.streaming import open_stream\n"
            "try:\n    open_stream(sys.argv[1], sys.argv[2], chunk_rows=10)\n"
            "except ValueError as error:\n    print('ValueError:', error)\n")
    result = subprocess.run([sys.executable, "-c", code, str(features), str(labels)], capture_output=True, text=True,
                            timeout=60, check=False)
    expected = "a FIFO (named pipe)" if kind == "fifo" else "a directory"
    assert f"ValueError: {features} is {expected}, not a regular file" in result.stdout, result.stderr[-2000:]
