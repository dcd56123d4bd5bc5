"""``CompressedModel``: the framework-neutral result of a compression run.

It is the only thing the analytical hardware models see.  Per layer it holds
the name, kind (conv / linear), weight shape, the feature-map shapes seen on a
real forward pass (for MACs), the boolean mask, the quantized codes with their
codebook and bit width, and the structure the layer was pruned with.  It saves
as one safetensors file plus a JSON manifest and loads back without torch
modules, so a result can be re-scored later without retraining.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["LayerRecord", "CompressedModel", "LayerCalls", "profile_calls"]

MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LayerCalls:
    """What one forward pass showed of a layer: the feature-map shapes of its
    first call (batch dropped) and its output positions per sample summed over
    every call (a module called T times, as an SNN layer over T time steps or a
    detection head shared across pyramid levels, uses each weight that many
    more times)."""

    input_shape: tuple
    output_shape: tuple
    output_positions: int
    calls: int


def _positions_per_call(module: nn.Module, output: torch.Tensor) -> int:
    """How often one sample uses each weight in one call: out_h * out_w for a
    conv, the product of the leading dims for a linear layer."""
    shape = tuple(output.shape[1:])
    if isinstance(module, nn.Conv2d):
        return math.prod(shape[1:])
    return math.prod(shape[:-1]) if len(shape) > 1 else 1


def profile_calls(model: nn.Module, layer_names: Sequence[str], example_input) -> dict[str, LayerCalls]:
    """One forward pass of ``model`` in eval mode with no grad on
    ``example_input`` (a tensor, or a tuple of positional arguments); per
    layer that was called, its :class:`LayerCalls`.  The model's train/eval
    mode is restored.  The one place the harness counts weight uses, for the
    artifact's MACs and :func:`prunebench.hardware.compute.count_macs` alike."""
    modules = dict(model.named_modules())
    missing = [n for n in layer_names if n not in modules]
    if missing:
        raise KeyError(f"layers not in the model: {', '.join(missing)}")
    first: dict[str, tuple] = {}
    positions: dict[str, int] = {}
    calls: dict[str, int] = {}

    def hook(name):
        def fn(module, inputs, output):
            if name not in first:
                first[name] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))
            positions[name] = positions.get(name, 0) + _positions_per_call(module, output)
            calls[name] = calls.get(name, 0) + 1

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in layer_names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example_input, torch.Tensor):
                model(example_input)
            else:
                model(*example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: LayerCalls(*first[n], positions[n], calls[n]) for n in layer_names if n in first}


@dataclass
class LayerRecord:
    """One compressible layer.  Shapes exclude the batch dimension.

    ``weight_shape`` is (F, C/groups, kh, kw) for conv and (out, in) for linear.
    ``output_positions`` is how many times each weight is used per sample
    (out_h * out_w for conv; the product of the leading dims for linear),
    summed over the ``calls`` the layer gets per sample (an SNN layer runs once
    per time step, a shared detection head once per pyramid level).
    ``codes``/``codebook``: weight == codebook[codes]; None when not quantized.
    ``weight_bits`` is None when the weights are stored as fp32.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output_positions: int
    mask: torch.Tensor
    weight: torch.Tensor
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    groups: int = 1
    codes: torch.Tensor | None = None
    codebook: torch.Tensor | None = None
    weight_bits: int | None = None
    structure: str = "unstructured"
    has_bias: bool = False
    calls: int = 1

    @property
    def positions_per_call(self) -> float:
        """Output positions of one call (the first call's, when every call has the same shape)."""
        return self.output_positions / max(self.calls, 1)

    @property
    def numel(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def nonzeros(self) -> int:
        # numpy counts a bool mask far faster than torch's reductions on CPU
        return int(np.count_nonzero(self.mask.cpu().numpy()))

    @property
    def dense_macs(self) -> int:
        return self.numel * self.output_positions

    def gemm_shape(self) -> tuple[int, int]:
        """(rows, cols) of the weight as the GEMM matrix [F, C*kh*kw]."""
        return self.weight_shape[0], math.prod(self.weight_shape[1:])

    def meta(self) -> dict:
        out = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("mask", "weight", "codes", "codebook")
        }
        for k in ("weight_shape", "input_shape", "output_shape", "stride", "padding"):
            out[k] = list(out[k])
        return out


@dataclass
class CompressedModel:
    """Per-layer description of a compressed model (see module docstring)."""

    layers: list[LayerRecord]
    model_name: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError("CompressedModel layer names must be unique")

    def __getitem__(self, name: str) -> LayerRecord:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def total_weights(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def nonzero_weights(self) -> int:
        return sum(layer.nonzeros for layer in self.layers)

    @property
    def compression_rate(self) -> float:
        nnz = self.nonzero_weights
        return math.inf if nnz == 0 else self.total_weights / nnz

    # ------------------------------------------------------------------ build
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        layer_names: Sequence[str],
        example_input: torch.Tensor | Iterable,
        *,
        structure: str = "unstructured",
        weight_bits: int | None = None,
        model_name: str = "",
        metadata: dict | None = None,
    ) -> "CompressedModel":
        """Describe ``layer_names`` of ``model``; one forward pass records shapes
        (of each layer's first call) and output positions (over all its calls)."""
        modules = dict(model.named_modules())
        profile = profile_calls(model, layer_names, example_input)

        records = []
        for name in layer_names:
            module = modules[name]
            weight = module.weight.detach().to("cpu", torch.float32).clone()
            if name not in profile:
                raise RuntimeError(f"layer {name!r} was not called on the example input")
            in_shape, out_shape, positions = (profile[name].input_shape, profile[name].output_shape,
                                              profile[name].output_positions)
            if isinstance(module, nn.Conv2d):
                kind = "conv"
                stride, padding = tuple(module.stride), tuple(module.padding) if not isinstance(module.padding, str) else ()
                groups = module.groups
            elif isinstance(module, nn.Linear):
                kind = "linear"
                stride, padding, groups = (), (), 1
            else:
                raise TypeError(f"layer {name!r} is a {type(module).__name__}; only Conv2d and Linear are supported")
            mask = weight != 0
            codes = codebook = None
            if weight_bits is not None:
                codebook, inverse = torch.unique(weight, return_inverse=True)
                codes = inverse.to(torch.int32)
            records.append(
                LayerRecord(
                    name=name,
                    kind=kind,
                    weight_shape=tuple(weight.shape),
                    input_shape=tuple(in_shape),
                    output_shape=tuple(out_shape),
                    output_positions=int(positions),
                    calls=int(profile[name].calls),
                    mask=mask,
                    weight=weight,
                    stride=stride,
                    padding=padding,
                    groups=groups,
                    codes=codes,
                    codebook=codebook,
                    weight_bits=weight_bits,
                    structure=structure,
                    has_bias=getattr(module, "bias", None) is not None,
                )
            )
        return cls(records, model_name=model_name, metadata=dict(metadata or {}))

    # -------------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, layer in enumerate(self.layers):
            tensors[f"{i}.mask"] = layer.mask.to(torch.uint8).contiguous()
            tensors[f"{i}.weight"] = layer.weight.contiguous()
            if layer.codes is not None:
                tensors[f"{i}.codes"] = layer.codes.contiguous()
                tensors[f"{i}.codebook"] = layer.codebook.contiguous()
        save_file(tensors, str(directory / TENSORS))
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "metadata": self.metadata,
            "layers": [layer.meta() for layer in self.layers],
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CompressedModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = json.loads((directory / MANIFEST).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported CompressedModel format {manifest.get('format_version')!r}")
        tensors = load_file(str(directory / TENSORS))
        layers = []
        for i, meta in enumerate(manifest["layers"]):
            for k in ("weight_shape", "input_shape", "output_shape", "stride", "padding"):
                meta[k] = tuple(meta[k])
            layers.append(
                LayerRecord(
                    **meta,
                    mask=tensors[f"{i}.mask"].bool(),
                    weight=tensors[f"{i}.weight"],
                    codes=tensors.get(f"{i}.codes"),
                    codebook=tensors.get(f"{i}.codebook"),
                )
            )
        return cls(layers, model_name=manifest["model_name"], metadata=manifest["metadata"])
