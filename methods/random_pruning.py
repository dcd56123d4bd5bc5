"""Random pruning: the control every pruning benchmark needs.

Groups (weights, filters, channels, ...) are ranked by random scores drawn
from a generator seeded by the run's seed, then the same masked fine-tuning
as magnitude pruning runs.  A method that does not beat this control at equal
compression has shown nothing (Blalock et al., arXiv 2003.03033).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench import Method
from prunebench.projections import Allocation, group_view, magnitude_masks

from .magnitude import MagnitudeConfig, prune_and_finetune

__all__ = ["RandomPruning", "RandomConfig"]


@dataclass(frozen=True)
class RandomConfig(MagnitudeConfig):
    allocation: Allocation = "uniform"


class RandomPruning(Method):
    """Remove randomly chosen weights or groups, then fine-tune masked."""

    Config = RandomConfig
    version = "1"
    structures = ("unstructured", "filter", "channel", "column", "kernel")

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        weights = {n: modules[n].weight.detach() for n in target.layers}
        sizes = {n: w.numel() for n, w in weights.items()}
        kind = target.structure.kind
        # the trainer's generator is seeded by the run's seed
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=trainer.generator)))
        scores = {n: torch.rand(group_view(w, kind).shape[0], generator=gen) for n, w in weights.items()}
        # global allocation divides by sqrt(group size); undo it so random stays uniform over groups
        if self.config.allocation == "global":
            scores = {n: s * group_view(weights[n], kind).shape[1] ** 0.5 for n, s in scores.items()}
        masks = magnitude_masks(
            weights, kind, target.keep_budget(sizes), allocation=self.config.allocation, scores=scores
        )
        return prune_and_finetune(model, target, trainer, masks, self.config.finetune_fraction)
