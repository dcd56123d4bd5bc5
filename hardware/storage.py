"""Weight-storage model: how many bits a compressed model's weights take.

Every layer is viewed as its GEMM matrix [F, C*kh*kw] (rows x cols) with
``b`` bits per stored value (``weight_bits``, or ``Config.dense_bits`` for
unquantized layers).  Three formats are counted:

- dense: all rows*cols entries at b bits, zeros included, no index;
- CSR: nnz values at b bits, one column index per value at
  ceil(log2(cols)) bits, rows+1 row pointers at ceil(log2(nnz+1)) bits
  (each index width at least 1 bit);
- compact (structured): all-zero rows and all-zero columns dropped, the
  kept rows x kept cols stored densely at b bits, plus a keep bitmap of one
  bit per original row and per original column.  Removing an input channel
  of a conv removes kh*kw whole GEMM columns, so channel pruning is covered.

``stored_bits`` of a layer is the cheapest of the three.  Ratios are taken
against the fp32 dense model (32 bits per weight, always).

Not modelled: biases, BatchNorm and other non-GEMM parameters, quantization
codebooks / scales, relative-index fillers (the CSR index here is absolute
and never needs fillers), alignment and padding of real file formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from prunebench.interfaces import Figure, HardwareModel

from ._figures import ratio, sum_layers

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = [
    "StorageModel",
    "index_width",
    "csr_bits",
    "kept_rows_cols",
    "compact_bits",
    "dense_bits",
    "layer_storage",
    "ratio",
]

FP32_BITS = 32
# Order breaks ties: prefer the format needing the least decoding.
FORMATS = ("dense", "compact", "csr")


def index_width(n: int) -> int:
    """Bits to address ``n`` distinct values: ceil(log2(n)), at least 1."""
    # (n-1).bit_length() is the exact integer ceil(log2(n)) for n >= 1; no float rounding.
    return max(1, (int(n) - 1).bit_length())


def _as_2d(mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() != 2:
        raise ValueError(f"expected a 2-D GEMM-view mask, got shape {tuple(mask.shape)}")
    return mask.bool()


def dense_bits(mask2d: torch.Tensor, value_bits: int) -> int:
    """Dense storage: every entry, zeros included, at ``value_bits``."""
    return _as_2d(mask2d).numel() * int(value_bits)


def csr_bits(mask2d: torch.Tensor, value_bits: int) -> tuple[int, int]:
    """(value bits, index bits) of CSR storage of the nonzeros of ``mask2d``.

    index bits = nnz column indices + (rows+1) row pointers.
    """
    m = _as_2d(mask2d)
    rows, cols = m.shape
    nnz = int(m.sum())
    values = nnz * int(value_bits)
    index = nnz * index_width(cols) + (rows + 1) * index_width(nnz + 1)
    return values, index


def kept_rows_cols(mask2d: torch.Tensor) -> tuple[int, int]:
    """Rows and columns of ``mask2d`` holding at least one nonzero."""
    m = _as_2d(mask2d)
    return int(m.any(dim=1).sum()), int(m.any(dim=0).sum())


def compact_bits(mask2d: torch.Tensor, value_bits: int) -> int:
    """Compact structured storage: the kept submatrix densely, plus a
    one-bit-per-row and one-bit-per-column keep bitmap."""
    m = _as_2d(mask2d)
    rows, cols = m.shape
    kept_r, kept_c = kept_rows_cols(m)
    return kept_r * kept_c * int(value_bits) + rows + cols


def layer_storage(mask2d: torch.Tensor, value_bits: int) -> dict[str, Figure]:
    """All storage figures of one GEMM-view mask stored at ``value_bits``."""
    m = _as_2d(mask2d)
    numel = m.numel()
    nnz = int(m.sum())
    vals, index = csr_bits(m, value_bits)
    kept_r, kept_c = kept_rows_cols(m)
    candidates = {
        "dense": numel * int(value_bits),
        "compact": compact_bits(m, value_bits),
        "csr": vals + index,
    }
    fmt = min(FORMATS, key=lambda f: (candidates[f], FORMATS.index(f)))
    return {
        "weights": numel,
        "nonzero_weights": nnz,
        "weight_bits": int(value_bits),
        "fp32_dense_bits": numel * FP32_BITS,
        "quantized_dense_bits": candidates["dense"],
        "value_bits": vals,
        "csr_bits": candidates["csr"],
        "csr_index_bits": index,
        "compact_bits": candidates["compact"],
        "compact_kept_rows": kept_r,
        "compact_kept_cols": kept_c,
        "stored_bits": candidates[fmt],
        "format": fmt,
    }


_TOTALS = (
    "weights",
    "nonzero_weights",
    "fp32_dense_bits",
    "quantized_dense_bits",
    "value_bits",
    "csr_bits",
    "csr_index_bits",
    "compact_bits",
    "stored_bits",
)


class StorageModel(HardwareModel):
    """Bits to store the weights: dense, CSR, compact structured, and the
    cheapest per layer (see the module docstring for what is counted).

    Totals: ``weights``, ``nonzero_weights``, ``fp32_dense_bits``,
    ``quantized_dense_bits``, ``value_bits``, ``csr_bits``, ``csr_index_bits``,
    ``compact_bits``, ``stored_bits``; ratios ``compression_data_only_x``
    (fp32 / value bits), ``compression_with_index_x`` (fp32 / stored bits),
    ``csr_compression_x`` (fp32 / CSR bits) and ``index_overhead_fraction``
    ((stored - value) / stored: indices, bitmaps and stored zeros).  Per layer
    the same under ``layer.<name>.<figure>``, plus ``weight_bits``,
    ``compact_kept_rows``/``cols`` and ``format`` (dense / compact / csr).
    """

    @dataclass(frozen=True)
    class Config:
        #: bits per weight of a layer whose ``weight_bits`` is None (unquantized)
        dense_bits: int = 32

        def __post_init__(self):
            if not isinstance(self.dense_bits, int) or self.dense_bits < 1:
                raise ValueError(f"dense_bits must be a positive integer, got {self.dense_bits!r}")

    version = "1"

    def layer_figures(self, layer: "LayerRecord") -> dict[str, Figure]:
        rows, cols = layer.gemm_shape()
        if layer.mask.numel() != rows * cols:
            raise ValueError(f"layer {layer.name!r}: mask has {layer.mask.numel()} entries, weight shape {layer.weight_shape}")
        bits = layer.weight_bits if layer.weight_bits is not None else self.config.dense_bits
        return layer_storage(layer.mask.reshape(rows, cols), bits)

    def score(self, artifact: "CompressedModel", *, model=None, example_input=None) -> dict[str, Figure]:
        totals, per_layer = sum_layers(artifact, self.layer_figures, _TOTALS)
        out: dict[str, Figure] = dict(totals)
        fp32 = totals["fp32_dense_bits"]
        out["compression_data_only_x"] = ratio(fp32, totals["value_bits"])
        out["compression_with_index_x"] = ratio(fp32, totals["stored_bits"])
        out["csr_compression_x"] = ratio(fp32, totals["csr_bits"])
        out["index_overhead_fraction"] = ratio(totals["stored_bits"] - totals["value_bits"], totals["stored_bits"])
        out.update(per_layer)
        return out
