"""Quantizers as projections: level counts, zeros kept, optimal scales, dispatch."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunebench import Quantization
from prunebench.quant import (
    _QUANTIZERS,
    best_pow2_scale,
    best_uniform_scale,
    levels_of,
    max_values,
    off_level_set,
    quantize_,
    quantize_binary_,
    quantize_levels_,
    quantize_pow2_,
    quantize_ternary_,
)
from prunebench.target import QUANT_SCHEMES

LEVELS = (-0.9, -0.3, -0.05, 0.02, 0.4, 1.1)


def _pruned(seed, n=300, threshold=0.4):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g)
    w[w.abs() < threshold] = 0.0
    return w


def _quant(scheme, bits):
    return Quantization(bits, scheme, LEVELS if scheme == "levels" else None)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scheme_bits=st.sampled_from(
        [("uniform", 2), ("uniform", 3), ("uniform", 5), ("pow2", 2), ("pow2", 3), ("pow2", 6),
         ("ternary", 2), ("binary", 1), ("levels", 3)]
    ),
)
def test_quantizers_keep_zeros_and_never_exceed_the_levels(seed, scheme_bits):
    scheme, bits = scheme_bits
    q = _quant(scheme, bits)
    w = _pruned(seed)
    zeros = w == 0
    original = w.clone()
    result = quantize_(w, q)
    assert torch.equal(w == 0, zeros)  # pruned stay pruned, survivors stay nonzero
    distinct = levels_of(w).numel()
    assert distinct <= max_values(q) <= max(2**bits, 3)  # binary: +-a and the pruned zero
    assert off_level_set(w, q) is None
    assert result.scheme == scheme and result.levels == tuple(levels_of(w)[levels_of(w) != 0].tolist())
    if scheme != "levels":  # symmetric schemes keep signs
        assert torch.equal(torch.sign(w), torch.sign(original))
    again = w.clone()
    quantize_(again, q)  # a projection: projecting again changes nothing
    assert torch.allclose(again, w, rtol=1e-5, atol=0)


def test_uniform_level_count_per_side():
    w = _pruned(0, 5000, 0.01)
    quantize_(w, Quantization(4))
    assert (w > 0).any() and torch.unique(w[w > 0]).numel() <= 7 and torch.unique(w[w < 0]).numel() <= 7


def _sq_err(v, q):
    return float(((v.double() - q.double()) ** 2).sum())


@pytest.mark.parametrize("scheme", ["ternary", "binary"])
def test_mean_magnitude_is_optimal(scheme):
    w = _pruned(3)
    v = w.clone()
    a = {"ternary": quantize_ternary_, "binary": quantize_binary_}[scheme](v)
    assert a == pytest.approx(float(w[w != 0].abs().mean()), rel=1e-6)
    err = _sq_err(w, v)
    for cand in torch.linspace(0.5 * a, 1.5 * a, 401):
        assert err <= _sq_err(w, torch.sign(w) * cand) * (1 + 1e-6)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_uniform_scale_beats_a_fine_grid(bits):
    v = _pruned(bits, 400, 0.1)
    v = v[v != 0]
    n = 2 ** (bits - 1) - 1
    best = best_uniform_scale(v, bits)

    def err(s):
        return _sq_err(v, torch.sign(v) * torch.clamp(torch.round(v.abs() / s), 1, n) * s)

    top = float(v.abs().max())
    grid = torch.linspace(top / n * 0.2, top / n * 1.5, 3000)
    assert err(best) <= min(err(float(s)) for s in grid) * (1 + 1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pow2_scale_beats_a_fine_grid_and_levels_are_powers_of_two(bits):
    v = _pruned(10 + bits, 400, 0.1)
    v = v[v != 0]
    n = 2 ** (bits - 1) - 1
    codes = 2.0 ** torch.arange(-(n - 1), 1, dtype=torch.float64)

    def project(s):  # brute-force nearest of +-s * codes
        cand = s * codes
        idx = (v.abs().double()[:, None] - cand[None, :]).abs().argmin(dim=1)
        return torch.sign(v).double() * cand[idx]

    best = best_pow2_scale(v, bits)
    top = float(v.abs().max())
    grid = torch.linspace(top * 0.2, top * 1.5, 3000).double()
    assert _sq_err(v, project(best)) <= min(_sq_err(v, project(float(s))) for s in grid) * (1 + 1e-6)
    w = v.clone()
    s = quantize_pow2_(w, bits)
    assert torch.allclose(w.double(), project(s).to(w.dtype).double(), rtol=1e-6)  # nearest level
    e = torch.log2(w.abs().double() / s)
    assert torch.allclose(e, e.round(), atol=1e-6) and e.max() <= 0 and e.min() >= -(n - 1)


def test_levels_map_to_the_nearest_given_level():
    w = _pruned(7, 500, 0.05)
    v = w.clone()
    assert quantize_levels_(v, LEVELS) == 1.0
    grid = torch.tensor([x for x in LEVELS], dtype=torch.float32)
    nz = w != 0
    nearest = grid[(w[nz][:, None] - grid[None, :]).abs().argmin(dim=1)]
    assert torch.equal(v[nz], nearest) and (v[~nz] == 0).all()
    assert set(v[nz].tolist()) <= {float(torch.tensor(x)) for x in LEVELS}
    fitted = w.clone()
    s = quantize_levels_(fitted, LEVELS, fit_scale=True)
    assert s > 0 and _sq_err(w, fitted) <= _sq_err(w, v) + 1e-9  # fitting a scale can only help
    with pytest.raises(ValueError):
        quantize_levels_(w.clone(), (0.0,))


def test_dispatch_covers_every_scheme_and_rejects_too_few_bits():
    assert set(_QUANTIZERS) == set(QUANT_SCHEMES)
    with pytest.raises(ValueError):
        quantize_(_pruned(0), Quantization(1, "uniform"))
    with pytest.raises(ValueError):
        quantize_(_pruned(0), Quantization(1, "ternary"))
    with pytest.raises(ValueError):
        quantize_(_pruned(0), Quantization(1, "pow2"))
    empty = torch.zeros(4, 4)
    for scheme, bits in [("uniform", 3), ("pow2", 3), ("ternary", 2), ("binary", 1), ("levels", 3)]:
        r = quantize_(empty, _quant(scheme, bits))
        assert r.levels == () and (empty == 0).all()


def test_off_level_set_reports():
    assert "distinct nonzero magnitudes" in off_level_set(torch.tensor([0.5, -0.5, 0.7, 0.0]), Quantization(2, "ternary"))
    assert off_level_set(torch.tensor([0.5, -0.5, 0.0]), Quantization(1, "binary")) is None
    assert off_level_set(torch.tensor([0.5, -0.25, 0.125, 0.0]), Quantization(3, "pow2")) is None
    assert "spans 4 powers of two" in off_level_set(torch.tensor([0.5, -0.25, 0.125, 0.0625]), Quantization(3, "pow2"))
    assert "powers of two" in off_level_set(torch.tensor([0.5, 0.3]), Quantization(3, "pow2"))
    assert "off the given level set" in off_level_set(torch.tensor([0.4, 0.5]), _quant("levels", 3))
