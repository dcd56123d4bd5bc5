"""Shared machinery of the spiking-network methods (mint, snn_state_qat, spquant).

- :class:`ShadowQuantizer`: weight quantization-aware training with the
  straight-through estimator as BinaryConnect does it (Courbariaux et al.,
  arXiv 1511.00363): the forward pass sees quantized, masked weights; the
  optimizer updates full-precision shadow weights with the gradient taken at
  the quantized point.  Implemented with the trainer's callbacks only.
- :func:`lif_after`: which LIF neuron layer a synapse feeds (the next LIF in
  module order before the next synapse), so a method sets a layer's membrane
  quantizer without knowing the model.  A non-spiking model has none; the
  methods then compress its weights only.
- :func:`set_membrane`: write a LIF's membrane quantizer buffers.
- :func:`magnitude_start`: the start mint and snn_state_qat share (global
  magnitude masks at the target's rate, the weight and membrane bits, the LIFs
  the target layers feed).

Weight levels: uniform, ``sign(w) * clamp(round(|w| / s), 1, n) * s`` with
n = 2^(b-1) - 1 (the harness's uniform scheme: zero is reserved for pruned
weights, so a kept weight never rounds to zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from prunebench import Callback
from prunebench.projections import magnitude_masks
from prunebench.quant import best_uniform_scale, uniform_levels_per_side
from prunebench.tasks.classification.snn import LIF
from torch import nn

__all__ = ["MagnitudeStart", "ShadowQuantizer", "lif_after", "magnitude_start", "membrane_bits_of",
           "set_membrane", "uniform_q", "weight_scales"]


def membrane_bits_of(target, configured: int | None) -> int:
    """The target's membrane bits, else the configured ones, else the weight bits."""
    if getattr(target, "membrane_bits", None) is not None:
        return int(target.membrane_bits)
    if configured is not None:
        return int(configured)
    return int(target.quantization.bits)


@dataclass
class MagnitudeStart:
    params: dict[str, nn.Parameter]
    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    weight_bits: int
    membrane_bits: int
    lifs: dict[str, tuple[str, nn.Module]]


def magnitude_start(model: nn.Module, target, configured_membrane_bits: int | None) -> MagnitudeStart:
    """Unstructured global magnitude masks at the target's rate, and the bits and
    LIF neurons a quantizing SNN method then works with."""
    modules = dict(model.named_modules())
    params = {n: modules[n].weight for n in target.layers}
    weights = {n: p.detach() for n, p in params.items()}
    keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
    masks = magnitude_masks(weights, "unstructured", keep, allocation="global")
    return MagnitudeStart(params, weights, masks, int(target.quantization.bits),
                          membrane_bits_of(target, configured_membrane_bits), lif_after(model, target.layers))


def lif_after(model: nn.Module, layers) -> dict[str, tuple[str, nn.Module]]:
    """synapse name -> (LIF name, LIF) for the synapses in ``layers`` that feed one."""
    out: dict[str, tuple[str, nn.Module]] = {}
    pending: str | None = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            pending = name
        elif isinstance(module, LIF) and pending is not None:
            if pending in layers:
                out[pending] = (name, module)
            pending = None
    return out


@torch.no_grad()
def set_membrane(lif: nn.Module, bits: int, scale: float, offset: float = 0.0) -> None:
    lif.mem_bits.fill_(int(bits))
    lif.mem_scale.fill_(float(scale))
    lif.mem_offset.fill_(float(offset))


def uniform_q(w: torch.Tensor, mask: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    n = uniform_levels_per_side(bits)
    code = torch.clamp(torch.round(w.abs() / scale), 1, n)
    return torch.sign(w) * code * scale * mask


def weight_scales(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], bits: int) -> dict[str, float]:
    """Least-squares uniform scale of each layer's kept weights (the harness's fit)."""
    return {n: best_uniform_scale((w * masks[n]).detach(), bits) for n, w in weights.items()}


class ShadowQuantizer(Callback):
    """Weight QAT with full-precision shadows; ``scales`` per layer (a callable
    ``scales_of(shadows)`` re-fits them after every step when given)."""

    def __init__(self, params: Mapping[str, nn.Parameter], masks: Mapping[str, torch.Tensor], bits: int,
                 scales: Mapping[str, float]):
        self.params = dict(params)
        self.masks = {n: m.to(p.device, p.dtype) for n, m in masks.items() for p in [self.params[n]]}
        self.bits = bits
        self.scales = dict(scales)
        self.shadow = {n: (p.detach() * self.masks[n]).clone() for n, p in self.params.items()}
        self._quantize()

    @torch.no_grad()
    def _quantize(self) -> None:
        for n, p in self.params.items():
            p.copy_(uniform_q(self.shadow[n], self.masks[n], self.scales[n], self.bits))

    @torch.no_grad()
    def after_backward(self, trainer) -> None:
        # the gradient was taken at the quantized weights; step the shadows with it
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[n])
            p.copy_(self.shadow[n])

    @torch.no_grad()
    def after_step(self, trainer) -> None:
        for n, p in self.params.items():
            self.shadow[n] = (p.detach() * self.masks[n]).clone()
        self._quantize()

    def finish(self) -> None:
        """Leave the quantized weights in the model (also right after an empty fit)."""
        self._quantize()
