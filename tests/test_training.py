"""The backend-agnostic SGD loop and the learning-rate schedules."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu.backends import FusedSGD, get_backend
from linclass_gpu.schedules import LearningRateSchedule
from linclass_gpu.training import TrainingDivergedError, TrainingHistory, train_sgd


@pytest.mark.parametrize("kind,epoch,step,expected", [
    ("constant", 7, 1000, 0.4),
    ("step", 4, 0, 0.4), ("step", 5, 0, 0.2), ("step", 10, 0, 0.1),
    ("exponential", 0, 0, 0.4), ("exponential", 3, 99, 0.4 * 0.5 ** 3),
    ("invscaling", 3, 0, 0.4), ("invscaling", 0, 99, 0.4 / 100 ** 0.5),
])
def test_schedule_formulas(kind, epoch, step, expected):
    schedule = LearningRateSchedule(kind, initial=0.4, gamma=0.5, step_size=5, power_t=0.5)
    assert schedule(epoch, step) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("arguments,message", [
    (dict(kind="cosine"), "schedule must be one of"), (dict(initial=0.0), "learning_rate"),
    (dict(gamma=1.5), "gamma"), (dict(step_size=0), "step_size"), (dict(power_t=-1.0), "power_t"),
])
def test_schedule_rejects_bad_parameters(arguments, message):
    with pytest.raises(ValueError, match=message):
        LearningRateSchedule(**arguments)


class RecordingStepper:
    """Wraps a FusedSGD and records how the loop drives it."""

    def __init__(self, inner, poison_at_step=None):
        self.inner, self.poison_at_step = inner, poison_at_step
        self.batches, self.rates, self.loss_reads = [], [], 0

    def step(self, rows, learning_rate):
        self.batches.append(np.asarray(rows).copy())
        self.rates.append(learning_rate)
        self.inner.step(rows, learning_rate)
        if len(self.batches) == self.poison_at_step:
            W, b = self.inner.get_params()
            self.inner.set_params(W * np.nan, b)

    run_epoch = FusedSGD.run_epoch  # the loop's per-epoch call, made of this class's steps

    def pop_loss_sum(self):
        self.loss_reads += 1
        return self.inner.pop_loss_sum()

    def get_params(self):
        return self.inner.get_params()

    def set_params(self, W, b):
        self.inner.set_params(W, b)


def make_stepper(n=103, d=4, c=3, seed=0, **options):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
    backend = get_backend("numpy")
    stepper = backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), np.zeros((d, c), np.float32),
                                np.zeros(c, np.float32), max_batch_size=options.pop("max_batch_size", 10), **options)
    return backend, stepper


def run(stepper, backend, n=103, epochs=3, batch_size=10, seed=0, schedule=None, **options):
    return train_sgd(stepper, backend, n, epochs=epochs, batch_size=batch_size,
                     schedule=schedule or LearningRateSchedule("constant", 0.1), rng=np.random.default_rng(seed),
                     progress=False, **options)


def test_epochs_cover_every_row_once_with_a_partial_last_batch():
    backend, inner = make_stepper()
    stepper = RecordingStepper(inner)
    history = run(stepper, backend, epochs=3)
    assert history.steps == 3 * 11 and len(stepper.batches) == 33
    for epoch in range(3):
        batches = stepper.batches[epoch * 11:(epoch + 1) * 11]
        assert [len(rows) for rows in batches] == [10] * 10 + [3]
        assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert not np.array_equal(stepper.batches[0], stepper.batches[11]), "reshuffled every epoch"


def test_loss_is_read_back_once_per_epoch_and_recorded():
    backend, inner = make_stepper()
    stepper = RecordingStepper(inner)
    history = run(stepper, backend, epochs=4)
    assert stepper.loss_reads == 4
    assert len(history.loss) == 4 and len(history.epoch_seconds) == 4
    assert history.loss[-1] < history.loss[0]


def test_without_shuffle_rows_come_in_order():
    backend, inner = make_stepper()
    stepper = RecordingStepper(inner)
    run(stepper, backend, epochs=1, shuffle=False)
    assert np.concatenate(stepper.batches).tolist() == list(range(103))


def test_schedule_is_evaluated_per_step_and_epoch():
    backend, inner = make_stepper()
    stepper = RecordingStepper(inner)
    run(stepper, backend, epochs=2, schedule=LearningRateSchedule("exponential", 0.1, gamma=0.5))
    assert stepper.rates == [0.1] * 11 + [0.05] * 11
    stepper = RecordingStepper(make_stepper()[1])
    run(stepper, backend, epochs=1, schedule=LearningRateSchedule("invscaling", 0.1, power_t=1.0))
    assert stepper.rates == pytest.approx([0.1 / (t + 1) for t in range(11)])


def test_same_seed_same_weights_bitwise_and_other_seed_differs():
    results = []
    for seed in (7, 7, 8):
        backend, stepper = make_stepper(momentum=0.9)
        run(stepper, backend, seed=seed)
        results.append(stepper.get_params()[0])
    assert np.array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_validation_is_scored_after_every_epoch_with_host_parameters():
    backend, stepper = make_stepper()
    seen = []

    def score(W, b):
        assert isinstance(W, np.ndarray) and W.shape == (4, 3) and b.shape == (3,)
        seen.append(W.copy())
        return float(len(seen))

    history = run(stepper, backend, epochs=3, score_validation=score)
    assert history.validation_score == [1.0, 2.0, 3.0]
    assert np.array_equal(seen[-1], stepper.get_params()[0])


def test_divergence_raises_and_restores_the_last_finite_epoch():
    backend, inner = make_stepper()
    stepper = RecordingStepper(inner, poison_at_step=11 + 4)  # in the second epoch
    history = TrainingHistory()
    reference_backend, reference = make_stepper()
    run(reference, reference_backend, epochs=1)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2.*smaller learning_rate"):
        run(stepper, backend, epochs=5, history=history)
    assert len(history.loss) == 1
    W, b = stepper.get_params()
    assert np.array_equal(W, reference.get_params()[0]) and np.isfinite(b).all()


def test_interrupt_restores_the_last_finished_epoch():
    backend, inner = make_stepper()
    stepper = RecordingStepper(inner)
    after_one_epoch = []

    def interrupt(W, b):
        after_one_epoch.append(W.copy())
        stepper.step = lambda rows, rate: (_ for _ in ()).throw(KeyboardInterrupt)  # next step is Ctrl-C
        return 0.0

    with pytest.raises(KeyboardInterrupt):
        run(stepper, backend, epochs=3, score_validation=interrupt)
    assert np.array_equal(stepper.get_params()[0], after_one_epoch[0])


@pytest.mark.parametrize("progress,shown", [(True, True), (False, False), (None, False)])
def test_progress_bar_on_request_and_off_without_a_terminal(capsys, progress, shown):
    pytest.importorskip("tqdm")
    backend, stepper = make_stepper()
    train_sgd(stepper, backend, 103, epochs=2, batch_size=10, schedule=LearningRateSchedule(),
              rng=np.random.default_rng(0), progress=progress)  # pytest's stderr is not a terminal
    assert ("epoch" in capsys.readouterr().err) is shown


def test_single_process_books_answer_every_call_of_data_parallel_with_the_same_parameters():
    import inspect

    from linclass_gpu.distributed import DataParallel, SingleProcess

    def parameters(function):
        return [name for name in inspect.signature(function).parameters if name != "self"]

    calls = ["attach", "detach", "epoch_order", "sum", "mean", "gather", "agree", "check_identical"]
    for name in calls:
        assert parameters(getattr(SingleProcess, name)) == parameters(getattr(DataParallel, name)), name
    books = SingleProcess()
    assert (books.rank, books.world_size, books.is_writer) == (0, 1, True)
    assert books.sum(2.5) == books.mean(2.5) == 2.5 and books.gather("x") == ["x"]


def test_single_process_books_leave_the_step_alone_and_shuffle_as_the_backend_does():
    from linclass_gpu.distributed import SingleProcess

    backend, stepper = make_stepper()
    books = SingleProcess()
    assert books.attach(stepper, backend, 103, 10) == 103 and stepper.reducer is None
    in_order = np.arange(103)
    assert books.epoch_order(backend, 103, np.random.default_rng(3), False, in_order) is in_order
    np.testing.assert_array_equal(books.epoch_order(backend, 103, np.random.default_rng(3), True, in_order),
                                  backend.permutation(103, np.random.default_rng(3)))
