"""The tests' name for the one tolerance table, which lives in :mod:`linclass_gpu.tolerances` so that the notebooks,
run from any directory, use the same one."""

from linclass_gpu.tolerances import TOLERANCES, assert_close, dtype_name, tolerance

__all__ = ["TOLERANCES", "assert_close", "dtype_name", "tolerance"]
