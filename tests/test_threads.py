"""The NumPy backend chooses its BLAS threads from the work per call, only for its own calls."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from linclass_gpu import SoftmaxRegression, threads
from linclass_gpu.threads import (
    FLOPS_PER_THREAD,
    THREADS_ENVIRONMENT_VARIABLE,
    available_cores,
    blas_threads_for,
    check_n_threads,
)

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> set[int]:
    """The thread counts the loaded BLAS libraries are set to now."""
    return {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture(autouse=True)
def no_environment_override(monkeypatch):
    monkeypatch.delenv(THREADS_ENVIRONMENT_VARIABLE, raising=False)


def test_small_products_run_on_one_thread_and_large_ones_on_every_core():
    mnist_step = 2 * 128 * 784 * 10
    assert blas_threads_for(mnist_step) == 1
    assert blas_threads_for(2 * 4096 * 4096 * 1000) == available_cores()
    assert blas_threads_for(3 * FLOPS_PER_THREAD) == min(3, available_cores())


def test_explicit_choices_win(monkeypatch):
    assert blas_threads_for(1e12, n_threads=1) == 1
    monkeypatch.setenv(THREADS_ENVIRONMENT_VARIABLE, "3")
    assert blas_threads_for(10) == 3 and blas_threads_for(10, n_threads=2) == 2
    monkeypatch.setenv(THREADS_ENVIRONMENT_VARIABLE, "many")
    with pytest.raises(ValueError, match=THREADS_ENVIRONMENT_VARIABLE):
        blas_threads_for(10)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_threads"):
            check_n_threads(bad)


@pytest.fixture(scope="module")
def first_fit_done():
    """A process's first fit compiles the NumPy backend's loops, and Numba then loads SciPy's BLAS (which those loops
    never call): a limit covers the libraries loaded when a call starts, so the tests that count them start after."""
    SoftmaxRegression(epochs=1, tol=None, backend="numpy").fit(np.eye(3), [0, 1, 2])


@pytest.mark.parametrize("n_threads,expected", [(None, 1), (2, 2)])
def test_fit_and_predict_limit_blas_only_while_they_run(first_fit_done, n_threads, expected):
    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library loaded")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 20)), rng.integers(0, 3, 300)
    with threadpoolctl.threadpool_limits(limits=4, user_api="blas"):  # the user's own setting, restored after
        seen = []
        model = SoftmaxRegression(epochs=2, backend="numpy", n_threads=n_threads)
        model.fit(X, y, epoch_callback=lambda epoch, history: seen.append(blas_threads()))
        assert seen == [{expected}, {expected}]
        assert blas_threads() == {4}
        model.predict(X)
        assert blas_threads() == {4}


def test_blas_libraries_loaded_after_the_first_limit_are_found_by_the_next(monkeypatch):
    """The limits reach every BLAS loaded so far: an import since the last call (which is how SciPy or PyTorch bring
    their own BLAS) makes threadpoolctl look again; otherwise its findings are reused."""
    first = threads._threadpool_controller()
    assert threads._threadpool_controller() is first
    monkeypatch.setitem(sys.modules, "an_extension_imported_later", types.ModuleType("an_extension_imported_later"))
    assert threads._threadpool_controller() is not first
