"""Statistics over seeds: mean and 95% confidence interval (scipy.stats)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["Stat", "mean_ci", "t_975", "stat_of", "mean_of", "SeedStat", "summarize", "over_seeds", "geometric", "paired",
           "seed_key"]


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


# -- per seed ------------------------------------------------------------------


@dataclass(frozen=True)
class SeedStat:
    """One figure over seeds: every seed's value, the mean, the sample SD and
    the 95% CI half-width (Student t, n-1 df); SD and CI are None for one seed."""

    values: tuple[tuple[str, float], ...]
    n: int
    mean: float
    sd: float | None
    half: float | None

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.half is None else (self.mean - self.half, self.mean + self.half)


def seed_key(rec: Mapping) -> str:
    """Seeds sort as numbers where they are numbers."""
    seed = rec.get("seed")
    return f"{seed:012d}" if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else str(seed)


def summarize(pairs: Iterable[tuple[str, float]]) -> SeedStat | None:
    """``(seed, value)`` pairs to a :class:`SeedStat` (None for no values)."""
    values = tuple(sorted(pairs))
    n = len(values)
    if n == 0:
        return None
    xs = sorted(v for _, v in values)
    mean = math.fsum(xs) / n
    if n == 1:
        return SeedStat(values, 1, mean, None, None)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return SeedStat(values, n, mean, sd, t_975(n - 1) * sd / math.sqrt(n))


def over_seeds(records: Iterable[Mapping], fn) -> SeedStat | None:
    return summarize((seed_key(r), v) for r in records if (v := fn(r)) is not None)


def geometric(stat: SeedStat | None) -> SeedStat | None:
    """The same figure on a log scale, back-transformed: geometric mean, and a
    CI that multiplies and divides (for rates, which compose by ratio)."""
    if stat is None or any(v <= 0 for _, v in stat.values):
        return None
    logs = summarize((s, math.log(v)) for s, v in stat.values)
    return SeedStat(stat.values, logs.n, math.exp(logs.mean), None if logs.sd is None else math.exp(logs.sd),
                    None if logs.half is None else math.exp(logs.half))


def paired(mine: Iterable[Mapping], reference: Iterable[Mapping], fn, *, log: bool = False) -> SeedStat | None:
    """Differences ``fn(mine) - fn(reference)`` over runs sharing seed and dense
    model (the pairing removes the seed's own variation); with ``log`` the
    ratio's logarithm, so the mean back-transforms to a geometric ratio."""
    def by_pair(records):
        out = {}
        for r in records:
            v = fn(r)
            if v is not None and (not log or v > 0):
                out[(seed_key(r), str(r.get("dense_key")))] = math.log(v) if log else v
        return out

    a, b = by_pair(mine), by_pair(reference)
    return summarize((k[0], a[k] - b[k]) for k in sorted(set(a) & set(b)))
