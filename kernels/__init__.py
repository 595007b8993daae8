"""Fused Triton kernels for one SGD step of softmax and logistic regression (installed as ``linclass_gpu.kernels``).

Importing a kernel module imports triton and torch; nothing here is imported by ``import linclass_gpu``.

Modules, each in the same order (constants with their reasons, ``@triton.jit`` kernels, a launcher that checks and
launches, then (step kernels) a thin wrapper with no math):

- ``softmax_sgd``: the fused softmax-regression step (forward, cross-entropy, dZ, dW, db), class tiles with an online
  log-sum-exp for large C; its docstring holds the bytes-moved model.
- ``sigmoid_sgd``: the same for ``K`` independent sigmoids (binary, multilabel, one-vs-rest) with binary
  cross-entropy from logits or squared error.
- ``sgd_update``: the second launch of a step, shared by every model: reduce, L2, momentum, update, reset.
- ``_tiles``: the device helpers both step kernels share (row gather, X tiles, gradient accumulation).

``linclass_gpu.backends.triton_backend.load_kernels()`` imports them, under the Triton interpreter when there is no
CUDA device.
"""
