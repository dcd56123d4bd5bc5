"""PE-wise structured pruning + ternarization with Weight Penalty Clipping.

After "Harmonious Coexistence of Structured Weight Pruning and Ternarization
for Deep Neural Networks" (Yang, He, Fan, AAAI 2020, doi
10.1609/aaai.v34i04.6138).  Groups are the harness's ``pe:N`` groups (what
one of N processing elements reads from one input channel; see
:mod:`prunebench.projections`), weights end in {-a, 0, +a} with one a per
layer.

Phases (budget split by ``sparsify_share`` / ``finetune_share``):

1. sparsify: SGD on the task loss plus the group lasso
   lambda * sum_g ||W_g||_2 over the PE groups of the target layers, with
   Weight Penalty Clipping (below), trained ternary with a straight-through
   estimator (STE): each step's forward pass uses Q(P(W)), where P is the
   shared projection of the latent full-precision weights W onto the budget
   (``project_masks`` for ``pe:N``) and Q the suite's ternary quantizer
   (``quantize_``: survivors to +-a, a = mean |w| over them); the gradient
   taken at Q(P(W)) is applied to W unchanged, so dropped groups can return;
2. hard projection of W onto the budget (``project_masks``);
3. masked fine-tune, STE ternary with the mask fixed (the projected, ternarized
   model before it is the trainer's ``hard_prune`` checkpoint);
4. ternarization of the survivors (``quantize_`` with scheme ternary).

Our reading of Weight Penalty Clipping (the exact WPC formula is unverified;
the paper's abstract only names it "with a self-adapting threshold").  The
conflict it resolves: the group lasso shrinks every group, including those
that will survive, so they drift toward ternary's zero zone (the dropped
groups) and shrink the layer's scale a.  WPC zeroes ("clips") the group-lasso
gradient of every group whose score is at least a threshold t, so only
groups below t are pushed to zero.  t adapts to the target sparsity: it is
the score of the k-th best group, k the number of groups the budget keeps,
i.e. the smallest score among the groups that ``project_masks`` keeps for
the current W, recomputed every step.  The score is the group's RMS,
||W_g||_2 / sqrt(|g|), the ranking the shared projection uses across groups
of unequal size; with equal sizes, "score >= t" is "norm >= the k-th
largest group norm".  With ``allocation='uniform'`` there is one t per layer.

Other choices: the group lasso is unweighted (no sqrt(|g|) factor) as in the
formula above, and its (sub)gradient is zero for an all-zero group.  The
ternary zero zone is the dropped groups only: the harness reserves zero for
pruned weights, so there is no TWN-style Delta threshold inside kept groups.
The budget is split over layers ``uniform``ly by default (PE arrays are
sized per layer, and the global RMS ranking starves large-fan-in layers).
Always ternarizes (``quantizes`` is True): a suite quantization other than
ternary is rejected; with none, the model is ternarized all the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from prunebench import Callback, Method, Quantization, Structure
from prunebench.config import NonNegativeFloat, Validated
from prunebench.projections import Allocation, project_masks, structure_groups
from prunebench.quant import quantize_
from prunebench.recipes import (
    fit_within_budget,
    hard_project_,
    in_phase,
    record_hard_prune,
    split_budget,
    target_weights,
)

__all__ = [
    "PETernary",
    "PETernaryConfig",
    "group_lasso_grad",
    "group_scores",
    "wpc_threshold",
    "wpc_clip_",
]

TERNARY = Quantization(2, "ternary")


@dataclass(frozen=True)
class PETernaryConfig(Validated):
    #: lambda of the group lasso lambda * sum_g ||W_g||_2 (0 turns it off)
    group_lasso: NonNegativeFloat = 1e-4
    #: Weight Penalty Clipping on (off: plain group lasso, for ablations)
    wpc: bool = True
    #: budget split between the sparsify phase and the masked fine-tune (normalised)
    sparsify_share: NonNegativeFloat = 0.6
    finetune_share: NonNegativeFloat = 0.4
    #: "uniform" (same kept fraction per layer) by default: the global RMS ranking starves
    #: large-fan-in layers, whose weights are small (LeNet-5 fc1 kept 84 of 1600 groups at 4x)
    allocation: Allocation = "uniform"

    def __post_init__(self):
        super().__post_init__()
        if self.sparsify_share + self.finetune_share <= 0:
            raise ValueError(
                f"expected sparsify_share + finetune_share > 0, got {self.sparsify_share!r} + {self.finetune_share!r}"
            )


# ---------------------------------------------------------------- group lasso and WPC


def _group_sq(weight: torch.Tensor, gid: torch.Tensor, n: int) -> torch.Tensor:
    w = weight.detach().double().reshape(-1)
    return torch.zeros(n, dtype=torch.float64, device=w.device).index_add_(0, gid.reshape(-1), w * w)


def group_lasso_grad(weight: torch.Tensor, gid: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of sum_g ||W_g||_2 (weight-shaped) and the group norms.

    ``gid`` / ``n`` as from :func:`structure_groups`; an all-zero group gets
    the zero subgradient.
    """
    norms = _group_sq(weight, gid, n).sqrt()
    inv = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    return (weight.detach() * inv[gid].to(weight.dtype)), norms


def group_scores(weight: torch.Tensor, gid: torch.Tensor, n: int) -> torch.Tensor:
    """RMS of each group, ||W_g||_2 / sqrt(|g|): the projection's ranking across sizes."""
    size = torch.bincount(gid.reshape(-1), minlength=n).double()
    return (_group_sq(weight, gid, n) / size).sqrt()


def _kept_groups(mask: torch.Tensor, gid: torch.Tensor, n: int) -> torch.Tensor:
    hits = torch.zeros(n, dtype=torch.long, device=mask.device)
    return hits.index_add_(0, gid.reshape(-1), mask.reshape(-1).long()) > 0


def _thresholds(
    scores: Mapping[str, torch.Tensor], kept: Mapping[str, torch.Tensor], allocation: str
) -> dict[str, float]:
    per_layer = {n: float(scores[n][kept[n]].min()) if bool(kept[n].any()) else math.inf for n in scores}
    if allocation == "global":
        t = min(per_layer.values(), default=math.inf)
        return {n: t for n in per_layer}
    return per_layer


def wpc_threshold(
    weights: Mapping[str, torch.Tensor],
    structure: Structure | str,
    keep: int,
    *,
    allocation: str = "global",
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """WPC's self-adapting threshold per layer: the smallest group score
    (:func:`group_scores`) among the groups the shared projection keeps.

    That is the score of the k-th best group, k the groups the budget
    ``keep`` allows; one value for all layers under ``global`` allocation,
    one per layer under ``uniform``.  ``inf`` when no group is kept (nothing
    is protected).  ``masks`` reuses a projection already computed for
    ``weights``.
    """
    if masks is None:
        masks = project_masks(weights, structure, keep, allocation=allocation)
    scores, kept = {}, {}
    for name, w in weights.items():
        gid, n = structure_groups(w, structure)
        scores[name] = group_scores(w, gid, n)
        kept[name] = _kept_groups(masks[name], gid, n)
    return _thresholds(scores, kept, allocation)


def wpc_clip_(penalty_grad: torch.Tensor, gid: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero, in place, the penalty gradient of every group scoring >= ``threshold``.

    Returns the bool vector of clipped groups.
    """
    clipped = scores >= threshold
    penalty_grad.mul_((~clipped)[gid].to(penalty_grad.dtype))
    return clipped


# ---------------------------------------------------------------- training


class _TernarySTE(Callback):
    """STE ternary training of the target layers, plus the WPC group lasso.

    The parameters hold Q(P(W)) during forward and backward and the latent W
    during the optimizer step: ``begin`` / ``after_step`` write the ternary
    weights, ``after_backward`` restores W (the STE: the gradient passes
    through Q and P unchanged) and adds the clipped group-lasso gradient.
    With ``masks`` P is that fixed mask (fine-tune) and W stays masked.
    """

    def __init__(self, params, structure, keep, allocation, *, masks=None, group_lasso=0.0, wpc=True):
        self.params = params
        self.structure = structure
        self.keep = keep
        self.allocation = allocation
        self.fixed = masks
        self.group_lasso = group_lasso
        self.wpc = wpc
        self.groups = {n: structure_groups(p, structure) for n, p in params.items()}
        self.latent: dict[str, torch.Tensor] = {}
        self.current: dict[str, torch.Tensor] = {}
        self.trace: list[dict] = []
        self._clipped: list[float] = []
        self._thresholds: dict[str, float] = {}

    @torch.no_grad()
    def _write_ternary(self) -> None:
        self.latent = {n: p.detach().clone() for n, p in self.params.items()}
        self.current = self.fixed if self.fixed is not None else project_masks(
            self.latent, self.structure, self.keep, allocation=self.allocation
        )
        for n, p in self.params.items():
            q = self.latent[n] * self.current[n]
            quantize_(q, TERNARY)
            p.copy_(q)

    def begin(self) -> None:
        self._write_ternary()

    @torch.no_grad()
    def end(self) -> None:
        for n, p in self.params.items():
            p.copy_(self.latent[n])

    @torch.no_grad()
    def after_backward(self, trainer):
        for n, p in self.params.items():
            p.copy_(self.latent[n])
        if self.group_lasso > 0:
            scores = {n: group_scores(self.latent[n], *self.groups[n]) for n in self.params}
            thresholds = _thresholds(
                scores, {n: _kept_groups(self.current[n], *self.groups[n]) for n in self.params}, self.allocation
            ) if self.wpc else None
            clipped = total = 0
            for n, p in self.params.items():
                gid, ng = self.groups[n]
                g, _ = group_lasso_grad(self.latent[n], gid, ng)
                if thresholds is not None:
                    clipped += int(wpc_clip_(g, gid, scores[n], thresholds[n]).sum())
                total += ng
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(g, alpha=self.group_lasso)
            self._clipped.append(clipped / max(total, 1))
            self._thresholds = thresholds or {}
        if self.fixed is not None:
            for n, p in self.params.items():
                if p.grad is not None:
                    p.grad.mul_(self.fixed[n].to(p.grad.dtype))

    @torch.no_grad()
    def after_step(self, trainer):
        if self.fixed is not None:
            for n, p in self.params.items():
                p.mul_(self.fixed[n].to(p.dtype))
        self._write_ternary()

    @torch.no_grad()
    def after_epoch(self, trainer, epoch, mean_loss):
        row: dict = {"epoch": epoch, "loss": mean_loss}
        if self.group_lasso > 0:
            penalty = 0.0
            for n in self.params:
                gid, ng = self.groups[n]
                penalty += float(_group_sq(self.latent[n], gid, ng).sqrt().sum())
            row["group_lasso"] = self.group_lasso * penalty
            if self.wpc:
                row["clipped_fraction"] = sum(self._clipped) / max(len(self._clipped), 1)
                row["threshold"] = dict(self._thresholds) if self.allocation == "uniform" else next(
                    iter(self._thresholds.values()), math.inf)
        self._clipped = []
        self.trace.append(row)


def _ste_fit(trainer, epochs: float, ste: _TernarySTE, phase: str) -> None:
    """``fit_within_budget`` with the parameters ternary inside and latent outside the call,
    its steps counted as ``trainer.phase(phase)``."""
    ste.begin()
    try:
        with in_phase(trainer, phase):
            fit_within_budget(trainer, epochs, callbacks=[ste])
    finally:
        ste.end()


class PETernary(Method):
    """PE-wise group lasso with WPC, STE ternarization, hard PE projection."""

    Config = PETernaryConfig
    version = "1"
    structures = ("pe",)
    quantization_schemes = ("ternary",)
    quantizes = True

    def compress(self, model, target, trainer):
        cfg = self.config
        quant = target.quantization
        if quant is not None and quant.scheme != "ternary":
            raise ValueError(
                f"pe_ternary always ternarizes; the suite asks for {quant.bits}-bit {quant.scheme!r} "
                "quantization: set the suite's quantization scheme to 'ternary'"
            )
        if target.structure.kind != "pe":
            raise ValueError(f"pe_ternary produces structure pe:N, got {target.structure}")
        params = target_weights(model, target)
        keep = target.keep_budget({n: p.numel() for n, p in params.items()})
        epochs = split_budget(trainer.epochs_left, {"sparsify": cfg.sparsify_share, "finetune": cfg.finetune_share})
        info: dict = {"sparsify": [], "finetune": []}

        if cfg.sparsify_share > 0:
            ste = _TernarySTE(params, target.structure, keep, cfg.allocation,
                              group_lasso=cfg.group_lasso, wpc=cfg.wpc)
            _ste_fit(trainer, epochs["sparsify"], ste, "sparsify")
            info["sparsify"] = ste.trace

        masks = hard_project_(params, lambda w: project_masks(w, target.structure, keep, allocation=cfg.allocation,
                                                              floor=target.layer_floor))
        ste = _TernarySTE(params, target.structure, keep, cfg.allocation, masks=masks)
        ste.begin()  # the projected, ternarized model before fine-tuning: the trainer's hard_prune checkpoint
        try:
            info["hard_prune_metrics"] = record_hard_prune(trainer)
        finally:
            ste.end()
        if cfg.finetune_share > 0:
            _ste_fit(trainer, epochs["finetune"], ste, "finetune")
            info["finetune"] = ste.trace

        info["scales"] = {}
        with torch.no_grad():
            for n, p in params.items():
                p.mul_(masks[n].to(p.dtype))
                info["scales"][n] = quantize_(p.data, TERNARY).scale
        info["groups_kept"] = {}
        for n, m in masks.items():
            gid, ng = structure_groups(m, target.structure)
            info["groups_kept"][n] = [int(_kept_groups(m, gid, ng).sum()), ng]
        return info
