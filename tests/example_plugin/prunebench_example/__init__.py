"""Layer-wise magnitude pruning: the same sparsity in every layer, then masked fine-tuning."""

from dataclasses import dataclass

import torch
from prunebench import KeepMasked, Method
from prunebench.projections import magnitude_masks


@dataclass(frozen=True)
class Config:
    finetune: bool = True


class LayerwiseMagnitude(Method):
    Config = Config
    version = "1"
    structures = ("unstructured", "filter")

    def compress(self, model, target, trainer):
        mods = dict(model.named_modules())
        weights = {n: mods[n].weight.detach() for n in target.layers}
        budget = target.keep_budget({n: w.numel() for n, w in weights.items()})
        masks = magnitude_masks(weights, target.structure.kind, budget, allocation="uniform")
        with torch.no_grad():
            for n, m in masks.items():
                mods[n].weight.mul_(m)
        if self.config.finetune and trainer.epochs_left > 0:
            trainer.fit(trainer.epochs_left, callbacks=[KeepMasked(masks)])
        return {"layers": len(masks)}
