import pytest
import torch
from torch import nn

from prunebench import Quantization, Structure, Target
from prunebench.projections import magnitude_masks
from prunebench.quant import best_uniform_scale, quantize_uniform_
from prunebench.verify import VerificationError, verify


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_uniform_quantizer_level_count_and_zeros(bits):
    torch.manual_seed(bits)
    w = torch.randn(64, 32)
    w[w.abs() < 0.5] = 0.0
    zeros = w == 0
    scale = quantize_uniform_(w, bits)
    assert torch.equal(w == 0, zeros)  # zero stays reserved for pruned weights
    assert torch.unique(w).numel() <= 2**bits - 1
    codes = w / scale
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # on a uniform grid
    assert codes.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4


def test_scale_minimises_error_against_a_brute_force_grid():
    torch.manual_seed(0)
    v = torch.randn(500)
    n = 7
    best = best_uniform_scale(v, 4)

    def err(s):
        q = torch.sign(v) * torch.clamp(torch.round(v.abs() / s), 1, n) * s
        return float(((q - v) ** 2).sum())

    grid = torch.linspace(0.01, 1.0, 2000)
    assert err(best) <= min(err(float(s)) for s in grid) * 1.001


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def test_verification_accepts_honest_unstructured_pruning():
    m = _model()
    layers = ("0", "3")
    target = Target(layers=layers, rate=4.0, quantization=Quantization(4))
    mods = dict(m.named_modules())
    w = {n: mods[n].weight.detach() for n in layers}
    masks = magnitude_masks(w, "unstructured", target.keep_budget({n: t.numel() for n, t in w.items()}))
    with torch.no_grad():
        for n in layers:
            mods[n].weight.mul_(masks[n])
            quantize_uniform_(mods[n].weight.data, 4)
    check = verify(m, target)
    assert check.achieved_rate >= 4.0


def test_verification_catches_a_method_that_lies_about_sparsity():
    m = _model()
    layers = ("0", "3")
    target = Target(layers=layers, rate=4.0)
    mods = dict(m.named_modules())
    with torch.no_grad():  # "prunes" only half of what 4x needs
        for n in layers:
            w = mods[n].weight
            w[w.abs() < w.abs().median()] = 0
    with pytest.raises(VerificationError) as err:
        verify(m, target, method="liar")
    assert "liar" in str(err.value) and "4x" in str(err.value) and "achieved 2" in str(err.value)


def test_verification_catches_unstructured_zeros_claimed_as_filters():
    m = _model()
    target = Target(layers=("0",), structure=Structure.parse("filter"), rate=2.0)
    with torch.no_grad():
        w = m[0].weight
        w[w.abs() < w.abs().flatten().median()] = 0  # half the weights, but no whole filter
    with pytest.raises(VerificationError, match="filter groups"):
        verify(m, target)
    with torch.no_grad():
        m[0].weight[:4] = 0  # now 4 of 8 filters are gone
    assert verify(m, target).achieved_rate == pytest.approx(2.0)


def test_verification_catches_too_many_levels():
    m = _model()
    target = Target(layers=("3",), rate=1.0, quantization=Quantization(3))
    with pytest.raises(VerificationError, match="allows at most 8"):
        verify(m, target)


def test_magnitude_masks_global_and_uniform_budgets():
    torch.manual_seed(1)
    w = {"a": torch.randn(16, 8, 3, 3), "b": torch.randn(10, 64)}
    total = sum(t.numel() for t in w.values())
    for kind in ("unstructured", "filter", "channel", "column", "kernel"):
        for alloc in ("global", "uniform"):
            masks = magnitude_masks(w, kind, total // 4, allocation=alloc)
            kept = sum(int(m.sum()) for m in masks.values())
            assert kept <= total // 4, (kind, alloc)
            assert kept >= total // 4 * 0.5, (kind, alloc)
    masks = magnitude_masks(w, "unstructured", 100)
    kept = torch.cat([w[n][masks[n]].abs() for n in w])
    dropped = torch.cat([w[n][~masks[n]].abs() for n in w])
    assert kept.min() >= dropped.max()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_uniform_levels_must_be_evenly_spaced(bits):
    torch.manual_seed(bits)
    m = _model()
    target = Target(layers=("3",), rate=1.0, quantization=Quantization(bits))
    with torch.no_grad():
        quantize_uniform_(m[3].weight.data, bits)
    verify(m, target)  # the standard quantizer's levels pass
    n = 2 ** (bits - 1) - 1
    with torch.no_grad():  # geometric levels: as many as allowed, not one step's multiples
        w = m[3].weight
        codes = (w.abs() / w.abs().max() * n).round().clamp(1, n)
        w.copy_(torch.sign(w) * 1.5 ** codes)
    if n > 1:
        with pytest.raises(VerificationError, match="not multiples of one step"):
            verify(m, target)


def test_nan_and_inf_are_refused_by_name():
    m = _model()
    with torch.no_grad():
        m[0].weight[0, 0, 0, 0] = float("nan")
        m[3].bias[1] = float("-inf")
    with pytest.raises(VerificationError, match=r"NaN in 0\.weight; Inf in 3\.bias"):
        verify(m, Target(layers=("0",), rate=1.0))


def test_layers_outside_the_target_keep_their_nonzeros_and_without_training_everything():
    dense = {k: v.clone() for k, v in _model().state_dict().items()}
    m = _model()
    target = Target(layers=("0",), rate=1.0)
    verify(m, target, dense=dense, trained=False)
    with torch.no_grad():
        m[0].bias.add_(1e-3)  # a target layer's bias: only training may change it
    with pytest.raises(VerificationError, match=r"changed without training: 0\.bias"):
        verify(m, target, dense=dense, trained=False)
    verify(m, target, dense=dense, trained=True)
    with torch.no_grad():
        m[3].weight[:2] = 0  # layer 3 is not in the target
    with pytest.raises(VerificationError, match="excluded layer 3: 576 weights zeroed that were nonzero"):
        verify(m, target, dense=dense, trained=True)
