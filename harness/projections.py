"""Shared pruning projections: group definitions and top-k keep masks.

A *group* is the unit a structure removes at once.  For a weight of shape
(F, C, kh, kw) (conv) or (F, C) (linear):

- ``unstructured``: every weight is its own group;
- ``filter``: one output channel / row, W[f];
- ``channel``: everything reading one input channel, W[:, c];
- ``column``: one (c, kh, kw) position across all filters, W[:, c, i, j];
- ``kernel``: one kh x kw kernel, W[f, c].

All functions are vectorised and deterministic on ties (stable sort: among
equal scores the lower flat index is kept).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

__all__ = [
    "GROUPED_KINDS",
    "group_view",
    "group_norms",
    "groups_to_mask",
    "keep_top",
    "magnitude_masks",
    "structured_nonzeros",
]

GROUPED_KINDS = ("unstructured", "filter", "channel", "column", "kernel")


def group_view(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Reshape ``weight`` to (n_groups, group_size) for ``kind``."""
    w = weight
    if kind == "unstructured":
        return w.reshape(-1, 1)
    if kind == "filter":
        return w.reshape(w.shape[0], -1)
    if kind == "channel":
        return w.transpose(0, 1).reshape(w.shape[1], -1)
    if kind == "column":
        return w.reshape(w.shape[0], -1).t()
    if kind == "kernel":
        if w.dim() != 4:  # a linear layer's "kernel" is a single weight
            return w.reshape(-1, 1)
        return w.reshape(w.shape[0] * w.shape[1], -1)
    raise ValueError(f"no group definition for structure {kind!r}; expected one of {', '.join(GROUPED_KINDS)}")


def group_norms(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """L2 norm of each group (|w| for unstructured)."""
    return group_view(weight.detach().float(), kind).norm(dim=1)


def groups_to_mask(keep: torch.Tensor, shape: Sequence[int], kind: str) -> torch.Tensor:
    """Expand a boolean per-group keep vector to a weight-shaped mask."""
    shape = tuple(shape)
    if kind == "unstructured" or (kind == "kernel" and len(shape) != 4):
        return keep.reshape(shape)
    if kind == "filter":
        return keep.reshape(shape[0], *([1] * (len(shape) - 1))).expand(shape).clone()
    if kind == "channel":
        return keep.reshape(1, shape[1], *([1] * (len(shape) - 2))).expand(shape).clone()
    if kind == "column":
        return keep.reshape(1, *shape[1:]).expand(shape).clone()
    if kind == "kernel":
        return keep.reshape(shape[0], shape[1], 1, 1).expand(shape).clone()
    raise ValueError(f"no group definition for structure {kind!r}")


def keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask keeping the ``k`` largest scores; ties go to the lower index."""
    k = max(0, min(int(k), scores.numel()))
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k:
        order = torch.argsort(scores.flatten(), descending=True, stable=True)
        keep[order[:k]] = True
    return keep.reshape(scores.shape)


def magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    kind: str,
    keep_weights: int,
    *,
    allocation: str = "global",
    scores: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Masks keeping at most ``keep_weights`` weights, removing whole groups.

    ``scores`` gives one score per group (default: group L2 norm); groups
    with the highest scores are kept.  ``global`` ranks groups of all layers
    together, by score divided by sqrt(group size) so layers with different
    group sizes compare fairly; ``uniform`` keeps the same fraction of groups
    in every layer (at least one group per layer).
    """
    if allocation not in ("global", "uniform"):
        raise ValueError(f"allocation must be 'global' or 'uniform', got {allocation!r}")
    names = list(weights)
    total = sum(w.numel() for w in weights.values())
    group_size = {n: group_view(weights[n], kind).shape[1] for n in names}
    sc = {n: (scores[n] if scores is not None else group_norms(weights[n], kind)).flatten().float().cpu() for n in names}
    keep: dict[str, torch.Tensor] = {}
    if allocation == "uniform":
        fraction = keep_weights / total
        for n in names:
            n_groups = sc[n].numel()
            k = max(1, math.floor(n_groups * fraction + 1e-9)) if kind != "unstructured" else math.floor(n_groups * fraction + 1e-9)
            keep[n] = keep_top(sc[n], k)
    else:
        normalised = torch.cat([sc[n] / math.sqrt(group_size[n]) for n in names])
        sizes = torch.cat([torch.full((sc[n].numel(),), group_size[n], dtype=torch.long) for n in names])
        order = torch.argsort(normalised, descending=True, stable=True)
        cumulative = torch.cumsum(sizes[order], 0)
        chosen = order[cumulative <= keep_weights]
        flat = torch.zeros(normalised.numel(), dtype=torch.bool)
        flat[chosen] = True
        start = 0
        for n in names:
            count = sc[n].numel()
            keep[n] = flat[start : start + count]
            start += count
    return {n: groups_to_mask(keep[n], weights[n].shape, kind).to(weights[n].device) for n in names}


def structured_nonzeros(weight: torch.Tensor, kind: str) -> int:
    """Weights left once only *whole* zero groups count as removed.

    This is what a structured format can skip; zeros scattered inside kept
    groups do not count towards a structured target.
    """
    view = group_view(weight.detach(), kind)
    alive = (view != 0).any(dim=1)
    return int(alive.sum()) * view.shape[1]
