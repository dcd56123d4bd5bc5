"""Weight quantizers as projections, one scale per layer.

Zero is reserved for pruned weights (as in ADMM-NN's released code,
arXiv 1812.11677): every scheme keeps zeros zero and maps each surviving
weight to the nearest *nonzero* level, so the mask survives quantization.

- ``uniform`` (the suite's standard quantizer): levels +-q, ..., +-n q with
  n = 2^(k-1) - 1;
- ``pow2``: levels +-s * 2^e for e = 0, -1, ..., -(n-1), same n (capped at
  64 exponents, far below float32 resolution relative to s);
- ``ternary``: {-a, 0, +a}; ``binary``: {-a, +a} on the survivors (pruned
  weights stay 0).  On a fixed support with fixed signs the squared error is
  minimised by a = mean |w| over the survivors, which is what we use;
- ``levels``: the nearest of an explicit signed level set (give both signs
  for a symmetric set), optionally times a fitted scale.

A layer therefore never holds more than 2^k distinct values, zero included
(binary: +-a plus the pruned zero).  Scales of uniform / pow2 / fitted level
sets minimise the squared projection error over the survivors: a coarse then
fine scan of candidates (vectorised), then alternating nearest-level
assignment and the least-squares scale for that assignment, which never
increases the error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .target import Quantization
from .trainer import Callback

__all__ = [
    "QuantizationAware",
    "QuantResult",
    "uniform_levels_per_side",
    "pow2_levels_per_side",
    "project_uniform",
    "best_uniform_scale",
    "best_pow2_scale",
    "quantize_uniform_",
    "quantize_pow2_",
    "quantize_ternary_",
    "quantize_binary_",
    "quantize_levels_",
    "quantize_",
    "levels_of",
    "max_values",
    "off_level_set",
]

POW2_MAX_EXPONENTS = 64


@dataclass(frozen=True)
class QuantResult:
    scheme: str
    #: multiplier of the unit level set (a for ternary / binary, 1.0 for unscaled levels)
    scale: float
    #: nonzero values the layer holds afterwards, ascending
    levels: tuple[float, ...]


def uniform_levels_per_side(bits: int) -> int:
    if bits < 2:
        raise ValueError(f"uniform quantization needs at least 2 bits (1 bit is the 'binary' scheme), got {bits}")
    return 2 ** (bits - 1) - 1


def pow2_levels_per_side(bits: int) -> int:
    if bits < 2:
        raise ValueError(f"pow2 quantization needs at least 2 bits (sign plus exponent), got {bits}")
    return min(2 ** (bits - 1) - 1, POW2_MAX_EXPONENTS)


def project_uniform(values: torch.Tensor, scale: torch.Tensor | float, n: int) -> torch.Tensor:
    """Nearest nonzero level of {+-1..+-n} * scale (values assumed nonzero)."""
    scale = torch.as_tensor(scale, dtype=values.dtype, device=values.device)
    code = torch.clamp(torch.round(values.abs() / scale), 1, n)
    return torch.sign(values) * code * scale


# A "coder" maps (values, scale) to unit codes: quantized value = code * scale.
# Signs come from the values, never from values / scale, so nonzero stays nonzero.
Coder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _uniform_coder(n: int) -> Coder:
    return lambda v, s: torch.sign(v) * torch.clamp(torch.round(v.abs() / s), 1, n)


def _nearest(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest entry of the ascending ``grid``; a tie goes to the lower entry."""
    if grid.numel() == 1:
        return grid.expand_as(x)
    mids = (grid[1:] + grid[:-1]) / 2
    return grid[torch.bucketize(x, mids)]


def _symmetric_coder(codes: torch.Tensor) -> Coder:
    return lambda v, s: torch.sign(v) * _nearest(v.abs() / s, codes.to(v))


def _signed_coder(grid: torch.Tensor) -> Coder:
    return lambda v, s: _nearest(v / s, grid.to(v))


def _errors(values: torch.Tensor, scales: torch.Tensor, coder: Coder, chunk_elems: int = 1 << 24) -> torch.Tensor:
    out = torch.empty_like(scales)
    rows = max(1, chunk_elems // max(values.numel(), 1))
    for i in range(0, scales.numel(), rows):
        s = scales[i : i + rows, None]
        out[i : i + rows] = ((coder(values[None, :], s) * s - values[None, :]) ** 2).sum(dim=1)
    return out


def _fit_scale(values: torch.Tensor, coder: Coder, top_code: float, refine_steps: int = 20) -> float:
    """Scale minimising sum (v - s * code(v, s))^2 over the nonzero ``values``."""
    v = values.detach().flatten().float()
    v = v[v != 0]
    if v.numel() == 0:
        return 1.0
    nominal = float(v.abs().max()) / top_code
    # coarse: geometric grid from nominal/50 to 1.1 nominal; fine: +-5% around the best
    coarse = nominal * torch.logspace(math.log10(0.02), math.log10(1.1), 64, device=v.device)
    best = coarse[int(torch.argmin(_errors(v, coarse, coder)))]
    fine = best * torch.linspace(0.95, 1.05, 101, device=v.device)
    errs = _errors(v, fine, coder)
    i = int(torch.argmin(errs))
    s, err = fine[i : i + 1], float(errs[i])
    # Lloyd steps: least-squares scale for the current codes, then re-assign
    for _ in range(refine_steps):
        c = coder(v, s)
        s_new = ((v * c).sum() / (c * c).sum()).reshape(1)
        if not bool(s_new > 0):
            break
        err_new = float(_errors(v, s_new, coder)[0])
        if not err_new < err:
            break
        s, err = s_new, err_new
    return float(s[0])


def best_uniform_scale(values: torch.Tensor, bits: int) -> float:
    """Scale minimising sum (w - Q(w))^2 over the nonzero ``values``."""
    n = uniform_levels_per_side(bits)
    return _fit_scale(values, _uniform_coder(n), float(n))


def _pow2_codes(bits: int, device=None) -> torch.Tensor:
    n = pow2_levels_per_side(bits)
    return torch.pow(2.0, torch.arange(-(n - 1), 1, dtype=torch.float32, device=device))


def best_pow2_scale(values: torch.Tensor, bits: int) -> float:
    """Scale s minimising the error of levels +-s * 2^e, e in {0, ..., -(n-1)}."""
    return _fit_scale(values, _symmetric_coder(_pow2_codes(bits, values.device)), 1.0)


def _apply(weight: torch.Tensor, coder: Coder, scale: float) -> None:
    mask = weight != 0
    s = torch.as_tensor(scale, dtype=weight.dtype, device=weight.device)
    weight.copy_(torch.where(mask, coder(weight, s) * s, torch.zeros_like(weight)))


@torch.no_grad()
def quantize_uniform_(weight: torch.Tensor, bits: int) -> float:
    """Quantize ``weight`` in place; zeros stay zero.  Returns the scale."""
    n = uniform_levels_per_side(bits)
    mask = weight != 0
    scale = best_uniform_scale(weight[mask], bits)
    weight.copy_(torch.where(mask, project_uniform(weight, scale, n), torch.zeros_like(weight)))
    return scale


@torch.no_grad()
def quantize_pow2_(weight: torch.Tensor, bits: int) -> float:
    """Power-of-two levels +-s * 2^e in place; zeros stay zero.  Returns s."""
    scale = best_pow2_scale(weight[weight != 0], bits)
    _apply(weight, _symmetric_coder(_pow2_codes(bits, weight.device)), scale)
    return scale


@torch.no_grad()
def _sign_mean_(weight: torch.Tensor) -> float:
    mask = weight != 0
    a = float(weight[mask].abs().double().mean()) if bool(mask.any()) else 1.0
    weight.copy_(torch.sign(weight) * a)  # sign(0) = 0 keeps pruned weights at 0
    return a


def quantize_ternary_(weight: torch.Tensor) -> float:
    """{-a, 0, +a} in place, survivors to +-a with a = mean |w| (optimal for the support)."""
    return _sign_mean_(weight)


def quantize_binary_(weight: torch.Tensor) -> float:
    """{-a, +a} on the survivors in place (pruned weights stay 0); a = mean |w|."""
    # on survivors the optimal binary and ternary projections coincide; the
    # schemes differ in what verify allows (binary: no zeros inside kept groups)
    return _sign_mean_(weight)


def _level_grid(levels) -> torch.Tensor:
    grid = torch.unique(torch.as_tensor([float(x) for x in levels], dtype=torch.float64))
    grid = grid[grid != 0]
    if grid.numel() == 0:
        raise ValueError("a level set needs at least one nonzero level (zero is reserved for pruned weights)")
    return grid


@torch.no_grad()
def quantize_levels_(weight: torch.Tensor, levels, *, fit_scale: bool = False) -> float:
    """Nearest nonzero value of the signed level set ``levels`` in place; zeros stay zero.

    With ``fit_scale`` the set is s * levels with s fitted like the uniform
    scale; otherwise s = 1 (what :func:`prunebench.verify.verify` checks
    against a target's level set).  Returns s.
    """
    grid = _level_grid(levels).to(weight.device)
    coder = _signed_coder(grid)
    scale = _fit_scale(weight[weight != 0], coder, float(grid.abs().max())) if fit_scale else 1.0
    _apply(weight, coder, scale)
    return scale


def _q_uniform(w, q):
    return quantize_uniform_(w, q.bits)


def _q_pow2(w, q):
    return quantize_pow2_(w, q.bits)


def _q_ternary(w, q):
    if q.bits < 2:
        raise ValueError("ternary quantization needs 2 bits (three values)")
    return quantize_ternary_(w)


def _q_binary(w, q):
    return quantize_binary_(w)


def _q_levels(w, q):
    return quantize_levels_(w, q.levels)


_QUANTIZERS: dict[str, Callable[[torch.Tensor, Quantization], float]] = {
    "uniform": _q_uniform,
    "pow2": _q_pow2,
    "ternary": _q_ternary,
    "binary": _q_binary,
    "levels": _q_levels,
}


def levels_of(weight: torch.Tensor) -> torch.Tensor:
    """Distinct values of ``weight`` (zero included when present), ascending."""
    return torch.unique(weight.detach())


@torch.no_grad()
def quantize_(weight: torch.Tensor, quantization: Quantization) -> QuantResult:
    """Project ``weight`` in place onto ``quantization``'s level set; zeros stay zero."""
    scale = _QUANTIZERS[quantization.scheme](weight, quantization)
    vals = levels_of(weight)
    return QuantResult(quantization.scheme, float(scale), tuple(vals[vals != 0].tolist()))


_MAX_VALUES: dict[str, Callable[[Quantization], int]] = {
    "uniform": lambda q: 2 * max(2 ** (q.bits - 1) - 1, 0) + 1,
    "pow2": lambda q: 2 * min(max(2 ** (q.bits - 1) - 1, 0), POW2_MAX_EXPONENTS) + 1,
    "ternary": lambda q: 3,
    "binary": lambda q: 3,  # +-a and the pruned zero
    "levels": lambda q: len({float(x) for x in q.levels or () if x != 0}) + 1,
}


def max_values(quantization: Quantization) -> int:
    """Most distinct values (zero included) this module's quantizer leaves in a layer."""
    return _MAX_VALUES[quantization.scheme](quantization)


def _nonzero_magnitudes(w: torch.Tensor) -> torch.Tensor:
    v = w.detach().flatten().double()
    return torch.unique(v[v != 0].abs())


def _off_uniform(w, q):
    """Nonzero magnitudes must be k_i * step for one step and integers 1 <= k_i <= n."""
    m = _nonzero_magnitudes(w)
    if m.numel() <= 1:
        return None
    n = 2 ** (q.bits - 1) - 1 if q.bits >= 2 else 1
    eps = torch.finfo(w.dtype).eps if w.dtype.is_floating_point else 0.0
    ratio = m / m[0]  # ascending: the smallest magnitude's code c0 fixes the step m[0] / c0
    top = float(ratio[-1])
    # c0 * top <= n; and k distinct integer codes in [c0, c0 * top] need c0 * (top - 1) >= k - 1
    lo = max(1, math.floor((m.numel() - 1) / (top - 1) * (1 - 1e-3))) if top > 1 else 1
    hi = math.floor((n + 0.5) / top)
    chunk = max(1, (1 << 22) // m.numel())
    for start in range(lo, hi + 1, chunk):
        c0 = torch.arange(start, min(hi, start + chunk - 1) + 1, dtype=torch.float64, device=m.device)
        codes = c0[:, None] * ratio[None, :]
        near = codes.round()
        tol = 4 * eps * near.clamp(min=1) + 1e-6
        ok = ((codes - near).abs() <= tol).all(dim=1) & (near[:, -1] <= n)
        if bool(ok.any()):
            return None
    return (f"holds {m.numel()} distinct nonzero magnitudes that are not multiples of one step "
            f"with at most {n} steps per side (uniform levels are evenly spaced)")


def _off_pow2(w, q):
    m = _nonzero_magnitudes(w)
    if m.numel() == 0:
        return None
    e = torch.log2(m / m.max())
    if bool(((e - e.round()).abs() > 1e-4).any()):
        return "holds magnitudes that are not one scale times powers of two"
    span = int(-e.round().min()) + 1
    allowed = min(max(2 ** (q.bits - 1) - 1, 1), POW2_MAX_EXPONENTS)
    if span > allowed:
        return f"spans {span} powers of two; {q.bits}-bit pow2 allows {allowed}"
    return None


def _off_single_magnitude(w, q):
    k = _nonzero_magnitudes(w).numel()
    return f"holds {k} distinct nonzero magnitudes; {q.scheme} allows one" if k > 1 else None


def _off_levels(w, q):
    v = torch.unique(w.detach().flatten().double())
    v = v[v != 0]
    grid = _level_grid(q.levels).to(v.device)
    on = torch.isclose(v[:, None], grid[None, :], rtol=1e-6, atol=0.0).any(dim=1)
    bad = int((~on).sum())
    return f"holds {bad} distinct values off the given level set" if bad else None


_LEVEL_CHECKS: dict[str, Callable[[torch.Tensor, Quantization], str | None]] = {
    "uniform": _off_uniform,
    "pow2": _off_pow2,
    "ternary": _off_single_magnitude,
    "binary": _off_single_magnitude,
    "levels": _off_levels,
}


def off_level_set(weight: torch.Tensor, quantization: Quantization) -> str | None:
    """Why ``weight``'s nonzero values are not on the scheme's level set, or None.

    pow2: magnitudes are s * 2^e within the allowed exponent window (any s);
    ternary / binary: one magnitude per layer; levels: each value is one of
    the given levels (unscaled); uniform: integer multiples (at most n = 2^(k-1) - 1)
    of one step, within float rounding.
    """
    return _LEVEL_CHECKS[quantization.scheme](weight, quantization)


def _scaled_coder(quantization: Quantization, device) -> Coder | None:
    """The coder of a scheme whose levels are a fitted scale times fixed codes (None: other schemes)."""
    if quantization.scheme == "uniform":
        return _uniform_coder(uniform_levels_per_side(quantization.bits))
    if quantization.scheme == "pow2":
        return _symmetric_coder(_pow2_codes(quantization.bits, device))
    return None


class QuantizationAware(Callback):
    """Quantization-aware fine-tuning for methods that only prune (a Trainer
    observer; the harness adds it under ``quantization: {mode: qat}``).

    Straight-through: every forward pass sees the quantized weights, the
    gradient computed there updates full-precision shadow weights, and the
    quantized values are written back after each step.  Zeros stay zero (the
    quantizer keeps them, masks still act on the shadow), and a weight the
    method changes between fits (a projection, a mask) is taken over as the
    new shadow rather than undone.  The first step of each fit sees the
    weights as they were.

    The scale of uniform and pow2 levels is refitted (the error-minimising
    search of :func:`quantize_`) every ``refit_every_steps`` steps and after
    any change the method makes; in between the last scale is reused, as an
    observer would: a search per step tripled the cost of a fine-tuning
    epoch of LeNet-5 and moves the scale by little.  The harness's final
    quantization after the method always fits afresh.
    """

    def __init__(self, layers, quantization: Quantization, *, refit_every_steps: int = 25):
        if refit_every_steps < 1:
            raise ValueError(f"refit_every_steps must be at least 1, got {refit_every_steps!r}")
        self.layers = tuple(layers)
        self.quantization = quantization
        self.refit_every_steps = refit_every_steps
        self._shadow: dict = {}
        self._written: dict = {}
        self._scale: dict = {}
        self._since_fit: dict = {}

    def _params(self, trainer):
        modules = dict(trainer.model.named_modules())
        return {n: modules[n].weight for n in self.layers}

    def after_backward(self, trainer) -> None:
        with torch.no_grad():
            for name, p in self._params(trainer).items():
                written = self._written.get(name)
                if written is None or not torch.equal(p.data, written):
                    self._shadow[name] = p.data.clone()  # first step, or the method changed it
                    self._scale.pop(name, None)  # ...so the scale is fitted to what it is now
                p.data.copy_(self._shadow[name])  # the step updates the full-precision weights

    def after_step(self, trainer) -> None:
        with torch.no_grad():
            for name, p in self._params(trainer).items():
                self._shadow[name] = p.data.clone()
                coder = _scaled_coder(self.quantization, p.device)
                due = self._since_fit.get(name, 0) >= self.refit_every_steps
                if coder is None or name not in self._scale or due:
                    self._scale[name] = quantize_(p.data, self.quantization).scale
                    self._since_fit[name] = 1
                else:
                    _apply(p.data, coder, self._scale[name])
                    self._since_fit[name] += 1
                self._written[name] = p.data.clone()
