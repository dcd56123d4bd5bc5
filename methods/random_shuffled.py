"""Layer-wise shuffled random pruning: the control that separates *how much*
to prune per layer from *which* weights to prune.

Global magnitude pruning makes two decisions at once: how many weights (or
filters) each layer keeps, and which ones.  This control keeps the first
decision exactly and randomises the second: each target layer keeps exactly
as many weights (unstructured) or filters (filter) as global magnitude
pruning would keep there (:func:`prunebench.projections.project_masks`,
``allocation: global``, the target's per-layer floor: the same call the
``magnitude`` method makes), but which ones is drawn uniformly at random
inside the layer, from a generator seeded by the run's seed.  Then the same
masked fine-tuning as magnitude pruning, for the whole budget (or the
``finetune_fraction`` share of it).

This is the "layerwise shuffling" sanity check of Frankle, Dziugaite, Roy
and Carbin (arXiv 2009.08576) and Su et al. (arXiv 2009.11094): where
shuffled masks do as well as magnitude masks, the method's value lies in
its per-layer sparsities, not in its choice of weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from prunebench import Method
from prunebench.config import Between, Validated
from prunebench.projections import groups_to_mask, project_masks, structure_groups

from ._baselines import masked_finetune, run_generator, target_weights

__all__ = ["RandomShuffled", "RandomShuffledConfig", "shuffled_masks"]


@dataclass(frozen=True)
class RandomShuffledConfig(Validated):
    #: share of the budget spent on masked fine-tuning (rounded down to whole steps)
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0


def shuffled_masks(weights, target, generator: torch.Generator) -> tuple[dict, dict]:
    """(magnitude masks, shuffled masks): the same kept group count per layer, random groups."""
    sizes = {n: w.numel() for n, w in weights.items()}
    magnitude = project_masks(weights, target.structure, target.keep_budget(sizes), allocation="global",
                              floor=target.layer_floor)
    kind = target.structure.kind
    shuffled = {}
    for name, w in weights.items():  # layers in target order: the draws are reproducible
        ids, ng = structure_groups(w.shape, target.structure)
        kept_groups = torch.zeros(ng, dtype=torch.bool)
        kept_groups[ids.reshape(-1).cpu()[magnitude[name].reshape(-1).cpu()]] = True
        k = int(kept_groups.sum())
        choice = torch.zeros(ng, dtype=torch.bool)
        choice[torch.randperm(ng, generator=generator)[:k]] = True
        shuffled[name] = groups_to_mask(choice, w.shape, kind).to(w.device)
    return magnitude, shuffled


class RandomShuffled(Method):
    """Magnitude's per-layer kept counts, random weights or filters inside each layer."""

    Config = RandomShuffledConfig
    version = "1"
    structures = ("unstructured", "filter")

    def compress(self, model, target, trainer):
        weights = target_weights(model, target)
        _, masks = shuffled_masks(weights, target, run_generator(trainer))
        kept = {n: int(m.sum()) for n, m in masks.items()}
        return {"kept_per_layer": kept, **masked_finetune(model, trainer, masks, self.config.finetune_fraction)}
