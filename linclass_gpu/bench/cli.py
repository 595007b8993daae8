"""``linclass-gpu bench step | mnist | scaling`` (and ``documents``, ``host`` from their own modules): the
subcommands, their options and their output (table, JSON, CSV, plot).

Registered from :data:`linclass_gpu.cli.SUBCOMMAND_MODULES`; nothing heavy is imported until a benchmark runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

STEP_CSV_COLUMNS = ("provider", "device", "threads", "B", "D", "C", "x_dtype", "status", "reason", "method",
                    "median_ms", "low_ms", "high_ms", "gbps", "tflops", "speedup_vs_torch_eager", "time_vs_floor",
                    "bandwidth_fraction", "roofline_fraction", "setup_s")
MNIST_CSV_COLUMNS = ("provider", "status", "reason", "device", "threads", "busy", "input", "batch_size",
                     "learning_rate", "epochs", "iterations", "median_epoch_s", "fit_s", "target_accuracy",
                     "seconds_to_target", "final_accuracy", "peak_above_baseline_mb", "baseline_mb")
_STEP_TABLE = [("provider", "provider"), ("B", "B"), ("D", "D"), ("C", "C"), ("median_ms", "median ms"),
               ("low_ms", "20%"), ("high_ms", "80%"), ("gbps", "GB/s"), ("tflops", "TFLOP/s"),
               ("speedup_vs_torch_eager", "x eager"), ("time_vs_floor", "/ floor")]
_STEP_GPU_TABLE = [("bandwidth_fraction", "of peak BW"), ("roofline_fraction", "of roofline"), ("method", "timer")]
_SCALING_TABLE = [("processes", "processes"), ("global_batch", "global batch"), ("epoch_s", "epoch s"),
                  ("rows_per_s", "rows/s"), ("speedup", "x 1 process"),
                  ("allreduce_bytes_per_step", "all-reduce B/step")]
_MNIST_TABLE = [("provider", "provider"), ("median_epoch_s", "epoch s"), ("fit_s", "fit s"),
                ("seconds_to_target", "s to target"), ("final_accuracy", "test acc"), ("iterations", "lbfgs its"),
                ("peak_above_baseline_mb", "peak MB"), ("baseline_mb", "base MB"), ("input", "input")]


def _int_list(text: str) -> list[int]:
    """A comma-separated list of positive integers (argparse names the flag when it is not one)."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_output_options(parser: argparse.ArgumentParser, add_json) -> None:
    parser.add_argument("--threads", type=int, help="cap every provider's BLAS/OpenMP threads (default: each "
                        "library's own choice, as a user gets it)")
    parser.add_argument("--csv", metavar="FILE.csv", help="append one row per result (with machine, GPU and "
                        "library versions) to this file")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the results (needs matplotlib)")
    add_json(parser)


def register(subparsers, add_json) -> None:
    """Add ``bench`` with its ``step`` and ``mnist`` subcommands to the ``linclass-gpu`` parser."""
    bench = subparsers.add_parser("bench", help="benchmarks: one SGD step per provider, MNIST training vs peers")
    benches = bench.add_subparsers(dest="bench", required=True)

    step = benches.add_parser("step", help="one SGD step per backend and baseline over a B x D x C sweep")
    step.add_argument("--batch-sizes", type=_int_list, metavar="B,...", help="rows per step (default: by device)")
    step.add_argument("--features", type=_int_list, metavar="D,...", help="features (default: by device)")
    step.add_argument("--classes", type=_int_list, metavar="C,...", help="classes (default: by device)")
    step.add_argument("--x-dtype", choices=("float32", "uint8"), default="float32",
                      help="dtype of X (uint8: pixels with input_scale 1/255)")
    step.add_argument("--providers", type=_name_list, metavar="NAME,...",
                      help="backends (numpy, cupy, triton), torch-eager, torch-compile, numpy-gemm-floor, "
                      "cuda-gemm-floor (default: all that run natively here)")
    step.add_argument("--repeats", type=int, help="interleaved timing rounds on the CPU (default 9)")
    step.add_argument("--max-gflop", type=float, help="skip shapes whose two GEMMs exceed this many GFLOP per step "
                      "(default 20 on a CPU, none on a GPU)")
    step.add_argument("--quick", action="store_true", help="tiny shapes, 3 rounds, no torch-compile: a smoke test")
    _add_output_options(step, add_json)
    step.set_defaults(run=run_step)

    mnist = benches.add_parser("mnist", help="end-to-end MNIST training per backend vs PyTorch and scikit-learn")
    mnist.add_argument("--providers", type=_name_list, metavar="NAME,...",
                       help="backends, numpy-1-thread (the NumPy backend on one BLAS thread), torch-eager, jax, "
                       "sklearn-sgd, sklearn-lbfgs, numpy-gemm-floor, linclass-gpu-train (default: every one; those "
                       "not installed are reported as skipped)")
    mnist.add_argument("--epochs", type=int, help="epochs of every SGD provider (default 5)")
    mnist.add_argument("--batch-size", type=int, help="default: the estimators'")
    mnist.add_argument("--learning-rate", type=float, help="initial learning rate (default: the estimators')")
    mnist.add_argument("--target-accuracy", type=float, help="for the seconds-to-target figure (default 0.92)")
    mnist.add_argument("--lbfgs-max-iter", type=int,
                       help="iteration budget of sklearn-lbfgs, which stops earlier at the target (default 100)")
    mnist.add_argument("--busy", type=int, default=0, metavar="N",
                       help="keep N cores busy (one CPU-burning process each) for the whole measurement: the "
                       "figures of a machine shared with other work (default 0)")
    mnist.add_argument("--timeout", type=float, default=900, help="seconds one epoch (or the setup) may take")
    mnist.add_argument("--data-dir", help="directory holding the MNIST IDX files (default: search, see README)")
    mnist.add_argument("--quick", action="store_true",
                       help="2 epochs on 2048 training and 512 test images, lbfgs budget 10: a smoke test")
    _add_output_options(mnist, add_json)
    mnist.set_defaults(run=run_mnist)

    scaling = benches.add_parser("scaling", help="data-parallel MNIST training: throughput of 1 and 2 processes "
                                 "(gloo on this machine) and the all-reduce bytes per step")
    scaling.add_argument("--processes", type=_int_list, metavar="P,...", help="process counts (default 1,2)")
    scaling.add_argument("--backend", default="numpy", help="backend of every process (default numpy)")
    scaling.add_argument("--batch-size", type=int, default=128, help="rows per step of each process (default 128)")
    scaling.add_argument("--local-sgd-every", type=int, default=1, metavar="K",
                         help="average the weights every K steps instead of all-reducing gradients (default 1)")
    scaling.add_argument("--epochs", type=int, default=3, help="epochs; the first is a warm-up (default 3)")
    scaling.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads of each process (default 1)")
    scaling.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    scaling.add_argument("--data-dir", help="directory holding the MNIST IDX files (default: search, see README)")
    scaling.add_argument("--quick", action="store_true", help="2 epochs on 4096 training images: a smoke test")
    add_json(scaling)
    scaling.set_defaults(run=run_scaling)

    # Light: the documents and host benchmarks' heavy imports wait for a run.
    from .documents_bench import register as register_documents
    from .host import register as register_host

    register_documents(benches, add_json)
    register_host(benches, add_json)


def _check_plot_possible(args) -> None:
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'linclass-gpu[bench]'")


def _append_csv(args, rows: list[dict], columns, context: dict) -> None:
    if args.csv:
        from .report import append_csv

        append_csv(args.csv, rows, columns, context)
        print(f"{len(rows)} rows appended to {args.csv}")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_step(args: argparse.Namespace) -> dict:
    """Run the step sweep, print its table; return the results with the machine context."""
    from ..backends import probe
    from . import step as step_bench
    from .report import format_table, format_targets, machine_context
    from .step_providers import STEP_PROVIDERS, default_providers

    _check_plot_possible(args)
    on_cuda = probe("triton").auto or probe("cupy").auto
    sweep = step_bench.QUICK_SWEEP if args.quick else (step_bench.CUDA_SWEEP if on_cuda else step_bench.CPU_SWEEP)
    shapes = step_bench.sweep_shapes(args.batch_sizes or sweep["batch_sizes"], args.features or sweep["features"],
                                     args.classes or sweep["classes"])
    providers = args.providers or default_providers(quick=args.quick)
    unknown = [name for name in providers if name not in STEP_PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider(s) {', '.join(unknown)}; expected {', '.join(STEP_PROVIDERS)}")
    repeats = args.repeats or (step_bench.QUICK_REPEATS if args.quick else step_bench.DEFAULT_REPEATS)
    max_gflop = args.max_gflop if args.max_gflop is not None else sweep["max_gflop"]
    context = machine_context()
    outcome = step_bench.run_step_bench(shapes, providers, x_dtype=args.x_dtype, repeats=repeats,
                                        max_gflop=max_gflop, on_cuda=on_cuda, threads=args.threads,
                                        progress=_progress)
    columns = _STEP_TABLE + (_STEP_GPU_TABLE if outcome["peak"] else [])
    print(format_table(outcome["results"], columns))
    print(f"GB/s: {outcome['bytes_model']}; '/ floor': time over the floor (gather X[rows], "
          "cast, the two GEMMs) of the same device")
    if outcome["peak"]:
        peak = outcome["peak"]
        print(f"peak of {peak['device']}: {peak['gbps']:.0f} GB/s, {peak['tflops']:.1f} FP32 TFLOP/s")
    if outcome["targets"]:
        print(format_targets(outcome["targets"]))
    _append_csv(args, [{"threads": args.threads, **row} for row in outcome["results"]], STEP_CSV_COLUMNS, context)
    if args.plot:
        from .plot import plot_step

        plot_step(outcome["results"], args.plot, outcome["peak"])
        print(f"plot written to {args.plot}")
    return {"bench": "step", "context": context, "repeats": repeats, **outcome}


def run_mnist(args: argparse.Namespace) -> dict:
    """Run the MNIST comparison, print its table and the targets; return the results with the machine context."""
    from . import mnist as mnist_bench
    from .report import format_table, format_targets, machine_context

    _check_plot_possible(args)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
             "target_accuracy": args.target_accuracy, "lbfgs_max_iter": args.lbfgs_max_iter, "data_dir": args.data_dir,
             "threads": args.threads}
    settings = mnist_bench.MnistSettings.library_defaults(**{**(mnist_bench.QUICK if args.quick else {}),
                                                             **{k: v for k, v in given.items() if v is not None}})
    providers = args.providers or mnist_bench.default_providers()
    unknown = [name for name in providers if name not in mnist_bench.MNIST_PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider(s) {', '.join(unknown)}; expected "
                         f"{', '.join(mnist_bench.MNIST_PROVIDERS)}")
    context = machine_context()
    outcome = mnist_bench.run_mnist_bench(providers, settings, timeout=args.timeout, busy=args.busy,
                                          progress=_progress)
    threads = f"capped at {settings.threads}" if settings.threads else "each library's default"
    print(f"MNIST: {settings.epochs} epochs, batch {settings.batch_size}, learning rate {settings.learning_rate} "
          f"({settings.schedule}, gamma {settings.gamma}, floor {settings.min_learning_rate}), momentum "
          f"{settings.momentum}, alpha {settings.alpha}; "
          f"target {settings.target_accuracy:.0%}; threads {threads}; {args.busy} busy process(es) beside; "
          f"load {context['load_1m']:.1f} on {context['cores']} cores before; "
          f"dataset {outcome['dataset_mb']:.1f} MB (uint8 images + labels)")
    print(format_table(outcome["results"], _MNIST_TABLE))
    print("epoch s: training only, providers taking turns epoch by epoch; peak MB: peak resident set above the "
          "baseline (after imports, before loading data). sklearn-lbfgs: warm-start chunks of growing size until the "
          "target or --lbfgs-max-iter iterations, one chunk per 'epoch'. s to target: training seconds at the first "
          "test-set evaluation at the target, evaluated every quarter epoch for the SGD providers and after each "
          "chunk for sklearn-lbfgs, the clock stopped while evaluating. linclass-gpu-train runs whole, for its "
          "memory: its epoch seconds include evaluation. numpy-1-thread: the NumPy backend with one BLAS thread "
          "(OPENBLAS_NUM_THREADS=1, LINCLASS_NUM_THREADS=1); jax: jit of a lax.scan over each evaluation "
          "interval's minibatches, compiled in the setup.")
    print(format_targets(outcome["targets"]))
    rows = [{"batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
             "threads": 1 if row["provider"] in mnist_bench.ONE_THREAD else settings.threads, "busy": args.busy,
             "target_accuracy": settings.target_accuracy, **row} for row in outcome["results"]]
    _append_csv(args, rows, MNIST_CSV_COLUMNS, context)
    if args.plot:
        from .plot import plot_mnist

        plot_mnist(outcome["results"], args.plot, settings.target_accuracy)
        print(f"plot written to {args.plot}")
    return {"bench": "mnist", "context": context, **outcome}


def run_scaling(args: argparse.Namespace) -> dict:
    """Run the scaling rows, print their table; return them with the machine context."""
    from . import scaling as scaling_bench
    from .report import format_table, machine_context

    context = machine_context()
    settings = {"backend": args.backend, "batch_size": args.batch_size, "local_sgd_every": args.local_sgd_every,
                "epochs": args.epochs, "rows": None, "threads": args.threads, "data_dir": args.data_dir,
                "timeout": args.timeout, **(scaling_bench.QUICK if args.quick else {})}
    results = scaling_bench.run_scaling_bench(args.processes or scaling_bench.DEFAULT_PROCESS_COUNTS, **settings)
    print(f"MNIST softmax, {args.backend}, batch {args.batch_size} per process, {settings['threads']} thread(s) per "
          f"process, local SGD every {args.local_sgd_every} step(s); load {context['load_1m']:.1f} on "
          f"{context['cores']} cores")
    print(format_table(results, _SCALING_TABLE))
    print("rows/s: training rows of all processes per second (median epoch after the first); all-reduce B/step: "
          "bytes each process hands to all-reduces per step")
    return {"bench": "scaling", "context": context, "settings": settings, "results": results}
