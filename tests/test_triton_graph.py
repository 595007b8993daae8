"""The Triton per-step path's epochs through static buffers and a CUDA graph (linclass_gpu/backends/triton_graph.py):
the same arithmetic as one ``step`` per minibatch, bit for bit in deterministic mode, the scalars read from device
memory, the buffers made once per epoch shape, no host read during an epoch. Under the interpreter the steps run
eagerly through the graph path's buffers; on a CUDA device the graph is recorded once and replayed.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Triton backend needs torch")
pytest.importorskip("linclass_gpu.kernels", reason="the Triton backend needs triton")

from test_triton_backend import LaunchCounter, problem  # noqa: E402
from tolerances import assert_close  # noqa: E402

from linclass_gpu.backends.triton_backend import TritonBackend  # noqa: E402
from linclass_gpu.kernels import sgd_update  # noqa: E402

ON_GPU = torch.cuda.is_available()
# Optimizers whose steps change scalars from step to step (Adam's bias corrections) or not; l1 and momentum keep every
# epoch on the per-step path (the epoch kernel takes neither L1 nor AdaGrad/Adam).
OPTIONS = (dict(momentum=0.9, l1=1e-3, l2=1e-3), dict(optimizer="adagrad", l2=1e-3), dict(optimizer="adam", l1=1e-4))
OPTION_IDS = ("momentum-l1", "adagrad", "adam-l1")


def train(backend, model, X, y, W, b, orders, rates, batch_size, options, x_scale, *, graph: bool, epoch_kernel=False):
    """Epochs by ``run_epoch`` with the graph path on or off; parameters, per-epoch losses, the stepper."""
    stepper = backend.fused_sgd(model, backend.asarray(X), backend.asarray(y), W, b, max_batch_size=batch_size,
                                x_scale=x_scale, **options)
    stepper.use_cuda_graph, stepper.use_epoch_kernel = graph, epoch_kernel
    losses = []
    for order, epoch_rates in zip(orders, rates):
        stepper.run_epoch(backend.asarray(order), epoch_rates, batch_size)
        losses.append(stepper.pop_loss_sum())
    return stepper.get_params(), losses, stepper


def epochs(rng, n_rows, batch_size, n_epochs=3):
    """Row orders and per-step rates that change every epoch (a graph must not replay the first epoch's)."""
    n_steps = -(-n_rows // batch_size)
    orders = [rng.permutation(n_rows) for _ in range(n_epochs)]
    rates = [0.5 * 0.7**epoch * (1 + np.arange(n_steps)) ** -0.5 for epoch in range(n_epochs)]
    return orders, rates


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("model", ("softmax", "sigmoid"))
def test_graph_path_equals_step_by_step_bitwise(model, options, rng):
    """Deterministic mode: the graph path's epochs (a 7-row tail batch, rates changing each step and epoch) give the
    per-step path's parameters and losses bit for bit."""
    backend = TritonBackend(deterministic=True)
    X, y, W, b, x_scale = problem(rng, model, 71, 29, 6, "uint8")
    orders, rates = epochs(rng, 71, 16)
    (W_graph, b_graph), loss_graph, stepper = train(backend, model, X, y, W, b, orders, rates, 16, options, x_scale,
                                                    graph=True)
    (W_steps, b_steps), loss_steps, _ = train(backend, model, X, y, W, b, orders, rates, 16, options, x_scale,
                                              graph=False)
    assert W_graph.tobytes() == W_steps.tobytes() and b_graph.tobytes() == b_steps.tobytes()
    assert loss_graph == loss_steps
    assert stepper._step_count == 3 * 5, "the graph path counts its steps (Adam's t goes on from there)"


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_graph_path_matches_step_by_step_with_atomics(options, rng):
    X, y, W, b, x_scale = problem(rng, "softmax", 50, 23, 10, "float32")
    orders, rates = epochs(rng, 50, 8)
    backend = TritonBackend()
    (W_graph, b_graph), loss_graph, _ = train(backend, "softmax", X, y, W, b, orders, rates, 8, options, x_scale,
                                              graph=True)
    (W_steps, b_steps), loss_steps, _ = train(backend, "softmax", X, y, W, b, orders, rates, 8, options, x_scale,
                                              graph=False)
    assert_close(W_graph, W_steps, "float32", 21, "W")
    assert_close(b_graph, b_steps, "float32", 21, "b")
    assert_close(np.array(loss_graph), np.array(loss_steps), "float32", 21, "loss")


def test_graph_path_launches_and_host_reads(monkeypatch, rng):
    """Two launches per step, every update reading its row of the device table; no host read until pop_loss_sum;
    buffers made once per epoch shape."""
    backend = TritonBackend()
    X, y, W, b, x_scale = problem(rng, "softmax", 40, 17, 5, "uint8")
    stepper = backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=16,
                                x_scale=x_scale, optimizer="adam")
    stepper.use_cuda_graph = True
    counter = LaunchCounter(monkeypatch)
    for epoch in range(2):
        stepper.run_epoch(backend.asarray(rng.permutation(40)), np.full(3, 0.1 / (epoch + 1)), 16)
    assert counter.launches == 2 * 3 * 2
    assert counter.host_reads == 0
    assert len(stepper._graphed_epochs._epochs) == 1
    updates = [launches.update for key, launches in stepper._launches.items() if key[2]]
    assert {key[0] for key in stepper._launches} == {16, 8}, "a full batch and the tail batch, bound once each"
    assert updates and all(update._arguments["step_scalars_ptr"] is not None for update in updates)
    stepper.pop_loss_sum()
    assert counter.host_reads == 1


def test_step_scalars_override_the_scalar_arguments(rng):
    """The update kernel reads the rate and Adam's corrections from ``step_scalars`` and ignores its scalars."""
    theta = torch.from_numpy(rng.normal(size=37).astype(np.float32))
    grad = torch.from_numpy(rng.normal(size=37).astype(np.float32))
    results = []
    for scalars_in_memory in (False, True):
        t, g = theta.clone(), grad.clone()
        m, v = torch.zeros_like(t), torch.zeros_like(t)
        table = torch.tensor([0.05, 1 - 0.9**3, (1 - 0.999**3) ** 0.5, 0.0], dtype=torch.float32)
        scalar_arguments = (dict(learning_rate=123.0, adam_step=1) if scalars_in_memory
                            else dict(learning_rate=0.05, adam_step=3))
        sgd_update.launch_sgd_update(t, g, n_weights=30, velocity=m, accumulator=v,
                                     step_scalars=table if scalars_in_memory else None, **scalar_arguments)
        results.append(t.numpy().copy())
    assert results[0].tobytes() == results[1].tobytes()
    with pytest.raises(ValueError, match="step_scalars must be a float32 vector of 4"):
        sgd_update.sgd_update_arguments(theta, grad, n_weights=30, step_scalars=torch.zeros(3))


def test_data_parallel_and_interpreter_defaults_take_no_graph(rng):
    """Without ``use_cuda_graph`` the graph path is a CUDA device's; a reducer (host exchange per step) never."""
    backend = TritonBackend()
    X, y, W, b, x_scale = problem(rng, "softmax", 20, 7, 3, "uint8")
    stepper = backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=8,
                                x_scale=x_scale)
    assert stepper._graph_applies() == (backend.device.type == "cuda")
    stepper.use_cuda_graph = True
    assert stepper._graph_applies()
    stepper.reducer = object()
    assert not stepper._graph_applies()


@pytest.mark.skipif(not ON_GPU, reason="records and replays a CUDA graph: needs a CUDA device")
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_cuda_graph_is_recorded_once_and_replayed(options, rng):
    backend = TritonBackend(deterministic=True)
    X, y, W, b, x_scale = problem(rng, "softmax", 1000, 784, 10, "uint8")
    orders, rates = epochs(rng, 1000, 128, n_epochs=4)
    (W_graph, b_graph), loss_graph, stepper = train(backend, "softmax", X, y, W, b, orders, rates, 128, options,
                                                    x_scale, graph=None)
    (W_steps, b_steps), loss_steps, _ = train(backend, "softmax", X, y, W, b, orders, rates, 128, options, x_scale,
                                              graph=False)
    assert stepper._graphed_epochs.recorded == 1 and stepper._graphed_epochs.replays == 3
    assert W_graph.tobytes() == W_steps.tobytes() and b_graph.tobytes() == b_steps.tobytes()
    assert loss_graph == loss_steps


class FakeGraphs:
    """``torch.cuda.CUDAGraph`` and ``torch.cuda.graph`` as far as GraphedEpochs uses them, on the CPU: a launch made
    while recording (``launch`` below) is kept by the graph instead of run, and ``replay`` runs the kept ones again
    on the same buffers, as a CUDA graph replays its launches on the same addresses. ``fail`` makes recording raise
    what CUDA raises for an operation it cannot capture."""

    def __init__(self, fail=False):
        self.recording, self.fail = None, fail
        fakes = self

        class Graph:
            def __init__(self):
                self.launches = []

            def replay(self):
                for launch in self.launches:
                    launch()

        class Recording:
            def __init__(self, graph):
                self.graph = graph

            def __enter__(self):
                if fakes.fail:
                    raise RuntimeError("operation not permitted when stream is capturing")
                fakes.recording = self.graph

            def __exit__(self, *exc):
                fakes.recording = None

        self.Graph, self.Recording = Graph, Recording

    def launch(self, work):
        if self.recording is not None:
            self.recording.launches.append(work)
        else:
            work()


@pytest.mark.parametrize("fail", (False, True), ids=("recorded", "recording-fails"))
def test_graphed_epochs_record_once_replay_refilled_buffers_and_fall_back(monkeypatch, fail, rng):
    """The first epoch of a shape runs eagerly and is recorded; later epochs replay over the refilled row and table
    buffers (each sees its own epoch's values); a new variant is a new shape; a failed recording warns once and leaves
    that shape's epochs eager."""
    from linclass_gpu.backends.triton_graph import GraphedEpochs

    fakes = FakeGraphs(fail)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", fakes.Graph)
    monkeypatch.setattr(torch.cuda, "graph", fakes.Recording)
    epochs = GraphedEpochs(torch, torch.device("cpu"), record=True)
    seen = []

    def steps(rows_buffer, tables):
        fakes.launch(lambda: seen.append((rows_buffer.clone(), tables["rates"].clone())))

    expected = []
    for epoch, variant in enumerate([(False,)] * 3 + [(True,)] * 2):
        rows, rates = torch.from_numpy(rng.permutation(10)), np.full((3, 4), epoch, dtype=np.float32)
        if fail and epoch in (0, 3):
            with pytest.warns(RuntimeWarning, match="recording an epoch's launches as a CUDA graph failed"):
                epochs.run(steps, rows, {"rates": rates}, 4, variant=variant)
        else:
            epochs.run(steps, rows, {"rates": rates}, 4, variant=variant)
        expected.append((rows, rates))
    assert len(seen) == len(expected), "every epoch's work ran once"
    for (rows_seen, rates_seen), (rows, rates) in zip(seen, expected):
        assert torch.equal(rows_seen, rows) and np.array_equal(rates_seen.numpy(), rates)
    assert (epochs.recorded, epochs.replays) == ((0, 0) if fail else (2, 3))
