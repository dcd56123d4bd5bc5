"""What quantization-aware fine-tuning costs per epoch, with the scale refitted every
step (the first implementation) against every 25 steps (the default), and no QAT.

    python benchmarks/qat_overhead.py [--steps 150] [--repeats 2]

Same model (Caffe LeNet-5, 4x magnitude-pruned, masked), same data (Fashion-MNIST
train split in memory), same batches; prints seconds per step for each, their ratio
against plain masked fine-tuning, and test top-1 after the harness's final 4-bit
quantization, so a faster observer that cost accuracy would show.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from prunebench import KeepMasked, Trainer
from prunebench.projections import project_masks
from prunebench.quant import QuantizationAware, quantize_
from prunebench.runner import RunContext, get_task
from prunebench.suite import load_suite
from prunebench.target import Quantization
from prunebench.trainer import OptimizerConfig

Q4 = Quantization(bits=4)
LAYERS = ("conv1", "conv2", "fc1", "fc2")


def one(task, kind: str, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = task.build_model()
    weights = {n: getattr(model, n).weight.detach() for n in LAYERS}
    masks = project_masks(weights, "unstructured", sum(w.numel() for w in weights.values()) // 4)
    with torch.no_grad():
        for n, m in masks.items():
            getattr(model, n).weight.mul_(m)
    observers = [] if kind == "none" else [QuantizationAware(LAYERS, Q4, refit_every_steps=1 if kind == "every step" else 25)]
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=steps / task.steps_per_epoch() + 1,
                      seed=0, progress=False, observers=observers)
    t0 = time.perf_counter()
    trainer.fit(steps=steps, callbacks=[KeepMasked({n: m.float() for n, m in masks.items()})])
    per_step = (time.perf_counter() - t0) / steps
    with torch.no_grad():
        for n in LAYERS:
            quantize_(getattr(model, n).weight.data, Q4)
    return per_step, task.evaluate(model)["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="suites/classification/lenet5_fashion_mnist.yaml")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    task = get_task(load_suite(args.suite), RunContext(progress=False))
    kinds = ("none", "every step", "every 25 steps")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    top1: dict[str, float] = {}
    for rep in range(args.repeats):
        for kind in kinds if rep % 2 == 0 else kinds[::-1]:  # alternate the order against drift
            t, acc = one(task, kind, args.steps)
            times[kind].append(t)
            top1[kind] = acc
    base = statistics.median(times["none"])
    print(f"{args.steps} steps, median of {args.repeats}; torch threads {torch.get_num_threads()}")
    for kind in kinds:
        med = statistics.median(times[kind])
        print(f"{kind:>15}: {med * 1000:7.1f} ms/step  {med / base:5.2f}x plain  top-1 after 4-bit {top1[kind]:.2f}")


if __name__ == "__main__":
    main()
