"""Fused Triton kernels for one SGD step of softmax and logistic regression (installed as ``linclass_gpu.kernels``).

Importing a kernel module imports triton and torch; nothing here is imported by ``import linclass_gpu``.
"""
