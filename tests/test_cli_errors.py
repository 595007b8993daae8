"""Inputs that once gave a traceback or a wrong exit status from the CLI (issue 16): each is now one line on stderr
naming the flag or file, and exit status 2."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu import cli


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.array([0, 1, 0, 1]))
    return path


def crafted_npy(tmp_path):
    """A .npy file whose header dict does not parse (an unterminated string)."""
    path = tmp_path / "crafted.npy"
    np.save(path, np.zeros((4, 3), np.float32))
    content = bytearray(path.read_bytes())
    start = content.index(b"{'descr'")
    content[start + 1:start + 2] = b'"'
    path.write_bytes(bytes(content))
    return path


def object_npy(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[1, "a"]] * 4, dtype=object), allow_pickle=True)
    return path


@pytest.mark.parametrize("argv,message", [
    (lambda tmp, y: ["train", "--features", str(object_npy(tmp)), "--labels", str(y)], "holds Python objects"),
    (lambda tmp, y: ["train", "--features", str(tmp), "--labels", str(y)], "is a directory"),
    (lambda tmp, y: ["train", "--features", str(crafted_npy(tmp)), "--labels", str(y)], "not a valid .npy header"),
    (lambda tmp, y: ["train", "--features", str(crafted_npy(tmp)), "--labels", str(y), "--chunk-mb", "inf"],
     "--chunk-mb must be a positive finite number"),
    (lambda tmp, y: ["kernels", "report", "--arch", "sm_1"], "arch must be sm_80 or newer"),
], ids=["object-npy", "directory", "crafted-header", "chunk-mb-inf", "arch-sm_1"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, labels, capsys, argv, message):
    arguments = argv(tmp_path, labels)
    if arguments[0] == "kernels":
        pytest.importorskip("triton")
    status = cli.main(arguments)
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    if "--features" in arguments:
        assert arguments[arguments.index("--features") + 1] in err or "--chunk-mb" in err


def test_bench_step_refuses_a_negative_batch_size_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "step", "--batch-sizes", "-1", "--providers", "numpy"])
    assert exit_info.value.code == 2 and "--batch-sizes" in capsys.readouterr().err
