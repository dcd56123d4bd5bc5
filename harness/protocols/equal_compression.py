"""Equal compression: compress to each listed rate and report accuracy."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Mapping, Sequence

from prunebench.config import Between, ConfigError, Ge, MinLen, NonNegativeFloat, Validated
from prunebench.report.cells import (
    DASH,
    budgets_of,
    Row,
    acc2,
    ci_cell,
    dig,
    is_error,
    headline_cells,
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
    times,
)
from prunebench.report.stats import mean_of, over_seeds, paired, stat_of
from prunebench.target import RateOf, StructureName

from .base import Protocol, RunPoint, labelled, rate_of_record, start_of

__all__ = ["EqualCompression", "EqualCompressionSpec", "CompressionExpect", "check_distinct_structures",
           "check_expect_structures"]


def _canonical(name: str) -> str:
    from prunebench.target import Structure

    return str(Structure.parse(name))


def check_distinct_structures(structures) -> None:
    """Two spellings of one structure would run every point twice."""
    seen: dict[str, int] = {}
    for i, name in enumerate(structures):
        canon = _canonical(name)
        if canon in seen:
            j = seen[canon]
            same = "twice" if name == structures[j] else f"(structure[{j}] is {structures[j]!r}: the same structure)"
            raise ConfigError(f"structure[{i}]", f"expected distinct structures, got {name!r} {same}")
        seen[canon] = i


def check_expect_structures(expect, structures) -> None:
    """``expect.structures`` naming a structure the protocol does not run would
    switch the expectation off without a word."""
    run = {_canonical(s) for s in structures}
    for i, name in enumerate(getattr(expect, "structures", None) or ()):
        if _canonical(name) not in run:
            raise ConfigError(f"expect.structures[{i}]", f"expected one of the protocol's structures "
                                                         f"({', '.join(structures)}), got {name!r}")


@dataclass(frozen=True)
class CompressionExpect(Validated):
    #: metric points (percent): a negative drop asks for a gain
    max_accuracy_drop: Annotated[float, Between(-100, 100)] | None = None
    min_accuracy: Annotated[float, Between(0, 100)] | None = None
    #: methods the expectation applies to (default: all; random pruning is a control, not a contender)
    methods: tuple[str, ...] | None = None
    #: structures it applies to (default: all the protocol runs)
    structures: tuple[StructureName, ...] | None = None


@dataclass(frozen=True)
class EqualCompressionSpec(Validated):
    structure: Annotated[tuple[StructureName, ...], MinLen(1)]
    rates: Annotated[tuple[Annotated[float, Ge(1)], ...], MinLen(1)]
    expect: CompressionExpect = CompressionExpect()
    #: what the rates divide: ``weights`` (total / nonzero weights of the compressible
    #: layers) or ``macs`` (dense MACs / compressed MACs per sample; prunebench.macs)
    rate_of: RateOf = "weights"
    #: the rungs of the suite's budget ladder this protocol runs (default: every rung)
    budgets: tuple[NonNegativeFloat, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        check_distinct_structures(self.structure)
        # a point's id shows its rate with :g; two rates alike there are one point twice
        seen: dict[str, int] = {}
        for i, rate in enumerate(self.rates):
            label = f"{rate:g}"
            if label in seen:
                j = seen[label]
                got = f"{label} twice" if rate == self.rates[j] else f"{rate!r}, the same point ({label}x) as rates[{j}]"
                raise ConfigError(f"rates[{i}]", f"expected distinct rates, got {got}")
            seen[label] = i
        check_expect_structures(self.expect, self.structure)


class EqualCompression(Protocol):
    name = "equal_compression"
    title = "Equal compression"
    Spec = EqualCompressionSpec
    order = 0
    header = (("Method", "Target", "{budget}", "Achieved (target layers)", "Effective (whole model)", "{metric} (mean ± SD)", "{metric} 95% CI", "{metric} per seed",
               "Δ vs dense (pts, mean ± SD)", "Δ {metric} vs {reference} (paired, 95% CI)", "{hardware}", "Seeds",
               "Epochs", "Status"), "lrrrrrrrrrrrrl")
    marker, filled, joined = "o", True, True

    def points(self, method: str, seeds: Sequence[int]) -> list[RunPoint]:
        return [RunPoint(self.name, method, structure, rate, seed)
                for structure in self.spec.structure for rate in self.spec.rates for seed in seeds]

    @classmethod
    def table_header(cls, records: Sequence[Mapping], metric: str) -> tuple[list[str], str]:
        names, aligns = super().table_header(records, metric)
        if records and all(rate_of_record(r) == "macs" for r in records):  # the rates are compute reductions
            names = [{"Target": "Target (MACs reduction)",
                      "Achieved (target layers)": "Achieved (MACs reduction, harness count)"}.get(n, n) for n in names]
        return names, aligns

    def run(self, point, compress, dense_value, metric) -> dict:
        return {**compress(point.rate), "search": None}

    def check(self, expect, point, record) -> list[str]:
        metric = record.primary_metric
        out = []
        drop = record.accuracy_drop
        if expect.max_accuracy_drop is not None and drop > expect.max_accuracy_drop:
            out.append(
                f"{metric} drop: target <= {expect.max_accuracy_drop:g} points, achieved {drop:.2f} "
                f"(dense {record.dense_metrics[metric]:.2f}, compressed {record.metrics[metric]:.2f} "
                f"at {record.achieved_rate:.3g}x)"
            )
        value = record.metrics[metric]
        if expect.min_accuracy is not None and value < expect.min_accuracy:
            out.append(f"{metric}: target >= {expect.min_accuracy:g}, achieved {value:.2f}")
        return out

    @classmethod
    def rows(cls, records: Sequence[Mapping], metric: str, structure: str) -> list[Row]:
        groups: dict[tuple, list[Mapping]] = defaultdict(list)
        for rec in records:
            rate = num(dig(rec, "target", "rate"))
            groups[(labelled(method_label(rec), rec), rate if rate is not None else math.inf, quant_label(rec),
                    num(rec.get("budget_epochs")) or 0.0, rate_of_record(rec))].append(rec)
        columns = cls.hardware_columns(records)
        ladder = len(budgets_of(records)) > 1
        reference = reference_method(records)
        # a table of MACs rates says so in its header; a mixed one on each MACs cell
        mixed = len({rate_of_record(r) for r in records}) > 1

        def value_of(r):
            return num(dig(r, "metrics", metric))

        rows = []
        for (method, rate, quant, budget, quantity), recs in groups.items():
            valid = [r for r in recs if not is_error(r)]
            errors = len(recs) - len(valid)
            target = DASH if rate == math.inf else f"{sig(rate, trim=True)}×"
            if quantity != "weights" and mixed and rate != math.inf:
                target = f"{target} {'MACs' if quantity == 'macs' else quantity}"
            # the achieved column is of the rate's quantity: the harness's MACs count for a MACs target
            achieved = (lambda r: num(dig(r, "macs", "macs_reduction_x"))) if quantity == "macs" \
                else (lambda r: num(r.get("achieved_rate")))
            if quant:
                target = f"{target} + {quant}" if rate != math.inf else quant
            value = over_seeds(valid, value_of)
            delta = over_seeds(valid, lambda r: None if num(r.get("accuracy_drop")) is None else -num(r["accuracy_drop"]))
            epochs = mean_of(valid, lambda r: num(r.get("epochs_spent")))
            cells = [method, target, *([sig(budget, trim=True)] if ladder else []),
                     times(mean_of(valid, achieved)),
                     times(mean_of(valid, lambda r: num(dig(r, "whole_model", "effective_rate")))),
                     sd_cell(value, acc2), ci_cell(value, acc2), seeds_cell(value, acc2), sd_cell(delta, signed2, acc2)]
            if reference is not None:
                if method_name(valid[0] if valid else recs[0]) == reference:
                    cells.append("reference")
                else:  # the reference's runs of the same target, structure, start and seeds
                    start = start_of(valid[0] if valid else recs[0])
                    ref = [r for r in records if not is_error(r) and method_name(r) == reference
                           and start_of(r) == start and rate_of_record(r) == quantity
                           and num(dig(r, "target", "rate")) == (None if rate == math.inf else rate)
                           and quant_label(r) == quant and (num(r.get("budget_epochs")) or 0.0) == budget]
                    cells.append(paired_cell(paired(valid, ref, value_of), signed2))
            cells += [*headline_cells(valid, columns), str(len(valid)),
                      DASH if epochs is None else sig(epochs, trim=True), status_cell(valid, errors)]
            sort_key = (rate, budget, -value.mean if value else math.inf, method, quant)
            rows.append(Row(method, structure, cls.name, cells, sort_key, stat_of(valid, value_of),
                            mean_of(valid, size_bits)))
        rows.sort(key=lambda r: r.sort_key)
        return rows

    @classmethod
    def cell_target(cls, record: Mapping) -> str:
        rate = num(dig(record, "target", "rate"))
        target = DASH if rate is None else f"{sig(rate, trim=True)}×"
        quant = quant_label(record)
        return f"{target} + {quant}" if quant else target
