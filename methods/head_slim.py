"""head_slim: structural channel reduction confined to the layers that hold most
of the MACs, sized to a MACs target.

Light-Weight RetinaNet (Li, Zhou et al., arXiv 1905.10011) cuts FLOPs only in
RetinaNet's computationally heaviest layers, the head's stacked convolutions,
which run at every pyramid level, and reports a better FLOPs-mAP curve than
shrinking the input image (0.3 mAP better at 1.8x fewer FLOPs).  This method
reads that rule in general terms (every choice):

- **Which layers.**  The Conv2d layers of ``target.layers`` matching
  ``candidates`` (globs; grouped convolutions left out) are ranked by their
  own MACs per sample at the task's example input (every call summed, so a
  shared head convolution counts once per pyramid level), heaviest first.
  A layer qualifies only if its filters are read by another Conv2d / Linear
  (Torch-Pruning's dependency graph, arXiv 2301.12900): a prediction layer
  whose outputs are the model's (RetinaNet's ``retina_cls`` / ``retina_reg``)
  keeps its filters.  The slimmed set is the smallest prefix of that ranking
  holding at least ``macs_share`` of the whole model's MACs (all qualifying
  layers if they hold less).  For RetinaNet at COCO resolution that is the
  head's stacked convolutions.  If slimming the set to its floor still
  misses the target, the next layers of the ranking join one at a time (said
  in the info).
- **The unit.**  A filter of a slimmed layer with its whole dependency group:
  its bias and batch-norm entries and the input channels of every layer
  reading it, zeroed on the original architecture (the harness verifies on
  it) and held at zero through fine-tuning.  An entry shared by several
  roots' groups is zeroed only when all of them are pruned; entries in
  layers outside ``target.layers`` are left (the harness refuses new zeros
  there; they read a channel that is exactly zero anyway).
- **Importance.**  Group L1: the sum of |w| over the group's weight entries
  (Li et al., arXiv 1608.08710, over the whole group as Torch-Pruning's group
  magnitude importance does).
- **How many channels.**  Every slimmed layer keeps the same fraction p of
  its filters (ceil(p F), at least the target's per-layer floor), the paper's
  uniform narrowing of the head.  p is the largest value whose MACs meet the
  target, found by bisection; the MACs are counted as the harness counts
  them (:func:`prunebench.hardware.compute.count_macs`: per layer, kept rows
  x kept columns x positions), from the positions of one forward pass.
- Then masked fine-tuning for ``finetune_fraction`` of the budget.

Only MACs targets (``rates_of = ("macs",)``): a weight rate over all target
layers is out of reach when only a few layers may change.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from prunebench import Method
from prunebench.config import Between, Gt, Le, MinLen, Validated
from prunebench.hardware.compute import count_macs

from ._baselines import ZeroEntries, masked_finetune, steps_left_int

__all__ = ["HeadSlim", "HeadSlimConfig"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class HeadSlimConfig(Validated):
    #: the slimmed layers hold at least this share of the model's MACs (heaviest first)
    macs_share: Annotated[float, Gt(0), Le(1)] = 0.5
    #: globs on layer names the slimmed layers are drawn from (within target.layers)
    candidates: Annotated[tuple[str, ...], MinLen(1)] = ("*",)
    #: share of the steps left spent on masked fine-tuning after slimming
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0
    #: bisection steps on the kept fraction p
    search_steps: Annotated[int, Between(1, 40)] = 16


def _group_entries(tp, dg, module, names) -> list[list[tuple[str, int, int]]]:
    """Per filter of ``module``: (parameter name, dim, index) of every entry its
    dependency group removes (its own rows and bias, batch-norm entries, the
    input channels / columns of the layers reading it)."""
    out = []
    for root in range(module.weight.shape[0]):
        entries = []
        for item in dg.get_pruning_group(module, tp.prune_conv_out_channels, idxs=[root]).items:
            target = item.dep.target.module
            name = names.get(id(target))
            if name is None or not isinstance(target, (nn.Conv2d, nn.Linear, *_BN)):
                continue  # activations, reshapes, pooling: nothing to zero
            handler = getattr(item.dep.handler, "__name__", "")
            if handler == "prune_out_channels":
                params = [(f"{name}.weight", 0)] + ([(f"{name}.bias", 0)] if target.bias is not None else [])
            elif handler == "prune_in_channels" and not isinstance(target, _BN):
                params = [(f"{name}.weight", 1)]
            else:
                continue
            entries += [(p, dim, int(i)) for p, dim in params for i in item.idxs]
        out.append(sorted(set(entries)))
    return out


def _read_by_others(entries: list[tuple[str, int, int]], layer: str) -> bool:
    """Whether a filter's group reaches another layer's input (else it is a model output)."""
    return any(dim == 1 and not p.startswith(f"{layer}.") for p, dim, _ in entries)


class HeadSlim(Method):
    """Filter pruning of the heaviest layers only, channel count sized to a MACs target."""

    Config = HeadSlimConfig
    version = "1"
    structures = ("filter",)
    #: targets this method can meet: compute reductions only (prunebench.macs.rates_of)
    rates_of = ("macs",)

    def compress(self, model, target, trainer):
        import torch_pruning as tp

        cfg = self.config
        if target.rate_of != "macs":
            raise ValueError(f"head_slim meets MACs targets only (rate_of: macs), got rate_of {target.rate_of!r}")
        task = trainer.task
        modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        base = count_macs(model, task.example_input())
        budget = target.macs_budget(base.dense_macs)
        positions = {n: (d // modules[n].weight.numel() if modules[n].weight.numel() else 0)
                     for n, (d, _) in base.per_layer.items()}

        # Torch-Pruning's graph on a fresh model of the same architecture: tracing needs autograd,
        # which on the method's own model would count as training
        with torch.random.fork_rng(devices=[]):
            fresh = task.build_model()
        fresh.eval()
        dg = tp.DependencyGraph().build_dependency(fresh, example_inputs=task.example_input())
        names = {id(m): n for n, m in fresh.named_modules()}
        fresh_modules = dict(fresh.named_modules())

        ranked = sorted(
            (n for n in target.layers
             if isinstance(modules[n], nn.Conv2d) and modules[n].groups == 1
             and any(fnmatch.fnmatchcase(n, g) for g in cfg.candidates)),
            key=lambda n: (-base.per_layer[n][0], n))
        groups: dict[str, list] = {}

        def qualifies(layer: str) -> bool:
            if layer not in groups:
                groups[layer] = _group_entries(tp, dg, fresh_modules[layer], names)
            return bool(groups[layer]) and _read_by_others(groups[layer][0], layer)

        want = cfg.macs_share * base.dense_macs
        chosen, held, rest = [], 0, []
        for layer in ranked:
            if held >= want:
                rest.append(layer)
            elif qualifies(layer):
                chosen.append(layer)
                held += base.per_layer[layer][0]
        if not chosen:
            raise ValueError(f"head_slim: no Conv2d of target.layers matching {list(cfg.candidates)} has filters "
                             f"another layer reads; nothing to slim")

        excluded = {f"{n}.weight" for n, m in modules.items()
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in target.layers}
        trains = int(steps_left_int(trainer) * cfg.finetune_fraction) >= 1
        target_params = {f"{n}.weight" for n in target.layers}
        allowed = {p for p in params if p not in excluded and (trains or p in target_params)}
        scores = {}

        def plan(layers: list[str], p: float) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
            """Parameter masks (False: zeroed) and kept filters per layer at kept fraction p."""
            roots_of: dict[tuple[str, int, int], list[tuple[str, int]]] = {}
            pruned: set[tuple[str, int]] = set()
            kept = {}
            for layer in layers:
                n_filters = modules[layer].weight.shape[0]
                floor = 1 if target.layer_floor is None else max(1, math.floor(target.layer_floor * n_filters))
                k = min(n_filters, max(floor, math.ceil(p * n_filters - 1e-9)))
                kept[layer] = k
                order = torch.argsort(scores[layer], stable=True).tolist()  # lowest importance first
                pruned.update((layer, r) for r in order[: n_filters - k])
                for r, entries in enumerate(groups[layer]):
                    for e in entries:
                        roots_of.setdefault(e, []).append((layer, r))
            masks: dict[str, torch.Tensor] = {}
            for (p_name, dim, idx), roots in roots_of.items():
                if p_name not in allowed or not all(r in pruned for r in roots):
                    continue
                mask = masks.setdefault(p_name, torch.ones_like(params[p_name], dtype=torch.bool))
                mask.select(dim, idx).fill_(False)
            return masks, kept

        def macs_of(masks: dict[str, torch.Tensor]) -> int:
            """compact MACs of the model with ``masks`` applied (count_macs's rule)."""
            total = 0
            for n, (_, compact) in base.per_layer.items():
                key = f"{n}.weight"
                if key not in masks:
                    total += compact
                    continue
                w = modules[n].weight.detach()
                live = ((w != 0) & masks[key].to(w.device)).reshape(w.shape[0], -1)
                total += int(live.any(1).sum()) * int(live.any(0).sum()) * positions[n]
            return total

        def score(layer: str) -> None:
            if layer in scores:
                return
            values = torch.zeros(len(groups[layer]), dtype=torch.float64)
            for r, entries in enumerate(groups[layer]):
                for p_name, dim, idx in entries:
                    if not p_name.endswith(".bias"):
                        values[r] += float(params[p_name].detach().select(dim, idx).abs().double().sum())
            scores[layer] = values

        for layer in chosen:
            score(layer)
        joined = []
        while macs_of(plan(chosen, 0.0)[0]) > budget:  # even the floor misses: the next heaviest joins
            while rest and not qualifies(rest[0]):
                rest.pop(0)
            if not rest:
                best = base.dense_macs / max(macs_of(plan(chosen, 0.0)[0]), 1)
                raise ValueError(f"head_slim: {target.rate:g}x MACs is out of reach by slimming "
                                 f"{len(chosen)} layers to their floor (at most {best:.3g}x)")
            layer = rest.pop(0)
            score(layer)
            chosen.append(layer)
            joined.append(layer)

        # the largest kept fraction whose MACs meet the budget (MACs fall as p falls)
        lo, hi = 0.0, 1.0
        if macs_of(plan(chosen, 1.0)[0]) <= budget:
            lo = 1.0
        else:
            for _ in range(cfg.search_steps):
                mid = (lo + hi) / 2
                if macs_of(plan(chosen, mid)[0]) <= budget:
                    lo = mid
                else:
                    hi = mid
        masks, kept = plan(chosen, lo)
        planned = macs_of(masks)

        layer_masks = {n: masks.pop(f"{n}.weight") for n in target.layers if f"{n}.weight" in masks}
        with torch.no_grad():
            for p_name, m in masks.items():
                params[p_name].mul_(m.to(params[p_name].device, params[p_name].dtype))
        info = {
            "slimmed_layers": chosen,
            "slimmed_macs_share": sum(base.per_layer[n][0] for n in chosen) / base.dense_macs,
            "joined_to_meet_target": joined,
            "kept_fraction": lo,
            "kept_filters": kept,
            "dense_macs": base.dense_macs,
            "planned_macs": planned,
            "planned_macs_reduction_x": base.dense_macs / planned if planned else math.inf,
        }
        extra = ZeroEntries(masks) if masks else None
        info.update(masked_finetune(model, trainer, layer_masks, cfg.finetune_fraction, extra=extra))
        return info
