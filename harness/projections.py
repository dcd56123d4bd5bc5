"""Shared pruning projections: group definitions, exact Euclidean projections
onto every structure the harness verifies, and pattern libraries.

Every method (ADMM-NN arXiv 1812.11677, ADMM-NN-S, SLR arXiv 2012.10079,
PatDNN arXiv 2001.00138, ...) projects with :func:`project` /
:func:`project_masks`, and :mod:`prunebench.verify` checks results with
:func:`structured_nonzeros` / :func:`structure_violations`, so a method and its
check can never disagree on what a group is.

Layout.  A weight has shape (F, C, *k): F outputs, C inputs, K = prod(k)
kernel positions (K = 1 for a linear layer).  Its GEMM view is [F, C*K] with
columns in PyTorch order (c, kh, kw).  Groups (the unit a structure removes):

- ``unstructured``: every weight;
- ``filter``: one GEMM row W[f]; ``channel``: W[:, c]; ``column``: one GEMM
  column W[:, c, i, j]; ``kernel`` (connectivity): one kernel W[f, c] (a
  single weight for a linear layer);
- ``block:RxC``: an R x C tile of the GEMM view, tiles start at (0, 0); edge
  tiles may be partial (smaller);
- ``pe:N``: N processing elements; output row f belongs to PE p = f mod N
  (round-robin filter dealing), and a group is everything PE p reads from one
  input channel c: {W[f, c] : f = p (mod N)}.  Removing it lets PE p skip
  channel c altogether.  A layer with F < N uses only F PEs;
- ``N:M`` (kind ``nm``): M consecutive input channels at a fixed (f, i, j),
  i.e. along C in an NHWC / implicit-GEMM layout as sparse tensor cores want;
  when M does not divide C the last group is shorter.  At most N weights of
  each group survive;
- ``pattern``: connectivity groups (kernels); in addition every kept 3x3
  kernel keeps only the positions of one library pattern.  Rule for layers
  whose kernels are not 3x3 (e.g. a 7x7 stem, 1x1 convs, linear layers):
  they get ``kernel`` (connectivity) treatment, which for 1x1 convs and
  linear layers is unstructured pruning, since their kernel is one weight.

Selection: one engine for every structure.  :func:`project_masks` is the only
place a keep budget becomes masks; magnitude, random, ADMM, SLR, PatDNN and
PE-ternary all go through it.  For each layer it takes the groups of
:func:`structure_groups`, each with a *size* (the weights it keeps: for a
pattern 3x3 kernel, its pattern's size) and a *score*, higher kept.  The
default score is the group's importance per weight: energy / size, where the
energy sums the importance of the weights the group keeps and a weight's
importance is w^2 (so groups rank by L2 norm / sqrt(size); with equal sizes
everywhere the energy itself is used, which ranks the same without rounding).
A caller may give its own per-weight ``importance`` or per-group ``scores``
(random pruning gives random ones).  The rule, the same for every structure:

1. Floor.  Layer l with G_l groups keeps its best
   max(1, floor(min(floor_fraction, keep / total) * G_l)) groups whatever the
   allocation (``floor=None``: no floor).  Capping the fraction at the kept
   fraction means the floor never asks a layer for more than its uniform
   share, beyond the one-group minimum.  If the floors do not fit in ``keep``
   (the one-group minima can overshoot), floor groups beyond each layer's
   first are dropped, lowest-ranked first (the reverse of step 2), until
   they fit; if even one group per layer does not fit, no floor holds and
   steps 2 and 3 run alone (some layer then collapses, and
   :func:`prunebench.verify.verify` says which).
2. Ranking.  Groups sorted by score, highest first; ties go to the earlier
   layer (in the order given), then to the lower group id (stable sort).
3. ``global``: keep the floor groups, then the longest prefix of the ranking
   of all other groups (all layers together) that fits the rest of the
   budget.  ``uniform``: layer l's budget is floor(keep * n_l / n_total)
   weights and the same rule runs inside each layer; where a floor pushed a
   layer over its share, the lowest-ranked non-floor kept groups of all
   layers (the reverse of the ranking) are dropped until the total fits.

With equal group sizes and the default score this is the exact Euclidean
projection onto "whole groups, at most ``keep`` weights, at least the floor
in every layer" (with ``floor=None``, onto the plain constraint set).  With
unequal sizes (global allocation across layers, partial block tiles, pe
groups when N does not divide F, mixed pattern sizes) the exact projection
is a knapsack; the longest-prefix rule above is the greedy ratio rule.
N:M is the exception: it ignores ``keep``, ``allocation`` and the floor (its
budget is implied by N/M and no group can be emptied); each group keeps its
N most important weights, and ``keep`` is only checked against what the
format stores.

Everything is vectorised (loops only over layers) and deterministic on ties:
stable sorts, so among equal scores the lower flat group index wins (layers in
the order given), and among equally good patterns the earlier library entry.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable, Literal, Mapping, Sequence, get_args

import torch

from .target import DEFAULT_LAYER_FLOOR, Structure

__all__ = [
    "Allocation",
    "ALLOCATIONS",
    "DEFAULT_LAYER_FLOOR",
    "EFFECTIVE_KINDS",
    "meet_on_live_count",
    "GROUPED_KINDS",
    "PATTERNS_SLR_5OF9",
    "PATTERN_LIMITS",
    "group_view",
    "group_norms",
    "groups_to_mask",
    "keep_top",
    "magnitude_masks",
    "structured_nonzeros",
    "structured_live_mask",
    "as_structure",
    "structure_groups",
    "project",
    "project_masks",
    "pattern_library_pdnn",
    "nm_slots",
    "structure_violations",
]

#: how a keep budget is shared between layers (a method config's ``allocation`` field)
Allocation = Literal["global", "uniform"]
ALLOCATIONS = get_args(Allocation)


def _check_allocation(allocation: str) -> None:
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation: expected one of {', '.join(map(repr, ALLOCATIONS))}, got {allocation!r}")


#: kinds whose groups are a plain reshape (:func:`group_view`, :func:`groups_to_mask`); helpers for
#: methods with their own group parameters (autoprune's gates).  Selection is :func:`project_masks`.
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
        if w.dim() < 3:  # a linear layer's "kernel" is a single weight
            return w.reshape(-1, 1)
        return w.reshape(w.shape[0] * w.shape[1], -1)
    raise ValueError(f"no group definition for structure {kind!r}; expected one of {', '.join(GROUPED_KINDS)}")


def group_norms(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """L2 norm of each group (|w| for unstructured)."""
    return group_view(weight.detach().float(), kind).norm(dim=1)


def groups_to_mask(keep: torch.Tensor, shape: Sequence[int], kind: str) -> torch.Tensor:
    """Expand a boolean per-group keep vector to a weight-shaped mask."""
    shape = tuple(shape)
    if kind == "unstructured" or (kind == "kernel" and len(shape) < 3):
        return keep.reshape(shape)
    if kind == "filter":
        return keep.reshape(shape[0], *([1] * (len(shape) - 1))).expand(shape).clone()
    if kind == "channel":
        return keep.reshape(1, shape[1], *([1] * (len(shape) - 2))).expand(shape).clone()
    if kind == "column":
        return keep.reshape(1, *shape[1:]).expand(shape).clone()
    if kind == "kernel":
        return keep.reshape(shape[0], shape[1], *([1] * (len(shape) - 2))).expand(shape).clone()
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
    floor: float | None = DEFAULT_LAYER_FLOOR,
) -> dict[str, torch.Tensor]:
    """Masks keeping at most ``keep_weights`` weights, removing whole groups.

    The shared engine (:func:`project_masks`) under its older name, for any
    structure.  ``scores`` gives one score per group (default: group L2
    norm), compared across layers per sqrt(group size), i.e. as L2 norm /
    sqrt(size) would be; the module docstring has the allocation and floor.
    """
    st = as_structure(kind)
    if scores is not None:
        keys = {}
        for n, w in weights.items():
            ids, ng = structure_groups(w.shape, st)
            size = torch.bincount(ids.reshape(-1), minlength=ng).double()
            keys[n] = scores[n].detach().flatten().double().cpu() / size.sqrt()
        scores = keys
    return project_masks(weights, st, keep_weights, allocation=allocation, scores=scores, floor=floor)


# ---------------------------------------------------------------- structures


def as_structure(structure: Structure | str) -> Structure:
    """Accept a Structure or its suite spelling ("filter", "block:4x4", "2:4", ...)."""
    return structure if isinstance(structure, Structure) else Structure.parse(structure)


def _dims(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) < 2:
        raise ValueError(f"a prunable weight has at least 2 dims (F, C, *kernel), got shape {tuple(shape)}")
    return int(shape[0]), int(shape[1]), math.prod(int(s) for s in shape[2:])


def _is_3x3(shape: Sequence[int]) -> bool:
    return len(shape) == 4 and tuple(shape[2:]) == (3, 3)


# each rule: (F, C, K, params, flat index) -> (group id per weight, number of groups)
def _g_unstructured(F, C, K, p, idx):
    return idx, F * C * K


def _g_filter(F, C, K, p, idx):
    return idx // (C * K), F


def _g_channel(F, C, K, p, idx):
    return (idx % (C * K)) // K, C


def _g_column(F, C, K, p, idx):
    return idx % (C * K), C * K


def _g_kernel(F, C, K, p, idx):
    return idx // K, F * C  # K == 1 for linear layers: one weight per group


def _g_block(F, C, K, p, idx):
    R, Cb = p
    cols = -(-(C * K) // Cb)
    return (idx // (C * K) // R) * cols + (idx % (C * K)) // Cb, -(-F // R) * cols


def _g_pe(F, C, K, p, idx):
    pes = min(p[0], F)
    return (idx // (C * K) % pes) * C + (idx % (C * K)) // K, pes * C


def _g_nm(F, C, K, p, idx):
    M = p[1]
    per = -(-C // M)
    f, j = idx // (C * K), idx % (C * K)
    return (f * K + j % K) * per + (j // K) // M, F * K * per


_GROUP_RULES: dict[str, Callable] = {
    "unstructured": _g_unstructured,
    "filter": _g_filter,
    "channel": _g_channel,
    "column": _g_column,
    "kernel": _g_kernel,
    "pattern": _g_kernel,  # connectivity groups; the in-kernel pattern is checked separately
    "block": _g_block,
    "pe": _g_pe,
    "nm": _g_nm,
}


def structure_groups(
    weight: torch.Tensor | Sequence[int], structure: Structure | str
) -> tuple[torch.Tensor, int]:
    """Group id of every weight (a LongTensor shaped like ``weight``) and the group count.

    ``weight`` may be a tensor or just its shape.  Ids run over 0..n-1 and
    every id has at least one weight.
    """
    st = as_structure(structure)
    shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else tuple(weight)
    device = weight.device if isinstance(weight, torch.Tensor) else None
    F, C, K = _dims(shape)
    idx = torch.arange(F * C * K, device=device)
    ids, n = _GROUP_RULES[st.kind](F, C, K, st.params, idx)
    return ids.reshape(shape), int(n)


def nm_slots(shape: Sequence[int], n: int, m: int) -> int:
    """Weights an N:M format stores for a layer: min(N, group size) per group."""
    F, C, K = _dims(shape)
    return F * K * ((C // m) * n + min(n, C % m))


# ---------------------------------------------------------------- patterns

_CENTRE = 4
_NONCENTRE = (0, 1, 2, 3, 5, 6, 7, 8)
_PDNN_CANDIDATES = list(itertools.combinations(range(8), 3))  # 56, lexicographic
_PDNN_MASKS = torch.zeros(len(_PDNN_CANDIDATES), 9, dtype=torch.bool)
_PDNN_LOOKUP = torch.full((256,), -1, dtype=torch.long)  # bitmask over the 8 non-centre cells -> candidate
for _i, _comb in enumerate(_PDNN_CANDIDATES):
    _PDNN_MASKS[_i, _CENTRE] = True
    _PDNN_MASKS[_i, [_NONCENTRE[b] for b in _comb]] = True
    _PDNN_LOOKUP[sum(1 << b for b in _comb)] = _i


def _masks_from_text(rows: Iterable[str]) -> torch.Tensor:
    return torch.tensor([[ch == "1" for ch in r.replace("/", "")] for r in rows], dtype=torch.bool).reshape(-1, 3, 3)


#: 13 fixed 3x3 masks keeping 5 of 9 weights, all with the centre, for SLR's
#: "pattern" type (arXiv 2012.10079).  This is our own deterministic choice:
#: the plus, four T shapes (a full edge row/column plus the stem through the
#: centre), and the four 2x2 quadrants around the centre each extended by one
#: of the two centre-adjacent cells outside the quadrant.  The exact 13 masks
#: of the SLR code were not checked, so results need not match theirs.
#: Do not modify in place.
PATTERNS_SLR_5OF9 = _masks_from_text(
    [
        "010/111/010",  # plus
        "111/010/010", "010/010/111", "100/111/100", "001/111/001",  # T: top, bottom, left, right
        "110/111/000", "110/110/010",  # top-left quadrant + right / + bottom
        "011/111/000", "011/011/010",  # top-right quadrant + left / + bottom
        "010/110/110", "000/111/110",  # bottom-left quadrant + top / + right
        "010/011/011", "000/111/011",  # bottom-right quadrant + top / + left
    ]
)

#: default cap on distinct patterns per layer, by kept weights per kernel
#: (PatDNN's 4-of-9 library of 8; SLR's 5-of-9 library of 13)
PATTERN_LIMITS = {4: 8, 5: 13}


def _kernels9(kernels) -> torch.Tensor:
    if isinstance(kernels, Mapping):
        kernels = list(kernels.values())
    if isinstance(kernels, torch.Tensor):
        kernels = [kernels]
    parts = []
    for k in kernels:
        if k.dim() < 2 or tuple(k.shape[-2:]) != (3, 3):
            raise ValueError(f"pattern libraries are built from 3x3 kernels, got shape {tuple(k.shape)}")
        parts.append(k.detach().reshape(-1, 9).float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, 9)


def pattern_library_pdnn(kernels, size: int = 8) -> torch.Tensor:
    """PatDNN-style library (arXiv 2001.00138): ``size`` 4-of-9 masks with the centre.

    ``kernels`` is a tensor (..., 3, 3) or a sequence / mapping of them.  Each
    nonzero kernel votes for the mask made of the centre and its 3 largest
    other |w| (ties: lower position); all-zero kernels do not vote.  Returns a
    bool tensor (size, 3, 3), most voted first; ties, and slots beyond the
    masks that got votes, go to the 56 candidates in lexicographic order.
    """
    if not 1 <= size <= len(_PDNN_CANDIDATES):
        raise ValueError(f"a 4-of-9 library with the centre has 1..56 patterns, got size={size}")
    k = _kernels9(kernels).abs()
    k = k[(k != 0).any(dim=1)]
    top3 = torch.argsort(k[:, list(_NONCENTRE)], dim=1, descending=True, stable=True)[:, :3]
    codes = (torch.ones_like(top3) << top3).sum(dim=1)
    votes = torch.bincount(_PDNN_LOOKUP[codes], minlength=len(_PDNN_CANDIDATES))
    order = torch.argsort(votes, descending=True, stable=True)[:size]
    return _PDNN_MASKS[order].reshape(-1, 3, 3).clone()


def _as_library(library) -> torch.Tensor:
    lib = torch.as_tensor(library)
    if lib.dim() == 3:
        lib = lib.reshape(lib.shape[0], -1)
    if lib.dim() != 2 or lib.shape[1] != 9 or lib.shape[0] == 0:
        raise ValueError(f"a pattern library is a non-empty (P, 3, 3) or (P, 9) mask tensor, got shape {tuple(lib.shape)}")
    lib = lib != 0
    if not lib.any(dim=1).all():
        raise ValueError("a pattern library may not contain an empty pattern")
    return lib


# ---------------------------------------------------------------- projection


def _floor_counts(groups: Sequence[int], numels: Sequence[int], keep: int, floor: float | None) -> list[int]:
    """Groups each layer keeps whatever the allocation: max(1, floor(min(floor, keep/total) * G))."""
    if floor is None:
        return [0] * len(groups)
    total = sum(numels)
    if not 0 <= floor <= 1:
        raise ValueError(f"floor: expected a fraction in [0, 1] or None, got {floor!r}")
    out = []
    for g in groups:
        if floor * total >= keep:  # the kept fraction is the smaller: exact integer arithmetic
            share = keep * g // total if total else 0
        else:
            share = math.floor(floor * g + 1e-9)
        out.append(min(g, max(1, share)))
    return out


def _select(
    keys: list[torch.Tensor], sizes: list[torch.Tensor], numels: list[int], keep: int, allocation: str,
    floor: float | None,
) -> list[torch.Tensor]:
    """The selection rule of the module docstring on CPU tensors, one per layer: which groups to keep."""
    counts = [k.numel() for k in keys]
    orders = [torch.argsort(k, descending=True, stable=True) for k in keys]
    offsets = list(itertools.accumulate([0, *counts]))
    key, size = torch.cat(keys), torch.cat(sizes)
    chosen = torch.zeros(key.numel(), dtype=torch.bool)

    def drop_worst(candidates: torch.Tensor, excess: int) -> torch.Tensor:
        """The fewest of ``candidates``, lowest-ranked first (ties: later layer, higher id), freeing ``excess``."""
        worst_first = torch.argsort(key, descending=True, stable=True).flip(0)
        worst_first = worst_first[candidates[worst_first]]
        return worst_first[: int((torch.cumsum(size[worst_first], 0) < excess).sum()) + 1]

    # 1. floor: a prefix of each layer's own ranking
    need = _floor_counts(counts, numels, keep, floor)

    def floor_set(need):
        return torch.cat([o[:f] + off for o, f, off in zip(orders, need, offsets)]) if keys else torch.zeros(0, dtype=torch.long)

    fixed = floor_set(need)
    excess = int(size[fixed].sum()) - keep
    if excess > 0:
        first = floor_set([min(f, 1) for f in need])
        if int(size[first].sum()) > keep:  # not one group per layer fits: no floor can hold
            fixed = first[:0]
        else:  # drop floor groups beyond each layer's first, lowest-ranked first, until the floors fit
            held = torch.zeros_like(chosen)
            held[fixed] = True
            extra = held.clone()
            extra[first] = False
            held[drop_worst(extra, excess)] = False
            fixed = torch.nonzero(held).flatten()
    chosen[fixed] = True

    def prefix(order: torch.Tensor, budget: int) -> torch.Tensor:
        order = order[~chosen[order]]
        return order[torch.cumsum(size[order], 0) <= budget] if budget > 0 else order[:0]

    # 2 and 3: the ranking, then the longest prefix that fits
    if allocation == "global":
        ranking = torch.argsort(key, descending=True, stable=True)
        chosen[prefix(ranking, keep - int(size[chosen].sum()))] = True
    else:
        total = sum(numels)
        for o, off, n in zip(orders, offsets, numels):
            o = o + off
            share = keep * n // total if total else 0
            chosen[prefix(o, share - int(size[o][chosen[o]].sum()))] = True
        excess = int(size[chosen].sum()) - keep
        if excess > 0:  # floors went over some shares: drop the lowest-ranked non-floor groups
            droppable = chosen.clone()
            droppable[fixed] = False
            chosen[drop_worst(droppable, excess)] = False
    return list(chosen.split(counts))


def _nm_mask(importance: torch.Tensor, n: int, m: int) -> torch.Tensor:
    x = importance.movedim(1, -1)  # (F, *k, C): groups run along C
    c = x.shape[-1]
    pad = (-c) % m
    x = torch.nn.functional.pad(x, (0, pad), value=-math.inf)  # padding never outranks a real weight
    g = x.reshape(*x.shape[:-1], -1, m)
    order = torch.argsort(g, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    return keep.reshape(*x.shape[:-1], c + pad)[..., :c].movedim(-1, 1).contiguous()


#: structures whose budget the engine meets on the dependency-aware count when a
#: counter is set (N:M fixes its own budget; unstructured and pattern rarely free a unit)
EFFECTIVE_KINDS = frozenset({"filter", "channel", "column", "kernel", "block", "pe"})
_FROM_CONTEXT = object()


def project_masks(
    weights: Mapping[str, torch.Tensor],
    structure: Structure | str,
    keep: int,
    *,
    allocation: str = "global",
    pattern_library=None,
    importance: Mapping[str, torch.Tensor] | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    floor: float | None = DEFAULT_LAYER_FLOOR,
    counter=_FROM_CONTEXT,
) -> dict[str, torch.Tensor]:
    """Bool masks keeping at most ``keep`` weights of ``weights`` in ``structure``.

    The one group engine: the module docstring gives the groups, the floor,
    the selection rule and N:M.  With the defaults it is the Euclidean
    projection (greedy where group sizes differ).  ``importance``: a tensor
    per layer shaped like its weight (default w^2), which decides group
    energies, the N kept of every N:M group and the pattern of each 3x3
    kernel.  ``scores``: one score per group (ids of :func:`structure_groups`),
    higher kept, replacing energy / size in the ranking.  ``floor``: the
    per-layer floor fraction (:attr:`prunebench.Target.layer_floor`; None:
    none).  ``pattern_library`` (pattern only): a (P, 3, 3) mask tensor such
    as :data:`PATTERNS_SLR_5OF9`; None distils a PatDNN library of 8 from all
    3x3 kernels in ``weights`` (one library shared by all layers).  A mask may
    keep a group whose weights are all zero; it never keeps more than ``keep``
    weights unless no single group fits.

    ``counter`` (structures in :data:`EFFECTIVE_KINDS`): a callable giving the
    weights masks leave alive once dependent units are removed
    (:class:`prunebench.dependency.EffectiveCounter`); the budget is then met
    on that count: the same ranking, with the largest nominal budget whose
    live count is at most ``keep`` (bisection; more groups kept never means
    fewer live).  By default the counter the harness set around the method
    (:func:`prunebench.dependency.counting_effective`), if any; None: the
    nominal count.
    """
    st = as_structure(structure)
    _check_allocation(allocation)
    keep = int(keep)
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    names = list(weights)

    def imp(k: str) -> torch.Tensor:
        w = weights[k].detach()
        if importance is None:
            return w.double() ** 2  # float32 squares are exact in float64
        t = importance[k].detach()
        if t.shape != w.shape:
            raise ValueError(f"importance[{k!r}]: expected shape {tuple(w.shape)}, got {tuple(t.shape)}")
        return t.to(w.device, torch.float64)

    if st.kind == "nm":
        n, m = st.params
        stored = sum(nm_slots(weights[k].shape, n, m) for k in names)
        if keep < stored:
            raise ValueError(
                f"{st} stores {stored} weights for these layers (N/M of them), more than keep={keep}; "
                "N:M fixes the budget, pick a rate of at most M/N"
            )
        return {k: _nm_mask(imp(k), n, m) for k in names}

    lib = None
    if st.kind == "pattern":
        lib = _as_library(
            pattern_library
            if pattern_library is not None
            else pattern_library_pdnn([w for w in weights.values() if _is_3x3(w.shape)] or torch.zeros(0, 3, 3))
        )
    ids, energy, size, inner = {}, {}, {}, {}
    for k in names:
        w = weights[k].detach()
        gid, ng = structure_groups(w, st)
        value = imp(k).reshape(-1)
        if lib is not None and _is_3x3(w.shape):
            libd = lib.to(w.device)
            kept = value.reshape(-1, 9) @ libd.double().t()  # importance each pattern keeps, per kernel
            best = kept.argmax(dim=1)  # first maximum: earlier library entry wins ties
            energy[k] = kept.gather(1, best[:, None]).squeeze(1)
            size[k] = libd.sum(dim=1)[best]
            inner[k] = libd[best].reshape(w.shape)
        else:
            energy[k] = torch.zeros(ng, dtype=torch.float64, device=w.device).index_add_(0, gid.reshape(-1), value)
            size[k] = torch.bincount(gid.reshape(-1), minlength=ng)
        ids[k] = gid
    sizes = [size[k].cpu().long() for k in names]
    if scores is not None:
        keys = []
        for k, s in zip(names, sizes):
            sc = scores[k].detach().flatten().double().cpu()
            if sc.numel() != s.numel():
                raise ValueError(f"scores[{k!r}]: expected {s.numel()} group scores for {st}, got {sc.numel()}")
            keys.append(sc)
    elif len({int(v) for s in sizes for v in s.unique()}) <= 1:
        keys = [energy[k].cpu() for k in names]  # equal sizes: energy ranks the same, without rounding
    else:
        keys = [energy[k].cpu() / s.double() for k, s in zip(names, sizes)]

    numels = [weights[k].numel() for k in names]

    def masks_at(budget: int) -> dict[str, torch.Tensor]:
        out = {}
        for k, c in zip(names, _select(keys, sizes, numels, budget, allocation, floor)):
            mask = c.to(ids[k].device)[ids[k]]
            out[k] = mask & inner[k] if k in inner else mask
        return out

    return meet_on_live_count(masks_at, keep, sum(numels), st, counter=counter)


def meet_on_live_count(masks_at: Callable[[int], dict], keep: int, total: int, structure: Structure | str,
                       *, counter=_FROM_CONTEXT) -> dict:
    """``masks_at(budget)`` (bool masks keeping at most ``budget`` weights) at the
    largest budget whose masks leave at most ``keep`` weights alive by
    ``counter`` (see :func:`project_masks`); ``masks_at(keep)`` without a
    counter or for structures outside :data:`EFFECTIVE_KINDS`.  A method with
    its own selection calls this so its structured budget is counted as
    every other method's is."""
    if counter is _FROM_CONTEXT:
        from .dependency import current_counter

        counter = current_counter()
    if counter is None or as_structure(structure).kind not in EFFECTIVE_KINDS or keep >= total:
        return masks_at(keep)
    best = masks_at(keep)
    accepts = getattr(counter, "accepts", None)
    if accepts is not None and not accepts(best):
        return best  # masks for something other than the model's layers: nominal count
    # live <= nominal, so `keep` itself fits: bisect for the largest nominal budget that still does
    lo, hi = keep, total
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trial = masks_at(mid)
        if counter(trial) <= keep:
            lo, best = mid, trial
        else:
            hi = mid
    return best


def project(
    weights: Mapping[str, torch.Tensor],
    structure: Structure | str,
    keep: int,
    *,
    allocation: str = "global",
    pattern_library=None,
    floor: float | None = DEFAULT_LAYER_FLOOR,
) -> dict[str, torch.Tensor]:
    """Euclidean projection of ``weights``: the masked weights of :func:`project_masks` (inputs untouched)."""
    masks = project_masks(weights, structure, keep, allocation=allocation, pattern_library=pattern_library, floor=floor)
    return {k: torch.where(masks[k], weights[k].detach(), torch.zeros_like(weights[k])) for k in weights}


# ---------------------------------------------------------------- checking


def _kernel_nonzeros(weight: torch.Tensor) -> torch.Tensor:
    return (weight.detach().reshape(-1, 9) != 0).sum(dim=1)


def structured_nonzeros(weight: torch.Tensor, kind: Structure | str) -> int:
    """Weights a structured format must store for ``weight``.

    Only *whole* zero groups count as removed; zeros scattered inside kept
    groups do not count towards a structured target.  Pattern 3x3 layers
    store each kept kernel at the layer's largest kernel size (its pattern
    size); N:M layers store min(N, group size) per group whatever the values.
    """
    st = as_structure(kind)
    if st.kind == "nm":
        return nm_slots(weight.shape, *st.params)
    if st.kind == "pattern" and _is_3x3(weight.shape):
        nz = _kernel_nonzeros(weight)
        return int((nz > 0).sum()) * int(nz.max()) if nz.numel() else 0
    gid, ng = structure_groups(weight, st)
    gid = gid.reshape(-1)
    alive = torch.zeros(ng, dtype=torch.long, device=gid.device).index_add_(
        0, gid, (weight.detach().reshape(-1) != 0).long()
    ) > 0
    return int(torch.bincount(gid, minlength=ng)[alive].sum())


def structured_live_mask(weight: torch.Tensor, kind: Structure | str) -> torch.Tensor:
    """Bool mask of the weights in groups of ``kind`` that hold a nonzero (what a
    structured format stores; :func:`structured_nonzeros` is its sum for
    every kind but N:M and pattern)."""
    gid, ng = structure_groups(weight, as_structure(kind))
    gid = gid.reshape(-1)
    alive = torch.zeros(ng, dtype=torch.long, device=gid.device).index_add_(
        0, gid, (weight.detach().reshape(-1) != 0).long()
    ) > 0
    return alive[gid].reshape(weight.shape)


def structure_violations(
    weight: torch.Tensor,
    structure: Structure | str,
    *,
    max_patterns: int | None = None,
    max_pattern_size: int = 5,
) -> list[str]:
    """Ways ``weight`` breaks ``structure`` beyond its weight count (empty if none).

    N:M: a group holds more than N nonzeros.  Pattern (3x3 layers only): a
    kernel keeps more than ``max_pattern_size`` of 9, or the layer uses more
    than ``max_patterns`` distinct patterns (default :data:`PATTERN_LIMITS`
    by pattern size: 8 for 4-of-9, 13 for 5-of-9).  A kernel with fewer
    nonzeros than the layer's pattern size (a zero inside its pattern) counts
    as a pattern only if no full-size kernel's pattern covers it.  Other
    structures are fully checked by :func:`structured_nonzeros`.
    """
    st = as_structure(structure)
    w = weight.detach()
    if st.kind == "nm":
        n, m = st.params
        gid, ng = structure_groups(w, st)
        counts = torch.bincount(gid.reshape(-1), weights=(w.reshape(-1) != 0).double(), minlength=ng)
        bad = int((counts > n).sum())
        return [f"has {bad} of {ng} groups of {m} input weights with more than {n} nonzeros ({st})"] if bad else []
    if st.kind != "pattern" or not _is_3x3(w.shape):
        return []
    problems = []
    nz = _kernel_nonzeros(w)
    s = int(nz.max()) if nz.numel() else 0
    if s == 0:
        return []
    if s > max_pattern_size:
        problems.append(f"has kernels keeping {s} of 9 weights; pattern pruning keeps at most {max_pattern_size}")
    bits = torch.tensor([1 << i for i in range(9)], device=w.device)
    codes = ((w.reshape(-1, 9) != 0).long() * bits).sum(dim=1)
    full = torch.unique(codes[nz == s])
    small = torch.unique(codes[(nz > 0) & (nz < s)])
    covered = ((small[:, None] & full[None, :]) == small[:, None]).any(dim=1)
    used = full.numel() + int((~covered).sum())
    limit = max_patterns if max_patterns is not None else PATTERN_LIMITS.get(s, 8 if s < 4 else 13)
    if used > limit:
        problems.append(f"uses {used} distinct kernel patterns; at most {limit} allowed")
    return problems
