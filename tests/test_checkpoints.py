"""Resumable training: a run killed with SIGKILL mid-epoch and resumed ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from linclass_gpu import SoftmaxRegression

# A training script that kills itself (SIGKILL: no cleanup, no finally) at a given SGD step.
TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from linclass_gpu import SoftmaxRegression
    from linclass_gpu.backends.array_backend import ArrayFusedSGD

    checkpoint, kill_at_step, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kill_at_step:
        original_step, steps = ArrayFusedSGD.step, []

        def step_or_die(self, rows, learning_rate):
            steps.append(1)
            if len(steps) == kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            original_step(self, rows, learning_rate)

        ArrayFusedSGD.step = step_or_die
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    y = (X[:, :3].argmax(axis=1) + (X[:, 3] > 1.5)) % 4
    model = SoftmaxRegression(**{PARAMS})
    model.fit(X, y, checkpoint=checkpoint, checkpoint_every=1)
    np.savez(output, coef=model.coef_, intercept=model.intercept_, loss=model.loss_curve_, steps=model.t_)
""")
PARAMS = dict(epochs=5, batch_size=32, momentum=0.9, nesterov=True, schedule="invscaling", learning_rate=0.2,
              random_state=11)


def run_training(tmp_path, checkpoint, kill_at_step, output):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.replace("{PARAMS}", repr(PARAMS)))
    return subprocess.run([sys.executable, str(script), str(checkpoint), str(kill_at_step), str(output)],
                          capture_output=True, text=True, timeout=120)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    uninterrupted = run_training(tmp_path, tmp_path / "straight.npz", 0, tmp_path / "straight_out.npz")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    steps_per_epoch = -(-500 // 32)
    killed = run_training(tmp_path, tmp_path / "resumed.npz", 2 * steps_per_epoch + 7, tmp_path / "never.npz")
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "resumed.npz").exists() and not (tmp_path / "never.npz").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], "no half-written file left"
    resumed = run_training(tmp_path, tmp_path / "resumed.npz", 0, tmp_path / "resumed_out.npz")
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = np.load(tmp_path / "straight_out.npz"), np.load(tmp_path / "resumed_out.npz")
    for name in ("coef", "intercept", "loss", "steps"):
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.fixture
def problem(rng):
    X = rng.normal(size=(200, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def test_training_longer_resumes_from_the_finished_checkpoint(tmp_path, problem):
    X, y = problem
    path = tmp_path / "run.npz"
    SoftmaxRegression(epochs=3, random_state=0).fit(X, y, checkpoint=path)
    longer = SoftmaxRegression(epochs=6, random_state=0).fit(X, y, checkpoint=path)
    straight = SoftmaxRegression(epochs=6, random_state=0).fit(X, y)
    np.testing.assert_array_equal(longer.coef_, straight.coef_)
    np.testing.assert_array_equal(longer.loss_curve_, straight.loss_curve_)


@pytest.mark.parametrize("change,message", [
    (dict(learning_rate=0.01), "parameters differ: learning_rate"),
    (dict(data="other"), "other training data"),
])
def test_a_checkpoint_of_another_run_is_refused(tmp_path, problem, change, message):
    X, y = problem
    path = tmp_path / "run.npz"
    SoftmaxRegression(epochs=2, random_state=0).fit(X, y, checkpoint=path)
    params = {k: v for k, v in change.items() if k != "data"}
    y_other = (y + 1) % 3 if "data" in change else y
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(epochs=2, random_state=0, **params).fit(X, y_other, checkpoint=path)


def test_checkpoint_every_is_validated_and_files_are_checked(tmp_path, problem):
    X, y = problem
    with pytest.raises(ValueError, match="checkpoint_every"):
        SoftmaxRegression(epochs=1).fit(X, y, checkpoint=tmp_path / "c.npz", checkpoint_every=0)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a readable linclass_gpu checkpoint"):
        SoftmaxRegression(epochs=1).fit(X, y, checkpoint=tmp_path / "garbage.npz")


def test_numpy_scalar_parameters_are_saved(tmp_path, problem):
    X, y = problem
    model = SoftmaxRegression(epochs=np.int64(2), learning_rate=np.float64(0.1)).fit(X, y)
    model.save(tmp_path / "m.npz")
    assert SoftmaxRegression.load(tmp_path / "m.npz").epochs == 2
