"""FpgaPeModel: hand-computed cycles, load imbalance, ternary arithmetic, properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.artifact import CompressedModel
from prunebench.config import ConfigError, parse
from prunebench.hardware.fpga_pe import FpgaPeModel, pe_of_rows

from conftest import layer_record

Cfg = FpgaPeModel.Config


def record(name, weight, positions=1):
    """A linear LayerRecord from a weight matrix; zeros are pruned."""
    return layer_record(name, weight=weight, positions=positions)

def score(weight, config=None, positions=1):
    return FpgaPeModel(config).score(CompressedModel([record("fc", weight, positions)]))


def general(mask: torch.Tensor) -> torch.Tensor:
    """Distinct magnitudes on the mask, so the layer needs real multiplies."""
    values = torch.arange(1, mask.numel() + 1, dtype=torch.float32).reshape(mask.shape)
    return values * mask


# 4 filters x 6 inputs; nonzeros per filter 3, 1, 2, 2 (8 in all)
MASK = torch.tensor(
    [
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [1, 0, 0, 0, 0, 1],
        [0, 1, 0, 0, 1, 0],
    ],
    dtype=torch.bool,
)


def test_assignment_maps():
    assert pe_of_rows(4, 2, "contiguous").tolist() == [0, 0, 1, 1]
    assert pe_of_rows(4, 2, "round_robin").tolist() == [0, 1, 0, 1]
    # 10 rows on 4 PEs: contiguous blocks of 3, 2, 3, 2
    assert pe_of_rows(10, 4, "contiguous").tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


def test_contiguous_by_hand():
    s = score(general(MASK), Cfg(pes=2, assignment="contiguous"), positions=3)
    # PE0 rows 0,1: (3+1)*3 = 12; PE1 rows 2,3: (2+2)*3 = 12 -> balanced
    assert s["work_ops"] == 24
    assert s["max_pe_work_ops"] == 12
    assert s["cycles"] == 12
    assert s["utilization_fraction"] == 1.0
    # dense: 2 rows * 6 * 3 = 36 per PE
    assert s["dense_cycles"] == 36
    assert s["speedup_x"] == pytest.approx(3.0)
    # general weights: one multiply and one add per nonzero per position
    assert s["multiplies"] == s["additions"] == 24
    assert s["dense_macs"] == 72
    assert s["multiply_reduction_x"] == pytest.approx(3.0)
    assert s["layer.fc.multiplication_free"] is False


def test_round_robin_imbalance_by_hand():
    s = score(general(MASK), Cfg(pes=2, assignment="round_robin"), positions=3)
    # PE0 rows 0,2: (3+2)*3 = 15; PE1 rows 1,3: (1+2)*3 = 9
    assert s["cycles"] == 15
    assert s["utilization_fraction"] == pytest.approx(24 / (2 * 15))
    assert s["speedup_x"] == pytest.approx(36 / 15)


def test_macs_per_cycle():
    # round robin, max work 15 at 4 per cycle -> ceil(15/4) = 4; dense ceil(36/4) = 9
    s = score(general(MASK), Cfg(pes=2, assignment="round_robin", macs_per_cycle_per_pe=4), positions=3)
    assert s["cycles"] == 4
    assert s["dense_cycles"] == 9


def test_irregular_sparsity_is_imbalanced():
    # 4 filters on 4 PEs, one each; nonzeros 5, 1, 1, 1
    m = torch.zeros(4, 8, dtype=torch.bool)
    m[0, :5] = True
    m[1:, 0] = True
    s = score(general(m), Cfg(pes=4))
    assert s["cycles"] == 5
    assert s["utilization_fraction"] == pytest.approx(8 / (4 * 5))


def test_pe_wise_structured_sparsity_is_balanced():
    # 8 filters x 16 inputs on 4 PEs (2 filters each); every PE loses one
    # 2x8 block, so each keeps 2*8 = 16 weights
    m = torch.ones(8, 16, dtype=torch.bool)
    m[0:2, 0:8] = False
    m[2:4, 8:16] = False
    m[4:6, 0:8] = False
    m[6:8, 8:16] = False
    s = score(general(m), Cfg(pes=4), positions=5)
    assert s["utilization_fraction"] == 1.0
    assert s["cycles"] == 16 * 5
    # dense 2*16*5 = 160 -> 2x, exactly the 2x compression
    assert s["speedup_x"] == pytest.approx(2.0)


def test_empty_filters_dropped_before_assignment():
    m = torch.zeros(4, 3, dtype=torch.bool)
    m[:2, :2] = True  # filters 2, 3 pruned away
    kept = score(general(m), Cfg(pes=2))
    # kept filters 0, 1 go to PE0 and PE1: 2 each
    assert kept["cycles"] == 2
    assert kept["utilization_fraction"] == 1.0
    assert kept["layer.fc.kept_filters"] == 2
    stay = score(general(m), Cfg(pes=2, drop_empty_filters=False))
    # filters 0,1 -> PE0 (4), filters 2,3 -> PE1 (0)
    assert stay["cycles"] == 4
    assert stay["utilization_fraction"] == pytest.approx(0.5)


def test_ternary_weights_add_instead_of_multiply():
    a = 0.37
    w = torch.tensor([[a, 0, -a, a], [0, -a, 0, 0], [0, 0, 0, 0]])
    s = score(w, Cfg(pes=2), positions=10)
    assert s["layer.fc.multiplication_free"] is True
    # 4 nonzeros * 10 positions additions; one scale multiply per kept output: 2 * 10
    assert s["additions"] == 40
    assert s["multiplies"] == 20
    # dense MACs 3*4*10 = 120
    assert s["multiply_reduction_x"] == pytest.approx(6.0)


def test_binary_and_per_filter_scales_are_multiplication_free():
    binary = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
    s = score(binary)
    assert s["layer.fc.multiplication_free"] is True
    assert (s["additions"], s["multiplies"]) == (4, 2)
    per_filter = torch.tensor([[0.5, -0.5, 0.0], [0.0, 0.25, -0.25]])
    assert score(per_filter)["layer.fc.multiplication_free"] is True
    two_levels = torch.tensor([[0.5, -0.25, 0.0], [0.0, 0.25, -0.25]])
    s = score(two_levels)
    assert s["layer.fc.multiplication_free"] is False
    assert s["multiplies"] == s["additions"] == 4


def test_zero_denominators_are_none():
    s = score(torch.zeros(3, 4))
    assert s["cycles"] == 0
    assert s["dense_cycles"] == 1 * 4  # 3 filters on 16 PEs: one each
    for key in ("utilization_fraction", "speedup_x", "multiply_reduction_x"):
        assert s[key] is None, key
    empty = FpgaPeModel().score(CompressedModel([]))
    for key in ("utilization_fraction", "speedup_x", "multiply_reduction_x"):
        assert empty[key] is None, key
    assert empty["cycles"] == 0


def test_totals_over_layers():
    art = CompressedModel([record("a", general(MASK), 3), record("b", torch.ones(2, 2), 1)])
    s = FpgaPeModel(Cfg(pes=2)).score(art)
    for key in ("cycles", "dense_cycles", "work_ops", "multiplies", "additions"):
        assert s[key] == s[f"layer.a.{key}"] + s[f"layer.b.{key}"], key
    # a: max 12; b: 1 filter per PE, 2 each -> max 2; work 24 + 4 over 2 * (12 + 2)
    assert s["utilization_fraction"] == pytest.approx(28 / 28)


def test_config_parsing_and_checks():
    assert parse(Cfg, {"pes": 8, "assignment": "round_robin"}, "hw") == Cfg(pes=8, assignment="round_robin")
    for bad in ({"pes": 0}, {"assignment": "random"}, {"macs_per_cycle_per_pe": 0}, {"pes": True}):
        with pytest.raises(ConfigError):
            parse(Cfg, bad, "hw")


# -------------------------------------------------------------- properties

@st.composite
def layers(draw, max_side: int = 10):
    f = draw(st.integers(1, max_side))
    k = draw(st.integers(1, max_side))
    flat = draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, -1.0, 2.5]), min_size=f * k, max_size=f * k))
    return torch.tensor(flat).reshape(f, k)


@settings(max_examples=60, deadline=None)
@given(
    layers(),
    st.integers(1, 5),
    st.integers(1, 6),
    st.sampled_from(["contiguous", "round_robin"]),
    st.integers(1, 3),
    st.booleans(),
)
def test_properties(weight, positions, pes, assignment, m, drop):
    cfg = Cfg(pes=pes, assignment=assignment, macs_per_cycle_per_pe=m, drop_empty_filters=drop)
    s = score(weight, cfg, positions)
    nnz = int((weight != 0).sum())
    assert s["work_ops"] == nnz * positions
    assert s["additions"] == nnz * positions
    assert s["cycles"] >= s["work_ops"] / (pes * m)
    assert s["cycles"] <= s["dense_cycles"]
    if nnz:
        assert 0 < s["utilization_fraction"] <= 1
        assert s["speedup_x"] >= 1
        assert s["multiplies"] <= s["additions"]
    else:
        assert s["utilization_fraction"] is None
    for key, value in s.items():
        assert value is None or isinstance(value, (int, float, str)), key
        assert not (isinstance(value, float) and math.isinf(value)), key


# ---------------------------------------------------------- real artifacts

def test_from_model_ternary_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():
        w = model[0].weight
        alpha = 0.1
        model[0].weight.copy_(torch.where(w.abs() > 0.1, torch.sign(w) * alpha, torch.zeros_like(w)))
    art = CompressedModel.from_model(model, ["0", "2"], torch.randn(1, 2, 6, 6), weight_bits=2)
    s = FpgaPeModel(Cfg(pes=4)).score(art)
    nnz = int((model[0].weight != 0).sum())
    kept = int((model[0].weight.flatten(1) != 0).any(dim=1).sum())
    assert s["layer.0.multiplication_free"] is True
    # conv output 4x4 = 16 positions
    assert s["layer.0.additions"] == nnz * 16
    assert s["layer.0.multiplies"] == kept * 16
    assert s["layer.2.multiplication_free"] is False
