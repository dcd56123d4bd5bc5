"""Statistics over seeds: mean and 95% confidence interval (scipy.stats)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["Stat", "mean_ci", "t_975", "stat_of", "mean_of"]


def t_975(df: int) -> float:
    """Two-sided 95% Student t quantile with ``df`` degrees of freedom (scipy.stats)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class Stat:
    n: int
    mean: float
    #: CI half-width; None for n == 1
    half: float | None


def mean_ci(values: Iterable[float]) -> Stat | None:
    """Mean and 95% CI half-width (t * s / sqrt(n)); None for no values."""
    xs = sorted(values)  # sorted + fsum: independent of input order
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n == 1:
        return Stat(1, mean, None)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return Stat(n, mean, t_975(n - 1) * math.sqrt(var) / math.sqrt(n))


def stat_of(records: Iterable[Mapping], fn) -> Stat | None:
    return mean_ci(v for v in (fn(r) for r in records) if v is not None)


def mean_of(records: Iterable[Mapping], fn) -> float | None:
    stat = stat_of(records, fn)
    return None if stat is None else stat.mean
