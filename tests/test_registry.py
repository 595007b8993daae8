"""The ``auto`` chain and its reasons, with every way a GPU backend can fail simulated on this CPU-only machine.

Each failure is made the way it happens in the field: a package that is not installed (``sys.modules[name] = None``),
one whose import raises (a finder whose loader raises, as a missing shared library does), no CUDA driver library,
a driver without a device, and a CUDA error at the first operation (a fake ``cupy`` or ``torch`` whose first call
raises). The probes are cached, so every test starts and ends with the caches cleared.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from linclass_gpu import SoftmaxRegression, cli
from linclass_gpu.backends import BackendUnavailableError, get_backend, registry
from linclass_gpu.backends.numpy_backend import NumpyBackend

SIMULATED_GPU = "Simulated GPU"
NO_DRIVER = "no CUDA driver (simulated: libcuda.so.1 missing)"
# Held here because tests replace the module attributes (monkeypatch undoes that after our fixture's teardown).
CACHED_PROBES = (registry.probe, registry._cuda_driver_missing)


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch):
    """Probe caches cleared before and after each test, and no ``$LINCLASS_BACKEND``."""
    monkeypatch.delenv(registry.ENV_VARIABLE, raising=False)
    for cached in CACHED_PROBES:
        cached.cache_clear()
    yield
    for cached in CACHED_PROBES:
        cached.cache_clear()


class FakeCUDARuntimeError(RuntimeError):
    """Like CuPy's CUDARuntimeError: a RuntimeError carrying the CUDA status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class FailingImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``name`` (so it counts as installed) and raises ``error`` while importing it."""

    def __init__(self, name: str, error: Exception):
        self.name, self.error = name, error

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.name else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise self.error


def fake_cupy(device_count=1, count_error=None, first_use_error=None):
    """A ``cupy`` with a device that works, or whose device count or first array operation raises."""

    def get_device_count():
        if count_error is not None:
            raise count_error
        return device_count

    def arange(n):
        if first_use_error is not None:
            raise first_use_error
        return np.arange(n)

    runtime = SimpleNamespace(getDeviceCount=get_device_count,
                              getDeviceProperties=lambda device: {"name": SIMULATED_GPU.encode()})
    return SimpleNamespace(cuda=SimpleNamespace(runtime=runtime), arange=arange)


def fake_torch(device=True, name_error=None):
    """A ``torch`` whose ``torch.cuda`` sees a device or not, or raises when asked for the device's name."""

    def get_device_name(index):
        if name_error is not None:
            raise name_error
        return SIMULATED_GPU

    return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: device, get_device_name=get_device_name))


class Simulate:
    """Ways to break (or fake) the GPU stack for one test; monkeypatch undoes each at teardown."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def driver(self, present: bool) -> None:
        self.monkeypatch.setattr(registry, "_cuda_driver_missing", lambda: "" if present else NO_DRIVER)

    def missing(self, module: str) -> None:
        self.monkeypatch.setitem(sys.modules, module, None)

    def import_error(self, module: str, error: Exception) -> None:
        self.monkeypatch.delitem(sys.modules, module, raising=False)
        self.monkeypatch.setattr(sys, "meta_path", [FailingImport(module, error), *sys.meta_path])

    def module(self, name: str, fake) -> None:
        self.monkeypatch.setitem(sys.modules, name, fake)

    def gpu_stack(self, torch=None, cupy=None) -> None:
        """A driver, and the given fakes for torch (with triton beside it) and cupy; None means not installed."""
        self.driver(True)
        for name, fake in (("torch", torch), ("triton", torch and SimpleNamespace()), ("cupy", cupy)):
            self.module(name, fake) if fake is not None else self.missing(name)


@pytest.fixture
def simulate(monkeypatch):
    return Simulate(monkeypatch)


# -- each probe, each failure ---------------------------------------------------------------------------------

CUPY_CASES = {
    # case: (set-up, usable, reason starts with)
    "not installed": (lambda s: s.missing("cupy"), False, "cupy is not installed"),
    "no driver": (lambda s: s.driver(False), False, "no CUDA driver"),
    "import fails": (lambda s: (s.driver(True), s.import_error("cupy", ImportError("libcudart.so.12: cannot open "
                                                                                  "shared object file"))),
                     False, "importing cupy failed: ImportError: libcudart.so.12"),
    "no device (count 0)": (lambda s: s.gpu_stack(cupy=fake_cupy(device_count=0)), False, "no CUDA device"),
    "no device (cudaErrorNoDevice)": (
        lambda s: s.gpu_stack(cupy=fake_cupy(count_error=FakeCUDARuntimeError(100, "cudaErrorNoDevice: no "
                                                                                   "CUDA-capable device"))),
        False, "no CUDA device (FakeCUDARuntimeError: cudaErrorNoDevice"),
    "error at first use": (
        lambda s: s.gpu_stack(cupy=fake_cupy(first_use_error=FakeCUDARuntimeError(
            35, "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"))),
        False, "CUDA error at first use: FakeCUDARuntimeError: cudaErrorInsufficientDriver"),
    "works": (lambda s: s.gpu_stack(cupy=fake_cupy()), True, f"CUDA device {SIMULATED_GPU}"),
}


@pytest.mark.parametrize("case", CUPY_CASES)
def test_cupy_probe_reports_each_failure(simulate, case):
    set_up, usable, reason = CUPY_CASES[case]
    set_up(simulate)
    status = registry.probe("cupy")
    assert (status.usable, status.auto) == (usable, usable)
    assert status.detail.startswith(reason), status.detail


TRITON_CASES = {
    # case: (set-up, usable by name, picked by auto, reason starts with)
    "torch not installed": (lambda s: s.missing("torch"), False, False, "torch is not installed"),
    "triton not installed": (lambda s: (s.module("torch", fake_torch()), s.missing("triton")), False, False,
                             "triton is not installed"),
    "no driver: interpreter only": (lambda s: (s.module("torch", fake_torch()), s.module("triton", object()),
                                               s.driver(False)), True, False, "no CUDA driver"),
    "torch import fails": (lambda s: (s.driver(True), s.module("triton", object()),
                                      s.import_error("torch", OSError("libcudnn.so.9: cannot open shared object"))),
                           False, False, "importing torch or triton failed: OSError: libcudnn.so.9"),
    "no device": (lambda s: s.gpu_stack(torch=fake_torch(device=False)), True, False, "no CUDA device"),
    "error at first use": (lambda s: s.gpu_stack(torch=fake_torch(name_error=RuntimeError("CUDA error: unknown"))),
                           True, False, "CUDA error at first use: RuntimeError: CUDA error: unknown"),
    "works": (lambda s: s.gpu_stack(torch=fake_torch()), True, True, f"CUDA device {SIMULATED_GPU}"),
}


@pytest.mark.parametrize("case", TRITON_CASES)
def test_triton_probe_reports_each_failure(simulate, case):
    set_up, usable, auto, reason = TRITON_CASES[case]
    set_up(simulate)
    status = registry.probe("triton")
    assert (status.usable, status.auto) == (usable, auto)
    assert status.detail.startswith(reason), status.detail
    if usable and not auto:
        assert "Triton interpreter" in status.detail, "says how it can still run"


def test_probes_import_nothing_without_a_driver(simulate, monkeypatch):
    """The cheap path: no driver library means torch and cupy are never imported (seconds saved on every start)."""
    simulate.driver(False)
    for module in ("torch", "cupy"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    registry.backend_statuses()
    assert "torch" not in sys.modules and "cupy" not in sys.modules


def test_each_backend_is_probed_once(monkeypatch):
    calls = []
    monkeypatch.setitem(registry._PROBES, "numpy", lambda: calls.append(1) or registry._probe_numpy())
    registry.probe("numpy")
    registry.backend_statuses()
    registry.available_backends()
    assert len(calls) == 1


def test_installed_cupy_whose_first_operation_raises_is_skipped_with_the_cuda_error(simulate):
    """This machine's real situation with a driver library present: cupy imports, its first call raises."""
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy is not installed")
    if registry.probe("cupy").usable:
        pytest.skip("cupy really runs here: nothing fails")
    registry.probe.cache_clear()
    simulate.driver(True)  # get past the cheap check to the real import and the real first operation
    simulate.missing("torch")
    status = registry.probe("cupy")
    assert not status.usable and "CUDARuntimeError" in status.detail
    assert status.detail.startswith(("CUDA error at first use: ", "no CUDA device")), status.detail
    chosen, skipped = registry.resolve_name("auto")
    assert chosen == "numpy" and skipped[1] == f"cupy: {status.detail}"


# -- the chain --------------------------------------------------------------------------------------------------

CUPY_FAILS_AT_FIRST_USE = fake_cupy(first_use_error=FakeCUDARuntimeError(35, "cudaErrorInsufficientDriver"))


@pytest.mark.parametrize("torch,cupy,expected", [
    (fake_torch(), fake_cupy(), "triton"),
    (None, fake_cupy(), "cupy"),
    (fake_torch(device=False), fake_cupy(), "cupy"),
    (fake_torch(device=False), CUPY_FAILS_AT_FIRST_USE, "numpy"),
    (None, None, "numpy"),
])
def test_auto_takes_the_first_backend_that_runs_on_a_gpu(simulate, torch, cupy, expected):
    simulate.gpu_stack(torch=torch, cupy=cupy)
    chosen, skipped = registry.resolve_name("auto")
    assert chosen == expected
    ahead = registry.AUTO_ORDER[:registry.AUTO_ORDER.index(expected)]
    assert skipped == [f"{name}: {registry.probe(name).detail}" for name in ahead]
    assert registry.resolve_name(None) == (chosen, skipped)


def test_auto_reasons_name_every_skipped_backend(simulate):
    simulate.gpu_stack(torch=fake_torch(device=False), cupy=CUPY_FAILS_AT_FIRST_USE)
    _, skipped = registry.resolve_name("auto")
    assert skipped[0].startswith("triton: no CUDA device")
    assert skipped[1].startswith("cupy: CUDA error at first use: FakeCUDARuntimeError: cudaErrorInsufficientDriver")


@pytest.mark.parametrize("case", [case for case, (_, usable, _) in CUPY_CASES.items() if not usable])
def test_asking_for_a_backend_that_cannot_run_raises_its_reason(simulate, case):
    set_up, _, reason = CUPY_CASES[case]
    set_up(simulate)
    with pytest.raises(BackendUnavailableError, match=r"^backend='cupy' cannot run here: ") as raised:
        get_backend("cupy")
    assert reason in str(raised.value)


def test_the_environment_variable_overrides_auto_only(simulate, monkeypatch):
    simulate.gpu_stack(torch=fake_torch(device=False), cupy=fake_cupy())
    monkeypatch.setenv(registry.ENV_VARIABLE, " NumPy ")
    assert registry.resolve_name("auto") == ("numpy", [])
    assert get_backend().name == "numpy"
    monkeypatch.setenv(registry.ENV_VARIABLE, "")
    assert registry.resolve_name("auto")[0] == "cupy", "an empty variable means auto"


def test_the_environment_variable_asking_for_an_unusable_backend_raises(simulate, monkeypatch):
    simulate.gpu_stack(cupy=CUPY_FAILS_AT_FIRST_USE)
    monkeypatch.setenv(registry.ENV_VARIABLE, "cupy")
    with pytest.raises(BackendUnavailableError, match=r"^\$LINCLASS_BACKEND=cupy cannot run here: CUDA error at "):
        get_backend()
    assert get_backend("numpy").name == "numpy", "an explicit argument is not overridden"


def test_unknown_names_are_rejected_with_their_source(monkeypatch):
    with pytest.raises(ValueError, match=r"backend='cuda': unknown backend; expected one of auto, triton"):
        get_backend("cuda")
    monkeypatch.setenv(registry.ENV_VARIABLE, "gpu")
    with pytest.raises(ValueError, match=r"\$LINCLASS_BACKEND=gpu: unknown backend"):
        get_backend()


# -- failures while starting up, after a good probe ------------------------------------------------------------


class BrokenAtStartup:
    """A backend class whose constructor fails the way a broken install does after the probe passed."""

    def __init__(self, **options):
        raise ImportError("libnvrtc.so.12: cannot open shared object file")


@pytest.fixture
def triton_breaks_at_startup(simulate, monkeypatch):
    """triton probes as runnable on a (simulated) GPU, then fails to start; cupy cannot run."""
    simulate.gpu_stack(torch=fake_torch(), cupy=CUPY_FAILS_AT_FIRST_USE)
    simulate.module("simulated_backends", SimpleNamespace(BrokenAtStartup=BrokenAtStartup))
    monkeypatch.setitem(registry._FACTORIES, "triton", "simulated_backends:BrokenAtStartup")


def test_auto_moves_on_when_a_backend_fails_while_starting_up(triton_breaks_at_startup, caplog):
    with caplog.at_level(logging.INFO, logger="linclass_gpu"):
        backend = get_backend("auto")
    assert backend.name == "numpy"
    [record] = caplog.records
    assert record.getMessage().startswith("backend auto -> numpy (skipped triton: failed while starting up: "
                                          "ImportError: libnvrtc.so.12")
    assert "; cupy: CUDA error at first use" in record.getMessage()


def test_asking_for_a_backend_that_fails_while_starting_up_raises(triton_breaks_at_startup):
    with pytest.raises(BackendUnavailableError, match=r"^backend='triton' cannot run here: failed while starting "
                                                      r"up: ImportError: libnvrtc"):
        get_backend("triton")


def test_a_bad_option_is_not_mistaken_for_a_backend_that_cannot_run():
    with pytest.raises(TypeError):
        get_backend("numpy", tf32=True)


# -- what users see: the log, the estimator, the CLI ------------------------------------------------------------


def test_auto_logs_its_choice_once_and_explicit_names_log_nothing(simulate, caplog):
    simulate.gpu_stack(cupy=CUPY_FAILS_AT_FIRST_USE)
    with caplog.at_level(logging.INFO, logger="linclass_gpu"):
        assert isinstance(get_backend("auto"), NumpyBackend)
        assert [record.getMessage() for record in caplog.records] == [
            f"backend auto -> numpy (skipped triton: torch is not installed (pip install 'linclass-gpu[gpu]'); "
            f"cupy: {registry.probe('cupy').detail})"]
        caplog.clear()
        get_backend("numpy")
        assert caplog.records == []


def test_a_fitted_estimator_records_the_backend_auto_chose(simulate, caplog):
    simulate.gpu_stack(cupy=CUPY_FAILS_AT_FIRST_USE)
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    with caplog.at_level(logging.INFO, logger="linclass_gpu"):
        model = SoftmaxRegression(backend="auto", epochs=1, batch_size=8).fit(X, y)
    assert model.backend_ == "numpy"
    choices = [record for record in caplog.records if record.getMessage().startswith("backend auto -> ")]
    assert len(choices) == 1 and "cupy: CUDA error at first use" in choices[0].getMessage()


def test_info_lists_every_backend_with_its_reason(simulate, capsys):
    simulate.gpu_stack(torch=fake_torch(device=False), cupy=CUPY_FAILS_AT_FIRST_USE)
    assert cli.main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out.strip().splitlines()[-1])
    assert info["auto"] == "numpy"
    rows = {row["name"]: row for row in info["backends"]}
    assert list(rows) == list(registry.AUTO_ORDER)
    assert (rows["triton"]["usable"], rows["triton"]["auto"]) == (True, False)
    assert rows["triton"]["detail"].startswith("no CUDA device")
    assert (rows["cupy"]["usable"], rows["cupy"]["detail"]) == (False, registry.probe("cupy").detail)
    assert "cupy    unavailable  CUDA error at first use" in out


@pytest.mark.parametrize("argv,environment,source", [
    (["train", "--backend", "cupy", "--epochs", "1"], None, "--backend='cupy'"),
    (["train", "--epochs", "1"], "cupy", "$LINCLASS_BACKEND=cupy"),
])
def test_cli_asking_for_an_unusable_backend_exits_2_with_one_line(simulate, monkeypatch, capsys, argv, environment,
                                                                  source):
    simulate.gpu_stack(cupy=CUPY_FAILS_AT_FIRST_USE)
    if environment:
        monkeypatch.setenv(registry.ENV_VARIABLE, environment)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"linclass-gpu train: error: {source} cannot run here: {registry.probe('cupy').detail}\n"
    assert "Traceback" not in captured.err and captured.out == ""
