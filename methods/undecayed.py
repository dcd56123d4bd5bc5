"""Undecayed Pruning (UP): gradient pruning with the weight decay taken out of
the loss's variation (Good et al., "Recall Distortion in Neural Network Pruning
and the Undecayed Pruning Algorithm", NeurIPS 2022, arXiv 2206.02976, section 3).

Reading of the paper, and every choice made here:

- **The score (the paper's).**  For a network trained on a loss L with weight
  decay ε, let T(θ) = L(θ) - ε/2 ||θ||^2 be the loss without the decay term.
  Zeroing weight i changes T, to first order, by
  T(θ~) - T(θ̄) ≈ -θ̄_i ∇_iT(θ̄) = -θ̄_i ∇_iL(θ̄) + ε θ̄_i^2,
  and UP prunes the weights with the smallest |-θ̄_i ∇_iL(θ̄) + ε θ̄_i^2|.
  The first term is gradient (Taylor) pruning, the second magnitude pruning
  weighted by ε; at a stationary point of the training loss UP is magnitude
  pruning (the paper's argument for magnitude pruning under weight decay).
- **Which gradient is ∇L (a reading).**  Taken literally, with ∇L the gradient
  of the decayed objective (data loss gradient g plus εθ), the score
  collapses to |θ̄_i g_i|, which is gradient pruning on the data loss, the
  very ranking ShrinkBench's gradient pruning uses (its ``GlobalMagGrad``:
  |w * grad| of the cross-entropy, weight decay left to the optimizer).  But
  the paper reports UP and gradient pruning ranking differently (its
  figure 5 and table 8; UP was "implemented over ShrinkBench", section 6.1).
  So ∇L here is the gradient of the loss as back-propagated, the task's
  loss, with the decay applied by the optimizer and not in the gradient
  (as in this harness's Trainer and in ShrinkBench): score
  s_i = |-θ̄_i g_i + ε θ̄_i^2|.  ``decay_in_gradient: true`` takes the
  literal reading instead (g + εθ̄ in place of g, i.e. s_i = |θ̄_i g_i|).
- **Where the gradient comes from (a choice).**  The paper's estimate is on
  the training set at the trained weights θ̄; ShrinkBench takes one training
  batch.  Here the gradient is the mean of ``gradient_batches`` training
  batches' gradients (default 8; at most half the budget's steps, at least
  one, so a small budget still fine-tunes), all at θ̄: the trainer runs that
  many counted steps with learning rate 0 (the weights do not move; the
  samples and steps count against the budget like any training, because the
  harness refuses backward passes outside ``trainer.fit``; batch-norm running
  statistics, where a model has them, do see those batches).
- **ε (a choice where the paper is silent on plumbing).**  ``weight_decay``;
  when unset, the weight decay of the trainer's optimizer, i.e. the suite's
  ``budget.optimizer`` (5e-4 unless the suite says otherwise).  A method is
  handed the compression budget's trainer, not the dense recipe, so a suite
  whose dense model was trained with another decay should name it here.
  With ε = 0, UP is gradient pruning.
- **Selection (a choice beyond the paper, which prunes unstructured weights
  globally).**  One global ranking over the target layers by default
  (``allocation``), through the harness's group engine
  (:func:`prunebench.projections.project_masks` with ``scores``, with the
  target's per-layer floor and keep budget).  For a structured target the
  first-order change of removing a whole group is the sum of its members'
  signed changes, so a group's score is |Σ_{i in group} (-θ̄_i g_i + ε θ̄_i^2)|
  divided by the group's size (per weight kept, as magnitude's group energy
  is).  Pattern and N:M are not declared: their inner choices (which pattern
  per kernel, which N of M) are the engine's magnitude decisions.
- **After pruning.**  Masked fine-tuning with the rest of the budget
  (``finetune_fraction`` of the steps left), as ``magnitude`` does; the
  paper fine-tunes after pruning too (15 epochs for LeNet-5, section 6.1).
- **No budget.**  With no step left for a gradient, g = 0 and UP is
  magnitude pruning (the paper's limiting case); the info dict says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from prunebench import Callback, Method
from prunebench.config import Between, Ge, Validated
from prunebench.projections import Allocation, project_masks, structure_groups

from ._baselines import steps_left_int, target_weights
from .magnitude import prune_and_finetune

__all__ = ["UndecayedPruning", "UndecayedConfig", "undecayed_saliency", "group_scores"]


@dataclass(frozen=True)
class UndecayedConfig(Validated):
    allocation: Allocation = "global"
    #: ε of the paper; None: the trainer's optimizer weight decay (the suite's budget.optimizer)
    weight_decay: Annotated[float, Ge(0)] | None = None
    #: training batches whose gradients at the dense weights are averaged (ShrinkBench: 1); at most half the budget
    gradient_batches: Annotated[int, Ge(1)] = 8
    #: the literal reading: ∇L includes the decay term, so the score is |θ g| (see the module docstring)
    decay_in_gradient: bool = False
    #: fraction of the steps left after the gradient that fine-tunes masked (the rest is unused)
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0


def undecayed_saliency(weight: torch.Tensor, grad: torch.Tensor, weight_decay: float, *,
                       decay_in_gradient: bool = False) -> torch.Tensor:
    """The signed first-order change of T = L - ε/2 ||θ||^2 from zeroing each
    weight: -θ ∇L + ε θ^2 (float64); UP ranks by its absolute value."""
    w, g = weight.detach().double(), grad.detach().double()
    if decay_in_gradient:
        g = g + weight_decay * w
    return -w * g + weight_decay * w * w


def group_scores(saliency: torch.Tensor, structure) -> torch.Tensor:
    """One score per group of ``structure`` (higher kept): |Σ saliency| / group size."""
    gid, ng = structure_groups(saliency, structure)
    flat = gid.reshape(-1)
    total = torch.zeros(ng, dtype=torch.float64, device=saliency.device).index_add_(0, flat, saliency.reshape(-1))
    size = torch.bincount(flat, minlength=ng).double()
    return total.abs() / size


class _MeanGradient(Callback):
    """Sums the target layers' weight gradients over the steps of one fit."""

    def __init__(self, names):
        self.names = list(names)
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def after_backward(self, trainer):
        modules = dict(trainer.model.named_modules())
        with torch.no_grad():
            for n in self.names:
                g = modules[n].weight.grad
                if g is not None:
                    g = g.detach().double()
                    self.sums[n] = self.sums[n] + g if n in self.sums else g.clone()
        self.steps += 1

    def mean(self, n: str, like: torch.Tensor) -> torch.Tensor:
        if n not in self.sums or self.steps == 0:
            return torch.zeros_like(like, dtype=torch.float64)
        return self.sums[n] / self.steps


class UndecayedPruning(Method):
    """Prune by |-θ ∇L + ε θ^2| (Undecayed Pruning), then fine-tune masked."""

    Config = UndecayedConfig
    version = "1"
    structures = ("unstructured", "filter", "channel", "column", "kernel", "block", "pe")

    def compress(self, model, target, trainer):
        cfg = self.config
        eps = float(trainer.optimizer_config.weight_decay if cfg.weight_decay is None else cfg.weight_decay)
        weights = target_weights(model, target)
        # at most half the steps left, so a small budget still fine-tunes
        left = steps_left_int(trainer)
        steps = min(cfg.gradient_batches, max(1, left // 2)) if left else 0
        info: dict = {"weight_decay": eps, "gradient_steps": steps, "decay_in_gradient": cfg.decay_in_gradient}
        acc = _MeanGradient(weights)
        if steps >= 1:
            # learning rate 0: gradients at the dense weights θ̄, counted as training
            with trainer.phase("gradient"):
                trainer.fit(steps=steps, lr=0.0, callbacks=[acc])
        else:
            info["criterion"] = "magnitude (no budget for a gradient: g = 0)"
        weights = target_weights(model, target)  # unchanged by the lr-0 steps; re-read all the same
        scores = {}
        for n, w in weights.items():
            if steps >= 1:
                sal = undecayed_saliency(w, acc.mean(n, w), eps, decay_in_gradient=cfg.decay_in_gradient)
            else:  # g = 0: |ε θ^2| ranks as |θ|, also when ε = 0
                sal = w.detach().double() ** 2
            scores[n] = group_scores(sal, target.structure)
        keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
        masks = project_masks(weights, target.structure, keep, allocation=cfg.allocation, scores=scores,
                              floor=target.layer_floor)
        info.update(prune_and_finetune(model, target, trainer, masks, cfg.finetune_fraction))
        return info
