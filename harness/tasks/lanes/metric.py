"""The TuSimple lane metric, as the official evaluator computes it.

Source of the rules: ``evaluate/lane.py`` of github.com/TuSimple/tusimple-benchmark.
Lanes are x-coordinates sampled at fixed ``h_samples`` rows; a negative x
(TuSimple writes -2) means the lane has no point on that row.

Per image (``bench_image``), in the order the official ``bench`` applies
the rules:

0. A predicted lane whose length is not ``len(h_samples)`` rejects the
   submission.  Then an image whose run_time is strictly over 200 ms, or that
   has more than #GT + 2 predicted lanes, scores (0, 0, 1) without its GT
   lanes being looked at: FN rate 1 even for an image with no GT lane, and no
   error for a malformed GT lane.
1. For each GT lane fit x = k*y + b by least squares on its valid points
   (x >= 0); fewer than two valid points means k = 0.  The lane's threshold
   is ``20 / cos(arctan k)`` pixels, so a slanted lane gets a wider one.  The
   official code fits with scikit-learn's ``LinearRegression`` (which centres
   both variables and solves with ``scipy.linalg.lstsq``, LAPACK gelsd) and
   takes ``np.arctan`` / ``np.cos``; ``lane_threshold`` does the same
   arithmetic with scipy directly, so thresholds agree to the last bit.  A
   closed-form slope (cov / var) is off by an ulp on about a third of lanes,
   which flips exact ties: a lane of slope 3/4 has threshold
   25.000000000000004 there, not 25, so a prediction exactly 25 px off hits.
2. Point accuracy of a prediction against a GT lane: the share of the
   ``len(h_samples)`` rows where ``|x_pred - x_gt| < threshold`` (strict),
   after every negative x is replaced by -100 in both lanes; a row invalid
   in both therefore counts as correct.  A blank predicted lane (all -2) is
   a lane like any other: it scores the share of rows where the GT lane has
   no point, and it counts in #pred.
3. Each GT lane takes its best prediction's point accuracy; below 0.85 it is
   a false negative, otherwise (0.85 included, e.g. 17 of 20 rows) it is
   matched.  Matching is not one-to-one: one prediction may match several GT
   lanes, and a GT lane listed twice is matched twice.
4. FP = #pred - #matched (negative when one prediction matched two lanes; the
   official code keeps that).  With more than 4 GT lanes one FN is forgiven
   and the worst lane's accuracy is dropped from the sum.
5. accuracy = sum(best) / max(min(4, #GT), 1); FP rate = FP / #pred (0 with
   no predictions); FN rate = FN / max(min(#GT, 4), 1).

Over a set (``bench_records``): the three per-image figures are summed in
prediction order and divided by the number of distinct GT images.  The
official file counts GT *lines* for its "one prediction per GT line" check
but keys the GT by ``raw_file`` (a repeated GT line keeps its last copy and
counts once in the divisor), and it parses every line of both files as JSON,
so a blank line rejects the submission (``bench_files``).

Two revisions of the official file exist and differ in the edge rules.
``OFFICIAL`` is the final one (commit 365c4cd, 2017-07-17, the repository's
head; the one published TuSimple numbers such as UFLD's use).  ``EARLY_2017_05``
is commit 027e58f (2017-05-31), which the methods digest (section 10)
transcribes.  Where they differ:

=========================  =============================  =============================
rule                       OFFICIAL (2017-07-17)          EARLY_2017_05 (2017-05-31)
=========================  =============================  =============================
pred lane of wrong length  the submission is rejected     image scores (0, 0, 1)
                           (LaneFormatError here)
#pred > #GT + 2            image scores (0, 0, 1)         no such rule
FN rate denominator        max(min(#GT, 4), 1)            max(#GT, 1)
run_time of a prediction   used (> 200 ms: (0, 0, 1))     ignored (taken as 0)
pred for an unknown image  submission rejected            FN sum += 1
#pred lines != #GT lines   submission rejected            no such check; an image with
                                                          no pred adds 0 to every sum,
                                                          still counts in the divisor
=========================  =============================  =============================

F1 is not part of the official evaluator.  ``f1_from_rates`` gives the one
later papers (LaneATT, CondLaneNet) report from the FP and FN rates:
precision = 1 - FP, recall = 1 - FN.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

from ...config import Validated

__all__ = [
    "Revision",
    "OFFICIAL",
    "EARLY_2017_05",
    "REVISIONS",
    "PIXEL_THRESHOLD",
    "MATCH_THRESHOLD",
    "MAX_RUNTIME_MS",
    "LaneFormatError",
    "ImageMatch",
    "lane_threshold",
    "point_accuracy",
    "match_image",
    "bench_image",
    "SetResult",
    "bench_records",
    "bench_files",
    "read_json_lines",
    "f1_from_rates",
]

#: the official constants
PIXEL_THRESHOLD = 20.0
MATCH_THRESHOLD = 0.85
MAX_RUNTIME_MS = 200.0
#: lanes beyond this count get one FN forgiven and their worst accuracy dropped
COUNTED_LANES = 4
#: what a negative x becomes before comparison (so both-invalid rows agree)
INVALID_X = -100.0


class LaneFormatError(ValueError):
    """A predicted lane's length differs from len(h_samples) (the official
    evaluator rejects the whole submission), or a record is malformed."""


@dataclass(frozen=True)
class Revision(Validated):
    """The edge rules in which the two official revisions differ."""

    name: str
    #: "error": a wrong-length lane rejects the submission; "zero": the image scores (0, 0, 1)
    wrong_length: Literal["error", "zero"]
    #: an image with more than #GT + this many predictions scores (0, 0, 1); None: no limit
    max_extra_predictions: int | None
    #: FN rate divides by max(min(#GT, cap), 1); None: max(#GT, 1)
    fn_denominator_cap: int | None
    #: False: the set-level evaluator ignores each record's run_time (uses 0)
    uses_run_time: bool
    #: True: as many prediction records as GT lines, and every prediction for a GT image
    strict_set: bool


OFFICIAL = Revision("2017-07-17", wrong_length="error", max_extra_predictions=2,
                    fn_denominator_cap=COUNTED_LANES, uses_run_time=True, strict_set=True)
EARLY_2017_05 = Revision("2017-05-31", wrong_length="zero", max_extra_predictions=None,
                         fn_denominator_cap=None, uses_run_time=False, strict_set=False)
REVISIONS = {r.name: r for r in (OFFICIAL, EARLY_2017_05)}


# --------------------------------------------------------------- per image


def _slope(xs: np.ndarray, ys: np.ndarray) -> np.float64:
    """Least-squares k of x = k*y + b over the valid (x >= 0) points; 0 with fewer than two.

    The arithmetic is that of scikit-learn's ``LinearRegression().fit(ys[:, None], xs)``
    (what the official evaluator calls), step for step, so that k is the same
    float: the design matrix is a fresh (n, 1) float64 array, both variables
    are centred by ``np.average`` over axis 0, and the centred system goes to
    ``scipy.linalg.lstsq`` with its default driver (gelsd).  For one column the
    rank cut-off (sklearn's ``cond``) only matters for an all-zero column, where
    gelsd returns 0 under any cut-off.
    """
    from scipy import linalg

    valid = xs >= 0
    if np.count_nonzero(valid) < 2:
        return np.float64(0.0)
    design = np.array(ys[valid], dtype=np.float64).reshape(-1, 1)
    target = np.array(xs[valid], dtype=np.float64)
    design -= np.average(design, axis=0)
    target = target - np.average(target, axis=0)
    coef = linalg.lstsq(design, target)[0]
    return np.float64(coef[0])


def lane_threshold(gt_xs: Sequence[float], h_samples: Sequence[float], pixels: float = PIXEL_THRESHOLD) -> float:
    """``pixels / cos(arctan k)`` for the GT lane's fitted slope k (dx/dy),
    with numpy's arctan and cos as the official code (bit-exact, see ``_slope``)."""
    k = _slope(np.asarray(gt_xs, dtype=np.float64), np.asarray(h_samples, dtype=np.float64))
    return float(pixels / np.cos(np.arctan(k)))


def point_accuracy(pred_xs: Sequence[float], gt_xs: Sequence[float], threshold: float) -> float:
    """Share of rows where the two lanes agree within ``threshold`` (negatives -> -100 first)."""
    pred = np.where(np.asarray(pred_xs, dtype=float) >= 0, pred_xs, INVALID_X)
    gt = np.where(np.asarray(gt_xs, dtype=float) >= 0, gt_xs, INVALID_X)
    return float(np.count_nonzero(np.abs(pred - gt) < threshold)) / len(gt)


@dataclass(frozen=True)
class ImageMatch:
    """Everything ``bench_image`` decides for one image (for tests and reports)."""

    accuracy: float
    fp_rate: float
    fn_rate: float
    #: None when a whole-image rule (runtime, too many predictions, wrong length) decided the score
    thresholds: tuple[float, ...] | None = None
    best: tuple[float, ...] | None = None
    matched: int = 0
    fp_lanes: float = 0.0
    fn_lanes: float = 0.0
    #: "wrong_length", "runtime" or "too_many_predictions" when a whole-image rule applied
    rule: str | None = None
    detail: str = ""

    def __iter__(self):  # unpacks like the official (acc, fp, fn)
        return iter((self.accuracy, self.fp_rate, self.fn_rate))


_ZERO = (0.0, 0.0, 1.0)


def _check_lanes(lanes: Sequence[Sequence[float]], n: int, what: str) -> None:
    for i, lane in enumerate(lanes):
        if len(lane) != n:
            raise LaneFormatError(f"{what} lane {i} has {len(lane)} points but h_samples has {n}")


def match_image(
    pred: Sequence[Sequence[float]],
    gt: Sequence[Sequence[float]],
    h_samples: Sequence[float],
    runtime_ms: float = 0.0,
    *,
    revision: Revision = OFFICIAL,
    max_runtime_ms: float | None = MAX_RUNTIME_MS,
) -> ImageMatch:
    """Score one image; ``max_runtime_ms=None`` switches the runtime rule off.

    The whole-image rules come first, as in the official ``bench``: the GT
    lanes are only checked (a wrong-length GT lane is a data error, never a
    score) once the image is actually matched.
    """
    n = len(h_samples)
    wrong_length = any(len(p) != n for p in pred)
    if wrong_length and revision.wrong_length == "error":
        _check_lanes(pred, n, "predicted")
    if wrong_length:
        return ImageMatch(*_ZERO, rule="wrong_length", detail="a predicted lane has the wrong length")
    if max_runtime_ms is not None and runtime_ms > max_runtime_ms:
        return ImageMatch(*_ZERO, rule="runtime", detail=f"{runtime_ms:g} ms > {max_runtime_ms:g} ms")
    extra = revision.max_extra_predictions
    if extra is not None and len(pred) > len(gt) + extra:
        return ImageMatch(*_ZERO, rule="too_many_predictions",
                          detail=f"{len(pred)} predictions > {len(gt)} GT lanes + {extra}")
    _check_lanes(gt, n, "GT")
    thresholds = tuple(lane_threshold(g, h_samples) for g in gt)
    best = tuple(max((point_accuracy(p, g, t) for p in pred), default=0.0) for g, t in zip(gt, thresholds))
    matched = sum(1 for b in best if b >= MATCH_THRESHOLD)
    fn = float(len(gt) - matched)
    fp = float(len(pred) - matched)  # may be negative: matching is not one-to-one
    total = sum(best)
    if len(gt) > COUNTED_LANES:
        fn = fn - 1 if fn > 0 else fn
        total -= min(best)
    cap = revision.fn_denominator_cap
    fn_den = max(min(len(gt), cap), 1) if cap is not None else max(len(gt), 1)
    return ImageMatch(
        accuracy=total / max(min(COUNTED_LANES, len(gt)), 1),
        fp_rate=fp / len(pred) if pred else 0.0,
        fn_rate=fn / fn_den,
        thresholds=thresholds,
        best=best,
        matched=matched,
        fp_lanes=fp,
        fn_lanes=fn,
    )


def bench_image(
    pred: Sequence[Sequence[float]],
    gt: Sequence[Sequence[float]],
    h_samples: Sequence[float],
    runtime_ms: float = 0.0,
    *,
    revision: Revision = OFFICIAL,
    max_runtime_ms: float | None = MAX_RUNTIME_MS,
) -> tuple[float, float, float]:
    """(accuracy, FP rate, FN rate) of one image, as the official ``bench``."""
    m = match_image(pred, gt, h_samples, runtime_ms, revision=revision, max_runtime_ms=max_runtime_ms)
    return m.accuracy, m.fp_rate, m.fn_rate


# ----------------------------------------------------------------- per set


@dataclass(frozen=True)
class SetResult:
    """Official set figures (fractions: sums over images / number of GT images)."""

    accuracy: float
    fp: float
    fn: float
    gt_images: int
    #: images a whole-image rule scored (0, 0, 1), by rule
    zeroed: Mapping[str, int]

    @property
    def f1(self) -> float:
        return f1_from_rates(self.fp, self.fn)

    def as_dict(self) -> dict:
        """The official evaluator's output (``Accuracy``, ``FP``, ``FN``)."""
        return {"Accuracy": self.accuracy, "FP": self.fp, "FN": self.fn}


def f1_from_rates(fp_rate: float, fn_rate: float) -> float:
    """F1 with precision = 1 - FP and recall = 1 - FN (not an official figure)."""
    p, r = 1.0 - fp_rate, 1.0 - fn_rate
    return 0.0 if p + r <= 0 else 2.0 * p * r / (p + r)


def _field(rec: Mapping, key: str, what: str):
    if key not in rec:
        raise LaneFormatError(f"{what} record has no {key!r} (keys: {', '.join(sorted(rec))})")
    return rec[key]


def bench_records(
    predictions: Iterable[Mapping],
    ground_truth: Iterable[Mapping],
    *,
    revision: Revision = OFFICIAL,
    max_runtime_ms: float | None = MAX_RUNTIME_MS,
) -> SetResult:
    """Score JSON-line records: predictions ``{raw_file, lanes, run_time}``
    against GT ``{raw_file, lanes, h_samples}``, keyed by ``raw_file``.

    As in the official file, a GT record repeated for the same ``raw_file``
    keeps its last copy and counts once in the divisor, but the official
    revision's count check compares the number of prediction records with
    the number of GT *records*, repeats included.
    """
    gt_lines = list(ground_truth)
    gts = {_field(g, "raw_file", "GT"): g for g in gt_lines}
    preds = list(predictions)
    if revision.strict_set:
        if len(preds) != len(gt_lines):
            raise LaneFormatError(f"{len(preds)} predictions for {len(gt_lines)} GT lines (need one per line)")
        unknown = [p.get("raw_file") for p in preds if p.get("raw_file") not in gts]
        if unknown:
            raise LaneFormatError(f"{len(unknown)} predictions for images not in the GT, e.g. {unknown[0]!r}")
    acc = fp = fn = 0.0
    zeroed: dict[str, int] = {}
    for rec in preds:
        raw_file = _field(rec, "raw_file", "prediction")
        lanes = _field(rec, "lanes", "prediction")
        run_time = float(_field(rec, "run_time", "prediction")) if revision.uses_run_time else 0.0
        if raw_file not in gts:  # only reached when not strict: the early revision's rule
            fn += 1.0
            continue
        gt = gts[raw_file]
        m = match_image(lanes, gt["lanes"], gt["h_samples"], run_time,
                        revision=revision, max_runtime_ms=max_runtime_ms)
        if m.rule is not None:
            zeroed[m.rule] = zeroed.get(m.rule, 0) + 1
        acc += m.accuracy
        fp += m.fp_rate
        fn += m.fn_rate
    num = len(gts)
    if num == 0:
        raise LaneFormatError("no GT images to score against")
    return SetResult(acc / num, fp / num, fn / num, num, zeroed)


def read_json_lines(path: str | os.PathLike, *, skip_blank: bool = False) -> list[dict]:
    """One JSON object per line (TuSimple's label and prediction format).

    Like the official evaluator, which parses every line, a blank line is an
    error unless ``skip_blank``; a final newline is not a blank line.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                if skip_blank:
                    continue
                raise LaneFormatError(f"{path}:{lineno}: blank line (the official evaluator rejects the file)")
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise LaneFormatError(f"{path}:{lineno}: not JSON: {e}") from e
    return records


def bench_files(
    pred_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    *,
    revision: Revision = OFFICIAL,
    max_runtime_ms: float | None = MAX_RUNTIME_MS,
) -> SetResult:
    """``bench_records`` over two JSON-lines files (the official command-line use);
    a blank line in either file rejects the submission, as in both revisions."""
    return bench_records(read_json_lines(pred_path), read_json_lines(gt_path),
                         revision=revision, max_runtime_ms=max_runtime_ms)
