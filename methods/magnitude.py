"""Magnitude pruning: keep the largest weights (or groups), then fine-tune.

One-shot pruning by |w| (unstructured) or by group L2 norm per weight, for
every structure, through the shared group engine
(:func:`prunebench.projections.project_masks`: the Euclidean projection,
greedy where group sizes differ), with ``global`` allocation (one ranking
over all compressible layers) or ``uniform`` allocation (the same fraction
in every layer), both keeping the target's per-layer floor; followed by
masked fine-tuning for the whole budget.  The baseline every
pruning paper compares against (Han et al., arXiv 1506.02626).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from prunebench import KeepMasked, Method
from prunebench.config import Between, Validated
from prunebench.projections import Allocation, project_masks

__all__ = ["MagnitudePruning", "MagnitudeConfig", "prune_and_finetune"]


@dataclass(frozen=True)
class MagnitudeConfig(Validated):
    allocation: Allocation = "global"
    #: fraction of the budget spent fine-tuning after pruning (the rest is unused)
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0


def prune_and_finetune(model, target, trainer, masks: dict[str, torch.Tensor], finetune_fraction: float) -> dict:
    """Apply ``masks`` to the target layers, then masked fine-tuning."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask.to(modules[name].weight.dtype))
    trainer.record_hard_prune()  # accuracy right after the projection, before any fine-tuning
    # the share of the steps left, rounded down to whole steps
    steps = int(trainer.steps_left * finetune_fraction) if trainer.steps_left != float("inf") else 0
    report = None
    if steps >= 1:
        with trainer.phase("finetune"):
            report = trainer.fit(steps=steps, callbacks=[KeepMasked(masks)])
    return {"finetune_epochs": 0.0 if report is None else report.epochs,
            "finetune_losses": [] if report is None else report.epoch_losses}


class MagnitudePruning(Method):
    """Prune the smallest weights or groups by magnitude, then fine-tune masked."""

    Config = MagnitudeConfig
    version = "2"  # 2: one group engine for every structure, per-layer floor
    structures = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe", "nm")

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        weights = {n: modules[n].weight.detach() for n in target.layers}
        sizes = {n: w.numel() for n, w in weights.items()}
        keep = target.keep_budget(sizes)
        masks = project_masks(
            weights, target.structure, keep, allocation=self.config.allocation, floor=target.layer_floor
        )
        return prune_and_finetune(model, target, trainer, masks, self.config.finetune_fraction)
