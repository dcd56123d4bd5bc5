"""StorageModel: hand-counted bits on small matrices, reference encoders
written with plain loops, properties, round trip."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import layer_record
from prunebench.artifact import CompressedModel
from prunebench.config import ConfigError, parse
from prunebench.hardware.storage import (
    FORMAT_BITS,
    FORMATS,
    StorageModel,
    bitmap_bits,
    compact_bits,
    csr_bits,
    dense_bits,
    index_width,
    kept_rows_cols,
    layer_storage,
    pattern_bits,
    relative_index_bits,
    relative_index_filler_counts,
    relative_index_gaps,
)


def record(name, mask, bits=None, positions=1):
    return layer_record(name, mask, bits=bits, positions=positions)

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


def test_4x6_bitmap_and_relative_index_by_hand():
    b = 4
    # bitmap: 24 presence bits + 7*4 values = 52
    assert bitmap_bits(MASK_4x6, b) == 52
    # row-major positions 0, 3, 13, 15, 18, 19, 23; gaps from position -1:
    assert relative_index_gaps(MASK_4x6).tolist() == [1, 3, 10, 2, 3, 1, 4]
    # a b-bit index holds gaps up to M = 2^b; fillers(b) = sum(ceil(g / 2^b) - 1):
    # b=1 (M=2): gap 3 -> 1, 10 -> 4, 2 -> 0, 3 -> 1, 4 -> 1; = 7
    # b=2 (M=4): gap 10 -> 2, gap 4 -> 0 (fits exactly); = 2
    # b=3 (M=8): gap 10 -> 1; b>=4: 0
    assert relative_index_filler_counts(relative_index_gaps(MASK_4x6))[:5].tolist() == [7, 2, 1, 0, 0]
    # bits = (7 + fillers) * (4 + b): b=1 14*5 = 70, b=2 9*6 = 54, b=3 8*7 = 56,
    # b=4 7*8 = 56, b=5 7*9 = 63 -> best 54 at b=2
    assert relative_index_bits(MASK_4x6, b) == (54, 2, 2)
    assert relative_index_bits(MASK_4x6, b, width=2) == (54, 2, 2)
    assert relative_index_bits(MASK_4x6, b, width=3) == (56, 3, 1)
    assert relative_index_bits(MASK_4x6, b, width=4) == (56, 4, 0)


def test_4x6_model_figures():
    art = CompressedModel([record("fc", MASK_4x6, bits=4)])
    s = StorageModel().score(art)
    assert s["fp32_dense_bits"] == 24 * 32 == 768
    assert s["quantized_dense_bits"] == 96
    assert s["value_bits"] == 28
    assert s["csr_bits"] == 64  # 28 + 36
    assert s["csr_index_bits"] == 36
    assert s["compact_bits"] == 58
    assert s["bitmap_bits"] == 52
    assert s["relative_index_bits"] == 54
    assert (s["layer.fc.relative_index_width_bits"], s["relative_index_fillers"]) == (2, 2)
    assert s["relative_index_filler_fraction"] == pytest.approx(2 / 7)
    assert s["relative_index_width_mode"] == "best"
    # linear layer: no pattern format; falls back to its cheapest other format
    assert (s["pattern_bits"], s["layer.fc.pattern_format"]) == (52, "bitmap")
    assert s["layer.fc.pattern_library_size"] is None and s["layer.fc.pattern_kept_kernels"] is None
    # min(96, 58, 52, 64, 54) = 52, bitmap
    assert s["stored_bits"] == 52
    assert s["layer.fc.format"] == "bitmap"
    assert s["layer.fc.csr_bits"] == 64
    assert s["compression_data_only_x"] == pytest.approx(768 / 28)
    assert s["compression_with_index_x"] == pytest.approx(768 / 52)
    assert s["csr_compression_x"] == pytest.approx(12.0)  # 768 / 64
    assert s["quantized_dense_compression_x"] == pytest.approx(8.0)  # 768 / 96
    assert s["bitmap_compression_x"] == pytest.approx(768 / 52)
    assert s["relative_index_compression_x"] == pytest.approx(768 / 54)
    assert s["compact_compression_x"] == pytest.approx(768 / 58)
    assert s["pattern_compression_x"] == pytest.approx(768 / 52)
    assert s["index_overhead_fraction"] == pytest.approx(24 / 52)  # (52-28)/52


def test_4x6_fp32_weights():
    # weight_bits None -> 32 bits: dense 768; CSR 7*32 + 36 = 260;
    # compact 3*4*32 + 10 = 394; bitmap 24 + 224 = 248;
    # relative index (7 + fillers) * (32 + b): b=2 9*34 = 306, b=3 8*35 = 280, b=4 7*36 = 252 (best)
    s = StorageModel().score(CompressedModel([record("fc", MASK_4x6, bits=None)]))
    assert s["quantized_dense_bits"] == 768
    assert s["value_bits"] == 224
    assert s["csr_bits"] == 260
    assert s["compact_bits"] == 394
    assert s["bitmap_bits"] == 248
    assert (s["relative_index_bits"], s["layer.fc.relative_index_width_bits"]) == (252, 4)
    assert s["stored_bits"] == 248
    assert s["layer.fc.format"] == "bitmap"
    assert s["layer.fc.weight_bits"] == 32


def test_fixed_relative_index_width():
    # b fixed at 3: (7 + 1 filler) * (4 + 3) = 56 (see test_4x6_bitmap_and_relative_index_by_hand)
    s = StorageModel(StorageModel.Config(relative_index_bits=3)).score(CompressedModel([record("fc", MASK_4x6, 4)]))
    assert (s["relative_index_bits"], s["relative_index_fillers"], s["layer.fc.relative_index_width_bits"]) == (56, 1, 3)
    assert s["relative_index_width_mode"] == "fixed"
    assert parse(StorageModel.Config, {"relative_index_bits": 5}, "hardware.storage").relative_index_bits == 5
    assert parse(StorageModel.Config, {"relative_index_bits": None}, "hardware.storage").relative_index_bits is None
    for bad in (0, 33, True, 2.5):
        with pytest.raises(ConfigError):
            parse(StorageModel.Config, {"relative_index_bits": bad}, "hardware.storage")


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
    # pattern: 24 kernels, 9 kept, all the full 3x3 mask -> 1 pattern, 0-bit ids:
    # 24 connectivity + 1*9 library + 9*0 ids + 324 values = 357
    assert s["pattern_bits"] == 357
    assert (s["layer.conv.pattern_library_size"], s["layer.conv.pattern_kept_kernels"]) == (1, 9)
    # relative index: gaps 1 and 26 ones, then 28 (54 - 26), 26 ones, 55 (135 - 80), 26 ones;
    # fillers floor(27/M) + floor(54/M), M = 2^b, bits (81 + fillers) * (4 + b):
    # b=1: 13 + 27 = 40 -> 605; b=2: 6 + 13 = 19 -> 600 (best); b=3: 3 + 6 = 9 -> 630;
    # b=4: 1 + 3 = 4 -> 680; b=5: 0 + 1 -> 738; b=6: 0 -> 810
    assert (s["relative_index_bits"], s["relative_index_fillers"]) == (600, 19)
    assert s["layer.conv.relative_index_width_bits"] == 2
    assert s["bitmap_bits"] == 216 + 324
    # the connectivity bitmap plus a 9-bit library (33 bits) beat the keep bitmaps (35)
    assert s["stored_bits"] == 357
    assert s["layer.conv.format"] == "pattern"
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
    # pattern: 20 connectivity + 9 library + 8 kept * 0 + 576 = 605
    assert s["pattern_bits"] == 605
    assert s["stored_bits"] == 605
    assert s["layer.conv.format"] == "pattern"


def test_zero_denominators_are_none():
    # all-zero layer: no values, so the data-only ratio is not modelled
    s = StorageModel().score(CompressedModel([record("fc", torch.zeros(3, 5, dtype=torch.bool), bits=8)]))
    assert s["value_bits"] == 0
    assert s["compression_data_only_x"] is None
    assert s["relative_index_filler_fraction"] is None
    # CSR of nothing: 0 column indices + (3+1) one-bit pointers = 4 bits
    assert s["csr_bits"] == 4
    # relative index of nothing: an empty stream, 0 bits -> nothing stored
    assert s["relative_index_bits"] == 0
    assert s["stored_bits"] == 0
    assert s["layer.fc.format"] == "relative_index"
    assert s["compression_with_index_x"] is None
    assert s["relative_index_compression_x"] is None
    assert s["csr_compression_x"] == pytest.approx(15 * 32 / 4)
    # an artifact with no layers has no denominators at all
    empty = StorageModel().score(CompressedModel([]))
    for key in ("compression_data_only_x", "compression_with_index_x", "csr_compression_x", "index_overhead_fraction",
                "relative_index_filler_fraction", *(k[:-4] + "compression_x" for k in FORMAT_BITS.values())):
        assert empty[key] is None
    assert empty["stored_bits"] == 0


def test_totals_are_sums_of_layers():
    art = CompressedModel([record("a", MASK_4x6, bits=4), record("b", torch.ones(3, 3, dtype=torch.bool))])
    s = StorageModel().score(art)
    for key in ("fp32_dense_bits", "value_bits", "csr_bits", "csr_index_bits", "compact_bits", "stored_bits",
                "bitmap_bits", "relative_index_bits", "relative_index_fillers", "pattern_bits"):
        assert s[key] == s[f"layer.a.{key}"] + s[f"layer.b.{key}"]
    # a full 3x3 fp32 layer is cheapest dense: 9*32 = 288 (no index)
    assert s["layer.b.format"] == "dense"
    assert s["layer.b.stored_bits"] == 288


# ------------------------------------------------- relative index: overflow

def naive_relative_index(mask: torch.Tensor, value_bits: int, width: int) -> tuple[int, int, list]:
    """Reference encoder with plain loops: (bits, fillers, entries).

    Walks the row-major positions; the first gap is measured from -1.  The
    field stores gap - 1 (the zeros skipped, EIE's z), so a gap up to
    M = 2^width fits; a longer one emits (M, 0) filler entries until it fits.
    """
    limit = 2**width
    flat = [bool(v) for v in mask.reshape(-1).tolist()]
    entries, previous, fillers = [], -1, 0
    for pos, nonzero in enumerate(flat):
        if not nonzero:
            continue
        gap = pos - previous
        while gap > limit:
            entries.append((limit, 0))
            fillers += 1
            gap -= limit
        entries.append((gap, 1))
        previous = pos
    assert all(0 <= gap - 1 < 2**width for gap, _ in entries)  # every stored field fits in width bits
    return len(entries) * (width + value_bits), fillers, entries


def naive_decode(entries: list, numel: int) -> list[bool]:
    out, pos = [False] * numel, -1
    for gap, value in entries:
        pos += gap
        if value:
            out[pos] = True
    return out


def test_gap_overflow_forces_fillers():
    # 3 x 10 matrix, nonzeros at (0, 2) and (2, 2): flat positions 2 and 22
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, 2] = mask[2, 2] = True
    # gaps: 2 - (-1) = 3 and 22 - 2 = 20 (it crosses a whole row)
    assert relative_index_gaps(mask).tolist() == [3, 20]
    # b=3: M=8; gap 20 -> ceil(20/8) - 1 = 2 fillers (8 + 8 + 4);
    # 2 values + 2 fillers = 4 entries of 4 + 3 bits = 28
    assert relative_index_bits(mask, 4, width=3) == (28, 3, 2)
    bits, fillers, entries = naive_relative_index(mask, 4, 3)
    assert (bits, fillers) == (28, 2)
    assert entries == [(3, 1), (8, 0), (8, 0), (4, 1)]
    assert naive_decode(entries, 30) == mask.reshape(-1).tolist()
    # over b=1..16: b=1 (M=2) 1 + 9 = 10 fillers -> 12 * 5 = 60; b=2 (M=4) 4 fillers -> 6 * 6 = 36;
    # b=3 28; b=4 (M=16) 1 filler -> 3 * 8 = 24; b=5 (M=32) none -> 2 * 9 = 18 (best); b>5 more
    assert relative_index_bits(mask, 4, width=4) == (24, 4, 1)
    assert relative_index_bits(mask, 4) == (18, 5, 0)
    s = StorageModel(StorageModel.Config(relative_index_bits=3)).score(CompressedModel([record("fc", mask, 4)]))
    assert (s["relative_index_bits"], s["relative_index_fillers"]) == (28, 2)
    assert s["relative_index_filler_fraction"] == pytest.approx(1.0)  # 2 fillers / 2 nonzeros


# ------------------------------------------------------------------ pattern

PATTERN_A = [1, 0, 1, 0, 1, 0, 1, 0, 0]
PATTERN_B = [0, 1, 0, 1, 1, 1, 0, 0, 0]


def test_pattern_by_hand():
    # conv (2, 2, 3, 3): kernels f0c0 = A, f0c1 empty, f1c0 = A, f1c1 = B (4 nonzeros each)
    mask = torch.zeros(2, 2, 3, 3, dtype=torch.bool)
    mask[0, 0] = mask[1, 0] = torch.tensor(PATTERN_A, dtype=torch.bool).reshape(3, 3)
    mask[1, 1] = torch.tensor(PATTERN_B, dtype=torch.bool).reshape(3, 3)
    # 4 kernels -> 4 connectivity bits; 3 kept; 2 patterns -> library 2*9 = 18, ids ceil(log2 2) = 1 bit;
    # values 12*4 = 48: 4 + 18 + 3*1 + 48 = 73
    assert pattern_bits(mask.reshape(2, 18), 4, 9) == (73, 2, 3)
    s = StorageModel().score(CompressedModel([record("conv", mask, bits=4)]))
    assert s["pattern_bits"] == 73
    # others: dense 36*4 = 144; bitmap 36 + 48 = 84; compact 2 rows x 8 cols * 4 + 2 + 18 = 84;
    # CSR 48 + 12*ceil(log2 18)=60 + 3*ceil(log2 13)=12 -> 120;
    # relative: gaps 1,2,2,2,12,2,2,2,4,2,1,1; b=1 (M=2): 5 + 1 fillers -> 18 * 5 = 90;
    # b=2 (M=4): 2 fillers for 12, none for 4 -> 14 * 6 = 84 (best); b=3: 1 -> 13 * 7 = 91; b=4: 12 * 8 = 96
    assert (s["quantized_dense_bits"], s["bitmap_bits"], s["compact_bits"], s["csr_bits"]) == (144, 84, 84, 120)
    assert (s["relative_index_bits"], s["layer.conv.relative_index_width_bits"]) == (84, 2)
    assert s["layer.conv.format"] == "pattern"
    assert s["stored_bits"] == 73


@pytest.mark.parametrize("patterns, id_bits", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (9, 4)])
def test_pattern_id_width(patterns, id_bits):
    # conv (P, 1, 3, 3), kernel i keeps only position i: P distinct one-nonzero patterns
    mask = torch.zeros(patterns, 1, 3, 3, dtype=torch.bool)
    for i in range(patterns):
        mask.view(patterns, 9)[i, i] = True
    # P connectivity + P*9 library + P * ceil(log2 P) ids + P values * 8
    expected = patterns + patterns * 9 + patterns * id_bits + patterns * 8
    assert pattern_bits(mask.reshape(patterns, 9), 8, 9) == (expected, patterns, patterns)


def test_pattern_fallback_for_linear_and_1x1():
    # 1x1 conv (4, 6, 1, 1) has the same GEMM view as MASK_4x6: no kernels to pattern
    conv1x1 = MASK_4x6.reshape(4, 6, 1, 1)
    s = StorageModel().score(CompressedModel([record("pw", conv1x1, 4), record("fc", MASK_4x6, 4)]))
    for name in ("pw", "fc"):
        assert s[f"layer.{name}.pattern_bits"] == s[f"layer.{name}.bitmap_bits"] == 52
        assert s[f"layer.{name}.pattern_format"] == "bitmap"
        assert s[f"layer.{name}.format"] == "bitmap"  # never "pattern" where it does not apply
        assert s[f"layer.{name}.pattern_library_size"] is None
    assert pattern_bits(MASK_4x6, 4, 1) is None
    assert s["pattern_bits"] == 104


@pytest.mark.parametrize("k", [3, 5, 9])
def test_pattern_code_paths_match_reference(k):
    # 3x3 counts patterns by bincount, 5x5 by sorting codes, 9x9 (81 bits) by packed rows
    mask = torch.rand(6, 4, k, k, generator=torch.Generator().manual_seed(k)) < 0.3
    mask[0, 0] = mask[1, 1] = mask[2, 2]  # repeated patterns
    mask[3, 3] = False  # a dropped kernel
    assert pattern_bits(mask.reshape(6, -1), 4, k * k)[0] == naive_pattern(mask, 4)


def test_empty_conv_pattern():
    # all kernels dropped: only the 6-bit connectivity bitmap, no library, no ids
    assert pattern_bits(torch.zeros(2, 27, dtype=torch.bool), 4, 9) == (6, 0, 0)


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


def naive_pattern(mask4d: torch.Tensor, value_bits: int) -> int:
    """Reference pattern count with plain loops over kernels."""
    f, c, kh, kw = mask4d.shape
    library, kept, nnz = set(), 0, 0
    for i in range(f):
        for j in range(c):
            kernel = tuple(bool(v) for v in mask4d[i, j].reshape(-1).tolist())
            nnz += sum(kernel)
            if any(kernel):
                kept += 1
                library.add(kernel)
    ids = math.ceil(math.log2(len(library))) if len(library) > 1 else 0
    return f * c + len(library) * kh * kw + kept * ids + nnz * value_bits


@st.composite
def conv_masks(draw):
    f, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    # 5x5 and 9x9 reach the sort and packbits paths of pattern_bits
    kh, kw = draw(st.sampled_from([(1, 1), (1, 3), (3, 3), (2, 2), (5, 5), (9, 9)]))
    density = draw(st.sampled_from([0.1, 0.4, 0.8]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    return torch.rand(f, c, kh, kw, generator=g) < density


@settings(max_examples=60, deadline=None)
@given(masks(), bits, st.integers(1, 6))
def test_relative_index_matches_reference(mask, b, width):
    bits_, width_, fillers = relative_index_bits(mask, b, width)
    ref_bits, ref_fillers, entries = naive_relative_index(mask, b, width)
    assert (bits_, width_, fillers) == (ref_bits, width, ref_fillers)
    assert naive_decode(entries, mask.numel()) == mask.reshape(-1).tolist()
    nnz = int(mask.sum())
    assert bits_ >= nnz * b


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5000), max_size=40))
def test_filler_counts_match_the_formula(gaps):
    counts = relative_index_filler_counts(torch.tensor(gaps, dtype=torch.int64).numpy())
    for b in range(1, 17):
        assert counts[b - 1] == sum(math.ceil(g / 2**b) - 1 for g in gaps)


@settings(max_examples=60, deadline=None)
@given(masks(), bits)
def test_optimal_width_beats_every_fixed_width(mask, b):
    best, width, _ = relative_index_bits(mask, b)
    assert 1 <= width <= 16
    assert best >= int(mask.sum()) * b
    fixed = [relative_index_bits(mask, b, w)[0] for w in range(1, 17)]
    assert best == min(fixed)
    assert fixed[width - 1] == best and all(f > best for f in fixed[: width - 1])  # smallest b on a tie


@settings(max_examples=60, deadline=None)
@given(masks(), bits)
def test_bitmap_and_compact_formulas(mask, b):
    rows, cols = mask.shape
    nnz = int(mask.sum())
    assert bitmap_bits(mask, b) == rows * cols + nnz * b
    kept_r = sum(1 for r in range(rows) if any(mask[r].tolist()))
    kept_c = sum(1 for c in range(cols) if any(mask[:, c].tolist()))
    # dense bits of the kept shape + one keep bit per row and per column
    assert compact_bits(mask, b) == kept_r * kept_c * b + rows + cols


@settings(max_examples=60, deadline=None)
@given(conv_masks(), bits)
def test_pattern_matches_reference(mask, b):
    f, c, kh, kw = mask.shape
    got = pattern_bits(mask.reshape(f, -1), b, kh * kw)
    if kh * kw == 1:
        assert got is None
    else:
        assert got[0] == naive_pattern(mask, b)
        assert got[0] >= int(mask.sum()) * b


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(masks(), conv_masks()), st.one_of(st.none(), bits)), min_size=1, max_size=4))
def test_stored_is_cheapest_format(layers):
    art = CompressedModel([record(f"l{i}", m, b) for i, (m, b) in enumerate(layers)])
    s = StorageModel().score(art)
    for key in FORMAT_BITS.values():
        assert s["stored_bits"] <= s[key]
    assert s["csr_bits"] >= s["value_bits"]
    assert s["relative_index_bits"] >= s["value_bits"]
    assert s["csr_bits"] == s["value_bits"] + s["csr_index_bits"]
    for i in range(len(layers)):
        layer = f"layer.l{i}"
        fmt = s[f"{layer}.format"]
        assert fmt in FORMATS
        assert s[f"{layer}.stored_bits"] == s[f"{layer}.{FORMAT_BITS[fmt]}"]
        for key in FORMAT_BITS.values():
            assert s[f"{layer}.stored_bits"] <= s[f"{layer}.{key}"]
        if s[f"{layer}.pattern_format"] != "pattern":
            other = s[f"{layer}.pattern_format"]
            assert s[f"{layer}.pattern_bits"] == s[f"{layer}.{FORMAT_BITS[other]}"] == s[f"{layer}.stored_bits"]
    for key, value in s.items():
        assert value is None or isinstance(value, (int, float, str)), key
        assert not isinstance(value, bool), key
        assert not (isinstance(value, float) and math.isinf(value)), key


def test_layer_storage_accepts_numpy_and_torch():
    assert layer_storage(MASK_4x6, 4) == layer_storage(MASK_4x6.numpy(), 4) == layer_storage(MASK_4x6.int(), 4)


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


# ------------------------------------- relative index: the papers' gap bound
#
# Deep Compression (arXiv 1510.00149, Sec. 2, Fig. 2: a difference of 8 still
# fits 3 bits) and EIE (arXiv 1602.01528, Sec. III: 4-bit z counts up to 15
# zeros before an entry): a b-bit relative index encodes a gap up to 2^b; a
# filler zero entry is needed only when the gap exceeds 2^b.


def two_nonzeros(gap: int) -> torch.Tensor:
    """A 1 x (gap + 1) row with nonzeros at positions 0 and ``gap``: gaps [1, gap]."""
    mask = torch.zeros(1, gap + 1, dtype=torch.bool)
    mask[0, 0] = mask[0, gap] = True
    return mask


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("times, plus, fillers", [
    (1, 0, 0),  # gap exactly 2^b: fits, no filler
    (1, 1, 1),  # gap 2^b + 1: one filler
    (1, -1, 0),  # gap 2^b - 1: fits
    (2, 0, 1),  # gap 2^(b+1): one filler covers 2^b, the entry the other 2^b
    (2, 1, 2),  # gap 2^(b+1) + 1: two fillers
])
def test_gap_of_two_to_the_b_fits(width, times, plus, fillers):
    gap = times * 2**width + plus
    if gap < 1:
        pytest.skip("a gap is at least 1")
    mask = two_nonzeros(gap)
    assert relative_index_gaps(mask).tolist() == [1, gap]
    # 2 nonzeros + fillers entries of (value 4 + index b) bits
    assert relative_index_bits(mask, 4, width=width) == ((2 + fillers) * (4 + width), width, fillers)
    assert naive_relative_index(mask, 4, width)[:2] == ((2 + fillers) * (4 + width), fillers)


def test_gap_bound_by_hand_3_bits():
    # Deep Compression's Fig. 2 example width, 3 bits, values 4 bits (7 bits an entry)
    # gap 8 (7 zeros skipped, stored as 7 = 0b111): entries (1, 8) -> 2 * 7 = 14 bits
    assert relative_index_bits(two_nonzeros(8), 4, width=3) == (14, 3, 0)
    # gap 9: a filler 8 positions on, then the entry 1 further -> 3 * 7 = 21 bits
    assert relative_index_bits(two_nonzeros(9), 4, width=3) == (21, 3, 1)
    assert naive_relative_index(two_nonzeros(9), 4, 3)[2] == [(1, 1), (8, 0), (1, 1)]
    # the first entry's gap counts from -1: a lone nonzero at position 8 has gap 9
    lone = torch.zeros(1, 9, dtype=torch.bool)
    lone[0, 8] = True
    assert relative_index_gaps(lone).tolist() == [9]
    assert relative_index_bits(lone, 4, width=3) == (14, 3, 1)
    lone7 = torch.zeros(1, 8, dtype=torch.bool)
    lone7[0, 7] = True
    assert relative_index_bits(lone7, 4, width=3) == (7, 3, 0)


def test_gap_bound_eie_4_bits():
    # EIE's 4-bit z: 15 zeros before an entry (gap 16) fit; 16 zeros (gap 17) need a padding zero
    assert relative_index_bits(two_nonzeros(16), 4, width=4) == (2 * 8, 4, 0)
    assert relative_index_bits(two_nonzeros(17), 4, width=4) == (3 * 8, 4, 1)


def dc_model() -> CompressedModel:
    """conv (2, 30, 3, 3) [GEMM 2 x 270]: nonzeros at flat 0, 256, 513 -> gaps 1, 256, 257;
    linear (4, 20): nonzeros at flat 0, 32, 65 -> gaps 1, 32, 33.  8-bit values."""
    conv = torch.zeros(2, 30, 3, 3, dtype=torch.bool)
    conv.view(-1)[[0, 256, 513]] = True
    fc = torch.zeros(4, 20, dtype=torch.bool)
    fc.view(-1)[[0, 32, 65]] = True
    return CompressedModel([record("conv", conv, bits=8), record("fc", fc, bits=8)])


def test_deep_compression_index_widths():
    cfg = StorageModel.Config(relative_index_width_mode="deep_compression")
    s = StorageModel(cfg).score(dc_model())
    assert s["relative_index_width_mode"] == "deep_compression"
    # conv at 8 bits (M = 256): gap 256 fits, 257 needs 1 filler: 4 entries * (8 + 8) = 64
    assert (s["layer.conv.relative_index_width_bits"], s["layer.conv.relative_index_fillers"]) == (8, 1)
    assert s["layer.conv.relative_index_bits"] == 64
    # fc at 5 bits (M = 32): gap 32 fits, 33 needs 1 filler: 4 entries * (8 + 5) = 52
    assert (s["layer.fc.relative_index_width_bits"], s["layer.fc.relative_index_fillers"]) == (5, 1)
    assert s["layer.fc.relative_index_bits"] == 52
    assert (s["relative_index_bits"], s["relative_index_fillers"]) == (116, 2)
    # the cheapest width per layer instead: conv b=9 (M=512) no filler: 3 * 17 = 51;
    # fc b=6 (M=64) no filler: 3 * 14 = 42 (b=5: 52, b=4: 3 fillers, 6 * 12 = 72)
    best = StorageModel().score(dc_model())
    assert best["relative_index_width_mode"] == "best"
    assert (best["layer.conv.relative_index_width_bits"], best["layer.conv.relative_index_bits"]) == (9, 51)
    assert (best["layer.fc.relative_index_width_bits"], best["layer.fc.relative_index_bits"]) == (6, 42)
    assert best["relative_index_bits"] == 93
    # one width for all: b=5 -> conv fillers floor(255/32) + floor(256/32) = 7 + 8 = 15:
    # 18 * 13 = 234; fc 52; total 286
    fixed = StorageModel(StorageModel.Config(relative_index_bits=5)).score(dc_model())
    assert fixed["relative_index_width_mode"] == "fixed"
    assert (fixed["layer.conv.relative_index_bits"], fixed["relative_index_bits"]) == (234, 286)


def test_width_mode_config():
    parsed = parse(StorageModel.Config, {"relative_index_width_mode": "deep_compression"}, "hardware.storage")
    assert parsed.relative_index_width_mode == "deep_compression" and parsed.width_mode == "deep_compression"
    assert StorageModel.Config().width_mode == "best"
    assert StorageModel.Config(relative_index_bits=4).width_mode == "fixed"
    with pytest.raises(ConfigError, match="relative_index_width_mode: expected one of 'best', 'deep_compression'"):
        parse(StorageModel.Config, {"relative_index_width_mode": "eie"}, "hardware.storage")
    # a fixed width and the paper's widths together are contradictory
    with pytest.raises(ConfigError, match="relative_index_bits: expected null when relative_index_width_mode is"):
        parse(StorageModel.Config, {"relative_index_width_mode": "deep_compression", "relative_index_bits": 4},
              "hardware.storage")
