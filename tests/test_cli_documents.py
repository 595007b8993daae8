"""``linclass-gpu train --features docs.npz``: sparse rows from a scipy .npz, scored on sparse test rows."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import scipy.sparse

from linclass_gpu import cli
from linclass_gpu.bench.documents import hashed_documents


@pytest.fixture(scope="module")
def document_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("documents")
    X, y = hashed_documents(3000, n_features=2**14, n_classes=5, seed=1)
    paths = {name: str(folder / name) for name in ("train.npz", "train.npy", "test.npz", "test.npy")}
    scipy.sparse.save_npz(paths["train.npz"], X[:2500])
    np.save(paths["train.npy"], y[:2500])
    scipy.sparse.save_npz(paths["test.npz"], X[2500:].tocsc())  # any sparse format
    np.save(paths["test.npy"], y[2500:])
    return paths


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_train_on_sparse_documents(capsys, document_files):
    status, out, _ = run_cli(capsys, "train", "--features", document_files["train.npz"], "--labels",
                             document_files["train.npy"], "--test-features", document_files["test.npz"],
                             "--test-labels", document_files["test.npy"], "--epochs", "5", "--learning-rate", "10",
                             "--json")
    assert status == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["train_rows"] == 2500 and summary["test_rows"] == 500 and summary["n_features"] == 2**14
    assert summary["backend"] == "numpy" and len(summary["test_accuracy_per_epoch"]) == 5
    assert summary["test_accuracy"] > 0.8  # five classes: chance is 0.2


@pytest.mark.parametrize("swap, message", [
    ("labels", "--labels .* is a .npz archive"),
    ("features", "--features .* is not a sparse matrix written by scipy.sparse.save_npz"),
    ("rows", "--labels .* holds labels of shape \\(500,\\), but --features .* has 2500 rows"),
])
def test_bad_sparse_files_name_the_flag(capsys, document_files, tmp_path, swap, message):
    features, labels = document_files["train.npz"], document_files["train.npy"]
    if swap == "labels":
        labels = document_files["test.npz"]
    elif swap == "features":
        features = str(tmp_path / "labels.npz")
        np.save(tmp_path / "labels.npy", np.arange(3))
        (tmp_path / "labels.npy").rename(features)
    else:
        labels = document_files["test.npy"]
    status, _, err = run_cli(capsys, "train", "--features", features, "--labels", labels, "--epochs", "1")
    assert status == 2
    assert re.search(message, err), err
