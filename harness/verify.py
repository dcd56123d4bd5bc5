"""The harness's own check of what a method produced.

Never trust a plugin: after ``compress`` (and the standard quantizer) the
model is checked against the target.  Sparsity is counted from the weights
themselves; for a structured target only whole zero groups count as pruned
(the shared definitions in :mod:`prunebench.projections`), and N:M and pattern
layouts are checked group by group.  A quantized layer may hold at most
``Quantization.max_levels`` distinct values (binary: +-a plus the pruned
zero), and a non-uniform scheme's values must lie on its level set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .projections import structure_violations, structured_nonzeros
from .quant import max_values, off_level_set
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


@torch.no_grad()
def verify(
    model: nn.Module, target: Target, *, method: str = "the method", max_patterns: int | None = None
) -> Verification:
    """Raise VerificationError listing every way ``model`` misses ``target``.

    ``max_patterns`` caps distinct kernel patterns per layer for a pattern
    target (default: 8 for 4-of-9, 13 for 5-of-9 patterns).
    """
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight.detach() for n in target.layers}
    sizes = {n: w.numel() for n, w in weights.items()}
    total = sum(sizes.values())
    nnz = sum(int((w != 0).sum()) for w in weights.values())
    structure = target.structure
    kind = structure.kind
    structured = {n: structured_nonzeros(w, structure) for n, w in weights.items()}
    s_nnz = sum(structured.values())
    problems: list[str] = []
    for name, w in weights.items():
        for issue in structure_violations(w, structure, max_patterns=max_patterns):
            problems.append(f"structure: layer {name} {issue}")

    if target.rate is not None:
        budget = target.keep_budget(sizes)
        if s_nnz > budget:
            achieved = total / s_nnz if s_nnz else float("inf")
            what = (
                "nonzero weights" if kind == "unstructured"
                else f"weights stored by the {structure} format" if kind == "nm"
                else f"weights outside fully pruned {structure} groups"
            )
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
    quant = target.quantization
    if quant is not None:
        # max_levels counts codes; a 1-bit binary layer also holds the pruned zero
        limit = max(quant.max_levels, max_values(quant))
        for name, w in weights.items():
            count = int(torch.unique(w).numel())
            levels[name] = count
            if count > limit:
                problems.append(
                    f"quantization: layer {name} holds {count} distinct values; "
                    f"{quant.bits}-bit {quant.scheme} allows at most {limit} (zero included)"
                )
            issue = off_level_set(w, quant)
            if issue:
                problems.append(f"quantization: layer {name} {issue}")
            if quant.scheme == "binary" and int((w != 0).sum()) != structured[name]:
                problems.append(
                    f"quantization: layer {name} is binary but holds zeros inside kept {structure} groups"
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
