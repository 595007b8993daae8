"""Benchmark objects that each live in a fresh Python process, called by method name from the parent.

Why a process per provider:

- Thread pools. NumPy's OpenBLAS threads and PyTorch's OpenMP threads spin while they wait for work; in one process
  on 2 cores, alternating between a NumPy and a PyTorch provider makes each wait for the other's spinning threads
  and slows both by up to 100×. In separate processes, only the provider being timed is awake, so providers can
  still take turns sample by sample (see :mod:`.timing`) without disturbing each other.
- Memory. The peak resident set only grows, so one provider's peak would mask another's.

The object is made by a factory named ``"module:function"`` (a class works), called as
``factory(mark_baseline, **kwargs)``: it imports what it needs, calls ``mark_baseline()`` (the resident set then is
the baseline: interpreter plus imports, no data yet), loads its data and sets up. :meth:`IsolatedWorker.memory`
gives the baseline and the peak (``VmHWM``) above it, or what the object's own ``memory()`` returns (an object that
runs a program of its own measures that program).

The child is ``python -m linclass_gpu.bench.isolated '<json: {"factory": ..., "kwargs": {...}}>'``; requests and
replies are JSON lines on its standard input and output (anything the object prints goes to its standard error).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

MB = 1e6
_STATUS = Path("/proc/self/status")


def resident_bytes(field: str = "VmRSS") -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process from /proc, or None off Linux."""
    if not _STATUS.exists():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def thread_limits(threads: int | None) -> dict:
    """Environment variables that cap the BLAS and OpenMP thread pools of a fresh process (None: no cap)."""
    if threads is None:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


class WorkerError(RuntimeError):
    """A call failed in the child; ``kind`` is the exception's class name there (for example
    ``"ProviderUnavailable"``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind, self.message = kind, message


class IsolatedWorker:
    """One object made by ``factory(mark_baseline, **kwargs)`` in a fresh Python process.

    Parameters
    ----------
    factory : str
        ``"module:function"``.
    kwargs : dict
        JSON-serialisable keyword arguments of the factory.
    timeout : float, optional
        Seconds any one call (the factory's included) may take; the child is then killed and TimeoutError raised.
    env : dict, optional
        Environment variables to set in the child (for example :func:`thread_limits`).

    Raises
    ------
    WorkerError
        The factory raised.
    """

    def __init__(self, factory: str, kwargs: dict, timeout: float | None = None, env: dict | None = None):
        package_root = str(Path(__file__).resolve().parents[2])  # a source checkout works without installing
        env = {**os.environ, **(env or {}),
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "linclass_gpu.bench.isolated", json.dumps({"factory": factory, "kwargs": kwargs})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        try:
            self._reply()
        except BaseException:
            self.close()
            raise

    def call(self, method: str, *args):
        """``method(*args)`` on the child's object; its JSON-serialisable return value."""
        self._process.stdin.write(json.dumps({"method": method, "args": list(args)}) + "\n")
        self._process.stdin.flush()
        return self._reply()

    def memory(self) -> dict:
        """``baseline_mb``, ``peak_mb`` and ``peak_above_baseline_mb`` of the child so far (None off Linux)."""
        return self.call("__memory__")

    def close(self) -> None:
        """End the child (it exits when its standard input closes)."""
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def __enter__(self) -> "IsolatedWorker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _reply(self):
        ready, _, _ = select.select([self._process.stdout], [], [], self.timeout)
        if not ready:
            self._process.kill()
            raise TimeoutError(f"the benchmark process did not answer within {self.timeout:g} s")
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            self._stderr.seek(0)
            raise WorkerError("ProcessExited", f"exit status {self._process.returncode}: "
                              f"{self._stderr.read().strip()[-2000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["kind"], reply["error"])
        return reply["result"]


def _memory(baseline: int | None) -> dict:
    peak = resident_bytes("VmHWM")
    if baseline is None or peak is None:
        return {"baseline_mb": None, "peak_mb": None, "peak_above_baseline_mb": None}
    return {"baseline_mb": baseline / MB, "peak_mb": peak / MB, "peak_above_baseline_mb": (peak - baseline) / MB}


def serve(factory: str, kwargs: dict, requests, replies) -> None:
    """The child's loop: make the object, then answer one request line at a time until ``requests`` ends."""
    baseline: list[int | None] = [None]

    def mark_baseline() -> None:
        baseline[0] = resident_bytes("VmRSS")

    def answer(call) -> None:
        try:
            reply = {"result": call()}
        except Exception as error:  # reported to the parent, which decides what is fatal
            reply = {"error": str(error), "kind": type(error).__name__}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()

    module_name, function_name = factory.split(":")
    target = []
    answer(lambda: target.append(getattr(importlib.import_module(module_name), function_name)(mark_baseline,
                                                                                               **kwargs)))
    if not target:
        return
    for line in requests:
        request = json.loads(line)
        if request["method"] == "__memory__":
            answer(getattr(target[0], "memory", lambda: _memory(baseline[0])))
        else:
            answer(lambda: getattr(target[0], request["method"])(*request["args"]))


if __name__ == "__main__":
    protocol_out, sys.stdout = sys.stdout, sys.stderr  # prints of the object must not corrupt the replies
    spec = json.loads(sys.argv[1])
    serve(spec["factory"], spec["kwargs"], sys.stdin, protocol_out)
