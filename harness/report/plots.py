"""The Pareto plot of a suite page: accuracy against stored bits, one panel
per structure, one colour per method on every page, one marker per protocol."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Mapping, Sequence

from prunebench.protocols.base import ordered

from .cells import Row, acc2, headline_value, headlines
from .stats import Stat, mean_of

__all__ = ["method_colour", "focus_floor", "pareto_png", "budget_png", "budget_figure", "protocol_style", "recall_png", "macs_png"]


def protocol_style(name: str):
    """The installed protocol's plot style, or a plain one for an unknown name."""
    from prunebench import registry
    from prunebench.registry import PluginError

    try:
        return registry.protocols.get(name)
    except PluginError:
        return SimpleNamespace(marker="D", filled=True, joined=False, title=name.replace("_", " "))


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
            "#6b6ecf", "#393b79", "#7b4173", "#8c6d31", "#637939", "#843c39", "#aec7e8", "#ff9896", "#98df8a",
            "#c5b0d5", "#ffbb78")


#: each built-in method keeps its colour on every page, and no two share one; the ten
#: that lenet5-fashion-mnist compares get the ten most distinct; black is the dense model's.
#: Others: one from the name.
_METHOD_COLOURS = {"magnitude": "#1f77b4", "random": "#7f7f7f", "admm": "#d62728", "slr": "#2ca02c",
                   "gmp": "#ff7f0e", "tp_l1": "#bcbd22", "tp_taylor": "#17becf", "imp_lrr": "#9467bd",
                   "obc": "#8c564b", "random_shuffled": "#e377c2",
                   "autoprune": "#393b79", "admm_memristor": "#ff9896", "pattern": "#6b6ecf",
                   "pe_ternary": "#7b4173", "clicktrain": "#8c6d31", "snn_state_qat": "#637939",
                   "undecayed": "#843c39", "head_slim": "#aec7e8", "input_scaling": "#98df8a",
                   "mint": "#c5b0d5", "spquant": "#ffbb78"}


def method_colour(method_label: str) -> str:
    """One colour per method (its name without the version), the same on every page."""
    import hashlib

    name = method_label.split(" v")[0].split(" + ")[0]
    if name in _METHOD_COLOURS:
        return _METHOD_COLOURS[name]
    index = int(hashlib.sha1(name.encode()).hexdigest(), 16) % len(_COLOURS)
    return _COLOURS[index]


def focus_floor(values: Sequence[float], dense: Stat | None) -> float | None:
    """The lowest accuracy the axis shows: Tukey's lower fence (Q1 - 1.5 IQR)
    of the cells, so a collapsed cell (chance level) does not squeeze the
    rest into a corner; None when nothing lies below it."""
    xs = sorted(values)
    if len(xs) < 4:
        return None
    q1, q3 = xs[len(xs) // 4], xs[(3 * len(xs)) // 4]
    fence = q1 - 1.5 * max(q3 - q1, 0.5)
    return fence if xs[0] < fence else None


def pareto_png(title: str, rows: Sequence[Row], metric: str, dense: Stat | None, records: Sequence[Mapping]) -> bytes | None:
    points = [r for r in rows if r.metric is not None and r.bits is not None]
    if not points:
        return None
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    structures = sorted({r.structure for r in points})
    protocols = ordered({r.protocol for r in points})
    styles = {p: protocol_style(p) for p in protocols}
    sizes = headlines(records, role="size")
    size_label = sizes[0][1].label if sizes else "size"
    dense_sizes = headlines(records, role="dense_size")
    fp32 = None if not dense_sizes else mean_of(records, lambda r: headline_value(r, *dense_sizes[0]))
    # style "default" ignores the user's matplotlibrc, so output is reproducible
    with matplotlib.style.context("default"):
        cols = min(3, len(structures))
        nrows = math.ceil(len(structures) / cols)
        fig = Figure(figsize=(3.6 * cols + 2.4, 3.3 * nrows + 0.6), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, cols, squeeze=False)
        methods_seen: set[str] = set()
        any_below = False
        for k, structure in enumerate(structures):
            ax = axes[k // cols][k % cols]
            mine = [r for r in points if r.structure == structure]
            # each panel focuses on where its methods differ
            floor = focus_floor([r.metric.mean for r in mine], dense)
            any_below = any_below or floor is not None
            top = max([r.metric.mean + (r.metric.half or 0.0) for r in mine]
                      + ([dense.mean + (dense.half or 0.0)] if dense is not None else []))
            for method in sorted({r.method for r in mine}):
                colour = method_colour(method)
                methods_seen.add(method)
                for proto in protocols:
                    style = styles[proto]
                    filled = style.filled
                    pts = sorted((r.bits, r.metric.mean, r.metric.half or 0.0) for r in mine
                                 if r.method == method and r.protocol == proto)
                    if not pts:
                        continue
                    shown = [(x, y, e) for x, y, e in pts if floor is None or y >= floor]
                    if shown:
                        xs, ys, es = zip(*shown)
                        ax.errorbar(xs, ys, yerr=es, fmt=style.marker, linestyle="-" if style.joined else "none",
                                    color=colour, mfc=colour if filled else "none", capsize=3, markersize=5, linewidth=1)
                    for x, y, _ in pts:  # collapsed cells: at the bottom edge, value written beside
                        if floor is not None and y < floor:
                            ax.plot([x], [floor], marker="v", color=colour, mfc=colour if filled else "none",
                                    markersize=7, linestyle="none", clip_on=False)
                            ax.annotate(f"{y:.0f}", (x, floor), textcoords="offset points", xytext=(4, 3),
                                        fontsize=6, color=colour)
            if dense is not None:
                ax.axhline(dense.mean, color="black", linestyle="--", linewidth=1)
                if dense.half:
                    ax.axhspan(dense.mean - dense.half, dense.mean + dense.half, color="0.88", zorder=0)
                if fp32 is not None and fp32 > 0:
                    ax.plot([fp32], [dense.mean], marker="*", markersize=10, color="black", linestyle="none")
            ax.set_xscale("log")
            ax.set_title(structure, fontsize=9)
            ax.grid(True, which="both", linewidth=0.3)
            ax.tick_params(labelsize=7)
            if floor is not None:
                ax.set_ylim(floor, top + 0.02 * (top - floor))
            ax.set_ylabel(f"{metric} (%)", fontsize=8)
            if k // cols == nrows - 1:
                ax.set_xlabel(size_label, fontsize=8)
        for k in range(len(structures), nrows * cols):
            axes[k // cols][k % cols].set_visible(False)
        handles = [Line2D([], [], color=method_colour(m), marker="o", linestyle="-", markersize=5, label=m)
                   for m in sorted(methods_seen)]
        handles += [Line2D([], [], color="0.3", marker=styles[p].marker, mfc="0.3" if styles[p].filled else "none",
                           linestyle="-" if styles[p].joined else "none", label=styles[p].title.lower())
                    for p in protocols]
        handles += _reference_handles(dense, any_below)
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1 - 2.2 / (3.6 * cols + 2.4), 0.95))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()



def budget_png(cells: Mapping, budgets: Sequence[float], metric: str, dense: Stat | None) -> bytes | None:
    """Accuracy against training budget, rendered (see :func:`budget_figure`)."""
    fig = budget_figure(cells, budgets, metric, dense)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def budget_figure(cells: Mapping, budgets: Sequence[float], metric: str, dense: Stat | None):
    """Accuracy against training budget: one panel per structure (row) and rate
    (column), one line per method in its colour, 95% CI bars, dense level dashed.
    Each panel's axis focuses on where its methods differ; a collapsed cell is drawn
    at the bottom edge with its value beside it. ``cells`` maps (structure, method,
    rate) to {budget: Stat}."""
    if not cells:
        return None
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    structures = sorted({k[0] for k in cells})
    rates = sorted({k[2] for k in cells}, key=lambda r: (r is not None, r or 0.0))
    methods = sorted({k[1] for k in cells})
    # variants of one method ("gmp v1", "gmp v1 (from scratch)") share its colour: a line style tells them apart
    styles, per_colour = {}, defaultdict(int)
    for m in methods:
        styles[m] = ("-", "--", ":", "-.")[per_colour[method_colour(m)] % 4]
        per_colour[method_colour(m)] += 1
    with matplotlib.style.context("default"):
        nrows, cols = len(structures), len(rates)
        fig = Figure(figsize=(3.0 * cols + 2.0, 2.7 * nrows + 0.4), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, cols, squeeze=False)
        any_below = False
        for i, structure in enumerate(structures):
            for j, rate in enumerate(rates):
                ax = axes[i][j]
                mine = {k[1]: v for k, v in cells.items() if k[0] == structure and k[2] == rate and v}
                if not mine:
                    ax.set_visible(False)
                    continue
                means = [s.mean for by_b in mine.values() for s in by_b.values()]
                floor = focus_floor(means, dense)
                any_below = any_below or floor is not None
                for method, by_budget in sorted(mine.items()):
                    colour = method_colour(method)
                    xs = [b for b in budgets if b in by_budget]
                    pts = [(max(b, 1e-3), by_budget[b].mean, by_budget[b].half or 0.0) for b in xs]
                    shown = [p for p in pts if floor is None or p[1] >= floor]
                    if shown:
                        ax.errorbar(*zip(*shown), linestyle=styles[method], marker="o", markersize=3.5, color=colour,
                                    capsize=2, linewidth=1)
                    for x, y, _ in pts:
                        if floor is not None and y < floor:
                            ax.plot([x], [floor], marker="v", color=colour, markersize=6, linestyle="none",
                                    clip_on=False)
                            ax.annotate(f"{y:.0f}", (x, floor), textcoords="offset points", xytext=(3, 3),
                                        fontsize=6, color=colour)
                if dense is not None:
                    ax.axhline(dense.mean, color="black", linestyle="--", linewidth=1)
                if floor is not None:
                    top = max(means + ([dense.mean] if dense is not None else []))
                    ax.set_ylim(floor, top + 0.05 * (top - floor))
                if min(budgets) > 0:
                    ax.set_xscale("log")
                ax.set_xticks(list(budgets), [f"{b:g}" for b in budgets])
                ax.minorticks_off()
                rate_text = "" if rate is None else f" · {rate:g}×"
                ax.set_title(f"{structure}{rate_text}", fontsize=9)
                if i == nrows - 1:
                    ax.set_xlabel("training budget (epochs)", fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"{metric} (%)", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(True, linewidth=0.3)
        handles = [Line2D([], [], color=method_colour(m), marker="o", linestyle=styles[m], markersize=4, label=m)
                   for m in methods]
        handles += _reference_handles(dense, any_below)
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 1.9 / (3.0 * cols + 2.0), 1))
    return fig


def _reference_handles(dense: Stat | None, any_below: bool) -> list:
    """Legend entries for the dense level and, when a panel clipped a cell, the edge marker."""
    from matplotlib.lines import Line2D

    handles = []
    if dense is not None:
        handles.append(Line2D([], [], color="black", linestyle="--", label=f"dense {acc2(dense.mean)}"))
    if any_below:
        handles.append(Line2D([], [], color="0.3", marker="v", linestyle="none", label="below the axis (value)"))
    return handles


def _shared_legend(fig) -> None:
    """One legend on the figure's right for every panel's labelled lines, each label once."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)


def _titled_png(fig, title: str, legend_share: float) -> bytes:
    """A figure's shared legend on the right (``legend_share`` of its width), its title, as PNG bytes."""
    _shared_legend(fig)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - legend_share, 0.95 if title else 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def recall_png(title: str, panels: Sequence[tuple[str, Sequence[tuple]]]) -> bytes | None:
    """Relative recall change against dense relative recall (prunebench.report.recall):
    one panel per (structure, target), per method its classes' points (x = dense
    normalized recall balance, y = its change) and the line of slope α̂ - 1."""
    panels = [(name, [m for m in methods if m[1]]) for name, methods in panels]
    panels = [(name, methods) for name, methods in panels if methods]
    if not panels:
        return None
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        cols = min(3, len(panels))
        nrows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(3.6 * cols + 0.4, 3.3 * nrows + 0.6), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, cols, squeeze=False)
        for k, (name, methods) in enumerate(panels):
            ax = axes[k // cols][k % cols]
            span = max(abs(v) for _, xs, _, _ in methods for v in xs) or 1.0
            for method, xs, ys, slope in methods:
                colour = method_colour(method)
                ax.plot(xs, ys, marker="o", linestyle="none", markersize=3, alpha=0.6, color=colour)
                if slope is not None:  # B_t - B = (α̂ - 1) B
                    ax.plot([-span, span], [-(slope - 1) * span, (slope - 1) * span], color=colour, linewidth=1,
                            label=f"{method}: α̂ {slope:.2f}")
            ax.axhline(0, color="black", linewidth=0.6)
            ax.axvline(0, color="black", linewidth=0.6)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("dense (recall - acc) / acc", fontsize=8)
            ax.set_ylabel("change after compression", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, linewidth=0.3)
            ax.legend(fontsize=6, loc="best", frameon=False)
        for k in range(len(panels), nrows * cols):
            axes[k // cols][k % cols].set_visible(False)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95 if title else 1))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def macs_png(title: str, curves: Mapping[str, Mapping[str, Sequence[tuple]]], metric: str,
             dense_mean: float | None) -> bytes | None:
    """Primary metric against the counted MACs reduction (prunebench.report.macs_curve):
    one panel per structure, one line per method (mean over seeds per target), the
    dense model at 1x."""
    if not curves:
        return None
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    structures = sorted(curves)
    with matplotlib.style.context("default"):
        cols = min(3, len(structures))
        nrows = math.ceil(len(structures) / cols)
        fig = Figure(figsize=(3.8 * cols + 2.4, 3.2 * nrows + 0.6), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, cols, squeeze=False)
        for k, structure in enumerate(structures):
            ax = axes[k // cols][k % cols]
            for method in sorted(curves[structure]):
                pts = sorted((x, y) for _, x, y, *_ in curves[structure][method])
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", markersize=4, linewidth=1,
                        color=method_colour(method), label=method)
            if dense_mean is not None:
                ax.plot([1.0], [dense_mean], marker="*", markersize=10, color="black", linestyle="none", label="dense")
            ax.set_title(structure, fontsize=9)
            ax.set_xlabel("MACs reduction (dense / compressed, ×)", fontsize=8)
            ax.set_ylabel(f"{metric} (%)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, linewidth=0.3)
        for k in range(len(structures), nrows * cols):
            axes[k // cols][k % cols].set_visible(False)
        return _titled_png(fig, title, 2.2 / (3.8 * cols + 2.4))


def scratch_png(title: str, curves: Mapping[tuple, Mapping[str, Sequence[tuple]]], metric: str,
                dense_mean: float | None) -> bytes | None:
    """From scratch against after training (prunebench.report.scratch): one column per
    (structure, target); top row against epochs since random initialisation, bottom row
    against end-to-end wall time; one line per method and start through its budgets."""
    if not curves:
        return None
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = sorted(curves)
    with matplotlib.style.context("default"):
        cols = len(panels)
        fig = Figure(figsize=(3.8 * cols + 2.6, 6.6), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, cols, squeeze=False)
        for k, (structure, target) in enumerate(panels):
            for row, (x_of, xlabel) in enumerate(((0, "epochs from random initialisation"),
                                                  (1, "end-to-end wall time (s)"))):
                ax = axes[row][k]
                for method in sorted(curves[(structure, target)]):
                    pts = sorted((p for p in curves[(structure, target)][method] if p[x_of] is not None),
                                 key=lambda p: p[x_of])
                    if not pts:
                        continue
                    scratch = "(from " in method
                    ax.errorbar([p[x_of] for p in pts], [p[2].mean for p in pts], yerr=[p[2].half or 0.0 for p in pts],
                                marker="o" if scratch else "s", markersize=5, linewidth=1, capsize=2,
                                linestyle="--" if scratch else "-",
                                color=method_colour(method), label=method)
                if dense_mean is not None:
                    ax.axhline(dense_mean, color="black", linestyle="--", linewidth=1)
                ax.set_title(f"{structure} {target}", fontsize=9)
                ax.set_xlabel(xlabel, fontsize=8)
                ax.set_ylabel(f"{metric} (%)", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(True, linewidth=0.3)
        return _titled_png(fig, title, 2.6 / (3.8 * cols + 2.6))
