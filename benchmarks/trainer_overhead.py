"""Harness time per epoch against a bare PyTorch loop doing the same SGD steps.

    python benchmarks/trainer_overhead.py [--epochs 0.5] [--repeats 3]

Same model (Caffe LeNet-5), same data (the Fashion-MNIST train split, in memory),
same batch order, optimizer and schedule; prints seconds per epoch for each and
their ratio (harness / bare; 1.00 means no overhead).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from prunebench.runner import RunContext, get_task
from prunebench.suite import load_suite
from prunebench.trainer import OptimizerConfig, Trainer


def bare_loop(task, model, steps: int, cfg: OptimizerConfig, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all, bs = task._train_x, task._train_y, task.config.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    done = 0
    while done < steps:
        order = torch.randperm(x_all.shape[0], generator=gen)
        for i in range(0, x_all.shape[0], bs):
            idx = order[i : i + bs]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done >= steps:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="suites/classification/lenet5_fashion_mnist.yaml")
    parser.add_argument("--epochs", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    suite = load_suite(args.suite)
    task = get_task(suite, RunContext(progress=False))
    cfg = OptimizerConfig(lr=0.01)
    steps = max(1, round(args.epochs * task.steps_per_epoch()))
    harness_s, bare_s = [], []
    for rep in range(args.repeats):
        for kind in ("bare", "harness") if rep % 2 == 0 else ("harness", "bare"):
            torch.manual_seed(0)
            model = task.build_model()
            start = time.perf_counter()
            if kind == "bare":
                bare_loop(task, model, steps, cfg, seed=0)
                bare_s.append(time.perf_counter() - start)
            else:
                Trainer(task, model, optimizer=cfg, seed=0, progress=False).fit(args.epochs)
                harness_s.append(time.perf_counter() - start)
    scale = 1.0 / args.epochs
    h, b = statistics.median(harness_s) * scale, statistics.median(bare_s) * scale
    print(f"model {task.config.model}, {steps} steps of batch {task.config.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"bare loop:  {b:.2f} s/epoch  (runs: {', '.join(f'{t:.2f}' for t in bare_s)} s)")
    print(f"harness:    {h:.2f} s/epoch  (runs: {', '.join(f'{t:.2f}' for t in harness_s)} s)")
    print(f"ratio harness/bare: {h / b:.3f}")


if __name__ == "__main__":
    main()
