"""The package imports and trains with its declared dependencies alone (NumPy, threadpoolctl): triton, torch and cupy
stay optional."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import threadpoolctl

import linclass_gpu


def numpy_only_site(directory: Path) -> Path:
    """A directory holding only numpy (and its bundled libraries), threadpoolctl and linclass_gpu, as links."""
    numpy_dir = Path(np.__file__).parent
    for source in [numpy_dir, Path(threadpoolctl.__file__), Path(linclass_gpu.__file__).parent,
                   *numpy_dir.parent.glob("numpy.libs")]:
        (directory / source.name).symlink_to(source)
    return directory


def test_import_and_fit_with_numpy_alone(tmp_path):
    code = """
import sys, numpy as np, linclass_gpu
from linclass_gpu.backends import backend_statuses
X = np.random.default_rng(0).normal(size=(50, 3)); y = (X[:, 0] > 0).astype(int)
model = linclass_gpu.SoftmaxRegression(epochs=5).fit(X, y)
assert model.backend_ == 'numpy' and model.score(X, y) > 0.9
assert not any(m in sys.modules for m in ('torch', 'triton', 'cupy'))
print([s.detail for s in backend_statuses()])
"""
    environment = {**os.environ, "PYTHONPATH": str(numpy_only_site(tmp_path)), "PYTHONNOUSERSITE": "1"}
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=environment,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "torch is not installed" in result.stdout and "cupy is not installed" in result.stdout


def test_import_does_not_load_gpu_stacks_even_when_installed():
    result = subprocess.run([sys.executable, "-c", "import sys, linclass_gpu; "
                             "print(sorted(m for m in ('torch', 'triton', 'cupy') if m in sys.modules))"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
