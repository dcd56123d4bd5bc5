"""Evaluate the decision rule of suites/reproduction/slr_vs_admm_prereg.yaml from the
committed records, exactly as the suite's header fixed it before the run:

  at unstructured 64x, seeds 0-2, hard-pruned top-1 after each of epochs 2 to 6
  (admm: method_info.residuals[i].hard_prune, slr: method_info.iterations[i].hard_prune,
  iteration i ends epoch i + 1);
  HOLDS if slr's is higher than admm's at every one of those epochs in 3 of 3 seeds;
  CONTRADICTED if admm's is at least as high in 2 of 3 seeds at the majority (3 of 5)
  of those epochs; otherwise INCONCLUSIVE.

    python benchmarks/prereg_decision.py [--results results] [--out leaderboards/slr-vs-admm-prereg-decision.md]

Prints the per-epoch table and the outcome; with --out writes them as markdown
(regenerated from the records, never edited by hand).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUITE = "slr-vs-admm-prereg"
RATE, SEEDS, EPOCHS = 64.0, (0, 1, 2), (2, 3, 4, 5, 6)


def hard_pruned_by_epoch(record: dict) -> dict[int, float]:
    info = record["method_info"]
    steps = info["residuals"] if record["method"]["name"] == "admm" else info["iterations"]
    return {i + 1: s["hard_prune"]["top1"] for i, s in enumerate(steps) if isinstance(s.get("hard_prune"), dict)}


def load(results: Path) -> dict[tuple[str, int], dict[int, float]]:
    out = {}
    for f in sorted((results / SUITE).glob("*.json")):
        r = json.loads(f.read_text())
        if r.get("status") != "passed" or r["target"]["rate"] != RATE or r["method"]["name"] not in ("admm", "slr"):
            continue
        out[(r["method"]["name"], r["seed"])] = hard_pruned_by_epoch(r)
    return out


def decide(curves: dict[tuple[str, int], dict[int, float]]) -> tuple[str, list[str]]:
    missing = [f"{m} seed {s}" for m in ("admm", "slr") for s in SEEDS if (m, s) not in curves]
    if missing:
        return "NOT YET DECIDABLE (missing: " + ", ".join(missing) + ")", []
    lines, slr_wins_all, admm_majority = [], 0, 0
    for s in SEEDS:
        a, b = curves[("admm", s)], curves[("slr", s)]
        slr_higher = [b[e] > a[e] for e in EPOCHS]
        admm_ok = [a[e] >= b[e] for e in EPOCHS]
        slr_wins_all += all(slr_higher)
        admm_majority += sum(admm_ok) >= 3
        lines.append(f"| {s} | " + " | ".join(f"{b[e]:.1f} / {a[e]:.1f}" for e in EPOCHS)
                     + f" | {sum(slr_higher)} of 5 | {sum(admm_ok)} of 5 |")
    if slr_wins_all == 3:
        outcome = "HOLDS (slr higher at every epoch 2-6 in 3 of 3 seeds)"
    elif admm_majority >= 2:
        outcome = f"CONTRADICTED (admm at least as high at the majority of epochs 2-6 in {admm_majority} of 3 seeds)"
    else:
        outcome = f"INCONCLUSIVE (slr higher at every epoch in {slr_wins_all} of 3 seeds; admm at the majority in {admm_majority})"
    return outcome, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    curves = load(args.results)
    outcome, rows = decide(curves)
    text = [f"# {SUITE}: the pre-registered decision", "",
            "Rule (fixed in suites/reproduction/slr_vs_admm_prereg.yaml before any point ran): at unstructured "
            "64x, seeds 0-2, compare hard-pruned top-1 (%) after each of epochs 2 to 6.", "",
            f"**Outcome: {outcome}.**", ""]
    if rows:
        text += ["Hard-pruned top-1, slr / admm (same seed, same dense model):", "",
                 "| seed | " + " | ".join(f"epoch {e}" for e in EPOCHS) + " | slr higher | admm at least as high |",
                 "|---|" + "---|" * (len(EPOCHS) + 2), *rows, ""]
    text.append("Regenerated from the records by `python benchmarks/prereg_decision.py --out <file>`.")
    out = "\n".join(text) + "\n"
    print(out)
    if args.out:
        args.out.write_text(out)


if __name__ == "__main__":
    main()
