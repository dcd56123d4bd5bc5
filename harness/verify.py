"""The harness's own check of what a method produced.

Never trust a plugin: after ``compress`` (and the standard quantizer) the
model is checked against the target.  Sparsity is counted from the weights
themselves; for a structured target only whole zero groups count as pruned
(the shared definitions in :mod:`prunebench.projections`), and N:M and pattern
layouts are checked group by group.  A quantized layer may hold at most
``Quantization.max_levels`` distinct values (binary: +-a plus the pruned
zero), and its values must lie on the scheme's level set (uniform: one step's
multiples; pow2: one scale times powers of two; ternary / binary: one
magnitude; levels: the given values).

No collapsed layers: a target layer whose every output unit (filter / row)
is all zero is refused, naming it, unless ``target.allow_collapsed`` (the
suite's ``layers.allow_collapsed``) says the suite accepts it.

Any NaN or Inf in a parameter or buffer is refused, naming it.  Given the
dense model's state (``dense=``), layers outside ``target.layers`` are
checked too: a Conv2d / Linear weight there may not gain zeros, and a
method that did not train (``trained=False``) may change nothing but the
weights of its target layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .projections import EFFECTIVE_KINDS, structure_violations, structured_nonzeros
from .quant import max_values, off_level_set
from .target import Target

__all__ = ["VerificationError", "Verification", "verify", "nonfinite", "unlisted_changes", "collapsed_layers"]


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
def nonfinite(model: nn.Module) -> list[str]:
    """"NaN in conv1.weight", "Inf in bn.running_var": every parameter or buffer holding one."""
    out = []
    seen: set[int] = set()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if id(t) in seen or not (t.is_floating_point() or t.is_complex()):
            continue
        seen.add(id(t))
        if bool(torch.isnan(t).any()):
            out.append(f"NaN in {name}")
        if bool(torch.isinf(t).any()):
            out.append(f"Inf in {name}")
    return out


@torch.no_grad()
def collapsed_layers(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the layers with no live output unit: every output row / filter all zero."""
    return [n for n, w in weights.items() if w.numel() and not bool((w.reshape(w.shape[0], -1) != 0).any())]


@torch.no_grad()
def unlisted_changes(
    model: nn.Module, dense: Mapping[str, torch.Tensor], layers, *, trained: bool
) -> list[str]:
    """How ``model`` changed what a method may not touch, against the dense state.

    Every Conv2d / Linear outside ``layers`` keeps the dense model's nonzeros
    ("excluded layer fc3: 420 weights zeroed that were nonzero in the dense
    model").  Without training (``trained=False``) every tensor of the state
    but the target layers' weights must be bitwise the dense one: biases,
    normalisation, excluded layers.  With training they may change, as
    training changes them.
    """
    layers = set(layers)
    problems: list[str] = []
    for name, module in model.named_modules():
        if name in layers or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        key = f"{name}.weight" if name else "weight"
        if key not in dense:
            continue
        w, d = module.weight.detach(), dense[key].to(module.weight.device)
        if w.shape != d.shape:
            continue  # the clean-model check names reshaped tensors
        zeroed = int(((d != 0) & (w == 0)).sum())
        if zeroed:
            problems.append(f"excluded layer {name}: {zeroed} weights zeroed that were nonzero in the dense model")
    if not trained:
        own = {f"{n}.weight" if n else "weight" for n in layers}
        changed = [k for k, v in model.state_dict().items()
                   if k not in own and k in dense
                   and not (v.shape == dense[k].shape and torch.equal(v, dense[k].to(v.device, v.dtype)))]
        if changed:
            shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
            problems.append(
                f"changed without training: {shown} (a method that does not train may change only "
                f"the weights of target.layers)"
            )
    return problems


@torch.no_grad()
def verify(
    model: nn.Module, target: Target, *, method: str = "the method", max_patterns: int | None = None,
    dense: Mapping[str, torch.Tensor] | None = None, trained: bool = True,
    effective_nonzero: Mapping[str, int] | None = None,
) -> Verification:
    """Raise VerificationError listing every way ``model`` misses ``target``.

    ``max_patterns`` caps distinct kernel patterns per layer for a pattern
    target (default: 8 for 4-of-9, 13 for 5-of-9 patterns).  ``dense`` (the
    dense model's state_dict) adds the checks of :func:`unlisted_changes`
    on the layers outside the target; ``trained`` says whether the method
    trained (the harness counts it).  ``effective_nonzero``: per target layer,
    the weights of its live groups left once dependent units are removed
    (:class:`prunebench.dependency.EffectiveCounter`); for structures in
    :data:`prunebench.projections.EFFECTIVE_KINDS` the rate is checked on it.
    A target whose rate is of MACs (``target.rate_of``) has no weight budget
    here; :func:`prunebench.macs.verify_macs` checks it on the effective model.
    """
    bad = nonfinite(model)
    if bad:
        raise VerificationError(f"{method} left non-finite numbers in the model: " + "; ".join(bad))
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight.detach() for n in target.layers}
    sizes = {n: w.numel() for n, w in weights.items()}
    total = sum(sizes.values())
    nnz = sum(int((w != 0).sum()) for w in weights.values())
    structure = target.structure
    kind = structure.kind
    structured = {n: structured_nonzeros(w, structure) for n, w in weights.items()}
    if effective_nonzero is not None and kind in EFFECTIVE_KINDS:
        structured = {n: min(c, int(effective_nonzero[n])) for n, c in structured.items()}
    s_nnz = sum(structured.values())
    problems: list[str] = []
    for name, w in weights.items():
        for issue in structure_violations(w, structure, max_patterns=max_patterns):
            problems.append(f"structure: layer {name} {issue}")
    if not target.allow_collapsed:
        for name in collapsed_layers(weights):
            problems.append(
                f"collapsed: layer {name} has no live output (all {weights[name].shape[0]} output units are zero); "
                f"set layers.allow_collapsed in the suite to accept it"
            )

    if target.rate is not None and target.rate_of == "weights":
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
    elif target.layer_sparsity is not None:  # (a MACs rate is counted by prunebench.macs.verify_macs)
        for name, s in target.layer_sparsity.items():
            allowed = Target(layers=(name,), layer_sparsity={name: s}).keep_budget({name: sizes[name]})
            if structured[name] > allowed:
                problems.append(
                    f"sparsity: layer {name} target {s:.4g} allows {allowed} nonzeros; "
                    f"{method} left {structured[name]}"
                )

    if dense is not None:
        problems += unlisted_changes(model, dense, target.layers, trained=trained)

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
