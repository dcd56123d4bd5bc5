"""The two comparison protocols.

- ``equal_compression``: compress to each listed rate and report accuracy.
- ``equal_accuracy``: find the largest rate in [lo, hi] whose accuracy is within
  ``tolerance`` points of the dense model.

The search assumes accuracy falls as the rate grows (true of every method in
expectation, not of every noisy run): it checks lo, then hi, then bisects in
log space.  Every run of the search starts from the same cached dense model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["SearchStep", "SearchResult", "search_max_rate"]


@dataclass
class SearchStep:
    rate: float
    metric: float | None
    within: bool
    payload: Any = field(default=None, repr=False)


@dataclass
class SearchResult:
    rate_found: float | None
    runs: int
    trace: list[SearchStep]

    @property
    def best(self) -> SearchStep | None:
        passing = [s for s in self.trace if s.within]
        return max(passing, key=lambda s: s.rate) if passing else None


def search_max_rate(
    run: Callable[[float], SearchStep], lo: float, hi: float, steps: int
) -> SearchResult:
    """Largest rate r in [lo, hi] with ``run(r).within``, by geometric bisection.

    ``run`` compresses at a rate and says whether the result is within the
    tolerance.  Runs: 1 if lo already fails, 2 if hi passes, else 2 + steps.
    The answer is within a factor (hi/lo)^(1/2^steps) of the true boundary.
    """
    if not 1 <= lo < hi:
        raise ValueError(f"search needs 1 <= lo < hi, got lo={lo!r}, hi={hi!r}")
    trace: list[SearchStep] = []

    def probe(rate: float) -> bool:
        step = run(rate)
        trace.append(step)
        return step.within

    if not probe(lo):
        return SearchResult(None, len(trace), trace)
    if probe(hi):
        return SearchResult(hi, len(trace), trace)
    good, bad = lo, hi
    for _ in range(steps):
        mid = math.sqrt(good * bad)
        if probe(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, len(trace), trace)
