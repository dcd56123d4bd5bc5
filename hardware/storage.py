"""Weight-storage model: how many bits a compressed model's weights take.

Every layer is viewed as its GEMM matrix [F, C*kh*kw] (rows x cols, for a
grouped conv C is C/groups) walked in row-major order, with ``b_w`` bits per
stored value (``weight_bits``, or ``Config.dense_bits`` for unquantized
layers).  ``nnz`` is the number of nonzeros, ``numel`` = rows*cols.  Six
formats are counted exactly:

- dense: numel * b_w (zeros included, no index);
- compact (structured): all-zero rows and columns dropped, the kept
  rows x cols stored densely, plus a keep bitmap of one bit per original row
  and column: kept_rows*kept_cols*b_w + rows + cols.  Dropping a conv input
  channel drops kh*kw whole columns, so channel pruning is covered;
- pattern (PatDNN, arXiv 2001.00138): only for 4-D conv weights with
  kh*kw > 1.  A kernel W[f, c] is kept when it has a nonzero; the layer's
  library holds its P distinct kept-kernel masks.  Bits: an F*C connectivity
  bitmap (which kernels are kept) + the library, P*kh*kw + per kept kernel a
  pattern id of ceil(log2 P) bits (0 when P <= 1) + nnz*b_w.
  *Fallback rule*: for a linear or 1x1 layer pattern storage does not apply;
  the layer's ``pattern_bits`` is then the bits of its cheapest other format
  (named by ``pattern_format``), so ``pattern_bits`` totals a model stored
  with patterns where they apply, as PatDNN deploys it;
- bitmap: one presence bit per position + the nonzero values:
  numel + nnz*b_w;
- CSR: nnz*b_w values, nnz column indices of ceil(log2 cols) bits, rows+1
  row pointers of ceil(log2(nnz+1)) bits (each index width at least 1 bit);
- relative index (Deep Compression, arXiv 1510.00149, Sec. 2 and Fig. 2;
  EIE, arXiv 1602.01528, Sec. III; ADMM-NN-S, arXiv 1907.02124): one stream
  of entries over the row-major flattened matrix, each a b-bit relative index
  and a b_w-bit value.  *Gap convention*: an entry at flat position p has
  gap g = p - q, where q is the previous entry's position and q = -1 before
  the first entry, so every gap is >= 1 and a nonzero at position 0 has gap
  1.  The b-bit field stores g - 1, the number of zeros skipped (EIE's z:
  "the number of zeros before" the entry, 4 bits holding 0..15), so a gap up
  to M = 2^b fits; Deep Compression's Fig. 2 likewise encodes a difference
  of 8 in 3 bits.  A larger gap g is bridged by filler entries (a stored
  zero placed M positions after the previous entry), ceil(g/M) - 1 =
  floor((g - 1)/M) of them, each costing b + b_w bits: a gap of exactly 2^b
  needs none, a gap of 2^b + 1 one.  Bits: (nnz + fillers) * (b + b_w).  Row
  boundaries follow from the positions, so there are no row pointers.  The
  width b comes from ``Config.relative_index_width_mode`` (recorded in the
  figure of that name): ``best`` picks per layer the b in 1..16 with the
  fewest bits (the smallest such b on a tie), or uses
  ``Config.relative_index_bits`` for every layer when that is set (mode
  ``fixed``); ``deep_compression`` uses the paper's widths, 8 bits for conv
  layers and 5 for fully connected ones (Sec. 2).  Fig. 2 measures the first
  entry's difference from position 0 rather than -1; that changes at most
  one filler per layer.

``stored_bits`` of a layer is its cheapest format (``format``; ties go to
the format that needs the least decoding, in the order of ``FORMATS``).
Ratios are taken against the fp32 dense model (32 bits per weight, always).

Not modelled: biases, BatchNorm and other non-GEMM parameters, quantization
codebooks / scales, per-layer headers that every format needs alike (the
shape, b_w, the relative-index width b and entry count, the pattern-library
size), alignment and padding of real file formats, entropy coding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import torch

from prunebench.config import Between, ConfigError, PositiveInt, Validated
from prunebench.interfaces import Figure, HardwareModel, Headline

from ._figures import ratio, sum_layers

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = [
    "StorageModel",
    "FORMATS",
    "FORMAT_BITS",
    "index_width",
    "dense_bits",
    "csr_bits",
    "bitmap_bits",
    "kept_rows_cols",
    "compact_bits",
    "relative_index_gaps",
    "relative_index_max_gap",
    "relative_index_filler_counts",
    "relative_index_bits",
    "pattern_bits",
    "layer_storage",
    "ratio",
]

FP32_BITS = 32
#: Widths searched when ``relative_index_bits`` is None.
MAX_RELATIVE_INDEX_BITS = 16
#: Deep Compression's relative-index widths (arXiv 1510.00149, Sec. 2): conv and fully connected layers
DEEP_COMPRESSION_CONV_INDEX_BITS = 8
DEEP_COMPRESSION_FC_INDEX_BITS = 5
# Order breaks ties: the format needing the least decoding first.
FORMATS = ("dense", "compact", "pattern", "bitmap", "csr", "relative_index")
#: The bits figure of each format.
FORMAT_BITS = {
    "dense": "quantized_dense_bits",
    "compact": "compact_bits",
    "pattern": "pattern_bits",
    "bitmap": "bitmap_bits",
    "csr": "csr_bits",
    "relative_index": "relative_index_bits",
}


def index_width(n: int) -> int:
    """Bits to address ``n`` distinct values: ceil(log2(n)), at least 1."""
    # (n-1).bit_length() is the exact integer ceil(log2(n)) for n >= 1; no float rounding.
    return max(1, (int(n) - 1).bit_length())


def _as_2d(mask) -> np.ndarray:
    """A 2-D boolean numpy view of a torch or numpy mask."""
    # numpy reductions on bool are several times faster than torch's on CPU.
    if isinstance(mask, torch.Tensor):
        mask = mask.detach()
        if mask.dtype != torch.bool:
            mask = mask != 0
        mask = mask.cpu().numpy()
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D GEMM-view mask, got shape {tuple(m.shape)}")
    return m if m.dtype == np.bool_ else m != 0


def dense_bits(mask2d, value_bits: int) -> int:
    """Dense storage: every entry, zeros included, at ``value_bits``."""
    return _as_2d(mask2d).size * int(value_bits)


def csr_bits(mask2d, value_bits: int) -> tuple[int, int]:
    """(value bits, index bits) of CSR storage of the nonzeros of ``mask2d``.

    index bits = nnz column indices + (rows+1) row pointers.
    """
    m = _as_2d(mask2d)
    rows, cols = m.shape
    nnz = int(np.count_nonzero(m))
    values = nnz * int(value_bits)
    index = nnz * index_width(cols) + (rows + 1) * index_width(nnz + 1)
    return values, index


def bitmap_bits(mask2d, value_bits: int) -> int:
    """One presence bit per position plus the nonzero values."""
    m = _as_2d(mask2d)
    return m.size + int(np.count_nonzero(m)) * int(value_bits)


def kept_rows_cols(mask2d) -> tuple[int, int]:
    """Rows and columns of ``mask2d`` holding at least one nonzero."""
    m = _as_2d(mask2d)
    return int(np.count_nonzero(m.any(axis=1))), int(np.count_nonzero(m.any(axis=0)))


def compact_bits(mask2d, value_bits: int) -> int:
    """Compact structured storage: the kept submatrix densely, plus a
    one-bit-per-row and one-bit-per-column keep bitmap."""
    m = _as_2d(mask2d)
    rows, cols = m.shape
    kept_r, kept_c = kept_rows_cols(m)
    return kept_r * kept_c * int(value_bits) + rows + cols


def relative_index_gaps(mask2d) -> np.ndarray:
    """Row-major gaps between nonzeros, the first measured from position -1
    (so all gaps are >= 1; see the module docstring)."""
    positions = np.flatnonzero(_as_2d(mask2d))
    return np.diff(positions, prepend=-1)


def relative_index_max_gap(width: int) -> int:
    """The largest gap a ``width``-bit relative index holds: 2^width (it stores
    gap - 1, the zeros skipped; Deep Compression Fig. 2, EIE Sec. III)."""
    return 1 << int(width)


def relative_index_filler_counts(gaps: np.ndarray, max_width: int = MAX_RELATIVE_INDEX_BITS) -> np.ndarray:
    """Filler entries for every width b = 1..max_width (index b-1).

    fillers(b) = sum over gaps of ceil(g / M) - 1 = floor((g - 1) / M),
    M = 2^b.  Only gaps with g - 1 >= M add any, so each wider b scans
    only the gaps the previous b kept: about 3-4 passes over the gap array
    in total at typical densities instead of max_width.
    """
    counts = np.zeros(max_width, dtype=np.int64)
    skipped = np.asarray(gaps, dtype=np.int64) - 1  # zeros between an entry and the previous one
    for b in range(1, max_width + 1):
        m = relative_index_max_gap(b)
        skipped = skipped[skipped >= m]
        if skipped.size == 0:
            break
        counts[b - 1] = int((skipped // m).sum())
    return counts


def relative_index_bits(mask2d, value_bits: int, width: int | None = None) -> tuple[int, int, int]:
    """(bits, b, fillers) of relative-index storage; ``width`` None picks the
    b in 1..16 with the fewest bits, the smallest b on a tie."""
    gaps = relative_index_gaps(mask2d)
    nnz = gaps.size
    bw = int(value_bits)
    if width is not None:
        m = relative_index_max_gap(width)
        fillers = int(((gaps - 1) // m).sum()) if nnz else 0
        return (nnz + fillers) * (bw + int(width)), int(width), fillers
    fillers = relative_index_filler_counts(gaps)
    widths = np.arange(1, MAX_RELATIVE_INDEX_BITS + 1, dtype=np.int64)
    bits = (nnz + fillers) * (bw + widths)
    best = int(np.argmin(bits))  # first minimum: the smallest b
    return int(bits[best]), best + 1, int(fillers[best])


def pattern_bits(mask2d, value_bits: int, kernel_numel: int) -> tuple[int, int, int] | None:
    """(bits, library size P, kept kernels) of pattern storage, or None when
    it does not apply (``kernel_numel`` <= 1: linear or 1x1 layers).

    ``mask2d`` is the GEMM view [F, C*kh*kw] of a conv weight, so each row is
    C kernels of ``kernel_numel`` contiguous positions.
    """
    k = int(kernel_numel)
    if k <= 1:
        return None
    m = _as_2d(mask2d)
    if m.shape[1] % k:
        raise ValueError(f"GEMM width {m.shape[1]} is not a multiple of the kernel size {k}")
    kernels = m.reshape(-1, k)
    kept_masks = kernels[kernels.any(axis=1)]
    kept = kept_masks.shape[0]
    if kept == 0:
        library = 0
    elif k <= 63:
        codes = kept_masks @ (np.int64(1) << np.arange(k, dtype=np.int64))
        # bincount is O(n) for small kernels (3x3: codes < 512); sort otherwise
        library = int(np.count_nonzero(np.bincount(codes))) if k <= 20 else int(np.unique(codes).size)
    else:
        library = int(np.unique(np.packbits(kept_masks, axis=1), axis=0).shape[0])
    id_bits = (library - 1).bit_length() if library > 1 else 0  # exact ceil(log2 P)
    nnz = int(np.count_nonzero(m))
    bits = kernels.shape[0] + library * k + kept * id_bits + nnz * int(value_bits)
    return bits, library, kept


def layer_storage(
    mask2d, value_bits: int, *, kernel_numel: int = 1, relative_width: int | None = None
) -> dict[str, Figure]:
    """All storage figures of one GEMM-view mask stored at ``value_bits``.

    ``kernel_numel`` is kh*kw of a conv layer (1 for linear: no pattern
    format); ``relative_width`` fixes the relative-index b (None: the
    cheapest b in 1..16).
    """
    m = _as_2d(mask2d)
    bw = int(value_bits)
    numel = m.size
    nnz = int(np.count_nonzero(m))
    vals, csr_index = csr_bits(m, bw)
    kept_r, kept_c = kept_rows_cols(m)
    rel, rel_width, fillers = relative_index_bits(m, bw, relative_width)
    candidates = {
        "dense": numel * bw,
        "compact": kept_r * kept_c * bw + m.shape[0] + m.shape[1],
        "bitmap": numel + nnz * bw,
        "csr": vals + csr_index,
        "relative_index": rel,
    }
    pattern = pattern_bits(m, bw, kernel_numel)
    if pattern is None:
        library = kept_kernels = None
        pattern_format = min(candidates, key=lambda f: (candidates[f], FORMATS.index(f)))
        pattern_total = candidates[pattern_format]
    else:
        pattern_total, library, kept_kernels = pattern
        pattern_format = "pattern"
        candidates["pattern"] = pattern_total
    fmt = min(candidates, key=lambda f: (candidates[f], FORMATS.index(f)))
    return {
        "weights": numel,
        "nonzero_weights": nnz,
        "weight_bits": bw,
        "fp32_dense_bits": numel * FP32_BITS,
        "quantized_dense_bits": candidates["dense"],
        "value_bits": vals,
        "bitmap_bits": candidates["bitmap"],
        "csr_bits": candidates["csr"],
        "csr_index_bits": csr_index,
        "relative_index_bits": rel,
        "relative_index_width_bits": rel_width,
        "relative_index_fillers": fillers,
        "relative_index_filler_fraction": ratio(fillers, nnz),
        "compact_bits": candidates["compact"],
        "compact_kept_rows": kept_r,
        "compact_kept_cols": kept_c,
        "pattern_bits": pattern_total,
        "pattern_format": pattern_format,
        "pattern_library_size": library,
        "pattern_kept_kernels": kept_kernels,
        "stored_bits": candidates[fmt],
        "format": fmt,
    }


_TOTALS = (
    "weights",
    "nonzero_weights",
    "fp32_dense_bits",
    "quantized_dense_bits",
    "value_bits",
    "bitmap_bits",
    "csr_bits",
    "csr_index_bits",
    "relative_index_bits",
    "relative_index_fillers",
    "compact_bits",
    "pattern_bits",
    "stored_bits",
)


class StorageModel(HardwareModel):
    """Bits to store the weights in six formats and in the cheapest per layer
    (see the module docstring for exactly what each counts).

    Totals: ``weights``, ``nonzero_weights``, ``fp32_dense_bits``,
    ``quantized_dense_bits``, ``value_bits``, ``bitmap_bits``, ``csr_bits``,
    ``csr_index_bits``, ``relative_index_bits``, ``relative_index_fillers``,
    ``compact_bits``, ``pattern_bits``, ``stored_bits``.  Ratios:
    ``compression_data_only_x`` (fp32 / value bits),
    ``compression_with_index_x`` (fp32 / stored bits), per format fp32 /
    that format's bits: ``quantized_dense_compression_x``,
    ``compact_compression_x``, ``pattern_compression_x``,
    ``bitmap_compression_x``, ``csr_compression_x`` and
    ``relative_index_compression_x``; ``relative_index_filler_fraction``
    (fillers / nnz, the phi of ADMM-NN-S) and ``index_overhead_fraction``
    ((stored - value) / stored: indices, bitmaps and stored zeros).  Per layer
    the same under ``layer.<name>.<figure>`` (no per-format ratios), plus
    ``weight_bits``, ``relative_index_width_bits``, ``compact_kept_rows`` /
    ``cols``, ``pattern_library_size`` and ``pattern_kept_kernels`` (None
    where pattern does not apply), ``pattern_format`` (``pattern`` or the
    fallback format) and ``format`` (one of ``FORMATS``).
    ``relative_index_width_mode`` records how the relative-index widths were
    chosen: ``best`` (cheapest per layer), ``fixed`` (``relative_index_bits``)
    or ``deep_compression`` (8 bits conv, 5 bits fc).
    """

    @dataclass(frozen=True)
    class Config(Validated):
        #: bits per weight of a layer whose ``weight_bits`` is None (unquantized)
        dense_bits: PositiveInt = 32
        #: how the relative-index width b is chosen: "best": per layer the cheapest
        #: b in 1..16 (or ``relative_index_bits`` for every layer when set);
        #: "deep_compression": 8 bits for conv layers, 5 for fully connected
        #: (Deep Compression, arXiv 1510.00149, Sec. 2)
        relative_index_width_mode: Literal["best", "deep_compression"] = "best"
        #: one relative-index width b for every layer; None: chosen by the mode
        relative_index_bits: Annotated[int, Between(1, 32)] | None = None

        def __post_init__(self):
            super().__post_init__()
            if self.relative_index_bits is not None and self.relative_index_width_mode != "best":
                raise ConfigError(
                    "relative_index_bits",
                    f"expected null when relative_index_width_mode is {self.relative_index_width_mode!r}, "
                    f"got {self.relative_index_bits!r}",
                )

        @property
        def width_mode(self) -> str:
            """The mode as recorded: "fixed", "best" or "deep_compression"."""
            return "fixed" if self.relative_index_bits is not None else self.relative_index_width_mode

    version = "3"
    headline = (
        Headline("compression_with_index_x", "Storage (incl. index)", "x", "higher", primary=True, rank=10,
                 note="fp32 dense bits / stored bits, values plus what is needed to locate them"),
        Headline("compression_data_only_x", "Storage (data only)", "x", "higher", rank=11,
                 note="fp32 dense bits / bits of the values alone"),
        Headline("stored_bits", "stored bits incl. index", "bits", "lower", role="size"),
        Headline("fp32_dense_bits", "dense fp32 bits", "bits", "lower", role="dense_size"),
    )

    def relative_width(self, layer: "LayerRecord") -> int | None:
        """The layer's relative-index width under the config (None: cheapest)."""
        cfg = self.config
        if cfg.relative_index_bits is not None:
            return cfg.relative_index_bits
        if cfg.relative_index_width_mode == "deep_compression":
            return DEEP_COMPRESSION_CONV_INDEX_BITS if layer.kind == "conv" else DEEP_COMPRESSION_FC_INDEX_BITS
        return None

    def layer_figures(self, layer: "LayerRecord") -> dict[str, Figure]:
        rows, cols = layer.gemm_shape()
        if layer.mask.numel() != rows * cols:
            raise ValueError(f"layer {layer.name!r}: mask has {layer.mask.numel()} entries, weight shape {layer.weight_shape}")
        bits = layer.weight_bits if layer.weight_bits is not None else self.config.dense_bits
        shape = layer.weight_shape
        kernel = shape[2] * shape[3] if len(shape) == 4 else 1
        return layer_storage(
            layer.mask.reshape(rows, cols), bits, kernel_numel=kernel, relative_width=self.relative_width(layer)
        )

    def score(self, artifact: "CompressedModel", *, model=None, example_input=None) -> dict[str, Figure]:
        totals, per_layer = sum_layers(artifact, self.layer_figures, _TOTALS)
        out: dict[str, Figure] = dict(totals)
        fp32 = totals["fp32_dense_bits"]
        out["compression_data_only_x"] = ratio(fp32, totals["value_bits"])
        out["compression_with_index_x"] = ratio(fp32, totals["stored_bits"])
        for key in FORMAT_BITS.values():
            out[key[: -len("bits")] + "compression_x"] = ratio(fp32, totals[key])
        out["relative_index_filler_fraction"] = ratio(totals["relative_index_fillers"], totals["nonzero_weights"])
        out["index_overhead_fraction"] = ratio(totals["stored_bits"] - totals["value_bits"], totals["stored_bits"])
        out["relative_index_width_mode"] = self.config.width_mode
        out.update(per_layer)
        return out
