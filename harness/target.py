"""What a method is asked to reach: sparsity, structure and quantization."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal, Mapping, get_args

from .config import Between, ConfigError, Ge, Lt, MinLen, Satisfies, Validated, describe_value

__all__ = [
    "Structure", "StructureName", "Quantization", "Target", "STRUCTURE_KINDS", "QUANT_SCHEMES",
    "LayerFloor", "DEFAULT_LAYER_FLOOR", "RateOf", "RATES_OF",
]

# Structure kinds the harness can verify.  Parametrised kinds carry their
# argument after a colon: block:RxC, pe:N, n:m written as "2:4".
STRUCTURE_KINDS = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe", "nm")
QuantScheme = Literal["uniform", "pow2", "ternary", "binary", "levels"]
QUANT_SCHEMES = get_args(QuantScheme)
#: what a target's rate divides: ``weights`` (total / nonzero weights of the target
#: layers) or ``macs`` (dense MACs / MACs of the compressed model, per sample, whole model)
RateOf = Literal["weights", "macs"]
RATES_OF = get_args(RateOf)

#: a per-layer floor: the fraction of a layer's groups every allocation keeps
#: (at least one group); see prunebench.projections
LayerFloor = Annotated[float, Between(0, 1)]
#: the default floor: 1% of each layer's groups, and never fewer than one
DEFAULT_LAYER_FLOOR = 0.01

_BLOCK = re.compile(r"^block:(\d+)x(\d+)$")
_PE = re.compile(r"^pe:(\d+)$")
_NM = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class Structure:
    """A pruning granularity, parsed from its suite spelling.

    ``unstructured``, ``filter`` (whole output channel / row), ``channel``
    (whole input channel), ``column`` (one (c, kh, kw) position in every filter),
    ``kernel`` (one kh x kw kernel), ``pattern``, ``block:RxC``, ``pe:N`` and
    N:M such as ``2:4``.
    """

    kind: str
    params: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Structure":
        if not isinstance(text, str):
            raise ValueError(f"structure must be a string, got {text!r}")
        text = text.strip()
        if text in ("unstructured", "filter", "channel", "column", "kernel", "pattern"):
            return cls(text)
        if m := _BLOCK.match(text):
            return cls("block", (int(m[1]), int(m[2])))
        if m := _PE.match(text):
            return cls("pe", (int(m[1]),))
        if m := _NM.match(text):
            n, m_ = int(m[1]), int(m[2])
            if not 0 < n <= m_:
                raise ValueError(f"N:M structure needs 0 < N <= M, got {text!r}")
            return cls("nm", (n, m_))
        raise ValueError(
            f"unknown structure {text!r}; expected one of unstructured, filter, channel, column, "
            "kernel, pattern, block:RxC, pe:N, N:M"
        )

    def __str__(self) -> str:
        if self.kind == "block":
            return f"block:{self.params[0]}x{self.params[1]}"
        if self.kind == "pe":
            return f"pe:{self.params[0]}"
        if self.kind == "nm":
            return f"{self.params[0]}:{self.params[1]}"
        return self.kind

    @property
    def is_structured(self) -> bool:
        return self.kind != "unstructured"


#: a config field holding a structure's suite spelling (checked with Structure.parse)
StructureName = Annotated[str, Satisfies(
    Structure.parse,
    "a structure (unstructured, filter, channel, column, kernel, pattern, block:RxC, pe:N or N:M with 0 < N <= M)",
    "structures (unstructured, filter, channel, column, kernel, pattern, block:RxC, pe:N or N:M with 0 < N <= M)",
)]


@dataclass(frozen=True)
class Quantization(Validated):
    """Weight quantization: ``bits`` per stored weight and the level scheme.

    ``mode`` is the same treatment for every method: under ``qat`` a method
    that does not quantize itself is fine-tuned quantization-aware by the
    harness (:class:`prunebench.quant.QuantizationAware`) within its budget, as
    methods that quantize train with quantization in theirs.

    Zero is always reserved for pruned weights, so a ``uniform`` k-bit layer has
    at most 2^k - 1 distinct values (levels +-q .. +-(2^(k-1) - 1) q and 0).
    ``levels`` lists an explicit level set (e.g. memristor conductances).
    """

    bits: Annotated[int, Between(1, 32)]
    scheme: QuantScheme = "uniform"
    levels: tuple[float, ...] | None = None
    #: how methods that only prune get there: ``ptq`` quantizes after them (one shot),
    #: ``qat`` fine-tunes them quantization-aware inside the same budget (straight-through)
    mode: Literal["ptq", "qat"] = "ptq"
    #: spiking networks: bits of the stored membrane potential (at most 2^bits levels
    #: per layer); methods that leave the membrane unquantized get the harness's
    #: uniform grid over [-threshold, threshold]; None: not asked
    membrane_bits: Annotated[int, Between(1, 16)] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.scheme == "levels" and not self.levels:
            raise ConfigError(
                "levels", f"expected a non-empty list of numbers for scheme 'levels', got {describe_value(self.levels)}"
            )

    @property
    def max_levels(self) -> int:
        """Most distinct values (zero included) a layer may hold."""
        if self.scheme == "levels":
            return len(set(self.levels or ())) + 1
        if self.scheme in ("binary", "ternary"):
            return 3  # +-a and the zero of pruned weights
        return 2**self.bits


@dataclass(frozen=True)
class Target(Validated):
    """The compression a method must reach on the suite's compressible layers.

    ``rate`` is the compression rate over those layers, total weights divided
    by nonzero weights (4.0 keeps a quarter).  Alternatively
    ``layer_sparsity`` fixes the pruned fraction per layer.  ``quantization``
    of None means the method need not quantize (the harness's standard
    quantizer runs after it, when the suite asks for one).

    ``layer_floor`` (the suite's ``layers.floor``): every allocation keeps at
    least max(1, floor(min(layer_floor, kept fraction) x groups)) groups of
    each layer (:func:`prunebench.projections.project_masks`); None means no
    floor at all.  ``allow_collapsed`` (``layers.allow_collapsed``) lets
    verification accept a layer left with no live output; by default such a
    run fails.

    ``rate_of``: ``weights`` (the default, as above) or ``macs``: ``rate`` is
    then a compute reduction, the dense model's MACs per sample at the task's
    example input divided by the compressed model's (every Conv2d / Linear of
    the effective model, all-zero rows and columns dropped, counted at the
    input resolution it is evaluated at: :func:`prunebench.macs.verify_macs`).
    Weights may then stay as dense as the method likes; structure and
    quantization are checked as usual.
    """

    layers: Annotated[tuple[str, ...], MinLen(1)]
    structure: Structure = field(default_factory=lambda: Structure("unstructured"))
    rate: Annotated[float, Ge(1)] | None = None
    layer_sparsity: Mapping[str, Annotated[float, Ge(0), Lt(1)]] | None = None
    quantization: Quantization | None = None
    #: bits of the stored membrane potential of spiking neurons (at most 2^bits levels); None: not asked
    membrane_bits: Annotated[int, Between(1, 32)] | None = None
    layer_floor: LayerFloor | None = DEFAULT_LAYER_FLOOR
    allow_collapsed: bool = False
    rate_of: RateOf = "weights"

    def __post_init__(self):
        super().__post_init__()
        if self.rate_of == "macs" and self.rate is None:
            raise ConfigError("rate_of", "expected 'weights' for a per-layer target (layer_sparsity), got 'macs'")
        if (self.rate is None) == (self.layer_sparsity is None):
            raise ValueError(
                f"expected exactly one of rate and layer_sparsity, got rate={describe_value(self.rate)}, "
                f"layer_sparsity={describe_value(self.layer_sparsity)}"
            )
        for name in self.layer_sparsity or ():
            if name not in self.layers:
                raise ConfigError(f"layer_sparsity.{name}", f"expected a layer named in layers, got {name!r}")

    @property
    def sparsity(self) -> float | None:
        """Overall pruned fraction implied by a weight ``rate`` (None for per-layer
        and MACs targets)."""
        return None if self.rate is None or self.rate_of != "weights" else 1.0 - 1.0 / self.rate

    def macs_budget(self, dense_macs: int) -> int:
        """Most MACs per sample a MACs target allows, given the dense model's."""
        if self.rate_of != "macs" or self.rate is None:
            raise ValueError(f"macs_budget: the target's rate is of {self.rate_of}, not macs")
        # floor with a little slack for float error in dense/rate
        return int(math.floor(dense_macs / self.rate + 1e-9))

    def keep_budget(self, layer_sizes: Mapping[str, int]) -> int:
        """Most nonzero weights allowed over the compressible layers."""
        if self.rate_of != "weights":
            # a MACs target bounds compute, not weights: a method that reads it as a weight
            # budget would meet the wrong thing (prunebench.methods declare rates_of)
            raise ValueError(f"keep_budget: the target's rate is of {self.rate_of}, not weights; "
                             f"see Target.macs_budget")
        total = sum(layer_sizes[n] for n in self.layers)
        if self.rate is not None:
            # floor with a little slack for float error in total/rate
            return int(math.floor(total / self.rate + 1e-9))
        assert self.layer_sparsity is not None
        return sum(
            layer_sizes[n] - int(math.ceil(self.layer_sparsity.get(n, 0.0) * layer_sizes[n] - 1e-9))
            for n in self.layers
        )

    def describe(self) -> str:
        parts = [str(self.structure)]
        parts.append(f"{self.rate:g}x" if self.rate is not None else "per-layer")
        if self.rate_of != "weights":
            parts.append("MACs" if self.rate_of == "macs" else self.rate_of)
        if self.quantization:
            parts.append(f"{self.quantization.bits}bit-{self.quantization.scheme}")
        return " ".join(parts)
