"""The Triton backend: torch tensors on the CUDA device, one fused kernel plus one update kernel per SGD step, or one
launch per epoch (``kernels/epoch_split_sgd.py`` on sm_90 GPUs, else ``kernels/epoch_sgd.py``; see
:class:`TritonFusedSGD`).

On a machine without a CUDA device the same kernels run under the Triton interpreter (``TRITON_INTERPRET=1``) on CPU
tensors: slow, for testing, and only when the backend is asked for by name (``auto`` never picks it there).

Parameters live on the device as one flat fp32 vector ``theta = [W (D, K) row-major, b (K,)]``; the gradient buffers
(an atomic accumulator, or per-program partials in deterministic mode), the momentum buffer and the fp64 running
loss share that layout, so one update kernel serves every model. A step's two launches are bound once per batch size
and then replayed through the compiled kernels' launchers with only the rows and the rate changed
(:mod:`.triton_launch`): no argument binding on the host per step.

The kernels are in ``kernels/`` (installed as ``linclass_gpu.kernels``), imported by name where they are used:
inside the methods, since torch and triton are optional dependencies and this module imports without them. The
package decides once per process whether they run under the interpreter (``linclass_gpu.kernels.INTERPRET``) and
serialises interpreted launches across threads.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .base import (
    ADAGRAD_EPS,
    ADAM_BETAS,
    ADAM_EPS,
    MODELS,
    Backend,
    BackendUnavailableError,
    FusedSGD,
    adam_bias_corrections,
    check_optimizer,
)
from .triton_graph import GraphedEpochs, graph_applies

# Rows per chunk in decision_function: bounds the float32 copy of non-float32 inputs.
PREDICT_CHUNK_ROWS = 16384


def _torch_dtype(torch, dtype):
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return getattr(torch, name)


class TritonFusedSGD(FusedSGD):
    """The fused SGD step of :class:`TritonBackend`: 2 launches per step, or 1 launch per epoch, the loss kept on the
    device.

    Parameters are described in :meth:`Backend.fused_sgd`; ``sample_weight`` (N,) weights each row's loss and
    gradient (``dZ_i = w_i (P_i − Y_i)/B``, loss ``Σ w_i ℓ_i``).

    :meth:`run_epoch` trains a whole epoch in one launch of ``kernels/epoch_sgd.py`` wherever that kernel applies:
    plain or (Nesterov) momentum SGD with any L2, sample weights and intercept setting, every input dtype, D ≤ 1024
    features and K ≤ 16 outputs, no data-parallel reducer, on an sm_90 or newer GPU (or the interpreter). AdaGrad,
    Adam, L1, larger models, data-parallel runs and older GPUs take the per-step path (:meth:`step` per minibatch),
    whose epochs, on a CUDA device and without a data-parallel reducer, are recorded once per shape as a CUDA graph
    and replayed (see ``use_cuda_graph``).
    On a CUDA device of compute capability 9.0 or newer the epoch runs on ``kernels/epoch_split_sgd.py`` instead
    where that applies (batches of at most 128 rows, its feature slices fitting the device's SMs): P cooperating
    programs, the features split between them, one grid barrier per step.

    Attributes
    ----------
    use_epoch_kernel : bool
        Default True; False makes :meth:`run_epoch` take the per-step path always (benchmarks, checks).
    split_precision : str
        The products of the multi-program epoch kernel: "mma" (default: tensor cores with fp32-grade results, fp16
        hi/lo pairs for uint8 and fp16 X, tf32x3 for float32 and bfloat16) or "ieee" (FMA); ``None`` keeps the
        single-program epoch kernel (benchmarks, checks).
    use_tiled_step : bool or None
        Default None: softmax steps on a CUDA device take ``kernels/softmax_tiled_sgd.py`` (class groups × row
        splits, dW flushed once per step, by tensor cores from sm_90: tf32x3, or one TF32 pass with ``tf32``;
        deterministic mode at full parallelism) at large batches or many classes
        (``softmax_tiled_sgd.tiled_step_pays``); True or False force it on or off where it applies (tests,
        benchmarks).
    use_cuda_graph : bool or None
        Default None: on a CUDA device, :meth:`run_epoch`'s per-step epochs (no data-parallel reducer) are recorded
        once per shape as a CUDA graph and replayed (:mod:`.triton_graph`); True also takes that path's static
        buffers under the interpreter (run eagerly: tests), False launches step by step (benchmarks, checks).
    """

    use_epoch_kernel: bool = True
    split_precision: str | None = "mma"
    use_tiled_step: bool | None = None
    use_cuda_graph: bool | None = None

    def __init__(self, backend: "TritonBackend", model: str, X, y, W: np.ndarray, b: np.ndarray, *,
                 max_batch_size: int, l2: float, momentum: float, nesterov: bool, fit_intercept: bool,
                 x_scale: float, sample_weight=None, l1: float = 0.0, optimizer: str = "sgd"):
        from linclass_gpu.kernels import epoch_sgd, sgd_update, sigmoid_sgd, softmax_sgd

        torch = backend._torch
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        check_optimizer(optimizer, momentum, nesterov)
        self.optimizer = optimizer
        W, b = np.asarray(W, dtype=np.float32), np.asarray(b, dtype=np.float32).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(f"W must be (D, K) and b (K,); got {W.shape} and {b.shape}")
        self.model, self.backend = model, backend
        self.n_features, self.n_outputs = W.shape
        self._device = backend.device
        self._X = backend._features(X)
        if self._X.shape[1] != self.n_features:
            raise ValueError(f"X has {self._X.shape[1]} features, W has {self.n_features} rows")
        self._y = backend._training_labels(model, y, self.n_outputs, self._X.shape[0])
        self._sample_weight = backend._weights(sample_weight, self._X.shape[0])
        self.l2, self.l1 = float(l2), float(l1)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.fit_intercept, self.x_scale = bool(fit_intercept), float(x_scale)
        self.deterministic = backend.deterministic
        n_weights = self.n_features * self.n_outputs
        self._n_weights, n_params = n_weights, n_weights + self.n_outputs
        self._theta = torch.empty(n_params, dtype=torch.float32, device=self._device)
        # The momentum buffer or Adam's m; AdaGrad's Σ g² or Adam's v.
        self._velocity = torch.zeros_like(self._theta) if self.momentum or optimizer == "adam" else None
        self._accumulator = torch.zeros_like(self._theta) if optimizer != "sgd" else None
        self._step_count = 0  # on the host: Adam's t, passed as scalars (no sync)
        if model == "softmax":
            self._config = softmax_sgd.softmax_config(self.n_features, self.n_outputs, backend.deterministic)
        else:
            self._config = sigmoid_sgd.sigmoid_config(self.n_features, self.n_outputs, backend.deterministic)
        self.max_batch_size = int(max_batch_size)
        self._epoch_config = (
            epoch_sgd.epoch_config(self.n_features, self.n_outputs, self.nesterov, sample_weight is not None)
            if backend.epoch_kernel_supported and optimizer == "sgd" and not self.l1 else None)
        # The multi-program epoch kernel's config and workspace per (batch size, precision), made at the first epoch.
        self._split_epochs: dict[tuple[int, str], tuple | None] = {}
        max_blocks = -(-self.max_batch_size // self._config.block_b)
        self._loss_sum = torch.zeros(1, dtype=torch.float64, device=self._device)
        if self.deterministic:
            self._max_programs = sgd_update.max_partials(n_params, max_blocks)
            self._grad = torch.empty((self._max_programs, n_params), dtype=torch.float32, device=self._device)
            self._loss_partials = torch.empty(self._max_programs, dtype=torch.float32, device=self._device)
        else:
            self._max_programs = None
            self._grad = torch.zeros(n_params, dtype=torch.float32, device=self._device)
            self._loss_partials = None
        # The step's launches per (batch size, data-parallel or not, scalars from device memory or not), bound at
        # the first such step.
        self._launches: dict[tuple[int, bool, bool], SimpleNamespace] = {}
        self._graphed_epochs = GraphedEpochs(torch, self._device)
        self.set_params(W, b)

    def _launches_for(self, rows, with_reducer: bool, scalars_on_device: bool = False) -> SimpleNamespace:
        """The bound launches of steps on ``rows.shape[0]`` rows (see :meth:`_prepare_launches`), made once."""
        key = (rows.shape[0], with_reducer, scalars_on_device)
        launches = self._launches.get(key)
        if launches is None:
            launches = self._launches[key] = self._prepare_launches(rows, with_reducer, scalars_on_device)
        return launches

    def step(self, rows: Any, learning_rate: float) -> None:
        if rows.shape[0] == 0:
            raise ValueError("a minibatch needs at least one row")
        reducer = self.reducer
        launches = self._launches_for(rows, reducer is not None)
        if reducer is None:
            launches.step(rows_ptr=rows)  # bound with grad_scale = 1/B
        else:  # data-parallel: the mean over the global batch, then the reducer sums [dW.ravel(), db] over processes
            launches.step(rows_ptr=rows, grad_scale=1.0 / reducer.gradient_divisor(rows.shape[0]))
            if launches.reduce is not None:
                launches.reduce()
            reducer.reduce_gradient_((launches.grad,))
        self._step_count += 1
        if self.optimizer == "adam":
            bias_correction1, bias_correction2_sqrt = adam_bias_corrections(self._step_count)
            launches.update(learning_rate=learning_rate, bias_correction1=bias_correction1,
                            bias_correction2_sqrt=bias_correction2_sqrt)
        else:
            launches.update(learning_rate=learning_rate)
        if reducer is not None:
            reducer.reduce_parameters_((self._theta,))

    def _prepare_launches(self, rows, with_reducer: bool, scalars_on_device: bool) -> SimpleNamespace:
        """The launches of a step on batches of ``rows.shape[0]`` rows, bound once (:mod:`.triton_launch`): a step
        then costs the host two calls of the compiled kernels' launchers, the changed arguments put in their slots.

        Returns ``step`` (the fused loss-and-gradient kernel, or the tiled step's launches as one callable),
        ``reduce`` (None, or in deterministic data-parallel runs the fixed-order reduce of the partials into one
        slice, which the reducer exchanges), ``update`` and ``grad`` (the buffer the update reads). With
        ``scalars_on_device`` the update reads its rate (and Adam's corrections) from a ``step_scalars_ptr`` row
        each call passes, instead of ``learning_rate``.
        """
        from linclass_gpu.kernels import sigmoid_sgd, softmax_sgd

        from .triton_launch import PreparedLaunch

        loss = self._loss_partials if self.deterministic else self._loss_sum
        if self._tiled_step_applies(rows.shape[0]):
            step, n_programs = self._tiled_step(rows, loss)
            return self._bind_update(step, n_programs, with_reducer, scalars_on_device)
        common = dict(x_scale=self.x_scale, grad_scale=1.0 / rows.shape[0], config=self._config,
                      max_programs=self._max_programs, deterministic=self.deterministic,
                      sample_weight=self._sample_weight, input_precision=self.backend.input_precision)
        if self.model == "softmax":
            kernel = softmax_sgd.softmax_sgd_kernel
            grid, arguments = softmax_sgd.softmax_sgd_arguments(
                self._X, rows, self._y, self._theta, self._grad, loss, n_classes=self.n_outputs, **common)
        else:
            kernel = sigmoid_sgd.sigmoid_sgd_kernel
            grid, arguments = sigmoid_sgd.sigmoid_sgd_arguments(
                self._X, rows, self._y, self._theta, self._grad, loss, n_outputs=self.n_outputs,
                loss_kind=sigmoid_sgd.MODEL_LOSSES[self.model], **common)
        return self._bind_update(PreparedLaunch(kernel, grid, arguments), grid[0], with_reducer, scalars_on_device)

    def _tiled_step_applies(self, batch: int) -> bool:
        """Whether steps of ``batch`` rows take the tiled softmax kernels (see ``use_tiled_step``)."""
        from linclass_gpu.kernels import softmax_tiled_sgd

        if self.model != "softmax" or softmax_tiled_sgd.tiled_config(self.n_features, self.n_outputs) is None:
            return False
        if self.use_tiled_step is not None:
            return self.use_tiled_step
        return not self.backend.interpreted and softmax_tiled_sgd.tiled_step_pays(batch, self.n_outputs)

    def _tiled_step(self, rows, loss) -> tuple[Callable[..., None], int]:
        """The tiled step's launches on batches of ``rows.shape[0]`` rows, bound once, as one callable taking the
        changed arguments (each launch gets those it has), and its number of row splits (gradient slices)."""
        from linclass_gpu.kernels import softmax_tiled_sgd

        from .triton_launch import PreparedLaunch

        torch, batch = self.backend._torch, rows.shape[0]
        # The dW GEMM runs on tensor cores where its builds are spill-free: tf32x3 (three TF32 passes, fp32-grade) by
        # default, one TF32 pass (10-bit products) with the backend's tf32 option; older GPUs take FMA. The logits
        # stay exact FMA products either way.
        mma = self.backend.interpreted or (
            torch.cuda.get_device_capability(self._device) >= softmax_tiled_sgd.MMA_MIN_CAPABILITY)
        config = softmax_tiled_sgd.tiled_config(self.n_features, self.n_outputs,
                                                ("tf32" if self.backend.tf32 else "tf32x3") if mma else "ieee")
        # Two programs per SM of this device (the interpreter has none: the kernel's default grid).
        target = 2 * self.backend.multiprocessor_count or softmax_tiled_sgd.TARGET_PROGRAMS
        lse = None if config.one_class_tile else torch.empty(
            softmax_tiled_sgd.lse_buffer_shape(batch, self.n_outputs, target), dtype=torch.float32,
            device=self._device)
        layout, launches = softmax_tiled_sgd.softmax_tiled_launches(
            self._X, rows, self._y, self._theta, self._grad, loss, lse, n_classes=self.n_outputs,
            x_scale=self.x_scale, grad_scale=1.0 / batch, config=config, target_programs=target,
            max_programs=self._max_programs, deterministic=self.deterministic, sample_weight=self._sample_weight)
        prepared = [(PreparedLaunch(kernel, grid, arguments), set(arguments)) for kernel, grid, arguments in launches]

        def step(**changed) -> None:
            for launch, names in prepared:
                launch(**{name: value for name, value in changed.items() if name in names})

        return step, layout.n_row_splits

    def _bind_update(self, step, n_programs: int, with_reducer: bool, scalars_on_device: bool) -> SimpleNamespace:
        """:meth:`_prepare_launches`' result around ``step``, whose ``n_programs`` programs wrote the gradient."""
        from linclass_gpu.kernels import sgd_update

        from .triton_launch import PreparedLaunch

        grad, deterministic, reduce = self._grad, self.deterministic, None
        if with_reducer and deterministic:
            # Exchanging the partial slices would send P θ-sized slices and need every process to launch the same P
            # programs: sum them here instead, in the fixed order, into slice 0 (a reduce-only launch; each program
            # reads and writes only its own columns, so the alias is safe; it also adds the loss partials to the
            # running loss), exchange that one slice, then update from it as from an accumulator. One launch more;
            # still bitwise reproducible.
            grad, deterministic = self._grad[0], False
            reduce = PreparedLaunch(sgd_update.sgd_update_kernel, *sgd_update.sgd_update_arguments(
                self._theta, self._grad, n_weights=self._n_weights, deterministic=True, n_partials=n_programs,
                loss_partials=self._loss_partials, loss_sum=self._loss_sum, grad_out=grad))
        adam = self.optimizer == "adam"
        update = PreparedLaunch(sgd_update.sgd_update_kernel, *sgd_update.sgd_update_arguments(
            self._theta, grad, n_weights=self._n_weights, l2=self.l2, l1=self.l1, momentum=self.momentum,
            nesterov=self.nesterov, fit_intercept=self.fit_intercept, velocity=self._velocity,
            deterministic=deterministic, n_partials=n_programs, loss_partials=self._loss_partials,
            loss_sum=self._loss_sum, accumulator=self._accumulator, eps=ADAM_EPS if adam else ADAGRAD_EPS,
            adam_step=1 if adam else 0, betas=ADAM_BETAS,
            # each step passes its rate (and Adam's corrections), or the table row holding them
            step_scalars=self._theta.new_zeros(sgd_update.STEP_SCALARS) if scalars_on_device else None))
        return SimpleNamespace(step=step, reduce=reduce, update=update, grad=grad)

    def epoch_kernel_applies(self) -> bool:
        """Whether :meth:`run_epoch` trains in one launch (see the class notes), given the current settings."""
        return self.use_epoch_kernel and self._epoch_config is not None and self.reducer is None

    def run_epoch(self, rows: Any, learning_rates: np.ndarray, batch_size: int,
                  on_steps: Callable[[int], None] | None = None) -> None:
        """One epoch (see :meth:`FusedSGD.run_epoch`): one launch of the epoch kernel where it applies, which reads
        the rates as a float32 device vector (one host-to-device copy, no sync) and adds the epoch's loss to the
        running loss once; otherwise the per-step launches, replayed from a CUDA graph where ``use_cuda_graph``
        applies (the rates copied to the device once per epoch) or one :meth:`step` per minibatch."""
        n_steps = -(-rows.shape[0] // batch_size) if batch_size > 0 else 0
        if np.shape(learning_rates) != (n_steps,):
            raise ValueError(f"learning_rates must hold one rate per step: {n_steps} for {rows.shape[0]} rows in "
                             f"batches of {batch_size}, got shape {np.shape(learning_rates)}")
        if n_steps == 0:
            return
        if self.epoch_kernel_applies() and batch_size <= self.max_batch_size:
            self._launch_epoch_kernel(rows, learning_rates, int(batch_size))
        elif self._graph_applies():
            self._graphed_epoch(rows, learning_rates, int(batch_size))
        else:
            super().run_epoch(rows, learning_rates, batch_size, on_steps)
            return
        self._step_count += n_steps
        if on_steps is not None:
            on_steps(n_steps)

    def _launch_epoch_kernel(self, rows, learning_rates: np.ndarray, batch_size: int) -> None:
        """The epoch in one launch: the multi-program epoch kernel where it applies, else the single-program one."""
        from linclass_gpu.kernels import epoch_sgd, epoch_split_sgd

        torch = self.backend._torch
        rates = torch.from_numpy(np.asarray(learning_rates, dtype=np.float32)).to(self._device)
        common = dict(model=self.model, n_outputs=self.n_outputs, batch_size=batch_size, x_scale=self.x_scale,
                      l2=self.l2, momentum=self.momentum, nesterov=self.nesterov, fit_intercept=self.fit_intercept,
                      velocity=self._velocity, sample_weight=self._sample_weight)
        split = self._split_epoch(batch_size)
        if split is not None:
            config, exchange, barrier = split
            epoch_split_sgd.launch_epoch_split_sgd(self._X, rows.contiguous(), self._y, self._theta, self._loss_sum,
                                                   rates, config=config, exchange=exchange, barrier=barrier, **common)
        else:
            epoch_sgd.launch_epoch_sgd(self._X, rows.contiguous(), self._y, self._theta, self._loss_sum, rates,
                                       config=self._epoch_config, input_precision=self.backend.input_precision,
                                       **common)

    def _graph_applies(self) -> bool:
        """Whether :meth:`run_epoch`'s per-step epochs go through :class:`GraphedEpochs` (see ``use_cuda_graph``)."""
        return graph_applies(self.use_cuda_graph, self.reducer, self._device)

    def _graphed_epoch(self, rows, learning_rates: np.ndarray, batch_size: int) -> None:
        """The per-step epoch through :class:`GraphedEpochs`: the steps' scalars as a device table, each update
        reading its row."""
        from linclass_gpu.kernels import sgd_update

        n_steps = len(learning_rates)
        scalars = np.zeros((n_steps, sgd_update.STEP_SCALARS), dtype=np.float32)
        scalars[:, 0] = learning_rates
        scalars[:, 1:3] = 1.0
        if self.optimizer == "adam":
            scalars[:, 1], scalars[:, 2] = adam_bias_corrections(self._step_count + 1 + np.arange(n_steps))

        def steps(rows_buffer, tables) -> None:
            for index in range(n_steps):
                batch_rows = rows_buffer[index * batch_size:(index + 1) * batch_size]
                launches = self._launches_for(batch_rows, with_reducer=False, scalars_on_device=True)
                launches.step(rows_ptr=batch_rows)
                launches.update(step_scalars_ptr=tables["scalars"][index])

        # The launches depend on use_tiled_step too (the other settings are fixed at construction).
        self._graphed_epochs.run(steps, rows, {"scalars": scalars}, batch_size, variant=(self.use_tiled_step,))

    def split_epoch_applies(self, batch_size: int) -> bool:
        """Whether :meth:`run_epoch` in batches of ``batch_size`` takes the multi-program epoch kernel."""
        return self.epoch_kernel_applies() and self._split_epoch(batch_size) is not None

    def _split_epoch(self, batch_size: int) -> tuple | None:
        """``(config, exchange, barrier)`` of the multi-program epoch kernel for epochs in batches of ``batch_size``
        (made once), or None where it does not apply: no such GPU, ``split_precision`` None, shapes outside its
        limits, or more feature slices than the device has SMs (a cooperative launch needs every program resident).
        """
        from linclass_gpu.kernels import epoch_split_sgd

        if not self.backend.split_epoch_supported or self.split_precision is None:
            return None
        key = (batch_size, self.split_precision)
        if key not in self._split_epochs:
            config = epoch_split_sgd.split_config(self.n_features, self.n_outputs, batch_size, self._X.dtype,
                                                  self.split_precision)
            fits = config is not None and config.programs <= self.backend.multiprocessor_count
            self._split_epochs[key] = (config, *epoch_split_sgd.split_workspace(config, self._device)) if fits else None
        return self._split_epochs[key]

    def pop_loss_sum(self) -> float:
        loss_sum = float(self._loss_sum.item())  # the one device-to-host read of an epoch
        self._loss_sum.zero_()
        return loss_sum

    def _unflatten(self, flat) -> tuple[np.ndarray, np.ndarray]:
        """A device vector laid out as ``[W.ravel(), b]`` as host arrays (D, K) and (K,)."""
        host = flat.detach().cpu().numpy()
        return host[:self._n_weights].reshape(self.n_features, self.n_outputs).copy(), host[self._n_weights:].copy()

    def _flatten_into(self, flat, W: np.ndarray, b: np.ndarray) -> None:
        """Copy host arrays (D, K) and (K,) into the device vector ``flat`` laid out as ``[W.ravel(), b]``."""
        host = np.concatenate([np.asarray(W, dtype=np.float32).reshape(-1),
                               np.asarray(b, dtype=np.float32).reshape(-1)])
        flat.copy_(self.backend._torch.from_numpy(host).to(self._device))

    def get_params(self) -> tuple[np.ndarray, np.ndarray]:
        return self._unflatten(self._theta)

    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        self._flatten_into(self._theta, W, b)
        if not self.deterministic:
            # The atomic accumulator is zeroed by each step's update launch. A step cut short between its two
            # launches (an exception from the data-parallel reducer, Ctrl-C) leaves its gradient there, and training
            # resumes through set_params: start from zero whatever ran before. (Deterministic partial slices are
            # overwritten by their first visit, so they never carry a previous step.)
            self._grad.zero_()
        for buffer in (self._velocity, self._accumulator):
            if buffer is not None:
                buffer.zero_()
        self._step_count = 0

    def get_state(self) -> dict[str, np.ndarray]:
        W, b = self.get_params()
        state = {"W": W, "b": b}
        for prefix, buffer in (("velocity", self._velocity), ("accumulator", self._accumulator)):
            buffer_W, buffer_b = (np.zeros_like(W), np.zeros_like(b)) if buffer is None else self._unflatten(buffer)
            state.update({f"{prefix}_W": buffer_W, f"{prefix}_b": buffer_b})
        state["step_count"] = np.array(self._step_count, dtype=np.int64)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.set_params(state["W"], state["b"])  # zeroes the buffers: keys the state lacks stay 0
        for prefix, buffer in (("velocity", self._velocity), ("accumulator", self._accumulator)):
            if buffer is not None and f"{prefix}_W" in state:
                self._flatten_into(buffer, state[f"{prefix}_W"], state[f"{prefix}_b"])
        self._step_count = int(state.get("step_count", 0))


class TritonBackend(Backend):
    """Fused Triton kernels over torch tensors.

    Parameters
    ----------
    deterministic : bool
        Reduce dW/db through per-program partial buffers summed in a fixed order (bitwise reproducible run to run)
        instead of float atomics (faster, rounding order varies).
    tf32 : bool
        Let the tl.dot GEMMs (softmax, and the sigmoid models' output tiles) use TF32 tensor cores (10-bit mantissa
        products; a speed option for large C or K). The default ``"ieee"`` fp32 products are what the tests check.
    device : str or torch.device, optional
        Default ``"cuda"`` when a CUDA device is present, else ``"cpu"`` under the Triton interpreter.
    """

    name = "triton"
    # The kernels accumulate in float32 whatever they read; fp16/bf16 rows load as stored, like uint8 pixels.
    compute_dtypes = ("float32",)
    stored_feature_dtypes = ("uint8", "float16", "bfloat16")

    def __init__(self, deterministic: bool = False, tf32: bool = False, device: Any = None):
        try:
            import torch
        except ImportError as error:
            raise BackendUnavailableError(f"the triton backend needs torch: {error}") from error
        try:
            from linclass_gpu.kernels import INTERPRET, epoch_sgd, epoch_split_sgd
        except ImportError as error:
            raise BackendUnavailableError(f"the triton backend needs triton: {error}") from error
        except RuntimeError as error:  # TritonModeError, which cannot be named before its module imports
            raise BackendUnavailableError(str(error)) from error
        self._torch = torch
        self.interpreted = INTERPRET
        if not self.interpreted and not torch.cuda.is_available():
            raise BackendUnavailableError("TRITON_INTERPRET=0 asks for compiled kernels, but there is no CUDA device: "
                                          "unset TRITON_INTERPRET or set it to 1 to run them under the interpreter")
        self.device = torch.device(device if device is not None else ("cpu" if self.interpreted else "cuda"))
        if self.interpreted and self.device.type != "cpu":
            raise BackendUnavailableError("the Triton interpreter runs on CPU tensors only")
        self.deterministic = bool(deterministic)
        self.tf32 = bool(tf32)
        self.input_precision = "tf32" if self.tf32 else "ieee"
        # The epoch kernel's sm_90 build is the spill-free one (kernels/epoch_sgd.py); older GPUs step per minibatch.
        self.epoch_kernel_supported = self.interpreted or (
            torch.cuda.get_device_capability(self.device) >= epoch_sgd.MIN_CAPABILITY)
        # The multi-program epoch kernel's spin barrier needs P programs running at once: compiled kernels only (the
        # interpreter runs programs one after another), on sm_90 or newer, no more programs than SMs.
        self.split_epoch_supported = not self.interpreted and (
            torch.cuda.get_device_capability(self.device) >= epoch_split_sgd.MIN_CAPABILITY)
        # 0 on CPU tensors (the interpreter, the host benchmark): the tiled step's grid then takes its fixed target.
        self.multiprocessor_count = (
            torch.cuda.get_device_properties(self.device).multi_processor_count if self.device.type == "cuda" else 0)

    def permutation(self, n: int, rng: np.random.Generator) -> Any:
        """Shuffled on the device (``torch.randperm``) from a seed drawn from ``rng``: only the seed crosses the bus."""
        torch = self._torch
        generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**63)))
        return torch.randperm(n, generator=generator, device=self.device)

    def describe(self) -> str:
        if self.interpreted:
            return "triton: Triton interpreter on CPU (TRITON_INTERPRET=1)"
        return f"triton: CUDA device {self._torch.cuda.get_device_name(self.device)}"

    # -- placement ----------------------------------------------------------------------------------------------------

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        torch = self._torch
        if isinstance(a, torch.Tensor):
            tensor = a
        elif isinstance(a, np.ndarray) or np.isscalar(a) or isinstance(a, (list, tuple)):
            host = np.asarray(a)
            if dtype is not None and _torch_dtype(torch, dtype) is not torch.bfloat16:
                host = host.astype(dtype, copy=False)
            tensor = torch.from_numpy(np.ascontiguousarray(host))
        elif hasattr(a, "__dlpack__"):  # CuPy and every other DLPack producer: zero copy on the same device
            tensor = torch.from_dlpack(a)
        else:
            tensor = torch.as_tensor(np.asarray(a))
        tensor = tensor.to(device=self.device, dtype=_torch_dtype(torch, dtype))
        return tensor.contiguous()

    def to_numpy(self, a: Any) -> np.ndarray:
        torch = self._torch
        if not isinstance(a, torch.Tensor):
            return np.asarray(a)
        a = a.detach()
        if a.dtype == torch.bfloat16:  # NumPy has no bfloat16
            a = a.float()
        return a.cpu().numpy()

    def _features(self, X):
        """X on the device with contiguous rows, in its own dtype (uint8 stays uint8: 4x fewer bytes than fp32)."""
        X = self.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {tuple(X.shape)}")
        return X

    def _labels(self, model: str, y, n_outputs: int = 1):
        """Labels on the device: integer class ids (N,) for softmax; for the sigmoid models the {0, 1} targets as a
        uint8 (N, K) matrix (a quarter of float32's bytes; the kernel reads them as stored), from (N, K), or (N,)
        when ``K = n_outputs = 1``. Checked here, once (one device read): a target like 0.5 would otherwise be
        truncated to 0 in silence."""
        y = self.asarray(y)
        if model == "softmax":
            return y if y.dtype in (self._torch.int32, self._torch.int64) else y.to(self._torch.int64)
        if tuple(y.shape[1:]) not in ((n_outputs,), () if n_outputs == 1 else None):
            raise ValueError(f"targets of shape {tuple(y.shape)} do not fit a model with {n_outputs} outputs")
        if y.numel() and bool(((y != 0) & (y != 1)).any()):
            raise ValueError("the sigmoid models' targets must be 0 or 1")
        return y.reshape(y.shape[0], n_outputs).to(self._torch.uint8).contiguous()

    def _training_labels(self, model: str, y, n_outputs: int, n_rows: int):
        """:meth:`_labels` of a training set of ``n_rows`` rows, checked once, at construction (one device read, never
        per step): one label per row, and class ids in ``[0, C)`` (outside, a label would silently get no one-hot)."""
        y = self._labels(model, y, n_outputs)
        if y.shape[0] != n_rows:
            raise ValueError(f"X has {n_rows} rows, y has {y.shape[0]}")
        if model == "softmax" and y.numel():
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= n_outputs:
                raise ValueError(f"class ids must lie in [0, {n_outputs}), found [{low}, {high}]")
        return y

    def _weights(self, sample_weight, n_rows: int):
        """Per-row sample weights as a float32 (N,) tensor on the device, or None; the length is checked here, once:
        the kernels index them by row and would read past a short array."""
        if sample_weight is None:
            return None
        weights = self.asarray(sample_weight, "float32")
        if tuple(weights.shape) != (n_rows,):
            raise ValueError(f"sample_weight must have shape ({n_rows},), got {tuple(weights.shape)}")
        return weights

    def _float_param(self, a):
        """A parameter (host or device array) as a float32 tensor on the device."""
        torch = self._torch
        if isinstance(a, torch.Tensor):
            return a.detach().to(device=self.device, dtype=torch.float32)
        return torch.from_numpy(np.array(a, dtype=np.float32)).to(self.device)

    def _theta(self, W, b, n_outputs: int):
        """The flat parameter vector ``[W row-major, b]`` the kernels work on."""
        return self._torch.cat([self._float_param(W).reshape(-1), self._float_param(b).reshape(n_outputs)])

    # -- the checkable core -------------------------------------------------------------------------------------------

    def softmax_loss_grad(self, X, y, W, b, x_scale=1.0, sample_weight=None):
        from linclass_gpu.kernels import softmax_sgd

        X, y = self._features(X), self._labels("softmax", y)
        n_features, n_classes = np.shape(W)
        loss_sum, grad, _ = softmax_sgd.softmax_loss_grad(
            X, y, self._theta(W, b, n_classes), n_classes, x_scale=x_scale, deterministic=self.deterministic,
            input_precision=self.input_precision,
            sample_weight=self._weights(sample_weight, X.shape[0]))
        n_weights = n_features * n_classes
        return float(loss_sum.item()) / X.shape[0], grad[:n_weights].view(n_features, n_classes), grad[n_weights:]

    def sigmoid_loss_grad(self, X, y, w, b, x_scale=1.0, sample_weight=None):
        return self._sigmoid_loss_grad("sigmoid", X, y, w, b, x_scale, sample_weight)

    def sigmoid_mse_loss_grad(self, X, y, w, b, x_scale=1.0, sample_weight=None):
        return self._sigmoid_loss_grad("sigmoid_mse", X, y, w, b, x_scale, sample_weight)

    def _sigmoid_loss_grad(self, model: str, X, y, w, b, x_scale: float, sample_weight) -> tuple[float, Any, Any]:
        """A sigmoid model's mean loss and gradients; ``w`` (D,) with scalar ``b`` is the binary model, given back in
        those shapes, ``w`` (D, K) with ``b`` (K,) the ``K``-output one."""
        from linclass_gpu.kernels import sigmoid_sgd

        X = self._features(X)
        n_features, n_outputs = X.shape[1], (np.shape(w)[1] if np.ndim(w) == 2 else 1)
        loss_sum, grad, _ = sigmoid_sgd.sigmoid_loss_grad(
            X, self._labels(model, y, n_outputs), self._theta(w, b, n_outputs), n_outputs=n_outputs,
            loss_kind=sigmoid_sgd.MODEL_LOSSES[model], x_scale=x_scale, deterministic=self.deterministic,
            input_precision=self.input_precision, sample_weight=self._weights(sample_weight, X.shape[0]))
        loss, n_weights = float(loss_sum.item()) / X.shape[0], n_features * n_outputs
        if np.ndim(w) == 2:
            return loss, grad[:n_weights].view(n_features, n_outputs), grad[n_weights:]
        return loss, grad[:n_features], grad[n_features]

    def predict_proba(self, model: str, X, W, b, x_scale=1.0):
        """Probabilities from the fused kernel itself: (N, C) softmax, or σ(z) of the sigmoid models (either loss):
        (N,) for one output (``W`` (D,) or (D, 1)), (N, K) for ``K > 1``."""
        from linclass_gpu.kernels import sigmoid_sgd, softmax_sgd

        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        X = self._features(X)
        n_outputs = np.shape(W)[1] if np.ndim(W) == 2 else 1
        theta = self._theta(W, b, n_outputs)
        if model == "softmax":
            y = self._torch.zeros(X.shape[0], dtype=self._torch.int64, device=self.device)
            return softmax_sgd.softmax_loss_grad(X, y, theta, n_outputs, x_scale=x_scale,
                                                 input_precision=self.input_precision, return_probs=True)[2]
        # Targets of 0 only feed the unused loss; the probabilities take their shape.
        shape = (X.shape[0], n_outputs) if n_outputs > 1 else (X.shape[0],)
        targets = self._torch.zeros(shape, dtype=self._torch.uint8, device=self.device)
        return sigmoid_sgd.sigmoid_loss_grad(X, targets, theta, n_outputs=n_outputs, x_scale=x_scale,
                                             input_precision=self.input_precision, return_probs=True)[2]

    def decision_function(self, X, W, b, x_scale=1.0):
        torch = self._torch
        X, W, b = self._features(X), self._float_param(W), self._float_param(b)
        Z = torch.empty((X.shape[0], W.shape[1]), dtype=torch.float32, device=self.device)
        # Plain torch (cuBLAS) GEMM: prediction is not the fused hot path. Non-float32 inputs are widened a bounded
        # chunk of rows at a time.
        for start in range(0, X.shape[0], PREDICT_CHUNK_ROWS):
            torch.matmul(X[start:start + PREDICT_CHUNK_ROWS].to(torch.float32), W,
                         out=Z[start:start + PREDICT_CHUNK_ROWS])
        return Z.mul_(float(x_scale)).add_(b)

    # -- the fused step -----------------------------------------------------------------------------------------------

    def fused_sgd(self, model, X, y, W, b, *, max_batch_size, l2=0.0, l1=0.0, momentum=0.0, nesterov=False,
                  fit_intercept=True, x_scale=1.0, sample_weight=None, optimizer="sgd"):
        return TritonFusedSGD(self, model, X, y, W, b, max_batch_size=max_batch_size, l2=l2, l1=l1,
                              momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept, x_scale=x_scale,
                              sample_weight=sample_weight, optimizer=optimizer)
