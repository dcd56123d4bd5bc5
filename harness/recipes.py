"""Building blocks for ADMM-style compression methods, public for plugin authors.

The built-in ``admm``, ``admm_memristor``, ``pattern``, ``pe_ternary`` and
``slr`` methods are made of these pieces; a third-party method can be too.
For target layers with weights W, a constraint set S with Euclidean
projection Proj_S, and scaled ADMM:

    W-step  SGD on task loss + rho/2 sum_i ||W_i - Z_i + U_i||^2   (:class:`ADMMPenalty`)
    Z-step  Z = Proj_S(W + U)                                       (:meth:`ADMMPenalty.z_step`)
    U-step  U = U + W - Z                                           (:meth:`ADMMPenalty.u_step`)

:func:`run_admm_stages` runs ``stages`` x ``iterations`` of that loop with rho
multiplied between stages (progressive rho).  U is the *scaled* dual, U =
Y / rho; when rho changes the unscaled multiplier Y must stay, so U is
rescaled by rho / rho' (Boyd et al. 2011, doi 10.1561/2200000016, sec.
3.4.1; :meth:`ADMMPenalty.set_rho`).  The alternative ``dual="reset"``
restarts each stage at Z = Proj(W), U = 0, as the ADMM-NN authors' PyTorch
code does.  :func:`admm_convergence` flags a run whose primal residual did
not settle.  :func:`hard_prune_and_retrain` is the usual ending (hard
projection, then masked retraining);
:func:`progressive_mapping` is ADMM-NN's progressive masked mapping onto a
quantizer's level set.  Projections are plain functions ``dict[name, W] ->
dict[name, Z]``; :func:`sparse_projection` and :func:`level_projection` build
them from :func:`prunebench.projections.project_masks` and
:func:`prunebench.quant.quantize_`.

A sketch of a method (see ``methods/admm.py`` for the full one)::

    params = target_weights(model, target)
    keep = target.keep_budget({n: p.numel() for n, p in params.items()})
    masks_of = lambda w: project_masks(w, target.structure, keep)
    epochs = split_budget(trainer.epochs_left, {"admm": 0.7, "retrain": 0.3})
    project = sparse_projection(masks_of)
    penalty = ADMMPenalty(params, rho=1e-2, project=project)
    residuals = run_admm_stages(trainer, penalty, project, epochs["admm"], stages=3, iterations=2,
                                rho_multiplier=10.0)
    convergence = admm_convergence(residuals, params)
    masks, metrics = hard_prune_and_retrain(trainer, params, masks_of, epochs["retrain"])

Every training call goes through :func:`fit_within_budget`, so a method never
asks the :class:`~prunebench.Trainer` for more than its budget.  Each recipe
trains inside ``trainer.phase(name)`` (``phase=`` names it) and
:func:`hard_prune_and_retrain` records ``trainer.record_hard_prune()``, so
the record says where the budget went and what the hard-pruned model scored.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import torch
from torch import nn

from .config import PositiveFloat, PositiveInt, Validated
from .projections import Allocation
from .quant import quantize_
from .target import Quantization
from .trainer import Callback, KeepMasked

__all__ = [
    "ADMMStagesConfig",
    "ADMMPenalty",
    "DualRule",
    "admm_convergence",
    "Freeze",
    "Projection",
    "fit_within_budget",
    "hard_prune_and_retrain",
    "hard_project_",
    "in_phase",
    "level_projection",
    "progressive_mapping",
    "record_hard_prune",
    "run_admm_stages",
    "short_metrics",
    "sparse_projection",
    "split_budget",
    "target_weights",
]

#: a projection onto a constraint set: layer name -> weight, to layer name -> projected weight
Projection = Callable[[Mapping[str, torch.Tensor]], dict]

#: what happens to the scaled dual U when rho changes: ``rescale`` keeps Y = rho U (Boyd et al.
#: 2011, sec. 3.4.1), ``reset`` restarts at Z = Proj(W), U = 0 (the ADMM-NN authors' PyTorch
#: stages), ``keep`` leaves U as it is (prunebench <= admm v1; Y jumps by rho'/rho: for ablations)
DualRule = Literal["rescale", "reset", "keep"]
DUAL_RULES = ("rescale", "reset", "keep")


@dataclass(frozen=True)
class ADMMStagesConfig(Validated):
    """The settings of :func:`run_admm_stages` and :func:`admm_convergence` that every
    ADMM-stage method shares (``admm``, ``admm_memristor``, ``pattern``); a method's
    config subclasses it and adds its own fields."""

    #: initial penalty and its growth per stage (1.0 = fixed rho, as in the Caffe code)
    rho: PositiveFloat = 1e-2
    rho_multiplier: PositiveFloat = 10.0
    stages: PositiveInt = 3
    #: ADMM iterations (Z/U updates) per stage
    iterations: PositiveInt = 2
    #: the scaled dual U when rho grows (:data:`DualRule`)
    dual_on_rho_change: DualRule = "rescale"
    #: converged only if the final ||W - Z|| is at most this fraction of ||W|| (and did not rise over the last stage)
    primal_tol: PositiveFloat = 0.05
    #: how the keep budget is spread over the layers (prunebench.projections)
    allocation: Allocation = "global"


# ---------------------------------------------------------------- small helpers


def short_metrics(metrics: Mapping) -> dict:
    """The scalar (int / float) entries of a task's metrics, for a method's info dict."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def in_phase(trainer, name: str):
    """``trainer.phase(name)``, or no context for a trainer without phases (a test double)."""
    phase = getattr(trainer, "phase", None)
    return phase(name) if phase is not None else contextlib.nullcontext()


def fit_within_budget(trainer, epochs: float, **kwargs) -> None:
    """``trainer.fit(epochs, **kwargs)`` capped at the epochs left; nothing when under one step.

    Phases computed as shares of the budget can ask for a fraction of a step,
    or (after rounding in earlier fits) slightly more than is left; this
    trims the first and skips the second instead of raising.
    """
    steps = min(trainer.steps_for(epochs, rounding="down") if epochs > 0 else 0, trainer.steps_left)
    if steps >= 1:
        trainer.fit(steps=int(steps), **kwargs)


def split_budget(epochs: float, shares: Mapping[str, float]) -> dict[str, float]:
    """``epochs`` split over phases in proportion to ``shares`` (normalised; all zero gives zeros)."""
    total = sum(shares.values()) or 1.0
    return {k: epochs * v / total for k, v in shares.items()}


def target_weights(model: nn.Module, target) -> dict[str, nn.Parameter]:
    """The ``weight`` parameter of every layer in ``target.layers``, by layer name."""
    modules = dict(model.named_modules())
    return {n: modules[n].weight for n in target.layers}


# ---------------------------------------------------------------- projections


def sparse_projection(masks_of: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]) -> Projection:
    """Proj_S from a mask function: W -> W * masks_of(W), layer by layer.

    ``masks_of`` is typically ``project_masks`` with the target's structure
    and keep budget bound, so Proj_S keeps the best groups within the budget.
    """

    def project(weights):
        masks = masks_of(weights)
        return {n: weights[n] * masks[n] for n in weights}

    return project


def level_projection(masks: Mapping[str, torch.Tensor], quantization: Quantization) -> Projection:
    """Proj_Q: the weights kept by ``masks`` onto ``quantization``'s level set, the others zero.

    The harness reserves the value zero for pruned weights, so the mask is
    applied before the quantizer (``quantize_``) fits its scale.
    """

    def project(weights):
        out = {}
        for n, w in weights.items():
            q = (w * masks[n]).clone()
            quantize_(q, quantization)
            out[n] = q
        return out

    return project


# ---------------------------------------------------------------- ADMM


class ADMMPenalty:
    """The W-step penalty rho/2 sum_i ||W_i - Z_i + U_i||^2, with Z and U and their updates.

    Pass it as ``trainer.fit(..., penalty=penalty)``; the Trainer adds it to
    the task loss every step, so its gradient is rho (W - Z + U) on each
    parameter.  ``z`` starts at ``project(W)`` when ``project`` is given (else
    at W), ``u`` at zero.  U is the *scaled* dual Y / rho: change rho with
    :meth:`set_rho`, which keeps Y (or resets), not by assigning ``rho``.
    """

    def __init__(self, params: Mapping[str, nn.Parameter], rho: float, project: Projection | None = None):
        self.params = dict(params)
        self.rho = rho
        self.z = {n: p.detach().clone() for n, p in self.params.items()}
        self.u = {n: torch.zeros_like(p) for n, p in self.params.items()}
        if project is not None:
            self.z = project({n: p.detach() for n, p in self.params.items()})

    def __call__(self, model) -> torch.Tensor:
        total = 0.0
        for n, p in self.params.items():
            total = total + ((p - self.z[n] + self.u[n]) ** 2).sum()
        return 0.5 * self.rho * total

    def multiplier(self) -> dict[str, torch.Tensor]:
        """The unscaled multiplier Y = rho U, layer by layer."""
        return {n: self.rho * u for n, u in self.u.items()}

    @torch.no_grad()
    def set_rho(self, rho: float, dual: DualRule = "rescale", project: Projection | None = None) -> None:
        """Change rho, and U with it by ``dual`` (see :data:`DualRule`).

        ``rescale``: U' = U rho / rho', so Y = rho U is unchanged (Boyd et
        al. 2011, doi 10.1561/2200000016, sec. 3.4.1).  ``reset``: Z =
        project(W), U = 0 (needs ``project``).  ``keep``: U unchanged.
        """
        if not (isinstance(rho, (int, float)) and rho > 0 and math.isfinite(rho)):
            raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
        if dual not in DUAL_RULES:
            raise ValueError(f"dual must be one of {', '.join(DUAL_RULES)}, got {dual!r}")
        if dual == "rescale":
            for u in self.u.values():
                u.mul_(self.rho / rho)
        elif dual == "reset":
            if project is None:
                raise ValueError("dual='reset' needs the projection (Z restarts at Proj(W))")
            self.z = project({n: p.detach() for n, p in self.params.items()})
            for u in self.u.values():
                u.zero_()
        self.rho = rho

    @torch.no_grad()
    def weight_norm(self) -> float:
        """||W|| over the layers (the scale the primal residual is judged against)."""
        return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in self.params.values()))

    @torch.no_grad()
    def z_step(self, project: Projection) -> float:
        """Z = Proj(W + U); returns the dual residual rho ||Z - Z_prev||."""
        z_new = project({n: p.detach() + self.u[n] for n, p in self.params.items()})
        dual = 0.0
        for n in self.params:
            dual += float(((z_new[n] - self.z[n]) ** 2).sum())
            self.z[n] = z_new[n]
        return self.rho * math.sqrt(dual)

    @torch.no_grad()
    def u_step(self) -> float:
        """U = U + W - Z (in place); returns the primal residual ||W - Z||."""
        primal = 0.0
        for n, p in self.params.items():
            diff = p.detach() - self.z[n]
            self.u[n] += diff
            primal += float((diff**2).sum())
        return math.sqrt(primal)

    def update(self, project: Projection) -> dict:
        """One Z-step then one U-step; returns ``primal_residual`` ||W - Z||,
        ``dual_residual`` rho ||Z - Z_prev|| and ``primal_relative`` ||W - Z|| / ||W||."""
        dual = self.z_step(project)
        primal = self.u_step()
        norm = self.weight_norm()
        return {"primal_residual": primal, "dual_residual": dual,
                "primal_relative": _relative(primal, norm)}


def run_admm_stages(
    trainer,
    penalty: ADMMPenalty,
    project: Projection,
    epochs: float,
    *,
    stages: int = 1,
    iterations: int = 1,
    rho_multiplier: float = 1.0,
    callbacks: Sequence[Callback] = (),
    dual: DualRule = "rescale",
    phase: str = "admm",
    probe: Callable[[], dict] | None = None,
) -> list[dict]:
    """``stages`` x ``iterations`` ADMM iterations on ``epochs`` of training; rho x ``rho_multiplier`` between stages.

    Each iteration is a W-step of its share of the phase's whole steps
    (floor(``epochs`` x steps per epoch), split i x total // (stages x iterations),
    so every step is spent even when a share is under one epoch) followed by
    ``penalty.update(project)``.  Between stages rho changes by
    :meth:`ADMMPenalty.set_rho` with rule ``dual`` (default ``rescale``: the
    multiplier Y = rho U is kept).  ``callbacks`` go to every W-step; the
    training counts as ``trainer.phase(phase)``.  Returns one record per
    iteration: stage, iteration, the rho it ran with and the residuals
    (see :func:`admm_convergence`), and ``hard_prune`` metrics when ``probe`` is given
    (:func:`hard_prune_probe`).
    """
    if dual not in DUAL_RULES:
        raise ValueError(f"dual must be one of {', '.join(DUAL_RULES)}, got {dual!r}")
    n = stages * iterations
    # the phase's whole steps, shared out over the periods (i * total // n): a period
    # shorter than a step no longer drops its share of the budget
    total = min(trainer.steps_for(epochs, rounding="down"), trainer.steps_left) if epochs > 0 else 0
    bounds = [i * int(total) // n for i in range(n + 1)]
    records = []
    with in_phase(trainer, phase):
        for stage in range(stages):
            if stage > 0 and rho_multiplier != 1.0:
                # ADMM-NN-S's dynamic regularisation: a harder pull towards Z each stage
                penalty.set_rho(penalty.rho * rho_multiplier, dual, project)
            for it in range(iterations):
                k = stage * iterations + it
                steps = bounds[k + 1] - bounds[k]
                if steps >= 1:
                    trainer.fit(steps=steps, penalty=penalty, callbacks=callbacks)
                res = penalty.update(project)
                records.append({"stage": stage, "iteration": it, "rho": penalty.rho, **res})
                if probe is not None:  # the hard projection's accuracy after this iteration
                    records[-1]["hard_prune"] = probe()
    return records


def _relative(residual: float, norm: float) -> float | None:
    # None (JSON null, not inf) when ||W|| = 0 and W != Z
    if norm > 0:
        return residual / norm
    return 0.0 if residual == 0 else None


def admm_convergence(records: Sequence[Mapping], params: Mapping[str, torch.Tensor] | None = None, *,
                     tol: float = 0.05) -> dict | None:
    """Did the ADMM loop settle?  ``converged`` is False when the final primal
    residual ||W - Z|| is above ``tol`` x ||W|| (W after the loop, from
    ``params``, else from the last record's ``primal_relative``), or when
    the primal residual rose over the last stage (its last iteration above
    its first).  Returns the numbers behind the verdict; None without records.
    """
    if not records:
        return None
    last = records[-1]
    final = float(last["primal_residual"])
    if params is not None:
        norm = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in params.values()))
        relative = _relative(final, norm)
    elif "primal_relative" in last:
        relative = last["primal_relative"]
    else:
        raise ValueError("admm_convergence needs params, or records with primal_relative (run_admm_stages's)")
    stage = last.get("stage", 0)
    stage_primal = [float(r["primal_residual"]) for r in records if r.get("stage", 0) == stage]
    rising = len(stage_primal) >= 2 and stage_primal[-1] > stage_primal[0]
    reasons = []
    if relative is None:
        reasons.append(f"final primal residual {final:.4g} with ||W|| = 0")
    elif relative > tol:
        reasons.append(f"final primal residual {final:.4g} is {relative:.3g} of ||W||, above tol {tol:g}")
    if rising:
        reasons.append(f"primal residual rose over the last stage: {stage_primal[0]:.4g} -> {stage_primal[-1]:.4g}")
    return {
        "converged": not reasons,
        "primal_final": final,
        "primal_relative": relative,
        "tol": tol,
        "last_stage_primal": stage_primal,
        "dual_final": float(last["dual_residual"]),
        "reasons": reasons,
    }


# ---------------------------------------------------------------- hard projection and retraining


@torch.no_grad()
def hard_project_(
    params: Mapping[str, nn.Parameter],
    masks_of: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Zero, in place, every weight outside ``masks_of(W)``; returns those masks."""
    masks = masks_of({n: p.detach() for n, p in params.items()})
    for n, p in params.items():
        p.mul_(masks[n].to(p.dtype))
    return dict(masks)


def hard_prune_probe(trainer, params: Mapping[str, nn.Parameter], project: Projection) -> dict:
    """Metrics of the hard projection of the current W, W itself left as it was:
    the "hard-pruned accuracy" of an iterate (evaluation only, no budget spent)."""
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        z = project({n: p.detach() for n, p in params.items()})
        for n, p in params.items():
            p.copy_(z[n])
    try:
        return short_metrics(trainer.evaluate())
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


def record_hard_prune(trainer) -> dict:
    """``trainer.record_hard_prune()`` (kept in ``trainer.checkpoints``), or the
    short metrics of ``trainer.evaluate()`` for a trainer without checkpoints."""
    record = getattr(trainer, "record_hard_prune", None)
    return dict(record()) if record is not None else short_metrics(trainer.evaluate())


def hard_prune_and_retrain(
    trainer,
    params: Mapping[str, nn.Parameter],
    masks_of: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]],
    epochs: float,
    *,
    phase: str = "retrain",
) -> tuple[dict[str, torch.Tensor], dict]:
    """Hard projection (:func:`hard_project_`), an evaluation, then masked retraining.

    The evaluation is the trainer's ``hard_prune`` checkpoint.  The
    retraining (``KeepMasked``: pruned weights get no gradient and stay
    zero) runs for ``epochs`` within the budget, as ``trainer.phase(phase)``.
    Returns the masks and the short metrics of the hard-pruned model before
    retraining (what an ADMM paper calls accuracy without retraining).
    """
    masks = hard_project_(params, masks_of)
    metrics = record_hard_prune(trainer)
    with in_phase(trainer, phase):
        fit_within_budget(trainer, epochs, callbacks=[KeepMasked(masks)])
    return masks, metrics


class Freeze(Callback):
    """Only ``trainable`` weights learn; the others keep the values they had when
    the callback was made, weight decay and momentum included."""

    def __init__(self, params: Mapping[str, nn.Parameter], trainable: Mapping[str, torch.Tensor]):
        self.params = dict(params)
        self.trainable = {n: m.to(self.params[n].dtype) for n, m in trainable.items()}
        self.frozen = {n: p.detach().clone() for n, p in self.params.items()}

    def after_backward(self, trainer):
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.trainable[n])

    @torch.no_grad()
    def after_step(self, trainer):
        # SGD's weight decay and momentum move weights with zero gradient; put them back
        for n, p in self.params.items():
            p.copy_(torch.where(self.trainable[n].bool(), p, self.frozen[n]))


def progressive_mapping(
    trainer,
    params: Mapping[str, nn.Parameter],
    masks: Mapping[str, torch.Tensor],
    project: Projection,
    epochs: float,
    *,
    fraction: float,
    rounds: int,
    phase: str = "mapping",
) -> None:
    """ADMM-NN's progressive masked mapping of the weights onto ``project``'s set.

    Starting with the weights kept by ``masks`` free, each of ``rounds``
    rounds snaps the ``fraction`` of still-free weights closest to their
    projection (at least one per layer; all of them in the last round) and
    freezes them; between rounds the free ones retrain (:class:`Freeze`) for
    ``epochs / (rounds - 1)`` (as ``trainer.phase(phase)``).  A final
    projection then puts every weight on the set.
    """
    free = {n: masks[n].clone().bool() for n in params}
    for r in range(rounds):
        with torch.no_grad():
            target_q = project({n: p.detach() for n, p in params.items()})
            for n, p in params.items():
                dist = (p.detach() - target_q[n]).abs()
                candidates = free[n]
                count = int(candidates.sum())
                if count == 0:
                    continue
                take = count if r == rounds - 1 else max(1, math.ceil(fraction * count))
                scores = torch.where(candidates, dist, torch.full_like(dist, math.inf)).flatten()
                chosen = torch.argsort(scores, stable=True)[:take]
                flat_free = free[n].flatten()
                flat_free[chosen] = False
                free[n] = flat_free.view_as(free[n])
                p.copy_(torch.where(free[n], p, target_q[n]))
        if r < rounds - 1:
            with in_phase(trainer, phase):
                fit_within_budget(trainer, epochs / (rounds - 1), callbacks=[Freeze(params, free)])
    # the frozen weights were snapped; a final projection settles every value on the level set
    with torch.no_grad():
        final = project({n: p.detach() for n, p in params.items()})
        for n, p in params.items():
            p.copy_(final[n])
