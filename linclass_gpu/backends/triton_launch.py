"""Kernel launches bound once and replayed with a few changed arguments: the Triton backend's per-step host path.

``kernel[grid](**arguments)`` makes Triton bind every argument, compute the specialisation key and look the compiled
kernel up on every launch: tens of microseconds of host time, more than the GPU work of a small SGD step. A training
step launches the same kernels with the same arguments but a few scalars (the batch's rows, its size, the learning
rate), so :class:`PreparedLaunch` goes through Triton once, keeps the compiled kernel and its argument list, and then
calls the compiled kernel's launcher directly with the changed arguments put in their slots.

A changed argument must not change the variant Triton would pick: its specialisation (the type, and for integers
and pointers the value 1 or the divisibility by 16) is computed with Triton's own function and compared with the
prepared one. A change (a tail batch of one row, say) launches through Triton, which compiles or finds that variant,
and the launch is prepared again from there. Under the interpreter, and while Triton's launch hooks are set (a
profiler), every launch goes through Triton.
"""

from __future__ import annotations

from typing import Any, Callable


def _grid3(grid: tuple[int, ...]) -> tuple[int, int, int]:
    return (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)


def _default_stream() -> Callable[[], Any]:
    """The current stream of the current device, as Triton's own launch reads it."""
    from triton.runtime import driver

    device = driver.active.get_current_device()
    return lambda: driver.active.get_current_stream(device)


class PreparedLaunch:
    """One kernel's launch, bound once; each call launches it again with some arguments changed.

    Parameters
    ----------
    kernel : triton.JITFunction or InterpretedFunction
    grid : tuple of int
        The grid of the launches until a call passes another.
    arguments : dict
        Every argument of ``kernel`` by name (those with a default may be left out).
    current_stream : callable () -> stream, optional
        The stream to launch on; default: the current stream (read at every launch) of the CUDA device current at
        the first launch.

    Attributes
    ----------
    triton_launches : int
        Launches that went through Triton (the first one, a changed specialisation, the interpreter, launch hooks).
    direct_launches : int
        Launches made by calling the compiled kernel's launcher directly.
    """

    def __init__(self, kernel, grid: tuple[int, ...], arguments: dict[str, Any], *,
                 current_stream: Callable[[], Any] | None = None):
        self.kernel = kernel
        self._grid = _grid3(grid)
        self._arguments = dict(arguments)
        self._current_stream = current_stream
        self._compiled = None
        self._values: list[Any] = []
        self._slots: dict[str, int] = {}
        self._keys: list[Any] = []
        self._key: Callable[[int, Any], Any] | None = None
        self._hooks = None
        self.triton_launches = self.direct_launches = 0

    def __call__(self, grid: tuple[int, ...] | None = None, **changed: Any) -> None:
        """Launch with ``changed`` arguments (kept for later calls) on ``grid`` (kept too, when given)."""
        if grid is not None:
            self._grid = _grid3(grid)
        compiled = self._compiled
        if compiled is not None and not any(hook is not None and getattr(hook, "calls", True) for hook in (
                self._hooks.launch_enter_hook, self._hooks.launch_exit_hook)):
            values, slots, keys, key, arguments = self._values, self._slots, self._keys, self._key, self._arguments
            same_variant = True
            for name, value in changed.items():
                slot = slots[name]
                same_variant = same_variant and keys[slot] == key(slot, value)
                values[slot] = arguments[name] = value
            if same_variant:
                grid_x, grid_y, grid_z = self._grid
                compiled.run(grid_x, grid_y, grid_z, self._current_stream(), compiled.function,
                             compiled.packed_metadata, None, None, None, *values)
                self.direct_launches += 1
                return
        self._arguments.update(changed)
        self._launch_through_triton()

    def _launch_through_triton(self) -> None:
        compiled = self.kernel[self._grid](**self._arguments)
        self.triton_launches += 1
        if compiled is None or not hasattr(compiled, "packed_metadata"):  # the interpreter compiles nothing
            self._compiled = None
            return
        params = self.kernel.params
        self._values = [self._arguments[param.name] if param.name in self._arguments else param.default
                        for param in params]
        self._slots = {param.name: index for index, param in enumerate(params)}
        if self._key is None:
            self._key = _specialisation(params)
            from triton import knobs

            self._hooks = knobs.runtime
        self._keys = [self._key(slot, value) for slot, value in enumerate(self._values)]
        if self._current_stream is None:
            self._current_stream = _default_stream()
        self._compiled = compiled


def _specialisation(params) -> Callable[[int, Any], Any]:
    """``key(slot, value)``: what Triton specialises the kernel on for ``value`` as the parameter in ``slot``."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    flags = [(param.is_constexpr, param.is_const, not param.do_not_specialize, not param.do_not_specialize_on_alignment)
             for param in params]
    float_key = native_specialize_impl(BaseBackend, 0.5, False, True, True)  # floats are never specialised

    def key(slot: int, value: Any) -> Any:
        is_constexpr, is_const, specialise, align = flags[slot]
        if is_constexpr:
            return ("constexpr", value)
        if value.__class__ is float:
            return float_key
        return native_specialize_impl(BaseBackend, value, is_const, specialise, align)

    return key
