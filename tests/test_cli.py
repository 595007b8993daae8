"""The ``linclass-gpu`` command line: train, info, errors without tracebacks, JSON as the last line; epoch lines as
epochs end, Ctrl-C, defaults in --help, flags named in errors, install hints that fit the machine."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from linclass_gpu import SoftmaxRegression, cli, estimators, load_mnist
from linclass_gpu.backends import get_backend, probe, registry


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


# -- epoch lines as epochs end, and Ctrl-C ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory) -> list[str]:
    """``--features``/``--labels`` arguments for 20000 MNIST rows saved as .npy (the streaming path)."""
    folder, mnist = tmp_path_factory.mktemp("stream"), load_mnist()
    np.save(folder / "X.npy", mnist.train_images[:20000])
    np.save(folder / "y.npy", mnist.train_labels[:20000])
    return ["--features", str(folder / "X.npy"), "--labels", str(folder / "y.npy")]


def is_epoch_line(line: str, epoch: int) -> bool:
    return line.split()[:1] == [str(epoch)]


@pytest.mark.parametrize("source", ["mnist", "files"])
def test_epoch_lines_arrive_while_training_and_ctrl_c_keeps_them(source, mnist_files):
    """Each epoch's line reaches a pipe while training goes on; SIGINT after it exits 130 with one line on stderr,
    the finished epochs' lines, the summary and the JSON of what finished."""
    data = mnist_files if source == "files" else []
    # --tol 0 and no epoch limit given: training would go on for many epochs (a stream runs all 1000)
    command = [sys.executable, "-m", "linclass_gpu.cli", "train", "--backend", "numpy", "--tol", "0", *data, "--json"]
    # SIGINT's default disposition in the child, whatever this process inherited (a shell starts background jobs,
    # and so pytest's workers and their children, with SIGINT ignored, which Python keeps).
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if is_epoch_line(line, 1):
                break
        running_after_first_epoch = process.poll() is None
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert lines and is_epoch_line(lines[-1], 1), f"no epoch line before the process ended: {lines} {err}"
    assert running_after_first_epoch, "the first epoch's line came only when training had ended"
    out = "".join(lines) + rest
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err, err
    summary = last_json(out)
    assert summary["interrupted"] is True and summary["epochs_run"] >= 1
    assert len(summary["train_loss"]) == len(summary["epoch_seconds"]) == summary["epochs_run"]
    epoch_lines = [line for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert [int(line.split()[0]) for line in epoch_lines] == list(range(1, summary["epochs_run"] + 1))
    [summary_line] = [line for line in out.splitlines() if line.startswith("interrupted: ")]
    assert f"after {summary['epochs_run']} epoch" in summary_line


def test_ctrl_c_before_any_epoch_ends_reports_none_and_exits_130(capsys, monkeypatch):
    def interrupted_fit(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SoftmaxRegression, "fit", interrupted_fit)
    status, out, err = run_cli(capsys, "train", "--json")
    summary = last_json(out)
    assert status == cli.EXIT_INTERRUPTED and summary["interrupted"] and summary["epochs_run"] == 0
    assert summary["train_loss"] == [] and summary["test_accuracy"] is None
    assert summary["backend"] == cli.resolve_name("auto")[0], "the backend training was to run on"
    assert len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped KeyboardInterrupt
def test_ctrl_c_that_python_drops_still_ends_the_run_at_the_epoch_end(capsys, monkeypatch):
    """A SIGINT whose KeyboardInterrupt is raised inside a finalizer (Python prints "Exception ignored" and goes on)
    still stops training: the epoch ends, its line is kept, and the run exits 130."""

    class InterruptedWhileFinalised:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside the finalizer, whose exceptions Python drops
                pass

    add = cli.EpochTable.add

    def add_then_interrupt(self, epoch, history):
        add(self, epoch, history)
        if epoch == 0:
            InterruptedWhileFinalised()  # made and finalised at once
            assert self.interrupt.is_set()

    monkeypatch.setattr(cli.EpochTable, "add", add_then_interrupt)
    # Python's own handler, as in a process started in the foreground (pytest's workers may run with SIGINT ignored).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status, out, err = run_cli(capsys, "train", "--backend", "numpy", "--epochs", "4", "--json")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler is restored"
    finally:
        signal.signal(signal.SIGINT, inherited)
    summary = last_json(out)
    assert status == cli.EXIT_INTERRUPTED and summary["interrupted"]
    assert summary["epochs_run"] == 2, "the epoch running when Ctrl-C came finishes, then the run ends"
    assert "interrupted in epoch 3 (epochs finished: 2)" in err


def test_auto_says_in_one_line_why_it_skipped_the_gpu_backends(capsys):
    chosen, skipped = cli.resolve_name("auto")
    if not skipped:
        pytest.skip(f"auto runs the first backend here ({chosen})")
    status, out, _ = run_cli(capsys, "train", "--epochs", "1")
    [note] = [line for line in out.splitlines() if line.startswith("skipped ")]
    ahead = registry.AUTO_ORDER[:registry.AUTO_ORDER.index(chosen)]
    assert note == "skipped " + ", ".join(f"{name}: {probe(name).reason}" for name in ahead)
    assert status == 0 and "(" not in note, "the reasons without their explanations"
    status, out, _ = run_cli(capsys, "train", "--backend", "numpy", "--epochs", "1")
    assert status == 0 and "skipped" not in out, "a backend asked for by name skipped nothing"


def test_status_reason_is_the_detail_without_its_explanation():
    status = registry.BackendStatus("triton", True, False, "no CUDA driver (libcuda.so.1: cannot open); runs under "
                                                           "the Triton interpreter when asked for by name")
    assert status.reason == "no CUDA driver"
    assert registry.BackendStatus("numpy", True, True, "CPU, NumPy 2.0").reason == "CPU, NumPy 2.0"


def test_unconverged_training_is_one_short_line(capsys):
    status, out, err = run_cli(capsys, "train", "--backend", "numpy", "--epochs", "2", "--json")
    assert status == 0 and last_json(out)["converged"] is False and last_json(out)["epochs_run"] == 2
    assert err.splitlines() == [("linclass-gpu train: not converged in --epochs 2 (the training loss still improves "
                                 "by more than --tol 0.001)")]


def test_training_stops_when_the_loss_settles_within_tol(capsys):
    status, out, err = run_cli(capsys, "train", "--backend", "numpy", "--tol", "0.05", "--json")
    summary = last_json(out)
    assert status == 0 and summary["converged"] is True and summary["epochs_run"] < summary["epochs"]
    assert summary["epochs"] == SoftmaxRegression().epochs and err == ""
    assert "(the loss settled within --tol)" in out


# -- --help and errors in the flags' terms -----------------------------------------------------------------------


def test_help_shows_every_default_and_the_estimators_epochs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    defaults = vars(cli.build_parser().parse_args(["train"]))
    for dest, value in defaults.items():
        if dest in ("command", "run") or value is None or value is False:
            continue
        shown = format(value, "g") if isinstance(value, float) else str(value)
        assert f"default: {shown}" in help_text, f"--{dest.replace('_', '-')} does not show its default {shown}"
    assert defaults["epochs"] == SoftmaxRegression().epochs and defaults["tol"] == SoftmaxRegression().tol


@pytest.mark.parametrize("argv,message", [
    (["--learning-rate", "-1"], "--learning-rate must be a positive finite number, got -1.0"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--tol", "-1"], "--tol must be a non-negative finite number, got -1.0"),
    (["--threads", "0"], "--threads must be None or a positive integer, got 0"),
])
def test_errors_name_the_flag_not_the_parameter(capsys, argv, message):
    status, _, err = run_cli(capsys, "train", "--backend", "numpy", *argv)
    assert status == 2 and err == f"linclass-gpu train: error: {message}\n"


def test_flag_names_replace_parameter_names_only_where_used_as_names():
    assert cli.name_flags("training diverged at learning_rate=5; use a smaller learning_rate, e.g. 0.5") == (
        "training diverged at --learning-rate=5; use a smaller --learning-rate, e.g. 0.5")
    assert cli.name_flags("epochs must be a positive integer") == "--epochs must be a positive integer"
    assert cli.name_flags("the loss in epoch 3 of 10 epochs") == "the loss in epoch 3 of 10 epochs"
    assert cli.name_flags("min_learning_rate must be >= 0") == "min_learning_rate must be >= 0"
    assert cli.name_flags("$LINCLASS_BACKEND=cupy cannot run") == "$LINCLASS_BACKEND=cupy cannot run"


def test_new_flags_reach_the_estimator_and_its_backend(capsys, monkeypatch):
    backend_options = []

    def recording_get_backend(name, **options):
        backend_options.append(options)
        return get_backend("numpy", **options)

    monkeypatch.setattr(estimators, "get_backend", recording_get_backend)
    status, out, _ = run_cli(capsys, "train", "--epochs", "1", "--deterministic", "--threads", "1", "--tol", "0.01",
                             "--json")
    summary = last_json(out)  # the settings as the fitted estimator holds them
    assert status == 0 and summary["deterministic"] is True and summary["threads"] == 1 and summary["tol"] == 0.01
    assert backend_options and all(options == {"deterministic": True} for options in backend_options)


# -- install hints that fit the machine --------------------------------------------------------------------------


# Held here because the tests replace the module attribute (monkeypatch undoes that after the fixture's teardown).
CACHED_PROBES = (registry.probe, registry._cuda_driver_missing)


@pytest.fixture
def fresh_probes():
    """The registry's cached probes cleared before and after (tests here simulate other machines)."""
    for cached in CACHED_PROBES:
        cached.cache_clear()
    yield
    for cached in CACHED_PROBES:
        cached.cache_clear()


@pytest.mark.parametrize("driver", [False, True])
def test_kernels_report_without_torch_says_what_to_install(capsys, monkeypatch, fresh_probes, driver):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    monkeypatch.setattr(registry, "_cuda_driver_missing", lambda: "" if driver else "no CUDA driver (simulated)")
    status, out, err = run_cli(capsys, "kernels", "report")
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and "torch is not installed" in err
    if driver:
        assert "pip install 'linclass-gpu[gpu]'" in err
    else:  # a CUDA torch would be gigabytes that cannot run here: PyTorch's CPU wheel and triton instead
        assert "[gpu]" not in err and f"--index-url {registry.TORCH_CPU_INDEX}" in err and "triton" in err


def test_no_message_suggests_the_gpu_extra_without_a_cuda_driver(capsys, monkeypatch, fresh_probes):
    for module in ("torch", "triton", "cupy"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(registry, "_cuda_driver_missing", lambda: "no CUDA driver (simulated)")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "[gpu]" not in out and "torch is not installed" in out and "cupy is not installed" in out
    assert "could not run anyway" in out  # cupy: nothing to install on this machine
