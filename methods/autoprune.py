"""AutoPrune: pruning by regularising auxiliary parameters.

Xiao, Wang, Rajasekaran, "AutoPrune: Automatic Network Pruning by
Regularizing Auxiliary Parameters", NeurIPS 2019 (Advances in Neural
Information Processing Systems 32), proceedings.neurips.cc/paper/2019/hash/
4efc9e02abdab6b6166251918570a307-Abstract.html.  No arXiv id and no public
code are known; this is our reading of the method.

Mechanism.  Every group of a target layer gets a trainable auxiliary
parameter M; the layer computes with the effective weight T = W * h(M),
h(m) = 1[m > 0].  Groups: one M per weight (``unstructured``), per output
channel / neuron (``filter``) or per input channel (``channel``), so the
gates are exactly the harness's groups.  Gradients (a custom autograd rule
inside a ``torch.nn.utils.parametrize`` parametrization of ``weight``):

    dL/dW = dL/dT * h(M)
    dL/dM = sum over the group of dL/dT * sgn(W) * h~'(M)

(the paper's modified rule: sgn(W) instead of W, so the gate's update does
not scale with the weight's magnitude).  M is trained by its own optimizer
(Adam or SGD, ``m_lr``), stepped from a trainer callback; W by the trainer's
SGD.  Gated-off groups keep receiving the straight-through gradient, so a
pruned group comes back when the loss wants it (recoverable pruning).

After the auxiliary phase the parametrizations are removed (the model is a
plain model again), and a hard threshold meets the target exactly: groups
are ranked by M and the top ones kept within the budget; then an optional
masked fine-tune (``retrain_share`` of the budget).  Prune-only: the
harness's standard quantizer runs afterwards.

Budget: floor(steps * ``retrain_share``) whole steps for the fine-tune, the
rest for the auxiliary phase (weights and gates trained together).

Choices (where the paper is ambiguous or unavailable to us, or where a
fixed-rate benchmark needs something the paper does not have):

- Surrogate h~'(m) = 1 (identity straight-through).  A clipped surrogate
  1[|m| <= c] would freeze gates that sink below -c for good, breaking
  recoverability; instead M itself is clamped to [-m_clip, m_clip] after
  every step, which bounds how far a gate can sink (and rise).
- Regulariser R(M) = sum_g n_g * max(M_g, 0), n_g the group's weight count:
  a continuous proxy of the number of kept weights.  It pushes only open
  gates down (gradient lambda * n_g where M > 0, 0 elsewhere), so a closed
  gate is moved by the task gradient alone.
- ``stop_at_budget`` (our addition, default on): the regulariser is applied
  only while more weights are open than the target allows, so the gated
  model approaches the target rate instead of a sparsity set by lambda.
- Initialisation ``magnitude``: M_g = (group RMS of W) / (layer mean of
  that RMS), floored at 1e-3 and clamped to m_clip: every gate starts open
  (all weights kept) and the initial order is magnitude order.
  ``constant``: M = 1.
- ``m_lr=None`` (Adam only): m_clip / (auxiliary steps), at most 0.02, so
  a gate pushed by the regulariser alone (Adam steps ~ m_lr) can cross
  [0, m_clip] within the phase, and never flips on a single noisy batch.
  SGD needs an explicit m_lr (its steps scale with lambda * n_g).
- M gets no weight decay or momentum from the trainer (it is not in the
  trainer's optimizer); the raw W of a closed gate gets no task gradient but
  still the trainer's weight decay.
- Hard threshold: ``global`` ranks all groups of all layers by M (ties: the
  larger group RMS of W, then the lower index) and keeps the longest prefix
  within the budget; ``uniform`` gives each layer floor(keep * n_layer /
  n_total) weights.  Unstructured targets keep exactly the budget.  A kept
  group whose gate was closed gets its raw W back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench import Callback, KeepMasked, Method
from prunebench.config import ConfigError, Ge, Lt, NonNegativeFloat, PositiveFloat, Validated
from prunebench.projections import Allocation, group_view, groups_to_mask, meet_on_live_count

__all__ = ["AutoPrune", "AutoPruneConfig"]

KINDS = ("unstructured", "filter", "channel")
#: most the derived Adam rate of M: a gate then needs >= 50 steps to travel its mean start value 1,
#: so short budgets do not flip gates on single noisy batches
M_LR_CAP = 0.02


@dataclass(frozen=True)
class AutoPruneConfig(Validated):
    #: lambda of the regulariser lambda * sum_g n_g max(M_g, 0)
    reg_lambda: NonNegativeFloat = 1e-3
    #: apply the regulariser only while more weights are open than the budget
    stop_at_budget: bool = True
    m_optimizer: Literal["adam", "sgd"] = "adam"
    #: learning rate of M; None derives it (Adam only, see the module docstring)
    m_lr: PositiveFloat | None = None
    #: "magnitude" (M from the group RMS of W, all open) or "constant" (M = 1)
    m_init: Literal["magnitude", "constant"] = "magnitude"
    #: M is clamped to [-m_clip, m_clip]
    m_clip: PositiveFloat = 4.0
    #: fraction of the budget for the masked fine-tune after the hard threshold (0 disables it)
    retrain_share: Annotated[float, Ge(0), Lt(1)] = 0.2
    allocation: Allocation = "global"

    def __post_init__(self):
        super().__post_init__()
        if self.m_optimizer == "sgd" and self.m_lr is None:
            raise ConfigError("m_lr", "expected a number > 0 when m_optimizer is 'sgd', got None")


class _GatedWeight(torch.autograd.Function):
    """T = W * 1[M > 0] with AutoPrune's straight-through rule for M."""

    @staticmethod
    def forward(ctx, w, m):
        gate = (m > 0).to(w.dtype)
        ctx.save_for_backward(w, gate)
        ctx.m_shape, ctx.m_dtype = m.shape, m.dtype
        return w * gate

    @staticmethod
    def backward(ctx, grad):
        w, gate = ctx.saved_tensors
        grad_w = grad * gate
        # identity surrogate h~' = 1; sgn(W) instead of W (the paper's modified rule)
        grad_m = (grad * torch.sign(w)).sum_to_size(ctx.m_shape).to(ctx.m_dtype)
        return grad_w, grad_m


class _Gate(nn.Module):
    """The parametrization of ``weight``: holds M (one value per group)."""

    def __init__(self, m: torch.Tensor, view: tuple[int, ...]):
        super().__init__()
        self.m = nn.Parameter(m)
        self.view = view

    def forward(self, w):
        return _GatedWeight.apply(w, self.m.view(self.view))


def _gate_view(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "unstructured":
        return shape
    if kind == "filter":
        return (shape[0],) + (1,) * (len(shape) - 1)
    return (1, shape[1]) + (1,) * (len(shape) - 2)  # channel


def _group_rms(w: torch.Tensor, kind: str) -> torch.Tensor:
    g = group_view(w.detach().float(), kind)
    return g.norm(dim=1) / math.sqrt(g.shape[1])


class _Gates:
    """Installs, tracks and removes the gates of the target layers."""

    def __init__(self, modules: dict[str, nn.Module], kind: str, init: str, clip: float):
        if kind not in KINDS:
            raise ValueError(f"autoprune supports {', '.join(KINDS)}, got structure {kind!r}")
        self.modules, self.kind, self.clip = modules, kind, clip
        self.m: dict[str, nn.Parameter] = {}
        self.size: dict[str, int] = {}
        self.shape: dict[str, tuple[int, ...]] = {}
        self.order = {n: list(mod._parameters) for n, mod in modules.items()}
        for name, mod in modules.items():
            w = mod.weight.detach()
            rms = _group_rms(w, kind)
            if init == "magnitude":
                m0 = (rms / rms.mean().clamp_min(1e-12)).clamp(1e-3, clip)
            else:
                m0 = torch.ones_like(rms)
            view = _gate_view(tuple(w.shape), kind)
            m0 = m0.reshape(w.shape) if kind == "unstructured" else m0
            gate = _Gate(m0.to(w.device), view)
            parametrize.register_parametrization(mod, "weight", gate)
            self.m[name] = gate.m
            self.size[name] = group_view(w, kind).shape[1]
            self.shape[name] = tuple(w.shape)

    def params(self) -> list[nn.Parameter]:
        return list(self.m.values())

    def raw_weight(self, name: str) -> torch.Tensor:
        return self.modules[name].parametrizations.weight.original

    def open_weights(self) -> int:
        return int(self.open_tensor())

    def open_tensor(self) -> torch.Tensor:
        """Open weights as a 0-d tensor (no host sync per step)."""
        return sum((m.detach() > 0).sum() * self.size[n] for n, m in self.m.items())

    def remove(self) -> None:
        for name, mod in self.modules.items():
            if parametrize.is_parametrized(mod, "weight"):
                parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
                # removal re-registers weight last; restore the parameter (state_dict) order
                for key in self.order[name]:
                    mod._parameters[key] = mod._parameters.pop(key)


class _GateTraining(Callback):
    """Regulariser gradient, M's own optimizer step, clamping and a trace."""

    def __init__(self, gates: _Gates, optimizer: torch.optim.Optimizer, reg_lambda: float,
                 keep: int | None):
        self.gates, self.opt, self.reg_lambda, self.keep = gates, optimizer, reg_lambda, keep
        self.prev_open = {n: (m > 0).detach().clone() for n, m in gates.m.items()}
        # counters stay on the device; read once per epoch
        self._reopened = self._closed = self._reg_steps = 0
        self._steps = 0
        self.trace: list[dict] = []

    @property
    def reopened(self) -> int:
        return int(self._reopened)

    @property
    def closed(self) -> int:
        return int(self._closed)

    @torch.no_grad()
    def after_backward(self, trainer):
        if self.reg_lambda > 0:
            # 1.0 while more weights are open than the budget (always without one)
            active = (torch.ones(()) if self.keep is None else (self.gates.open_tensor() > self.keep)).float()
            self._reg_steps = self._reg_steps + active
        self._steps += 1
        for name, m in self.gates.m.items():
            if m.grad is None:
                m.grad = torch.zeros_like(m)
            if self.reg_lambda > 0:
                push = (m > 0).to(m.dtype) * active.to(m.device, m.dtype)
                m.grad.add_(push, alpha=self.reg_lambda * self.gates.size[name])

    @torch.no_grad()
    def after_step(self, trainer):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for name, m in self.gates.m.items():
            m.clamp_(-self.gates.clip, self.gates.clip)
            now = m > 0
            self._reopened = self._reopened + (now & ~self.prev_open[name]).sum()
            self._closed = self._closed + (~now & self.prev_open[name]).sum()
            self.prev_open[name] = now

    def after_epoch(self, trainer, epoch, mean_loss):
        total = sum(math.prod(s) for s in self.gates.shape.values())
        self.trace.append({
            "epoch": len(self.trace), "loss": mean_loss,
            "open_fraction": self.gates.open_weights() / total,
            "reg_active_fraction": float(self._reg_steps) / max(self._steps, 1),
            "closed_events": self.closed, "reopened_events": self.reopened,
        })
        self._reg_steps, self._steps = 0, 0


def _select(scores: dict[str, torch.Tensor], tiebreak: dict[str, torch.Tensor], size: dict[str, int],
            keep: int, allocation: str, floor: float | None = None) -> dict[str, torch.Tensor]:
    """Boolean keep vector per layer: highest score first (ties: larger tiebreak,
    then lower index), the longest prefix within ``keep`` weights; then each
    layer's floor (the harness's rule, prunebench.projections: its best
    max(1, floor(min(floor, keep/total) x groups)) groups), paid for by the
    lowest-ranked groups above their layers' floors."""
    chosen = _select_prefix(scores, tiebreak, size, keep, allocation)
    if floor is None:
        return chosen
    names = list(scores)
    flat = {n: scores[n].detach().flatten().float().cpu() for n in names}
    tb = {n: tiebreak[n].detach().flatten().float().cpu() for n in names}

    def ranked(n):  # best first: score, then tiebreak, then index
        order = torch.argsort(tb[n], descending=True, stable=True)
        return order[torch.argsort(flat[n][order], descending=True, stable=True)].tolist()

    order = {n: ranked(n) for n in names}
    total = sum(flat[n].numel() * size[n] for n in names)
    frac = min(floor, keep / total) if total else 0.0
    forced = {n: set(order[n][:max(1, int(frac * flat[n].numel()))]) for n in names}
    if sum(len(f) * size[n] for n, f in forced.items()) > keep:
        forced = {n: {order[n][0]} for n in names}
        if sum(size[n] for n in names) > keep:
            return chosen  # not even one group per layer fits: verification names the collapse
    kept = {n: set(torch.nonzero(chosen[n]).flatten().tolist()) | forced[n] for n in names}
    used = sum(len(k) * size[n] for n, k in kept.items())
    # drop the weakest groups that are not a floor group, weakest by score across layers
    spare = sorted(((flat[n][g].item(), tb[n][g].item(), -i, n, g) for n in names
                    for i, g in enumerate(order[n]) if g in kept[n] and g not in forced[n]))
    for _, _, _, n, g in spare:
        if used <= keep:
            break
        kept[n].discard(g)
        used -= size[n]
    out = {}
    for n in names:
        mask = torch.zeros(flat[n].numel(), dtype=torch.bool)
        mask[list(kept[n])] = True
        out[n] = mask
    return out


def _select_prefix(scores: dict[str, torch.Tensor], tiebreak: dict[str, torch.Tensor], size: dict[str, int],
                   keep: int, allocation: str) -> dict[str, torch.Tensor]:
    """Highest score first (ties: larger tiebreak, then lower index), the longest prefix within ``keep``."""

    def prefix(sc: torch.Tensor, tb: torch.Tensor, sz: torch.Tensor, budget: int) -> torch.Tensor:
        order = torch.argsort(tb, descending=True, stable=True)
        order = order[torch.argsort(sc[order], descending=True, stable=True)]
        out = torch.zeros(sc.numel(), dtype=torch.bool)
        out[order[torch.cumsum(sz[order], 0) <= budget]] = True
        return out

    names = list(scores)
    flat = {n: scores[n].detach().flatten().float().cpu() for n in names}
    tb = {n: tiebreak[n].detach().flatten().float().cpu() for n in names}
    sz = {n: torch.full((flat[n].numel(),), size[n], dtype=torch.long) for n in names}
    if allocation == "uniform":
        total = sum(flat[n].numel() * size[n] for n in names)
        return {n: prefix(flat[n], tb[n], sz[n], keep * flat[n].numel() * size[n] // total) for n in names}
    chosen = prefix(torch.cat([flat[n] for n in names]), torch.cat([tb[n] for n in names]),
                    torch.cat([sz[n] for n in names]), keep)
    return dict(zip(names, chosen.split([flat[n].numel() for n in names])))


class AutoPrune(Method):
    """AutoPrune (Xiao et al., NeurIPS 2019): gates trained by auxiliary parameters, prune-only."""

    Config = AutoPruneConfig
    version = "2"
    structures = KINDS
    quantizes = False

    def compress(self, model, target, trainer):
        cfg = self.config
        kind = target.structure.kind
        if kind not in KINDS:
            raise ValueError(f"autoprune supports {', '.join(KINDS)}, got structure {target.structure}")
        if not math.isfinite(trainer.epochs_left):
            raise ValueError("autoprune needs a finite epoch budget (trainer.budget_epochs), got an unlimited one")
        modules = dict(model.named_modules())
        layers = {n: modules[n] for n in target.layers}
        keep = target.keep_budget({n: m.weight.numel() for n, m in layers.items()})
        spe = trainer.task.steps_per_epoch()
        start = trainer.epochs_spent
        total_steps = math.floor(trainer.epochs_left * spe + 1e-6)
        aux_steps = total_steps - math.floor(total_steps * cfg.retrain_share + 1e-6)
        info: dict = {"gate_trace": []}

        gates = _Gates(layers, kind, cfg.m_init, cfg.m_clip)
        try:
            if aux_steps >= 1:
                m_lr = cfg.m_lr if cfg.m_lr is not None else min(M_LR_CAP, cfg.m_clip / aux_steps)
                opt = (torch.optim.Adam(gates.params(), lr=m_lr) if cfg.m_optimizer == "adam"
                       else torch.optim.SGD(gates.params(), lr=m_lr))
                cb = _GateTraining(gates, opt, cfg.reg_lambda, keep if cfg.stop_at_budget else None)
                m_ids = {id(m) for m in gates.params()}
                weights = [p for p in model.parameters() if p.requires_grad and id(p) not in m_ids]
                with trainer.phase("auxiliary"):
                    trainer.fit(steps=aux_steps, params=weights, callbacks=[cb])
                info.update(gate_trace=cb.trace, m_lr=m_lr, closed_events=cb.closed, reopened_events=cb.reopened)
            info["open_weights_before_threshold"] = gates.open_weights()
            with torch.no_grad():
                scores = {n: m.detach().clone() for n, m in gates.m.items()}
                rms = {n: _group_rms(gates.raw_weight(n), kind) for n in layers}
        finally:
            gates.remove()  # the returned model is a plain model, whatever happened

        picks: dict[int, dict] = {}

        def masks_at(budget: int) -> dict:
            chosen = _select(scores, rms, gates.size, budget, cfg.allocation, floor=target.layer_floor)
            out = {n: groups_to_mask(chosen[n].to(mod.weight.device), mod.weight.shape, kind)
                   for n, mod in layers.items()}
            picks[id(out)] = chosen
            return out

        # the harness's structured budget is on the dependency-aware count (as for every method)
        masks = meet_on_live_count(masks_at, keep, sum(m.weight.numel() for m in layers.values()), target.structure)
        chosen = picks[id(masks)]
        flips = 0
        with torch.no_grad():
            for n, mod in layers.items():
                mod.weight.mul_(masks[n].to(mod.weight.dtype))
                flips += int((chosen[n] != (scores[n].flatten().cpu() > 0)).sum()) * gates.size[n]
        info["kept_weights"] = sum(int(m.sum()) for m in masks.values())
        info["keep_budget"] = keep
        info["threshold_changed_weights"] = flips  # how far the exact threshold moved from h(M)
        info["aux_epochs"] = trainer.epochs_spent - start
        info["hard_prune_metrics"] = trainer.record_hard_prune()  # after the hard threshold, before the fine-tune
        info["retrain_epochs"] = 0.0
        left = math.floor(trainer.epochs_left * spe + 1e-6)
        if cfg.retrain_share > 0 and left >= 1:
            with trainer.phase("retrain"):
                report = trainer.fit(steps=left, callbacks=[KeepMasked(masks)])
            info["retrain_epochs"] = report.epochs
            info["retrain_losses"] = report.epoch_losses
        return info
