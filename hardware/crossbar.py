"""Memristor-crossbar model: crossbars, cells, converters, area, power, energy.

Mapping.  A layer's GEMM matrix [F, C*kh*kw] is laid on the crossbars
transposed: crossbar rows are the inputs (C*kh*kw, driven by DACs) and
crossbar columns are the outputs (F, read by ADCs).  A grouped conv is
mapped group by group (each group has its own inputs).  Each group matrix is

1. compacted: input rows and output columns that are all zero in the whole
   group are dropped, as structured (filter / channel) pruning removes them
   physically;
2. cut into ``rows`` x ``cols`` weight tiles; a tile whose weights are all
   zero is not instantiated.  Scattered zeros inside a used tile free nothing;
3. each used tile becomes ``cells_per_weight * (2 if differential)``
   physical crossbars: one per ``bits_per_cell`` slice of the weight (bit
   slicing), and a positive and a negative array for signed weights
   (digest section 5's formula).  cells_per_weight =
   ceil(weight_bits / bits_per_cell).  A layer stored as fp32
   (``weight_bits`` None) is mapped at ``unquantized_bits`` (default 8),
   since a crossbar cannot hold fp32 and 8-bit memristor weights are nearly
   lossless (arXiv 1908.10017).

The dense baseline maps the same layers without steps 1-2 (every tile
instantiated), at ``baseline_bits`` (None: the layer's own bits, so the
reductions isolate pruning; e.g. 16 adds the effect of fewer bits).

Cost.  Every crossbar carries the full periphery: ``rows`` DACs (one per
row), ``cols`` sample-and-holds, ceil(cols / cols_per_adc) ADCs (column
multiplexing) each with a shift-and-add unit.  Area counts all of it.
Power is the active power of one read with all crossbars of a layer
working: cells, DACs and S+Hs of the *mapped* rows/columns of a tile and the
ADCs serving mapped columns (idle periphery of a part-filled edge tile is
taken as power-gated [assumption]).  ADCs and other parts are counted at
their rated power for the whole read, an upper bound (a 1 GS/s ADC serving
8 columns is busy about 8 ns of a 100 ns read).  One MVM streams
``input_bits`` through ``dac_bits`` DACs: ceil(input_bits / dac_bits) reads
of ``read_latency_ns``.  A layer does ``output_positions`` MVMs per sample,
so energy = power x MVM latency x output_positions.

The ADC is fixed at ``adc_bits`` (cost does not scale with it).  A lossless
column sum needs ``adc_bits_lossless`` = bitlength(rows_active *
(2^bits_per_cell - 1) * (2^dac_bits - 1)), reported per layer so the gap is
visible; the accuracy lost to a narrower ADC is not modelled.

Constants come from different designs and technology nodes (ISAAC at
32 nm, an MNSIM 2.0 ADC entry); they are a plausible mix, not one
consistent technology point.  Every one is a Config field.

The paper (Yuan et al., arXiv 1908.11691) reports 29.81x compression with
98.38% power and 98.29% area reduction on VGG-16.  That cannot be checked
here without its cost model (1 - 1/29.81 = 96.6%, so part of its saving
comes from something other than fewer crossbars, e.g. fewer bits or cheaper
converters).  This model reproduces the structure of such a claim: only
whole tiles / rows / columns save hardware, and the reductions follow.

Not modelled: weight-slice crossbars that happen to be all zero (e.g. high
bits of small weights, the negative array of an all-positive tile), buffers,
interconnect, activation/pooling units, write (programming) energy,
device non-idealities, and tile placement across chips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from prunebench.config import NonNegativeFloat, PositiveInt, Validated
from prunebench.interfaces import Figure, HardwareModel

from ._figures import ratio, sum_layers

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = ["CrossbarModel", "map_matrix"]

# ------------------------------------------------------------------ constants
# ISAAC = Shafiee et al., ISCA 2016, Table I (32 nm): 8 arrays of 128x128,
# 2 bits/cell, 8x128 1-bit DACs, 8x128 S+H, 4 S+A units per IMA, 100 ns read.
# Not on arXiv.

#: crossbar size; NeuroSim V1.4 (numRowSubArray/numColSubArray = 128), ISAAC Table I
XBAR_ROWS = 128
XBAR_COLS = 128
#: columns sharing one ADC; NeuroSim Param.cpp numColMuxed = 8
COLS_PER_ADC = 8
#: 6-bit SAR ADC, 1 GS/s: 1.26 mW, 580 um^2; MNSIM 2.0 Hardware_Model/ADC.py
#: ADC_Choice 4 ("Area-Efficient 1GS/s 6b SAR ADC with Charge-Injection-Cell-
#: Based DAC"), the figures given in the task brief
ADC_BITS = 6
ADC_POWER_MW = 1.26
ADC_AREA_UM2 = 580.0
#: multi-level cell, 4 levels; ISAAC Table I (2 bits per cell)
BITS_PER_CELL = 2
#: width of fp32 layers when mapped; arXiv 1908.10017 (near-lossless 8-bit
#: memristor weights), also NeuroSim's default synapseBit = 8
UNQUANTIZED_BITS = 8
#: bit-serial 1-bit DAC (an inverter-sized driver); ISAAC Table I:
#: 4 mW and 0.00017 mm^2 for 8x128 DACs -> 3.9 uW, 0.166 um^2 each
#: (per-DAC values as in MNSIM 2.0 Hardware_Model/DAC.py)
DAC_BITS = 1
DAC_POWER_MW = 0.0039
DAC_AREA_UM2 = 0.166
#: activation width streamed through the DACs [assumption: 8-bit activations]
INPUT_BITS = 8
#: memristor cell; ISAAC Table I: 0.0002 mm^2 and 2.4 mW for 8 arrays of
#: 128x128 -> 1.53e-3 um^2 and 18.3 nW per cell (one significant figure in
#: the source)
CELL_AREA_UM2 = 0.0002e6 / (8 * 128 * 128)
CELL_READ_POWER_NW = 2.4e6 / (8 * 128 * 128)
#: sample-and-hold per column; ISAAC Table I: 10 uW, 0.00004 mm^2 for 8x128
SAMPLE_HOLD_POWER_NW = 10e3 / (8 * 128)
SAMPLE_HOLD_AREA_UM2 = 0.00004e6 / (8 * 128)
#: shift-and-add; ISAAC Table I: 0.2 mW, 0.00024 mm^2 for 4 units -> 0.05 mW,
#: 60 um^2 each; one per ADC [assumption: ISAAC has 0.5 per ADC]
SHIFT_ADD_POWER_MW = 0.05
SHIFT_ADD_AREA_UM2 = 60.0
#: one crossbar read; ISAAC section IV ("a cycle is the time required to
#: perform one crossbar read operation, ... 100 ns")
READ_LATENCY_NS = 100.0

UM2_PER_MM2 = 1e6


# ------------------------------------------------------------------- mapping
def map_matrix(xbar: torch.Tensor, rows: int, cols: int, cols_per_adc: int, *, compact: bool) -> dict[str, int]:
    """Tile one crossbar-oriented mask [inputs, outputs] onto rows x cols tiles.

    ``compact``: drop all-zero rows/columns first and skip all-zero tiles
    (the pruned mapping); otherwise every tile is used (the dense mapping).
    Returns weight tiles and, summed over used tiles, mapped cells, mapped
    rows, mapped columns and ADCs serving mapped columns, plus the most
    mapped rows in one tile.
    """
    # numpy: boolean reductions over large masks are several times faster than torch's on CPU
    if compact:
        m = np.ascontiguousarray(xbar.bool().numpy())
        rows_alive, cols_alive = m.any(axis=1), m.any(axis=0)
        if not (rows_alive.all() and cols_alive.all()):  # skip the copy when nothing is removable
            m = m.compress(rows_alive, axis=0).compress(cols_alive, axis=1)
        n_in, n_out = m.shape
    else:
        n_in, n_out = xbar.shape
    empty = {"tiles": 0, "mapped_cells": 0, "mapped_rows": 0, "mapped_cols": 0, "active_adcs": 0, "max_tile_rows": 0}
    if n_in == 0 or n_out == 0:
        return empty
    br, bc = math.ceil(n_in / rows), math.ceil(n_out / cols)
    if compact:
        # nonzeros per tile by summing row bands then column bands (partial edge tiles included)
        counts = np.add.reduceat(np.add.reduceat(m, np.arange(0, n_in, rows), axis=0, dtype=np.int64),
                                 np.arange(0, n_out, cols), axis=1)
        used = torch.from_numpy(counts > 0)
    else:
        used = torch.ones(br, bc, dtype=torch.bool)
    if not bool(used.any()):
        return empty
    # extent of each tile row band / column band (the last ones may be partial)
    h = torch.tensor([min(rows, n_in - i * rows) for i in range(br)], dtype=torch.int64)
    w = torch.tensor([min(cols, n_out - j * cols) for j in range(bc)], dtype=torch.int64)
    adcs = (w + cols_per_adc - 1) // cols_per_adc
    u = used.to(torch.int64)
    return {
        "tiles": int(u.sum()),
        "mapped_cells": int((u * h[:, None] * w[None, :]).sum()),
        "mapped_rows": int((u * h[:, None]).sum()),
        "mapped_cols": int((u * w[None, :]).sum()),
        "active_adcs": int((u * adcs[None, :]).sum()),
        "max_tile_rows": int(h[used.any(dim=1)].max()),
    }


def _reduction(new: float, old: float) -> float | None:
    """1 - new/old, or None when old is zero."""
    r = ratio(new, old)
    return None if r is None else 1.0 - r


_TOTALS = (
    "tiles",
    "dense_tiles",
    "crossbars",
    "dense_crossbars",
    "cells",
    "dense_cells",
    "used_cells",
    "adcs",
    "dacs",
    "dense_adcs",
    "dense_dacs",
    "area_mm2",
    "dense_area_mm2",
    "power_mw",
    "dense_power_mw",
    "energy_per_inference_nj",
    "dense_energy_per_inference_nj",
)


class CrossbarModel(HardwareModel):
    """Memristor crossbars for the artifact's layers (see the module docstring).

    Totals: ``tiles``, ``crossbars``, ``cells``, ``used_cells``, ``adcs``,
    ``dacs``, ``area_mm2``, ``power_mw``, ``energy_per_inference_nj``, the
    same with a ``dense_`` prefix for the dense mapping, and
    ``used_cells_fraction``, ``area_reduction_fraction``,
    ``power_reduction_fraction``, ``energy_reduction_fraction``,
    ``crossbar_reduction_x`` (dense / pruned), ``adc_bits`` and
    ``adc_bits_lossless`` (max over layers).  A ratio with a zero
    denominator is None.  Per layer the same under ``layer.<name>.<figure>``,
    plus ``weight_bits``, ``cells_per_weight``, ``mapped_inputs`` and
    ``mapped_outputs`` (after compaction).
    """

    @dataclass(frozen=True)
    class Config(Validated):
        rows: PositiveInt = XBAR_ROWS
        cols: PositiveInt = XBAR_COLS
        bits_per_cell: PositiveInt = BITS_PER_CELL
        #: bits of a layer stored as fp32 (weight_bits None)
        unquantized_bits: PositiveInt = UNQUANTIZED_BITS
        #: two arrays (positive, negative) per signed weight
        differential: bool = True
        #: weight bits of the dense baseline; None: each layer's own bits
        baseline_bits: PositiveInt | None = None
        input_bits: PositiveInt = INPUT_BITS
        dac_bits: PositiveInt = DAC_BITS
        cols_per_adc: PositiveInt = COLS_PER_ADC
        adc_bits: PositiveInt = ADC_BITS
        adc_power_mw: NonNegativeFloat = ADC_POWER_MW
        adc_area_um2: NonNegativeFloat = ADC_AREA_UM2
        dac_power_mw: NonNegativeFloat = DAC_POWER_MW
        dac_area_um2: NonNegativeFloat = DAC_AREA_UM2
        cell_area_um2: NonNegativeFloat = CELL_AREA_UM2
        cell_read_power_nw: NonNegativeFloat = CELL_READ_POWER_NW
        sample_hold_power_nw: NonNegativeFloat = SAMPLE_HOLD_POWER_NW
        sample_hold_area_um2: NonNegativeFloat = SAMPLE_HOLD_AREA_UM2
        shift_add_power_mw: NonNegativeFloat = SHIFT_ADD_POWER_MW
        shift_add_area_um2: NonNegativeFloat = SHIFT_ADD_AREA_UM2
        read_latency_ns: NonNegativeFloat = READ_LATENCY_NS

    version = "1"

    # per physical crossbar ------------------------------------------------
    def _adcs_per_crossbar(self) -> int:
        c = self.config
        return math.ceil(c.cols / c.cols_per_adc)

    def _crossbar_area_um2(self) -> float:
        c = self.config
        return (
            c.rows * c.cols * c.cell_area_um2
            + c.rows * c.dac_area_um2
            + c.cols * c.sample_hold_area_um2
            + self._adcs_per_crossbar() * (c.adc_area_um2 + c.shift_add_area_um2)
        )

    def _power_mw(self, geo: dict[str, int], copies: int) -> float:
        """Active power of all crossbars of a mapping (``copies`` per tile)."""
        c = self.config
        per_copy = (
            geo["mapped_cells"] * c.cell_read_power_nw * 1e-6
            + geo["mapped_rows"] * c.dac_power_mw
            + geo["mapped_cols"] * c.sample_hold_power_nw * 1e-6
            + geo["active_adcs"] * (c.adc_power_mw + c.shift_add_power_mw)
        )
        return per_copy * copies

    def mvm_latency_ns(self) -> float:
        """One matrix-vector product: bit-serial input over ceil(input/dac) reads."""
        c = self.config
        return math.ceil(c.input_bits / c.dac_bits) * c.read_latency_ns

    def cells_per_weight(self, weight_bits: int) -> int:
        return math.ceil(weight_bits / self.config.bits_per_cell)

    # per layer -----------------------------------------------------------
    def layer_figures(self, layer: "LayerRecord") -> dict[str, Figure]:
        c = self.config
        f_out, k_in = layer.gemm_shape()
        if layer.mask.numel() != f_out * k_in:
            raise ValueError(f"layer {layer.name!r}: mask has {layer.mask.numel()} entries, weight shape {layer.weight_shape}")
        groups = int(layer.groups or 1)
        if f_out % groups:
            raise ValueError(f"layer {layer.name!r}: {f_out} filters do not split into {groups} groups")
        bits = layer.weight_bits if layer.weight_bits is not None else c.unquantized_bits
        base_bits = c.baseline_bits if c.baseline_bits is not None else bits
        polarity = 2 if c.differential else 1
        copies = self.cells_per_weight(bits) * polarity
        dense_copies = self.cells_per_weight(base_bits) * polarity

        keys = ("tiles", "mapped_cells", "mapped_rows", "mapped_cols", "active_adcs")
        sparse = dict.fromkeys(keys, 0)
        dense = dict.fromkeys(keys, 0)
        max_rows = 0
        mapped_in = mapped_out = 0
        # each group sees its own inputs: a separate crossbar matrix [inputs, outputs]
        for g_mask in layer.mask.reshape(f_out, k_in).bool().chunk(groups, dim=0):
            xbar = g_mask.t()
            s = map_matrix(xbar, c.rows, c.cols, c.cols_per_adc, compact=True)
            d = map_matrix(xbar, c.rows, c.cols, c.cols_per_adc, compact=False)
            for k in keys:
                sparse[k] += s[k]
                dense[k] += d[k]
            max_rows = max(max_rows, s["max_tile_rows"])
            xb = xbar.numpy()
            mapped_in += int(xb.any(axis=1).sum())
            mapped_out += int(xb.any(axis=0).sum())

        crossbars = sparse["tiles"] * copies
        dense_crossbars = dense["tiles"] * dense_copies
        cells_per_xbar = c.rows * c.cols
        used_cells = layer.nonzeros * copies
        xbar_area_mm2 = self._crossbar_area_um2() / UM2_PER_MM2
        power = self._power_mw(sparse, copies)
        dense_power = self._power_mw(dense, dense_copies)
        mvm_ns = self.mvm_latency_ns()
        positions = int(layer.output_positions)
        # mW * ns = pJ; / 1000 -> nJ
        energy = power * mvm_ns * positions / 1000.0
        dense_energy = dense_power * mvm_ns * positions / 1000.0
        full_scale = max_rows * (2**c.bits_per_cell - 1) * (2**c.dac_bits - 1)
        area = crossbars * xbar_area_mm2
        dense_area = dense_crossbars * xbar_area_mm2
        return {
            "weight_bits": int(bits),
            "cells_per_weight": copies // polarity,
            "mapped_inputs": mapped_in,
            "mapped_outputs": mapped_out,
            "tiles": sparse["tiles"],
            "dense_tiles": dense["tiles"],
            "crossbars": crossbars,
            "dense_crossbars": dense_crossbars,
            "cells": crossbars * cells_per_xbar,
            "dense_cells": dense_crossbars * cells_per_xbar,
            "used_cells": used_cells,
            "used_cells_fraction": ratio(used_cells, crossbars * cells_per_xbar),
            "adcs": crossbars * self._adcs_per_crossbar(),
            "dacs": crossbars * c.rows,
            "dense_adcs": dense_crossbars * self._adcs_per_crossbar(),
            "dense_dacs": dense_crossbars * c.rows,
            "area_mm2": area,
            "dense_area_mm2": dense_area,
            "power_mw": power,
            "dense_power_mw": dense_power,
            "energy_per_inference_nj": energy,
            "dense_energy_per_inference_nj": dense_energy,
            "area_reduction_fraction": _reduction(area, dense_area),
            "power_reduction_fraction": _reduction(power, dense_power),
            "energy_reduction_fraction": _reduction(energy, dense_energy),
            "crossbar_reduction_x": ratio(dense_crossbars, crossbars),
            "adc_bits_lossless": full_scale.bit_length(),
        }

    def score(self, artifact: "CompressedModel", *, model=None, example_input=None) -> dict[str, Figure]:
        totals, per_layer = sum_layers(artifact, self.layer_figures, _TOTALS)
        out: dict[str, Figure] = dict(totals)
        out["used_cells_fraction"] = ratio(totals["used_cells"], totals["cells"])
        out["area_reduction_fraction"] = _reduction(totals["area_mm2"], totals["dense_area_mm2"])
        out["power_reduction_fraction"] = _reduction(totals["power_mw"], totals["dense_power_mw"])
        out["energy_reduction_fraction"] = _reduction(
            totals["energy_per_inference_nj"], totals["dense_energy_per_inference_nj"]
        )
        out["crossbar_reduction_x"] = ratio(totals["dense_crossbars"], totals["crossbars"])
        out["adc_bits"] = self.config.adc_bits
        out["adc_bits_lossless"] = max(
            (per_layer[f"layer.{layer.name}.adc_bits_lossless"] for layer in artifact.layers), default=0
        )
        out.update(per_layer)
        return out
