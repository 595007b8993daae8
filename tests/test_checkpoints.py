"""Resumable training: a run killed with SIGKILL mid-epoch and resumed ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import stored_members, write_members
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linclass_gpu import SoftmaxRegression
from linclass_gpu.checkpoints import _MEMBERS as CHECKPOINT_MEMBERS
from linclass_gpu.checkpoints import check_resumable_params, data_fingerprint
from linclass_gpu.files import TEMPORARY_MARK
from linclass_gpu.persistence import read_npz, write_npz_atomically

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
    assert not [p for p in os.listdir(tmp_path) if TEMPORARY_MARK in p], "no half-written file left"
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


# ---------------------------------------------------------------------------------------------------------------------
# parameters a checkpoint must store faithfully or refuse before any work


@pytest.mark.parametrize("class_weight", [{0: 5.0}, {np.int64(0): 5.0, np.int64(2): 0.5}], ids=["int", "np.int64"])
def test_a_run_with_int_class_weight_keys_resumes(tmp_path, problem, class_weight):
    X, y = problem
    path = tmp_path / "run.npz"
    first = SoftmaxRegression(epochs=2, random_state=0, class_weight=class_weight).fit(X, y, checkpoint=path)
    longer = SoftmaxRegression(epochs=3, random_state=0, class_weight=class_weight).fit(X, y, checkpoint=path)
    np.testing.assert_array_equal(longer.loss_curve_[:2], first.loss_curve_)  # resumed, not refused or restarted
    assert len(longer.loss_curve_) == 3


@pytest.mark.parametrize("random_state", [np.random.RandomState(0), np.random.default_rng(0)],
                         ids=["RandomState", "Generator"])
def test_a_random_generator_is_refused_before_any_epoch(tmp_path, problem, random_state):
    X, y = problem
    model = SoftmaxRegression(epochs=3, random_state=random_state)
    with pytest.raises(ValueError, match=f"random_state is a {type(random_state).__name__}"):
        model.fit(X, y, checkpoint=tmp_path / "run.npz")
    assert not (tmp_path / "run.npz").exists() and not hasattr(model, "loss_curve_")


def test_an_unstorable_parameter_is_refused_by_the_keeper_naming_it():
    with pytest.raises(ValueError, match=r"params\['class_weight'\]: a dict key of type tuple"):
        check_resumable_params({"class_weight": {(0,): 1.0}})
    with pytest.raises(ValueError, match=r"params\['tol'\]: a object cannot be stored"):
        check_resumable_params({"tol": object()})


# ---------------------------------------------------------------------------------------------------------------------
# crafted and damaged checkpoints: ValueError naming the file, nothing broadcast or half-restored


@pytest.fixture
def checkpoint(tmp_path, problem):
    """A finished 2-epoch checkpoint of ``problem``: (its path, its members)."""
    X, y = problem
    path = tmp_path / "run.npz"
    SoftmaxRegression(epochs=2, random_state=0).fit(X, y, checkpoint=path)
    return path, stored_members(path.read_bytes())


@pytest.mark.parametrize(("change", "problem_text"), [
    ({"params": np.array("[1, 2]")}, "params.npy: holds a JSON list, not a dict"),  # AttributeError before
    ({"params": np.array("{")}, "params.npy: is not valid JSON"),
    ({"W": np.array(0.5, np.float32)}, r"W has shape \(\), this model's \(4, 3\)"),  # was broadcast
    ({"b": np.zeros(5, np.float32)}, r"b has shape \(5,\)"),
    ({"W": np.full((4, 3), np.nan, np.float32)}, "W.npy: holds NaN"),
    ({"loss": np.array([0.5, 0.4, 0.3])}, "loss holds 3 epochs, not 2"),  # changed the epochs run
    ({"epoch_seconds": np.array([0.1])}, "epoch_seconds holds 1 epochs, not 2"),
    ({"epochs_done": np.array(-1)}, "epochs_done is -1"),
    ({"steps": np.array(1.5)}, "steps.npy: holds dtype float64"),
    ({"rng_state": np.array('{"bit_generator": "PCG64", "state": 3}')}, "rng_state is not a PCG64 state"),
    ({"classes_": np.array(["a", "b", "c"])}, "its classes differ"),
], ids=["params-list", "params-json", "scalar-W", "b-shape", "nan-W", "loss-length", "seconds-length",
        "negative-epochs", "float-steps", "rng-state", "classes"])
def test_crafted_checkpoints_are_value_errors_naming_the_file(tmp_path, problem, checkpoint, change, problem_text):
    X, y = problem
    path, members = checkpoint
    write_members(path, {**members, **change})
    with pytest.raises(ValueError, match=problem_text) as info:
        SoftmaxRegression(epochs=3, random_state=0).fit(X, y, checkpoint=path)
    assert str(path) in str(info.value)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_checkpoints_resume_or_give_a_value_error_naming_the_file(tmp_path, problem, checkpoint, data):
    X, y = problem
    path, _ = checkpoint
    valid = path.read_bytes()
    content = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        content[data.draw(st.integers(0, len(content) - 1), label="position")] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.just(len(content)), st.integers(0, len(content))), label="cut")
    path.write_bytes(bytes(content[:cut]))
    try:
        model = SoftmaxRegression(epochs=3, random_state=0).fit(X, y, checkpoint=path)
    except ValueError as error:
        assert str(path) in str(error)
    else:
        assert len(model.loss_curve_) == 3 and np.isfinite(model.coef_).all()
    finally:
        path.write_bytes(valid)


# ---------------------------------------------------------------------------------------------------------------------
# the fingerprint covers the feature values


def test_the_fingerprint_covers_the_feature_values_in_any_layout(problem):
    X, y = problem
    targets = np.asarray(y)
    base = data_fingerprint(X.shape[1], targets, features=X)
    assert base == data_fingerprint(X.shape[1], targets, features=np.asfortranarray(X))
    assert base == data_fingerprint(X.shape[1], targets, features=torch_or_numpy(X))
    changed = X.copy()
    changed[123, 2] = np.nextafter(changed[123, 2], np.inf)  # one value, one ulp
    assert base != data_fingerprint(X.shape[1], targets, features=changed)
    assert base != data_fingerprint(X.shape[1], targets, features=X.astype(np.float64))
    assert base != data_fingerprint(X.shape[1], targets, features=X * 2)  # other preprocessing


def torch_or_numpy(X):
    """``X`` as a torch tensor where torch is installed (the fingerprint brings it to the host a block at a time)."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(X)


# A checkpointed fit of many short epochs (a checkpoint written every few milliseconds), killed at random moments.
CHECKPOINTED_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    from linclass_gpu import SoftmaxRegression
    rng = np.random.default_rng(5)
    X = rng.normal(size=(64, 300)).astype(np.float32)
    y = np.arange(64) % 10
    SoftmaxRegression(epochs=1, tol=None).fit(X, y)  # imports and compiled loops first: the kills land in the loop
    print("ready", flush=True)
    SoftmaxRegression(epochs=10**6, batch_size=64, random_state=0).fit(X, y, checkpoint=sys.argv[1])
""")


def test_sigkill_during_checkpointed_fits_leaves_a_readable_checkpoint_and_no_temporary_files(tmp_path):
    path, script = tmp_path / "run.npz", tmp_path / "loop.py"
    script.write_text(CHECKPOINTED_LOOP)
    delays = np.random.default_rng(1).uniform(0.05, 0.3, size=10)
    for delay in delays:
        writer = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
        assert writer.stdout.readline() == b"ready\n"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        if path.exists():
            # All members present, each checked.
            stored = read_npz(path, {"W", "params", "rng_state"}, "checkpoint", CHECKPOINT_MEMBERS)
            assert stored["W"].shape == (300, 10)
    assert path.exists(), "some checkpoint was written in 10 runs"
    written = [name for name in os.listdir(tmp_path) if TEMPORARY_MARK in name]
    write_npz_atomically(path, stored_members(path.read_bytes()))  # the next write cleans up after the killed ones
    assert sorted(os.listdir(tmp_path)) == ["loop.py", "run.npz"], written
    print(f"{len(delays)} kills during checkpointed fits, {len(written)} temporary files left, "
          "removed by the next write")


def test_a_checkpoint_of_other_feature_values_is_refused(tmp_path, problem):
    X, y = problem
    path = tmp_path / "run.npz"
    SoftmaxRegression(epochs=2, random_state=0).fit(X, y, checkpoint=path)
    with pytest.raises(ValueError, match="other training data"):
        SoftmaxRegression(epochs=3, random_state=0).fit(X * 2, y, checkpoint=path)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_resume_with_averaging_and_early_stopping_ends_where_an_uninterrupted_run_does(tmp_path, problem,
                                                                                        early_stopping):
    X, y = problem
    options = dict(random_state=0, early_stopping=early_stopping, n_iter_no_change=2, tol=1e-4, average=True)
    straight = SoftmaxRegression(epochs=12, **options).fit(X, y)
    path = tmp_path / "run.npz"
    SoftmaxRegression(epochs=3, **options).fit(X, y, checkpoint=path)
    resumed = SoftmaxRegression(epochs=12, **options).fit(X, y, checkpoint=path)
    np.testing.assert_array_equal(resumed.coef_, straight.coef_)
    assert resumed.n_iter_ == straight.n_iter_ and resumed.t_ == straight.t_
    again = SoftmaxRegression(epochs=12, **options).fit(X, y, checkpoint=path)  # a finished run: nothing more
    np.testing.assert_array_equal(again.coef_, straight.coef_)
    assert again.n_iter_ == straight.n_iter_
