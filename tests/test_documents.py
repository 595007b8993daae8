"""The corpora of ``bench documents`` (hashed Zipf documents, the machine's man pages) and its goal checks."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from linclass_gpu.bench import documents_bench
from linclass_gpu.bench.documents import hash_words, hashed_documents
from linclass_gpu.bench.documents_bench import goal_checks
from linclass_gpu.bench.man_pages import man_page_documents


def test_documents_are_unit_rows_of_about_a_hundred_hashed_words():
    X, y = hashed_documents(2001, n_features=2**12, n_classes=7, seed=3)
    assert X.shape == (2001, 2**12) and y.shape == (2001,) and set(np.unique(y)) == set(range(7))
    assert X.has_canonical_format and X.indices.dtype == X.indptr.dtype == np.int32
    assert 80 < X.nnz / X.shape[0] < 130
    norms = np.sqrt((X.multiply(X)).sum(axis=1))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    again, _ = hashed_documents(2001, n_features=2**12, n_classes=7, seed=3)
    assert (X != again).nnz == 0  # a seed fixes the corpus


def test_hash_spreads_words_over_the_columns_with_both_signs():
    columns, signs = hash_words(np.arange(100_000), 2**10)
    counts = np.bincount(columns, minlength=2**10)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    assert abs(signs.mean()) < 0.02


def test_feature_count_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        hashed_documents(10, n_features=1000)


def test_goal_checks_measure_each_softmax_provider():
    rows = [{"provider": "linclass-softmax", "status": "ok", "epoch_s": 1.0, "accuracy": 0.975},
            {"provider": "linclass-softmax-sgd", "status": "ok", "epoch_s": 4.0, "accuracy": 0.985},
            {"provider": "linclass-ovr", "status": "ok", "epoch_s": 0.1, "accuracy": 0.999},
            {"provider": "sklearn-sgd", "status": "ok", "epoch_s": 3.5, "accuracy": 0.98},
            {"provider": "sklearn-lr", "status": "ok", "epoch_s": None, "accuracy": 0.99}]
    met = {target["name"]: target["met"] for target in goal_checks(rows)}
    assert met == {"linclass-softmax: epoch time of sklearn-sgd / ours": True,
                   "linclass-softmax: accuracy - sklearn-sgd's": True,
                   "linclass-softmax: accuracy - sklearn-lr's": False,
                   "linclass-softmax-sgd: epoch time of sklearn-sgd / ours": False,
                   "linclass-softmax-sgd: accuracy - sklearn-sgd's": True,
                   "linclass-softmax-sgd: accuracy - sklearn-lr's": True}
    assert goal_checks(rows[2:]) == []  # none of ours ran
    assert [target["name"] for target in goal_checks(rows[1:2] + rows[4:])] == [
        "linclass-softmax-sgd: accuracy - sklearn-lr's"]  # only the peers that ran


def write_page(path, text: str, compress: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())


def man_tree(root):
    """Two sections of two pages each, plus what the corpus skips: a link, a redirect, a stub, a small section."""
    write_page(root / "man1" / "ls.1.gz", ".TH LS 1 secretword\n.\\\" comment hiddenword\nlist directory contents ls")
    write_page(root / "man1" / "cp.1", ".TH CP 1\ncopy files and directories cp", compress=False)
    (root / "man1" / "dir.1.gz").symlink_to("ls.1.gz")
    write_page(root / "man1" / "vdir.1.gz", ".so man1/ls.1")
    write_page(root / "man1" / "stub.1.gz", ".TH STUB 1\nstub")
    write_page(root / "man3" / "printf.3.gz", ".TH PRINTF 3\nformatted output conversion printf")
    write_page(root / "man3" / "malloc.3.gz", ".TH MALLOC 3\nallocate and free dynamic memory")
    write_page(root / "man7" / "regex.7.gz", ".TH REGEX 7\nregular expressions posix")


def test_man_pages_are_hashed_by_section_without_what_gives_it_away(tmp_path):
    man_tree(tmp_path)
    X, y, sections = man_page_documents(tmp_path, n_features=2**12, min_words=3, min_pages=2)
    assert sections == ["1", "3"] and X.shape == (4, 2**12) and X.dtype == np.float32
    assert X.indices.dtype == X.indptr.dtype == np.int32
    assert y.tolist() == [0, 0, 1, 1]  # cp, ls; malloc, printf: sorted paths, no link, redirect nor stub
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(axis=1)), 1.0, rtol=1e-6)
    columns, _ = hash_words(np.array([zlib.crc32(word) for word in (b"ls", b"secretword", b"hiddenword")],
                                     dtype=np.uint64), 2**12)
    assert X[1, columns[0]] != 0 and X[1, columns[1]] == 0 and X[1, columns[2]] == 0
    with pytest.raises(FileNotFoundError, match="no man page section"):
        man_page_documents(tmp_path, min_words=3, min_pages=3)


def test_the_man_pages_corpus_splits_its_pages_by_the_seed(tmp_path, monkeypatch):
    for page in range(20):
        write_page(tmp_path / f"man{1 + page % 2}" / f"page{page}.{1 + page % 2}.gz", f"words of page {page} " * 3)
    monkeypatch.setattr(documents_bench, "man_page_documents",
                        lambda n_features: man_page_documents(tmp_path, n_features=n_features, min_pages=5,
                                                              min_words=3))
    settings = {**documents_bench.DEFAULTS, "corpus": "man-pages", "n_features": 2**10}
    X_train, y_train, X_test, y_test = documents_bench.corpus_split(settings)
    assert (X_train.shape, X_test.shape) == ((16, 2**10), (4, 2**10)) and len(y_train) == 16 and len(y_test) == 4
    again = documents_bench.corpus_split(settings)
    assert (again[0] != X_train).nnz == 0 and np.array_equal(again[3], y_test)
    other = documents_bench.corpus_split({**settings, "seed": 1})
    assert not np.array_equal(other[1], y_train)
