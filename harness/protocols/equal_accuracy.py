"""Equal accuracy: the largest rate in [lo, hi] whose accuracy is within
``tolerance`` points of the dense model.

The search assumes accuracy falls as the rate grows (true of every method in
expectation, not of every noisy run): it checks lo, then hi, then bisects in
log space.  Every run of the search starts from the same cached dense model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence

from prunebench.config import Between, ConfigError, Ge, MinLen, NonNegativeFloat, Validated
from prunebench.report.cells import (
    DASH,
    budgets_of,
    Row,
    acc2,
    dig,
    geo_cells,
    is_error,
    method_label,
    method_name,
    num,
    paired_cell,
    quant_label,
    reference_method,
    sd_cell,
    seeds_cell,
    sig,
    signed2,
    status_cell,
    size_bits,
    headline_cell,
    headline_cells,
    headline_value,
    headlines,
    structure_of,
    table,
)
from prunebench.report.stats import geometric, mean_of, over_seeds, paired, seed_key, stat_of

from prunebench.target import RateOf, StructureName

from .base import ComparisonFigure, Protocol, RunPoint, labelled, rate_of_record, start_of
from .equal_compression import check_distinct_structures, check_expect_structures

__all__ = ["EqualAccuracy", "EqualAccuracySpec", "AccuracyExpect", "Search", "SearchStep", "SearchResult",
           "search_max_rate", "search_max_rate_rounds", "rate_found_of"]


@dataclass(frozen=True)
class Search(Validated):
    lo: Annotated[float, Ge(1)] = 2.0
    hi: float = 512.0
    #: bisection steps after the bracket checks; the rate is found within (hi/lo)^(1/2^steps)
    steps: Annotated[int, Between(0, 20)] = 6
    #: rates probed per round (1: bisection); k > 1 narrows the bracket k+1-fold per
    #: round to the same resolution as ``steps`` bisection steps, in fewer rounds
    parallel: Annotated[int, Between(1, 64)] = 1

    def __post_init__(self):
        super().__post_init__()
        if not self.lo < self.hi:
            raise ConfigError("hi", f"expected a number > lo ({self.lo:g}), got {self.hi!r}")


@dataclass(frozen=True)
class AccuracyExpect(Validated):
    min_rate: Annotated[float, Ge(1)] | None = None
    #: methods the expectation applies to (default: all)
    methods: tuple[str, ...] | None = None
    #: structures it applies to (default: all the protocol runs)
    structures: tuple[StructureName, ...] | None = None


@dataclass(frozen=True)
class EqualAccuracySpec(Validated):
    structure: Annotated[tuple[StructureName, ...], MinLen(1)]
    #: most accuracy points (percent) a compressed model may lose against the dense one
    tolerance: Annotated[float, Between(0, 100)]
    search: Search = Search()
    expect: AccuracyExpect = AccuracyExpect()
    #: where "within tolerance" is decided: ``validation`` (a split carved from the
    #: training data by the task: task.validation_fraction) or ``test``; the
    #: test metrics are reported at the rate found either way
    decide_on: Literal["test", "validation"] = "test"
    #: what the searched rate divides: ``weights`` or ``macs`` (a compute reduction, dense
    #: MACs / compressed MACs per sample; prunebench.macs)
    rate_of: RateOf = "weights"
    #: the rungs of the suite's budget ladder this protocol runs (default: every rung)
    budgets: tuple[NonNegativeFloat, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        check_distinct_structures(self.structure)
        check_expect_structures(self.expect, self.structure)


# ------------------------------------------------------------------ the search
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
    #: probe rounds (one probe per round for bisection)
    rounds: int = 0

    @property
    def best(self) -> SearchStep | None:
        """The probe at the rate found (the highest passing probe of the bracket)."""
        if self.rate_found is None:
            return None
        return next(s for s in reversed(self.trace) if s.rate == self.rate_found and s.within)


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
        return SearchResult(None, len(trace), trace, len(trace))
    if probe(hi):
        return SearchResult(hi, len(trace), trace, len(trace))
    good, bad = lo, hi
    for _ in range(steps):
        mid = math.sqrt(good * bad)
        if probe(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, len(trace), trace, len(trace))


def search_max_rate_rounds(
    run_many: Callable[[list[float]], list[SearchStep]], lo: float, hi: float, steps: int, parallel: int
) -> SearchResult:
    """The same answer as :func:`search_max_rate`, ``parallel`` probes per round.

    Round 1 probes ``parallel`` rates spaced geometrically from lo to hi (both
    included); every later round probes ``parallel`` rates inside the bracket
    [highest passing, lowest failing above it], shrinking it (parallel+1)-fold
    in log space.  Rounds stop once the bracket is at most (hi/lo)^(1/2^steps)
    wide, the resolution of ``steps`` bisection steps: over [2, 512] with 6
    steps (1.09x) and 4 probes per round that is 3 rounds (12 runs) instead
    of 8 sequential runs.  Accuracy is assumed to fall with the rate; the
    bracket's lower end is the last passing probe below the first failing one.
    """
    if not 1 <= lo < hi:
        raise ValueError(f"search needs 1 <= lo < hi, got lo={lo!r}, hi={hi!r}")
    if parallel < 2:
        raise ValueError(f"parallel search needs at least 2 probes per round, got {parallel!r}")
    resolution = (hi / lo) ** (1.0 / 2**steps)
    trace: list[SearchStep] = []
    rounds = 0

    def round_of(rates: list[float]) -> list[SearchStep]:
        nonlocal rounds
        rounds += 1
        found = run_many(rates)
        trace.extend(found)
        return found

    first = round_of([lo, *(lo * (hi / lo) ** (i / (parallel - 1)) for i in range(1, parallel - 1)), hi])
    if not first[0].within:
        return SearchResult(None, len(trace), trace, rounds)
    good, bad = lo, None
    for step in first:
        if not step.within:
            bad = step.rate
            break
        good = step.rate
    if bad is None:
        return SearchResult(hi, len(trace), trace, rounds)
    while bad / good > resolution * (1 + 1e-12):
        inner = round_of([good * (bad / good) ** (i / (parallel + 1)) for i in range(1, parallel + 1)])
        for step in inner:
            if not step.within:
                bad = step.rate
                break
            good = step.rate
    return SearchResult(good, len(trace), trace, rounds)


def _trace_entry(step: SearchStep, metric: str, decide_on: str, round_: int | None) -> dict:
    """One probe as recorded: the decided value under the metric's name (test, as
    before validation existed) or ``validation_<metric>`` plus the test value."""
    if decide_on == "validation":
        entry = {"rate": step.rate, f"validation_{metric}": step.metric,
                 metric: step.payload["metrics"][metric], "within": step.within}
    else:
        entry = {"rate": step.rate, metric: step.metric, "within": step.within}
    if round_ is not None:
        entry["round"] = round_
    return entry


def _numbered_rounds(trace: list[SearchStep], parallel: int):
    """(round, step) pairs: every round holds ``parallel`` probes."""
    return [(1 + i // parallel, step) for i, step in enumerate(trace)]


# ---------------------------------------------------------------- the protocol
def rate_found_of(rec: Mapping) -> float | None:
    return num(dig(rec, "search", "rate_found"))


class EqualAccuracy(Protocol):
    name = "equal_accuracy"
    title = "Equal accuracy"
    Spec = EqualAccuracySpec
    order = 1
    header = (("Method", "{budget}", "Rate found (geometric mean)", "Rate 95% CI", "Rate per seed", "{metric} at rate (mean ± SD)",
               "Δ vs dense (pts, mean ± SD)", "Rate vs {reference} (paired ratio, 95% CI)", "{hardware}",
               "Search runs", "Seeds with a rate", "Epochs (search total)", "Status"), "lrrrrrrrrrrrl")
    marker, filled, joined = "s", False, False

    def points(self, method: str, seeds: Sequence[int]) -> list[RunPoint]:
        return [RunPoint(self.name, method, structure, None, seed) for structure in self.spec.structure for seed in seeds]

    def identity(self, point: RunPoint) -> dict:
        s = self.spec
        search = {"lo": s.search.lo, "hi": s.search.hi, "steps": s.search.steps, "tolerance": s.tolerance}
        if s.decide_on != "test":  # decided elsewhere: another answer
            search["decide_on"] = s.decide_on
        if s.search.parallel > 1:  # another algorithm, another answer within the same resolution
            search["parallel"] = s.search.parallel
        return {"rate": None, "search": search, **self.rate_of_identity()}

    def run(self, point, compress, dense_value, metric) -> dict:
        from prunebench.records import SearchSummary

        spec = self.spec

        if spec.decide_on == "validation":
            reference = compress.dense_metrics("validation")[metric]

            def decided(out: dict) -> float:
                return out["validation_metrics"][metric]
        else:
            reference = dense_value

            def decided(out: dict) -> float:
                return out["metrics"][metric]

        def step_of(rate: float, out: dict) -> SearchStep:
            value = decided(out)
            return SearchStep(rate, value, reference - value <= spec.tolerance + 1e-9, out)

        k = spec.search.parallel
        if k == 1:
            result = search_max_rate(lambda rate: step_of(rate, compress(rate)), spec.search.lo, spec.search.hi,
                                     spec.search.steps)
        else:
            many = getattr(compress, "many", None) or (lambda rates: [compress(r) for r in rates])
            result = search_max_rate_rounds(lambda rates: [step_of(r, out) for r, out in zip(rates, many(rates))],
                                            spec.search.lo, spec.search.hi, spec.search.steps, k)
        chosen = result.best if result.best is not None else result.trace[0]
        return {
            **chosen.payload,
            "search": SearchSummary(
                lo=spec.search.lo, hi=spec.search.hi, steps=spec.search.steps,
                tolerance=spec.tolerance, runs=result.runs, rate_found=result.rate_found,
                trace=[_trace_entry(s, metric, spec.decide_on, r if k > 1 else None)
                       for r, s in _numbered_rounds(result.trace, k)],
            ),
            "epochs_spent_total": sum(s.payload["epochs_spent"] for s in result.trace),
        }

    def check(self, expect, point, record) -> list[str]:
        found = record.search.rate_found
        if expect.min_rate is not None and (found is None or found < expect.min_rate):
            shown = "no rate in the search range" if found is None else f"{found:.3g}x"
            return [
                f"rate within {record.search.tolerance:g} points: target >= {expect.min_rate:g}x, "
                f"achieved {shown} after {record.search.runs} runs"
            ]
        return []

    @classmethod
    def hardware_columns(cls, records: Sequence[Mapping]) -> list:
        return headlines(records, primary_only=True)

    @classmethod
    def table_header(cls, records: Sequence[Mapping], metric: str) -> tuple[list[str], str]:
        names, aligns = super().table_header(records, metric)
        if records and all(rate_of_record(r) == "macs" for r in records):  # the rates are compute reductions
            names = [n.replace("Rate found", "MACs reduction found").replace("Rate ", "MACs reduction ", 1)
                     if n.startswith("Rate") else n for n in names]
        return names, aligns

    @classmethod
    def rows(cls, records: Sequence[Mapping], metric: str, structure: str) -> list[Row]:
        columns = cls.hardware_columns(records)
        groups: dict[tuple, list[Mapping]] = defaultdict(list)
        for rec in records:
            groups[(labelled(method_label(rec), rec), quant_label(rec), num(rec.get("budget_epochs")) or 0.0,
                    rate_of_record(rec))].append(rec)
        ladder = len(budgets_of(records)) > 1
        reference = reference_method(records)
        mixed = len({rate_of_record(r) for r in records}) > 1
        rows = []
        for (method, quant, budget, quantity), recs in groups.items():
            valid = [r for r in recs if not is_error(r)]
            errors = len(recs) - len(valid)
            found = [r for r in valid if rate_found_of(r) is not None]
            missing = len(valid) - len(found)
            rate = geometric(over_seeds(found, rate_found_of))  # rates compose by ratio
            value = over_seeds(found, lambda r: num(dig(r, "metrics", metric)))
            delta = over_seeds(found, lambda r: None if num(r.get("accuracy_drop")) is None else -num(r["accuracy_drop"]))
            runs = mean_of(valid, lambda r: num(dig(r, "search", "runs")))
            # a search spends epochs on every probe: show its total when recorded
            epochs = mean_of(valid, lambda r: num(r.get("epochs_spent_total", r.get("epochs_spent"))))
            rate_mean, rate_ci = geo_cells(rate)
            label = f"{method} + {quant}" if quant else method
            if mixed and quantity != "weights":  # a table of one quantity says so in its header
                label = f"{label} ({'MACs' if quantity == 'macs' else quantity} rate)"
            cells = [label, *([sig(budget, trim=True)] if ladder else []),
                     rate_mean, rate_ci,
                     seeds_cell(over_seeds(found, rate_found_of), lambda v: sig(v), missing),
                     sd_cell(value, acc2), sd_cell(delta, signed2, acc2)]
            if reference is not None:
                if method_name(valid[0] if valid else recs[0]) == reference:
                    cells.append("reference")
                else:
                    start = start_of(valid[0] if valid else recs[0])
                    ref = [r for r in records if not is_error(r) and method_name(r) == reference
                           and start_of(r) == start and rate_of_record(r) == quantity and quant_label(r) == quant and (num(r.get("budget_epochs")) or 0.0) == budget]
                    cells.append(paired_cell(paired(found, ref, rate_found_of, log=True), sig, log=True))
            cells += [*headline_cells(found, columns), DASH if runs is None else sig(runs, trim=True),
                      f"{len(found)} of {len(valid)}", DASH if epochs is None else sig(epochs, trim=True),
                      status_cell(valid, errors)]
            # rows where every seed found a rate first, then the highest rate
            sort_key = (budget, 0 if found and not missing else 1, -rate.mean if rate else math.inf, method, quant)
            rows.append(Row(method, structure, cls.name, cells, sort_key,
                            stat_of(found, lambda r: num(dig(r, "metrics", metric))), mean_of(found, size_bits)))
        rows.sort(key=lambda r: r.sort_key)
        return rows

    @classmethod
    def notes(cls, records: Sequence[Mapping]) -> list[str]:
        line = cls._search_line(records)
        return [line, ""] if line else []

    @staticmethod
    def _search_line(records: Sequence[Mapping]) -> str | None:
        specs = set()
        for rec in records:
            s = rec.get("search")
            if isinstance(s, Mapping):
                specs.add((num(s.get("lo")), num(s.get("hi")), num(s.get("tolerance"))))
        if not specs:
            return None

        def one(lo, hi, tol):
            rng = f"[{sig(lo, trim=True) if lo is not None else '?'}×, {sig(hi, trim=True) if hi is not None else '?'}×]"
            within = f"within {sig(tol, trim=True)} pts of dense" if tol is not None else "tolerance unknown"
            return f"highest rate in {rng} {within}"

        ordered = sorted(specs, key=lambda t: tuple(math.inf if v is None else v for v in t))
        return "Search: " + "; ".join(one(*s) for s in ordered) + "."

    @classmethod
    def sections(cls, records: Sequence[Mapping]) -> list[str]:
        """Non-structured vs structured at equal accuracy, storage incl. index (the
        comparison of ADMM-NN-S): one row per method, one column pair per structure."""
        ea = [r for r in records if r.get("protocol") == "equal_accuracy" and not is_error(r)]
        structures = sorted({structure_of(r) for r in ea}, key=lambda s: (s != "unstructured", s))
        if "unstructured" not in structures or len(structures) < 2:
            return []
        primary = headlines(ea, primary_only=True)
        if not primary:
            return []
        model, head = primary[0]  # the main figure of the first model that declares one
        by_method: dict[str, dict[str, list[Mapping]]] = defaultdict(lambda: defaultdict(list))
        for rec in ea:
            by_method[labelled(method_label(rec), rec)][structure_of(rec)].append(rec)
        header = ["Method"]
        for st in structures:
            header += [f"{st}: rate found", f"{st}: {head.label}"]
        header.append(f"Best {head.label} at equal accuracy")
        sign = 1.0 if head.better == "higher" else -1.0
        rows = []
        for method in sorted(by_method):
            cells = [method]
            best, best_v = DASH, None
            for st in structures:
                runs = by_method[method].get(st, [])
                found = [r for r in runs if rate_found_of(r) is not None]
                value = mean_of(found, lambda r: headline_value(r, model, head))
                # rates compose by ratio: the geometric mean, as in the protocol's own table
                rate, _ = geo_cells(geometric(over_seeds(found, rate_found_of)))
                seeds_with = len({seed_key(r) for r in found})
                seeds_all = len({seed_key(r) for r in runs})
                if runs and seeds_with < seeds_all:  # "k of n" says what "(n=1)" would
                    rate = f"{rate.removesuffix(' (n=1)')} ({seeds_with} of {seeds_all} seeds)"
                cells += [rate, headline_cell(head, value)]
                if value is not None and (best_v is None or sign * value > sign * best_v):
                    best, best_v = st, value
            cells.append(best)
            rows.append(cells)
        return [
            "## Structured vs non-structured at equal accuracy",
            "",
            "The same accuracy tolerance for every structure, quantization applied, and the hardware "
            f"model's main figure ({model}: {head.label}, {head.better} is better), which for storage counts the "
            "sparse format's index: the comparison ADMM-NN-S (Ma et al., IEEE TNNLS 2022) argues any pruning "
            "result needs.",
            "",
            *table(header, "l" + "rr" * len(structures) + "l", rows),
            "",
        ]

    @classmethod
    def comparison_figures(cls, records: Sequence[Mapping], metric: str) -> list[ComparisonFigure]:
        found = [r for r in records if rate_found_of(r) is not None]
        return [ComparisonFigure("rate found", stat_of(found, rate_found_of), sig, ratio=True),
                *super().comparison_figures(records, metric)]
