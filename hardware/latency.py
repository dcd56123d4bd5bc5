"""Measured latency on the current device, and the measured break-even density.

Three executions of the same compressed model, timed as the median of
``repeats`` runs after ``warmup`` runs, batch as given by the harness:

- ``dense``: the model as it is (zeros are multiplied like any weight);
- ``compact``: the physically smaller model, output filters and input
  channels that are entirely zero removed by Torch-Pruning's dependency graph
  (so coupled layers such as BatchNorm and the next layer's inputs shrink too);
- ``sparse``: every compressible layer run as a sparse CSR matrix product
  (torch.sparse; convolutions through im2col), the runtime an irregularly
  pruned model gets without a custom kernel.

Semi-structured 2:4 kernels exist only on CUDA devices of compute capability
8.0 and newer; elsewhere those figures are None (not available here).

The result names the runtime (torch version, device, threads).  Removing a
filter whose bias is nonzero changes the next layer's input slightly; the
compact model measures the cost of the structure, not an exact re-execution.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.config import NonNegativeInt, PositiveInt, Validated
from prunebench.interfaces import Figure, HardwareModel

from ._figures import ratio

__all__ = [
    "LatencyModel",
    "LatencyConfig",
    "time_callable_ms",
    "compact_model",
    "sparse_model",
    "measure_break_even",
    "runtime_name",
]


@dataclass(frozen=True)
class LatencyConfig(Validated):
    repeats: PositiveInt = 20
    warmup: NonNegativeInt = 10
    #: torch threads while timing; None keeps the current setting
    threads: PositiveInt | None = None


def runtime_name(device: torch.device) -> dict[str, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    return {"runtime": f"torch {torch.__version__} {device.type}, {torch.get_num_threads()} threads", "device_name": name}


@torch.no_grad()
def time_callable_ms(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# ------------------------------------------------------------------ compaction
def compact_model(model: nn.Module, layer_names, example_input: torch.Tensor) -> nn.Module:
    """A copy with all-zero output filters and input channels removed (Torch-Pruning)."""
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    modules = dict(model.named_modules())
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    for name in layer_names:
        layer = modules[name]
        w = layer.weight.detach()
        flat = w.reshape(w.shape[0], -1)
        dead_out = torch.nonzero(~(flat != 0).any(dim=1)).flatten().tolist()
        out_fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        if 0 < len(dead_out) < w.shape[0]:
            group = graph.get_pruning_group(layer, out_fn, idxs=dead_out)
            if graph.check_pruning_group(group):
                group.prune()
        w = layer.weight.detach()  # may have shrunk
        per_in = w.transpose(0, 1).reshape(w.shape[1], -1)
        dead_in = torch.nonzero(~(per_in != 0).any(dim=1)).flatten().tolist()
        in_fn = tp.prune_conv_in_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_in_channels
        if 0 < len(dead_in) < w.shape[1] and getattr(layer, "groups", 1) == 1:
            group = graph.get_pruning_group(layer, in_fn, idxs=dead_in)
            if graph.check_pruning_group(group):
                group.prune()
    return model


# ---------------------------------------------------------------------- sparse
class _SparseLinear(nn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x):
        shape = x.shape
        out = torch.sparse.mm(self.weight, x.reshape(-1, shape[-1]).t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], -1)


class _SparseConv2d(nn.Module):
    """im2col, then a CSR weight times the column matrix (groups == 1)."""

    def __init__(self, layer: nn.Conv2d):
        super().__init__()
        w = layer.weight.detach()
        self.out_channels = w.shape[0]
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.padding, self.dilation = layer.padding, layer.dilation
        self.weight = w.reshape(w.shape[0], -1).to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x):
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        # [F, K] x [K, N*L] in one product
        flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)
        out = torch.sparse.mm(self.weight, flat).reshape(self.out_channels, n, oh * ow).transpose(0, 1)
        out = out.reshape(n, self.out_channels, oh, ow)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def sparse_model(model: nn.Module, layer_names) -> nn.Module:
    """A copy whose listed Linear / Conv2d (groups=1, zeros padding) layers run as CSR products."""
    model = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        _replace_sparse(model, layer_names)
    return model


def _replace_sparse(model: nn.Module, layer_names) -> None:
    for name in layer_names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        if isinstance(layer, nn.Linear):
            setattr(parent, child, _SparseLinear(layer))
        elif isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
            setattr(parent, child, _SparseConv2d(layer))


# ----------------------------------------------------------- 2:4 semi-structured
def semi_structured_model(model: nn.Module, layer_names, device: torch.device) -> nn.Module | None:
    """A copy whose Linear layers holding a 2:4 pattern use torch's semi-structured
    sparse kernels, or None where the runtime has none (CPU; CUDA before sm80).
    Not verified on a GPU in this project yet."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return None
    from torch.sparse import to_sparse_semi_structured

    model = copy.deepcopy(model).eval().half()
    swapped = 0
    for name in layer_names:
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            continue
        w = layer.weight.detach()
        groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(dim=-1)
        if w.shape[1] % 4 == 0 and bool((groups <= 2).all()):
            layer.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
            swapped += 1
    return model if swapped else None


# ------------------------------------------------------------------ the model
class LatencyModel(HardwareModel):
    """Median latency of the dense, compacted and sparse executions (see module doc)."""

    Config = LatencyConfig
    version = "2"  # 2: compact_mac_reduction_x per sample at any batch (1 divided by the batch twice)

    def score(self, artifact, *, model=None, example_input=None) -> dict[str, Figure]:
        keys = ("dense_latency_ms", "compact_latency_ms", "sparse_latency_ms", "semi_structured_latency_ms",
                "semi_structured_available", "dense_fp16_latency_ms",
                "compact_speedup_x", "sparse_speedup_x", "compact_mac_reduction_x",
                "compact_speedup_per_mac_reduction")
        out: dict[str, Figure] = dict.fromkeys(keys)
        if model is None or example_input is None:
            return out  # not measurable from the artifact alone
        cfg = self.config
        device = example_input.device
        previous = torch.get_num_threads()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        try:
            out.update(runtime_name(device))
            names = [layer.name for layer in artifact.layers]
            was_training = model.training
            model.eval()

            def timed(m: nn.Module) -> float:
                return time_callable_ms(lambda: m(example_input), cfg.repeats, cfg.warmup, device)

            out["dense_latency_ms"] = timed(model)
            compact = compact_model(model, names, example_input)
            out["compact_latency_ms"] = timed(compact)
            out["sparse_latency_ms"] = timed(sparse_model(model, names))
            semi = semi_structured_model(model, names, device)
            out["semi_structured_available"] = semi is not None
            if semi is not None:  # fp16 kernels: compare against the fp16 dense model
                x16 = example_input.half()
                dense16 = copy.deepcopy(model).eval().half()
                out["dense_fp16_latency_ms"] = time_callable_ms(lambda: dense16(x16), cfg.repeats, cfg.warmup, device)
                out["semi_structured_latency_ms"] = time_callable_ms(lambda: semi(x16), cfg.repeats, cfg.warmup, device)
            model.train(was_training)
        finally:
            torch.set_num_threads(previous)
        out["compact_speedup_x"] = ratio(out["dense_latency_ms"], out["compact_latency_ms"])
        out["sparse_speedup_x"] = ratio(out["dense_latency_ms"], out["sparse_latency_ms"])
        dense_macs = sum(layer.dense_macs for layer in artifact.layers)
        compact_macs = _macs(compact, example_input, names)
        out["compact_mac_reduction_x"] = ratio(dense_macs, compact_macs)
        if out["compact_speedup_x"] is not None and out["compact_mac_reduction_x"]:
            out["compact_speedup_per_mac_reduction"] = out["compact_speedup_x"] / out["compact_mac_reduction_x"]
        return out


def _macs(model: nn.Module, example_input: torch.Tensor, names) -> int:
    """Conv/linear MACs of ``names`` in ``model`` (per sample) from one forward pass."""
    modules = dict(model.named_modules())
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        positions = math.prod(output.shape[2:]) if isinstance(module, nn.Conv2d) else math.prod(output.shape[1:-1])
        total += module.weight.numel() * positions

    handles = [modules[n].register_forward_hook(hook) for n in names if n in modules]
    with torch.no_grad():
        model(example_input)
    for h in handles:
        h.remove()
    return total  # the positions above are per sample already (the batch dimension is left out)


# ----------------------------------------------------------- break-even sparsity
@torch.no_grad()
def measure_break_even(
    kind: str,
    *,
    densities=(1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01),
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict:
    """Time a representative layer dense and as CSR at each density.

    conv: 3x3, 64 -> 64 channels on a 1x64x28x28 input; linear: 1024 -> 1024 on
    a batch of 32.  Sparse time ~ cost * nnz, dense time ~ numel, so
    ``sparse_cost_per_nonzero`` = (t_sparse / nnz) / (t_dense / numel) (median
    over densities <= 0.3, where the fixed overhead is small) and the
    break-even density is where the measured curves cross (log-linear
    interpolation), or 1/cost when they do not cross in the range.
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "conv":
        layer = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        x = torch.randn(1, 64, 28, 28, generator=gen)
    elif kind == "linear":
        layer = nn.Linear(1024, 1024, bias=False)
        x = torch.randn(32, 1024, generator=gen)
    else:
        raise ValueError(f"kind must be 'conv' or 'linear', got {kind!r}")
    layer.eval()
    device = torch.device("cpu")
    base = torch.randn(layer.weight.shape, generator=gen)
    dense_ms = time_callable_ms(lambda: layer(x), repeats, warmup, device)
    rows = []
    for d in densities:
        mask = torch.rand(base.shape, generator=gen) < d
        layer.weight.copy_(base * mask)
        sparse = sparse_model(nn.Sequential(layer), ["0"])
        ms = time_callable_ms(lambda: sparse(x), repeats, warmup, device)
        rows.append({"density": d, "nonzeros": int(mask.sum()), "sparse_ms": ms})
    numel = base.numel()
    # the slope alone: time per nonzero relative to a dense MAC, at low density
    slopes = [(r["sparse_ms"] / max(r["nonzeros"], 1)) / (dense_ms / numel) for r in rows if r["density"] <= 0.3]
    crossing = None
    for a, b in zip(rows, rows[1:]):  # densities decrease
        if a["sparse_ms"] >= dense_ms > b["sparse_ms"]:
            la, lb = math.log(a["density"]), math.log(b["density"])
            t = (a["sparse_ms"] - dense_ms) / (a["sparse_ms"] - b["sparse_ms"])
            crossing = math.exp(la + t * (lb - la))
            break
    if crossing is None and rows and rows[0]["sparse_ms"] < dense_ms:
        crossing = 1.0  # sparse wins everywhere measured
    # no crossing: sparse lost at every density tried, so the break-even lies below the lowest one
    break_even = crossing if crossing is not None else min(densities)
    return {
        "kind": kind,
        "dense_ms": dense_ms,
        "points": rows,
        "break_even_density": break_even,
        "break_even_measured_crossing": crossing is not None,
        # the compute model's linear cost: sparse time = cost * nonzeros, crossing at 1 / cost
        "sparse_cost_per_nonzero": 1 / break_even,
        "fitted_slope_per_nonzero": statistics.median(slopes) if slopes else None,
        **runtime_name(device),
    }


def write_break_even(path: str | Path, results: dict[str, dict]) -> Path:
    """The JSON the compute model reads (``break_even_file``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(results.values()))
    data = {
        k: {"break_even_density": v["break_even_density"], "sparse_cost_per_nonzero": v["sparse_cost_per_nonzero"],
            "break_even_measured_crossing": v["break_even_measured_crossing"]}
        for k, v in results.items()
    }
    data["device"] = first["device_name"]
    data["runtime"] = first["runtime"]
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path
