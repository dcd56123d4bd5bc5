"""Gradual magnitude pruning (Zhu and Gupta, "To prune, or not to prune",
arXiv 1710.01878).

Reading of the paper, and every choice made here:

- **Schedule.**  The sparsity after the mask update at step t is
  s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3 for t = t0, t0 + Δt, ...,
  t0 + n Δt (the paper's equation 1): fast pruning at first, slower as the
  target s_f nears.  s_f is the target's sparsity (1 - 1/rate, as the
  harness counts it: the final keep count is exactly ``target.keep_budget``),
  s_i is ``initial_sparsity`` (default 0, the paper's usual choice).
- **Where in the budget.**  The paper prunes during training from step t0
  over n Δt steps, then trains on with the masks fixed.  Here the run's
  budget (``trainer.steps_left``, whole optimizer steps) is split into shares:
  ``start_fraction`` of it trains dense before pruning starts (t0),
  ``prune_fraction`` is the pruning phase n Δt, and the rest is masked
  fine-tuning.  ``updates`` is n; Δt = floor(pruning steps / n) (n is lowered
  to the pruning steps when the phase is shorter than n steps).  So the
  final mask update happens at step t0 + n Δt <= t0 + pruning steps.  With
  no budget at all the method prunes once to s_f (one-shot magnitude).
- **One training call, one learning-rate schedule.**  The paper prunes
  concurrently with ordinary training, its learning-rate schedule untouched.
  So all training is one ``trainer.fit(steps=...)`` (the suite's optimizer
  and schedule over the whole budget), and a callback updates the masks
  after the optimizer step that ends each Δt interval.
- **Mask update.**  Magnitude: the smallest |w| (unstructured) or the
  groups of smallest L2 norm (every other structure) of the current,
  already masked weights, through the harness's group engine
  (:func:`prunebench.projections.project_masks`, with the target's per-layer
  floor).  Masks only shrink: a weight pruned once stays pruned (the new
  mask is intersected with the old, as in the paper, where pruned weights
  are masked and never recover).  Between updates pruned weights get no
  gradient and are held at zero (masked training).
- **Allocation.**  The paper gives every layer the same sparsity
  (``allocation: uniform``, the default here); ``global`` ranks all target
  layers together, as magnitude pruning does by default.

The info dict records every update: its step, the scheduled sparsity and the
sparsity the masks reached (at most one group smaller per layer: masks never
keep more than the scheduled count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch

from prunebench import Callback, Method
from prunebench.config import Between, ConfigError, Ge, Lt, Validated
from prunebench.projections import Allocation, project_masks

from ._baselines import apply_masks_, sparsity_of, steps_left_int, target_weights

__all__ = ["GMP", "GMPConfig", "cubic_schedule"]


@dataclass(frozen=True)
class GMPConfig(Validated):
    allocation: Allocation = "uniform"
    #: s_i, the sparsity of the first mask update at t0
    initial_sparsity: Annotated[float, Ge(0), Lt(1)] = 0.0
    #: share of the budget trained dense before pruning starts (t0)
    start_fraction: Annotated[float, Between(0, 1)] = 0.0
    #: share of the budget over which sparsity rises to the target (n Δt); the rest fine-tunes masked
    prune_fraction: Annotated[float, Between(0, 1)] = 0.5
    #: n, the number of pruning intervals (n + 1 mask updates, the first at s_i)
    updates: Annotated[int, Ge(1)] = 10

    def __post_init__(self):
        super().__post_init__()
        if self.start_fraction + self.prune_fraction > 1 + 1e-9:
            raise ConfigError("prune_fraction", f"expected start_fraction + prune_fraction <= 1, got "
                              f"{self.start_fraction:g} + {self.prune_fraction:g}")


def cubic_schedule(steps: int, *, start_fraction: float, prune_fraction: float, updates: int,
                   initial_sparsity: float, final_sparsity: float) -> list[tuple[int, float]]:
    """The mask updates of a ``steps``-step run: (step, sparsity) pairs, step 0
    being before any training.  s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3."""
    s_i, s_f = min(initial_sparsity, final_sparsity), final_sparsity
    t0 = math.floor(start_fraction * steps + 1e-9)
    phase = math.floor(prune_fraction * steps + 1e-9)
    n = min(updates, phase)
    if n < 1:
        return [(t0, s_f)]
    dt = phase // n
    return [(t0 + k * dt, s_f + (s_i - s_f) * (1 - k / n) ** 3) for k in range(n + 1)]


class _Pruner:
    """Computes and holds the current masks."""

    def __init__(self, model, target, allocation: str):
        self.model, self.target, self.allocation = model, target, allocation
        weights = target_weights(model, target)
        self.total = sum(w.numel() for w in weights.values())
        self.final_keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
        self.masks: dict[str, torch.Tensor] | None = None
        self.log: list[dict] = []

    def keep_for(self, sparsity: float, final: bool) -> int:
        if final:
            return self.final_keep
        return max(self.final_keep, self.total - round(sparsity * self.total))

    def update(self, step: int, sparsity: float, final: bool) -> None:
        weights = target_weights(self.model, self.target)
        keep = self.keep_for(sparsity, final)
        new = project_masks(weights, self.target.structure, keep, allocation=self.allocation,
                            floor=self.target.layer_floor)
        if self.masks is not None:  # pruned once, pruned for good
            new = {n: m & self.masks[n] for n, m in new.items()}
        self.masks = new
        apply_masks_(self.model, new)
        self.log.append({"step": step, "scheduled_sparsity": 1 - keep / self.total,
                         "sparsity": sparsity_of(new)})


class _GMPCallback(Callback):
    def __init__(self, pruner: _Pruner, schedule: dict[int, tuple[float, bool]], start_step: int):
        self.pruner, self.schedule, self.start = pruner, schedule, start_step

    def after_backward(self, trainer):
        masks = self.pruner.masks
        if masks is None:
            return
        modules = dict(trainer.model.named_modules())
        for name, m in masks.items():
            g = modules[name].weight.grad
            if g is not None:
                g.mul_(m.to(g.device, g.dtype))

    def after_step(self, trainer):
        step = trainer.steps_taken - self.start
        if step in self.schedule:
            self.pruner.update(step, *self.schedule[step])
            if self.schedule[step][1]:
                trainer.record_hard_prune()  # the final sparsity reached, before the remaining steps
        elif self.pruner.masks is not None:
            apply_masks_(trainer.model, self.pruner.masks)


class GMP(Method):
    """Gradual magnitude pruning on the cubic schedule, then masked fine-tuning."""

    Config = GMPConfig
    version = "1"
    structures = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe")

    def compress(self, model, target, trainer):
        cfg = self.config
        pruner = _Pruner(model, target, cfg.allocation)
        final_sparsity = 1 - pruner.final_keep / pruner.total
        steps = steps_left_int(trainer)
        updates = cubic_schedule(steps, start_fraction=cfg.start_fraction, prune_fraction=cfg.prune_fraction,
                                 updates=cfg.updates, initial_sparsity=cfg.initial_sparsity,
                                 final_sparsity=final_sparsity)
        last = len(updates) - 1
        schedule = {step: (s, k == last) for k, (step, s) in enumerate(updates)}
        if 0 in schedule:
            last_now = schedule[0][1]
            pruner.update(0, *schedule.pop(0))
            if last_now:  # one update only: the target's sparsity at once
                trainer.record_hard_prune()
        report = None
        if steps >= 1:
            report = trainer.fit(steps=steps, callbacks=[_GMPCallback(pruner, schedule, trainer.steps_taken)])
        if pruner.masks is None or pruner.log[-1]["step"] != updates[-1][0]:  # cannot happen; stay honest
            pruner.update(steps, final_sparsity, True)
        apply_masks_(model, pruner.masks)
        if "hard_prune" not in trainer.checkpoints:
            trainer.record_hard_prune()
        return {
            "gmp_updates": pruner.log,
            "train_steps": 0 if report is None else report.steps,
            "train_losses": [] if report is None else report.epoch_losses,
        }
