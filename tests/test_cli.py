"""The ``linclass-gpu`` command line: train, info, errors without tracebacks, JSON as the last line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from linclass_gpu import cli
from linclass_gpu.backends import probe


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_train_numpy_5_epochs_reaches_92_percent_on_mnist(capsys):
    status, out, _ = run_cli(capsys, "train", "--backend", "numpy", "--epochs", "5", "--json")
    assert status == 0
    summary = last_json(out)
    assert summary["backend"] == "numpy" and summary["test_accuracy"] >= 0.92
    assert len(summary["train_loss"]) == len(summary["epoch_seconds"]) == 5
    assert summary["train_loss"][-1] < summary["train_loss"][0]
    assert "test accuracy" in out and "epoch" in out


def test_train_logistic_one_class_against_the_rest(capsys):
    status, out, _ = run_cli(capsys, "train", "--model", "logistic", "--positive-class", "3", "--epochs", "1",
                             "--json")
    summary = last_json(out)
    assert status == 0 and summary["model"] == "logistic" and summary["positive_class"] == 3
    assert summary["test_accuracy"] > 0.9  # above the 0.899 of always answering "not a 3"


def test_train_one_vs_rest(capsys):
    status, out, _ = run_cli(capsys, "train", "--model", "ovr", "--epochs", "1", "--json")
    summary = last_json(out)
    assert status == 0 and summary["model"] == "ovr" and "positive_class" not in summary
    assert summary["test_accuracy"] > 0.88  # ten sigmoids, one epoch


def test_info_lists_every_backend_with_a_reason(capsys):
    status, out, _ = run_cli(capsys, "info", "--json")
    info = last_json(out)
    assert status == 0 and [row["name"] for row in info["backends"]] == ["triton", "cupy", "numpy"]
    assert info["auto"] in ("triton", "cupy", "numpy")
    for row in info["backends"]:
        assert row["detail"], f"{row['name']} has no detail"
        assert row["name"] in out


@pytest.mark.skipif(probe("cupy").usable, reason="needs a machine where cupy cannot run")
def test_unusable_backend_is_one_clear_error_without_traceback(capsys):
    status, out, err = run_cli(capsys, "train", "--backend", "cupy", "--epochs", "1")
    assert status == 2 and "cupy" in err and "cannot run here" in err
    assert "Traceback" not in err and out == ""


def test_missing_data_directory_is_one_clear_error(capsys, tmp_path):
    status, _, err = run_cli(capsys, "train", "--data-dir", str(tmp_path), "--epochs", "1")
    assert status == 2 and str(tmp_path) in err and "Traceback" not in err


def test_bad_argument_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model", "svm"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("linclass-gpu") is None, reason="package not installed (pip install -e .)")
def test_console_script_is_installed():
    result = subprocess.run(["linclass-gpu", "info", "--json"], capture_output=True, text=True, check=True)
    assert "backends" in last_json(result.stdout)


def test_module_runs_as_a_script():
    result = subprocess.run([sys.executable, "-m", "linclass_gpu.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "linclass-gpu" in result.stdout
