"""Dependency-aware structured pruning on Torch-Pruning's DependencyGraph,
with L1-norm (``tp_l1``) or first-order Taylor (``tp_taylor``) importance.

Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning",
arXiv 2301.12900) groups the parameters that must go together when one
channel is removed: a convolution's filter with its bias, the batch-norm
entries of that channel and the input channels (or, after a flatten, the
input columns) of every layer that reads it.  This method uses that graph,
and reads it as follows (every choice):

- **Zeroing, not removing.**  The harness verifies masks on the original
  architecture, so a pruned group is zeroed, not cut out: the filter's
  weights and bias, the batch-norm scale and shift, and the dependent input
  channels / columns of the next layers, all held at zero through the
  fine-tuning.  Two exceptions, both forced by the harness's rules and both
  without effect on the function the network computes: the weights of a
  dependent layer *outside* ``target.layers`` are not zeroed (the harness
  refuses new zeros there; the columns they would lose read an output that
  is exactly zero anyway), and with no training budget only the target
  layers' weights are changed (the harness refuses other changes without
  training).
- **The unit.**  ``filter``: output channel f of a target layer (the root;
  Torch-Pruning's ``prune_conv_out_channels`` / ``prune_linear_out_channels``
  group).  ``channel``: input channel c of a target layer (the
  ``prune_*_in_channels`` group, which reaches back to the producing filter).
  Torch-Pruning widens a unit to its minimal removable group: under
  ``channel`` a linear layer's input column after a flatten brings the
  producing conv filter and all 36 (say) columns that filter feeds, so those
  columns score alike and go together.  An entry of several units' groups
  is zeroed only when all those units are pruned (a block of columns cut at
  the budget's edge keeps its filter; the pruned columns themselves are
  still zero, being the structure's own groups).
- **The budget.**  The target's rate is met on the harness's own count:
  the groups of the target structure in the target layers
  (:func:`prunebench.projections.project_masks` with one score per group and
  the target's per-layer floor).  Coupled zeros elsewhere come on top.
- **Importance.**  A unit's score sums over every parameter entry of its
  dependency group (conv / linear weight slices on both sides, batch-norm
  scales): ``l1`` the sum of |w| (Li et al., arXiv 1608.08710, extended to
  the whole group as Torch-Pruning's group magnitude importance does);
  ``taylor`` the sum of |w * dL/dw|, accumulated over the first
  ``taylor_fraction`` of the budget's SGD steps (the elementwise first-order
  Taylor estimate of Molchanov et al., arXiv 1906.10771, in the
  "sum over the group" form Torch-Pruning uses; gradients come only from the
  counted ``trainer.fit`` steps, since any other backward pass would be
  training the harness refuses).  With too little budget for one step,
  ``taylor`` falls back to ``l1`` and says so in the info dict.
- **Allocation.**  ``uniform`` (default; Torch-Pruning's default
  ``global_pruning=False``): every layer loses the same fraction of its
  units.  ``global``: one ranking, each layer's scores divided by their
  mean first (Torch-Pruning's ``mean`` normaliser), so layers of different
  sizes compare.
- **Against the harness's own accounting.**  After any method the harness
  builds the effective model (:mod:`prunebench.dependency`: dead filters'
  biases and readers zeroed) and evaluates that.  A method that zeroes only
  a filter's weights is evaluated with its bias removed afterwards, a change
  it never trained for; here the whole group is zero throughout the
  fine-tuning, so the model fine-tuned is the model evaluated.  What the
  method adds beyond that accounting is the choice: units ranked by their
  whole group's importance.
- Then masked fine-tuning for the rest of the budget (all of it for
  ``tp_l1``).  Grouped / depthwise convolutions and normalisation layers
  other than batch norm are not handled (LeNet / ResNet-style models are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from prunebench import Callback, Method
from prunebench.config import Between, Validated
from prunebench.projections import Allocation, project_masks

from ._baselines import ZeroEntries, apply_masks_, masked_finetune, steps_left_int, target_weights

__all__ = ["TPL1", "TPTaylor", "TPL1Config", "TPTaylorConfig", "dependency_entries"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class TPL1Config(Validated):
    allocation: Allocation = "uniform"
    #: share of the steps left spent on masked fine-tuning after pruning
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0


@dataclass(frozen=True)
class TPTaylorConfig(TPL1Config):
    #: share of the budget's steps (dense SGD) over which |w * grad| is accumulated
    taylor_fraction: Annotated[float, Between(0, 1)] = 0.1


def _dependency_graph(trainer):
    """Torch-Pruning's graph, traced on a freshly built copy of the task's model.

    The trace needs autograd; on the method's own model a forward pass with
    grad enabled would count as training, so a fresh model of the same
    architecture (same module names) is traced instead, its RNG use isolated."""
    import torch_pruning as tp

    task = trainer.task
    with torch.random.fork_rng(devices=[]):
        fresh = task.build_model()
    fresh.eval()
    example = task.example_input()
    dg = tp.DependencyGraph().build_dependency(fresh, example_inputs=example)
    return tp, dg, fresh


def dependency_entries(trainer, layers, kind: str) -> dict[str, list[tuple[str, int, int, int]]]:
    """For each target layer: the parameter entries of every root unit's
    dependency group, as (parameter name, dim, index, root index).

    One ``get_pruning_group`` per root unit: Torch-Pruning widens a unit to
    its minimal removable group (a linear layer's input column after a
    flatten brings the producing filter and all that filter's columns), so
    units of one coupled group list the same entries."""
    tp, dg, fresh = _dependency_graph(trainer)
    names = {id(m): n for n, m in fresh.named_modules()}
    modules = dict(fresh.named_modules())
    out: dict[str, list[tuple[str, int, int, int]]] = {}
    for layer in layers:
        m = modules[layer]
        if isinstance(m, nn.Conv2d):
            fn = tp.prune_conv_out_channels if kind == "filter" else tp.prune_conv_in_channels
        elif isinstance(m, nn.Linear):
            fn = tp.prune_linear_out_channels if kind == "filter" else tp.prune_linear_in_channels
        else:
            raise TypeError(f"tp: layer {layer} is a {type(m).__name__}; only Conv2d and Linear layers are handled")
        n_units = m.weight.shape[0 if kind == "filter" else 1]
        entries: set[tuple[str, int, int, int]] = set()
        for root in range(n_units):
            for item in dg.get_pruning_group(m, fn, idxs=[root]).items:
                dep, idxs = item.dep, item.idxs
                mod = dep.target.module
                name = names.get(id(mod))
                if name is None or not isinstance(mod, (nn.Conv2d, nn.Linear, *_BN)):
                    continue  # reshapes, activations, pooling: no parameters
                handler = getattr(dep.handler, "__name__", "")
                if handler == "prune_out_channels":
                    params = [(f"{name}.weight", 0)] + ([(f"{name}.bias", 0)] if mod.bias is not None else [])
                elif handler == "prune_in_channels" and not isinstance(mod, _BN):
                    params = [(f"{name}.weight", 1)]
                else:
                    continue
                entries.update((p, dim, int(i), root) for p, dim in params for i in idxs)
        out[layer] = sorted(entries)
    return out


class _AccumulateTaylor(Callback):
    """Sums |w * grad| of the named parameters over the steps of one fit."""

    def __init__(self, names):
        self.names = set(names)
        self.sums: dict[str, torch.Tensor] = {}

    def after_backward(self, trainer):
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                if n in self.names and p.grad is not None:
                    v = (p.detach() * p.grad).abs()
                    self.sums[n] = self.sums[n] + v if n in self.sums else v.clone()


def _unit_scores(entries, n_units: int, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Score of each root unit: the sum of its group's entry values (biases not scored)."""
    scores = torch.zeros(n_units, dtype=torch.float64)
    for p, dim, idx, root in entries:
        if p.endswith(".bias") or p not in values:
            continue
        scores[root] += float(values[p].select(dim, idx).double().sum())
    return scores


class _TPBase(Method):
    structures = ("filter", "channel")
    importance = "l1"

    def compress(self, model, target, trainer):
        cfg = self.config
        kind = target.structure.kind
        info: dict = {"importance": self.importance}
        params = dict(model.named_parameters())
        entries = dependency_entries(trainer, target.layers, kind)

        importance = self.importance
        values = {n: p.detach().abs() for n, p in params.items()}
        if importance == "taylor":
            steps = int(steps_left_int(trainer) * cfg.taylor_fraction)
            if steps >= 1:
                names = {p for es in entries.values() for p, *_ in es}
                acc = _AccumulateTaylor(names)
                trainer.fit(steps=steps, callbacks=[acc])
                values = {n: acc.sums.get(n, torch.zeros_like(params[n])) for n in names}
                info["taylor_steps"] = steps
            else:
                importance = "l1"
                info["importance"] = "l1 (taylor fallback: no budget for a gradient step)"

        weights = target_weights(model, target)
        scores = {}
        for layer, w in weights.items():
            n_units = w.shape[0 if kind == "filter" else 1]
            s = _unit_scores(entries[layer], n_units, values)
            if cfg.allocation == "global":
                s = s / s.mean().clamp_min(1e-30)
            scores[layer] = s
        keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
        root_masks = project_masks(weights, target.structure, keep, allocation=cfg.allocation, scores=scores,
                                   floor=target.layer_floor)
        pruned_roots = {}
        for layer, w in weights.items():
            alive = root_masks[layer].reshape(w.shape[0], -1).any(1) if kind == "filter" else \
                root_masks[layer].transpose(0, 1).reshape(w.shape[1], -1).any(1)
            pruned_roots[layer] = set(torch.nonzero(~alive.cpu()).flatten().tolist())

        # an entry is zeroed when every root it depends on (in any target layer) is pruned
        roots_of: dict[tuple[str, int, int], set[tuple[str, int]]] = {}
        for layer, es in entries.items():
            for p, dim, idx, root in es:
                roots_of.setdefault((p, dim, idx), set()).add((layer, root))
        trains = "taylor_steps" in info or int(steps_left_int(trainer) * cfg.finetune_fraction) >= 1
        target_params = {f"{n}.weight" for n in target.layers}
        excluded = {f"{n}.weight" for n, m in model.named_modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in target.layers}
        param_masks: dict[str, torch.Tensor] = {}
        zeroed = 0
        for (p, dim, idx), roots in roots_of.items():
            if not all(r in pruned_roots[layer] for layer, r in roots):
                continue
            if p in excluded or (not trains and p not in target_params):
                continue
            mask = param_masks.setdefault(p, torch.ones_like(params[p], dtype=torch.bool))
            mask.select(dim, idx).fill_(False)
            zeroed += 1
        # the target layers' masks: the structure's selection, then the coupled zeros
        masks = {}
        for layer, w in weights.items():
            m = root_masks[layer].clone()
            own = param_masks.pop(f"{layer}.weight", None)
            masks[layer] = m & own.to(m.device) if own is not None else m
        with torch.no_grad():
            for p, m in param_masks.items():
                params[p].mul_(m.to(params[p].dtype))
        apply_masks_(model, masks)
        info.update({
            "pruned_units": {n: len(v) for n, v in pruned_roots.items()},
            "zeroed_entries": zeroed,
            "coupled_params": sorted(param_masks),
        })
        extra = ZeroEntries(param_masks) if param_masks else None
        info.update(masked_finetune(model, trainer, masks, cfg.finetune_fraction, extra=extra))
        return info


class TPL1(_TPBase):
    """Dependency-aware filter / channel pruning, group L1 importance, then masked fine-tuning."""

    Config = TPL1Config
    version = "1"
    importance = "l1"


class TPTaylor(_TPBase):
    """Dependency-aware filter / channel pruning, group first-order Taylor importance."""

    Config = TPTaylorConfig
    version = "1"
    importance = "taylor"

