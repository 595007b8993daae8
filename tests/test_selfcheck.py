"""``linclass-gpu selfcheck`` where there is no CUDA GPU (as in CI): one line, the plan, exit status 0."""

from __future__ import annotations

import argparse
import json

import pytest

from linclass_gpu import selfcheck


def run_selfcheck(argv):
    """Parse ``argv`` with the subcommand registered as the CLI registers it, and run it."""
    parser = argparse.ArgumentParser(prog="linclass-gpu")
    commands = parser.add_subparsers(dest="command", required=True)
    selfcheck.register(commands, lambda sub: sub.add_argument("--json", action="store_true"))
    args = parser.parse_args(argv)
    return args, args.run(args)


def test_without_a_gpu_it_says_so_in_one_line_and_lists_the_plan(monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, "cuda_device", lambda: None)  # also on a GPU machine: this path is the one tested
    args, result = run_selfcheck(["selfcheck", "--json"])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "no CUDA GPU" in printed[0]
    assert args.json and result == {"gpu": None, "ran": False, "would_run": selfcheck.plan()}
    json.dumps(result)  # one JSON object
    plan = " ".join(result["would_run"])
    for part in (*selfcheck.GPU_TEST_FILES, "bench step", *selfcheck.MNIST_PROVIDERS):
        assert part in plan and part in printed[0]


def test_the_gpu_test_subset_names_files_that_exist():
    tests = selfcheck._tests_dir()
    assert tests is not None
    assert all((tests / name).is_file() for name in selfcheck.GPU_TEST_FILES)


def test_cuda_device_is_none_without_cuda():
    torch = pytest.importorskip("torch")
    assert (selfcheck.cuda_device() is None) == (not torch.cuda.is_available())
