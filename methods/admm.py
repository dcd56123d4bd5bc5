"""ADMM-NN (arXiv 1812.11677) and ADMM-NN-S: joint pruning and quantization by ADMM.

Pruning, for every compressible layer i with constraint set S_i (at most k
nonzeros, in whole groups of the target structure):

    min f(W) + sum_i g_i(Z_i)  s.t.  W_i = Z_i

solved by scaled ADMM, one iteration being

    W-step  SGD on f(W) + sum_i rho/2 ||W_i - Z_i + U_i||^2 for one ADMM period
    Z-step  Z = Proj_S(W + U)
    U-step  U = U + W - Z

with rho multiplied by ``rho_multiplier`` after each stage (ADMM-NN-S's dynamic
regularisation), then a hard projection and masked retraining.  With the
target structure set to filter, channel, column or kernel this is ADMM-NN-S.

Quantization runs the same loop with Proj_Q (the target's level set, zero kept
for pruned weights) on the surviving weights, then progressive masked mapping
as in ADMM-NN's released code: each round snaps the fraction of still-free
weights closest to their level, freezes them, and retrains the rest.

Every projection is the shared library's (``prunebench.projections``,
``prunebench.quant``); the per-iteration residuals ||W - Z|| are returned so
convergence is visible in the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prunebench import Callback, KeepMasked, Method
from prunebench.projections import project_masks
from prunebench.quant import quantize_

__all__ = ["ADMM", "ADMMConfig", "MemristorADMM", "MemristorConfig"]


@dataclass(frozen=True)
class ADMMConfig:
    prune: bool = True
    quantize: bool = True
    #: initial penalty and its growth per stage (1.0 = fixed rho, as in the Caffe code)
    rho: float = 1e-2
    rho_multiplier: float = 10.0
    stages: int = 3
    #: ADMM iterations (Z/U updates) per stage
    iterations: int = 2
    quant_rho: float = 1e-2
    quant_iterations: int = 2
    #: fraction of still-free weights snapped to their level per mapping round
    mapping_fraction: float = 0.3
    mapping_rounds: int = 3
    #: budget split between ADMM pruning, masked retraining and quantization (normalised over the phases that run)
    prune_share: float = 0.5
    retrain_share: float = 0.2
    quant_share: float = 0.3
    allocation: str = "global"

    def __post_init__(self):
        if not (self.prune or self.quantize):
            raise ValueError("admm needs prune or quantize (or both) set to true")
        for name in ("rho", "quant_rho", "rho_multiplier"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("stages", "iterations", "quant_iterations", "mapping_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.mapping_fraction <= 1:
            raise ValueError(f"mapping_fraction must be in (0, 1], got {self.mapping_fraction!r}")
        for name in ("prune_share", "retrain_share", "quant_share"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.allocation not in ("global", "uniform"):
            raise ValueError(f"allocation must be 'global' or 'uniform', got {self.allocation!r}")


class _Penalty:
    """rho/2 * sum_i ||W_i - Z_i + U_i||^2 over the given layers (a Trainer penalty)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], rho: float):
        self.params = params
        self.rho = rho
        self.z = {n: p.detach().clone() for n, p in params.items()}
        self.u = {n: torch.zeros_like(p) for n, p in params.items()}

    def __call__(self, model) -> torch.Tensor:
        total = 0.0
        for n, p in self.params.items():
            total = total + ((p - self.z[n] + self.u[n]) ** 2).sum()
        return 0.5 * self.rho * total

    @torch.no_grad()
    def update(self, project) -> dict:
        """Z- and U-steps; returns primal ||W - Z|| and dual rho ||Z - Z_prev|| residuals."""
        w_plus_u = {n: p.detach() + self.u[n] for n, p in self.params.items()}
        z_new = project(w_plus_u)
        primal = dual = 0.0
        for n, p in self.params.items():
            dual += float(((z_new[n] - self.z[n]) ** 2).sum())
            self.z[n] = z_new[n]
            diff = p.detach() - self.z[n]
            self.u[n] += diff
            primal += float((diff**2).sum())
        return {"primal_residual": math.sqrt(primal), "dual_residual": self.rho * math.sqrt(dual)}


class _Freeze(Callback):
    """Only ``trainable`` weights learn; the others (pruned or snapped) keep their values,
    weight decay and momentum included."""

    def __init__(self, params: dict[str, torch.nn.Parameter], trainable: dict[str, torch.Tensor]):
        self.params = params
        self.trainable = {n: m.to(params[n].dtype) for n, m in trainable.items()}
        self.frozen = {n: p.detach().clone() for n, p in params.items()}

    def after_backward(self, trainer):
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.trainable[n])

    @torch.no_grad()
    def after_step(self, trainer):
        for n, p in self.params.items():
            p.copy_(torch.where(self.trainable[n].bool(), p, self.frozen[n]))


class ADMM(Method):
    """ADMM-NN joint pruning + quantization; ADMM-NN-S for structured targets."""

    Config = ADMMConfig
    version = "1"
    structures = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe", "nm")
    quantization_schemes = ("uniform", "pow2", "ternary", "binary", "levels")

    @property
    def quantizes(self) -> bool:  # type: ignore[override]
        return self.config.quantize

    # ------------------------------------------------------------------ phases
    def _budget(self, trainer) -> dict[str, float]:
        cfg = self.config
        shares = {
            "prune": cfg.prune_share if cfg.prune else 0.0,
            "retrain": cfg.retrain_share if cfg.prune else 0.0,
            "quant": cfg.quant_share if cfg.quantize else 0.0,
        }
        total = sum(shares.values()) or 1.0
        return {k: trainer.epochs_left * v / total for k, v in shares.items()}

    def compress(self, model, target, trainer):
        cfg = self.config
        modules = dict(model.named_modules())
        params = {n: modules[n].weight for n in target.layers}
        sizes = {n: p.numel() for n, p in params.items()}
        keep = target.keep_budget(sizes)
        budget = self._budget(trainer)
        info: dict = {"residuals": [], "quant_residuals": []}

        def prune_projection(weights):
            masks = project_masks(weights, target.structure, keep, allocation=cfg.allocation)
            return {n: weights[n] * masks[n] for n in weights}

        if cfg.prune:
            penalty = _Penalty(params, cfg.rho)
            penalty.z = prune_projection({n: p.detach() for n, p in params.items()})
            period = budget["prune"] / (cfg.stages * cfg.iterations)
            for stage in range(cfg.stages):
                for it in range(cfg.iterations):
                    _fit(trainer, period, penalty=penalty)
                    res = penalty.update(prune_projection)
                    info["residuals"].append({"stage": stage, "iteration": it, "rho": penalty.rho, **res})
                penalty.rho *= cfg.rho_multiplier
        # hard projection (the standard one-shot pruner when prune is off)
        with torch.no_grad():
            masks = project_masks({n: p.detach() for n, p in params.items()}, target.structure, keep,
                                  allocation=cfg.allocation)
            for n, p in params.items():
                p.mul_(masks[n])
        info["hard_prune_metrics"] = _short(trainer.evaluate())
        _fit(trainer, budget["retrain"], callbacks=[KeepMasked(masks)])

        if cfg.quantize and target.quantization is not None:
            self._quantize(params, masks, target.quantization, trainer, budget["quant"], info)
        return info

    def _quantize(self, params, masks, quantization, trainer, epochs, info) -> None:
        cfg = self.config

        def q_projection(weights):
            out = {}
            for n, w in weights.items():
                q = (w * masks[n]).clone()
                quantize_(q, quantization)
                out[n] = q
            return out

        admm_epochs = epochs * 0.5
        map_epochs = epochs - admm_epochs
        penalty = _Penalty(params, cfg.quant_rho)
        penalty.z = q_projection({n: p.detach() for n, p in params.items()})
        for it in range(cfg.quant_iterations):
            _fit(trainer, admm_epochs / cfg.quant_iterations, penalty=penalty, callbacks=[KeepMasked(masks)])
            res = penalty.update(q_projection)
            info["quant_residuals"].append({"iteration": it, "rho": penalty.rho, **res})

        # progressive masked mapping: snap the closest free weights, freeze them, retrain the rest
        free = {n: masks[n].clone().bool() for n in params}
        for r in range(cfg.mapping_rounds):
            with torch.no_grad():
                target_q = q_projection({n: p.detach() for n, p in params.items()})
                for n, p in params.items():
                    dist = (p.detach() - target_q[n]).abs()
                    candidates = free[n]
                    count = int(candidates.sum())
                    if count == 0:
                        continue
                    take = count if r == cfg.mapping_rounds - 1 else max(1, math.ceil(cfg.mapping_fraction * count))
                    scores = torch.where(candidates, dist, torch.full_like(dist, math.inf)).flatten()
                    chosen = torch.argsort(scores, stable=True)[:take]
                    flat_free = free[n].flatten()
                    flat_free[chosen] = False
                    free[n] = flat_free.view_as(free[n])
                    p.copy_(torch.where(free[n], p, target_q[n]))
            if r < cfg.mapping_rounds - 1:
                _fit(trainer, map_epochs / (cfg.mapping_rounds - 1), callbacks=[_Freeze(params, free)])
        # the frozen weights were snapped; a final projection settles every value on the level set
        with torch.no_grad():
            final = q_projection({n: p.detach() for n, p in params.items()})
            for n, p in params.items():
                p.copy_(final[n])


def _fit(trainer, epochs: float, **kwargs) -> None:
    """trainer.fit within what is left of the budget; nothing when under one step."""
    epochs = min(epochs, trainer.epochs_left)
    if epochs * trainer.task.steps_per_epoch() >= 1:
        trainer.fit(epochs, **kwargs)


def _short(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


@dataclass(frozen=True)
class MemristorConfig(ADMMConfig):
    #: relative Gaussian conductance variation applied at evaluation (0 = off)
    mismatch_sigma: float = 0.1
    mismatch_trials: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.mismatch_sigma < 0:
            raise ValueError(f"mismatch_sigma must be >= 0, got {self.mismatch_sigma!r}")
        if self.mismatch_trials < 1:
            raise ValueError(f"mismatch_trials must be >= 1, got {self.mismatch_trials!r}")


class MemristorADMM(ADMM):
    """The memristor-crossbar preset (arXiv 1908.11691): ADMM with crossbar-block
    structure (suite structure ``block:RxC``) and conductance-level quantization
    (suite quantization scheme ``levels``), plus the accuracy under relative
    Gaussian device mismatch, w' = w (1 + sigma n), averaged over trials."""

    Config = MemristorConfig
    version = "1"
    structures = ("block",)
    quantization_schemes = ("levels",)

    def compress(self, model, target, trainer):
        info = super().compress(model, target, trainer)
        cfg = self.config
        if cfg.mismatch_sigma > 0:
            modules = dict(model.named_modules())
            clean = {n: modules[n].weight.detach().clone() for n in target.layers}
            gen = torch.Generator(device="cpu").manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=trainer.generator)))
            values = []
            for _ in range(cfg.mismatch_trials):
                with torch.no_grad():
                    for n, w in clean.items():
                        noise = torch.randn(w.shape, generator=gen).to(w.device)
                        modules[n].weight.copy_(w * (1 + cfg.mismatch_sigma * noise))
                values.append(_short(trainer.evaluate()))
            with torch.no_grad():
                for n, w in clean.items():
                    modules[n].weight.copy_(w)
            keys = values[0].keys()
            info["mismatch_sigma"] = cfg.mismatch_sigma
            info["metrics_with_mismatch"] = {k: sum(v[k] for v in values) / len(values) for k in keys}
        return info
