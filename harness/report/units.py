"""Live units per layer: where a method's allocation leaves a hidden layer narrow.

Two methods can meet the same whole-model rate while one of them leaves a
hidden layer a handful of units: its accuracy then says more about that
bottleneck than about its importance criterion, and the tables' rates do not
show it.  This section does.  For each structure, method (with the allocation
its config names) and rate, it picks the hidden layer with the smallest mean
fraction of live output units and gives its live units per budget.

A layer's units: ``whole_model.units`` where the record has it (the layers
whose units feed a consumer, so the only ones a unit can die in).  Older
records give the live rows the storage model counted on the effective model
(``compact_kept_rows``) plus the layer's ``whole_model.dead_units``; a layer
with no dead unit is then simply left out (it is fully live).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping, Sequence

from prunebench.protocols.base import labelled, rate_of_record

from .cells import DASH, budgets_of, dig, is_error, method_label, num, sig, structure_of, table

__all__ = ["allocation_note", "effective_rate_note", "live_units", "prefold_note", "units_section"]

#: a method scored at a whole-model rate this many times its target layers' rate (or 1/this) gets a note
EFFECTIVE_RATE_RATIO = 1.25


def live_units(rec: Mapping) -> dict[str, tuple[int, int]]:
    """layer -> (live units, units) for the record's hidden layers; {} when unknown."""
    whole = rec.get("whole_model") or {}
    dead = whole.get("dead_units") or {}
    units = whole.get("units")
    if isinstance(units, Mapping) and units:
        return {layer: (int(n) - int(dead.get(layer, 0)), int(n)) for layer, n in units.items()}
    storage = dig(rec, "hardware", "storage") or {}
    out = {}
    for layer, n_dead in dead.items():
        kept = num(storage.get(f"layer.{layer}.compact_kept_rows"))
        if kept is not None:
            out[layer] = (int(kept), int(kept) + int(n_dead))
    return out


def units_section(records: Sequence[Mapping]) -> list[str]:
    """The page's section; nothing when no equal-compression record lost a unit."""
    ec = [r for r in records if r.get("protocol") == "equal_compression" and not is_error(r)]
    groups: dict[tuple, list[tuple[Mapping, dict]]] = defaultdict(list)
    for rec in ec:
        rate = num(dig(rec, "target", "rate"))
        allocation = dig(rec, "method", "config", "allocation")
        key = (structure_of(rec), labelled(method_label(rec), rec), str(allocation) if allocation else DASH,
               rate if rate is not None else math.inf)
        groups[key].append((rec, live_units(rec)))
    budgets = budgets_of(ec) or [None]
    rows = []
    for (structure, method, allocation, rate), recs in sorted(groups.items()):
        if not any(live < n for _, units in recs for live, n in units.values()):
            continue
        fractions: dict[str, list[float]] = defaultdict(list)
        for _, units in recs:
            for layer, (live, n) in units.items():
                fractions[layer].append(live / n)
        layer = min(sorted(fractions), key=lambda name: sum(fractions[name]) / len(fractions[name]))
        cells = []
        for b in budgets:
            mine = [u[layer] for r, u in recs if layer in u and (b is None or num(r.get("budget_epochs")) == b)]
            cells.append(DASH if not mine else
                         f"{sig(sum(live for live, _ in mine) / len(mine), trim=True)} of {mine[0][1]}")
        rows.append([structure, method, allocation, DASH if rate == math.inf else f"{sig(rate, trim=True)}×",
                     layer, *cells])
    if not rows:
        return []
    header = ["Structure", "Method", "Allocation", "Rate", "Narrowest layer",
              *(["Live units"] if budgets == [None] else [f"{sig(b, trim=True)} ep" for b in budgets])]
    return ["## Narrowest hidden layer", "",
            "Equal compression: the hidden layer with the smallest fraction of live output units (mean over "
            "seeds; a unit is live if the effective model still computes and reads it), and its live units per "
            "budget. Rows where every unit stays live are left out. A method whose allocation leaves a layer "
            "a few units is ranked on that bottleneck as much as on its criterion: compare methods with the same "
            "allocation.", ""] + table(header, "lllll" + "r" * len(budgets), rows) + [""]


def allocation_note(records: Sequence[Mapping]) -> list[str]:
    """A note for a table whose methods allocate their budget differently (global
    against uniform): part of a gap between them is the allocation, not the
    criterion.  Nothing when all methods that name an allocation name the same one."""
    by_allocation: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        allocation = dig(rec, "method", "config", "allocation")
        if allocation and not is_error(rec):
            by_allocation[str(allocation)].add(labelled(method_label(rec), rec))
    if len(by_allocation) < 2:
        return []
    groups = "; ".join(f"{allocation}: {', '.join(sorted(methods))}"
                       for allocation, methods in sorted(by_allocation.items()))
    return [f"> Allocation differs between the methods of this table ({groups}). The same rate is met "
            "with different per-layer rates: part of a gap between the groups is the allocation, not "
            "the importance criterion (see *Narrowest hidden layer*).", ""]


def _prefold_gap(rec: Mapping, metric: str) -> float | None:
    """Points the record's trained model (removed filters' constants kept) scored above its
    effective model, for a record scored before the constant fold; None otherwise."""
    whole = rec.get("whole_model")
    if not isinstance(whole, Mapping) or "folded_constants" in whole or not whole.get("dead_units"):
        return None
    scored, nominal = num(dig(rec, "metrics", metric)), num(dig(rec, "metrics_nominal", metric))
    if scored is None or nominal is None or nominal == scored:
        return None
    return nominal - scored


def prefold_note(records: Sequence[Mapping], metric: str) -> list[str]:
    """A note for a table holding records scored before removed filters' constants were
    folded into their consumers (prunebench.dependency): their effective model was not
    the one the method fine-tuned.  Measured on the records themselves (their nominal
    metric against the scored one); nothing when no record is affected."""
    gaps: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        gap = None if is_error(rec) else _prefold_gap(rec, metric)
        if gap is not None:
            gaps[labelled(method_label(rec), rec)].append(gap)
    if not gaps:
        return []
    n = sum(len(v) for v in gaps.values())
    per_method = "; ".join(f"{m}: {len(v)}, mean {sum(v) / len(v):+.2f}, largest {max(v, key=abs):+.2f}"
                           for m, v in sorted(gaps.items()))
    return [f"> {n} record{'s' if n != 1 else ''} of this table {'were' if n != 1 else 'was'} scored before "
            "removed units' constant outputs were folded into the next layer's bias: their effective model "
            "dropped constants the method had fine-tuned with. The trained model with the constants kept "
            f"against the score shown ({metric}, points): {per_method}. They stand until re-run.", ""]


def effective_rate_note(records: Sequence[Mapping]) -> list[str]:
    """A note for an equal-compression table where a method's whole-model (effective)
    rate is far from the rate its target layers achieved: dead units took their
    consumers' weights with them, so the method is compared while holding fewer
    weights than the rate says (or more, below 1).  Per method and target rate,
    means over all its records (every budget); nothing when no method is off."""
    pairs: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    for rec in records:
        if rec.get("protocol") != "equal_compression" or is_error(rec):
            continue
        if rate_of_record(rec) != "weights":
            continue
        rate, achieved = num(dig(rec, "target", "rate")), num(rec.get("achieved_rate"))
        effective = num(dig(rec, "whole_model", "effective_rate"))
        if rate is None or achieved is None or effective is None or achieved <= 0:
            continue
        pairs[(labelled(method_label(rec), rec), rate)].append((achieved, effective))
    off: dict[str, list[str]] = defaultdict(list)
    for (method, rate), values in sorted(pairs.items()):
        achieved = sum(a for a, _ in values) / len(values)
        effective = sum(e for _, e in values) / len(values)
        ratio = effective / achieved
        if ratio >= EFFECTIVE_RATE_RATIO or ratio <= 1 / EFFECTIVE_RATE_RATIO:
            off[method].append(f"{sig(rate, trim=True)}× at {sig(effective)}×")
    if not off:
        return []
    listed = "; ".join(f"{method}: {', '.join(cells)}" for method, cells in sorted(off.items()))
    return [f"> Scored at a whole-model rate far from its target (effective rate, mean over seeds and budgets): "
            f"{listed}. Units left without inputs or readers are removed with the weights that feed and read "
            "them, so these rows hold fewer weights than their target says (more, where the effective rate is "
            "below it): read them against the *Effective* column and the Pareto plot (stored bits), not the "
            "target alone.", ""]
