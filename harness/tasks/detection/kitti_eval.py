"""KITTI 2D object detection AP, following the official devkit's rules.

The rules are those of ``cpp/evaluate_object.cpp`` in the current KITTI object
devkit (the 2017 release with the 3D and bird's-eye metrics; methods digest,
section 10); this is an independent numpy implementation.

Difficulty levels are cumulative (Moderate includes Easy, Hard includes
Moderate):

=========  ==========================  =============  ==============
level      ground truth height         max occlusion  max truncation
=========  ==========================  =============  ==============
easy       more than 40 px             0              0.15
moderate   more than 25 px             1              0.30
hard       more than 25 px             2              0.50
=========  ==========================  =============  ==============

Boundaries, as the devkit's ``cleanData`` compares them:

* a ground truth box is ignored when ``height <= MIN_HEIGHT`` (height
  ``y2 - y1`` as a float): a box exactly 25 px high is ignored at Moderate
  and Hard, one exactly 40 px high at Easy.  The older 2D-only devkit
  compared ``height < MIN_HEIGHT``; the current one (and the Python ports in
  second.pytorch and OpenPCDet) use ``<=``;
* it is ignored when ``occlusion > MAX_OCCLUSION`` or
  ``truncation > MAX_TRUNCATION``: occlusion 1 and truncation exactly 0.30
  still count at Moderate;
* a detection is ignored when ``int(|y2 - y1|) < MIN_HEIGHT`` (the height is
  truncated to an integer, then compared strictly): a detection exactly 25 px
  high counts at Moderate, one 24.9 px high is ignored.  Detections and
  ground truth thus differ at the boundary: a 25 px box is an ignored ground
  truth but a counted detection at Moderate.

A detection is a true positive when its IoU with a ground-truth box is
*strictly greater* than 0.7 (Car, Van, Truck, Tram) or 0.5 (Pedestrian,
Person_sitting, Cyclist).

Ignore rules, per class and difficulty:

* Ground truth of the neighbour class and ground truth of the class failing
  the difficulty filter are *ignored*: a detection matched to them is neither
  TP nor FP, and they are never FN.  The devkit has exactly two neighbour
  pairs and they go one way: Van boxes are ignored when Car is evaluated and
  Person_sitting boxes when Pedestrian is evaluated.  Ground truth of any
  other class (Truck for Car, Car for Van, DontCare, ...) is not considered
  at all, so a Car detection on a Truck is a false positive.
* Detections shorter than the level's minimum height are ignored (see above).
  This is the devkit rule; the Python ports in second.pytorch / OpenPCDet
  comment it out and so score slightly differently.  As in the devkit, the
  height test comes before the class test, so a short detection of *another*
  class can still be assigned (as ignored) to a ground truth box of this
  class.
* DontCare regions are the ground truth boxes named DontCare (any case).  An
  unmatched, counted detection whose intersection with a DontCare box,
  divided by the detection's own area, exceeds the class IoU threshold
  (strictly) is not an FP.

The devkit evaluates Car, Pedestrian and Cyclist only.  Van, Truck, Tram and
Person_sitting can be evaluated here as well, with the same rules: none of
them has a neighbour class (the devkit's neighbour test names the evaluated
class, Car or Pedestrian), so for Van a Car ground truth box is simply
another class.  Some third-party forks add the reverse pairs (Car ignored for
Van, Pedestrian for Person_sitting); this module does not.

AP uses the devkit's two passes:

1. Matching with no score threshold, each ground truth box taking the
   highest-scoring unassigned detection above the IoU threshold; the scores of
   the resulting true positives choose (at most) 41 score thresholds meant to
   sample recall at i/40 (``devkit_thresholds``).
2. At each threshold, matching among the detections scoring at least that
   much, each ground truth box taking the unassigned detection of greatest
   overlap (an ignored short detection only when no valid one overlaps),
   then counting TP/FP/FN.  Precision at threshold i goes in slot i.

Precision is made monotone (``P[i] = max_{j>=i} P[j]``); slots with no
threshold hold 0.  AP_R11 = mean of P[0], P[4], ..., P[40]; AP_R40 = mean of
P[1..40].  Results are in percent.

Devkit artefact kept on purpose: slot i holds the i-th chosen threshold, not
recall i/40, and each threshold advances the sampled recall by exactly 1/40.
With N ground truth boxes all detected there are min(N, 41) thresholds, so
below 41 boxes even perfect detection scores under 100 (one box detected:
AP_R11 = 100/11 = 9.09, AP_R40 = 0; the familiar "9.09" of sparse classes).

Where a class has no non-ignored ground truth at a difficulty the devkit
reports 0; here the AP is ``None`` ("no ground truth to score") so that an
empty class cannot drag a mean down or be mistaken for a failed detector.
A class with ground truth but no detections scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DIFFICULTIES",
    "MIN_OVERLAP",
    "N_SAMPLE_PTS",
    "Difficulty",
    "KittiBox",
    "KittiCurve",
    "box_iou",
    "box_overlap_own_area",
    "devkit_thresholds",
    "evaluate_kitti",
    "flatten_kitti",
    "kitti_curve",
]

#: number of sampled recall points, 0/40 .. 40/40
N_SAMPLE_PTS = 41

#: IoU a match must strictly exceed, by lower-cased class name
MIN_OVERLAP: dict[str, float] = {
    "car": 0.7,
    "van": 0.7,
    "truck": 0.7,
    "tram": 0.7,
    "pedestrian": 0.5,
    "person_sitting": 0.5,
    "cyclist": 0.5,
}

#: when the key class is evaluated, ground truth of the value class is ignored
#: rather than not considered; one way only, as in the devkit's cleanData
NEIGHBOUR: dict[str, str] = {
    "car": "van",
    "pedestrian": "person_sitting",
}

DONTCARE = "dontcare"


@dataclass(frozen=True)
class Difficulty:
    """The devkit's MIN_HEIGHT / MAX_OCCLUSION / MAX_TRUNCATION for one level.

    Ground truth counts when ``height > min_height``, ``occluded <=
    max_occlusion`` and ``truncated <= max_truncation``; a detection counts
    when ``int(height) >= min_height``.
    """

    name: str
    min_height: int
    max_occlusion: int
    max_truncation: float


DIFFICULTIES: tuple[Difficulty, ...] = (
    Difficulty("easy", 40, 0, 0.15),
    Difficulty("moderate", 25, 1, 0.30),
    Difficulty("hard", 25, 2, 0.50),
)
_BY_NAME = {d.name: d for d in DIFFICULTIES}


@dataclass(frozen=True)
class KittiBox:
    """One KITTI object: a ground truth label or a detection.

    ``bbox`` is (x1, y1, x2, y2) in pixels, height ``y2 - y1``.  ``truncated``
    (0..1, -1 for DontCare) and ``occluded`` (0 visible, 1 partly, 2 largely,
    3 unknown, -1 for DontCare) matter for ground truth only; ``score`` for
    detections only.
    """

    name: str
    bbox: tuple[float, float, float, float]
    truncated: float = 0.0
    occluded: int = 0
    score: float = 1.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"name must be a non-empty string without whitespace, got {self.name!r}")
        if len(self.bbox) != 4:
            raise ValueError(f"bbox must be (x1, y1, x2, y2), got {self.bbox!r}")
        box = tuple(float(v) for v in self.bbox)
        if not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"bbox must be finite with x2 >= x1 and y2 >= y1, got {self.bbox!r}")
        object.__setattr__(self, "bbox", box)
        if not (self.truncated == -1 or 0.0 <= self.truncated <= 1.0):
            raise ValueError(f"truncated must be in [0, 1] (or -1 for DontCare), got {self.truncated!r}")
        if int(self.occluded) != self.occluded or self.occluded not in (-1, 0, 1, 2, 3):
            raise ValueError(f"occluded must be one of -1, 0, 1, 2, 3, got {self.occluded!r}")
        object.__setattr__(self, "truncated", float(self.truncated))
        object.__setattr__(self, "occluded", int(self.occluded))
        if not math.isfinite(self.score):
            raise ValueError(f"score must be finite, got {self.score!r}")
        object.__setattr__(self, "score", float(self.score))

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]


# ------------------------------------------------------------------ overlaps


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of boxes a [N, 4] and b [M, 4]; 0 where
    the boxes do not overlap with positive width and height (devkit)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.where((w > 0) & (h > 0), w * h, 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [N, M] of (x1, y1, x2, y2) boxes, no +1 pixel convention."""
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    # a positive intersection implies a positive union; elsewhere the IoU is 0
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def box_overlap_own_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over the area of the box from ``a`` [N, M]: how
    much of each detection lies inside each DontCare region."""
    inter = _intersection(a, b)
    own = np.broadcast_to(_area(a)[:, None], inter.shape)
    return np.divide(inter, own, out=np.zeros_like(inter), where=inter > 0)


# ------------------------------------------------------------------ per image


@dataclass
class _Image:
    """Arrays for one image, shared by every class and difficulty."""

    gt_names: list[str]
    gt_height: np.ndarray
    gt_occluded: np.ndarray
    gt_truncated: np.ndarray
    det_names: list[str]
    # int(|y2 - y1|), truncated toward zero as the devkit's int32_t height
    det_height: np.ndarray
    scores: np.ndarray
    iou: np.ndarray  # [n_gt, n_det]
    dontcare_overlap: np.ndarray  # [n_det, n_dontcare], over the detection's area

    @classmethod
    def build(cls, gt: Sequence[KittiBox], dets: Sequence[KittiBox]) -> _Image:
        gt_boxes = np.asarray([g.bbox for g in gt], np.float64).reshape(-1, 4)
        det_boxes = np.asarray([d.bbox for d in dets], np.float64).reshape(-1, 4)
        dc_boxes = np.asarray([g.bbox for g in gt if g.name.lower() == DONTCARE], np.float64).reshape(-1, 4)
        return cls(
            gt_names=[g.name.lower() for g in gt],
            gt_height=gt_boxes[:, 3] - gt_boxes[:, 1],
            gt_occluded=np.asarray([g.occluded for g in gt], np.int64),
            gt_truncated=np.asarray([g.truncated for g in gt], np.float64),
            det_names=[d.name.lower() for d in dets],
            det_height=np.trunc(np.abs(det_boxes[:, 3] - det_boxes[:, 1])),
            scores=np.asarray([d.score for d in dets], np.float64),
            iou=box_iou(gt_boxes, det_boxes),
            dontcare_overlap=box_overlap_own_area(det_boxes, dc_boxes),
        )


@dataclass
class _Flags:
    """The devkit's ``cleanData`` output for one image, class and difficulty.

    ignored_gt: 0 counted, 1 ignored (neighbour class or fails the level),
    -1 not considered.  ignored_det: 0 counted, 1 ignored (too short, any
    class), -1 other class.
    """

    ignored_gt: np.ndarray
    ignored_det: np.ndarray
    in_dontcare: np.ndarray  # per detection: inside some DontCare region

    @property
    def n_gt(self) -> int:
        return int(np.sum(self.ignored_gt == 0))


def _clean(img: _Image, cls: str, level: Difficulty, min_overlap: float) -> _Flags:
    same = np.asarray([n == cls for n in img.gt_names], bool)
    neighbour = np.asarray([n == NEIGHBOUR.get(cls) for n in img.gt_names], bool)
    # boundaries as in the devkit: occlusion and truncation strictly above the
    # level's maximum fail, and so does a box *at* the minimum height (<=)
    fails_level = (
        (img.gt_occluded > level.max_occlusion)
        | (img.gt_truncated > level.max_truncation)
        | (img.gt_height <= level.min_height)
    )
    ignored_gt = np.full(len(img.gt_names), -1, np.int64)
    ignored_gt[neighbour | (same & fails_level)] = 1
    ignored_gt[same & ~fails_level] = 0

    det_same = np.asarray([n == cls for n in img.det_names], bool)
    ignored_det = np.where(det_same, 0, -1).astype(np.int64)
    # height first, as in the devkit; detections compare strictly (int(h) < min)
    ignored_det[img.det_height < level.min_height] = 1
    in_dontcare = (img.dontcare_overlap > min_overlap).any(axis=1)
    return _Flags(ignored_gt, ignored_det, in_dontcare)


@dataclass
class _Stats:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tp_scores: list[float] = field(default_factory=list)


def _statistics(img: _Image, flags: _Flags, min_overlap: float, threshold: float | None) -> _Stats:
    """The devkit's ``computeStatistics``.  ``threshold=None`` is the first
    pass (pick by score, no FP count); a number is the second pass."""
    second_pass = threshold is not None
    usable = flags.ignored_det != -1
    if second_pass:
        usable &= img.scores >= threshold
    assigned = np.zeros(len(img.scores), bool)
    stats = _Stats()
    for i in np.flatnonzero(flags.ignored_gt != -1):
        candidates = usable & ~assigned & (img.iou[i] > min_overlap)
        idx = -1
        if candidates.any():
            if not second_pass:
                # highest score; the devkit's strict '>' keeps the first on ties
                idx = int(np.argmax(np.where(candidates, img.scores, -np.inf)))
            else:
                valid = candidates & (flags.ignored_det == 0)
                if valid.any():
                    idx = int(np.argmax(np.where(valid, img.iou[i], -np.inf)))
                else:  # only short detections overlap: take the first
                    idx = int(np.flatnonzero(candidates)[0])
        if idx < 0:
            if flags.ignored_gt[i] == 0:
                stats.fn += 1
        elif flags.ignored_gt[i] == 1 or flags.ignored_det[idx] == 1:
            assigned[idx] = True  # neither TP nor FP
        else:
            stats.tp += 1
            stats.tp_scores.append(float(img.scores[idx]))
            assigned[idx] = True
    if second_pass:
        counted = usable & ~assigned & (flags.ignored_det == 0)
        stats.fp = int(np.sum(counted & ~flags.in_dontcare))
    return stats


def devkit_thresholds(tp_scores: Sequence[float], n_gt: int) -> list[float]:
    """The devkit's ``getThresholds``: from the first-pass TP scores, the
    scores at which recall is closest to 0/40, 1/40, ... (at most 41).

    The sampled recall starts at 0 and advances by 1/40 per chosen score, so
    the highest score is always chosen, and so is the lowest.
    """
    if n_gt < 1:
        raise ValueError(f"n_gt must be >= 1, got {n_gt!r}")
    scores = sorted((float(s) for s in tp_scores), reverse=True)
    if len(scores) > n_gt:
        raise ValueError(f"more true positives ({len(scores)}) than ground truth boxes ({n_gt})")
    chosen: list[float] = []
    current = 0.0
    for i, score in enumerate(scores):
        last = i == len(scores) - 1
        left = (i + 1) / n_gt
        right = left if last else (i + 2) / n_gt
        # skip this score when the next one lands closer to the recall sought
        if not last and (right - current) < (current - left):
            continue
        chosen.append(score)
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return chosen


# ------------------------------------------------------------------ curves


@dataclass(frozen=True)
class KittiCurve:
    """Precision/recall at the devkit's thresholds for one class and level.

    ``precision`` has N_SAMPLE_PTS slots, made monotone, 0 past the last
    threshold; ``recall`` is the raw recall at each threshold (0 past it).
    ``ap_r40`` / ``ap_r11`` are percent, None when ``n_gt`` is 0.
    """

    cls: str
    difficulty: str
    n_gt: int
    thresholds: tuple[float, ...]
    precision: np.ndarray
    recall: np.ndarray

    @property
    def ap_r40(self) -> float | None:
        if self.n_gt == 0:
            return None
        return float(np.sum(self.precision[1:]) / (N_SAMPLE_PTS - 1) * 100.0)

    @property
    def ap_r11(self) -> float | None:
        if self.n_gt == 0:
            return None
        return float(np.mean(self.precision[0::4]) * 100.0)


def _prepare(gt: Sequence[Sequence[KittiBox]], dets: Sequence[Sequence[KittiBox]]) -> list[_Image]:
    if len(gt) != len(dets):
        raise ValueError(f"gt and dets must list the same images, got {len(gt)} and {len(dets)} images")
    for what, images in (("gt", gt), ("dets", dets)):
        for i, boxes in enumerate(images):
            for box in boxes:
                if not isinstance(box, KittiBox):
                    raise TypeError(f"{what}[{i}] must hold KittiBox objects, got {type(box).__name__}: {box!r}")
    return [_Image.build(g, d) for g, d in zip(gt, dets)]


def _check_class(cls: str) -> str:
    key = cls.lower() if isinstance(cls, str) else cls
    if key not in MIN_OVERLAP:
        raise ValueError(f"unknown KITTI class {cls!r}; expected one of {sorted(MIN_OVERLAP)} (any case)")
    return key


def _check_difficulty(difficulty: str) -> Difficulty:
    if difficulty not in _BY_NAME:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {list(_BY_NAME)}")
    return _BY_NAME[difficulty]


def _curve(images: list[_Image], cls: str, level: Difficulty) -> KittiCurve:
    key = _check_class(cls)
    min_overlap = MIN_OVERLAP[key]
    flags = [_clean(img, key, level, min_overlap) for img in images]
    n_gt = sum(f.n_gt for f in flags)
    precision = np.zeros(N_SAMPLE_PTS)
    recall = np.zeros(N_SAMPLE_PTS)
    if n_gt == 0:
        return KittiCurve(cls, level.name, 0, (), precision, recall)

    tp_scores = [s for img, f in zip(images, flags) for s in _statistics(img, f, min_overlap, None).tp_scores]
    thresholds = devkit_thresholds(tp_scores, n_gt)
    # an image's statistics depend on the threshold only through how many of
    # its detections pass it, so each image is matched once per such count
    passing = [np.sort(img.scores[f.ignored_det != -1]) for img, f in zip(images, flags)]
    cache: list[dict[int, _Stats]] = [{} for _ in images]
    for t, threshold in enumerate(thresholds):
        tp = fp = fn = 0
        for img, f, scores, seen in zip(images, flags, passing, cache):
            count = len(scores) - int(np.searchsorted(scores, threshold, side="left"))
            if count == 0:  # nothing left: every counted box is missed
                fn += f.n_gt
                continue
            if count not in seen:
                seen[count] = _statistics(img, f, min_overlap, threshold)
            s = seen[count]
            tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
        # 0/0 (NaN in the devkit) needs the second pass to assign every
        # detection above the threshold to ignored boxes; score it 0
        precision[t] = tp / (tp + fp) if tp + fp else 0.0
        recall[t] = tp / (tp + fn) if tp + fn else 0.0
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return KittiCurve(cls, level.name, n_gt, tuple(thresholds), precision, recall)


def kitti_curve(
    gt: Sequence[Sequence[KittiBox]],
    dets: Sequence[Sequence[KittiBox]],
    cls: str,
    difficulty: str = "moderate",
) -> KittiCurve:
    """The precision curve of one class at one difficulty (see module doc)."""
    _check_class(cls)
    level = _check_difficulty(difficulty)
    return _curve(_prepare(gt, dets), cls, level)


def evaluate_kitti(
    gt: Sequence[Sequence[KittiBox]],
    dets: Sequence[Sequence[KittiBox]],
    classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
) -> dict[str, dict[str, dict[str, float | None]]]:
    """KITTI 2D AP in percent, ``{cls: {level: {"AP_R40": .., "AP_R11": ..}}}``.

    ``gt[i]`` and ``dets[i]`` are the labels and detections of the same image;
    ground truth includes DontCare and neighbour-class boxes.  Class names
    match case-insensitively and are reported as given.  An AP is None where
    the class has no counted ground truth at that level (the devkit prints 0).
    """
    if isinstance(classes, str):
        raise TypeError(f"classes must be a sequence of class names, got the string {classes!r}")
    for cls in classes:
        _check_class(cls)
    images = _prepare(gt, dets)
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    for cls in classes:
        results[cls] = {}
        for level in DIFFICULTIES:
            curve = _curve(images, cls, level)
            results[cls][level.name] = {"AP_R40": curve.ap_r40, "AP_R11": curve.ap_r11}
    return results


def flatten_kitti(results: dict[str, dict[str, dict[str, float | None]]]) -> dict[str, float | None]:
    """``{"Car_moderate_AP_R40": 87.1, ...}`` from ``evaluate_kitti``'s result.

    None values (no ground truth) are kept so that the keys do not depend on
    the data.
    """
    flat: dict[str, float | None] = {}
    for cls, levels in results.items():
        for level, aps in levels.items():
            for name, value in aps.items():
                flat[f"{cls}_{level}_{name}"] = value
    return flat
