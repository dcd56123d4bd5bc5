"""Hardware-model benchmark: scoring speed, compaction efficiency, break-even density.

    python benchmarks/hardware_bench.py [--repeats 20] [--out benchmarks/break_even_cpu.json]

1. Time to score a ResNet-50 artifact (timm resnet50, 25.5M conv/linear weights,
   90% unstructured sparsity, 4-bit) with every hardware model except latency.
2. Filter-pruned timm ResNet-18 (Torch-Pruning's magnitude pruner, fc kept) at
   2x and 4x MAC reduction: measured speedup / theoretical MAC reduction on this
   machine, batch 1 at 224x224 (Torch-Pruning's README reports 0.57 on ResNet-50).
3. Measured break-even density of CSR execution for a conv and a linear layer;
   written as JSON for the compute model's ``break_even_file``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from prunebench import CompressedModel
from prunebench.hardware.latency import measure_break_even, time_callable_ms, write_break_even
from prunebench.registry import hardware_models


def _conv_linear(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(mod, inputs, out):
        nonlocal total
        pos = math.prod(out.shape[2:]) if isinstance(mod, nn.Conv2d) else 1
        total += mod.weight.numel() * pos

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total


def scoring_speed() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False).eval()
    names = _conv_linear(model)
    with torch.no_grad():
        for n in names:
            w = dict(model.named_modules())[n].weight
            w.mul_(torch.rand_like(w) >= 0.9)
    art = CompressedModel.from_model(model, names, torch.zeros(1, 3, 224, 224), weight_bits=4)
    print(f"[1] scoring a ResNet-50 artifact: {art.total_weights / 1e6:.1f}M weights in {len(names)} layers, "
          f"{art.nonzero_weights / 1e6:.2f}M nonzero, {torch.get_num_threads()} threads")
    total = 0.0
    for name in hardware_models.names():
        if name == "latency":
            continue
        hw = hardware_models.get(name)()
        start = time.perf_counter()
        hw.score(art)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"    {name:<10} {elapsed:.3f} s")
    print(f"    all but latency: {total:.3f} s (target < 1 s)")


def compaction_efficiency(repeats: int) -> None:
    import timm
    import torch_pruning as tp

    x = torch.randn(1, 3, 224, 224)
    device = torch.device("cpu")
    print("[2] filter-pruned ResNet-18: measured speedup / theoretical MAC reduction")
    for target in (2.0, 4.0):
        torch.manual_seed(0)
        dense = timm.create_model("resnet18", pretrained=False).eval()
        pruned = timm.create_model("resnet18", pretrained=False).eval()
        pruned.load_state_dict(dense.state_dict())
        base_macs = _macs(dense, x)
        # channel sparsity s leaves about (1-s)^2 of the MACs: aim, then step until reached
        ratio = 1 - 1 / math.sqrt(target)
        pruner = tp.pruner.MagnitudePruner(
            pruned, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
            ignored_layers=[pruned.fc], iterative_steps=1,
        )
        pruner.step()
        macs = _macs(pruned, x)
        dense_ms = time_callable_ms(lambda: dense(x), repeats, 5, device)
        pruned_ms = time_callable_ms(lambda: pruned(x), repeats, 5, device)
        mac_red = base_macs / macs
        speedup = dense_ms / pruned_ms
        print(f"    target {target:g}x: MACs {base_macs / 1e9:.3f} -> {macs / 1e9:.3f} G ({mac_red:.2f}x); "
              f"latency {dense_ms:.1f} -> {pruned_ms:.1f} ms ({speedup:.2f}x); "
              f"speedup / MAC reduction = {speedup / mac_red:.2f}")


def break_even(out: Path, repeats: int) -> None:
    print("[3] measured break-even density (CSR sparse vs dense), this machine")
    results = {kind: measure_break_even(kind, repeats=repeats) for kind in ("conv", "linear")}
    for kind, res in results.items():
        pts = ", ".join(f"{p['density']:g}:{p['sparse_ms']:.2f}" for p in res["points"])
        how = "measured crossing" if res["break_even_measured_crossing"] else "upper bound: sparse lost at every density"
        print(f"    {kind:<6} dense {res['dense_ms']:.2f} ms; sparse ms by density {pts}")
        print(f"           break-even density {res['break_even_density']:.3f} ({how}); "
              f"fitted slope {res['fitted_slope_per_nonzero']:.2f} dense MACs per nonzero; {res['runtime']}")
    print(f"    written to {write_break_even(out, results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/break_even_cpu.json")
    args = parser.parse_args()
    scoring_speed()
    compaction_efficiency(args.repeats)
    break_even(Path(args.out), args.repeats)


if __name__ == "__main__":
    main()
