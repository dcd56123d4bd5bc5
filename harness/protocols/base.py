"""What a comparison protocol is: one class that owns its suite settings, the
run points they expand to, how one point runs, its expectation check and its
leaderboard rows.

A protocol is registered under the entry-point group ``prunebench.protocols``
(the built-ins in prunebench's own ``pyproject.toml``); a suite names it under
``protocols:`` with its settings, which are parsed into ``Spec``.  The runner
and the report call only the hooks below, so a new protocol is one module plus
its registration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

__all__ = ["Protocol", "RunPoint", "Compress", "ComparisonFigure", "ordered", "start_of", "labelled", "rate_of_record"]


@dataclass(frozen=True)
class RunPoint:
    """One run of a suite: a protocol, a method, a structure, a rate (None
    when the protocol finds it), a seed, and where the model starts."""

    protocol: str
    method: str
    structure: str
    rate: float | None
    seed: int
    #: training budget in epochs when the suite lists several (``budgets:``); None: the suite's one
    budget: float | None = None
    #: where the method's model starts (the suite's ``start:``): ``dense``, the cached dense
    #: model, or ``scratch``, a fresh initialisation seeded with ``seed``
    start: str = "dense"

    @property
    def id(self) -> str:
        rate = f"-{self.rate:g}x" if self.rate is not None else ""
        budget = f"-b{self.budget:g}" if self.budget is not None else ""
        # only from-scratch points say so: the ids of prune-after-training points stay as they were
        start = f"-{self.start}" if self.start != "dense" else ""
        return f"{self.method}-{self.structure}{rate}{budget}{start}-s{self.seed}"


#: compress the point's dense model to a rate; returns the record fields of that
#: run (metrics, achieved rate, hardware figures, epochs spent, ...)
Compress = Callable[[float], dict]


@dataclass(frozen=True)
class ComparisonFigure:
    """One figure of a leaderboard cell compared between two stores."""

    what: str
    stat: Any  # prunebench.report.Stat or None
    fmt: Callable[[float], str]
    #: compared as a ratio (this / reference) rather than a difference
    ratio: bool = False


class Protocol(ABC):
    """Base class of comparison protocols (see the module docstring)."""

    #: the key under ``protocols:`` in a suite and in every record
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    #: section title on the leaderboard pages
    title: ClassVar[str]
    #: the validated settings dataclass (see prunebench.config)
    Spec: ClassVar[type]
    #: position among protocols on pages and in item order (lower first)
    order: ClassVar[int] = 100
    #: leaderboard columns ("{metric}" is filled in) and their alignment (l/r each);
    #: "{hardware}" stands for the hardware models' headline columns; a column naming
    #: "{reference}" is shown only where the suite names a reference method
    header: ClassVar[tuple[tuple[str, ...], str]]
    #: Pareto plot: marker, filled or hollow, points of a method joined by a line
    marker: ClassVar[str] = "D"
    filled: ClassVar[bool] = True
    joined: ClassVar[bool] = False

    def __init__(self, spec: Any):
        self.spec = spec

    # -- running ----------------------------------------------------------
    @abstractmethod
    def points(self, method: str, seeds: Sequence[int]) -> list[RunPoint]:
        """The run points of one method."""

    def identity(self, point: RunPoint) -> dict:
        """What, besides method, structure, seed, budget and data, makes this
        point distinct: the fields ``rate`` and ``search`` of its identity hash
        (and ``rate_of`` where the rate is not of weights)."""
        return {"rate": point.rate, "search": None, **self.rate_of_identity()}

    @property
    def rate_of(self) -> str:
        """What the protocol's rates divide: ``weights`` or ``macs`` (its spec's ``rate_of``)."""
        return getattr(self.spec, "rate_of", "weights")

    def rate_of_identity(self) -> dict:
        """``{"rate_of": ...}`` for a rate not of weights; empty otherwise, so the
        keys of weight-rate points stay as they were."""
        return {} if self.rate_of == "weights" else {"rate_of": self.rate_of}

    @abstractmethod
    def run(self, point: RunPoint, compress: Compress, dense_value: float, metric: str) -> dict:
        """Run ``point``, calling ``compress`` as often as the protocol needs;
        return the record fields (the chosen run's fields plus the protocol's)."""

    def unmet(self, point: RunPoint, record: Any) -> list[str]:
        """The point's expectations it did not meet, "target vs achieved" each."""
        expect = getattr(self.spec, "expect", None)
        if expect is None or not self.expect_applies(expect, point):
            return []
        return self.check(expect, point, record)

    def check(self, expect: Any, point: RunPoint, record: Any) -> list[str]:
        return []

    @staticmethod
    def expect_applies(expect: Any, point: RunPoint) -> bool:
        """``expect.methods`` / ``expect.structures`` restrict an expectation."""
        from prunebench.target import Structure

        if getattr(expect, "methods", None) is not None and point.method not in expect.methods:
            return False
        structures = getattr(expect, "structures", None)
        if structures is not None and str(Structure.parse(point.structure)) not in {
            str(Structure.parse(s)) for s in structures
        }:
            return False
        return True

    # -- reporting (from stored records alone) ---------------------------
    @classmethod
    @abstractmethod
    def rows(cls, records: Sequence[Mapping], metric: str, structure: str) -> list:
        """The table rows (prunebench.report.Row) of one structure's records."""

    @classmethod
    def hardware_columns(cls, records: Sequence[Mapping]) -> list:
        """The headline figures shown where the header says "{hardware}"."""
        from prunebench.report.cells import headlines

        return headlines(records)

    @classmethod
    def table_header(cls, records: Sequence[Mapping], metric: str) -> tuple[list[str], str]:
        """The table's column titles and alignments for these records."""
        from prunebench.report.cells import budgets_of, reference_method

        names, aligns = cls.header
        out_names, out_aligns = [], ""
        reference = reference_method(records)
        for name, align in zip(names, aligns):
            if name == "{hardware}":
                columns = cls.hardware_columns(records)
                out_names += [h.label for _, h in columns]
                out_aligns += "r" * len(columns)
            elif name == "{budget}":  # a column only where the records hold several budgets
                if len(budgets_of(records)) > 1:
                    out_names.append("Budget (epochs)")
                    out_aligns += "r"
            elif "{reference}" in name:  # a column only where the suite names a reference method
                if reference is not None:
                    out_names.append(name.format(reference=reference, metric=metric))
                    out_aligns += align
            else:
                out_names.append(name.format(metric=metric))
                out_aligns += align
        return out_names, out_aligns

    @classmethod
    def notes(cls, records: Sequence[Mapping]) -> list[str]:
        """Lines printed above the protocol's table."""
        return []

    @classmethod
    def sections(cls, records: Sequence[Mapping]) -> list[str]:
        """Extra page sections after all tables, from every record of the suite."""
        return []

    @classmethod
    def cell_target(cls, record: Mapping) -> str:
        """What a leaderboard cell is keyed by besides method and structure."""
        from prunebench.report.cells import DASH, quant_label

        return quant_label(record) or DASH

    @classmethod
    def comparison_figures(cls, records: Sequence[Mapping], metric: str) -> list[ComparisonFigure]:
        """The figures of one cell compared against a reference store."""
        from prunebench.report.cells import acc2, dig, num
        from prunebench.report.stats import stat_of

        return [ComparisonFigure(metric, stat_of(records, lambda r: num(dig(r, "metrics", metric))), acc2)]


def rate_of_record(record: Mapping) -> str:
    """What a record's target rate divides: ``weights`` (also every record from before
    MACs targets) or ``macs``."""
    target = record.get("target")
    return str((target.get("rate_of") if isinstance(target, Mapping) else None) or "weights")


def start_of(record: Mapping) -> str:
    """Where a record's model started: ``dense`` (also every record from before starts
    were recorded) or ``scratch``."""
    return str(record.get("start") or "dense")


def labelled(label: str, record: Mapping) -> str:
    """A method's table label, marked when it trained from scratch: the same method from
    two starts is two rows, never one row mixing them."""
    return label if start_of(record) == "dense" else f"{label} (from {start_of(record)})"


def ordered(names) -> list[str]:
    """Protocol names in page order (each protocol's ``order``, then name);
    names no installed protocol has go last."""
    from prunebench import registry

    def key(name: str):
        try:
            return (0, registry.protocols.get(name).order, name)
        except registry.PluginError:
            return (1, 0, name)

    return sorted(set(names), key=key)
