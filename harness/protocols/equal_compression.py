"""Equal compression: compress to each listed rate and report accuracy."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Mapping, Sequence

from prunebench.config import Ge, Validated
from prunebench.report.cells import (
    DASH,
    Row,
    acc2,
    dig,
    fmt_stat,
    is_error,
    headline_cells,
    method_label,
    num,
    quant_label,
    sig,
    signed2,
    status_cell,
    size_bits,
    times,
)
from prunebench.report.stats import mean_of, stat_of
from prunebench.target import StructureName

from .base import Protocol, RunPoint

__all__ = ["EqualCompression", "EqualCompressionSpec", "CompressionExpect"]


@dataclass(frozen=True)
class CompressionExpect(Validated):
    max_accuracy_drop: float | None = None
    min_accuracy: float | None = None
    #: methods the expectation applies to (default: all; random pruning is a control, not a contender)
    methods: tuple[str, ...] | None = None
    #: structures it applies to (default: all the protocol runs)
    structures: tuple[StructureName, ...] | None = None


@dataclass(frozen=True)
class EqualCompressionSpec(Validated):
    structure: tuple[StructureName, ...]
    rates: tuple[Annotated[float, Ge(1)], ...]
    expect: CompressionExpect = CompressionExpect()


class EqualCompression(Protocol):
    name = "equal_compression"
    title = "Equal compression"
    Spec = EqualCompressionSpec
    order = 0
    header = (("Method", "Target", "Achieved", "{metric}", "Δ vs dense (pts)", "{hardware}", "Seeds", "Epochs",
               "Status"), "lrrrrrrrl")
    marker, filled, joined = "o", True, True

    def points(self, method: str, seeds: Sequence[int]) -> list[RunPoint]:
        return [RunPoint(self.name, method, structure, rate, seed)
                for structure in self.spec.structure for rate in self.spec.rates for seed in seeds]

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
            groups[(method_label(rec), rate if rate is not None else math.inf, quant_label(rec))].append(rec)
        rows = []
        columns = cls.hardware_columns(records)
        for (method, rate, quant), recs in groups.items():
            valid = [r for r in recs if not is_error(r)]
            errors = len(recs) - len(valid)
            target = DASH if rate == math.inf else f"{sig(rate, trim=True)}×"
            if quant:
                target = f"{target} + {quant}" if rate != math.inf else quant
            value = stat_of(valid, lambda r: num(dig(r, "metrics", metric)))
            delta = stat_of(valid, lambda r: None if num(r.get("accuracy_drop")) is None else -num(r["accuracy_drop"]))
            epochs = mean_of(valid, lambda r: num(r.get("epochs_spent")))
            cells = [
                method,
                target,
                times(mean_of(valid, lambda r: num(r.get("achieved_rate")))),
                fmt_stat(value, acc2),
                fmt_stat(delta, signed2, acc2),
                *headline_cells(valid, columns),
                str(len(valid)),
                DASH if epochs is None else sig(epochs, trim=True),
                status_cell(valid, errors),
            ]
            sort_key = (rate, -value.mean if value else math.inf, method, quant)
            rows.append(Row(method, structure, cls.name, cells, sort_key, value, mean_of(valid, size_bits)))
        rows.sort(key=lambda r: r.sort_key)
        return rows

    @classmethod
    def cell_target(cls, record: Mapping) -> str:
        rate = num(dig(record, "target", "rate"))
        target = DASH if rate is None else f"{sig(rate, trim=True)}×"
        quant = quant_label(record)
        return f"{target} + {quant}" if quant else target
