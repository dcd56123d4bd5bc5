"""The harness's own check of what a method produced.

Never trust a plugin: after ``compress`` (and the standard quantizer) the
model is checked against the target.  Sparsity is counted from the weights
themselves; for a structured target only whole zero groups count as pruned;
a quantized layer may hold at most ``Quantization.max_levels`` distinct values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .projections import GROUPED_KINDS, structured_nonzeros
from .target import Target

__all__ = ["VerificationError", "Verification", "verify"]


class VerificationError(AssertionError):
    """The compressed model does not meet its target."""


@dataclass(frozen=True)
class Verification:
    total_weights: int
    nonzero_weights: int
    #: nonzeros once only whole groups of the target structure count as pruned
    structured_nonzero_weights: int
    achieved_rate: float
    levels_per_layer: Mapping[str, int]


def _count_nonzeros(w: torch.Tensor, kind: str) -> int:
    if kind in GROUPED_KINDS:
        return structured_nonzeros(w, kind)
    # structures whose verification lands with their projections (pattern, block, pe, n:m)
    raise VerificationError(f"the harness cannot yet verify structure {kind!r}")


@torch.no_grad()
def verify(model: nn.Module, target: Target, *, method: str = "the method") -> Verification:
    """Raise VerificationError listing every way ``model`` misses ``target``."""
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight.detach() for n in target.layers}
    sizes = {n: w.numel() for n, w in weights.items()}
    total = sum(sizes.values())
    nnz = sum(int((w != 0).sum()) for w in weights.values())
    kind = target.structure.kind
    structured = {n: _count_nonzeros(w, kind) for n, w in weights.items()}
    s_nnz = sum(structured.values())
    problems: list[str] = []

    if target.rate is not None:
        budget = target.keep_budget(sizes)
        if s_nnz > budget:
            achieved = total / s_nnz if s_nnz else float("inf")
            what = "nonzero weights" if kind == "unstructured" else f"weights outside fully pruned {kind} groups"
            problems.append(
                f"sparsity: target rate {target.rate:g}x allows {budget} nonzero weights of {total}; "
                f"{method} left {s_nnz} {what} (achieved {achieved:.3g}x)"
            )
    else:
        assert target.layer_sparsity is not None
        for name, s in target.layer_sparsity.items():
            allowed = Target(layers=(name,), layer_sparsity={name: s}).keep_budget({name: sizes[name]})
            if structured[name] > allowed:
                problems.append(
                    f"sparsity: layer {name} target {s:.4g} allows {allowed} nonzeros; "
                    f"{method} left {structured[name]}"
                )

    levels: dict[str, int] = {}
    if target.quantization is not None:
        limit = target.quantization.max_levels
        for name, w in weights.items():
            count = int(torch.unique(w).numel())
            levels[name] = count
            if count > limit:
                problems.append(
                    f"quantization: layer {name} holds {count} distinct values; "
                    f"{target.quantization.bits}-bit {target.quantization.scheme} allows at most {limit} (zero included)"
                )
    if problems:
        raise VerificationError(f"{method} missed its target ({target.describe()}):\n  " + "\n  ".join(problems))
    return Verification(
        total_weights=total,
        nonzero_weights=nnz,
        structured_nonzero_weights=s_nnz,
        achieved_rate=total / s_nnz if s_nnz else float("inf"),
        levels_per_layer=levels,
    )
