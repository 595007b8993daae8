"""Microbenchmarks of one SGD step and end-to-end MNIST training benchmarks
(``linclass-gpu bench step | mnist | scaling``).

Modules, one responsibility each:

- :mod:`.timing`: interleaved wall-clock rounds on the CPU, ``triton.testing.do_bench`` on a GPU; quantiles.
- :mod:`.isolated`: a benchmark object in a fresh process of its own (thread pools apart, peak memory per provider).
- :mod:`.roofline`: bytes and FLOPs of a step, the CUDA device's peaks.
- :mod:`.step_providers`, :mod:`.step`: the step providers and the B × D × C sweep over them.
- :mod:`.mnist_providers`, :mod:`.mnist`: the MNIST training providers and the epoch-interleaved comparison.
- :mod:`.scaling`: data-parallel MNIST training with 1 and 2 processes (throughput, all-reduce bytes per step).
- :mod:`.report`, :mod:`.plot`: machine context, table, CSV; figures.
- :mod:`.cli`: the subcommands.
"""
