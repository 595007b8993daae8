"""How the Triton kernels are imported: by name, with static imports, in one interpreter mode per process.

``linclass_gpu.kernels`` decides once, before it imports triton, whether the kernels run under the interpreter; a
triton already imported in the other mode is refused with an error that says what to set, instead of being
re-imported. The source scan pins that no module reaches the kernels through importlib or edits ``sys.modules``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCE_DIRECTORIES = ("linclass_gpu", "kernels")
# importlib.import_module by name, where the name comes from a table: backend factories and benchmark functions.
IMPORT_MODULE_USERS = {"linclass_gpu/backends/registry.py", "linclass_gpu/bench/isolated.py"}
SYS_MODULES_WRITES = {"pop", "setdefault", "update", "clear", "__setitem__", "__delitem__"}
# Found without importing: triton imported here, before linclass_gpu.kernels, would fix this process's mode.
needs_triton = pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("torch", "triton")),
                                  reason="the Triton kernels need torch and triton")


def _sources():
    for directory in SOURCE_DIRECTORIES:
        for path in sorted((REPOSITORY / directory).rglob("*.py")):
            yield path.relative_to(REPOSITORY).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _dotted(node) -> str:
    """``a.b.c`` of a Name/Attribute chain, "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        prefix = _dotted(node.value)
        return f"{prefix}.{node.attr}" if prefix else ""
    return ""


def _import_graph_violations(relative: str, tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        where = f"{relative}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            called = _dotted(node.func)
            if called.endswith("reload") or called.endswith(("spec_from_file_location", "module_from_spec")):
                found.append(f"{where}: {called}()")
            if called.endswith("import_module") and relative not in IMPORT_MODULE_USERS:
                found.append(f"{where}: {called}()")
            if called.startswith("sys.modules.") and called.rsplit(".", 1)[1] in SYS_MODULES_WRITES:
                found.append(f"{where}: {called}()")
            if called == "setattr" and len(node.args) > 1 and getattr(node.args[1], "value", None) == "kernels":
                found.append(f"{where}: setattr(..., 'kernels', ...)")
        targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            if isinstance(target, ast.Subscript) and _dotted(target.value) == "sys.modules":
                found.append(f"{where}: sys.modules[...] written")
            if isinstance(target, ast.Attribute) and target.attr == "kernels":
                found.append(f"{where}: {_dotted(target) or '….kernels'} assigned")
    return found


def test_no_module_imports_kernels_through_importlib_or_sys_modules():
    violations = [found for relative, tree in _sources() for found in _import_graph_violations(relative, tree)]
    assert not violations, "\n".join(violations)


def test_the_backend_imports_every_kernel_module_by_name():
    imported = set()
    for relative, tree in _sources():
        if relative == "linclass_gpu/backends/triton_backend.py":
            imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                         and node.module == "linclass_gpu.kernels" for alias in node.names}
    assert {"INTERPRET", "epoch_sgd", "sgd_update", "sigmoid_sgd", "softmax_sgd"} <= imported


def _module_name(relative: str) -> str:
    """``linclass_gpu.backends.base`` for ``linclass_gpu/backends/base.py`` (``kernels/`` installs as
    ``linclass_gpu.kernels``; a package's ``__init__`` is the package)."""
    parts = relative.removesuffix(".py").split("/")
    parts = ["linclass_gpu", *parts] if parts[0] == "kernels" else parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_import_graph_has_no_circle():
    """Every import between the package's modules, at the top or inside a function, drawn as a graph: no circle."""
    sources = dict(_sources())
    modules = {_module_name(relative): (relative, tree) for relative, tree in sources.items()}
    graph = {}
    for name, (relative, tree) in modules.items():
        package = name if relative.endswith("__init__.py") else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                imported |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = sorted(imported & set(modules) - {name})
    circles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target):] + [module, target]))
            elif target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])
    assert not circles, "\n".join(circles)


def _run(code: str, **environment: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose environment has no TRITON_INTERPRET beyond ``environment``."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**env, **environment},
                          capture_output=True, text=True, timeout=300)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# triton imported in one mode, then the kernels asked for the other: (mode triton was imported in, what the kernels
# see in TRITON_INTERPRET afterwards, the setting the error must name).
WRONG_MODES = {
    "compiled triton, interpreter asked for": ("0", "1", "TRITON_INTERPRET=1"),
    "interpreted triton, compiler asked for": ("1", "0", "TRITON_INTERPRET=0"),
    "compiled triton, no CUDA device": ("0", None, "TRITON_INTERPRET=1"),
}


@needs_triton
@pytest.mark.parametrize("case", WRONG_MODES)
def test_importing_the_kernels_after_triton_in_the_other_mode_says_what_to_set(case):
    triton_mode, kernels_mode, advice = WRONG_MODES[case]
    if kernels_mode is None and _has_cuda():
        pytest.skip("the kernels compile for CUDA here: no mismatch to provoke")
    done = _run(f"""
        import os
        os.environ["TRITON_INTERPRET"] = {triton_mode!r}
        import triton
        {"os.environ.pop('TRITON_INTERPRET')" if kernels_mode is None else
         f"os.environ['TRITON_INTERPRET'] = {kernels_mode!r}"}
        try:
            from linclass_gpu.kernels import softmax_sgd
        except RuntimeError as error:
            print(type(error).__name__, error)
        else:
            print("imported")
        from linclass_gpu.backends.base import BackendUnavailableError
        from linclass_gpu.backends.triton_backend import TritonBackend
        try:
            TritonBackend()
        except BackendUnavailableError as error:
            print("backend unavailable:", error)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    refused, backend = done.stdout.strip().splitlines()
    assert refused.startswith("TritonModeError triton was imported for"), refused
    assert f"set {advice} in the environment before anything imports triton" in refused
    assert backend.startswith("backend unavailable: triton was imported for"), backend


@needs_triton
def test_an_explicit_compile_mode_builds_compilable_kernels_without_a_gpu():
    """What the compile report's workers rely on: TRITON_INTERPRET=0 is honoured on a machine without a GPU."""
    done = _run("""
        from linclass_gpu import kernels
        from linclass_gpu.kernels import epoch_sgd, sgd_update, sigmoid_sgd, softmax_sgd
        import triton
        print(kernels.INTERPRET, [type(kernel).__name__ for kernel in (
            softmax_sgd.softmax_sgd_kernel, sigmoid_sgd.sigmoid_sgd_kernel, sgd_update.sgd_update_kernel,
            epoch_sgd.epoch_sgd_kernel)])
    """, TRITON_INTERPRET="0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "['JITFunction',", "'JITFunction',", "'JITFunction',", "'JITFunction']"]


@needs_triton
def test_interpreted_launches_are_serialised():
    done = _run("""
        from linclass_gpu import kernels
        # Wrapped once: what the wrapper calls is the kernel's own bound run, not another wrapper.
        print(all(kernel.run.__wrapped__.__self__ is kernel for kernel in (
            kernels.softmax_sgd.softmax_sgd_kernel, kernels.sigmoid_sgd.sigmoid_sgd_kernel,
            kernels.sgd_update.sgd_update_kernel, kernels.epoch_sgd.epoch_sgd_kernel,
            kernels.sparse_sgd.sparse_sgd_grad_kernel)))
    """, TRITON_INTERPRET="1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"]
