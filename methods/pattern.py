"""Pattern + connectivity pruning in the PatDNN / ClickTrain line.

PatDNN (arXiv 2001.00138) prunes every kept 3x3 kernel to one pattern of a
small library (4 of 9 weights, centre always kept) and removes whole kernels
(connectivity pruning) to reach the rate; ClickTrain (arXiv 2011.10170) does
the same during training.  Here, on the suite's dense model:

1. the library: ``library_size`` patterns distilled from the trained 3x3
   kernels of the target layers (each kernel votes for its centre plus its 3
   largest other |w|; :func:`prunebench.projections.pattern_library_pdnn`),
   one library shared by all layers and fixed from then on;
2. ADMM regularisation towards the pattern set ("extended ADMM" in PatDNN):
   SGD on loss + rho/2 ||W - Z + U||^2 with Z = Proj(W + U), Proj the shared
   projection for structure ``pattern`` with that library (best pattern per
   kernel, then the kernels with the most kept energy within the budget),
   rho growing by ``rho_multiplier`` between stages, the scaled dual U kept
   consistent with it (``dual_on_rho_change``, as in :mod:`prunebench.methods.admm`:
   ``rescale`` keeps Y = rho U, Boyd et al. 2011, doi 10.1561/2200000016,
   sec. 3.4.1), with the residuals and a ``converged`` flag recorded;
3. hard projection (the trainer's ``hard_prune`` checkpoint), then masked
   retraining.  The loop is :func:`prunebench.recipes.run_admm_stages`.

Non-3x3 layers (1x1 or 7x7 convs, linear layers) get connectivity pruning
only, the shared library's rule.  With the suite structure ``kernel`` the
same loop runs without patterns (connectivity only).  Prune-only: the
suite's quantizer runs afterwards.  What PatDNN's compiler passes (kernel
reordering, compact storage) gain is for the hardware models to score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from prunebench import Method
from prunebench.config import Between, NonNegativeFloat
from prunebench.projections import PATTERN_LIMITS, pattern_library_pdnn, project_masks
from prunebench.recipes import (
    ADMMPenalty,
    ADMMStagesConfig,
    admm_convergence,
    hard_prune_and_retrain,
    run_admm_stages,
    sparse_projection,
    split_budget,
    target_weights,
)

__all__ = ["PatternPruning", "PatternConfig"]

# The harness allows at most this many distinct 4-of-9 patterns per layer.
_MAX_LIBRARY = PATTERN_LIMITS[4]


@dataclass(frozen=True)
class PatternConfig(ADMMStagesConfig):
    # rho, rho_multiplier, stages, iterations, dual_on_rho_change, primal_tol, allocation: ADMMStagesConfig
    #: patterns in the shared library (PatDNN uses 6-12, 8 typical; the harness allows at most
    #: _MAX_LIBRARY distinct 4-of-9 patterns per layer)
    library_size: Annotated[int, Between(1, _MAX_LIBRARY)] = 8
    #: budget split between ADMM regularisation and masked retraining (normalised)
    admm_share: NonNegativeFloat = 0.7
    retrain_share: NonNegativeFloat = 0.3

    def __post_init__(self):
        super().__post_init__()
        if self.admm_share + self.retrain_share <= 0:
            raise ValueError(
                f"expected admm_share + retrain_share > 0, got {self.admm_share!r} + {self.retrain_share!r}"
            )


def _is_3x3(w: torch.Tensor) -> bool:
    return w.dim() == 4 and tuple(w.shape[2:]) == (3, 3)


class PatternPruning(Method):
    """PatDNN-style pattern + connectivity pruning by ADMM on the shared projections."""

    Config = PatternConfig
    # 2: U rescaled when rho changes (dual_on_rho_change), rho changed between stages only
    version = "2"
    structures = ("pattern", "kernel")
    quantizes = False

    def compress(self, model, target, trainer):
        cfg = self.config
        kind = target.structure.kind
        if kind not in self.structures:
            raise ValueError(f"pattern pruning produces structure 'pattern' or 'kernel', got {target.structure}")
        params = target_weights(model, target)
        keep = target.keep_budget({n: p.numel() for n, p in params.items()})

        kernels = [p.detach() for p in params.values() if _is_3x3(p)]
        # distilled once from the trained kernels, then fixed (PatDNN's pattern distillation)
        library = pattern_library_pdnn(kernels, size=cfg.library_size) if kind == "pattern" and kernels else None

        def masks_of(weights):
            return project_masks(weights, target.structure, keep, allocation=cfg.allocation,
                                 pattern_library=library)

        projection = sparse_projection(masks_of)
        epochs = split_budget(trainer.epochs_left, {"admm": cfg.admm_share, "retrain": cfg.retrain_share})
        info: dict = {
            "library": [] if library is None else library.reshape(-1, 9).int().tolist(),
            "residuals": [],
            "converged": None,
            "convergence": None,
        }

        if cfg.admm_share > 0:
            penalty = ADMMPenalty(params, cfg.rho, project=projection)
            info["residuals"] = run_admm_stages(trainer, penalty, projection, epochs["admm"], stages=cfg.stages,
                                                iterations=cfg.iterations, rho_multiplier=cfg.rho_multiplier,
                                                dual=cfg.dual_on_rho_change, phase="admm")
            info["convergence"] = admm_convergence(info["residuals"], params, tol=cfg.primal_tol)
            info["converged"] = info["convergence"]["converged"]

        masks, info["hard_prune_metrics"] = hard_prune_and_retrain(trainer, params, masks_of, epochs["retrain"],
                                                                   phase="retrain")

        info["kernels_kept"] = {}
        info["patterns_used"] = {}
        for n, m in masks.items():
            if m.dim() == 4:
                per_kernel = m.reshape(m.shape[0] * m.shape[1], -1)
                alive = per_kernel.any(dim=1)
                info["kernels_kept"][n] = [int(alive.sum()), int(alive.numel())]
                if library is not None and _is_3x3(m):
                    info["patterns_used"][n] = int(torch.unique(per_kernel[alive], dim=0).shape[0])
        return info
