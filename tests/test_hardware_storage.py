"""StorageModel: hand-counted bits on small matrices, properties, round trip."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.artifact import CompressedModel, LayerRecord
from prunebench.config import ConfigError, parse
from prunebench.hardware.storage import (
    StorageModel,
    compact_bits,
    csr_bits,
    dense_bits,
    index_width,
    kept_rows_cols,
)


def record(name: str, mask: torch.Tensor, bits: int | None = None, positions: int = 1) -> LayerRecord:
    """A LayerRecord straight from a mask (linear if 2-D, conv if 4-D)."""
    mask = mask.bool()
    return LayerRecord(
        name=name,
        kind="conv" if mask.dim() == 4 else "linear",
        weight_shape=tuple(mask.shape),
        input_shape=(),
        output_shape=(),
        output_positions=positions,
        mask=mask,
        weight=mask.float(),
        weight_bits=bits,
    )


# 4x6 GEMM matrix, 7 nonzeros; row 1 and columns 2, 4 are all zero.
MASK_4x6 = torch.tensor(
    [
        [1, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 1],
    ],
    dtype=torch.bool,
)


def test_index_width():
    # ceil(log2 n), at least one bit
    assert [index_width(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 1024, 1025)] == [1, 1, 1, 2, 2, 3, 3, 4, 10, 11]


def test_4x6_counts_by_hand():
    b = 4
    # dense: 24 entries * 4 = 96
    assert dense_bits(MASK_4x6, b) == 96
    # CSR: values 7*4 = 28; column index ceil(log2 6) = 3 bits -> 7*3 = 21;
    # row pointers (4+1) * ceil(log2(7+1)) = 5*3 = 15; index = 21+15 = 36
    assert csr_bits(MASK_4x6, b) == (28, 36)
    # kept rows {0,2,3} = 3, kept cols {0,1,3,5} = 4
    assert kept_rows_cols(MASK_4x6) == (3, 4)
    # compact: 3*4*4 = 48 + bitmap 4 rows + 6 cols = 58
    assert compact_bits(MASK_4x6, b) == 58


def test_4x6_model_figures():
    art = CompressedModel([record("fc", MASK_4x6, bits=4)])
    s = StorageModel().score(art)
    assert s["fp32_dense_bits"] == 24 * 32 == 768
    assert s["quantized_dense_bits"] == 96
    assert s["value_bits"] == 28
    assert s["csr_bits"] == 64  # 28 + 36
    assert s["csr_index_bits"] == 36
    assert s["compact_bits"] == 58
    # min(96, 64, 58) = 58, compact
    assert s["stored_bits"] == 58
    assert s["layer.fc.format"] == "compact"
    assert s["layer.fc.csr_bits"] == 64
    assert s["compression_data_only_x"] == pytest.approx(768 / 28)
    assert s["compression_with_index_x"] == pytest.approx(768 / 58)
    assert s["csr_compression_x"] == pytest.approx(12.0)  # 768 / 64
    assert s["index_overhead_fraction"] == pytest.approx(30 / 58)  # (58-28)/58


def test_4x6_fp32_weights_pick_csr():
    # weight_bits None -> 32 bits: dense 768; CSR 7*32 + 36 = 260;
    # compact 3*4*32 + 10 = 394 -> CSR is cheapest
    s = StorageModel().score(CompressedModel([record("fc", MASK_4x6, bits=None)]))
    assert s["quantized_dense_bits"] == 768
    assert s["value_bits"] == 224
    assert s["csr_bits"] == 260
    assert s["compact_bits"] == 394
    assert s["stored_bits"] == 260
    assert s["layer.fc.format"] == "csr"
    assert s["layer.fc.weight_bits"] == 32


def test_dense_bits_config_sets_width_of_unquantized_layers():
    # dense_bits=8: values 7*8 = 56, dense 24*8 = 192; the fp32 baseline stays 768
    s = StorageModel(StorageModel.Config(dense_bits=8)).score(CompressedModel([record("fc", MASK_4x6)]))
    assert s["value_bits"] == 56
    assert s["quantized_dense_bits"] == 192
    assert s["fp32_dense_bits"] == 768
    assert parse(StorageModel.Config, {"dense_bits": 16}, "hardware.storage") == StorageModel.Config(16)
    with pytest.raises(ConfigError):
        parse(StorageModel.Config, {"dense_bits": 0}, "hardware.storage")


def test_filter_pruned_conv():
    # conv (8, 3, 3, 3): GEMM 8 x 27; filters 0, 2, 5 kept whole
    mask = torch.zeros(8, 3, 3, 3, dtype=torch.bool)
    mask[[0, 2, 5]] = True
    s = StorageModel().score(CompressedModel([record("conv", mask, bits=4)]))
    # compact: 3 kept rows * 27 cols * 4 bits = 324, + 8 + 27 bitmap = 359
    assert s["compact_bits"] == 3 * 27 * 4 + 8 + 27 == 359
    # CSR: 81 nnz; values 324; col index ceil(log2 27) = 5 -> 405;
    # pointers 9 * ceil(log2 82) = 9*7 = 63; total 324 + 468 = 792
    assert s["csr_index_bits"] == 468
    assert s["csr_bits"] == 792
    assert s["quantized_dense_bits"] == 216 * 4 == 864
    assert s["stored_bits"] == 359
    assert s["layer.conv.format"] == "compact"
    assert (s["layer.conv.compact_kept_rows"], s["layer.conv.compact_kept_cols"]) == (3, 27)


def test_channel_pruned_conv():
    # conv (4, 5, 3, 3): GEMM 4 x 45; input channels 1 and 3 kept -> 2*9 = 18 columns
    mask = torch.zeros(4, 5, 3, 3, dtype=torch.bool)
    mask[:, [1, 3]] = True
    s = StorageModel().score(CompressedModel([record("conv", mask, bits=8)]))
    # compact: 4*18*8 = 576, + 4 + 45 = 625
    assert s["compact_bits"] == 625
    # CSR: 72 nnz; values 576; col ceil(log2 45) = 6 -> 432; pointers 5 * ceil(log2 73) = 35
    assert s["csr_bits"] == 576 + 432 + 35
    assert s["stored_bits"] == 625


def test_zero_denominators_are_none():
    # all-zero layer: no values, so the data-only ratio is not modelled
    s = StorageModel().score(CompressedModel([record("fc", torch.zeros(3, 5, dtype=torch.bool), bits=8)]))
    assert s["value_bits"] == 0
    assert s["compression_data_only_x"] is None
    # CSR of nothing: 0 column indices + (3+1) one-bit pointers = 4 bits
    assert s["csr_bits"] == 4
    assert s["stored_bits"] == 4
    assert s["compression_with_index_x"] == pytest.approx(15 * 32 / 4)
    # an artifact with no layers has no denominators at all
    empty = StorageModel().score(CompressedModel([]))
    for key in ("compression_data_only_x", "compression_with_index_x", "csr_compression_x", "index_overhead_fraction"):
        assert empty[key] is None
    assert empty["stored_bits"] == 0


def test_totals_are_sums_of_layers():
    art = CompressedModel([record("a", MASK_4x6, bits=4), record("b", torch.ones(3, 3, dtype=torch.bool))])
    s = StorageModel().score(art)
    for key in ("fp32_dense_bits", "value_bits", "csr_bits", "csr_index_bits", "compact_bits", "stored_bits"):
        assert s[key] == s[f"layer.a.{key}"] + s[f"layer.b.{key}"]
    # a full 3x3 fp32 layer is cheapest dense: 9*32 = 288 (no index)
    assert s["layer.b.format"] == "dense"
    assert s["layer.b.stored_bits"] == 288


# ---------------------------------------------------------------- properties

def naive_csr(mask: torch.Tensor, b: int) -> tuple[int, int]:
    """Reference CSR count with Python loops and float log2."""
    rows, cols = mask.shape
    nnz = sum(1 for r in range(rows) for c in range(cols) if mask[r, c])
    width = lambda n: max(1, math.ceil(math.log2(n))) if n > 1 else 1  # noqa: E731
    return nnz * b, nnz * width(cols) + (rows + 1) * width(nnz + 1)


@st.composite
def masks(draw, max_side: int = 9):
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    flat = draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(flat, dtype=torch.bool).reshape(rows, cols)


bits = st.integers(1, 32)


@settings(max_examples=60, deadline=None)
@given(masks(), bits)
def test_csr_matches_reference_and_covers_values(mask, b):
    values, index = csr_bits(mask, b)
    assert (values, index) == naive_csr(mask, b)
    assert values + index >= int(mask.sum()) * b


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=9), st.lists(st.booleans(), min_size=1, max_size=9), bits)
def test_compact_of_removed_rows_and_columns(row_keep, col_keep, b):
    r, c = torch.tensor(row_keep), torch.tensor(col_keep)
    mask = r[:, None] & c[None, :]  # whole rows and whole columns removed
    kept = sum(row_keep) * sum(col_keep)
    assert compact_bits(mask, b) == kept * b + len(row_keep) + len(col_keep)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(masks(), st.one_of(st.none(), bits)), min_size=1, max_size=4))
def test_stored_is_cheapest_format(layers):
    art = CompressedModel([record(f"l{i}", m, b) for i, (m, b) in enumerate(layers)])
    s = StorageModel().score(art)
    assert s["stored_bits"] <= s["quantized_dense_bits"]
    assert s["stored_bits"] <= s["csr_bits"]
    assert s["stored_bits"] <= s["compact_bits"]
    assert s["csr_bits"] >= s["value_bits"]
    assert s["csr_bits"] == s["value_bits"] + s["csr_index_bits"]
    for i in range(len(layers)):
        fmt = s[f"layer.l{i}.format"]
        key = {"dense": "quantized_dense_bits", "csr": "csr_bits", "compact": "compact_bits"}[fmt]
        assert s[f"layer.l{i}.stored_bits"] == s[f"layer.l{i}.{key}"]
    for key, value in s.items():
        assert value is None or isinstance(value, (int, float, str)), key
        assert not (isinstance(value, float) and math.isinf(value)), key


# ------------------------------------------------------------ real artifacts

def lenet5() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def test_save_load_round_trip_scores_the_same(tmp_path):
    torch.manual_seed(0)
    model = lenet5()
    with torch.no_grad():
        model[3].weight[:5] = 0  # 5 of 16 conv2 filters removed
        for i in (7, 9):
            model[i].weight.mul_(torch.rand_like(model[i].weight) < 0.1)
        for i in (0, 3, 7, 9, 11):  # 16 levels -> 4 bits
            w = model[i].weight
            model[i].weight.copy_(torch.round(w / w.abs().max() * 7) / 7)
    names = ["0", "3", "7", "9", "11"]
    art = CompressedModel.from_model(model, names, torch.randn(1, 1, 28, 28), structure="filter", weight_bits=4)
    before = StorageModel().score(art)
    after = StorageModel().score(CompressedModel.load(art.save(tmp_path / "art")))
    assert before == after
    assert before["layer.3.compact_kept_rows"] == 11
    assert before["stored_bits"] < before["quantized_dense_bits"]
