"""SpQuant-SNN (Hasssan, Meng, Anupreetham, Seo; Front. Neurosci. 2024,
doi 10.3389/fnins.2024.1440000): integer membrane quantization with a stacked
surrogate gradient, spatial-channel pruning with a membrane-potential prior,
and a learnable threshold.

Only the paper's abstract was available to us; every point below where the
algorithm is not fixed by it is our reading, marked CHOICE.

1. Integer membrane (phase 1 and 3).  The membrane of the LIF each target
   layer feeds is stored as integer codes k in {-2^(b-1) .. 2^(b-1) - 1}
   times one step s (offset 0).  CHOICE: s = theta / 2^(b-2), so the
   threshold is the integer code 2^(b-2) and the grid spans [-2 theta,
   2 theta - s]; s follows theta when theta learns (re-set after every step).
2. Stacked surrogate gradient.  CHOICE: the quantizer's staircase is a sum of
   shifted step functions; its gradient is the sum ("stack") of one
   sigmoid-derivative surrogate per step, slope ``stack_alpha`` in code units
   (``LIF.quant_grad = "stacked"``), instead of the straight-through
   estimator.  It is smooth, about 1 inside the range and decays outside it.
3. Learnable threshold.  Each LIF's ``threshold`` parameter trains with the
   weights (the spike function's surrogate gives it a gradient).  CHOICE:
   one scalar per layer, clamped at 1e-3, no extra regulariser, the suite's
   learning rate (the trainer has one rate per fit).
4. Spatial-channel pruning with a membrane-potential prior.  CHOICE: the
   paper's spatial masks are input-dependent activation masks, which a
   weight artifact cannot express; we keep the channel side as weight
   structure.  During phase 1 (``prior_fraction`` of the budget) forward
   hooks record the mean |U| of every output channel (conv) or neuron
   (linear) of each target layer's LIF over time and samples; a layer
   without a LIF (the readout, a non-spiking model) uses its mean |output|.
   The prior is divided by its mean within each layer, so it reorders the
   groups of a layer while the weights' magnitudes still decide, in one
   global ranking (the harness's, with its per-layer floor), how much each
   layer keeps.  ``unstructured`` scores each weight by |w| x relative prior
   of its output channel; ``filter`` scores an output channel by its L2 norm
   x its relative prior and removes whole channels.  The hooks are removed
   before returning.
5. Weights (phase 3): masked uniform QAT at the target's bits
   (straight-through shadows, per-layer least-squares scale re-fitted after
   pruning) for the rest of the budget, threshold still learning.

``membrane_bits``: the target's when it carries them, else this config, else
the weight bits.  On a non-spiking model (no LIF) steps 1-3 do nothing and
the method is prior-guided pruning plus weight QAT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from prunebench import Callback, Method
from prunebench.config import Between, PositiveFloat, Validated
from prunebench.projections import magnitude_masks
from torch import nn

from ._snn_qat import ShadowQuantizer, lif_after, membrane_bits_of, set_membrane, weight_scales

__all__ = ["SpQuant", "SpQuantConfig", "membrane_prior"]


@dataclass(frozen=True)
class SpQuantConfig(Validated):
    membrane_bits: Annotated[int, Between(2, 16)] | None = None
    #: share of the budget spent before pruning (learning the prior and the threshold)
    prior_fraction: Annotated[float, Between(0, 1)] = 0.25
    #: slope of each step's sigmoid surrogate in the stacked gradient, in membrane code units
    stack_alpha: PositiveFloat = 4.0


class _Prior:
    """Forward hooks accumulating mean |U| (or |output|) per output channel."""

    def __init__(self, model: nn.Module, layers, lifs):
        modules = dict(model.named_modules())
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.handles = []
        for name in layers:
            if name in lifs:  # LIF forward returns (spikes, membrane)
                self.handles.append(lifs[name][1].register_forward_hook(self._hook(name, lambda out: out[1])))
            else:
                self.handles.append(modules[name].register_forward_hook(self._hook(name, lambda out: out)))

    def _hook(self, name, pick):
        def fn(module, args, out):
            v = pick(out).detach().abs()
            per = v.transpose(0, 1).reshape(v.shape[1], -1)  # channel (dim 1) first
            self.sums[name] = self.sums.get(name, 0) + per.sum(1)
            self.counts[name] = self.counts.get(name, 0) + per.shape[1]
        return fn

    def remove(self) -> dict[str, torch.Tensor]:
        for h in self.handles:
            h.remove()
        return {n: self.sums[n] / self.counts[n] for n in self.sums}


def membrane_prior(priors: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], kind: str) -> dict:
    """Per-group scores: |w| or group norm x (prior of the output channel + eps) / its layer mean."""
    scores = {}
    for n, w in weights.items():
        p = priors.get(n)
        p = torch.ones(w.shape[0], device=w.device) if p is None else p.to(w.device).float()
        p = p + 1e-3 * (p.mean() + 1e-12)
        p = p / p.mean()  # relative within the layer: magnitude still allocates across layers
        shape = (-1,) + (1,) * (w.dim() - 1)
        if kind == "unstructured":
            scores[n] = w.abs() * p.view(shape)
        else:  # filter: one group per output channel
            scores[n] = w.flatten(1).norm(dim=1) * p
    return scores


class _FollowThreshold(Callback):
    """Keep each membrane step tied to its (learning) threshold: s = theta / 2^(b-2)."""

    def __init__(self, lifs, bits: int):
        self.lifs = [lif for _, lif in lifs.values()]
        self.bits = bits

    @torch.no_grad()
    def after_step(self, trainer) -> None:
        for lif in self.lifs:
            lif.mem_scale.fill_(float(lif.theta()) / 2 ** (self.bits - 2))


class SpQuant(Method):
    Config = SpQuantConfig
    version = "1"
    structures = ("unstructured", "filter")
    quantizes = True
    quantization_schemes = ("uniform",)

    def compress(self, model, target, trainer):
        cfg = self.config
        modules = dict(model.named_modules())
        params = {n: modules[n].weight for n in target.layers}
        bits = target.quantization.bits
        mbits = membrane_bits_of(target, cfg.membrane_bits)
        lifs = lif_after(model, target.layers)
        for _, lif in lifs.values():
            set_membrane(lif, mbits, float(lif.theta()) / 2 ** (mbits - 2))
            lif.quant_grad, lif.quant_alpha = "stacked", cfg.stack_alpha
            lif.threshold.requires_grad_(True)
        follow = _FollowThreshold(lifs, mbits)
        try:
            # phase 1: membrane QAT with learnable thresholds while the prior is recorded
            prior = _Prior(model, target.layers, lifs)
            try:
                prior_steps = int(trainer.steps_left * cfg.prior_fraction) if trainer.budget_steps is not None else 0
                if prior_steps >= 1:  # the prior's share of the budget, whole steps rounded down
                    trainer.fit(steps=prior_steps, callbacks=[follow])
            finally:
                priors = prior.remove()
            # phase 2: prune by the membrane-prior scores
            weights = {n: p.detach() for n, p in params.items()}
            kind = target.structure.kind
            keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
            masks = magnitude_masks(weights, kind, keep, allocation="global",
                                    scores=membrane_prior(priors, weights, kind))
            # phase 3: masked weight QAT, membrane quantized, thresholds learning
            qat = ShadowQuantizer(params, masks, bits, weight_scales(weights, masks, bits))
            rest = trainer.epochs_left
            if rest > 0:  # every parameter that requires grad, the thresholds included
                trainer.fit(rest, callbacks=[qat, follow])
            qat.finish()
        finally:
            for _, lif in lifs.values():
                lif.threshold.requires_grad_(False)
                lif.quant_grad = "ste"
        return {
            "membrane_bits": mbits if lifs else None,
            "thresholds": {name: float(lif.theta()) for name, lif in lifs.values()},
            "prior_layers": sorted(priors),
        }
