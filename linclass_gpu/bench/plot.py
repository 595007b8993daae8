"""``--plot FILE.png``: the step sweep and the MNIST comparison as figures (matplotlib, imported only here).

Figures are drawn through ``matplotlib.figure.Figure`` directly, so no pyplot state or interactive backend is
involved.
"""

from __future__ import annotations

import itertools


def _figure(n_panels: int, width_per_panel: float = 5.0):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_per_panel * n_panels, 4.0), layout="constrained")
    return figure, figure.subplots(1, n_panels, squeeze=False)[0]


def plot_step(results: list[dict], path, peak: dict | None = None) -> None:
    """One panel per (D, C): each provider's time per step (CPU) or GB/s (with a peak) against B.

    Parameters
    ----------
    results : list of dict
        Rows of :func:`.step.run_step_bench`; skipped rows are left out.
    path : str or path-like
        PNG file to write.
    peak : dict, optional
        ``{"device", "gbps", "tflops"}`` of the CUDA device: the panels then show GB/s and the peak bandwidth.
    """
    rows = [row for row in results if row["status"] == "ok"]
    panels = sorted({(row["D"], row["C"]) for row in rows})
    metric, label = ("gbps", "GB/s (fused step's bytes)") if peak else ("median_ms", "ms per step (median, 20-80%)")
    figure, axes = _figure(max(1, len(panels)))
    for ax, (D, C) in zip(axes, panels):
        panel = [row for row in rows if (row["D"], row["C"]) == (D, C) and row.get(metric) is not None]
        for provider, group in itertools.groupby(sorted(panel, key=lambda r: (r["provider"], r["B"])),
                                                 key=lambda r: r["provider"]):
            group = list(group)
            batch_sizes = [row["B"] for row in group]
            line, = ax.plot(batch_sizes, [row[metric] for row in group], marker="o", label=provider)
            if metric == "median_ms":
                ax.fill_between(batch_sizes, [row["low_ms"] for row in group], [row["high_ms"] for row in group],
                                alpha=0.2, color=line.get_color())
        if peak:
            ax.axhline(peak["gbps"], color="black", linestyle="--", label=f"peak {peak['gbps']:.0f} GB/s")
        ax.set_xscale("log", base=2)
        ax.set(yscale="log", xlabel="B (rows per step)", ylabel=label, title=f"D={D}, C={C}")
        ax.legend(fontsize="small")
    figure.savefig(path, dpi=120)


def plot_mnist(results: list[dict], path, target_accuracy: float = 0.92) -> None:
    """Bars per provider: median epoch seconds, and seconds of training to ``target_accuracy``.

    Parameters
    ----------
    results : list of dict
        Rows of :func:`.mnist.run_mnist_bench`; rows without the figure are left out of its panel.
    path : str or path-like
        PNG file to write.
    target_accuracy : float
    """
    from matplotlib.ticker import NullFormatter

    rows = [row for row in results if row["status"] == "ok"]
    panels = (("median_epoch_s", "median epoch (s, training only)"),
              ("seconds_to_target", f"seconds to {target_accuracy:.0%} test accuracy"))
    figure, axes = _figure(len(panels), width_per_panel=6.0)
    for ax, (key, title) in zip(axes, panels):
        # L-BFGS's "epochs" are chunks of iterations: no epoch to compare, only its time to the target.
        shown = [row for row in rows if row.get(key) is not None
                 and not (key == "median_epoch_s" and row.get("iterations") is not None)]
        ax.set_title(title)
        if not shown:
            ax.text(0.5, 0.5, "no provider", ha="center", va="center", transform=ax.transAxes)
            continue
        bars = ax.barh([row["provider"] for row in shown], [row[key] for row in shown])
        ax.bar_label(bars, labels=[f"{row[key]:.3g}" for row in shown], fontsize="small", padding=2)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # the bars are labelled; minor labels would collide
        ax.margins(x=0.15)  # room for the longest bar's label
        ax.invert_yaxis()
    figure.savefig(path, dpi=120)
