"""Compute model: multiply-accumulates of the compressible layers, and a
break-even model of what sparse execution of them buys.

Each weight is used ``output_positions`` times per sample (out_h*out_w for a
conv, the product of the leading dims for a linear layer), so a layer costs
numel(weight) * output_positions MACs dense.  A grouped conv's weight is
already (F, C/groups, kh, kw), so this is right for groups > 1 too.

- ``dense_macs``: every weight, zeros included;
- ``remaining_macs``: nonzero weights only, i.e. the ideal of a sparse
  kernel that skips every zero at no cost; ``mac_reduction_x`` = dense /
  remaining is this theoretical speedup;
- ``compact_macs``: a dense GEMM on the matrix left after dropping all-zero
  rows and columns (what structured pruning buys without sparse kernels).

Break-even model (ADMM-NN, arXiv 1812.11677; ADMM-NN-S, arXiv 1907.02124):
a sparse kernel pays index decoding and irregular memory access, so one of
its MACs costs ``c`` dense MACs, c = the measured ``sparse_cost_per_nonzero``
of the layer's kind (conv / linear).  A layer's modelled time, in dense-MAC
equivalents, is the cheapest way to run it:

    modelled_macs = min(compact_macs, c * remaining_macs)

compact_macs equals dense_macs unless whole rows or columns are zero, so an
unstructured layer gets min(dense, c * remaining) and a structured one its
compact GEMM, unless zeros inside the kept block make sparse execution cheaper
still.  Sparse execution wins below density 1/c, reported as
``break_even_density``; ``modelled_speedup_x`` = dense / modelled.

Where c comes from: ``Config.sparse_cost_per_nonzero`` (kind -> c), else the
JSON file ``Config.break_even_file`` written by the latency plugin, which
measures the break-even sparsity of each layer kind on the machine it runs on
(see :func:`load_break_even` for the format).  With neither, or for a layer
whose kind has no c, the break-even figures are None: c is a property of the
hardware and runtime and is never guessed.

Not modelled: biases, BatchNorm, activations, pooling, residual additions,
any layer not in the artifact, load imbalance across threads, memory traffic
apart from what c folds in, and latency.  All counts are per sample (batch of
one).

:func:`count_macs` counts a torch model directly on a forward pass, every call
of a module summed (a detection head's convolutions run once per pyramid
level; the artifact records the first call's shapes only).  It is what MACs
targets (``Target.rate_of == "macs"``) are met and verified on.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, get_args

import numpy as np

from prunebench.config import ConfigError, PositiveFloat, Validated
from prunebench.interfaces import Figure, HardwareModel, Headline

from ._figures import ratio, sum_layers
from .storage import _as_2d, kept_rows_cols

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = ["ComputeModel", "load_break_even", "KINDS", "MacsCount", "count_macs"]

#: Layer kinds a sparse cost can be given for (``LayerRecord.kind``).
Kind = Literal["conv", "linear"]
KINDS = get_args(Kind)
_TOTALS = ("dense_macs", "remaining_macs", "compact_macs")
_METADATA = ("device", "runtime")


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def _read_break_even(path: str | Path) -> tuple[dict[str, float], dict[str, str]]:
    """(kind -> cost, {"device", "runtime"}) from a break-even JSON file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"break-even file {str(path)!r} not found; the latency plugin writes it after measuring, "
            "or give sparse_cost_per_nonzero in the compute config"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    meta = {}
    for key in _METADATA:
        if not isinstance(data.get(key), str):
            raise ValueError(f"{path}: {key!r} must be a string naming where the costs were measured")
        meta[key] = data[key]
    costs = {}
    for kind, entry in data.items():
        if not isinstance(entry, dict):
            continue  # scalar provenance such as device, runtime, dates
        if kind not in KINDS:
            raise ValueError(f"{path}: unknown layer kind {kind!r} (expected one of {', '.join(KINDS)})")
        if "sparse_cost_per_nonzero" not in entry or "break_even_density" not in entry:
            raise ValueError(f"{path}: {kind!r} needs both 'sparse_cost_per_nonzero' and 'break_even_density'")
        cost = _positive_number(entry["sparse_cost_per_nonzero"], f"{path}: {kind}.sparse_cost_per_nonzero")
        density = _positive_number(entry["break_even_density"], f"{path}: {kind}.break_even_density")
        # the two are one measurement; disagreement means a broken writer
        if not math.isclose(density * cost, 1.0, rel_tol=1e-6):
            raise ValueError(
                f"{path}: {kind}.break_even_density {density!r} is not 1 / sparse_cost_per_nonzero ({1 / cost!r})"
            )
        costs[kind] = cost
    if not costs:
        raise ValueError(f"{path}: no layer kind entries (expected {' and/or '.join(KINDS)})")
    return costs, meta


def load_break_even(path: str | Path) -> dict[str, float]:
    """Measured sparse cost per nonzero, kind -> c, from ``path``.

    The file, written by the latency plugin for the machine it ran on::

        {"conv":   {"break_even_density": 0.25, "sparse_cost_per_nonzero": 4.0},
         "linear": {"break_even_density": 0.4,  "sparse_cost_per_nonzero": 2.5},
         "device": "NVIDIA H100", "runtime": "torch 2.x cuSPARSE"}

    One or both kinds; break_even_density must equal 1 / sparse_cost_per_nonzero.
    Raises FileNotFoundError or ValueError naming the file and the problem.
    """
    return _read_break_even(path)[0]


@dataclass(frozen=True)
class MacsCount:
    """MACs per sample of every Conv2d / Linear of a model on one input.

    ``dense_macs``: every weight, zeros included; ``compact_macs``: the dense
    GEMM left once all-zero rows (filters) and columns (input positions) of
    each layer are dropped, i.e. what a physically slimmed model runs without
    sparse kernels.  Unstructured zeros inside kept rows and columns do not
    count as saved.  ``input_shape``: the input tensor's shape, batch
    excluded (for a detector: the padded image batch).
    """

    dense_macs: int
    compact_macs: int
    input_shape: tuple[int, ...]
    #: layer name -> (dense_macs, compact_macs)
    per_layer: Mapping[str, tuple[int, int]]


def _first_input_tensor(example):
    """The first tensor of an example input (a tensor, or nested tuples / lists); None: none."""
    import torch

    if isinstance(example, torch.Tensor):
        return example
    if isinstance(example, (list, tuple)):
        for item in example:
            found = _first_input_tensor(item)
            if found is not None:
                return found
    return None


def count_macs(model, example_input, layers=None) -> MacsCount:
    """MACs per sample of ``model``'s Conv2d / Linear layers (``layers``: by
    name, default all) on ``example_input`` (a tensor, or a tuple of
    positional arguments), summed over every call of each module."""
    from torch import nn

    from prunebench.artifact import profile_calls

    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))] if layers is None else list(layers)
    calls = profile_calls(model, names, example_input)
    positions = {n: calls[n].output_positions if n in calls else 0 for n in names}
    per_layer = {}
    dense = compact = 0
    for n in names:
        w = modules[n].weight.detach()
        rows = w.shape[0]
        kept_r, kept_c = kept_rows_cols(w.reshape(rows, -1) != 0)
        d, c = w.numel() * positions[n], kept_r * kept_c * positions[n]
        per_layer[n] = (d, c)
        dense += d
        compact += c
    first = _first_input_tensor(example_input)
    shape = tuple(int(v) for v in first.shape[1:]) if first is not None else ()
    return MacsCount(dense, compact, shape, types.MappingProxyType(per_layer))


class ComputeModel(HardwareModel):
    """MACs per sample of the artifact's layers and the break-even model
    (see the module docstring).

    Totals: ``dense_macs``, ``remaining_macs``, ``compact_macs``,
    ``mac_reduction_x`` (dense / remaining: the theoretical speedup),
    ``remaining_macs_fraction`` (remaining / dense),
    ``compact_mac_reduction_x`` (dense / compact), ``modelled_macs`` (dense-MAC
    equivalents; None unless every layer is modelled), ``modelled_speedup_x``,
    ``conv_break_even_density``, ``linear_break_even_density`` and
    ``break_even_source`` ("config", "<device>, <runtime> (<file>)" or None).
    A ratio with a zero denominator is None.  Per layer the same under
    ``layer.<name>.<figure>``, plus ``output_positions``,
    ``sparse_cost_per_nonzero``, ``break_even_density`` and
    ``modelled_path`` ("dense", "compact" or "sparse"; None if not modelled).
    """

    @dataclass(frozen=True)
    class Config(Validated):
        #: dense MACs one sparse MAC costs, per layer kind; None: read break_even_file
        sparse_cost_per_nonzero: Mapping[Kind, PositiveFloat] | None = None
        #: JSON written by the latency plugin (see load_break_even); read at scoring time
        break_even_file: str | None = None

        def __post_init__(self):
            super().__post_init__()
            costs = self.sparse_cost_per_nonzero
            if costs is not None and self.break_even_file is not None:
                raise ConfigError(
                    "break_even_file", f"expected null when sparse_cost_per_nonzero is given, got {self.break_even_file!r}"
                )
            if costs is not None:
                # read-only, so the frozen config stays immutable
                frozen = types.MappingProxyType({kind: float(c) for kind, c in costs.items()})
                object.__setattr__(self, "sparse_cost_per_nonzero", frozen)

    version = "2"
    headline = (Headline("remaining_macs_fraction", "MACs left", "%", "lower", scale=100.0, rank=20,
                         note="remaining / dense MACs"),)

    def _costs(self) -> tuple[Mapping[str, float], str | None]:
        if self.config.sparse_cost_per_nonzero is not None:
            return self.config.sparse_cost_per_nonzero, "config"
        if self.config.break_even_file is not None:
            costs, meta = _read_break_even(self.config.break_even_file)
            return costs, f"{meta['device']}, {meta['runtime']} ({self.config.break_even_file})"
        return {}, None

    @staticmethod
    def layer_figures(layer: "LayerRecord", cost: float | None = None) -> dict[str, Figure]:
        rows, cols = layer.gemm_shape()
        positions = int(layer.output_positions)
        mask = _as_2d(layer.mask.reshape(rows, cols))
        kept_r, kept_c = kept_rows_cols(mask)
        dense = layer.numel * positions
        remaining = int(np.count_nonzero(mask)) * positions
        compact = kept_r * kept_c * positions
        modelled = path = None
        if cost is not None:
            sparse = cost * remaining
            # ties go to the path without index decoding
            if sparse < compact:
                modelled, path = sparse, "sparse"
            else:
                modelled, path = compact, "compact" if compact < dense else "dense"
        return {
            "output_positions": positions,
            "dense_macs": dense,
            "remaining_macs": remaining,
            "compact_macs": compact,
            "mac_reduction_x": ratio(dense, remaining),
            "remaining_macs_fraction": ratio(remaining, dense),
            "compact_mac_reduction_x": ratio(dense, compact),
            "sparse_cost_per_nonzero": cost,
            "break_even_density": None if cost is None else 1 / cost,
            "modelled_macs": modelled,
            "modelled_speedup_x": None if modelled is None else ratio(dense, modelled),
            "modelled_path": path,
        }

    def score(self, artifact: "CompressedModel", *, model=None, example_input=None) -> dict[str, Figure]:
        costs, source = self._costs()
        totals, per_layer = sum_layers(artifact, lambda layer: self.layer_figures(layer, costs.get(layer.kind)), _TOTALS)
        out: dict[str, Figure] = dict(totals)
        out["mac_reduction_x"] = ratio(totals["dense_macs"], totals["remaining_macs"])
        out["remaining_macs_fraction"] = ratio(totals["remaining_macs"], totals["dense_macs"])
        out["compact_mac_reduction_x"] = ratio(totals["dense_macs"], totals["compact_macs"])
        modelled = [per_layer[f"layer.{layer.name}.modelled_macs"] for layer in artifact.layers]
        # a partial sum would understate the time, so any unmodelled layer makes the total None
        total = None if source is None or any(m is None for m in modelled) else sum(modelled)
        out["modelled_macs"] = total
        out["modelled_speedup_x"] = None if total is None else ratio(totals["dense_macs"], total)
        for kind in KINDS:
            out[f"{kind}_break_even_density"] = 1 / costs[kind] if kind in costs else None
        out["break_even_source"] = source
        out.update(per_layer)
        return out
