"""The suite's standard quantizer: uniform symmetric k-bit, one scale per layer.

Zero is reserved for pruned weights (as in ADMM-NN's released code): a
surviving weight maps to the nearest of +-q, +-2q, ..., +-n q with
n = 2^(k-1) - 1, never to 0, so the mask survives quantization.  The scale q
minimises the squared error over the surviving weights, found by a
coarse-to-fine scan (vectorised over candidates).
"""

from __future__ import annotations

import math

import torch

__all__ = ["uniform_levels_per_side", "project_uniform", "best_uniform_scale", "quantize_uniform_"]


def uniform_levels_per_side(bits: int) -> int:
    if bits < 2:
        raise ValueError(f"uniform quantization needs at least 2 bits (1 bit is the 'binary' scheme), got {bits}")
    return 2 ** (bits - 1) - 1


def project_uniform(values: torch.Tensor, scale: torch.Tensor | float, n: int) -> torch.Tensor:
    """Nearest nonzero level of {+-1..+-n} * scale (values assumed nonzero)."""
    scale = torch.as_tensor(scale, dtype=values.dtype, device=values.device)
    code = torch.clamp(torch.round(values.abs() / scale), 1, n)
    return torch.sign(values) * code * scale


def _errors(values: torch.Tensor, scales: torch.Tensor, n: int, chunk_elems: int = 1 << 24) -> torch.Tensor:
    out = torch.empty_like(scales)
    rows = max(1, chunk_elems // max(values.numel(), 1))
    for i in range(0, scales.numel(), rows):
        s = scales[i : i + rows, None]
        proj = project_uniform(values[None, :], s, n)
        out[i : i + rows] = ((proj - values[None, :]) ** 2).sum(dim=1)
    return out


def best_uniform_scale(values: torch.Tensor, bits: int) -> float:
    """Scale minimising sum (w - Q(w))^2 over the nonzero ``values``."""
    n = uniform_levels_per_side(bits)
    v = values.detach().flatten().float()
    v = v[v != 0]
    if v.numel() == 0:
        return 1.0
    top = float(v.abs().max())
    nominal = top / n
    # coarse: geometric grid from nominal/50 to 1.1 nominal; fine: +-5% around the best
    coarse = nominal * torch.logspace(math.log10(0.02), math.log10(1.1), 64, device=v.device)
    best = coarse[int(torch.argmin(_errors(v, coarse, n)))]
    fine = best * torch.linspace(0.95, 1.05, 101, device=v.device)
    return float(fine[int(torch.argmin(_errors(v, fine, n)))])


@torch.no_grad()
def quantize_uniform_(weight: torch.Tensor, bits: int) -> float:
    """Quantize ``weight`` in place; zeros stay zero.  Returns the scale."""
    n = uniform_levels_per_side(bits)
    mask = weight != 0
    scale = best_uniform_scale(weight[mask], bits)
    weight.copy_(torch.where(mask, project_uniform(weight, scale, n), torch.zeros_like(weight)))
    return scale
