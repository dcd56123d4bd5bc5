"""Small pieces the baseline plugins share (gmp, imp_lrr, tp_structured, obc,
random_shuffled): target weights, applying masks, masked fine-tuning, and a
callback that keeps arbitrary parameter entries at zero.

Private to ``prunebench.methods``; nothing here is part of the public API.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from prunebench import Callback, KeepMasked

__all__ = ["target_modules", "target_weights", "apply_masks_", "masked_finetune", "ZeroEntries",
           "sparsity_of", "steps_left_int", "run_generator"]


def target_modules(model: nn.Module, target) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    return {n: modules[n] for n in target.layers}


def target_weights(model: nn.Module, target) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in target_modules(model, target).items()}


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        w = modules[name].weight
        w.mul_(mask.to(w.device, w.dtype))


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Pruned fraction over all masked weights."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def steps_left_int(trainer) -> int:
    """The trainer's steps left as an int (0 when unlimited: a method has no budget to plan with)."""
    left = trainer.steps_left
    return 0 if left == math.inf else int(left)


def run_generator(trainer) -> torch.Generator:
    """A CPU generator seeded from the trainer's (itself seeded by the run's seed)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=trainer.generator))
    return torch.Generator().manual_seed(seed)


def masked_finetune(model: nn.Module, trainer, masks: Mapping[str, torch.Tensor], fraction: float = 1.0,
                    extra: Callback | None = None) -> dict:
    """Apply ``masks``, then masked fine-tuning for ``fraction`` of the steps left (rounded down)."""
    apply_masks_(model, masks)
    trainer.record_hard_prune()  # the projected model, before any fine-tuning
    steps = int(steps_left_int(trainer) * fraction)
    if steps < 1:
        return {"finetune_steps": 0, "finetune_losses": []}
    callbacks = [KeepMasked(masks)] + ([extra] if extra is not None else [])
    with trainer.phase("finetune"):
        report = trainer.fit(steps=steps, callbacks=callbacks)
    return {"finetune_steps": report.steps, "finetune_losses": report.epoch_losses}


class ZeroEntries(KeepMasked):
    """Keeps chosen entries of any parameters at exactly zero during training
    (biases, batch-norm scales and shifts, weights of layers outside the
    target): ``masks`` maps a parameter name (``model.named_parameters()``)
    to a 0/1 tensor of its shape.  KeepMasked's steps, bound by parameter name."""

    def _bind(self, trainer) -> dict[str, nn.Parameter]:
        if self._params is None:
            params = dict(trainer.model.named_parameters())
            self._params = {n: params[n] for n in self.masks}
            self.masks = {n: m.to(self._params[n].device, self._params[n].dtype) for n, m in self.masks.items()}
        return self._params
