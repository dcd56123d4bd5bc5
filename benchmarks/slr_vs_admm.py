"""Epochs SLR and ADMM need to reach a target accuracy after hard pruning.

    python benchmarks/slr_vs_admm.py [--rate 16] [--structure unstructured] [--epochs 6]
                                     [--drop 2.0] [--seeds 0,1,2]

On the suite's cached dense model (lenet5-fashion-mnist by default), each method
runs with the same budget; a probe after every fit chunk (and at each epoch
boundary) hard-prunes a copy of the weights with the shared projection,
evaluates it and restores the weights.  Printed per method and seed: the
epochs spent when the hard-pruned model first reached ``dense - drop`` (the
SLR paper's "epochs to target"), and the hard-pruned accuracy with no
retraining at the end of the regularised phase.  Probes cost evaluation
passes, not training budget.  No quantization (pruning only).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from prunebench import Callback, Structure, Target, Trainer
from prunebench.baseline import dense_baseline
from prunebench.methods.admm import ADMM, ADMMConfig
from prunebench.methods.slr import SLR, SLRConfig
from prunebench.projections import project_masks
from prunebench.runner import RunContext, get_task
from prunebench.suite import load_suite


class HardPruneProbe(Callback):
    """Evaluate a hard-pruned copy at every epoch end; remember when it first reaches ``goal``."""

    def __init__(self, task, target: Target, keep: int, goal: float):
        self.task, self.target, self.keep, self.goal = task, target, keep, goal
        self.reached_at: float | None = None
        self.trace: list[tuple[float, float]] = []

    @torch.no_grad()
    def after_epoch(self, trainer, epoch, mean_loss):
        modules = dict(trainer.model.named_modules())
        weights = {n: modules[n].weight.detach().clone() for n in self.target.layers}
        masks = project_masks(weights, self.target.structure, self.keep)
        for n, w in weights.items():
            modules[n].weight.mul_(masks[n])
        acc = self.task.evaluate(trainer.model)["top1"]
        for n, w in weights.items():
            modules[n].weight.copy_(w)
        self.trace.append((trainer.epochs_spent, acc))
        if self.reached_at is None and acc >= self.goal:
            self.reached_at = trainer.epochs_spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="suites/classification/lenet5_fashion_mnist.yaml")
    parser.add_argument("--rate", type=float, default=16.0)
    parser.add_argument("--structure", default="unstructured")
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--drop", type=float, default=2.0, help="target = dense top-1 minus this many points")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()

    suite = load_suite(args.suite)
    task = get_task(suite, RunContext(progress=False))
    structure = Structure.parse(args.structure)
    methods = {
        # SLR: one SLR iteration per epoch (the authors' code), no retraining inside the budget
        "slr": lambda: SLR(SLRConfig(retrain_share=0.0)),
        # ADMM: the same number of Z/U updates per epoch, prune only, no retraining
        "admm": lambda: ADMM(ADMMConfig(quantize=False, retrain_share=0.0, stages=3,
                                        iterations=max(1, round(args.epochs / 3)))),
    }
    print(f"{suite.suite}: {args.structure} {args.rate:g}x, budget {args.epochs:g} epochs, "
          f"target = dense - {args.drop:g} points (hard-pruned, no retraining)")
    summary: dict[str, list] = {m: [] for m in methods}
    for seed in [int(s) for s in args.seeds.split(",")]:
        dense = dense_baseline(suite.task_name, task, suite.dense, seed, progress=False)
        goal = dense.metrics["top1"] - args.drop
        for name, make in methods.items():
            torch.manual_seed(seed)
            model = task.build_model()
            model.load_state_dict(dense.state)
            layers = suite.layers.select(task.compressible_layers(model), structure.is_structured)
            target = Target(layers=tuple(layers), structure=structure, rate=args.rate)
            keep = target.keep_budget({n: dict(model.named_modules())[n].weight.numel() for n in layers})
            probe = HardPruneProbe(task, target, keep, goal)
            trainer = Trainer(task, model, optimizer=suite.budget.optimizer, budget_epochs=args.epochs,
                              seed=seed, progress=False, observers=[probe])
            info = make().compress(model, target, trainer)
            hard = info.get("hard_prune_metrics", {}).get("top1")
            summary[name].append((probe.reached_at, hard))
            reached = "never" if probe.reached_at is None else f"{probe.reached_at:.2f}"
            print(f"  seed {seed} {name:<5} dense {dense.metrics['top1']:.2f}  goal {goal:.2f}  "
                  f"epochs to goal {reached}  hard-prune top1 (no retrain) {hard:.2f}  "
                  f"probes {len(probe.trace)}")
    for name, rows in summary.items():
        reached = [r for r, _ in rows if r is not None]
        hard = [h for _, h in rows if h is not None]
        print(f"{name:<5} epochs to goal: {len(reached)}/{len(rows)} seeds reached"
              + (f", median {statistics.median(reached):.2f}" if reached else "")
              + (f"; hard-prune top1 mean {statistics.mean(hard):.2f}" if hard else ""))


if __name__ == "__main__":
    main()
