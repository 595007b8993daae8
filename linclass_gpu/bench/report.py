"""Formatting of benchmark results: the machine they came from, a plain-text table and rows appended to a CSV file."""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import os
import platform
from pathlib import Path

# Distributions whose versions go with every result ("" when not installed).
LIBRARIES = ("linclass-gpu", "numpy", "torch", "triton", "cupy-cuda12x", "scikit-learn")
CONTEXT_COLUMNS = ("timestamp", "host", "cpu", "cores", "load_1m", "gpu") + tuple(f"{name} version"
                                                                               for name in LIBRARIES)


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else whatever platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _gpu_name() -> str:
    """The CUDA device the GPU backends found, or "none" (from the cached backend probes; nothing is imported)."""
    from ..backends import probe

    for name in ("triton", "cupy"):
        status = probe(name)
        if status.auto:
            return status.detail.removeprefix("CUDA device ")
    return "none"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def machine_context() -> dict:
    """When, where and with what a benchmark ran: the :data:`CONTEXT_COLUMNS` of every CSV row (call it at the start:
    ``load_1m``, the 1-minute load average, says how busy the machine was with other work)."""
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpu": _cpu_name(), "cores": os.cpu_count(), "load_1m": os.getloadavg()[0],
        "gpu": _gpu_name(),
        **{f"{name} version": _version(name) for name in LIBRARIES},
    }


def target(name: str, value: float | None, goal: str, holds) -> dict:
    """One goal beside its measured value: ``met`` is ``holds(value)``, False when nothing was measured (None)."""
    return {"name": name, "value": value, "goal": goal, "met": value is not None and bool(holds(value))}


def format_targets(targets: list[dict]) -> str:
    """One line per :func:`target`."""
    return "\n".join(f"target {t['name']}: {'-' if t['value'] is None else format(t['value'], '.3g')} "
                     f"(goal {t['goal']}) {'pass' if t['met'] else 'FAIL'}" for t in targets)


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_table(rows: list[dict], columns: list[tuple[str, str]], digits: int = 3) -> str:
    """Rows as an aligned plain-text table.

    Parameters
    ----------
    rows : list of dict
    columns : list of (key, header)
        Which fields to show, in order; a missing field or None shows as "-". Rows whose ``status`` is not "ok"
        show their status and reason after the leading columns that identify them.
    digits : int
        Significant digits of floats.
    """
    header = [title for _, title in columns]
    lines = [header]
    notes = []
    for row in rows:
        if row.get("status", "ok") == "ok":
            lines.append([_cell(row.get(key), digits) for key, _ in columns])
        else:
            identity = [_cell(row.get(key), digits) for key, _ in columns if key in ("provider", "B", "D", "C")]
            notes.append(f"{' '.join(identity)}: {row['status']}: {row.get('reason', '')}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in
                      enumerate(zip(line, widths))).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text + notes)


def append_csv(path: str | os.PathLike, rows: list[dict], columns: list[str], context: dict) -> None:
    """Append one line per result row to ``path``: the machine context, then ``columns`` of the row.

    A new file gets a header first. An existing file must have the same header (another benchmark's file is not
    mixed into): ValueError otherwise.
    """
    path = Path(path)
    header = list(CONTEXT_COLUMNS) + list(columns)
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as existing:
            found = next(csv.reader(existing), [])
        if found != header:
            raise ValueError(f"{path} has other columns ({', '.join(found[len(CONTEXT_COLUMNS):])}); "
                             f"write this benchmark to another --csv file")
        new_file = False
    else:
        new_file = True
    with path.open("a", newline="") as out:
        writer = csv.writer(out)
        if new_file:
            writer.writerow(header)
        for row in rows:
            writer.writerow([context[key] for key in CONTEXT_COLUMNS] +
                            ["" if row.get(key) is None else row[key] for key in columns])
