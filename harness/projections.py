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

Projection.  The constraint set is "whole groups only, at most ``keep``
weights in kept groups" (for pattern: kept kernels times their pattern size).
The Euclidean projection keeps the groups with the most squared norm.  With
equal group sizes this is exact: keep the floor(budget / size) groups of
largest norm.  With unequal sizes (global allocation across layers, partial
block tiles, pe groups when N does not divide F, mixed pattern sizes) the
exact projection is a knapsack; we use the greedy ratio rule instead: rank
groups by squared norm per weight and keep the longest prefix that fits the
budget.  ``allocation='uniform'`` gives each layer the budget
floor(keep * n_layer / n_total) and projects each layer on its own.
N:M ignores ``keep`` and ``allocation`` (its budget is implied by N/M); it
only validates that ``keep`` is not below what the N:M format stores.

Everything is vectorised (loops only over layers) and deterministic on ties:
stable sorts, so among equal scores the lower flat group index wins (layers in
the order given), and among equally good patterns the earlier library entry.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable, Literal, Mapping, Sequence, get_args

import torch

from .target import Structure

__all__ = [
    "Allocation",
    "ALLOCATIONS",
    "GROUPED_KINDS",
    "PATTERNS_SLR_5OF9",
    "PATTERN_LIMITS",
    "group_view",
    "group_norms",
    "groups_to_mask",
    "keep_top",
    "magnitude_masks",
    "structured_nonzeros",
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
) -> dict[str, torch.Tensor]:
    """Masks keeping at most ``keep_weights`` weights, removing whole groups.

    ``scores`` gives one score per group (default: group L2 norm); groups
    with the highest scores are kept.  ``global`` ranks groups of all layers
    together, by score divided by sqrt(group size) so layers with different
    group sizes compare fairly; ``uniform`` keeps the same fraction of groups
    in every layer (at least one group per layer, so a layer is never cut off
    entirely; :func:`project_masks` is the exact projection without that floor).
    """
    _check_allocation(allocation)
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
        # the one-group floor may overshoot the budget: drop the weakest extra groups (normalised score)
        kept = sum(int(keep[n].sum()) * group_size[n] for n in names)
        if kept > keep_weights:
            cand = [(float(sc[n][i]) / math.sqrt(group_size[n]), j, n, int(i))
                    for j, n in enumerate(names) if int(keep[n].sum()) > 1
                    for i in torch.nonzero(keep[n]).flatten().tolist()]
            for _, _, n, i in sorted(cand):
                if kept <= keep_weights:
                    break
                if int(keep[n].sum()) > 1:
                    keep[n][i] = False
                    kept -= group_size[n]
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


def _greedy(energy: torch.Tensor, size: torch.Tensor, budget: int) -> torch.Tensor:
    """Keep groups by energy per weight, longest prefix within ``budget`` weights."""
    keep = torch.zeros(energy.numel(), dtype=torch.bool, device=energy.device)
    if energy.numel() == 0 or budget <= 0:
        return keep
    # equal sizes: rank by energy itself, so no rounding from the division
    score = energy if bool(size.min() == size.max()) else energy / size.to(energy.dtype)
    order = torch.argsort(score, descending=True, stable=True)
    keep[order[torch.cumsum(size[order], 0) <= budget]] = True
    return keep


def _nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    x = w.detach().abs().movedim(1, -1)  # (F, *k, C): groups run along C
    c = x.shape[-1]
    pad = (-c) % m
    x = torch.nn.functional.pad(x, (0, pad), value=-1.0)  # padding never outranks a real |w|
    g = x.reshape(*x.shape[:-1], -1, m)
    order = torch.argsort(g, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    return keep.reshape(*x.shape[:-1], c + pad)[..., :c].movedim(-1, 1).contiguous()


def project_masks(
    weights: Mapping[str, torch.Tensor],
    structure: Structure | str,
    keep: int,
    *,
    allocation: str = "global",
    pattern_library=None,
) -> dict[str, torch.Tensor]:
    """Bool masks of the Euclidean projection of ``weights`` onto ``structure`` with <= ``keep`` weights.

    See the module docstring for groups, the greedy rule for unequal group
    sizes and N:M.  ``pattern_library`` (pattern only): a (P, 3, 3) mask
    tensor such as :data:`PATTERNS_SLR_5OF9`; None distils a PatDNN library of
    8 from all 3x3 kernels in ``weights`` (one library shared by all layers).
    A mask may keep a group whose weights are all zero; it never keeps more
    than ``keep`` weights.
    """
    st = as_structure(structure)
    _check_allocation(allocation)
    keep = int(keep)
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    names = list(weights)
    if st.kind == "nm":
        n, m = st.params
        stored = sum(nm_slots(weights[k].shape, n, m) for k in names)
        if keep < stored:
            raise ValueError(
                f"{st} stores {stored} weights for these layers (N/M of them), more than keep={keep}; "
                "N:M fixes the budget, pick a rate of at most M/N"
            )
        return {k: _nm_mask(weights[k], n, m) for k in names}

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
        sq = w.double().reshape(-1) ** 2  # float32 squares are exact in float64
        if lib is not None and _is_3x3(w.shape):
            libd = lib.to(w.device)
            kept = sq.reshape(-1, 9) @ libd.double().t()  # energy each pattern keeps, per kernel
            best = kept.argmax(dim=1)  # first maximum: earlier library entry wins ties
            energy[k] = kept.gather(1, best[:, None]).squeeze(1)
            size[k] = libd.sum(dim=1)[best]
            inner[k] = libd[best].reshape(w.shape)
        else:
            energy[k] = torch.zeros(ng, dtype=torch.float64, device=w.device).index_add_(0, gid.reshape(-1), sq)
            size[k] = torch.bincount(gid.reshape(-1), minlength=ng)
        ids[k] = gid

    if allocation == "uniform":
        total = sum(weights[k].numel() for k in names)
        chosen = {k: _greedy(energy[k], size[k], keep * weights[k].numel() // total) for k in names}
    else:
        devices = {k: energy[k].device for k in names}
        flat = _greedy(torch.cat([energy[k].cpu() for k in names]), torch.cat([size[k].cpu() for k in names]), keep)
        chosen = dict(zip(names, (c.to(devices[k]) for k, c in zip(names, flat.split([energy[k].numel() for k in names])))))
    out = {}
    for k in names:
        mask = chosen[k][ids[k]]
        out[k] = mask & inner[k] if k in inner else mask
    return out


def project(
    weights: Mapping[str, torch.Tensor],
    structure: Structure | str,
    keep: int,
    *,
    allocation: str = "global",
    pattern_library=None,
) -> dict[str, torch.Tensor]:
    """Euclidean projection of ``weights``: the masked weights of :func:`project_masks` (inputs untouched)."""
    masks = project_masks(weights, structure, keep, allocation=allocation, pattern_library=pattern_library)
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
