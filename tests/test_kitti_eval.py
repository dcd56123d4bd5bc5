"""KITTI 2D AP on hand-built cases whose AP was worked out by hand.

How the numbers come about (devkit rules, see prunebench.tasks.detection.kitti_eval):
the first pass collects TP scores; ``devkit_thresholds`` picks slot 0 = the
first TP and then one score each time the sampled recall (advancing 1/40 per
slot) is reached.  With N = 80 ground truth boxes, slot m (m >= 1) holds the
score of the (2m)-th TP, i.e. it samples recall m/40 exactly, and slot 0 the
1st TP.  Precision at slot m = TP/(TP+FP) among detections scoring at least
that threshold; it is made monotone from the right; empty slots are 0.
AP_R40 = 100 * sum(P[1..40]) / 40, AP_R11 = 100 * mean(P[0], P[4], .., P[40]).

Most cases below repeat one small scene over 80 images (``scene80``) with
one true car per image scored 0.99, 0.989, ... so that the numbers are the
recall-sampled values rather than the devkit's small-N artefact (see
``test_sparse_ground_truth_devkit_artefact``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from prunebench.tasks.detection.kitti_eval import (
    KittiBox,
    box_iou,
    box_overlap_own_area,
    devkit_thresholds,
    evaluate_kitti,
    flatten_kitti,
    kitti_curve,
)

LEVELS = ("easy", "moderate", "hard")
N = 80
CAR = (0.0, 0.0, 100.0, 50.0)  # 50 px high, fully visible: counts at every level
ELSEWHERE = (200.0, 0.0, 300.0, 50.0)  # no overlap with CAR


def tp_score(k: int) -> float:
    """Score of image k's true detection: distinct, descending, all in (0.9, 1)."""
    return 0.99 - 0.001 * k


def scene80(scene: Callable[[int], tuple[list[KittiBox], list[KittiBox]]]):
    gt, dets = [], []
    for k in range(N):
        g, d = scene(k)
        gt.append(g)
        dets.append(d)
    return gt, dets


def car_scene(extra_gt=(), extra_dets=()):
    """One detected car per image, plus the given extra boxes in every image."""
    return scene80(lambda k: ([KittiBox("Car", CAR), *extra_gt],
                              [KittiBox("Car", CAR, score=tp_score(k)), *extra_dets]))


def aps(results, cls="Car"):
    return {lvl: (results[cls][lvl]["AP_R40"], results[cls][lvl]["AP_R11"]) for lvl in LEVELS}


def assert_aps(results, expected: dict[str, tuple[float, float]], cls="Car"):
    got = aps(results, cls)
    for lvl, (r40, r11) in expected.items():
        assert got[lvl][0] == pytest.approx(r40, abs=1e-9), (lvl, "AP_R40", got)
        assert got[lvl][1] == pytest.approx(r11, abs=1e-9), (lvl, "AP_R11", got)


def same(r40: float, r11: float) -> dict[str, tuple[float, float]]:
    return {lvl: (r40, r11) for lvl in LEVELS}


# ----------------------------------------------------------------- overlaps


def test_box_iou_and_own_area_overlap():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 5, 5]], float)
    # inter 50 / union 150; touching edge -> 0; inside: 25 / 100
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 0.25]])
    # intersection over a's own area: 50/100, 0, 25/100
    np.testing.assert_allclose(box_overlap_own_area(a, b), [[0.5, 0.0, 0.25]])
    # a small box wholly inside a big one: IoU small, own-area overlap 1
    big = np.array([[0, 0, 100, 100]], float)
    assert box_overlap_own_area(a, big)[0, 0] == 1.0
    assert box_iou(a, big)[0, 0] == pytest.approx(0.01)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_threshold_slots_for_80_ground_truth():
    scores = [tp_score(k) for k in range(N)]
    # slot 0: 1st TP, slot m: (2m)-th TP -> TP counts 1, 2, 4, ..., 80: 41 slots
    expected = [scores[0]] + [scores[2 * m - 1] for m in range(1, 41)]
    assert devkit_thresholds(scores, N) == expected
    # N = 160 with 80 TPs: slots at TP 1, 4, 8, ..., 80 -> 21 slots
    assert devkit_thresholds(scores, 2 * N) == [scores[0]] + [scores[4 * m - 1] for m in range(1, 21)]
    with pytest.raises(ValueError, match="more true positives"):
        devkit_thresholds(scores, 10)


# ----------------------------------------------------------------- basic cases


def test_perfect_detection_is_100():
    gt, dets = car_scene()
    res = evaluate_kitti(gt, dets)
    # 80 TPs, no FP: 41 slots all with precision 1 -> 100 and 100
    assert_aps(res, same(100.0, 100.0))
    # no Pedestrian/Cyclist ground truth anywhere: None, not 0
    assert res["Pedestrian"]["moderate"] == {"AP_R40": None, "AP_R11": None}
    assert res["Cyclist"]["hard"]["AP_R11"] is None


def test_no_detections_is_0():
    gt, _ = car_scene()
    res = evaluate_kitti(gt, [[] for _ in gt])
    # no TP -> no thresholds -> every slot 0
    assert_aps(res, same(0.0, 0.0))


def test_sparse_ground_truth_devkit_artefact():
    # 1 GT, detected: 1 slot, P[0] = 1 -> R40 = 0 (slot 0 not summed), R11 = 100/11
    res = evaluate_kitti([[KittiBox("Car", CAR)]], [[KittiBox("Car", CAR, score=0.9)]])
    assert_aps(res, same(0.0, 100 / 11))


@pytest.mark.parametrize("fp_score, r40, r11", [
    # 2 GT; TP 0.9, FP 0.8, TP 0.7.  TP scores [0.9, 0.7] -> 2 slots.
    # slot 0 (>= 0.9): 1 TP / 1 det = 1; slot 1 (>= 0.7): 2 TP / 3 det = 2/3.
    # R40 = (2/3) / 40 = 1.6667 %; R11 = P[0] / 11 = 9.0909 %
    (0.8, 100 * (2 / 3) / 40, 100 / 11),
    # FP below both TPs (0.6): never above a threshold, P = [1, 1]:
    # R40 = 1/40 = 2.5 %; R11 = 1/11 = 9.0909 %
    (0.6, 100 * 1 / 40, 100 / 11),
])
def test_two_ground_truth_fp_ordering(fp_score, r40, r11):
    gt = [[KittiBox("Car", CAR)], [KittiBox("Car", CAR)]]
    dets = [[KittiBox("Car", CAR, score=0.9), KittiBox("Car", ELSEWHERE, score=fp_score)],
            [KittiBox("Car", CAR, score=0.7)]]
    assert_aps(evaluate_kitti(gt, dets), same(r40, r11))


@pytest.mark.parametrize("fp_score, r40, r11", [
    # FP above every TP: slot 0 P = 1/2, slot m P = 2m/(2m+1), increasing,
    # so the monotone P is 80/81 everywhere: R40 = R11 = 98.7654 %
    (0.999, 100 * 80 / 81, 100 * 80 / 81),
    # FP between the 40th TP (0.951) and the 41st (0.950): slots 0..20 have
    # no FP (P = 1), slots 21..40 P = 2m/(2m+1) -> monotone 80/81.
    # R40 = (20 * 1 + 20 * 80/81) / 40 = 0.5 + 40/81 = 99.3827 %
    # R11 = slots 0,4,..,20 (6 points) = 1, 24..40 (5 points) = 80/81:
    #       (6 + 5 * 80/81) / 11 = 886/891 = 99.4388 %
    (0.9505, 100 * (20 + 20 * 80 / 81) / 40, 100 * 886 / 891),
    # FP below every TP: never counted -> 100
    (0.5, 100.0, 100.0),
])
def test_one_fp_ordering_effect(fp_score, r40, r11):
    gt, dets = car_scene()
    dets[0] = dets[0] + [KittiBox("Car", ELSEWHERE, score=fp_score)]
    assert_aps(evaluate_kitti(gt, dets), same(r40, r11))


def test_recall_stopping_at_half_r11_differs_from_r40():
    # 80 GT, only the first 40 detected.  TP counts at slots: 1, 2, 4, .., 40
    # -> slots 0..20 with P = 1, slots 21..40 empty (0).
    # R40 = 20/40 = 50 %; R11 = slots 0,4,..,20 -> 6/11 = 54.5455 %
    gt, dets = car_scene()
    dets = [d if k < 40 else [] for k, d in enumerate(dets)]
    assert_aps(evaluate_kitti(gt, dets), same(50.0, 100 * 6 / 11))


# ----------------------------------------------------------------- IoU thresholds


@pytest.mark.parametrize("cls, gt_box, det_box, iou, ap", [
    # Car needs IoU > 0.7: 3500/5000 = 0.7 exactly is a miss (AP 0, no TP);
    # 3550/5000 = 0.71 is a hit (perfect, 100)
    ("Car", CAR, (0, 0, 70, 50), 0.7, 0.0),
    ("Car", CAR, (0, 0, 71, 50), 0.71, 100.0),
    # Pedestrian / Cyclist need IoU > 0.5: 500/1000 = 0.5 misses, 550/1000 hits,
    # and 0.7 (a Car miss) is a hit
    ("Pedestrian", (0, 0, 20, 50), (0, 0, 10, 50), 0.5, 0.0),
    ("Pedestrian", (0, 0, 20, 50), (0, 0, 11, 50), 0.55, 100.0),
    ("Pedestrian", (0, 0, 20, 50), (0, 0, 14, 50), 0.7, 100.0),
    ("Cyclist", (0, 0, 30, 50), (0, 0, 15, 50), 0.5, 0.0),
    ("Cyclist", (0, 0, 30, 50), (0, 0, 16, 50), 16 / 30, 100.0),
])
def test_iou_threshold_is_strict(cls, gt_box, det_box, iou, ap):
    assert box_iou(np.array([gt_box], float), np.array([det_box], float))[0, 0] == iou
    gt, dets = scene80(lambda k: ([KittiBox(cls, gt_box)], [KittiBox(cls, det_box, score=tp_score(k))]))
    assert_aps(evaluate_kitti(gt, dets, classes=(cls,)), same(ap, ap), cls=cls)


# ----------------------------------------------------------------- difficulty


@pytest.mark.parametrize("hard_gt, expected", [
    # a second, undetected car per image that fails Easy (occluded 1, or
    # 30 px high, or truncated 0.2) but counts at Moderate and Hard.
    # Easy: 80 GT, 80 TP -> 100 / 100.
    # Moderate/Hard: 160 GT, 80 TP -> slots at TP 1, 4, 8, .., 80: slots
    # 0..20 P = 1, 21..40 empty: R40 = 20/40 = 50 %, R11 = 6/11 = 54.5455 %
    (KittiBox("Car", ELSEWHERE, occluded=1),
     {"easy": (100.0, 100.0), "moderate": (50.0, 600 / 11), "hard": (50.0, 600 / 11)}),
    (KittiBox("Car", (200, 0, 300, 30)),
     {"easy": (100.0, 100.0), "moderate": (50.0, 600 / 11), "hard": (50.0, 600 / 11)}),
    (KittiBox("Car", ELSEWHERE, truncated=0.2),
     {"easy": (100.0, 100.0), "moderate": (50.0, 600 / 11), "hard": (50.0, 600 / 11)}),
    # occluded 2 (or truncated 0.4) fails Easy and Moderate, counts at Hard
    (KittiBox("Car", ELSEWHERE, occluded=2),
     {"easy": (100.0, 100.0), "moderate": (100.0, 100.0), "hard": (50.0, 600 / 11)}),
    (KittiBox("Car", ELSEWHERE, truncated=0.4),
     {"easy": (100.0, 100.0), "moderate": (100.0, 100.0), "hard": (50.0, 600 / 11)}),
    # 20 px high: below 25, ignored at every level
    (KittiBox("Car", (200, 0, 300, 20)), same(100.0, 100.0)),
])
def test_difficulty_filters_are_cumulative(hard_gt, expected):
    gt, dets = car_scene(extra_gt=[hard_gt])
    assert_aps(evaluate_kitti(gt, dets), expected)


def test_detection_on_ignored_ground_truth_is_neither_tp_nor_fp():
    # the occluded car (fails Easy) is detected, scored above every TP.
    # Easy: matched to an ignored GT -> not an FP; 80 GT, 80 TP -> 100.
    # (were it an FP, 80 FPs above all TPs would give 50, see the Truck case)
    # Moderate/Hard: 160 GT, 160 TP -> 100.
    gt, dets = car_scene(extra_gt=[KittiBox("Car", ELSEWHERE, occluded=1)])
    dets = [d + [KittiBox("Car", ELSEWHERE, score=1.5 - 0.001 * k)] for k, d in enumerate(dets)]
    assert_aps(evaluate_kitti(gt, dets), same(100.0, 100.0))


# ----------------------------------------------------------------- ignore rules


@pytest.mark.parametrize("other, cls, det_name, expected", [
    # a Car detection on a Van, scored above every TP: the Van is Car's
    # neighbour class, so the detection is neither TP nor FP -> 100
    ("Van", "Car", "Car", 100.0),
    # on a Truck (not a neighbour): 80 FPs above all 80 TPs.  Slot m holds
    # 2m TPs + 80 FPs: P = 2m/(2m+80), increasing to 80/160 = 0.5 at m = 40,
    # so the monotone P is 0.5 everywhere: R40 = R11 = 50 %
    ("Truck", "Car", "Car", 50.0),
    # Person_sitting is Pedestrian's neighbour
    ("Person_sitting", "Pedestrian", "Pedestrian", 100.0),
    ("Cyclist", "Pedestrian", "Pedestrian", 50.0),
])
def test_neighbour_class_ground_truth_is_ignored(other, cls, det_name, expected):
    box = CAR if cls == "Car" else (0.0, 0.0, 20.0, 50.0)
    far = (200.0, 0.0, 200.0 + box[2], 50.0)
    gt, dets = scene80(lambda k: (
        [KittiBox(cls, box), KittiBox(other, far)],
        [KittiBox(cls, box, score=tp_score(k)), KittiBox(det_name, far, score=1.5 - 0.001 * k)],
    ))
    assert_aps(evaluate_kitti(gt, dets, classes=(cls,)), same(expected, expected), cls=cls)


def test_detection_of_another_class_is_not_counted():
    # Pedestrian detections scored above every car do not touch Car's AP
    gt, dets = car_scene()
    dets = [d + [KittiBox("Pedestrian", ELSEWHERE, score=2.0)] for d in dets]
    assert_aps(evaluate_kitti(gt, dets), same(100.0, 100.0))


@pytest.mark.parametrize("with_dontcare, det_box, expected", [
    # det wholly inside the DontCare region: intersection/own area = 1 > 0.7
    # (its IoU with the region is only 4500/15000 = 0.3): not an FP -> 100
    (True, (200, 5, 300, 50), 100.0),
    # the same detection without the DontCare box: 80 FPs above every TP -> 50
    (False, (200, 5, 300, 50), 50.0),
    # only half inside (2500/5000 = 0.5, not > 0.7): still an FP -> 50
    (True, (350, 0, 450, 50), 50.0),
])
def test_dontcare_region_absorbs_detections(with_dontcare, det_box, expected):
    dontcare = [KittiBox("DontCare", (150, 0, 400, 60), truncated=-1, occluded=-1)] if with_dontcare else []
    gt, dets = scene80(lambda k: (
        [KittiBox("Car", CAR), *dontcare],
        [KittiBox("Car", CAR, score=tp_score(k)), KittiBox("Car", det_box, score=1.5 - 0.001 * k)],
    ))
    assert_aps(evaluate_kitti(gt, dets), same(expected, expected))


@pytest.mark.parametrize("height, expected", [
    # an unmatched Car detection scored above every TP, of height ...
    # 20 px: below 25 (and 40): ignored everywhere -> 100
    (20.0, same(100.0, 100.0)),
    # 24.9 px: just below 25: ignored -> 100
    (24.9, same(100.0, 100.0)),
    # 25 px: counted at Moderate/Hard -> 80 FPs above all TPs -> 50;
    # below Easy's 40 -> ignored there -> 100
    (25.0, {"easy": (100.0, 100.0), "moderate": (50.0, 50.0), "hard": (50.0, 50.0)}),
    # 45 px: an FP at every level -> 50
    (45.0, same(50.0, 50.0)),
])
def test_short_detections_are_ignored(height, expected):
    gt, dets = scene80(lambda k: (
        [KittiBox("Car", CAR)],
        [KittiBox("Car", CAR, score=tp_score(k)),
         KittiBox("Car", (200.0, 0.0, 300.0, height), score=1.5 - 0.001 * k)],
    ))
    assert_aps(evaluate_kitti(gt, dets), expected)


# ----------------------------------------------------------------- API


def test_curve_exposes_slots():
    gt, dets = car_scene()
    dets[0] = dets[0] + [KittiBox("Car", ELSEWHERE, score=0.999)]
    curve = kitti_curve(gt, dets, "car", "moderate")
    assert curve.n_gt == 80 and len(curve.thresholds) == 41
    # FP on top: monotone precision 80/81 in every slot; raw recall at slot m is m/40
    np.testing.assert_allclose(curve.precision, 80 / 81)
    np.testing.assert_allclose(curve.recall[1:], np.arange(1, 41) / 40)


def test_flatten_keys_and_none():
    gt, dets = car_scene()
    flat = flatten_kitti(evaluate_kitti(gt, dets))
    assert len(flat) == 3 * 3 * 2
    assert flat["Car_moderate_AP_R40"] == 100.0
    assert flat["Pedestrian_easy_AP_R11"] is None


def test_arguments_are_checked():
    gt, dets = car_scene()
    with pytest.raises(ValueError, match="80 and 79"):
        evaluate_kitti(gt, dets[:-1])
    with pytest.raises(ValueError, match="'Bus'"):
        evaluate_kitti(gt, dets, classes=("Car", "Bus"))
    with pytest.raises(ValueError, match="'medium'"):
        kitti_curve(gt, dets, "Car", "medium")
    with pytest.raises(TypeError, match="tuple"):
        evaluate_kitti([[(0, 0, 1, 1)]], [[]])
    with pytest.raises(ValueError, match="x2 >= x1"):
        KittiBox("Car", (10, 0, 5, 5))
    with pytest.raises(ValueError, match="occluded"):
        KittiBox("Car", CAR, occluded=4)


# ----------------------------------------------------------------- devkit boundaries
#
# The current devkit's cleanData (cpp/evaluate_object.cpp of the 2017 object
# devkit) ignores ground truth when occlusion > MAX_OCCLUSION, truncation >
# MAX_TRUNCATION or height <= MIN_HEIGHT, and ignores a detection when
# int(|y2 - y1|) < MIN_HEIGHT.  MIN_HEIGHT = 40/25/25, MAX_OCCLUSION = 0/1/2,
# MAX_TRUNCATION = 0.15/0.3/0.5 for easy/moderate/hard.  ``n_gt`` is the
# devkit's count of non-ignored ground truth, the recall denominator.


def counted_gt(box: KittiBox, cls: str = "Car") -> dict[str, int]:
    """How many of one image's ground truth (this box) each level counts."""
    return {lvl: kitti_curve([[box]], [[]], cls, lvl).n_gt for lvl in LEVELS}


@pytest.mark.parametrize("y1, y2, expected", [
    # exactly 25 px: 25 <= 25 -> ignored at Moderate and Hard (and Easy)
    (0.0, 25.0, {"easy": 0, "moderate": 0, "hard": 0}),
    (10.0, 35.0, {"easy": 0, "moderate": 0, "hard": 0}),
    # just above 25 px counts at Moderate and Hard
    (0.0, 25.5, {"easy": 0, "moderate": 1, "hard": 1}),
    (0.0, 26.0, {"easy": 0, "moderate": 1, "hard": 1}),
    # exactly 40 px: 40 <= 40 -> ignored at Easy, counted at Moderate/Hard
    (10.0, 50.0, {"easy": 0, "moderate": 1, "hard": 1}),
    (0.0, 40.0, {"easy": 0, "moderate": 1, "hard": 1}),
    # just above 40 px counts everywhere
    (0.0, 40.25, {"easy": 1, "moderate": 1, "hard": 1}),
])
def test_ground_truth_at_min_height_is_ignored(y1, y2, expected):
    assert counted_gt(KittiBox("Car", (0.0, y1, 100.0, y2))) == expected


@pytest.mark.parametrize("truncated, expected", [
    # truncation > MAX_TRUNCATION fails; a box exactly at the maximum counts
    (0.15, {"easy": 1, "moderate": 1, "hard": 1}),
    (0.16, {"easy": 0, "moderate": 1, "hard": 1}),
    (0.3, {"easy": 0, "moderate": 1, "hard": 1}),
    (0.31, {"easy": 0, "moderate": 0, "hard": 1}),
    (0.5, {"easy": 0, "moderate": 0, "hard": 1}),
    (0.51, {"easy": 0, "moderate": 0, "hard": 0}),
])
def test_ground_truth_at_max_truncation_counts(truncated, expected):
    assert counted_gt(KittiBox("Car", CAR, truncated=truncated)) == expected


@pytest.mark.parametrize("occluded, expected", [
    # occlusion > MAX_OCCLUSION fails; a box exactly at the maximum counts;
    # occlusion 3 ("unknown") fails every level
    (0, {"easy": 1, "moderate": 1, "hard": 1}),
    (1, {"easy": 0, "moderate": 1, "hard": 1}),
    (2, {"easy": 0, "moderate": 0, "hard": 1}),
    (3, {"easy": 0, "moderate": 0, "hard": 0}),
])
def test_ground_truth_at_max_occlusion_counts(occluded, expected):
    assert counted_gt(KittiBox("Car", CAR, occluded=occluded)) == expected


@pytest.mark.parametrize("height, expected", [
    # a second, undetected car per image of exactly 25 px: ignored at every
    # level (<= 25, <= 40), so Car AP stays 100.  (With a strict '<' it would
    # count at Moderate/Hard: 160 GT, 80 TP -> 50 / 54.5455.)
    (25.0, same(100.0, 100.0)),
    # exactly 40 px: ignored at Easy only; Moderate/Hard 160 GT, 80 TP
    (40.0, {"easy": (100.0, 100.0), "moderate": (50.0, 600 / 11), "hard": (50.0, 600 / 11)}),
    # 41 px: counted at every level
    (41.0, same(50.0, 600 / 11)),
])
def test_undetected_ground_truth_at_min_height_changes_ap(height, expected):
    gt, dets = car_scene(extra_gt=[KittiBox("Car", (200.0, 0.0, 300.0, height))])
    assert_aps(evaluate_kitti(gt, dets), expected)


@pytest.mark.parametrize("height, expected", [
    # an unmatched Car detection above every TP: int(h) < MIN_HEIGHT ignores it.
    # exactly 40 px counts at Easy as well (40 < 40 is false): FP everywhere
    (40.0, same(50.0, 50.0)),
    # 39.9 px -> int 39 < 40: ignored at Easy, an FP at Moderate/Hard
    (39.9, {"easy": (100.0, 100.0), "moderate": (50.0, 50.0), "hard": (50.0, 50.0)}),
    # 25.9 px -> int 25: counted at Moderate/Hard like 25 px
    (25.9, {"easy": (100.0, 100.0), "moderate": (50.0, 50.0), "hard": (50.0, 50.0)}),
])
def test_detection_at_min_height_counts(height, expected):
    gt, dets = scene80(lambda k: (
        [KittiBox("Car", CAR)],
        [KittiBox("Car", CAR, score=tp_score(k)),
         KittiBox("Car", (200.0, 10.0, 300.0, 10.0 + height), score=1.5 - 0.001 * k)],
    ))
    assert_aps(evaluate_kitti(gt, dets), expected)


def test_box_of_25_px_is_ignored_ground_truth_but_a_counted_detection():
    # GT and detection both exactly 25 px, matched (IoU 1): at Moderate the GT
    # is ignored (<= 25) while the detection counts (25 >= 25); the match is
    # neither TP nor FP, so Car has no counted ground truth: AP None.
    box = (0.0, 0.0, 100.0, 25.0)
    gt, dets = [[KittiBox("Car", box)]], [[KittiBox("Car", box, score=0.9)]]
    curve = kitti_curve(gt, dets, "Car", "moderate")
    assert curve.n_gt == 0 and curve.ap_r40 is None
    # the same detection with a 50 px car elsewhere detected: the 25 px match is
    # not an FP, so P = 1 in the single slot: R11 = 100/11
    gt[0].append(KittiBox("Car", CAR))
    dets[0].append(KittiBox("Car", CAR, score=0.8))
    res = evaluate_kitti(gt, dets, classes=("Car",))
    assert res["Car"]["moderate"] == {"AP_R40": 0.0, "AP_R11": pytest.approx(100 / 11)}


@pytest.mark.parametrize("other, cls, expected", [
    # the neighbour rule goes one way in the devkit: Van is ignored for Car and
    # Person_sitting for Pedestrian, not the reverse.  Evaluating Van, a Van
    # detection on a Car is an FP: 80 FPs above all TPs -> 50
    ("Car", "Van", 50.0),
    ("Pedestrian", "Person_sitting", 50.0),
    # and the forward pairs are ignored -> 100
    ("Van", "Car", 100.0),
    ("Person_sitting", "Pedestrian", 100.0),
])
def test_neighbour_rule_is_one_way(other, cls, expected):
    box = CAR if cls in ("Car", "Van") else (0.0, 0.0, 20.0, 50.0)
    far = (200.0, 0.0, 200.0 + box[2], 50.0)
    gt, dets = scene80(lambda k: (
        [KittiBox(cls, box), KittiBox(other, far)],
        [KittiBox(cls, box, score=tp_score(k)), KittiBox(cls, far, score=1.5 - 0.001 * k)],
    ))
    assert_aps(evaluate_kitti(gt, dets, classes=(cls,)), same(expected, expected), cls=cls)


def test_undetected_neighbour_is_not_a_false_negative():
    # an undetected Van next to each car: ignored for Car (not FN) -> 100;
    # counted as Van ground truth when Van is evaluated (no Van detections) -> 0
    gt, dets = car_scene(extra_gt=[KittiBox("Van", ELSEWHERE)])
    res = evaluate_kitti(gt, dets, classes=("Car", "Van"))
    assert_aps(res, same(100.0, 100.0), cls="Car")
    assert_aps(res, same(0.0, 0.0), cls="Van")


@pytest.mark.parametrize("name, x1, expected", [
    # detection (200, 0, 300, 50), area 5000, in a DontCare region from x1 to 400:
    # own-area overlap (300 - x1) * 50 / 5000.  Exactly 0.7 (x1 = 230) is not
    # > 0.7: an FP -> 50; 0.72 (x1 = 228) is absorbed -> 100
    ("DontCare", 230.0, 50.0),
    ("DontCare", 228.0, 100.0),
    # the DontCare name matches in any case, as strcasecmp does
    ("dontcare", 228.0, 100.0),
    ("DONTCARE", 228.0, 100.0),
])
def test_dontcare_overlap_is_strict(name, x1, expected):
    region = KittiBox(name, (x1, 0.0, 400.0, 60.0), truncated=-1, occluded=-1)
    det = (200.0, 0.0, 300.0, 50.0)
    assert box_overlap_own_area(np.array([det]), np.array([region.bbox]))[0, 0] == (300.0 - x1) / 100.0
    gt, dets = scene80(lambda k: (
        [KittiBox("Car", CAR), region],
        [KittiBox("Car", CAR, score=tp_score(k)), KittiBox("Car", det, score=1.5 - 0.001 * k)],
    ))
    assert_aps(evaluate_kitti(gt, dets), same(expected, expected))
