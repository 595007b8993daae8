"""Model files against what an adversary can do to them: parameters that must survive the round trip, decompression
bombs, crafted zip and .npy headers, invalid arrays, random byte flips and truncations (hypothesis), file modes and
links, and writers killed mid-save."""

from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from helpers import stored_members, write_members
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linclass_gpu import LogisticRegression, SoftmaxRegression
from linclass_gpu.files import TEMPORARY_MARK
from linclass_gpu.persistence import (
    MODEL_MEMBERS,
    encode_json,
    json_value,
    read_npz,
    write_npz_atomically,
)

REQUIRED = {"estimator", "params", "backend_", "coef_", "intercept_", "classes_", "loss_curve_"}


def small_problem(seed=0, n=120, d=4, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, d))
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    """The bytes of a valid SoftmaxRegression model file."""
    X, y = small_problem()
    path = tmp_path_factory.mktemp("model") / "model.npz"
    SoftmaxRegression(epochs=2, random_state=0, class_weight={0: 2.0}).fit(X, y).save(path)
    return path.read_bytes()


def assert_refused_naming(path, match: str, load=SoftmaxRegression.load) -> None:
    with pytest.raises(ValueError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# parameters survive the round trip


@pytest.mark.parametrize("class_weight", [{0: 5.0, 1: 1.0, 2: 0.5}, {np.int64(0): 5.0, np.int64(2): 0.5},
                                          {"a": 2.0, "b": 1.0}, {1.5: 2.0, True: 1.0}], ids=str)
def test_class_weight_keys_come_back_with_their_types(tmp_path, class_weight):
    params = {"class_weight": class_weight}
    restored = json_value(np.array(encode_json(params, "params")))["class_weight"]
    assert restored == class_weight
    assert [type(key) for key in restored] == [type(key.item() if isinstance(key, np.generic) else key)
                                              for key in class_weight]


def test_model_with_int_class_weight_keys_loads_and_refits(tmp_path):
    X, y = small_problem()
    model = SoftmaxRegression(epochs=2, random_state=0, class_weight={np.int64(0): 5.0}).fit(X, y)
    model.save(tmp_path / "m.npz")
    loaded = SoftmaxRegression.load(tmp_path / "m.npz")
    assert loaded.class_weight == {0: 5.0} and type(next(iter(loaded.class_weight))) is int
    refit = loaded.fit(X, y)  # {'0': 5.0} made this fail: the label 0 is an int
    np.testing.assert_array_equal(refit.coef_, model.coef_)


@pytest.mark.parametrize("make", [lambda: np.random.RandomState(3), lambda: np.random.default_rng(3),
                                  lambda: np.random.Generator(np.random.Philox(4))],
                         ids=["RandomState", "Generator-PCG64", "Generator-Philox"])
def test_random_state_objects_are_stored_in_their_state(tmp_path, make):
    X, y = small_problem()
    model = LogisticRegression(epochs=1, random_state=make()).fit(X, y == 0)
    model.save(tmp_path / "m.npz")
    restored = LogisticRegression.load(tmp_path / "m.npz").random_state
    assert type(restored) is type(model.random_state)
    draw = (lambda r: r.random(4)) if isinstance(restored, np.random.Generator) else (lambda r: r.random_sample(4))
    np.testing.assert_array_equal(draw(restored), draw(model.random_state))


def test_unstorable_parameter_is_refused_before_writing_naming_it(tmp_path):
    X, y = small_problem()
    model = SoftmaxRegression(epochs=1).fit(X, y)
    model.class_weight = {(0, 1): 1.0}
    with pytest.raises(ValueError, match=r"params\['class_weight'\]: a dict key of type tuple"):
        model.save(tmp_path / "m.npz")
    model.class_weight, model.tol = None, object()
    with pytest.raises(ValueError, match=r"params\['tol'\]: a object cannot be stored"):
        model.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------------
# decompression bombs: declared sizes checked first, unneeded members never read


def peak_and_seconds(function):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1], time.perf_counter() - started
    finally:
        tracemalloc.stop()


def add_zero_member(path, name: str, size: int) -> None:
    """Append a deflated member of ``size`` zero bytes (256 MiB take about 250 KiB on disk)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "a", compresslevel=1) as archive, \
            archive.open(info, "w", force_zip64=True) as member:
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            member.write(block)


def test_an_unneeded_huge_member_is_never_decompressed(tmp_path, model_bytes):
    """A valid model plus an unneeded 2 GiB member took 27 s to load; here 256 MiB."""
    path = tmp_path / "model.npz"
    path.write_bytes(model_bytes)
    add_zero_member(path, "junk.npy", 256 << 20)
    assert os.path.getsize(path) < 2 << 20
    loaded, peak, seconds = peak_and_seconds(lambda: SoftmaxRegression.load(path))
    assert loaded.coef_.shape == (3, 4)
    assert peak < 1 << 20 and seconds < 1.0, (peak, seconds)


def test_a_compressed_needed_member_is_refused_without_inflating_it(tmp_path, model_bytes):
    members = stored_members(model_bytes)
    path = tmp_path / "bomb.npz"
    write_members(path, {name: value for name, value in members.items() if name != "coef_"})
    add_zero_member(path, "coef_.npy", 256 << 20)
    assert os.path.getsize(path) < 2 << 20
    _, peak, seconds = peak_and_seconds(lambda: assert_refused_naming(path, r"coef_.npy is compressed \(method 8\)"))
    assert peak < 1 << 20 and seconds < 1.0, (peak, seconds)


def test_a_member_stored_twice_is_refused(tmp_path, model_bytes):
    path = tmp_path / "twice.npz"
    write_members(path, stored_members(model_bytes))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as archive:
        archive.writestr("coef_.npy", b"")
    assert_refused_naming(path, "member coef_ is stored twice")


def test_a_member_declaring_more_than_the_file_holds_is_refused(tmp_path, model_bytes):
    data = bytearray(model_bytes)
    position = central_entry(model_bytes, b"coef_.npy")
    data[position + 20:position + 28] = struct.pack("<II", 2**31, 2**31)  # compressed and uncompressed sizes
    path = tmp_path / "liar.npz"
    path.write_bytes(bytes(data))
    assert_refused_naming(path, "coef_.npy declares 2147483648 bytes, more than the file holds")


# ---------------------------------------------------------------------------------------------------------------------
# crafted files: every one a ValueError naming the file


def with_byte(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1:]


def central_entry(data: bytes, name: bytes) -> int:
    position = data.find(b"PK\x01\x02")
    while data[position + 46:position + 46 + len(name)] != name:
        position = data.find(b"PK\x01\x02", position + 4)
    return position


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d, c: with_byte(d, c + 8, d[c + 8] | 0x1), "coef_.npy is encrypted"),  # RuntimeError before
    (lambda d, c: with_byte(d, c + 10, 99), r"coef_.npy is compressed \(method 99\)"),  # NotImplementedError
    (lambda d, c: with_byte(d, c + 6, 99), "zip file version 9.9"),  # NotImplementedError before
    (lambda d, c: d[:-30], "not a readable"),
    (lambda d, c: d[:c] + b"XX" + d[c + 2:], "not a readable"),
], ids=["encrypted", "compression-method", "zip-version", "truncated", "central-directory"])
def test_flipped_zip_bytes_are_value_errors_naming_the_file(tmp_path, model_bytes, change, problem):
    path = tmp_path / "flipped.npz"
    path.write_bytes(change(model_bytes, central_entry(model_bytes, b"coef_.npy")))
    assert_refused_naming(path, problem)


def npy_with_header(header: bytes) -> bytes:
    header = header + b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize(("npy", "problem"), [
    (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4L\"\"\"}"), "coef_.npy"),  # TokenError
    (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-3, -4), }"), "negative size"),
    (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 10**9), }"), "coef_.npy"),
    (npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (300000, 400000), }"), "needs"),
    (npy_with_header(b"{'descr': '|O', 'fortran_order': False, 'shape': (3, 4), }"), "dtype object"),
    (npy_with_header(b"[" * 200 + b"]" * 200), "coef_.npy"),
    (b"\x93NUMPY\x09\x00", "coef_.npy"),
    (b"not npy", "coef_.npy"),
], ids=["token-error", "negative-shape", "expression", "huge-shape", "object", "nested", "version", "no-magic"])
def test_crafted_npy_headers_are_value_errors_naming_the_file(tmp_path, model_bytes, npy, problem):
    path = tmp_path / "crafted.npz"
    members = stored_members(model_bytes)
    del members["coef_"]
    write_members(path, members)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("coef_.npy", npy + bytes(48))
    assert_refused_naming(path, problem)


@pytest.mark.parametrize(("member", "value", "problem"), [
    ("coef_", np.full((3, 4), np.nan, np.float32), "coef_.npy: holds NaN or infinite values"),
    ("intercept_", np.array([0.0, np.inf, 1.0]), "intercept_.npy: holds NaN or infinite values"),
    ("coef_", np.zeros((3, 4), "datetime64[s]"), "holds dtype datetime64"),
    ("coef_", np.zeros((3, 4), np.complex64), "holds dtype complex64"),
    ("coef_", np.zeros(12, np.float32), r"shape \(12,\), not 2-D"),
    ("loss_curve_", np.array([0.5, np.nan]), "loss_curve_.npy: holds NaN"),
    ("classes_", np.array([[0, 1, 2]]), "not 1-D"),
    ("params", np.array('{"epochs": 2'), "params.npy: is not valid JSON"),  # JSONDecodeError, no file named before
    ("params", np.array("[1, 2]"), "params.npy: holds a JSON list, not a dict"),
    ("params", np.array('{"__linclass_items__": 3}'), "params.npy: is not valid JSON"),
    ("params", np.array('{"random_state": {"__linclass_random__": ["Generator", {"bit_generator": "os"}]}}'),
     "not a stored random generator"),
    ("feature_names_in_", np.array([1, 2, 3, 4]), "feature_names_in_.npy: holds dtype int64"),
], ids=["nan-coef", "inf-intercept", "datetime", "complex", "1-d-coef", "nan-loss", "2-d-classes", "json",
        "params-list", "bad-pairs", "bad-generator", "int-names"])
def test_loaded_arrays_are_validated(tmp_path, model_bytes, member, value, problem):
    path = tmp_path / "invalid.npz"
    write_members(path, {**stored_members(model_bytes), member: value})
    assert_refused_naming(path, problem)


def test_a_model_of_a_newer_format_or_a_directory_or_fifo_is_refused(tmp_path, model_bytes):
    path = tmp_path / "newer.npz"
    write_members(path, {**stored_members(model_bytes), "format_version": np.array(99)})
    assert_refused_naming(path, "format version 99 is newer")
    assert_refused_naming(tmp_path, "a directory, not a regular file")
    os.mkfifo(tmp_path / "fifo.npz")
    assert_refused_naming(tmp_path / "fifo.npz", "FIFO")
    with pytest.raises(FileNotFoundError):
        SoftmaxRegression.load(tmp_path / "absent.npz")


def test_read_npz_refuses_a_required_member_it_has_no_description_of(tmp_path, model_bytes):
    (tmp_path / "m.npz").write_bytes(model_bytes)
    with pytest.raises(LookupError, match="no Member describes"):
        read_npz(tmp_path / "m.npz", REQUIRED | {"typo_"}, "model")


# ---------------------------------------------------------------------------------------------------------------------
# fuzzing: random flips and truncations of a valid model file give a model or a ValueError naming the file

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzzed_model_files_give_a_model_or_a_value_error_naming_the_file(tmp_path, model_bytes, data):
    content = bytearray(model_bytes)
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        position = data.draw(st.integers(0, len(content) - 1), label="position")
        content[position] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.one_of(st.just(len(content)), st.integers(0, len(content))), label="cut")
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(bytes(content[:cut]))
    try:
        loaded = SoftmaxRegression.load(path)
    except ValueError as error:
        assert str(path) in str(error)
    else:
        assert np.isfinite(loaded.coef_).all() and loaded.coef_.shape == (3, 4)


@st.composite
def member_values(draw):
    """Arrays of any dtype kind and shape, as a crafted file might hold them for any member."""
    dtype = draw(st.sampled_from(["<f4", ">f8", "<i8", "|u1", "|b1", "<U5", "<c8", "<M8[s]", "|S3", "|V4"]))
    shape = draw(st.lists(st.integers(0, 4), max_size=3).map(tuple))
    raw = draw(st.binary(min_size=np.dtype(dtype).itemsize * int(np.prod(shape)),
                         max_size=np.dtype(dtype).itemsize * int(np.prod(shape))))
    return np.frombuffer(raw, dtype=dtype).reshape(shape) if raw or not shape or 0 in shape else np.zeros(shape, dtype)


@FUZZ
@given(replaced=st.dictionaries(st.sampled_from(sorted(MODEL_MEMBERS)), member_values(), min_size=1, max_size=3))
def test_fuzzed_member_values_are_read_checked_or_refused(tmp_path, model_bytes, replaced):
    path = tmp_path / "members.npz"
    write_members(path, {**stored_members(model_bytes), **replaced})
    try:
        stored = read_npz(path, REQUIRED, "model")
    except ValueError as error:
        assert str(path) in str(error)
        return
    for name, array in stored.items():
        member = MODEL_MEMBERS[name]
        assert array.dtype.kind in member.kinds and (member.ndim is None or array.ndim == member.ndim)
        if member.finite and array.dtype.kind == "f":
            assert np.isfinite(array).all()


# ---------------------------------------------------------------------------------------------------------------------
# modes, links, missing directories, temporary files


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode(tmp_path, umask):
    X, y = small_problem()
    model = SoftmaxRegression(epochs=1).fit(X, y)
    previous = os.umask(umask)
    try:
        model.save(tmp_path / "new.npz")
        (tmp_path / "old.npz").write_bytes(b"old")
        os.chmod(tmp_path / "old.npz", 0o640)
        model.save(tmp_path / "old.npz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "old.npz").st_mode) == 0o640


def test_saving_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    X, y = small_problem()
    model = SoftmaxRegression(epochs=1).fit(X, y)
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "v1.npz"
    target.write_bytes(b"old")
    link = tmp_path / "current.npz"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(SoftmaxRegression.load(target).coef_, model.coef_)
    assert sorted(os.listdir(tmp_path / "models")) == ["v1.npz"]


def test_saving_into_a_missing_directory_names_the_directory(tmp_path):
    X, y = small_problem()
    with pytest.raises(FileNotFoundError, match=f"directory {tmp_path / 'absent'} does not exist") as info:
        SoftmaxRegression(epochs=1).fit(X, y).save(tmp_path / "absent" / "m.npz")
    assert TEMPORARY_MARK not in str(info.value)


def test_stale_temporary_files_of_dead_writers_are_removed_by_the_next_save(tmp_path):
    X, y = small_problem()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".m.npz{TEMPORARY_MARK}{dead_pid}-0a1b2c3d"
    alive = tmp_path / f".m.npz{TEMPORARY_MARK}{os.getppid()}-0a1b2c3d"  # a running writer's: kept
    other = tmp_path / f".other.npz{TEMPORARY_MARK}{dead_pid}-0a1b2c3d"  # another target's: not this save's
    for path in (stale, alive, other):
        path.write_bytes(b"partial")
    SoftmaxRegression(epochs=1).fit(X, y).save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", alive.name, other.name])


# A writer that saves two models alternately, forever; killed with SIGKILL at random moments.
SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    from linclass_gpu import SoftmaxRegression
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 200)).astype(np.float32)
    y = np.arange(64) % 20
    models = [SoftmaxRegression(epochs=1, random_state=seed).fit(X, y) for seed in (0, 1)]
    print("ready", flush=True)
    for index in range(10**9):
        models[index % 2].save(sys.argv[1])
""")


def test_sigkill_during_save_leaves_the_old_or_the_new_file_and_nothing_the_next_save_keeps(tmp_path):
    path = tmp_path / "m.npz"
    script = tmp_path / "save_loop.py"
    script.write_text(SAVE_LOOP)
    rng = np.random.default_rng(0)
    kills, leftovers = 0, 0
    for _ in range(30):
        writer = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
        assert writer.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        kills += 1
        if path.exists():  # the first save may not have finished
            model = SoftmaxRegression.load(path)
            assert model.coef_.shape == (20, 200) and model.random_state in (0, 1)
        leftovers += len([name for name in os.listdir(tmp_path) if TEMPORARY_MARK in name])
    X, y = small_problem()
    SoftmaxRegression(epochs=1).fit(X, y).save(path)
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "save_loop.py"]
    print(f"{kills} kills, {leftovers} temporary files left by them, all removed by the next save")


def test_write_npz_atomically_removes_its_temporary_file_when_writing_fails(tmp_path):
    with pytest.raises(ValueError, match="cannot be stored"):
        write_npz_atomically(tmp_path / "m.npz", {"params": {"x": object()}})
    with pytest.raises(TypeError):
        write_npz_atomically(tmp_path / "m.npz", {"array": np.zeros(3), "bad": zlib})
    assert os.listdir(tmp_path) == []
