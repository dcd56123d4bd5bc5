"""Compute model: multiply-accumulates of the compressible layers.

Each weight is used ``output_positions`` times per sample (out_h*out_w for a
conv, the product of the leading dims for a linear layer), so a layer costs
numel(weight) * output_positions MACs dense.  A grouped conv's weight is
already (F, C/groups, kh, kw), so this is right for groups > 1 too.

- ``dense_macs``: every weight, zeros included;
- ``remaining_macs``: nonzero weights only, i.e. the ideal of a sparse
  kernel that skips every zero at no cost;
- ``compact_macs``: a dense GEMM on the matrix left after dropping all-zero
  rows and columns (what structured pruning buys without sparse kernels).

Not modelled: biases, BatchNorm, activations, pooling, residual additions,
any layer not in the artifact, index decoding, load imbalance, memory
traffic and latency.  All counts are per sample (batch of one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prunebench.interfaces import Figure, HardwareModel

from ._figures import ratio, sum_layers
from .storage import kept_rows_cols

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = ["ComputeModel"]

_TOTALS = ("dense_macs", "remaining_macs", "compact_macs")


class ComputeModel(HardwareModel):
    """MACs per sample of the artifact's layers (see the module docstring).

    Totals: ``dense_macs``, ``remaining_macs``, ``compact_macs``,
    ``mac_reduction_x`` (dense / remaining), ``remaining_macs_fraction``
    (remaining / dense) and ``compact_mac_reduction_x`` (dense / compact);
    a ratio with a zero denominator is None.  Per layer the same under
    ``layer.<name>.<figure>``, plus ``output_positions``.
    """

    @dataclass(frozen=True)
    class Config:
        """No settings."""

    version = "1"

    def layer_figures(self, layer: "LayerRecord") -> dict[str, Figure]:
        rows, cols = layer.gemm_shape()
        positions = int(layer.output_positions)
        kept_r, kept_c = kept_rows_cols(layer.mask.reshape(rows, cols))
        dense = layer.numel * positions
        remaining = layer.nonzeros * positions
        compact = kept_r * kept_c * positions
        return {
            "output_positions": positions,
            "dense_macs": dense,
            "remaining_macs": remaining,
            "compact_macs": compact,
            "mac_reduction_x": ratio(dense, remaining),
            "remaining_macs_fraction": ratio(remaining, dense),
            "compact_mac_reduction_x": ratio(dense, compact),
        }

    def score(self, artifact: "CompressedModel", *, model=None, example_input=None) -> dict[str, Figure]:
        totals, per_layer = sum_layers(artifact, self.layer_figures, _TOTALS)
        out: dict[str, Figure] = dict(totals)
        out["mac_reduction_x"] = ratio(totals["dense_macs"], totals["remaining_macs"])
        out["remaining_macs_fraction"] = ratio(totals["remaining_macs"], totals["dense_macs"])
        out["compact_mac_reduction_x"] = ratio(totals["dense_macs"], totals["compact_macs"])
        out.update(per_layer)
        return out
