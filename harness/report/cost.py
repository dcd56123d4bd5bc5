"""What a suite's runs cost, from the stored records alone: compute hours per
suite version, protocol and budget, and how the runs were spread over sittings.

``Point h`` sums each record's ``wall_time_s`` times its ``torch_threads`` (the
cores it held on a CPU; one on an accelerator, shown as the device).  ``Dense h``
counts each dense model once (its ``dense_train_time_s`` under its ``dense_key``,
whichever record carries it), in the rows of the first group that used it.
A sitting is a run of records whose creation times are less than
``SITTING_GAP_S`` apart (records are written as points finish, so a pause longer
than that is a stop: a session's end, or a run started later).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable, Mapping

from tabulate import tabulate

__all__ = ["SITTING_GAP_S", "cost_rows", "cost_table", "sittings"]

#: records further apart than this belong to different sittings
SITTING_GAP_S = 1800.0


def _when(record: Mapping) -> datetime | None:
    created = record.get("created")
    try:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else None
    except ValueError:
        return None


def sittings(records: Iterable[Mapping], gap_s: float = SITTING_GAP_S) -> list[tuple[datetime, datetime, int]]:
    """(first, last, records) of each sitting, in time order."""
    times = sorted(t for t in (_when(r) for r in records) if t is not None)
    out: list[list] = []
    for t in times:
        if out and (t - out[-1][1]).total_seconds() < gap_s:
            out[-1][1] = t
            out[-1][2] += 1
        else:
            out.append([t, t, 1])
    return [tuple(s) for s in out]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cost_rows(records: Iterable[Mapping]) -> list[dict]:
    """One row per (suite, version, protocol, budget, device): points, point
    hours (core-hours on CPU), dense hours (each dense model once), and the
    sittings the points ran in."""
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for rec in records:
        budget = _number(rec.get("budget_epochs"))
        key = (str(rec.get("suite")), rec.get("suite_version"), str(rec.get("protocol")),
               budget, str(rec.get("device") or "cpu"))
        groups[key].append(rec)
    seen_dense: set[str] = set()
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1] or 0, k[2], k[3] if k[3] is not None else -1, k[4])):
        recs = sorted(groups[key], key=lambda r: str(r.get("created")))
        point_s = 0.0
        unknown = 0
        for rec in recs:
            wall = _number(rec.get("wall_time_s"))
            if wall is None:
                unknown += 1
                continue
            cores = _number(rec.get("torch_threads")) if key[4] == "cpu" else 1.0
            point_s += wall * (cores or 1.0)
        dense_s = 0.0
        for rec in recs:
            dk, t = rec.get("dense_key"), _number(rec.get("dense_train_time_s"))
            if dk and t is not None and dk not in seen_dense:
                seen_dense.add(dk)
                dense_s += t
        spans = sittings(recs)
        rows.append({
            "suite": key[0], "version": key[1], "protocol": key[2], "budget_epochs": key[3], "device": key[4],
            "points": len(recs), "point_hours": point_s / 3600, "dense_hours": dense_s / 3600,
            "points_without_time": unknown,
            "sittings": [(a.strftime("%Y-%m-%d %H:%M"), b.strftime("%H:%M"), n) for a, b, n in spans],
        })
    return rows


def cost_table(records: Iterable[Mapping]) -> str:
    """:func:`cost_rows` as a markdown table with a total line."""
    rows = cost_rows(records)
    if not rows:
        return "no records"
    table = []
    for r in rows:
        table.append([
            r["suite"], r["version"], r["protocol"], "—" if r["budget_epochs"] is None else f"{r['budget_epochs']:g}",
            r["device"], r["points"], f"{r['point_hours']:.2f}" + (f" (+{r['points_without_time']} untimed)"
                                                                 if r["points_without_time"] else ""),
            f"{r['dense_hours']:.2f}",
            "; ".join(f"{a}-{b} ({n})" for a, b, n in r["sittings"]),
        ])
    total_points = sum(r["points"] for r in rows)
    total_h = sum(r["point_hours"] + r["dense_hours"] for r in rows)
    header = ["Suite", "Version", "Protocol", "Budget (epochs)", "Device", "Points", "Point h", "Dense h",
              "Sittings (UTC, points)"]
    return (tabulate(table, header, tablefmt="pipe")
            + f"\n\n{total_points} points, {total_h:.2f} hours in all (core-hours on CPU: wall time x threads)")
