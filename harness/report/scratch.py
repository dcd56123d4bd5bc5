"""From scratch against after training (issue 16, item 7: the ClickTrain claim).

A suite with ``start: scratch`` arms trains some methods from a fresh
initialisation within their budget; the others start from the trained dense
model, whose epochs and training time count towards theirs.  This section puts
each arm's epochs since random initialisation and its wall time beside its
accuracy, per budget, so equal total epochs and equal end-to-end time can be
read off; the plot shows accuracy against both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping, Sequence

from prunebench.protocols.base import labelled, start_of

from .cells import DASH, acc2, dig, is_error, method_label, num, quant_label, sd_cell, sig, signed2, structure_of, table
from .stats import mean_of, over_seeds, stat_of

__all__ = ["scratch_arms", "scratch_section"]


def scratch_arms(records: Sequence[Mapping]) -> dict[tuple, list[Mapping]]:
    """(structure, rate, start, method label, quantization, budget) -> the seeds' records;
    empty unless some equal-compression record started from scratch."""
    ec = [r for r in records if r.get("protocol") == "equal_compression" and not is_error(r)]
    if not any(start_of(r) != "dense" for r in ec):
        return {}
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for rec in ec:
        rate = num(dig(rec, "target", "rate"))
        groups[(structure_of(rec), rate if rate is not None else math.inf, start_of(rec),
                labelled(method_label(rec), rec), quant_label(rec) or "", num(rec.get("budget_epochs")) or 0.0)].append(rec)
    return dict(sorted(groups.items()))


def scratch_section(records: Sequence[Mapping], metric: str, dense_mean: float | None, base: str, title: str
                    ) -> tuple[list[str], bytes | None]:
    """The page's section (a table and the plot) and the plot's PNG; nothing for suites
    without a from-scratch arm."""
    arms = scratch_arms(records)
    if not arms:
        return [], None
    from .plots import scratch_png

    rows, curves = [], defaultdict(lambda: defaultdict(list))
    for (structure, rate, start, method, quant, budget), recs in arms.items():
        value = over_seeds(recs, lambda r: num(dig(r, "metrics", metric)))
        delta = over_seeds(recs, lambda r: None if num(r.get("accuracy_drop")) is None else -num(r["accuracy_drop"]))
        means = {key: mean_of(recs, lambda r, k=key: num(r.get(k)))
                 for key in ("epochs_from_init", "budget_epochs", "method_wall_time_s", "end_to_end_time_s")}
        target = DASH if rate == math.inf else f"{sig(rate, trim=True)}×" + (f" + {quant}" if quant else "")
        rows.append([structure, target, method, start,
                     *[DASH if m is None else sig(m, trim=True) for m in means.values()],
                     sd_cell(value, acc2), sd_cell(delta, signed2, acc2), str(len(recs))])
        stat = stat_of(recs, lambda r: num(dig(r, "metrics", metric)))
        if stat is not None and means["epochs_from_init"] is not None:
            curves[(structure, target)][method].append((means["epochs_from_init"], means["end_to_end_time_s"], stat))
    header = ["Structure", "Target", "Method", "Start", "Epochs from init", "Budget (epochs)", "Method wall (s)",
              "End to end (s)", f"{metric} (mean ± SD)", "Δ vs dense (pts)", "Seeds"]
    png = scratch_png(title, {k: dict(v) for k, v in curves.items()}, metric, dense_mean)
    lines = [
        "## From scratch and after training: total epochs and wall time",
        "",
        "Start `scratch`: the method trained a fresh initialisation (seeded like the dense model's) within its "
        "budget; `dense`: it started from the trained dense model, whose epochs count in *Epochs from init* "
        "and whose training time (as cached) counts in *End to end*. Accuracy drops are against the dense "
        "model either way. Wall times are as measured on the machine that ran each point (two workers shared "
        "its cores), so compare them within a suite run, not across machines.",
        "",
    ]
    if png is not None:
        lines += [f"![{metric} against epochs from initialisation and end-to-end time]({base}-scratch.png)", "",
                  "One line per method and start through its budgets (mean over seeds, 95% CI); circles: from "
                  "scratch, squares: after training. Dashed line: dense baseline.", ""]
    lines += table(header, "llllrrrrrrr", rows) + [""]
    return lines, png
