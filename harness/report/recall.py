"""Recall distortion: does compression widen or narrow the per-class recall gaps?

After Good et al., "Recall Distortion in Neural Network Pruning and the
Undecayed Pruning Algorithm" (NeurIPS 2022, arXiv 2206.02976), read from the
paper's full text (sections 4 to 6).  Computed from stored records alone:
``metrics.per_class_recall`` / ``metrics.top1`` (after compression) and
``dense_metrics.per_class_recall`` / ``dense_metrics.top1`` (before); no re-run.

The paper's definitions (section, then what is done here):

- **Normalized recall balance** (section 4): B̄^c = (R^c - A) / A for class c
  with recall R^c and accuracy A; B̄^c_t the same after pruning at ratio t.
  It is the brief's "relative recall" R^c / A minus 1.  Dividing by A rather
  than R^c keeps classes with near-zero recall from exploding.
- **Per-class intensification ratio** (section 5): I^c_t = B̄^c_t / B̄^c;
  > 1: the class's gap to accuracy widened (in its own direction).
- **Model-level intensification ratio** (section 5): α_t, the slope of the
  least-squares line B̄^c_t = α_t B̄^c over all classes, without intercept
  (zero on balanced data, their corollary 4.1.1):
  α_t = Σ_c B̄^c B̄^c_t / Σ_c (B̄^c)^2, a mean of the I^c_t weighted by
  (B̄^c)^2.  α_t > 1: intensification; < 1: de-intensification.  One α per
  (dense model, compressed model) pair, i.e. per seed here.
- **Statistical test** (section 6.2, "Confidence intervals"): the α's of
  independently trained models are independent, so E[α_t] is estimated with a
  Student-t confidence interval over models (seeds) and compared with 1:
  CI below 1 "<" (de-intensification), above 1 ">" (intensification),
  overlapping "?".  That is a one-sample t-test of H0: E[α_t] = 1 at the
  CI's level.  The paper uses 99% CIs for its 5 pruning ratios, a Bonferroni
  correction for 95% family-wide; algorithms are compared with two-sided
  paired t-tests (section 7.4, paired by the dense model), consecutive
  ratios with one-sided paired t-tests (section 7.1); reported p-values are
  multiplied by the family's size (Bonferroni).

Choices made here (not the paper's):

- Accuracy A is the record's ``top1`` (percent, like the recalls; the ratio
  does not depend on the unit).  Classes whose recall is missing before or
  after (no test samples) are left out of that record's sums.
- No α where Σ (B̄^c)^2 = 0 (every class exactly at accuracy) or A = 0.
- The family of the Bonferroni correction is the rates of one (structure,
  method) on the page: CI level 1 - 0.05/k for k rates (the paper's 99% is
  k = 5), p-values multiplied by k.
- The page's scatter plot shows the change B̄^c_t - B̄^c against B̄^c (the
  paper's figure 5 plots B̄^c_t against B̄^c): the fitted line then has
  slope α̂ - 1 and intensification reads as a rising line.  α̂ pools all
  seeds' classes in one fit, as the paper's figures do.
- Only equal-compression records (fixed rates, the paper's t) enter the
  section and the plot; the table column shows the mean α over seeds in the
  equal-compression tables (the ``{hardware}`` headline mechanism of
  :mod:`prunebench.report.cells`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from prunebench.interfaces import Headline

from .cells import DASH, dig, is_error, method_label, method_name, num, quant_label, reference_method, sig, \
    structure_of, table
from .stats import paired, seed_key

__all__ = ["RECALL_COLUMN", "HEADLINE", "FAMILY_ALPHA", "normalized_balance", "intensification_ratios",
           "intensification_slope", "pooled_slope", "balances_of", "record_slope", "has_recall", "MeanTest",
           "mean_test", "paired_slope_test", "bonferroni", "recall_section"]

#: the pseudo hardware-model name under which the α column joins the headline columns
RECALL_COLUMN = "(recall)"
HEADLINE = Headline(
    key="intensification_ratio", label="Intensification α", unit="", better="lower", rank=1000,
    note="model-level intensification ratio (Good et al., arXiv 2206.02976), mean over seeds: the slope of the "
         "per-class normalized recall balance (recall - accuracy) / accuracy after compression against before; "
         "> 1: compression widened the gaps between classes, < 1: narrowed them",
)
#: family-wide error rate of the page's tests (the paper's 95% family-wide)
FAMILY_ALPHA = 0.05


# -- the paper's measures -----------------------------------------------------------


def normalized_balance(recall: Sequence[float | None], accuracy: float) -> list[float | None] | None:
    """B̄^c = (R^c - A) / A per class (None where R^c is missing); None when A <= 0."""
    a = num(accuracy)
    if a is None or a <= 0:
        return None
    return [None if num(r) is None else (num(r) - a) / a for r in recall]


def balances_of(dense_recall: Sequence[float | None], dense_accuracy: float,
                recall: Sequence[float | None], accuracy: float) -> list[tuple[float, float]] | None:
    """(B̄^c, B̄^c_t) for the classes present before and after; None when undefined."""
    before = normalized_balance(dense_recall, dense_accuracy)
    after = normalized_balance(recall, accuracy)
    if before is None or after is None or len(before) != len(after):
        return None
    return [(b, t) for b, t in zip(before, after) if b is not None and t is not None]


def intensification_ratios(dense_recall, dense_accuracy, recall, accuracy) -> list[float | None] | None:
    """I^c_t = B̄^c_t / B̄^c per class (None where B̄^c = 0 or a recall is missing)."""
    before = normalized_balance(dense_recall, dense_accuracy)
    after = normalized_balance(recall, accuracy)
    if before is None or after is None or len(before) != len(after):
        return None
    return [None if b is None or t is None or b == 0 else t / b for b, t in zip(before, after)]


def pooled_slope(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope through the origin of y on x: Σ x y / Σ x^2 (None when Σ x^2 = 0)."""
    pairs = sorted(pairs)  # sorted + fsum: independent of input order
    den = math.fsum(x * x for x, _ in pairs)
    return None if den == 0 else math.fsum(x * y for x, y in pairs) / den


def intensification_slope(dense_recall, dense_accuracy, recall, accuracy) -> float | None:
    """α_t = Σ B̄^c B̄^c_t / Σ (B̄^c)^2, the model-level intensification ratio."""
    pairs = balances_of(dense_recall, dense_accuracy, recall, accuracy)
    return None if pairs is None else pooled_slope(pairs)


# -- records -----------------------------------------------------------------------------


def _record_pairs(rec: Mapping) -> list[tuple[float, float]] | None:
    if is_error(rec):
        return None
    recall, dense_recall = dig(rec, "metrics", "per_class_recall"), dig(rec, "dense_metrics", "per_class_recall")
    if not isinstance(recall, (list, tuple)) or not isinstance(dense_recall, (list, tuple)):
        return None
    return balances_of(dense_recall, dig(rec, "dense_metrics", "top1"), recall, dig(rec, "metrics", "top1"))


def record_slope(rec: Mapping) -> float | None:
    """The record's α (None: no per-class recall before and after, or undefined)."""
    pairs = _record_pairs(rec)
    return None if pairs is None else pooled_slope(pairs)


def has_recall(records: Iterable[Mapping]) -> bool:
    """Whether any record gives an α (classification with per-class recall)."""
    return any(record_slope(r) is not None for r in records)


# -- the test --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanTest:
    """A Student-t interval for a mean and the one-sample t-test of H0: mean = ``null``."""

    n: int
    mean: float
    sd: float | None
    confidence: float
    low: float | None
    high: float | None
    t: float | None
    #: p-value of the test (``alternative`` as asked); None for one value
    p: float | None
    null: float

    @property
    def verdict(self) -> str | None:
        """The paper's mark: "<" CI below ``null``, ">" above, "?" overlapping; None for n = 1."""
        if self.low is None or self.high is None:
            return None
        return "<" if self.high < self.null else ">" if self.low > self.null else "?"


def mean_test(values: Iterable[float], *, null: float = 1.0, confidence: float = 0.99,
              alternative: str = "two-sided") -> MeanTest | None:
    """t-based CI of E[value] at ``confidence`` and the one-sample t-test against
    ``null`` (scipy.stats.ttest_1samp); None for no values."""
    from scipy import stats

    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanTest(1, mean, None, confidence, None, None, None, None, null)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0:  # no spread: the mean is known exactly
        t = 0.0 if mean == null else math.copysign(math.inf, mean - null)
        side = {"two-sided": mean != null, "greater": mean > null, "less": mean < null}[alternative]
        p = 0.0 if side else 1.0
    else:
        res = stats.ttest_1samp(xs, null, alternative=alternative)
        t, p = float(res.statistic), float(res.pvalue)
    return MeanTest(n, mean, sd, confidence, mean - half, mean + half, t, p, null)


def paired_slope_test(mine: Iterable[Mapping], reference: Iterable[Mapping], *, confidence: float = 0.99,
                      alternative: str = "two-sided") -> MeanTest | None:
    """Paired t-test of E[α(mine)] - E[α(reference)] = 0 over runs sharing seed and
    dense model (the paper's section 7.4 pairing), with the CI of the difference."""
    diffs = paired(mine, reference, record_slope)
    return None if diffs is None else mean_test([v for _, v in diffs.values], null=0.0, confidence=confidence,
                                                alternative=alternative)


def bonferroni(p: float | None, k: int) -> float | None:
    return None if p is None else min(1.0, p * k)


# -- the page section ----------------------------------------------------------------------


def _p_cell(p: float | None) -> str:
    if p is None:
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cells(records: Sequence[Mapping]) -> dict[tuple, list[Mapping]]:
    """Equal-compression records with an α, by (structure, method, rate, quantization, budget)."""
    cells: dict[tuple, list[Mapping]] = defaultdict(list)
    for rec in records:
        rate = num(dig(rec, "target", "rate"))
        if rec.get("protocol") != "equal_compression" or rate is None or record_slope(rec) is None:
            continue
        cells[(structure_of(rec), method_label(rec), rate, quant_label(rec),
               num(rec.get("budget_epochs")) or 0.0)].append(rec)
    return dict(sorted(cells.items()))


def _target(rate: float, quant: str, budget: float, ladder: bool) -> str:
    text = f"{sig(rate, trim=True)}×" + (f" + {quant}" if quant else "")
    return text + (f", {sig(budget, trim=True)} ep" if ladder else "")


def recall_section(records: Sequence[Mapping], base: str, title: str = "") -> tuple[list[str], bytes | None]:
    """The page's "Recall distortion" section (lines) and its plot (PNG); nothing
    when no equal-compression record holds per-class recall before and after."""
    cells = _cells(records)
    if not cells:
        return [], None
    ladder = len({k[4] for k in cells}) > 1
    reference = reference_method(records)
    family: dict[tuple, int] = defaultdict(int)  # rates per (structure, method): the Bonferroni family
    for key in cells:
        family[key[:2]] += 1
    header = ["Structure", "Method", "Target", "α per seed", "α mean (n)", "CI", "p (H0: E[α] = 1)", "Verdict"]
    if reference is not None:
        header += [f"Δα vs {reference} (paired)", "p (paired)"]
    rows = []
    panels: dict[tuple, list] = defaultdict(list)
    for key, recs in cells.items():
        structure, method, rate, quant, budget = key
        k = family[key[:2]]
        conf = 1 - FAMILY_ALPHA / k
        by_seed = sorted((seed_key(r), record_slope(r)) for r in recs)
        test = mean_test([a for _, a in by_seed], confidence=conf)
        verdict = {"<": "de-intensified (< 1)", ">": "intensified (> 1)", "?": "inconclusive"}.get(
            test.verdict, "n=1")
        ci = DASH if test.low is None else f"{conf * 100:.3g}%: [{test.low:.3f}, {test.high:.3f}]"
        row = [structure, method, _target(rate, quant, budget, ladder), ", ".join(f"{a:.3f}" for _, a in by_seed),
               f"{test.mean:.3f} ({test.n})", ci, _p_cell(bonferroni(test.p, k)), verdict]
        if reference is not None:
            if method_name(recs[0]) == reference:
                row += ["reference", DASH]
            else:
                ref = [r for kk, rr in cells.items() if kk[0] == structure and kk[2:] == key[2:]
                       for r in rr if method_name(r) == reference]
                diff = paired_slope_test(recs, ref, confidence=conf)
                row += [DASH if diff is None else f"{diff.mean:+.3f} (n={diff.n})",
                        DASH if diff is None else _p_cell(bonferroni(diff.p, k))]
        rows.append(row)
        points = [pt for r in recs for pt in (_record_pairs(r) or [])]
        panels[(structure, rate, quant, budget)].append((method, [b for b, _ in points], [t - b for b, t in points],
                                                         pooled_slope(points)))
    from .plots import recall_png

    titled = [(f"{s} · {_target(rate, q, b, ladder)}", sorted(lines)) for (s, rate, q, b), lines in
              sorted(panels.items())]
    png = recall_png(title, titled)
    lines = ["## Recall distortion", "",
             "Per class, the normalized recall balance B = (recall - accuracy) / accuracy before (dense) and after "
             "compression; α = Σ B·B_t / Σ B², the model-level intensification ratio of Good et al. "
             "(arXiv 2206.02976), one per seed. α > 1: compression widened the gaps between classes (classes "
             "below accuracy fell further behind, those above pulled further ahead); α < 1: narrowed them. "
             "CI: Student t over seeds at 1 - 0.05/k for the k rates of a structure and method (Bonferroni, "
             "95% family-wide, as the paper's 99% for 5 ratios); p: one-sample t-test of E[α] = 1, and the "
             "paired t-test against the reference method (same seed, same dense model), both two-sided and "
             "multiplied by k. Equal-compression runs only.", ""]
    if png is not None:
        lines += [f"![Relative recall change vs dense relative recall]({base}-recall.png)", "",
                  "Each point is one class of one seed: x = B before, y = B after - B before; the line has "
                  "slope α̂ - 1 (α̂ fitted over all seeds' classes).", ""]
    aligns = "lllrrrrl" + ("rr" if reference is not None else "")
    lines += table(header, aligns, rows) + [""]
    return lines, png
