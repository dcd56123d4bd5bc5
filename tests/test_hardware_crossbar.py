"""CrossbarModel: hand-tiled counts, costs, reductions, properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.artifact import CompressedModel
from prunebench.config import ConfigError, parse
from prunebench.hardware.crossbar import CrossbarModel, map_matrix

from conftest import layer_record

Cfg = CrossbarModel.Config


def record(name, mask, bits=8, positions=1, groups=1):
    return layer_record(name, mask, bits=bits, positions=positions, groups=groups)

def score(mask, config=None, **kw):
    return CrossbarModel(config).score(CompressedModel([record("fc", mask, **kw)]))


# One physical crossbar per weight tile: 8-bit weights in 8-bit cells, no pair.
ONE = Cfg(bits_per_cell=8, differential=False)


def full() -> torch.Tensor:
    # GEMM matrix [F=200 outputs, K=300 inputs]; on the crossbar 300 rows x 200 cols
    return torch.ones(200, 300, dtype=torch.bool)


# ----------------------------------------------------------------- tile counts

def test_dense_300x200_is_six_tiles():
    s = score(full(), ONE)
    # ceil(300/128) * ceil(200/128) = 3 * 2 = 6
    assert s["tiles"] == s["dense_tiles"] == 6
    assert s["crossbars"] == s["dense_crossbars"] == 6
    assert s["cells"] == 6 * 128 * 128
    assert s["used_cells"] == 60000
    assert s["used_cells_fraction"] == pytest.approx(60000 / (6 * 16384))
    # per crossbar 128 DACs and 128/8 = 16 ADCs
    assert s["dacs"] == 6 * 128
    assert s["adcs"] == 6 * 16
    assert s["crossbar_reduction_x"] == 1.0
    assert s["area_reduction_fraction"] == 0.0


def test_all_zero_tile_is_not_instantiated():
    m = full()
    m[:128, :128] = False  # outputs 0-127 x inputs 0-127: crossbar tile (0, 0)
    s = score(m, ONE)
    # no whole row or column is zero, so nothing compacts: 6 - 1 = 5
    assert (s["layer.fc.mapped_inputs"], s["layer.fc.mapped_outputs"]) == (300, 200)
    assert s["crossbars"] == 5
    assert s["dense_crossbars"] == 6
    assert s["crossbar_reduction_x"] == pytest.approx(6 / 5)
    # every crossbar costs the same area: 1 - 5/6
    assert s["area_reduction_fraction"] == pytest.approx(1 / 6)


def test_scattered_zeros_free_nothing():
    m = full()
    i = torch.arange(200)[:, None]
    j = torch.arange(300)[None, :]
    m &= (i + j) % 3 == 0  # two thirds zero, but every row, column and tile keeps some
    s = score(m, ONE)
    assert s["crossbars"] == s["dense_crossbars"] == 6
    assert s["area_reduction_fraction"] == 0.0
    assert s["used_cells"] == int(m.sum())
    assert s["used_cells_fraction"] < 0.6


def test_removed_inputs_compact_300_to_250_rows():
    m = full()
    m[:, torch.arange(0, 300, 6)] = False  # 50 inputs (crossbar rows) gone, not contiguous
    s = score(m, ONE)
    # 250 rows: ceil(250/128) * ceil(200/128) = 2 * 2 = 4
    assert s["layer.fc.mapped_inputs"] == 250
    assert s["crossbars"] == 4
    assert s["dense_crossbars"] == 6


def test_removed_filters_compact_columns():
    m = full()
    m[128:] = False  # 72 of 200 filters pruned -> 128 crossbar columns
    s = score(m, ONE)
    # ceil(300/128) * ceil(128/128) = 3 * 1 = 3
    assert s["layer.fc.mapped_outputs"] == 128
    assert s["crossbars"] == 3


@pytest.mark.parametrize(
    "bits_per_cell, differential, per_tile",
    [
        (2, True, 8),   # ceil(8/2) = 4 slices, x2 for the pair
        (2, False, 4),  # ceil(8/2) = 4
        (4, True, 4),   # ceil(8/4) = 2, x2
        (3, True, 6),   # ceil(8/3) = 3, x2
        (1, True, 16),  # 8 slices, x2
        (8, True, 2),   # 1 slice, x2: the pair alone doubles
    ],
)
def test_cells_per_weight_and_differential_pair(bits_per_cell, differential, per_tile):
    s = score(full(), Cfg(bits_per_cell=bits_per_cell, differential=differential))
    assert s["crossbars"] == 6 * per_tile
    assert s["cells"] == 6 * per_tile * 128 * 128
    # every mapped weight occupies one cell per slice and polarity
    assert s["used_cells"] == 60000 * per_tile
    assert s["layer.fc.cells_per_weight"] == math.ceil(8 / bits_per_cell)


def test_default_config_counts():
    # 8-bit weights on 2-bit cells, differential: 6 tiles * 4 * 2 = 48 crossbars
    assert score(full())["crossbars"] == 48


def test_unquantized_layers_use_unquantized_bits():
    # weight_bits None -> 8 bits -> same as an 8-bit layer; 4 bits -> ceil(4/2) * 2 = 4 per tile
    assert score(full(), bits=None)["crossbars"] == 48
    s = score(full(), Cfg(unquantized_bits=4), bits=None)
    assert s["crossbars"] == 24
    assert s["layer.fc.weight_bits"] == 4


def test_baseline_bits_adds_bit_reduction():
    # ternary layer (2 bits -> 1 cell, pair -> 2 per tile) vs 16-bit dense (8 cells, pair -> 16)
    s = score(full(), Cfg(baseline_bits=16), bits=2)
    assert s["crossbars"] == 12
    assert s["dense_crossbars"] == 96
    assert s["crossbar_reduction_x"] == pytest.approx(8.0)


# ------------------------------------------------------------------------ cost

def only(**values) -> Cfg:
    """Config with every cost zero except the ones given (one ADC per 8 columns)."""
    zero = dict(
        adc_power_mw=0.0, adc_area_um2=0.0, dac_power_mw=0.0, dac_area_um2=0.0,
        cell_area_um2=0.0, cell_read_power_nw=0.0, sample_hold_power_nw=0.0,
        sample_hold_area_um2=0.0, shift_add_power_mw=0.0, shift_add_area_um2=0.0,
    )
    zero.update(values)
    return Cfg(bits_per_cell=8, differential=False, **zero)


def zero_tile() -> torch.Tensor:
    m = full()
    m[:128, :128] = False
    return m


def test_adc_power_counts_adcs_of_mapped_columns():
    # crossbar rows bands 128, 128, 44; column bands 128 (16 ADCs), 72 (ceil(72/8) = 9 ADCs)
    # dense: 3 bands * (16 + 9) = 75 ADCs at 1 mW; pruned: tile (0, 0) gone -> 75 - 16 = 59
    s = score(zero_tile(), only(adc_power_mw=1.0), positions=10)
    assert s["dense_power_mw"] == pytest.approx(75.0)
    assert s["power_mw"] == pytest.approx(59.0)
    assert s["power_reduction_fraction"] == pytest.approx(1 - 59 / 75)
    # energy: 59 mW * (8 input bits / 1-bit DAC = 8 reads * 100 ns) * 10 MVMs = 472000 pJ = 472 nJ
    assert s["energy_per_inference_nj"] == pytest.approx(472.0)
    assert s["dense_energy_per_inference_nj"] == pytest.approx(600.0)
    # instantiated ADCs still 16 per crossbar
    assert s["adcs"] == 5 * 16


def test_dac_power_counts_mapped_rows():
    # dense: (128 + 128 + 44) rows * 2 column bands = 600; pruned: 600 - 128 = 472
    s = score(zero_tile(), only(dac_power_mw=1.0))
    assert s["dense_power_mw"] == pytest.approx(600.0)
    assert s["power_mw"] == pytest.approx(472.0)


def test_cell_power_counts_mapped_cells():
    # 1000 nW = 1 uW per mapped cell; dense 60000 cells = 60 mW; minus 128*128 = 16384
    s = score(zero_tile(), only(cell_read_power_nw=1000.0))
    assert s["dense_power_mw"] == pytest.approx(60.0)
    assert s["power_mw"] == pytest.approx((60000 - 16384) / 1000)


def test_area_counts_whole_crossbars():
    # per crossbar: 16 ADCs * 1000 um^2 = 16000 um^2 = 0.016 mm^2, edge tiles included
    s = score(zero_tile(), only(adc_area_um2=1000.0))
    assert s["area_mm2"] == pytest.approx(5 * 0.016)
    assert s["dense_area_mm2"] == pytest.approx(6 * 0.016)
    # DAC area: 128 rows * 2 um^2 per crossbar
    s = score(zero_tile(), only(dac_area_um2=2.0))
    assert s["area_mm2"] == pytest.approx(5 * 256 / 1e6)


def test_read_latency_and_dac_bits_set_energy():
    # 4-bit DACs: ceil(8/4) = 2 reads of 50 ns = 100 ns per MVM; 75 mW dense * 100 ns = 7.5 nJ
    s = score(full(), only(adc_power_mw=1.0, dac_bits=4, read_latency_ns=50.0))
    assert s["dense_energy_per_inference_nj"] == pytest.approx(7.5)
    assert CrossbarModel(Cfg(dac_bits=4, read_latency_ns=50.0)).mvm_latency_ns() == 100.0


def test_default_constants_give_plausible_crossbar():
    # full 128x128 tile: 16 ADCs (+S+A) dominate: 16 * (580 + 60) = 10240 um^2 of ~10291
    s = score(torch.ones(128, 128, dtype=torch.bool), Cfg(bits_per_cell=8, differential=False))
    assert s["area_mm2"] == pytest.approx(0.01029, rel=1e-3)
    # power: cells 0.3 + DACs 128*0.0039 + S+H 0.00125 + 16 * (1.26 + 0.05) mW
    assert s["power_mw"] == pytest.approx(0.3 + 0.4992 + 0.00125 + 16 * 1.31)


def test_adc_bits_lossless():
    # 128 active rows * (2^2 - 1) * (2^1 - 1) = 384 -> 9 bits
    s = score(full())
    assert s["layer.fc.adc_bits_lossless"] == 9
    assert s["adc_bits_lossless"] == 9
    assert s["adc_bits"] == 6
    # 44 inputs only: 44 * 3 = 132 -> 8 bits
    assert score(torch.ones(10, 44, dtype=torch.bool))["adc_bits_lossless"] == 8


def test_grouped_conv_maps_each_group():
    # depthwise (4, 1, 3, 3), groups 4: four 9-input x 1-output matrices -> 4 tiles
    mask = torch.ones(4, 1, 3, 3, dtype=torch.bool)
    s = CrossbarModel(ONE).score(CompressedModel([record("dw", mask, groups=4)]))
    assert s["tiles"] == s["dense_tiles"] == 4
    mask[1] = False  # one channel's filter pruned: its group needs no tile
    s = CrossbarModel(ONE).score(CompressedModel([record("dw", mask, groups=4)]))
    assert s["tiles"] == 3
    assert s["layer.dw.mapped_inputs"] == 27


# --------------------------------------------------------- zero denominators

def test_zero_denominators_are_none():
    s = score(torch.zeros(20, 30, dtype=torch.bool))
    assert s["crossbars"] == 0
    assert s["crossbar_reduction_x"] is None
    assert s["used_cells_fraction"] is None
    assert s["area_reduction_fraction"] == 1.0  # dense is not zero
    assert s["layer.fc.crossbar_reduction_x"] is None
    empty = CrossbarModel().score(CompressedModel([]))
    for key in ("crossbar_reduction_x", "used_cells_fraction", "area_reduction_fraction",
                "power_reduction_fraction", "energy_reduction_fraction"):
        assert empty[key] is None, key
    assert empty["crossbars"] == 0
    assert empty["adc_bits_lossless"] == 0


def test_config_parsing_and_checks():
    assert parse(Cfg, {"rows": 64, "baseline_bits": None}, "hw") == Cfg(rows=64)
    assert parse(Cfg, {"adc_power_mw": 2}, "hw").adc_power_mw == 2.0
    for bad in ({"rows": 0}, {"bits_per_cell": 1.5}, {"adc_area_um2": -1.0}, {"differential": 1}, {"baseline_bits": 0}):
        with pytest.raises(ConfigError):
            parse(Cfg, bad, "hw")


# -------------------------------------------------------------- properties

def naive_tiles(xbar: torch.Tensor, rows: int, cols: int) -> int:
    """Reference: compact, then count nonzero tiles with Python loops."""
    r = [i for i in range(xbar.shape[0]) if bool(xbar[i].any())]
    c = [j for j in range(xbar.shape[1]) if bool(xbar[:, j].any())]
    count = 0
    for i0 in range(0, len(r), rows):
        for j0 in range(0, len(c), cols):
            if any(bool(xbar[a, b]) for a in r[i0:i0 + rows] for b in c[j0:j0 + cols]):
                count += 1
    return count


@st.composite
def masks(draw, max_side: int = 12):
    n = draw(st.integers(1, max_side))
    k = draw(st.integers(1, max_side))
    density = draw(st.sampled_from([0.1, 0.5, 0.9]))
    flat = draw(st.lists(st.floats(0, 1), min_size=n * k, max_size=n * k))
    return torch.tensor(flat).reshape(n, k) < density


@settings(max_examples=60, deadline=None)
@given(masks(), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 8), st.booleans())
def test_properties(mask, rows, cols, bpc, bits, differential):
    cfg = Cfg(rows=rows, cols=cols, cols_per_adc=2, bits_per_cell=bpc, differential=differential)
    s = score(mask, cfg, bits=bits)
    assert s["crossbars"] <= s["dense_crossbars"]
    assert s["tiles"] == naive_tiles(mask.t(), rows, cols)
    assert s["used_cells"] <= s["cells"]
    assert s["area_mm2"] <= s["dense_area_mm2"] + 1e-12
    assert s["power_mw"] <= s["dense_power_mw"] + 1e-9
    if s["crossbars"]:
        assert 0 < s["used_cells_fraction"] <= 1
        assert s["crossbar_reduction_x"] >= 1
    for key, value in s.items():
        assert value is None or isinstance(value, (int, float, str)), key


def test_map_matrix_dense_ignores_zeros():
    m = torch.zeros(5, 7, dtype=torch.bool)
    m[0, 0] = True
    d = map_matrix(m, 2, 3, 2, compact=False)
    # ceil(5/2) * ceil(7/3) = 3 * 3 = 9 tiles, all 35 cells mapped
    assert d["tiles"] == 9 and d["mapped_cells"] == 35
    assert map_matrix(m, 2, 3, 2, compact=True)["tiles"] == 1


# ---------------------------------------------------------- real artifacts

def test_from_model_filter_pruned_linear(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    with torch.no_grad():
        model[0].weight[128:] = 0  # 72 neurons pruned
        model[2].weight[:, 128:] = 0  # their inputs in the next layer are dead too
    art = CompressedModel.from_model(model, ["0", "2"], torch.randn(1, 300), weight_bits=8)
    s = CrossbarModel(ONE).score(art)
    # layer 0: 300 x 128 -> 3 * 1 = 3 (dense 3 * 2 = 6); layer 2: 128 x 10 -> 1 (dense ceil(200/128) = 2)
    assert (s["layer.0.crossbars"], s["layer.0.dense_crossbars"]) == (3, 6)
    assert (s["layer.2.crossbars"], s["layer.2.dense_crossbars"]) == (1, 2)
    assert s["crossbar_reduction_x"] == pytest.approx(8 / 4)
    assert CrossbarModel(ONE).score(CompressedModel.load(art.save(tmp_path / "a"))) == s
