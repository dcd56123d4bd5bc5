"""The TuSimple metric on hand-built cases whose answers are worked out by hand.

Every case uses 10 rows, y = 100, 110, ..., 190, so a point accuracy is
(rows within threshold) / 10.  Lanes are written as x per row, -2 = no point.
Unless a test says otherwise the official (2017-07-17) revision scores.
"""

import json
import math

import pytest

from prunebench.tasks.lanes.metric import (
    EARLY_2017_05,
    LaneFormatError,
    bench_files,
    bench_image,
    bench_records,
    f1_from_rates,
    lane_threshold,
    match_image,
    point_accuracy,
    read_json_lines,
)

H = list(range(100, 200, 10))  # 10 rows
N = -2


def flat(x):
    """A vertical lane (x constant, slope k = 0, threshold exactly 20 px)."""
    return [x] * 10


def approx(t):
    return pytest.approx(t, abs=1e-9)


# ------------------------------------------------------------------ thresholds


def test_vertical_lane_threshold_is_20_and_strict():
    assert lane_threshold(flat(300), H) == 20.0  # k = 0: 20 / cos(0)
    # 9 rows off by 19 (< 20, hit) and 1 row off by 20 (not < 20, miss): 9/10
    assert point_accuracy([319] * 9 + [320], flat(300), 20.0) == 0.9
    # 0.9 >= 0.85: matched; acc = 0.9 / max(min(4, 1), 1) = 0.9; FP = 1 - 1 = 0; FN = 0
    assert tuple(bench_image([[319] * 9 + [320]], [flat(300)], H)) == approx((0.9, 0.0, 0.0))
    # every row off by exactly 20: 0/10 -> FN; FP = (1 pred - 0 matched) / 1 = 1; FN = 1 / 1
    assert bench_image([flat(320)], [flat(300)], H) == approx((0.0, 1.0, 1.0))


def test_slanted_lane_widens_the_threshold():
    gt = [2 * y - 100 for y in H]  # x = 2y - 100: k = 2
    # 20 / cos(arctan 2) = 20 * sqrt(1 + 2^2) = 20 * sqrt(5) = 44.7214 px
    assert lane_threshold(gt, H) == pytest.approx(20 * math.sqrt(5)) == pytest.approx(44.7214, abs=1e-4)
    # k = 1 (45 degrees): 20 * sqrt(2) = 28.2843 px
    assert lane_threshold([y + 50 for y in H], H) == pytest.approx(28.2843, abs=1e-4)
    # 44 px off everywhere: 44 < 44.72 on all 10 rows -> 1.0, matched
    assert bench_image([[x + 44 for x in gt]], [gt], H) == approx((1.0, 0.0, 0.0))
    # 45 px off: 45 > 44.72 on all rows -> 0, FN, and the prediction is a FP
    assert bench_image([[x + 45 for x in gt]], [gt], H) == approx((0.0, 1.0, 1.0))
    # the same 44 px offset on a vertical lane (threshold 20) misses every row
    assert bench_image([flat(344)], [flat(300)], H) == approx((0.0, 1.0, 1.0))


def test_slope_fits_only_the_valid_points():
    # valid only on the two bottom rows (y = 180, 190): x = 300, 310 -> k = 1, threshold 28.28
    gt = [N] * 8 + [300, 310]
    assert lane_threshold(gt, H) == pytest.approx(20 * math.sqrt(2))
    pred = [N] * 8 + [325, 335]
    # 8 rows invalid in both (-100 vs -100: correct) + 2 rows off by 25 < 28.28: 10/10
    assert bench_image([pred], [gt], H) == approx((1.0, 0.0, 0.0))
    # with a 20 px threshold the two 25 px misses would leave 8/10 = 0.8 < 0.85
    assert point_accuracy(pred, gt, 20.0) == 0.8


# ---------------------------------------------------------------- few points


def test_gt_lane_with_one_valid_point_is_matched_by_an_empty_prediction():
    gt = [N] * 9 + [300]  # one valid point: no fit, k = 0, threshold 20
    assert lane_threshold(gt, H) == 20.0
    # an all -2 prediction: 9 rows both invalid (correct) + 1 miss = 0.9 >= 0.85 -> matched
    assert bench_image([[N] * 10], [gt], H) == approx((0.9, 0.0, 0.0))
    # a GT lane with no valid point at all: the empty prediction agrees on all 10 rows
    assert bench_image([[N] * 10], [[N] * 10], H) == approx((1.0, 0.0, 0.0))


def test_rows_invalid_in_both_lanes_count_as_correct():
    gt = [N] * 5 + [300] * 5
    # same support: 5 both-invalid + 5 hits = 1.0
    assert bench_image([gt], [gt], H) == approx((1.0, 0.0, 0.0))
    # prediction starts 2 rows late: 5 both-invalid + 3 hits + 2 misses (-100 vs 300) = 0.8 -> FN
    # acc 0.8 / 1; FP = (1 - 0) / 1; FN = 1 / 1
    assert bench_image([[N] * 7 + [300] * 3], [gt], H) == approx((0.8, 1.0, 1.0))
    # prediction extends above the GT: 5 misses (300 vs -100) + 5 hits = 0.5
    assert point_accuracy(flat(300), gt, 20.0) == 0.5


def test_x_zero_is_valid_and_negative_x_is_no_point():
    assert point_accuracy(flat(0), flat(0), 20.0) == 1.0  # 0 >= 0: a real point
    assert point_accuracy(flat(-1), flat(0), 20.0) == 0.0  # -1 -> -100: 100 px away from 0
    assert point_accuracy(flat(-1), flat(-2), 20.0) == 1.0  # both become -100


# --------------------------------------------------------------- FP, FN, > 4


def test_perfect_image():
    gt = [flat(300), flat(500)]
    assert bench_image(gt, gt, H) == approx((1.0, 0.0, 0.0))


def test_no_predictions():
    gt = [flat(100), flat(300), flat(500)]
    # best = [0, 0, 0]; acc 0 / 3 = 0; FP = 0 (no predictions -> 0); FN = 3 / 3 = 1
    assert bench_image([], gt, H) == approx((0.0, 0.0, 1.0))
    # no GT and no prediction: acc 0 / max(0, 1) = 0, FP 0, FN 0 / 1 = 0
    assert bench_image([], [], H) == approx((0.0, 0.0, 0.0))


def test_extra_prediction_is_a_false_positive():
    gt = [flat(300), flat(500)]
    # 2 matched; FP = 3 preds - 2 matched = 1 -> 1/3; FN 0; acc (1 + 1) / 2 = 1
    assert bench_image(gt + [flat(900)], gt, H) == approx((1.0, 1 / 3, 0.0))


def test_too_many_predictions_zero_the_image_in_the_official_revision():
    gt = [flat(300)]
    # 3 preds = 1 GT + 2: allowed; acc 1, FP = (3 - 1) / 3 = 2/3, FN 0
    assert bench_image([flat(300), flat(600), flat(700)], gt, H) == approx((1.0, 2 / 3, 0.0))
    four = [flat(300), flat(600), flat(700), flat(800)]
    # 4 preds > 1 GT + 2: the official revision scores (0, 0, 1)
    m = match_image(four, gt, H)
    assert tuple(m) == approx((0.0, 0.0, 1.0)) and m.rule == "too_many_predictions"
    # the 2017-05 revision has no such rule: acc 1, FP = (4 - 1) / 4 = 0.75, FN 0
    assert bench_image(four, gt, H, revision=EARLY_2017_05) == approx((1.0, 0.75, 0.0))


def test_more_than_four_gt_lanes():
    gt = [flat(x) for x in (100, 300, 500, 700, 900)]
    # 4 of 5 found: best [1, 1, 1, 1, 0]; FN 1 -> forgiven (5 > 4) -> 0; FP = 4 - 4 = 0
    # acc = (4 - min 0) / min(4, 5) = 1.0
    assert bench_image(gt[:4], gt, H) == approx((1.0, 0.0, 0.0))
    # 3 of 5: best [1, 1, 1, 0, 0]; FN 2 -> 1; acc = (3 - 0) / 4 = 0.75; FP 0
    # FN rate: official 1 / max(min(5, 4), 1) = 0.25; 2017-05: 1 / max(5, 1) = 0.2
    assert bench_image(gt[:3], gt, H) == approx((0.75, 0.0, 0.25))
    assert bench_image(gt[:3], gt, H, revision=EARLY_2017_05) == approx((0.75, 0.0, 0.2))
    # all 5 found: best all 1; (5 - 1) / 4 = 1.0; FN 0 stays 0
    assert bench_image(gt, gt, H) == approx((1.0, 0.0, 0.0))
    # 6 found out of 6: (6 - 1) / 4 = 1.25 - the official formula exceeds 1 here
    six = gt + [flat(1100)]
    assert bench_image(six, six, H) == approx((1.25, 0.0, 0.0))


def test_matching_is_not_one_to_one():
    gt = [flat(100), flat(110)]
    # x = 105 is 5 px from both lanes: both GT lanes take it as their best (1.0) and are matched
    m = match_image([flat(105)], gt, H)
    assert m.matched == 2 and m.best == (1.0, 1.0)
    # FP = 1 pred - 2 matched = -1 -> rate -1 / 1 = -1.0 (the official code keeps the negative)
    assert tuple(m) == approx((1.0, -1.0, 0.0))


# ---------------------------------------------------------- whole-image rules


def test_runtime_rule_is_strictly_over_200_ms():
    gt = [flat(300)]
    assert bench_image(gt, gt, H, 200.0) == approx((1.0, 0.0, 0.0))  # 200 is not > 200
    m = match_image(gt, gt, H, 201.0)
    assert tuple(m) == approx((0.0, 0.0, 1.0)) and m.rule == "runtime"
    assert bench_image(gt, gt, H, 201.0, max_runtime_ms=None) == approx((1.0, 0.0, 0.0))  # rule off


def test_wrong_length_prediction():
    gt = [flat(300)]
    short = [300] * 9
    # the official evaluator rejects the whole submission ("Format of lanes error")
    with pytest.raises(LaneFormatError, match="9 points but h_samples has 10"):
        bench_image([flat(300), short], gt, H)
    # the 2017-05 revision scores the image (0, 0, 1)
    m = match_image([flat(300), short], gt, H, revision=EARLY_2017_05)
    assert tuple(m) == approx((0.0, 0.0, 1.0)) and m.rule == "wrong_length"


def test_wrong_length_gt_is_a_data_error():
    with pytest.raises(LaneFormatError, match="GT lane 0"):
        bench_image([], [[300] * 3], H)


# ----------------------------------------------------------------- whole set


def _gt(name, lanes):
    return {"raw_file": name, "lanes": lanes, "h_samples": H}


def _pred(name, lanes, ms=5.0):
    return {"raw_file": name, "lanes": lanes, "run_time": ms}


GT_SET = [_gt("a.jpg", [flat(300), flat(500)]), _gt("b.jpg", [flat(300), flat(500)]), _gt("c.jpg", [flat(300)])]


def test_set_sums_divided_by_gt_images():
    preds = [_pred("a.jpg", [flat(300), flat(500)]),  # (1, 0, 0)
             _pred("b.jpg", []),                       # (0, 0, 1): no predictions, FN 2/2
             _pred("c.jpg", [flat(300)], ms=250.0)]    # (0, 0, 1): runtime
    r = bench_records(preds, GT_SET)
    # Accuracy (1 + 0 + 0) / 3, FP 0 / 3, FN (0 + 1 + 1) / 3
    assert (r.accuracy, r.fp, r.fn) == approx((1 / 3, 0.0, 2 / 3))
    assert r.gt_images == 3 and dict(r.zeroed) == {"runtime": 1}
    # the 2017-05 revision ignores run_time: c scores (1, 0, 0): Accuracy 2/3, FN 1/3
    early = bench_records(preds, GT_SET, revision=EARLY_2017_05)
    assert (early.accuracy, early.fp, early.fn) == approx((2 / 3, 0.0, 1 / 3))


def test_missing_and_unknown_predictions():
    preds = [_pred("a.jpg", [flat(300), flat(500)]), _pred("b.jpg", [flat(300), flat(500)])]
    with pytest.raises(LaneFormatError, match="2 predictions for 3 GT lines"):
        bench_records(preds, GT_SET)
    # 2017-05: the image without a prediction adds nothing but still divides: Accuracy 2/3, FN 0
    early = bench_records(preds, GT_SET, revision=EARLY_2017_05)
    assert (early.accuracy, early.fp, early.fn) == approx((2 / 3, 0.0, 0.0))
    unknown = preds + [_pred("zzz.jpg", [flat(300)])]
    with pytest.raises(LaneFormatError, match="not in the GT"):
        bench_records([preds[0], _pred("zzz.jpg", []), _pred("c.jpg", [])], GT_SET)  # 3 for 3, one unknown
    # 2017-05: a prediction for an image not in the GT adds 1 to the FN sum: FN 1/3
    early = bench_records(unknown, GT_SET, revision=EARLY_2017_05)
    assert (early.accuracy, early.fn) == approx((2 / 3, 1 / 3))


def test_bench_files_reads_json_lines(tmp_path):
    gt_file, pred_file = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_file.write_text("".join(json.dumps(g) + "\n" for g in GT_SET))
    preds = [_pred(g["raw_file"], g["lanes"]) for g in GT_SET]
    pred_file.write_text("".join(json.dumps(p) + "\n" for p in preds))
    r = bench_files(pred_file, gt_file)
    assert r.as_dict() == {"Accuracy": 1.0, "FP": 0.0, "FN": 0.0}
    assert r.f1 == 1.0


def test_f1_from_rates():
    # precision 0.9, recall 0.8: 2 * 0.72 / 1.7
    assert f1_from_rates(0.1, 0.2) == pytest.approx(1.44 / 1.7)
    assert f1_from_rates(1.0, 1.0) == 0.0


# ------------------------------------------------ official lane.py edge rules
#
# The final lane.py (TuSimple/tusimple-benchmark, evaluate/lane.py, 2017-07-17)
# fits each GT lane with sklearn's LinearRegression().fit(ys[:, None], xs),
# takes theta = np.arctan(coef_[0]) and threshold = 20 / np.cos(theta), and
# compares |x_pred - x_gt| < threshold and best accuracy < 0.85 (-> FN).


H20 = list(range(100, 300, 20))  # 10 rows, 20 px apart


def closed_form_threshold(xs, ys):
    """cov/var slope and math.atan/cos: NOT the official arithmetic (for contrast)."""
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    k = sum((y - my) * (x - mx) for x, y in zip(xs, ys)) / sum((y - my) ** 2 for y in ys)
    return 20.0 / math.cos(math.atan(k))


def test_slope_three_quarters_threshold_tie_hits():
    # x = 3y/4: 75, 90, ..., 210.  Exactly, k = 0.75 and 20 / cos(arctan k)
    # = 20 * 5/4 = 25.  The official fit returns k = 0.7500000000000001, so the
    # threshold is the float just above 25 and a prediction exactly 25 px off
    # hits every row; with the closed-form 25.0 it would miss every row.
    gt = [3 * y // 4 for y in H20]
    assert gt[:3] == [75, 90, 105] and gt[-1] == 210
    t = lane_threshold(gt, H20)
    assert t == 25.000000000000004 == math.nextafter(25.0, math.inf)
    assert closed_form_threshold(gt, H20) == 25.0
    pred = [x + 25 for x in gt]
    assert point_accuracy(pred, gt, t) == 1.0
    assert bench_image([pred], [gt], H20) == (1.0, 0.0, 0.0)


def test_slope_21_over_20_threshold_tie_misses():
    # x = 21y/20: 105, 126, ..., 294.  Exactly k = 1.05 and the threshold is
    # 20 * 29/20 = 29.  The official fit gives k = 1.0499999999999998 and the
    # threshold 28.999999999999996, so 29 px off misses (the closed form's
    # 29.000000000000004 would hit): 0/10 -> FN, the prediction an FP.
    gt = [21 * y // 20 for y in H20]
    t = lane_threshold(gt, H20)
    assert t == 28.999999999999996 == math.nextafter(29.0, -math.inf)
    assert closed_form_threshold(gt, H20) == 29.000000000000004
    assert bench_image([[x + 29 for x in gt]], [gt], H20) == (0.0, 1.0, 1.0)
    assert bench_image([[x + 28 for x in gt]], [gt], H20) == (1.0, 0.0, 0.0)


def test_threshold_is_sklearn_linear_regression_bit_for_bit():
    sklearn_linear_model = pytest.importorskip("sklearn.linear_model")
    import numpy as np

    def official(xs, ys):
        xs, ys = np.array(xs), np.array(ys)
        xs, ys = xs[xs >= 0], ys[xs >= 0]
        if len(xs) < 2:
            return 20 / np.cos(0)
        k = sklearn_linear_model.LinearRegression().fit(ys[:, None], xs).coef_[0]
        return 20 / np.cos(np.arctan(k))

    rows = np.arange(160, 720, 10)  # TuSimple's 56 h_samples
    rng = np.random.default_rng(15)
    lanes = [[3 * y // 4 for y in H20], [21 * y // 20 for y in H20]]
    for _ in range(400):
        k, b = rng.normal(0.0, 1.5), rng.uniform(-200.0, 1500.0)
        xs = k * rows + b
        xs = np.round(xs) if rng.random() < 0.5 else np.round(xs, 3)
        start = int(rng.integers(0, 50))
        xs[:start] = -2
        lanes.append([int(x) if float(x).is_integer() else float(x) for x in xs])
    differs = 0
    for xs in lanes:
        ys = H20 if len(xs) == len(H20) else rows
        expected = official(xs, ys)
        assert lane_threshold(xs, ys) == expected, xs
        valid = [(x, y) for x, y in zip(xs, ys) if x >= 0]
        if len(valid) >= 2:
            differs += closed_form_threshold(*zip(*valid)) != expected
    assert differs > 0  # the closed form would not pass this test


def test_match_threshold_tie_is_matched():
    rows = list(range(100, 300, 10))  # 20 rows
    gt = [300] * 20
    # 17 of 20 rows within 20 px: 17/20 == 0.85, not < 0.85 -> matched
    pred = [300] * 17 + [350] * 3
    assert point_accuracy(pred, gt, 20.0) == 0.85
    assert bench_image([pred], [gt], rows) == (0.85, 0.0, 0.0)
    # 16 of 20: 0.8 < 0.85 -> FN, and the prediction is an FP
    pred = [300] * 16 + [350] * 4
    assert bench_image([pred], [gt], rows) == (0.8, 1.0, 1.0)


def test_over_time_image_scores_without_its_gt_lanes():
    # run_time > 200 -> (0, 0, 1) before the GT lanes are looked at:
    # FN rate 1 even for an image with no GT lane ...
    assert bench_image([], [], H, 200.5) == (0.0, 0.0, 1.0)
    assert bench_image([], [], H, 200.0) == (0.0, 0.0, 0.0)  # in time: 0/1, 0, 0/1
    # ... and a malformed GT lane is never read
    bad_gt = [[300] * 3]
    m = match_image([flat(300)], bad_gt, H, 250.0)
    assert tuple(m) == (0.0, 0.0, 1.0) and m.rule == "runtime"
    with pytest.raises(LaneFormatError, match="GT lane 0"):
        bench_image([flat(300)], bad_gt, H, 150.0)
    # the predicted lanes' lengths are checked first: a late image with a short lane is an error
    with pytest.raises(LaneFormatError, match="predicted lane 0 has 3 points"):
        bench_image([[300] * 3], [flat(300)], H, 250.0)
    # in a set: the late image adds FN 1 though it has no GT lane: (0 + 1) / 2
    gts = [_gt("a.jpg", []), _gt("b.jpg", [flat(300)])]
    r = bench_records([_pred("a.jpg", [], ms=201.0), _pred("b.jpg", [flat(300)])], gts)
    assert (r.accuracy, r.fp, r.fn) == (0.5, 0.0, 0.5) and dict(r.zeroed) == {"runtime": 1}


@pytest.mark.parametrize("n_gt, n_pred, expected", [
    # len(gt) + 2 < len(pred) -> (0, 0, 1)
    (0, 3, (0.0, 0.0, 1.0)),
    (2, 5, (0.0, 0.0, 1.0)),
    # at #GT + 2 the image is scored: no GT, 2 preds: acc 0 / 1, FP 2 / 2, FN 0 / 1
    (0, 2, (0.0, 1.0, 0.0)),
    # 2 GT both found among 4 preds: acc 2/2, FP (4 - 2) / 4, FN 0
    (2, 4, (1.0, 0.5, 0.0)),
])
def test_more_predictions_than_gt_plus_two(n_gt, n_pred, expected):
    gt = [flat(100 + 200 * i) for i in range(n_gt)]
    pred = gt + [flat(1000 + 100 * i) for i in range(n_pred - n_gt)]
    assert bench_image(pred, gt, H) == expected


def test_too_many_predictions_do_not_read_the_gt_lanes():
    m = match_image([flat(300)] * 4, [[300] * 3], H)
    assert tuple(m) == (0.0, 0.0, 1.0) and m.rule == "too_many_predictions"


def test_duplicated_gt_lane():
    gt = [flat(300), flat(300)]
    # each copy takes the one prediction as its best: matched 2, FP 1 - 2 = -1 -> -1.0
    m = match_image([flat(300)], gt, H)
    assert m.matched == 2 and tuple(m) == (1.0, -1.0, 0.0)
    # with a second, unrelated prediction: FP 2 - 2 = 0
    assert bench_image([flat(300), flat(600)], gt, H) == (1.0, 0.0, 0.0)
    # no prediction near: both copies FN: 2 / 2
    assert bench_image([flat(600)], gt, H) == (0.0, 1.0, 1.0)


def test_duplicated_gt_line():
    # a.jpg listed twice in the GT: the last copy is the one scored against,
    # the count check counts 3 GT lines, the divisor counts 2 images
    gts = [_gt("a.jpg", [flat(300)]), _gt("a.jpg", [flat(500)]), _gt("b.jpg", [flat(300)])]
    with pytest.raises(LaneFormatError, match="2 predictions for 3 GT lines"):
        bench_records([_pred("a.jpg", [flat(500)]), _pred("b.jpg", [flat(300)])], gts)
    # three predictions pass the check; a.jpg is scored twice against [flat(500)]:
    # (1, 0, 0) + (0, 1, 1) + b (1, 0, 0) = (2, 1, 1), over 2 images
    preds = [_pred("a.jpg", [flat(500)]), _pred("a.jpg", [flat(300)]), _pred("b.jpg", [flat(300)])]
    r = bench_records(preds, gts)
    assert (r.accuracy, r.fp, r.fn, r.gt_images) == (1.0, 0.5, 0.5, 2)
    # the 2017-05 revision has no count check: two predictions, (1 + 1) / 2
    early = bench_records(preds[::2], gts, revision=EARLY_2017_05)
    assert (early.accuracy, early.fp, early.fn) == (1.0, 0.0, 0.0)


def test_blank_prediction_lane():
    blank = [N] * 10
    # against a lane with a point on every row a blank lane scores 0/10; it
    # still counts as a prediction: matched 1, FP (2 - 1) / 2
    assert point_accuracy(blank, flat(300), 20.0) == 0.0
    assert bench_image([flat(300), blank], [flat(300)], H) == (1.0, 0.5, 0.0)
    # against a lane with points on 2 rows it scores the 8 empty rows: 0.8 -> FN
    assert bench_image([blank], [[N] * 8 + [300, 300]], H) == (0.8, 1.0, 1.0)
    # blank lanes count towards #GT + 2: 1 GT, 4 predictions -> (0, 0, 1)
    assert bench_image([flat(300)] + [blank] * 3, [flat(300)], H) == (0.0, 0.0, 1.0)


def test_blank_line_in_either_file_rejects_the_submission(tmp_path):
    gt_file, pred_file = tmp_path / "gt.json", tmp_path / "pred.json"
    preds = [_pred(g["raw_file"], g["lanes"]) for g in GT_SET]
    gt_lines = [json.dumps(g) + "\n" for g in GT_SET]
    pred_lines = [json.dumps(p) + "\n" for p in preds]
    gt_file.write_text("".join(gt_lines))
    # every line goes to the JSON parser: a blank one (here a doubled final newline) fails
    pred_file.write_text("".join(pred_lines) + "\n")
    with pytest.raises(LaneFormatError, match="pred.json:4: blank line"):
        bench_files(pred_file, gt_file)
    pred_file.write_text(pred_lines[0] + "\n" + "".join(pred_lines[1:]))
    with pytest.raises(LaneFormatError, match="pred.json:2: blank line"):
        bench_files(pred_file, gt_file)
    pred_file.write_text("".join(pred_lines))
    gt_file.write_text("".join(gt_lines[:2]) + "  \n" + gt_lines[2])
    with pytest.raises(LaneFormatError, match="gt.json:3: blank line"):
        bench_files(pred_file, gt_file)
    # read on its own, blank lines can be skipped
    assert len(read_json_lines(gt_file, skip_blank=True)) == 3
    pred_file.write_text("{not json}\n")
    with pytest.raises(LaneFormatError, match="pred.json:1: not JSON"):
        read_json_lines(pred_file)
