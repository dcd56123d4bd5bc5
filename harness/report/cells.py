"""Reading stored records and formatting table cells: the pieces every
protocol's leaderboard rows and every page are made of."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .stats import Stat

__all__ = ["DASH", "Row", "fixed", "sig", "fmt_stat", "acc2", "signed2", "times", "cell_text", "table", "num", "dig",
           "canon", "method_label", "structure_of", "quant_label", "is_error", "order_key", "primary_metric",
           "distinct", "status_cell", "sd_cell", "ci_cell", "seeds_cell", "geo_cells", "paired_cell",
           "reference_method", "method_name", "budgets_of", "headlines", "headline_value", "headline_cell", "headline_cells", "size_bits"]

DASH = "—"


def fixed(x: float, digits: int, sign: bool = False) -> str:
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    if float(text) == 0:  # no "-0.00"
        text = f"{0.0:+.{digits}f}" if sign else f"{0.0:.{digits}f}"
    return text


def sig(x: float, figures: int = 3, trim: bool = False) -> str:
    """``figures`` significant digits without exponent (large values keep all digits)."""
    if x == 0:
        return "0"
    digits = max(0, figures - 1 - math.floor(math.log10(abs(x))))
    text = fixed(x, digits)
    if trim and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fmt_stat(stat: Stat | None, fmt, half_fmt=None) -> str:
    """``mean ± half``, or ``mean (n=1)`` for one seed; ``half_fmt`` defaults to ``fmt``."""
    if stat is None:
        return DASH
    if stat.half is None:
        return f"{fmt(stat.mean)} (n=1)"
    return f"{fmt(stat.mean)} ± {(half_fmt or fmt)(stat.half)}"


def acc2(x: float) -> str:
    return fixed(x, 2)


def signed2(x: float) -> str:
    return fixed(x, 2, sign=True)


def cell_text(value: Any) -> str:
    text = DASH if value is None or value == "" else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def table(header: Sequence[str], aligns: str, rows: Sequence[Sequence[Any]]) -> list[str]:
    """GitHub pipe table through tabulate; ``aligns`` is one of l/r per column.
    Cells are text already formatted here (numbers are not re-parsed)."""
    from tabulate import tabulate

    text = tabulate([[cell_text(c) for c in row] for row in rows], headers=[cell_text(h) for h in header],
                    tablefmt="pipe", disable_numparse=True,
                    colalign=["left" if a == "l" else "right" for a in aligns])
    return text.splitlines()


def num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def method_label(rec: Mapping) -> str:
    name = dig(rec, "method", "name") if isinstance(rec.get("method"), Mapping) else rec.get("method")
    version = dig(rec, "method", "version")
    name = str(name) if name else "?"
    return f"{name} v{version}" if version not in (None, "") else name


def structure_of(rec: Mapping) -> str:
    return str(rec.get("structure") or dig(rec, "target", "structure") or DASH)


def quant_label(rec: Mapping) -> str:
    q = dig(rec, "target", "quantization")
    if not isinstance(q, Mapping):
        return ""
    bits, scheme, levels = q.get("bits"), q.get("scheme"), q.get("levels")
    if levels:  # an explicit level set: its size says more than a bit width
        count = len(levels) if isinstance(levels, (list, tuple)) else levels
        return f"{count}-level set"
    parts = []
    if bits is not None:
        parts.append(f"{bits}-bit")
    if scheme:
        parts.append(str(scheme))
    if q.get("mode") == "qat":
        parts.append("QAT")
    return " ".join(parts) or "quantized"


def is_error(rec: Mapping) -> bool:
    return rec.get("status") == "error"


def order_key(rec: Mapping) -> tuple:
    """Deterministic age order: ``created`` then the record's canonical form."""
    return (str(rec.get("created") or ""), canon(rec))


def primary_metric(records: Sequence[Mapping]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        if rec.get("primary_metric"):
            counts[str(rec["primary_metric"])] += 1
    if not counts:
        return "metric"
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def distinct(records: Iterable[Mapping], key: str) -> str:
    values = sorted({str(r[key]) for r in records if r.get(key) not in (None, "")})
    return ", ".join(values) if values else DASH


@dataclass
class Row:
    """One table row, also one point of the Pareto plot."""

    method: str
    structure: str
    protocol: str
    cells: list
    sort_key: tuple
    metric: Stat | None
    bits: float | None


def status_cell(valid: Sequence[Mapping], n_errors: int, extra: str = "") -> str:
    parts = []
    if valid:
        met = sum(1 for r in valid if r.get("status") == "passed")
        parts.append(f"{met}/{len(valid)} met expect")
    if extra:
        parts.append(extra)
    if n_errors:
        parts.append(f"{n_errors} error{'s' if n_errors != 1 else ''}")
    return ", ".join(parts) or DASH


def times(v: float | None) -> str:
    return DASH if v is None else f"{sig(v)}×"


# -- hardware headline figures -------------------------------------------------


def headlines(records: Iterable[Mapping], role: str = "column", primary_only: bool = False) -> list[tuple[str, Any]]:
    """(hardware model name, Headline) for the models the records were scored
    with, as each installed model declares them; ordered by rank, then name.
    A model not installed here contributes nothing (its figures stay in the
    records)."""
    from prunebench import registry

    records = list(records)
    names = sorted({str(n) for r in records for n in (dig(r, "hardware") or {}) if isinstance(n, str)})
    out = []
    for name in names:
        try:
            declared = registry.hardware_models.get(name).headline
        except registry.PluginError:
            continue
        out += [(name, h) for h in declared if h.role == role and (h.primary or not primary_only)]
    out = sorted(out, key=lambda nh: (nh[1].rank, nh[0], nh[1].key))
    from . import recall  # the intensification ratio joins as a last column where records hold per-class recall

    if role == "column" and not primary_only and recall.has_recall(records):
        out.append((recall.RECALL_COLUMN, recall.HEADLINE))
    return out


def headline_value(rec: Mapping, model: str, headline: Any) -> float | None:
    from .recall import RECALL_COLUMN, record_slope

    if model == RECALL_COLUMN:  # computed from the record's recalls, not stored
        return record_slope(rec)
    value = num(dig(rec, "hardware", model, headline.key))
    return None if value is None else value * headline.scale


def headline_cell(headline: Any, value: float | None) -> str:
    if value is None:
        return DASH
    if headline.unit == "x":
        return times(value)
    if headline.unit == "%":
        return f"{sig(value)}%"
    return f"{sig(value)} {headline.unit}" if headline.unit else sig(value)


def headline_cells(records: Sequence[Mapping], columns: Sequence[tuple[str, Any]]) -> list[str]:
    """One cell per headline column: the mean over ``records``."""
    from .stats import mean_of

    return [headline_cell(h, mean_of(records, lambda r, m=m, h=h: headline_value(r, m, h))) for m, h in columns]


def size_bits(rec: Mapping) -> float | None:
    """The record's point on the Pareto plot's size axis (the declared ``size`` headline)."""
    for model, h in headlines([rec], role="size"):
        value = headline_value(rec, model, h)
        if value is not None and value > 0:
            return value
    return None


# -- statistics cells ------------------------------------------------------------


def sd_cell(stat: Any, fmt, sd_fmt=None) -> str:
    """``mean ± SD`` over seeds, or ``mean (n=1)``."""
    if stat is None:
        return DASH
    if stat.sd is None:
        return f"{fmt(stat.mean)} (n=1)"
    return f"{fmt(stat.mean)} ± {(sd_fmt or fmt)(stat.sd)}"


def ci_cell(stat: Any, fmt) -> str:
    """``[low, high]``, the 95% CI of the mean; a dash for one seed."""
    if stat is None or stat.half is None:
        return DASH
    return f"[{fmt(stat.mean - stat.half)}, {fmt(stat.mean + stat.half)}]"


def seeds_cell(stat: Any, fmt, missing: int = 0) -> str:
    """Every seed's value in seed order (a bimodal cell shows itself here);
    ``missing`` seeds that gave no value are counted after them."""
    parts = [] if stat is None else [fmt(v) for _, v in stat.values]
    if missing:
        parts.append(f"{missing} none")
    return ", ".join(parts) or DASH


def geo_cells(stat: Any) -> tuple[str, str]:
    """A geometric SeedStat as (``mean×``, ``[low×, high×]``): the CI divides
    and multiplies the geometric mean by the back-transformed half-width."""
    if stat is None:
        return DASH, DASH
    mean = times(stat.mean)
    if stat.half is None:
        return f"{mean} (n=1)", DASH
    return mean, f"[{times(stat.mean / stat.half)}, {times(stat.mean * stat.half)}]"


def paired_cell(stat: Any, fmt, *, log: bool = False) -> str:
    """A paired difference with its 95% CI: ``+0.53 [-0.20, +1.26]``; under
    ``log`` a ratio: ``1.25× [0.90×, 1.74×]``."""
    if stat is None:
        return DASH
    if log:
        def shown(v):
            return times(math.exp(v))
    else:
        shown = fmt
    if stat.half is None:
        return f"{shown(stat.mean)} (n=1)"
    return f"{shown(stat.mean)} [{shown(stat.mean - stat.half)}, {shown(stat.mean + stat.half)}] (n={stat.n})"


def reference_method(records: Iterable[Mapping]) -> str | None:
    """The method the suite names for paired comparisons (``reference_method`` in its records)."""
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        ref = rec.get("reference_method")
        if isinstance(ref, str) and ref:
            counts[ref] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else None


def method_name(rec: Mapping) -> str:
    name = dig(rec, "method", "name") if isinstance(rec.get("method"), Mapping) else rec.get("method")
    return str(name) if name else "?"


def budgets_of(records: Iterable[Mapping]) -> list[float]:
    """The distinct training budgets (epochs) of the records, ascending."""
    return sorted({b for b in (num(r.get("budget_epochs")) for r in records) if b is not None})
