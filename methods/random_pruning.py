"""Random pruning: the control every pruning benchmark needs.

Groups (weights, filters, channels, tiles, PE groups, kernels, ...) are
ranked by random scores drawn from a generator seeded by the run's seed, and
selected by the same group engine, allocation and per-layer floor as every
other method (:func:`prunebench.projections.project_masks`); within a group
the random choices are random too (the N kept of an N:M group, the library
pattern of a 3x3 kernel, from a library voted by random values).  Then the same masked fine-tuning as magnitude
pruning runs.  A method that does not beat this control at equal compression
has shown nothing (Blalock et al., arXiv 2003.03033).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench import Method
from prunebench.projections import Allocation, pattern_library_pdnn, project_masks, structure_groups

from .magnitude import MagnitudeConfig, prune_and_finetune

__all__ = ["RandomPruning", "RandomConfig"]


@dataclass(frozen=True)
class RandomConfig(MagnitudeConfig):
    allocation: Allocation = "uniform"


class RandomPruning(Method):
    """Remove randomly chosen weights or groups, then fine-tune masked."""

    Config = RandomConfig
    version = "2"  # 2: every structure, per-layer floor
    structures = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe", "nm")

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        weights = {n: modules[n].weight.detach() for n in target.layers}
        sizes = {n: w.numel() for n, w in weights.items()}
        structure = target.structure
        # the trainer's generator is seeded by the run's seed
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=trainer.generator)))
        # scores drawn first, layer by layer, as in version 1: same groups for the five old structures
        scores = None
        if structure.kind != "nm":  # N:M selects inside groups only
            scores = {n: torch.rand(structure_groups(w.shape, structure)[1], generator=gen) for n, w in weights.items()}
        importance, library = None, None
        if structure.kind in ("nm", "pattern"):  # random N of M, random pattern per kernel
            importance = {n: torch.rand(w.shape, generator=gen) for n, w in weights.items()}
        if structure.kind == "pattern":  # a library voted by the random values, not by the weights
            kernels = [importance[n] for n, w in weights.items() if w.dim() == 4 and tuple(w.shape[2:]) == (3, 3)]
            library = pattern_library_pdnn(kernels or torch.zeros(0, 3, 3))
        masks = project_masks(
            weights, structure, target.keep_budget(sizes), allocation=self.config.allocation,
            scores=scores, importance=importance, pattern_library=library, floor=target.layer_floor,
        )
        return prune_and_finetune(model, target, trainer, masks, self.config.finetune_fraction)
