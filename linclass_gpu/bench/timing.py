"""Timing of one call: interleaved wall-clock samples on the CPU, ``triton.testing.do_bench`` on a CUDA device.

Both end in a :class:`Timing`: the median and the 20th and 80th percentiles of the seconds per call, the quantiles
Triton's tutorials report. On a shared, noisy CPU the providers being compared are sampled in rounds, each round
timing every provider once in a rotated order, so a burst of load from elsewhere hits them all alike rather than
whichever provider happened to be running in one block. A provider is a :class:`Sampler`: a function of this process
(:class:`LocalSampler`) or one served from its own process (:mod:`.isolated`), which keeps the thread pools of
different libraries from fighting over the cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

# Median first, then the 20th and 80th percentiles: do_bench's ``quantiles`` argument and Timing's fields, in order.
QUANTILES = (0.5, 0.2, 0.8)
# A wall-clock sample runs the function this long at least: several scheduler time slices, so that one slice lost to
# another process (a multi-threaded BLAS call waits for all its threads) is averaged over many calls.
MIN_SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one function.

    Attributes
    ----------
    median, low, high : float
        Median, 20th and 80th percentile of the seconds per call.
    method : str
        ``"wall clock"`` (host timer, interleaved rounds) or ``"do_bench"`` (CUDA events, L2 flushed per call).
    """

    median: float
    low: float
    high: float
    method: str

    @classmethod
    def from_samples(cls, seconds: Sequence[float], method: str = "wall clock") -> "Timing":
        """Summarise samples of seconds per call by their :data:`QUANTILES`."""
        median, low, high = np.quantile(np.asarray(seconds, dtype=float), QUANTILES)
        return cls(float(median), float(low), float(high), method)


class Sampler(Protocol):
    """Something that can be timed: a function here (:class:`LocalSampler`) or in another process."""

    def calls_per_sample(self) -> int:
        """Back-to-back calls that make one sample (sized once, after a warm-up call)."""

    def seconds(self, calls: int) -> float:
        """Wall-clock seconds of ``calls`` back-to-back calls."""


class LocalSampler:
    """A synchronous function of this process (its work is done when it returns).

    Parameters
    ----------
    fn : callable () -> any
    min_sample_seconds : float
        Lower bound of one sample's duration; short functions are called several times per sample.
    """

    def __init__(self, fn: Callable[[], object], min_sample_seconds: float = MIN_SAMPLE_SECONDS):
        self.fn, self.min_sample_seconds = fn, min_sample_seconds

    def calls_per_sample(self) -> int:
        once = self.seconds(1)  # also the warm-up call
        return max(1, math.ceil(self.min_sample_seconds / max(once, 1e-9)))

    def seconds(self, calls: int) -> float:
        fn = self.fn
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - started


def interleaved_wall_clock(samplers: Mapping[str, Sampler], repeats: int) -> dict[str, Timing]:
    """Seconds per call of each sampler, sampled in ``repeats`` interleaved rounds.

    Each sampler is sized once (:meth:`Sampler.calls_per_sample`, which warms it up), then each round takes one
    sample of every sampler, starting one sampler later than the round before.

    Parameters
    ----------
    samplers : mapping of name to Sampler
    repeats : int
        Rounds, hence samples per sampler.

    Returns
    -------
    dict of name to Timing
    """
    names = list(samplers)
    calls = {name: samplers[name].calls_per_sample() for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            samples[name].append(samplers[name].seconds(calls[name]) / calls[name])
    return {name: Timing.from_samples(seconds) for name, seconds in samples.items()}


def do_bench_timing(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> Timing:
    """Seconds per call of ``fn`` on the CUDA device by ``triton.testing.do_bench``: CUDA events, L2 flushed.

    Parameters
    ----------
    fn : callable () -> any
        Enqueues device work; it need not synchronise.
    warmup_ms, rep_ms : float
        do_bench's warm-up and measuring budgets in milliseconds.
    """
    from triton.testing import do_bench

    median, low, high = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return Timing(median / 1e3, low / 1e3, high / 1e3, "do_bench")
