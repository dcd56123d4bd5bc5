"""2:4 semi-structured sparsity on a CUDA device: the latency plugin's path, its
numerics, and the kernel speed against dense fp16 measured in the same run.

    python benchmarks/semi_structured_bench.py [--repeats 50] [--out FILE.json]

1. An MLP of three Linear layers pruned to 2:4 by the harness's own projection
   (``project_masks`` with structure "2:4"), scored by the ``latency`` plugin:
   ``semi_structured_available`` must be true on sm80+, and the
   semi-structured model's outputs must match the fp16 dense model's.
2. One Linear layer at several sizes: median latency of the fp16 dense
   product and of ``to_sparse_semi_structured`` (cuSPARSELt or CUTLASS,
   whichever torch picks), as a ratio measured in the same run.

On a machine without CUDA (or before sm80) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

from prunebench import CompressedModel
from prunebench.hardware.latency import LatencyConfig, LatencyModel, semi_structured_model, time_callable_ms
from prunebench.projections import project_masks
from prunebench.target import Structure


def _prune_24(model: nn.Module, names: list[str]) -> None:
    layers = {n: model.get_submodule(n) for n in names}
    weights = {n: m.weight.detach() for n, m in layers.items()}
    masks = project_masks(weights, Structure.parse("2:4"), keep=sum(w.numel() for w in weights.values()) // 2)
    with torch.no_grad():
        for n, m in layers.items():
            m.weight.mul_(masks[n].to(m.weight.dtype))


def plugin_check(device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                          nn.Linear(4096, 1024)).to(device).eval()
    names = ["0", "2", "4"]
    _prune_24(model, names)
    x = torch.randn(2048, 1024, device=device)
    art = CompressedModel.from_model(model, names, x)
    figures = LatencyModel(LatencyConfig(repeats=repeats, warmup=10)).score(art, model=model, example_input=x)
    semi = semi_structured_model(model, names, device)
    with torch.no_grad():
        dense16 = model.half()(x.half()).float()
        sparse16 = semi(x.half()).float()
    rel = float((dense16 - sparse16).abs().max() / dense16.abs().max())
    return {"figures": {k: v for k, v in figures.items() if not isinstance(v, float) or v == v},
            "max_rel_error_vs_dense_fp16": rel}


def kernel_sweep(device: torch.device, repeats: int) -> list[dict]:
    from torch.sparse import to_sparse_semi_structured

    rows = []
    for m_rows, k_in, n_out in [(4096, 4096, 4096), (8192, 8192, 8192), (16384, 8192, 8192), (32768, 4096, 16384)]:
        torch.manual_seed(0)
        layer = nn.Linear(k_in, n_out, bias=False).to(device).half().eval()
        _prune_24(layer_holder := nn.Sequential(layer), ["0"])
        x = torch.randn(m_rows, k_in, device=device, dtype=torch.half)
        dense_ms = time_callable_ms(lambda: layer(x), repeats, 10, device)
        sparse = nn.Linear(k_in, n_out, bias=False).to(device).half().eval()
        sparse.weight = nn.Parameter(to_sparse_semi_structured(layer_holder[0].weight.detach()), requires_grad=False)
        sparse_ms = time_callable_ms(lambda: sparse(x), repeats, 10, device)
        flop = 2 * m_rows * k_in * n_out
        rows.append({"m": m_rows, "k": k_in, "n": n_out, "dense_fp16_ms": dense_ms, "semi_structured_ms": sparse_ms,
                     "speedup_x": dense_ms / sparse_ms, "dense_tflops": flop / dense_ms / 1e9})
        print(f"M={m_rows} K={k_in} N={n_out}: dense fp16 {dense_ms:.3f} ms ({flop / dense_ms / 1e9:.0f} TFLOP/s), "
              f"2:4 {sparse_ms:.3f} ms, speedup {dense_ms / sparse_ms:.2f}x", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("no CUDA device of compute capability 8.0 or newer: nothing to measure")
        return
    device = torch.device("cuda")
    report = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
              "plugin": plugin_check(device, args.repeats), "kernels": kernel_sweep(device, args.repeats)}
    print(json.dumps(report["plugin"], indent=1, default=str))
    print("median speedup over sizes:", statistics.median(r["speedup_x"] for r in report["kernels"]))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
