"""FPGA processing-element (PE) array model: cycles, load balance, arithmetic.

An array of ``pes`` PEs runs the layers one after another.  Per layer the
GEMM matrix's rows (filters) are dealt to the PEs, in contiguous blocks
(sizes differ by at most one) or round-robin; a PE owns its filters'
weights.  Filters that are all zero are removed first
(``drop_empty_filters``), because filter pruning shrinks the layer before it
is mapped.

Work: one operation per nonzero weight per output position (each weight is
used ``output_positions`` times).  A PE does ``macs_per_cycle_per_pe`` per
cycle and the layer ends when the busiest PE ends, so

    cycles = ceil(max over PEs of work / macs_per_cycle_per_pe),
    utilization = total work / (pes * max work).

Load imbalance from irregular sparsity therefore costs cycles; structured
sparsity that leaves every PE the same amount of work (PE-wise structured
pruning, Yang, He, Fan, AAAI 2020) keeps utilization at 1.  The dense
baseline runs every weight of every filter on the same array.

Arithmetic.  When every filter's nonzero weights share one magnitude
(binary {-a, +a} or ternary {-a, 0, +a}, with one scale per layer or per
filter), the layer is multiplication-free: each nonzero costs one addition
and each output element one multiply by the scale.  Otherwise each nonzero
is one multiply and one addition (a MAC).  The scale multiplies are not
counted in cycles (taken as done by the output stage).

Not modelled: memory bandwidth and on-chip buffering, index decoding of the
sparse format, pipeline fill, biases, non-GEMM layers, FPGA resources and
clock rate; cycles are per sample (batch of one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from prunebench.config import PositiveInt, Validated
from prunebench.interfaces import Figure, HardwareModel

from ._figures import ratio, sum_layers

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = ["FpgaPeModel", "pe_of_rows", "pe_work", "single_magnitude_rows"]

Assignment = Literal["contiguous", "round_robin"]
ASSIGNMENTS = get_args(Assignment)


def pe_of_rows(n_rows: int, pes: int, assignment: str) -> torch.Tensor:
    """PE index of each of ``n_rows`` rows."""
    idx = torch.arange(n_rows, dtype=torch.int64)
    if assignment == "round_robin":
        return idx % pes
    if assignment == "contiguous":
        # floor(i * P / n): contiguous blocks whose sizes differ by at most one
        return (idx * pes) // max(n_rows, 1)
    raise ValueError(f"unknown assignment {assignment!r}; expected one of {', '.join(ASSIGNMENTS)}")


def pe_work(row_work: torch.Tensor, pes: int, assignment: str) -> torch.Tensor:
    """Work of each PE when rows with ``row_work`` are dealt out."""
    row_work = row_work.to(torch.int64)
    # scatter_add keeps integers exact (bincount with weights goes through float)
    out = torch.zeros(pes, dtype=torch.int64)
    return out.scatter_add_(0, pe_of_rows(len(row_work), pes, assignment), row_work)


def single_magnitude_rows(weight2d: torch.Tensor, mask2d: torch.Tensor) -> bool:
    """True when every row's nonzero weights share one |value| (binary/ternary)."""
    # numpy: masked row extrema over large layers are several times faster than torch's on CPU
    mag = np.abs(weight2d.detach().cpu().numpy())
    m = mask2d.bool().cpu().numpy()
    kept_rows = np.flatnonzero(m.any(axis=1))
    if kept_rows.size:  # most layers fail on their first kept row: decide without the full pass
        first = mag[kept_rows[0]][m[kept_rows[0]]]
        if first.max() != first.min():
            return False
    hi = np.where(m, mag, -np.inf).max(axis=1)
    lo = np.where(m, mag, np.inf).min(axis=1)
    kept = m.any(axis=1)
    return bool(np.array_equal(hi[kept], lo[kept]))


_TOTALS = ("work_ops", "max_pe_work_ops", "cycles", "dense_cycles", "multiplies", "additions", "dense_macs")


class FpgaPeModel(HardwareModel):
    """Cycles and arithmetic on an array of PEs (see the module docstring).

    Totals: ``work_ops`` (nonzeros x output positions), ``max_pe_work_ops``
    (summed over layers), ``cycles``, ``dense_cycles``, ``multiplies``,
    ``additions``, ``dense_macs``; ``utilization_fraction`` (work / (pes x
    sum of max PE work)), ``speedup_x`` (dense / sparse cycles),
    ``multiply_reduction_x`` (dense MACs / multiplies).  A ratio with a zero
    denominator is None.  Per layer the same under ``layer.<name>.<figure>``,
    plus ``filters``, ``kept_filters`` and ``multiplication_free``.
    """

    @dataclass(frozen=True)
    class Config(Validated):
        pes: PositiveInt = 16
        assignment: Assignment = "contiguous"
        macs_per_cycle_per_pe: PositiveInt = 1
        #: remove all-zero filters before dealing rows to PEs
        drop_empty_filters: bool = True

    version = "1"

    def layer_figures(self, layer: "LayerRecord") -> dict[str, Figure]:
        c = self.config
        f_out, k_in = layer.gemm_shape()
        if layer.mask.numel() != f_out * k_in:
            raise ValueError(f"layer {layer.name!r}: mask has {layer.mask.numel()} entries, weight shape {layer.weight_shape}")
        mask = layer.mask.reshape(f_out, k_in).bool()
        positions = int(layer.output_positions)
        row_nnz = torch.from_numpy(np.count_nonzero(mask.cpu().numpy(), axis=1).astype(np.int64))
        kept = row_nnz > 0
        mapped = row_nnz[kept] if c.drop_empty_filters else row_nnz
        work = pe_work(mapped * positions, c.pes, c.assignment)
        dense_work = pe_work(torch.full((f_out,), k_in * positions, dtype=torch.int64), c.pes, c.assignment)
        total = int(work.sum())
        peak = int(work.max())
        nnz = int(row_nnz.sum())
        kept_filters = int(kept.sum())
        mult_free = nnz > 0 and single_magnitude_rows(layer.weight.reshape(f_out, k_in), mask)
        if mult_free:
            # adds per nonzero; one scale multiply per kept output element
            multiplies = kept_filters * positions
        else:
            multiplies = nnz * positions
        cycles = math.ceil(peak / c.macs_per_cycle_per_pe)
        dense_cycles = math.ceil(int(dense_work.max()) / c.macs_per_cycle_per_pe)
        dense_macs = f_out * k_in * positions
        return {
            "filters": f_out,
            "kept_filters": kept_filters,
            "multiplication_free": bool(mult_free),
            "work_ops": total,
            "max_pe_work_ops": peak,
            "cycles": cycles,
            "dense_cycles": dense_cycles,
            "multiplies": multiplies,
            "additions": nnz * positions,
            "dense_macs": dense_macs,
            "utilization_fraction": ratio(total, c.pes * peak),
            "speedup_x": ratio(dense_cycles, cycles),
            "multiply_reduction_x": ratio(dense_macs, multiplies),
        }

    def score(self, artifact: "CompressedModel", *, model=None, example_input=None) -> dict[str, Figure]:
        totals, per_layer = sum_layers(artifact, self.layer_figures, _TOTALS)
        out: dict[str, Figure] = dict(totals)
        out["utilization_fraction"] = ratio(totals["work_ops"], self.config.pes * totals["max_pe_work_ops"])
        out["speedup_x"] = ratio(totals["dense_cycles"], totals["cycles"])
        out["multiply_reduction_x"] = ratio(totals["dense_macs"], totals["multiplies"])
        out.update(per_layer)
        return out
