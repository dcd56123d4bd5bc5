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

import contextlib
import contextvars
import copy
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch
from torch import nn

__all__ = ["EffectiveCount", "EffectiveCounter", "counting_effective", "current_counter", "effective_model",
           "count_weights", "weight_layers"]


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
    #: output units of every layer whose units feed a consumer (the layers a unit can die in)
    units: dict[str, int] = field(default_factory=dict)

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
                "weights_removed_by_dependency": self.weights_removed, "units": dict(sorted(self.units.items()))}


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
    units = {n: modules[n].weight.shape[0] for n in names if any(consumers for consumers, _ in plan[n])}
    count = EffectiveCount(total, nonzero, effective, {n: len(d) for n, d in dead.items() if d}, nonzero - effective,
                           units)
    return eff, count


class EffectiveCounter:
    """Weights left alive by proposed bool masks once the dependency rules of
    :func:`effective_model` have run, without copying or changing a model.

    Built once per model (the traced plan is cached per architecture); called
    with masks for some of its Conv/Linear layers (by module name), the other
    layers count as their weights' nonzero pattern at construction.  A unit
    dies when its row is fully masked or no consumer reads it, and its
    consumers' columns die with it, repeated until nothing changes.  The
    group engine (:func:`prunebench.projections.project_masks`) uses it to
    meet a structured target on this count, and verification to check it.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, *, max_rounds: int = 10):
        self.plan = _plan(model, example_input)
        modules = dict(model.named_modules())
        self.names = weight_layers(model)
        self.base = {n: (modules[n].weight.detach() != 0).cpu() for n in self.names}
        self.max_rounds = max_rounds

    def accepts(self, masks: Mapping[str, torch.Tensor]) -> bool:
        """Whether every mask names a layer of the model and has its weight's shape."""
        return all(n in self.base and tuple(m.shape) == tuple(self.base[n].shape) for n, m in masks.items())

    def live(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every layer's mask after the dependency rules."""
        if not self.accepts(masks):
            raise ValueError(f"masks must name layers of the model with their weights' shapes; "
                             f"got {({n: tuple(m.shape) for n, m in masks.items()})}")
        live = {n: (masks[n].detach().to("cpu", torch.bool) if n in masks else self.base[n]).clone()
                for n in self.names}
        dead: dict[str, set[int]] = {n: set() for n in self.names}
        for _ in range(self.max_rounds):
            changed = False
            for name in self.names:
                m = live[name]
                rows_dead = ~m.reshape(m.shape[0], -1).any(dim=1)
                for unit, (consumers, _norms) in enumerate(self.plan[name]):
                    if unit in dead[name] or not consumers:
                        continue
                    if not (bool(rows_dead[unit]) or not any(bool(live[c][:, idxs].any()) for c, idxs in consumers)):
                        continue
                    dead[name].add(unit)
                    changed = True
                    m[unit] = False
                    for c, idxs in consumers:
                        live[c][:, idxs] = False
            if not changed:
                break
        return live

    def per_layer(self, masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Live weights of each layer named in ``masks``."""
        live = self.live(masks)
        return {n: int(live[n].sum()) for n in masks}

    def __call__(self, masks: Mapping[str, torch.Tensor]) -> int:
        """Live weights over the layers named in ``masks``."""
        return sum(self.per_layer(masks).values())


_COUNTER: contextvars.ContextVar[EffectiveCounter | None] = contextvars.ContextVar("prunebench_counter", default=None)


@contextlib.contextmanager
def counting_effective(counter: EffectiveCounter | None) -> Iterator[None]:
    """Within the block, :func:`prunebench.projections.project_masks` meets
    structured budgets on ``counter``'s count (the harness sets it around
    every method's ``compress``, so every method using the engine gets it)."""
    token = _COUNTER.set(counter)
    try:
        yield
    finally:
        _COUNTER.reset(token)


def current_counter() -> EffectiveCounter | None:
    return _COUNTER.get()
