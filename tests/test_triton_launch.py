"""PreparedLaunch: a launch goes through Triton once per specialisation, then straight to the compiled launcher with
the changed arguments in their slots. The kernel here is a stand-in with Triton's parameter interface (no GPU)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("triton")
import torch  # noqa: E402

from linclass_gpu.backends.triton_launch import PreparedLaunch  # noqa: E402


@dataclasses.dataclass
class Param:
    name: str
    is_constexpr: bool = False
    is_const: bool = False
    do_not_specialize: bool = False
    do_not_specialize_on_alignment: bool = False
    default: object = None


class CompiledStandIn:
    """What ``kernel[grid](...)`` returns on a GPU: a launcher taking every argument in parameter order."""

    function, packed_metadata = "function", "metadata"

    def __init__(self):
        self.launches = []

    def run(self, grid_x, grid_y, grid_z, stream, function, packed_metadata, launch_metadata, enter_hook, exit_hook,
            *values):
        assert (function, packed_metadata, launch_metadata, enter_hook, exit_hook) == (
            "function", "metadata", None, None, None)
        self.launches.append(((grid_x, grid_y, grid_z), stream, values))


class KernelStandIn:
    """``rows_ptr, B, learning_rate, N_FIXED: constexpr, scale=2.0``; ``B`` specialised unless told otherwise."""

    def __init__(self, specialise_batch: bool = True, interpreted: bool = False):
        self.params = [Param("rows_ptr"), Param("B", do_not_specialize=not specialise_batch), Param("learning_rate"),
                       Param("N_FIXED", is_constexpr=True), Param("scale", default=2.0)]
        self.interpreted = interpreted
        self.compiled = CompiledStandIn()
        self.triton_calls = []

    def __getitem__(self, grid):
        def launch(**arguments):
            self.triton_calls.append((grid, arguments))
            return None if self.interpreted else self.compiled

        return launch


def prepared(kernel, **changes):
    rows = torch.arange(64, dtype=torch.int64)
    arguments = {"rows_ptr": rows, "B": 32, "learning_rate": 0.5, "N_FIXED": 4, **changes}
    return rows, PreparedLaunch(kernel, (3,), arguments, current_stream=lambda: "stream")


def test_after_the_first_launch_the_compiled_launcher_gets_every_argument_in_order():
    kernel = KernelStandIn()
    rows, launch = prepared(kernel)
    launch()
    launch(learning_rate=0.25)
    launch(grid=(2,), rows_ptr=rows[32:])
    assert len(kernel.triton_calls) == 1 and kernel.triton_calls[0][0] == (3, 1, 1)
    assert [entry[0] for entry in kernel.compiled.launches] == [(3, 1, 1), (2, 1, 1)]
    first, second = (entry[2] for entry in kernel.compiled.launches)
    assert first[1:] == (32, 0.25, 4, 2.0) and first[0] is rows  # the default of `scale` fills its slot
    assert second[0].data_ptr() == rows[32:].data_ptr() and second[2] == 0.25  # changes are kept
    assert kernel.compiled.launches[0][1] == "stream"
    assert (launch.triton_launches, launch.direct_launches) == (1, 2)


@pytest.mark.parametrize("change,through_triton", [
    ({"B": 96}, False),  # divisible by 16 like 32: the same variant
    ({"B": 100}, True),  # not divisible by 16: another variant
    ({"B": 1}, True),  # Triton makes an integer argument of 1 a constant
    ({"B": 2**40}, True),  # no longer an int32
    ({"N_FIXED": 8}, True),  # a constexpr is part of the variant
    ({"N_FIXED": 4}, False),
    ({"rows_ptr": "offset by one element"}, True),  # 8 bytes: the pointer is no longer 16-byte aligned
    ({"rows_ptr": "offset by two elements"}, False),
    ({"learning_rate": 1e-9}, False),  # floats are never specialised
])
def test_a_change_of_variant_goes_through_triton_and_is_prepared_again(change, through_triton):
    kernel = KernelStandIn()
    rows, launch = prepared(kernel)
    launch()
    if "rows_ptr" in change:
        change = {"rows_ptr": rows[1:] if change["rows_ptr"].endswith("one element") else rows[2:]}
    launch(**change)
    launch(**change)  # prepared again for the new variant: direct from here
    assert len(kernel.triton_calls) == 1 + through_triton
    if through_triton:
        assert kernel.triton_calls[1][1] == {"rows_ptr": rows, "B": 32, "learning_rate": 0.5, "N_FIXED": 4,
                                             **change}
    assert launch.direct_launches == 2 - through_triton


def test_a_parameter_marked_do_not_specialize_takes_any_integer_directly():
    kernel = KernelStandIn(specialise_batch=False)
    _, launch = prepared(kernel)
    launch()
    for batch in (100, 7, 1):
        launch(B=batch)
    assert len(kernel.triton_calls) == 1 and [entry[2][1] for entry in kernel.compiled.launches] == [100, 7, 1]


def test_the_interpreter_and_launch_hooks_always_go_through_triton(monkeypatch):
    kernel = KernelStandIn(interpreted=True)
    _, launch = prepared(kernel)
    for rate in (0.5, 0.25):
        launch(learning_rate=rate)
    assert [call[1]["learning_rate"] for call in kernel.triton_calls] == [0.5, 0.25]

    from triton import knobs

    kernel = KernelStandIn()
    _, launch = prepared(kernel)
    launch()
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda metadata: None)
    launch(learning_rate=0.25)
    assert len(kernel.triton_calls) == 2 and not kernel.compiled.launches


def test_the_per_step_path_binds_each_batch_size_once_then_launches_directly():
    """The backend's step on compiled-mode kernels, launches stubbed (``bench host``): 2 epochs of 1000 rows in
    batches of 128 are 7 full batches and a tail of 104, so each of the 2 kernels goes through Triton once per batch
    size and every other launch is direct."""
    from linclass_gpu.bench.host import DEFAULTS, run_host_bench

    result = run_host_bench({**DEFAULTS, "rows": 1000, "epochs": 2})
    assert result["steps_per_epoch"] == 8
    assert (result["triton_launches"], result["direct_launches"]) == (4, 2 * 2 * 8 - 4)
    assert result["launches_per_step"] == 2 and result["host_us_per_step"] > 0
