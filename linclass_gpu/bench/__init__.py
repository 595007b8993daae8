"""Microbenchmarks of one SGD step and end-to-end MNIST training benchmarks."""
