"""The row-anchor lane model of Ultra Fast Lane Detection (UFLD, Qin, Wang and
Li, arXiv 2004.11757), its loss, and the row-anchor geometry.

The model: a timm backbone's last feature map -> 1x1 conv down to a few
channels -> flatten -> Linear -> ReLU -> Linear, reshaped to logits
``[B, griding_num + 1, num_row_anchors, num_lanes]``.  For every row anchor
and lane slot it classifies which of ``griding_num`` horizontal cells the
lane crosses, or the last class, "no lane on this row".  UFLD's ResNet-18
TuSimple model is input 288x800, griding_num 100, 56 anchors, 4 lanes,
hidden 2048 and 8 reduced channels (about 50M weights, most in the head).

Geometry (one convention for encoding and decoding): a frame of width W is
cut into ``griding_num`` equal cells of width W / griding_num; a GT x falls
in cell floor(x / cell width); a predicted cell position ``loc`` (possibly
fractional) decodes to x = (loc + 0.5) * cell width, the cell centre.  The
encode/decode round trip is therefore exact to half a cell.  Anchors are rows
in original-frame pixels; a GT lane is linearly interpolated onto them within
its labelled span, and a prediction is interpolated back onto each frame's
own ``h_samples`` between two adjacent anchors that both have a lane.

Lane slots: GT lanes left of the frame centre (judged by their lowest
labelled point) fill the left half of the slots from the centre outward,
lanes right of it the right half, so with 4 slots they read
[left-left, left, right, right-right] as in UFLD's TuSimple labels; lanes
beyond the slots are dropped from training (the metric still sees them).

Loss: cross-entropy over the cell classes at every (anchor, lane), or
UFLD's softmax focal loss when ``focal_gamma`` > 0, plus optionally the
paper's structural similarity term, the L1 distance between the logits of
adjacent row anchors (weight ``similarity_weight``; UFLD uses 1.0).  UFLD's
shape loss and auxiliary segmentation branch are not modelled.

Decoding as UFLD: where the argmax is "no lane" there is no point;
elsewhere the location is the expectation of the cell index under the
softmax over the ``griding_num`` cell classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RowAnchorLaneNet",
    "create_backbone",
    "create_lane_model",
    "lane_x_at_rows",
    "assign_slots",
    "encode_targets",
    "decode_cells",
    "cells_to_x",
    "resample_to_rows",
    "lanes_from_anchors",
    "lane_loss",
    "NO_LANE_X",
]

#: TuSimple's "no point on this row"
NO_LANE_X = -2


# ------------------------------------------------------------------- model


def create_backbone(name: str) -> nn.Module:
    """A timm model's feature extractor returning only its last feature map."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"lane backbone {name!r} needs timm (pip install timm)") from None
    if name not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown lane backbone {name!r}: not a timm model{hint}")
    return timm.create_model(name, pretrained=False, features_only=True, out_indices=(-1,))


class RowAnchorLaneNet(nn.Module):
    """Backbone -> 1x1 reduce conv -> MLP -> [B, griding_num + 1, anchors, lanes]."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        input_hw: tuple[int, int],
        griding_num: int,
        num_anchors: int,
        num_lanes: int,
        reduce_channels: int = 8,
        hidden: int = 2048,
    ):
        super().__init__()
        self.backbone = backbone
        self.cls_shape = (griding_num + 1, num_anchors, num_lanes)
        channels, feat_hw = _feature_shape(backbone, input_hw)
        self.reduce = nn.Conv2d(channels, reduce_channels, 1)
        self.fc1 = nn.Linear(reduce_channels * feat_hw[0] * feat_hw[1], hidden)
        self.fc2 = nn.Linear(hidden, (griding_num + 1) * num_anchors * num_lanes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)
        feat = feat[-1] if isinstance(feat, (list, tuple)) else feat
        z = self.reduce(feat).flatten(1)
        return self.fc2(F.relu(self.fc1(z))).view(-1, *self.cls_shape)


@torch.no_grad()
def _feature_shape(backbone: nn.Module, input_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(channels, (h, w)) of the backbone's last map for this input size (one dry run in eval mode)."""
    was_training = backbone.training
    backbone.eval()  # batch norm with a 1x1 map and batch 1 fails in train mode
    feat = backbone(torch.zeros(1, 3, *input_hw))
    backbone.train(was_training)
    feat = feat[-1] if isinstance(feat, (list, tuple)) else feat
    return int(feat.shape[1]), (int(feat.shape[2]), int(feat.shape[3]))


def create_lane_model(
    backbone: str, *, input_hw: tuple[int, int], griding_num: int, num_anchors: int, num_lanes: int,
    reduce_channels: int = 8, hidden: int = 2048,
) -> RowAnchorLaneNet:
    return RowAnchorLaneNet(
        create_backbone(backbone), input_hw=input_hw, griding_num=griding_num, num_anchors=num_anchors,
        num_lanes=num_lanes, reduce_channels=reduce_channels, hidden=hidden,
    )


# ---------------------------------------------------------------- encoding


def lane_x_at_rows(xs: Sequence[float], ys: Sequence[float], rows: Sequence[float]) -> np.ndarray:
    """A labelled lane's x on ``rows``: linear between its valid (x >= 0)
    points, NaN outside its labelled span or where it has none."""
    xs, ys, rows = (np.asarray(a, dtype=np.float64) for a in (xs, ys, rows))
    valid = xs >= 0
    out = np.full(rows.shape, np.nan)
    if not valid.any():
        return out
    order = np.argsort(ys[valid])
    yv, xv = ys[valid][order], xs[valid][order]
    inside = (rows >= yv[0]) & (rows <= yv[-1])
    out[inside] = np.interp(rows[inside], yv, xv)
    return out


def assign_slots(lanes: Sequence[Sequence[float]], h_samples: Sequence[float], width: int,
                 num_lanes: int) -> list[tuple[int, int]]:
    """(slot, lane index) pairs: lanes left of centre fill slots num_lanes//2 - 1
    down to 0 (nearest the centre first), lanes right of it the slots above."""
    ys = np.asarray(h_samples, dtype=np.float64)
    bottoms = []
    for i, lane in enumerate(lanes):
        xs = np.asarray(lane, dtype=np.float64)
        valid = np.flatnonzero(xs >= 0)
        if valid.size:
            bottoms.append((xs[valid[np.argmax(ys[valid])]], i))
    left = sorted((b for b in bottoms if b[0] < width / 2), reverse=True)
    right = sorted(b for b in bottoms if b[0] >= width / 2)
    n_left = num_lanes // 2
    pairs = [(n_left - 1 - k, i) for k, (_, i) in enumerate(left[:n_left])]
    pairs += [(n_left + k, i) for k, (_, i) in enumerate(right[: num_lanes - n_left])]
    return sorted(pairs)


def encode_targets(lanes: Sequence[Sequence[float]], h_samples: Sequence[float], width: int,
                   anchors: Sequence[float], griding_num: int, num_lanes: int) -> np.ndarray:
    """int64 [num_anchors, num_lanes]: the cell each slot's lane crosses on
    each anchor row, or ``griding_num`` for no lane."""
    target = np.full((len(anchors), num_lanes), griding_num, dtype=np.int64)
    cell_px = width / griding_num
    for slot, i in assign_slots(lanes, h_samples, width, num_lanes):
        x = lane_x_at_rows(lanes[i], h_samples, anchors)
        ok = ~np.isnan(x) & (x >= 0) & (x < width)
        target[ok, slot] = np.minimum(np.floor(x[ok] / cell_px), griding_num - 1).astype(np.int64)
    return target


# ---------------------------------------------------------------- decoding


def decode_cells(logits: torch.Tensor) -> torch.Tensor:
    """[B, G+1, A, L] logits -> [B, A, L] expected cell index, NaN where "no lane" wins."""
    g = logits.shape[1] - 1
    probs = logits[:, :g].float().softmax(dim=1)
    index = torch.arange(g, device=logits.device, dtype=probs.dtype).view(1, g, 1, 1)
    loc = (probs * index).sum(dim=1)
    return loc.masked_fill(logits.argmax(dim=1) == g, float("nan"))


def cells_to_x(loc: torch.Tensor | np.ndarray, width: float | torch.Tensor, griding_num: int):
    """Cell position -> x in frame pixels (the cell centre)."""
    return (loc + 0.5) * (width / griding_num)


def resample_to_rows(x_at_anchors: np.ndarray, anchors: Sequence[float], rows: Sequence[float]) -> np.ndarray:
    """x on ``rows`` from x on the anchors (NaN = none): exact on an anchor row,
    linear between two adjacent anchors that both have a point, else NaN."""
    a = np.asarray(anchors, dtype=np.float64)
    r = np.asarray(rows, dtype=np.float64)
    x = np.asarray(x_at_anchors, dtype=np.float64)
    hi = np.clip(np.searchsorted(a, r, side="left"), 0, len(a) - 1)
    lo = np.clip(hi - 1, 0, len(a) - 1)
    exact = a[hi] == r
    span = np.where(a[hi] > a[lo], a[hi] - a[lo], 1.0)
    w = np.clip((r - a[lo]) / span, 0.0, 1.0)
    with np.errstate(invalid="ignore"):
        val = np.where(exact, x[hi], x[lo] * (1 - w) + x[hi] * w)
    inside = (r >= a[0]) & (r <= a[-1])
    return np.where(inside, val, np.nan)


def lanes_from_anchors(x_at_anchors: np.ndarray, anchors: Sequence[float], h_samples: Sequence[float],
                       min_points: int = 2) -> list[list[int]]:
    """TuSimple lanes (int x per h_sample, -2 where none) from [A, L] pixel x,
    slot order; a slot with fewer than ``min_points`` points is not a lane."""
    lanes = []
    for slot in range(x_at_anchors.shape[1]):
        xs = resample_to_rows(x_at_anchors[:, slot], anchors, h_samples)
        ok = ~np.isnan(xs)
        if ok.sum() >= max(min_points, 1):
            lanes.append([int(round(v)) if k else NO_LANE_X for v, k in zip(xs, ok)])
    return lanes


# -------------------------------------------------------------------- loss


def lane_loss(logits: torch.Tensor, targets: torch.Tensor, *, focal_gamma: float = 0.0,
              similarity_weight: float = 0.0) -> torch.Tensor:
    """Mean (focal) cross-entropy over every (anchor, lane), plus
    ``similarity_weight`` times the mean L1 between adjacent anchors' logits."""
    logp = F.log_softmax(logits, dim=1)
    picked = logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    if focal_gamma > 0:
        picked = picked * (1.0 - picked.exp()).pow(focal_gamma)
    loss = -picked.mean()
    if similarity_weight > 0 and logits.shape[2] > 1:
        loss = loss + similarity_weight * (logits[:, :, 1:] - logits[:, :, :-1]).abs().mean()
    return loss
