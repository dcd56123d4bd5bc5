"""ADMM-NN (arXiv 1812.11677) and ADMM-NN-S: joint pruning and quantization by ADMM.

Pruning, for every compressible layer i with constraint set S_i (at most k
nonzeros, in whole groups of the target structure):

    min f(W) + sum_i g_i(Z_i)  s.t.  W_i = Z_i

solved by scaled ADMM, one iteration being

    W-step  SGD on f(W) + sum_i rho/2 ||W_i - Z_i + U_i||^2 for one ADMM period
    Z-step  Z = Proj_S(W + U)
    U-step  U = U + W - Z

with rho multiplied by ``rho_multiplier`` between stages (ADMM-NN-S's dynamic
regularisation), then a hard projection and masked retraining.  With the
target structure set to filter, channel, column or kernel this is ADMM-NN-S.

U is the scaled dual Y / rho.  When rho grows, ``dual_on_rho_change``
decides what U does: ``rescale`` (default) keeps the multiplier Y, U' = U
rho / rho' (Boyd et al., "Distributed Optimization and Statistical Learning
via ADMM", 2011, doi 10.1561/2200000016, sec. 3.4.1); ``reset`` restarts
each stage at Z = Proj(W), U = 0, as the authors' PyTorch code runs its
rho_0 10^j stages (github Zhoushanglin100/SLR-ADMM-cifar10); ``keep`` is
version 1's rule (U untouched, so Y jumps by rho'/rho and the primal
residual rose in every committed run), for ablations only.

Quantization runs the same loop with Proj_Q (the target's level set, zero kept
for pruned weights) on the surviving weights, then progressive masked mapping
as in ADMM-NN's released code: each round snaps the fraction of still-free
weights closest to their level, freezes them, and retrains the rest.

Every projection is the shared library's (``prunebench.projections``,
``prunebench.quant``).  The per-iteration primal residual ||W - Z|| and dual
residual rho ||Z - Z_prev|| are returned, and ``converged`` is False (with
the numbers in ``convergence``) when the final primal residual is above
``primal_tol`` x ||W|| or rose over the last stage.  The budget spent per
phase (``admm``, ``retrain``, ``quant_admm``, ``mapping``) and the
hard-pruned accuracy are kept by the trainer (``trainer.phases``,
``trainer.checkpoints["hard_prune"]``).  The ADMM machinery itself (penalty,
Z/U steps, stage schedule, hard projection and retraining, mapping) is the
public :mod:`prunebench.recipes`, for other methods to build on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from prunebench import KeepMasked, Method
from prunebench.config import Gt, Le, NonNegativeFloat, PositiveFloat, PositiveInt
from prunebench.projections import project_masks
from prunebench.recipes import (
    ADMMPenalty,
    ADMMStagesConfig,
    admm_convergence,
    hard_prune_and_retrain,
    hard_prune_probe,
    level_projection,
    progressive_mapping,
    run_admm_stages,
    short_metrics,
    sparse_projection,
    split_budget,
    target_weights,
)

__all__ = ["ADMM", "ADMMConfig", "MemristorADMM", "MemristorConfig"]


@dataclass(frozen=True)
class ADMMConfig(ADMMStagesConfig):
    # rho, rho_multiplier, stages, iterations, dual_on_rho_change, primal_tol, allocation: ADMMStagesConfig
    prune: bool = True
    quantize: bool = True
    #: evaluate the hard projection of W after every ADMM iteration (accuracy per epoch, for studies)
    track_hard_prune: bool = False
    quant_rho: PositiveFloat = 1e-2
    quant_iterations: PositiveInt = 2
    #: fraction of still-free weights snapped to their level per mapping round
    mapping_fraction: Annotated[float, Gt(0), Le(1)] = 0.3
    mapping_rounds: PositiveInt = 3
    #: budget split between ADMM pruning, masked retraining and quantization (normalised over the phases that run)
    prune_share: NonNegativeFloat = 0.5
    retrain_share: NonNegativeFloat = 0.2
    quant_share: NonNegativeFloat = 0.3

    def __post_init__(self):
        super().__post_init__()
        if not (self.prune or self.quantize):
            raise ValueError(
                f"expected prune or quantize (or both) to be true, got prune={self.prune!r}, quantize={self.quantize!r}"
            )


class ADMM(Method):
    """ADMM-NN joint pruning + quantization; ADMM-NN-S for structured targets."""

    Config = ADMMConfig
    # 2: U rescaled when rho changes (dual_on_rho_change), rho changed between stages only
    version = "2"
    structures = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe", "nm")
    quantization_schemes = ("uniform", "pow2", "ternary", "binary", "levels")

    @property
    def quantizes(self) -> bool:  # type: ignore[override]
        return self.config.quantize

    # ------------------------------------------------------------------ phases
    def _budget(self, trainer) -> dict[str, float]:
        cfg = self.config
        return split_budget(trainer.epochs_left, {
            "prune": cfg.prune_share if cfg.prune else 0.0,
            "retrain": cfg.retrain_share if cfg.prune else 0.0,
            "quant": cfg.quant_share if cfg.quantize else 0.0,
        })

    def compress(self, model, target, trainer):
        cfg = self.config
        params = target_weights(model, target)
        sizes = {n: p.numel() for n, p in params.items()}
        keep = target.keep_budget(sizes)
        budget = self._budget(trainer)
        info: dict = {"residuals": [], "quant_residuals": [], "converged": None, "convergence": None}

        def masks_of(weights):
            return project_masks(weights, target.structure, keep, allocation=cfg.allocation,
                                 floor=target.layer_floor)

        if cfg.prune:
            projection = sparse_projection(masks_of)
            penalty = ADMMPenalty(params, cfg.rho, project=projection)
            probe = (lambda: hard_prune_probe(trainer, params, projection)) if cfg.track_hard_prune else None
            info["residuals"] = run_admm_stages(trainer, penalty, projection, budget["prune"], stages=cfg.stages,
                                                iterations=cfg.iterations, rho_multiplier=cfg.rho_multiplier,
                                                dual=cfg.dual_on_rho_change, phase="admm", probe=probe)
            info["convergence"] = admm_convergence(info["residuals"], params, tol=cfg.primal_tol)
            info["converged"] = info["convergence"]["converged"]
        # hard projection (the standard one-shot pruner when prune is off), then masked retraining;
        # the hard-pruned metrics are the trainer's "hard_prune" checkpoint too
        masks, info["hard_prune_metrics"] = hard_prune_and_retrain(trainer, params, masks_of, budget["retrain"],
                                                                   phase="retrain")

        if cfg.quantize and target.quantization is not None:
            self._quantize(params, masks, target.quantization, trainer, budget["quant"], info)
        return info

    def _quantize(self, params, masks, quantization, trainer, epochs, info) -> None:
        cfg = self.config
        projection = level_projection(masks, quantization)
        admm_epochs = epochs * 0.5
        map_epochs = epochs - admm_epochs
        penalty = ADMMPenalty(params, cfg.quant_rho, project=projection)
        # one stage at fixed rho, pruned weights held at zero; records carry no stage
        records = run_admm_stages(trainer, penalty, projection, admm_epochs, iterations=cfg.quant_iterations,
                                  callbacks=[KeepMasked(masks)], phase="quant_admm")
        info["quant_residuals"] = [{k: v for k, v in r.items() if k != "stage"} for r in records]
        info["quant_convergence"] = admm_convergence(records, params, tol=cfg.primal_tol)
        progressive_mapping(trainer, params, masks, projection, map_epochs, fraction=cfg.mapping_fraction,
                            rounds=cfg.mapping_rounds, phase="mapping")


@dataclass(frozen=True)
class MemristorConfig(ADMMConfig):
    #: relative Gaussian conductance variation applied at evaluation (0 = off)
    mismatch_sigma: NonNegativeFloat = 0.1
    mismatch_trials: PositiveInt = 3


class MemristorADMM(ADMM):
    """The memristor-crossbar preset (arXiv 1908.11691): ADMM with crossbar-block
    structure (suite structure ``block:RxC``) and conductance-level quantization
    (suite quantization scheme ``levels``), plus the accuracy under relative
    Gaussian device mismatch, w' = w (1 + sigma n), averaged over trials."""

    Config = MemristorConfig
    version = "2"  # ADMM version 2
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
                values.append(short_metrics(trainer.evaluate()))
            with torch.no_grad():
                for n, w in clean.items():
                    modules[n].weight.copy_(w)
            keys = values[0].keys()
            info["mismatch_sigma"] = cfg.mismatch_sigma
            info["metrics_with_mismatch"] = {k: sum(v[k] for v in values) / len(values) for k in keys}
        return info
