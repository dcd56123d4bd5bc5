"""Recall distortion (Good et al., arXiv 2206.02976): normalized recall balance,
the intensification ratios, the t-tests, and the report's column and plot, on
hand-computed records."""

from __future__ import annotations

import math

import pytest

from prunebench.report import render
from prunebench.report.recall import (
    HEADLINE,
    bonferroni,
    intensification_ratios,
    intensification_slope,
    mean_test,
    normalized_balance,
    paired_slope_test,
    record_slope,
    recall_section,
)


def test_papers_example():
    """Section 4's example: A = 80, recalls 90 / 70; after pruning A = 60, recalls
    70 / 50.  B̄ = ±1/8 before, ±1/6 after, so I = α = 4/3 (the raw gap B stays
    ±10 points: a formula without the division by accuracy would say 1)."""
    assert normalized_balance([90, 70], 80) == pytest.approx([1 / 8, -1 / 8])
    assert intensification_ratios([90, 70], 80, [70, 50], 60) == pytest.approx([4 / 3, 4 / 3])
    assert intensification_slope([90, 70], 80, [70, 50], 60) == pytest.approx(4 / 3)


def test_slope_weights_classes_by_their_dense_gap():
    """3 balanced classes: B̄ = (0.3, -0.1, -0.2) at A = 50 (recalls 65, 45, 40);
    after, B̄_t = (0.3, -0.3, 0) at A = 40 (recalls 52, 28, 40).
    α = (0.09 + 0.03 + 0) / (0.09 + 0.01 + 0.04) = 6/7, while the plain mean of
    the I^c (1, 3, 0) is 4/3 and the slope of raw gaps R - A is 240/350."""
    dense, after = [65, 45, 40], [52, 28, 40]
    assert intensification_ratios(dense, 50, after, 40) == pytest.approx([1.0, 3.0, 0.0])
    alpha = intensification_slope(dense, 50, after, 40)
    assert alpha == pytest.approx(6 / 7)
    assert alpha != pytest.approx(4 / 3) and alpha != pytest.approx(240 / 350)


def test_missing_classes_and_degenerate_cases():
    # a class without test samples (None) is left out of the sums; the example's α stands
    assert intensification_slope([90, None, 70], 80, [70, 55, 50], 60) == pytest.approx(4 / 3)
    assert intensification_ratios([80, 80], 80, [70, 50], 60) == [None, None]  # B̄ = 0: no ratio
    assert intensification_slope([80, 80], 80, [70, 50], 60) is None
    assert intensification_slope([90, 70], 80, [0, 0], 0) is None  # accuracy 0: undefined


def _rec(seed, dense_recall, dense_top1, recall, top1, *, method="magnitude", rate=16.0, structure="unstructured",
         protocol="equal_compression"):
    return {
        "schema": 2, "suite": "recall-demo", "suite_version": 1, "smoke": False, "task": "classification",
        "model": "m", "dataset": "d", "protocol": protocol, "point_id": f"{method}-{rate}-s{seed}",
        "method": {"name": method, "version": "1", "distribution": "prunebench", "config": {}},
        "structure": structure, "seed": seed, "dense_key": f"dense-s{seed}",
        "target": {"rate": rate, "structure": structure, "quantization": None, "layers": []},
        "status": "passed", "primary_metric": "top1",
        "metrics": {"top1": top1, "per_class_recall": recall},
        "dense_metrics": {"top1": dense_top1, "per_class_recall": dense_recall},
        "accuracy_drop": dense_top1 - top1, "achieved_rate": rate, "epochs_spent": 1.0, "budget_epochs": 1.0,
        "reference_method": "magnitude", "created": f"2026-01-01T00:00:0{seed}Z",
    }


def test_record_slope_reads_the_stored_metrics():
    assert record_slope(_rec(0, [90, 70], 80, [70, 50], 60)) == pytest.approx(4 / 3)
    rec = _rec(0, [90, 70], 80, [70, 50], 60)
    del rec["dense_metrics"]["per_class_recall"]
    assert record_slope(rec) is None
    assert record_slope({**rec, "status": "error", "metrics": None}) is None


def test_t_test_against_one_by_hand():
    """α = (1, 2): mean 1.5, SD 1/√2, SE 1/2, t = 1 on 1 df, where Student t is
    Cauchy: two-sided p = 1 - (2/π) arctan(1) = 1/2, one-sided 1/4; the 99% CI
    half-width is tan(0.495 π) x SE."""
    test = mean_test([2.0, 1.0], confidence=0.99)
    assert test.n == 2 and test.mean == pytest.approx(1.5) and test.t == pytest.approx(1.0)
    assert test.p == pytest.approx(0.5)
    assert mean_test([1.0, 2.0], alternative="greater").p == pytest.approx(0.25)
    half = math.tan(0.495 * math.pi) * 0.5
    assert (test.low, test.high) == pytest.approx((1.5 - half, 1.5 + half))
    assert test.verdict == "?"
    # α = (0.9, 1.0, 1.1): mean exactly 1, t = 0, p = 1
    assert mean_test([0.9, 1.0, 1.1]).p == pytest.approx(1.0)
    # no spread, all above 1: the CI is the point, p = 0, intensified
    tight = mean_test([1.2, 1.2, 1.2])
    assert tight.p == 0.0 and tight.verdict == ">"
    assert mean_test([0.8]).verdict is None and mean_test([0.8]).p is None
    assert bonferroni(0.02, 3) == pytest.approx(0.06) and bonferroni(0.5, 3) == 1.0


def test_paired_test_by_hand():
    """α(up) - α(magnitude) per seed = (0.2, 0.4): mean 0.3, SE 0.1, t = 3 on 1 df,
    p = 1 - (2/π) arctan(3); pairs by seed and dense model."""
    dense, d_acc = [90, 70], 80

    def after(alpha):  # after-pruning recalls at A_t = 60 giving this α: B̄_t = α B̄
        return [60 * (1 + alpha / 8), 60 * (1 - alpha / 8)]

    up = [_rec(s, dense, d_acc, after(a), 60, method="undecayed") for s, a in enumerate((1.2, 1.5))]
    mag = [_rec(s, dense, d_acc, after(a), 60) for s, a in enumerate((1.0, 1.1))]
    assert [record_slope(r) for r in up] == pytest.approx([1.2, 1.5])
    test = paired_slope_test(up, mag)
    assert test.n == 2 and test.mean == pytest.approx(0.3) and test.t == pytest.approx(3.0)
    assert test.p == pytest.approx(1 - 2 / math.pi * math.atan(3))
    # another dense model for seed 1: only seed 0 pairs
    mag[1]["dense_key"] = "other"
    assert paired_slope_test(up, mag).n == 1


def _suite_records():
    dense, d_acc = [90, 70], 80

    def after(alpha):
        return [60 * (1 + alpha / 8), 60 * (1 - alpha / 8)]

    recs = []
    for seed, (a_mag, a_up) in enumerate(((1.3, 1.1), (1.5, 1.2), (1.4, 1.3))):
        recs.append(_rec(seed, dense, d_acc, after(a_mag), 60))
        recs.append(_rec(seed, dense, d_acc, after(a_up), 60, method="undecayed"))
    return recs


def test_page_has_the_column_the_section_and_the_plot():
    out = render(_suite_records())
    page = out["recall-demo.md"]
    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = cells(next(line for line in page.splitlines() if line.startswith("| Method")))
    col = header.index(HEADLINE.label)
    rows = {cells(line)[0]: cells(line) for line in page.splitlines() if line.startswith(("| undecayed", "| magnitude"))}
    assert rows["undecayed v1"][col] == "1.20"  # mean of 1.1, 1.2, 1.3
    assert rows["magnitude v1"][col] == "1.40"
    assert "## Recall distortion" in page
    assert "recall-demo-recall.png" in page and out["recall-demo-recall.png"][:4] == b"\x89PNG"
    lines, png = recall_section(_suite_records(), "recall-demo")
    table = [line for line in lines if line.startswith("| unstructured")]
    # magnitude: α (1.3, 1.5, 1.4), mean 1.4; undecayed paired against it: (-0.2, -0.3, -0.1), mean -0.2
    assert any("magnitude v1" in line and "1.400 (3)" in line and "reference" in line for line in table)
    assert any("undecayed v1" in line and "1.200 (3)" in line and "-0.200 (n=3)" in line for line in table)
    # one rate in the family: 95% CI, p unadjusted (= scipy's one-sample t-test)
    assert any("95%" in line for line in table)


def test_no_recall_no_column_no_plot():
    recs = []
    for rec in _suite_records():
        rec = {**rec, "metrics": {"top1": rec["metrics"]["top1"]}, "dense_metrics": {"top1": 80}}
        recs.append(rec)
    out = render(recs)
    page = out["recall-demo.md"]
    assert HEADLINE.label not in page and "## Recall distortion" not in page
    assert "recall-demo-recall.png" not in out
    # detection-like records (mAP, no recalls) likewise
    det = [{**r, "task": "detection", "primary_metric": "bbox_mAP", "metrics": {"bbox_mAP": 30.0},
            "dense_metrics": {"bbox_mAP": 31.0}} for r in recs]
    out = render(det)
    assert HEADLINE.label not in out["recall-demo.md"] and "recall-demo-recall.png" not in out
