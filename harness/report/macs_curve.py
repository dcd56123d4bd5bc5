"""The compute-accuracy curve of suites whose rates are MACs reductions.

Light-Weight RetinaNet (arXiv 1905.10011) compares ways of cutting compute by
their FLOPs-mAP curves: at each reduction, which method keeps more accuracy.
From the equal-compression records with ``target.rate_of == "macs"``, per
structure and method: x = the MACs reduction the harness counted (dense MACs
/ compressed MACs per sample at the evaluated input, ``macs.macs_reduction_x``),
y = the primary metric, both means over seeds per target, one line per
method; the dense model sits at 1x.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

from prunebench.protocols.base import rate_of_record

from .cells import DASH, acc2, dig, is_error, method_label, num, sd_cell, sig, structure_of, table
from .stats import mean_of, over_seeds

__all__ = ["macs_records", "macs_curves", "macs_section"]


def macs_records(records: Sequence[Mapping]) -> list[Mapping]:
    """Equal-compression records with a MACs target and the harness's MACs count."""
    return [r for r in records if r.get("protocol") == "equal_compression" and not is_error(r)
            and rate_of_record(r) == "macs" and num(dig(r, "macs", "macs_reduction_x")) is not None]


def macs_curves(records: Sequence[Mapping], metric: str) -> dict[str, dict[str, list[tuple]]]:
    """structure -> method -> [(target, mean MACs reduction, mean metric, mean input scale, seeds)],
    sorted by target."""
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for rec in macs_records(records):
        groups[(structure_of(rec), method_label(rec), num(dig(rec, "target", "rate")))].append(rec)
    out: dict[str, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for (structure, method, rate), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0.0)):
        x = mean_of(recs, lambda r: num(dig(r, "macs", "macs_reduction_x")))
        y = mean_of(recs, lambda r: num(dig(r, "metrics", metric)))
        if x is None or y is None:
            continue
        scale = mean_of(recs, lambda r: num(dig(r, "macs", "input_scale")))
        out[structure][method].append((rate, x, y, scale, recs))
    return {s: dict(m) for s, m in out.items()}


def macs_section(records: Sequence[Mapping], metric: str, dense_mean: float | None, base: str, title: str
                 ) -> tuple[list[str], bytes | None]:
    """The page's section (a table and the plot) and the plot's PNG; nothing for suites
    without MACs targets."""
    curves = macs_curves(records, metric)
    if not curves:
        return [], None
    from .plots import macs_png

    rows = []
    for structure, methods in curves.items():
        for method, points in methods.items():
            for rate, x, _, scale, recs in points:
                value = over_seeds(recs, lambda r: num(dig(r, "metrics", metric)))
                rows.append([structure, method, f"{sig(rate, trim=True)}×" if rate is not None else DASH,
                             f"{sig(x)}×", DASH if scale is None else sig(scale), sd_cell(value, acc2), str(len(recs))])
    png = macs_png(title, curves, metric, dense_mean)
    lines = ["## Compute against accuracy (MACs targets)", "",
             f"Equal compression with the rates as MACs reductions: {metric} (mean over seeds) against the MACs "
             "reduction the harness counted (dense MACs / compressed MACs per sample, at the input resolution the "
             "model was evaluated at; input scale 1: the suite's resolution), one line per method.", ""]
    if png is not None:
        lines += [f"![{metric} against MACs reduction]({base}-macs.png)", ""]
    lines += table(["Structure", "Method", "Target", "MACs reduction (counted)", "Input scale", f"{metric} (mean ± SD)",
                    "Seeds"], "lllrrrr", rows) + [""]
    return lines, png
