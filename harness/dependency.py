"""Whole-model, dependency-aware accounting: what a structured removal really removes.

A filter whose weights are all zero leaves its output channel constant (its
bias), so the next layer's weights reading that channel (and, through a
flatten, the fully-connected columns it feeds) do no useful work; likewise a
channel that no consumer reads any more makes its producing filter useless.
Counting only the zeros a method wrote misses both.

:func:`effective_model` finds these units with Torch-Pruning's dependency
graph (``DependencyGraph.get_pruning_group``: the producer's output unit with
every consumer's input indices, batch norms included) and zeroes them in a
copy of the model: the producer's row and bias, the consumers' columns and
the batch-norm entries of the channel, repeated until nothing more dies.  A
unit is removable only if some Conv/Linear consumes it (a classifier's rows
are the model's outputs and stay as they are).  Zeroing a dead filter's bias
changes the next layer's input by a constant; the effective model is
evaluated, so the accuracy reported is the one of the model the structure
describes, not of the one before.

The counts cover every Conv2d/Linear weight of the model, whatever the suite
selected as compressible: ``total_weights``, ``nonzero_weights`` (the
method's zeros) and ``effective_nonzero_weights`` (after the removals above).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["EffectiveCount", "effective_model", "count_weights", "weight_layers"]


def weight_layers(model: nn.Module) -> list[str]:
    """Every Conv2d and Linear of the model, by name (the whole-model count)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def count_weights(model: nn.Module, names: list[str] | None = None) -> tuple[int, int]:
    """(total, nonzero) weights over ``names`` (default: every Conv2d/Linear)."""
    modules = dict(model.named_modules())
    total = nonzero = 0
    for n in names if names is not None else weight_layers(model):
        w = modules[n].weight.detach()
        total += w.numel()
        nonzero += int((w != 0).sum())
    return total, nonzero


@dataclass
class EffectiveCount:
    total_weights: int
    nonzero_weights: int
    effective_nonzero_weights: int
    #: removed output units per producing layer (its filters / rows)
    dead_units: dict[str, int] = field(default_factory=dict)
    #: weights zeroed by the dependency rules (not by the method)
    weights_removed: int = 0

    @property
    def rate(self) -> float:
        return self.total_weights / max(self.nonzero_weights, 1)

    @property
    def effective_rate(self) -> float:
        return self.total_weights / max(self.effective_nonzero_weights, 1)

    def as_dict(self) -> dict:
        return {"total_weights": self.total_weights, "nonzero_weights": self.nonzero_weights,
                "effective_nonzero_weights": self.effective_nonzero_weights, "rate": self.rate,
                "effective_rate": self.effective_rate, "dead_units": dict(sorted(self.dead_units.items())),
                "weights_removed_by_dependency": self.weights_removed}


def _is_in_handler(handler) -> bool:
    return getattr(handler, "__name__", "") == "prune_in_channels"


def _zero_rows(module: nn.Module, idxs) -> None:
    """Output unit(s) of a Conv/Linear or channel(s) of a norm layer: weights and bias zeroed."""
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight[idxs] = 0
        if getattr(module, "bias", None) is not None:
            module.bias[idxs] = 0


def _zero_columns(module: nn.Module, idxs) -> None:
    with torch.no_grad():
        module.weight[:, idxs] = 0


#: per architecture (model class, parameter names and shapes): every producer unit's
#: consumers and norm channels, so the graph is traced once, not once per run
_PLANS: dict[tuple, dict[str, list[tuple[list, list]]]] = {}


def _architecture(model: nn.Module) -> tuple:
    return (type(model).__qualname__, tuple((n, tuple(p.shape)) for n, p in model.state_dict().items()))


def _plan(model: nn.Module, example_input: torch.Tensor) -> dict[str, list[tuple[list, list]]]:
    """For each Conv/Linear, per output unit: ([(consumer, input idxs)], [(norm, idxs)])."""
    key = _architecture(model)
    if key in _PLANS:
        return _PLANS[key]
    import torch_pruning as tp

    traced = copy.deepcopy(model)
    modules = dict(traced.named_modules())
    name_of = {id(m): n for n, m in modules.items()}
    with torch.enable_grad():  # the graph is traced through autograd
        graph = tp.DependencyGraph().build_dependency(traced, example_inputs=example_input)
    plan = {}
    for name in weight_layers(traced):
        layer = modules[name]
        handler = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        units = []
        for unit in range(layer.weight.shape[0]):
            consumers, norms = [], []
            for dep, idxs in graph.get_pruning_group(layer, handler, idxs=[unit]):
                target = dep.target.module
                if target is layer and not _is_in_handler(dep.handler):
                    continue
                if _is_in_handler(dep.handler) and isinstance(target, (nn.Conv2d, nn.Linear)):
                    consumers.append((name_of[id(target)], list(idxs)))
                elif isinstance(target, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                    norms.append((name_of[id(target)], list(idxs)))
            units.append((consumers, norms))
        plan[name] = units
    _PLANS[key] = plan
    return plan


def effective_model(model: nn.Module, example_input: torch.Tensor, *, max_rounds: int = 10
                    ) -> tuple[nn.Module, EffectiveCount]:
    """A copy of ``model`` with the dependency-dead units zeroed, and the counts."""
    eff = copy.deepcopy(model).eval()
    names = weight_layers(eff)
    modules = dict(eff.named_modules())
    total, nonzero = count_weights(eff, names)
    plan = _plan(eff, example_input)
    dead: dict[str, set[int]] = {n: set() for n in names}
    for _ in range(max_rounds):
        changed = False
        for name in names:
            layer = modules[name]
            w = layer.weight.detach()
            rows_zero = (w.reshape(w.shape[0], -1) == 0).all(dim=1)
            for unit, (consumers, norms) in enumerate(plan[name]):
                if unit in dead[name] or not consumers:
                    continue  # no consumer: a model output, nothing downstream to credit
                unread = all(bool((modules[c].weight.detach()[:, idxs] == 0).all()) for c, idxs in consumers)
                if not (bool(rows_zero[unit]) or unread):
                    continue
                dead[name].add(unit)
                changed = True
                _zero_rows(layer, [unit])
                for c, idxs in consumers:
                    _zero_columns(modules[c], idxs)
                for norm, idxs in norms:  # the channel's shift would survive the removal otherwise
                    _zero_rows(modules[norm], idxs)
        if not changed:
            break
    _, effective = count_weights(eff, names)
    count = EffectiveCount(total, nonzero, effective, {n: len(d) for n, d in dead.items() if d}, nonzero - effective)
    return eff, count
