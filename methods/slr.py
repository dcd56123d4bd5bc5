"""Surrogate Lagrangian Relaxation (SLR) pruning (arXiv 2012.10079, arXiv 2304.04120).

Problem, for the target layers i with constraint sets S_i (whole groups of the
target structure, at most ``keep`` weights over all layers):

    min f(W) + sum_i g_i(Z_i)  s.t.  W_i = Z_i          (g_i: indicator of S_i)

relaxed with multipliers Lambda and a quadratic term,

    L(W, Z, Lambda) = f(W) + sum_i <Lambda_i, W_i - Z_i> + rho/2 ||W_i - Z_i||^2.

With the scaled multiplier U = Lambda / rho the W-step loss is the task loss
plus rho/2 ||W - Z + U||^2, which equals the relaxed terms above plus the
constant ||Lambda||^2 / (2 rho).  One SLR iteration per chunk of training:

1. W-step: ``trainer.fit`` on the chunk with that penalty, Z^{k-1} fixed.
2. Condition 1, L(W^k, Z^{k-1}, Lambda) < L(W^{k-1}, Z^{k-1}, Lambda): if it
   holds, update the stepsize and Lambda += s (W^k - Z^{k-1}).
3. Z-step: Z^k = Proj(W^k + Lambda / rho), always taken.
4. Condition 2, L(W^k, Z^k, Lambda) < L(W^k, Z^{k-1}, Lambda): if it holds,
   update the stepsize and Lambda += s (W^k - Z^k).

How L is evaluated (exactly):

- g_i(Z_i) is 0 in both sides of every comparison (Z is always a projection).
- f(W^k) is the mean *task* loss over the last epoch of the chunk that
  produced W^k: ``FitReport.epoch_losses[-1]`` (task loss + penalty, averaged
  over that epoch's steps) minus the mean penalty value over the same steps,
  which the penalty object records.  It is a running average while W moves,
  not the loss at the final W^k; like the authors' code (epoch-average CE) it
  costs no extra pass over the data.
- Condition 1 compares with the previous iterate W^{k-1} (a snapshot) and
  its own recorded f, both terms under the current Lambda and Z^{k-1}.  On
  the first iteration f(W^0) is unknown (it would cost a data pass), so the
  update is taken unconditionally, as in the authors' code (k == 1).
- Condition 2 has the same W^k on both sides, so f cancels and the test is
  exact: only the relaxed terms differ.  (The authors' code adds ce - ce_prev
  here; we follow the paper's definition.)

Stepsize: s_k = alpha_k s_{k-1} n_{k-1} / n_k with alpha_k = 1 - 1/(M k^(1 -
1/k^r)), where n is the norm of the subgradient (W - Z) a multiplier update
uses, summed over layers (sum of per-layer Frobenius norms, as in the
authors' code), and n_{k-1} belongs to the previous *accepted* update.  k
starts at 1 and advances only when a condition holds; alpha_k uses k before
it advances.  The first accepted update uses s0 (there is no previous
subgradient); the stepsize is also kept when either norm is 0.

Budget: the budget's whole steps are split into the masked retrain
(floor(steps * ``retrain_share``)) and the SLR share.  The SLR share is cut
into ``iterations`` chunks of whole steps (default
:data:`DEFAULT_ITERATIONS`), so the configured number of multiplier
iterations happens inside any budget, each ``SLR steps / iterations`` long
(version 1 used one-epoch periods, which at the suites' 1-epoch budgets was
one iteration: the multiplier and stepsize rules never acted).  With
``period_epochs`` set instead, the share is cut into floor(share /
period) chunks.  A budget too small for that (fewer SLR steps than
iterations, a period longer than the share or shorter than one step, or no
retrain step while ``retrain_share`` > 0) is a ValueError before any
training, naming the steps the budget has and needs.

After the SLR iterations: hard pruning W = Proj(W), evaluated with no
retraining (``hard_prune_metrics``: SLR's retrain-free claim), then an
optional masked retrain on ``retrain_share`` of the budget.

``target_accuracy``: after every SLR iteration (and after the retrain) a
hard-pruned *copy* of the weights is evaluated (project, evaluate, restore);
``epochs_to_target`` is the epochs this method had spent when the task's
primary metric first reached it.  Those evaluations cost evaluation passes,
never training budget.

Prune-only (``quantizes = False``): the authors' SLR quantization code is
not reproduced; the harness's standard quantizer runs on the pruned weights.  Every
projection is the shared library's (``prunebench.projections``); for the
``pattern`` structure SLR's 5-of-9 library is used by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from prunebench import Callback, KeepMasked, Method
from prunebench.config import ConfigError, Ge, Gt, Lt, PositiveFloat, PositiveInt, Validated
from prunebench.projections import PATTERNS_SLR_5OF9, Allocation, project_masks
from prunebench.recipes import hard_project_, hard_prune_probe, short_metrics, target_weights

__all__ = ["DEFAULT_ITERATIONS", "SLR", "SLRConfig", "slr_alpha", "slr_schedule"]

#: SLR iterations when neither ``iterations`` nor ``period_epochs`` is set.  The authors update
#: once per epoch over ~100 epochs; 5 lets the stepsize rule act several times inside a short
#: budget and still fits the smallest suite budgets (the SNN smoke runs have 7 SLR steps).
DEFAULT_ITERATIONS = 5


@dataclass(frozen=True)
class SLRConfig(Validated):
    #: quadratic penalty of the relaxed Lagrangian (authors' default)
    rho: PositiveFloat = 0.1
    #: initial multiplier stepsize s0 and the alpha_k constants M > 1, 0 < r < 1
    s0: PositiveFloat = 0.01
    M: Annotated[float, Gt(1)] = 300.0
    r: Annotated[float, Gt(0), Lt(1)] = 0.1
    #: epochs per SLR iteration (fixed-length periods); exclusive with iterations
    period_epochs: PositiveFloat | None = None
    #: number of SLR iterations, the SLR share split evenly over them; None with period_epochs None
    #: means DEFAULT_ITERATIONS
    iterations: PositiveInt | None = None
    #: fraction of the budget for masked retraining after hard pruning (0 disables it)
    retrain_share: Annotated[float, Ge(0), Lt(1)] = 0.2
    #: evaluate the hard projection of W after every multiplier iteration (for studies)
    track_hard_prune: bool = False
    allocation: Allocation = "global"
    #: 3x3 pattern library for the pattern structure: "slr" (13 5-of-9 masks) or "pdnn" (distilled 4-of-9)
    pattern_library: Literal["slr", "pdnn"] = "slr"
    #: primary-metric value (task units, e.g. top1 in %) for ``epochs_to_target``; None disables
    target_accuracy: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.period_epochs is not None and self.iterations is not None:
            raise ConfigError(
                "iterations", f"expected null when period_epochs is set ({self.period_epochs!r}), got {self.iterations!r}"
            )


def slr_schedule(total_steps: int, *, retrain_share: float, iterations: int | None = None,
                 period_epochs: float | None = None, steps_per_epoch: int = 1) -> dict:
    """How SLR spends ``total_steps``: retrain steps, SLR steps and the SLR
    chunk boundaries (``bounds[i]`` to ``bounds[i + 1]`` is iteration i).

    ``iterations`` (default :data:`DEFAULT_ITERATIONS` when ``period_epochs``
    is None too) chunks of the SLR share, or floor(share / period) chunks of
    ``period_epochs``.  Raises ValueError, naming the budget in steps and what
    is needed, when the budget cannot hold every iteration with at least one
    step, or holds no retrain step while ``retrain_share`` > 0.
    """
    retrain_steps = math.floor(total_steps * retrain_share + 1e-6)
    slr_steps = total_steps - retrain_steps
    budget = f"the budget has {total_steps} optimizer steps ({total_steps / steps_per_epoch:g} epochs at " \
             f"{steps_per_epoch} steps per epoch)"
    if period_epochs is not None:
        period = period_epochs * steps_per_epoch
        if period < 1:
            raise ValueError(f"slr: period_epochs={period_epochs:g} is {period:.3g} steps at {steps_per_epoch} "
                             "steps per epoch; a period needs at least 1 step")
        n_iter = math.floor(slr_steps / period + 1e-9)
        if n_iter < 1:
            raise ValueError(f"slr: {budget}, of which {slr_steps} for SLR; one period of period_epochs="
                             f"{period_epochs:g} needs {math.ceil(period - 1e-9)} SLR steps")
    else:
        n_iter = iterations if iterations is not None else DEFAULT_ITERATIONS
    need_retrain = 1 if retrain_share > 0 else 0
    if slr_steps < n_iter or retrain_steps < need_retrain:
        # the smallest budget whose split gives n_iter SLR steps and the retrain step
        need = n_iter + need_retrain
        while need - math.floor(need * retrain_share + 1e-6) < n_iter or \
                math.floor(need * retrain_share + 1e-6) < need_retrain:
            need += 1
        retrain = f", plus at least 1 masked-retrain step for retrain_share={retrain_share:g}" if need_retrain else ""
        raise ValueError(
            f"slr: {budget}; {n_iter} SLR iterations of at least 1 step each{retrain} need at least {need} "
            f"steps: raise the budget, or lower iterations" + (" or retrain_share" if need_retrain else "")
        )
    bounds = [i * slr_steps // n_iter for i in range(n_iter + 1)]
    return {"iterations": n_iter, "slr_steps": slr_steps, "retrain_steps": retrain_steps, "bounds": bounds}


def slr_alpha(k: int, M: float, r: float) -> float:
    """alpha_k = 1 - 1 / (M * k^(1 - 1/k^r))."""
    return 1.0 - 1.0 / (M * k ** (1.0 - 1.0 / k**r))


class _SLRState(Callback):
    """Z, Lambda, stepsize and counter k; also the trainer penalty (and a callback
    recording the penalty's per-epoch mean, so f can be separated from it)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], rho: float, s0: float, M: float, r: float):
        self.params = params
        self.rho, self.M, self.r = rho, M, r
        self.s = s0
        self.k = 1
        self.prev_norm: float | None = None  # subgradient norm of the last accepted update
        self.z = {n: p.detach().clone() for n, p in params.items()}
        self.lam = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        self._acc: torch.Tensor | float = 0.0
        self._count = 0
        self.epoch_penalty: list[float] = []

    # --- penalty and its bookkeeping
    def __call__(self, model) -> torch.Tensor:
        total = 0.0
        for n, p in self.params.items():
            total = total + ((p - self.z[n] + self.lam[n] / self.rho) ** 2).sum()
        value = 0.5 * self.rho * total
        self._acc = self._acc + value.detach()
        self._count += 1
        return value

    def after_epoch(self, trainer, epoch, mean_loss):
        self.epoch_penalty.append(float(self._acc) / max(self._count, 1))
        self._acc, self._count = 0.0, 0

    # --- relaxed Lagrangian and multiplier update
    @torch.no_grad()
    def relaxed(self, w: dict[str, torch.Tensor], z: dict[str, torch.Tensor]) -> float:
        """sum_i <Lambda_i, W_i - Z_i> + rho/2 ||W_i - Z_i||^2 (L without f), in float64."""
        total = 0.0
        for n in self.params:
            d = w[n].double() - z[n].double()
            total += float((self.lam[n].double() * d).sum()) + 0.5 * self.rho * float((d * d).sum())
        return total

    @torch.no_grad()
    def multiplier_step(self, w: dict[str, torch.Tensor], z: dict[str, torch.Tensor]) -> float | None:
        """Stepsize update, k += 1, Lambda += s (W - Z); returns alpha (None when s was kept)."""
        g = {n: w[n].float() - z[n].float() for n in self.params}
        norm = sum(float(g[n].norm()) for n in self.params)
        alpha = None
        if self.prev_norm is not None and self.prev_norm > 0 and norm > 0:
            alpha = slr_alpha(self.k, self.M, self.r)
            self.s = alpha * self.s * self.prev_norm / norm
        self.k += 1
        for n in self.params:
            self.lam[n] += self.s * g[n]
        self.prev_norm = norm
        return alpha

    @torch.no_grad()
    def iterate(self, w, f: float, w_prev, f_prev: float | None, project) -> dict:
        """Conditions, multiplier updates and the Z-step after a W-step that gave
        ``w`` with epoch-average task loss ``f``; ``project`` is Proj."""
        z_old = self.z
        # condition 1: same Z^{k-1} and Lambda on both sides; forced on the first iteration
        lag1_new = f + self.relaxed(w, z_old)
        lag1_old = None if f_prev is None else f_prev + self.relaxed(w_prev, z_old)
        cond1 = lag1_old is None or lag1_new < lag1_old
        alpha1 = self.multiplier_step(w, z_old) if cond1 else None
        s1 = self.s
        z_new = project({n: w[n] + self.lam[n] / self.rho for n in self.params})
        # condition 2: f(W^k) is on both sides and cancels
        lag2_new, lag2_old = self.relaxed(w, z_new), self.relaxed(w, z_old)
        cond2 = lag2_new < lag2_old
        alpha2 = self.multiplier_step(w, z_new) if cond2 else None
        self.z = z_new
        primal = math.sqrt(sum(float(((w[n] - z_new[n]) ** 2).sum()) for n in self.params))
        dual = self.rho * math.sqrt(sum(float(((z_new[n] - z_old[n]) ** 2).sum()) for n in self.params))
        return {
            "cond1": bool(cond1), "cond1_forced": lag1_old is None, "cond2": bool(cond2),
            "lagrangian1": [lag1_new, lag1_old], "lagrangian2_relaxed": [lag2_new, lag2_old],
            "alpha1": alpha1, "alpha2": alpha2, "s_after_cond1": s1, "s": self.s, "k": self.k,
            "primal_residual": primal, "dual_residual": dual,
        }


class SLR(Method):
    """SLR pruning (arXiv 2012.10079): any structure of the projection library, prune-only."""

    Config = SLRConfig
    # 2: iterations (default DEFAULT_ITERATIONS) scaled into the budget; too small a budget is an error
    version = "2"
    structures = ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block", "pe", "nm")
    quantizes = False

    def compress(self, model, target, trainer):
        cfg = self.config
        if not math.isfinite(trainer.epochs_left):
            raise ValueError("slr needs a finite epoch budget (trainer.budget_epochs), got an unlimited one")
        params = target_weights(model, target)
        keep = target.keep_budget({n: p.numel() for n, p in params.items()})
        library = PATTERNS_SLR_5OF9 if (target.structure.kind == "pattern" and cfg.pattern_library == "slr") else None
        metric = trainer.task.primary_metric
        start = trainer.epochs_spent
        spe = trainer.task.steps_per_epoch()

        def masks_of(weights):
            return project_masks(weights, target.structure, keep, allocation=cfg.allocation, pattern_library=library)

        def proj(weights):
            m = masks_of(weights)
            return {n: torch.where(m[n], weights[n], torch.zeros_like(weights[n])) for n in weights}

        info: dict = {"iterations": [], "epochs_to_target": None, "target_accuracy": cfg.target_accuracy}

        def check_target(phase: str) -> None:
            # evaluates a hard-pruned copy: an evaluation pass, no training budget
            if cfg.target_accuracy is None or info["epochs_to_target"] is not None:
                return
            with torch.no_grad():
                saved = {n: p.detach().clone() for n, p in params.items()}
                m = masks_of(saved)
                for n, p in params.items():
                    p.mul_(m[n])
                value = float(trainer.evaluate()[metric])
                for n, p in params.items():
                    p.copy_(saved[n])
            info.setdefault("hard_pruned_trace", []).append({"phase": phase, "epochs": trainer.epochs_spent - start,
                                                             metric: value})
            if value >= cfg.target_accuracy:
                info["epochs_to_target"] = trainer.epochs_spent - start
                info["epochs_to_target_phase"] = phase

        # split into whole steps so the chunks add up to the SLR share exactly; refused before any training
        plan = slr_schedule(math.floor(trainer.epochs_left * spe + 1e-6), retrain_share=cfg.retrain_share,
                            iterations=cfg.iterations, period_epochs=cfg.period_epochs, steps_per_epoch=spe)
        n_iter, bounds = plan["iterations"], plan["bounds"]
        info["schedule"] = {k: plan[k] for k in ("iterations", "slr_steps", "retrain_steps")}

        state = _SLRState(params, cfg.rho, cfg.s0, cfg.M, cfg.r)
        state.z = proj({n: p.detach() for n, p in params.items()})
        w_prev = {n: p.detach().clone() for n, p in params.items()}
        f_prev: float | None = None
        for it in range(n_iter):
            steps = bounds[it + 1] - bounds[it]
            state.epoch_penalty.clear()
            with trainer.phase("slr"):
                report = trainer.fit(steps=steps, penalty=state, callbacks=[state])
            f = report.epoch_losses[-1] - state.epoch_penalty[-1]
            w = {n: p.detach().clone() for n, p in params.items()}
            record = state.iterate(w, f, w_prev, f_prev, proj)
            info["iterations"].append({"iteration": it, "epochs": trainer.epochs_spent - start, "f": f, **record})
            if cfg.track_hard_prune:
                info["iterations"][-1]["hard_prune"] = hard_prune_probe(trainer, params, proj)
            w_prev, f_prev = w, f
            check_target("slr")

        masks = hard_project_(params, masks_of)
        info["slr_epochs"] = trainer.epochs_spent - start
        info["hard_prune_metrics"] = trainer.record_hard_prune()
        info["retrain_epochs"] = 0.0
        if cfg.retrain_share > 0:
            left = math.floor(trainer.epochs_left * spe + 1e-6)
            if left >= 1:
                with trainer.phase("retrain"):
                    report = trainer.fit(steps=left, callbacks=[KeepMasked(masks)])
                info["retrain_epochs"] = report.epochs
                info["retrain_losses"] = report.epoch_losses
                info["retrained_metrics"] = short_metrics(trainer.evaluate())
                check_target("retrain")
        info["final_s"], info["final_k"] = state.s, state.k
        return info
