"""The public ADMM recipes (prunebench.recipes), used directly as a plugin author would."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from prunebench import KeepMasked, Method, Quantization, Structure
from prunebench.projections import project_masks
from prunebench.recipes import (
    ADMMPenalty,
    Freeze,
    admm_convergence,
    fit_within_budget,
    hard_prune_and_retrain,
    hard_project_,
    level_projection,
    progressive_mapping,
    run_admm_stages,
    short_metrics,
    sparse_projection,
    split_budget,
    target_weights,
)
from prunebench.testing import MethodConformance


class _TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)


def _params(seed=0):
    torch.manual_seed(seed)
    model = _TwoLayer()
    return model, {"fc1": model.fc1.weight, "fc2": model.fc2.weight}


def _unstructured(keep):
    return lambda w: project_masks(w, "unstructured", keep)


class _FakeTrainer:
    """Records fit calls; the Trainer contract as far as the recipes use it."""

    class task:
        @staticmethod
        def steps_per_epoch():
            return 4

    def __init__(self, budget=10.0, metrics=None):
        self.steps_left = int(budget * 4)
        self.calls = []
        self.metrics = metrics or {"top1": 50.0}

    @property
    def epochs_left(self):
        return self.steps_left / 4

    def steps_for(self, epochs, rounding="exact"):
        assert rounding == "down"
        return int(epochs * 4 + 1e-9)

    def fit(self, epochs=None, *, steps=None, **kwargs):
        steps = steps if steps is not None else self.steps_for(epochs, "down")
        self.calls.append((steps / 4, kwargs))  # recorded in epochs
        self.steps_left -= steps

    def evaluate(self):
        return dict(self.metrics)


# ---------------------------------------------------------------- helpers


def test_short_metrics_keeps_scalars_only():
    assert short_metrics({"top1": 91.5, "n": 3, "per_class": [1.0, 2.0], "name": "x"}) == {"top1": 91.5, "n": 3}


def test_fit_within_budget_caps_and_skips_sub_step_fits():
    trainer = _FakeTrainer(budget=1.0)
    fit_within_budget(trainer, 0.2)  # 0.8 of a step: nothing
    assert trainer.calls == []
    fit_within_budget(trainer, 5.0, penalty="p")
    assert trainer.calls == [(1.0, {"penalty": "p"})]  # capped at the epochs left


def test_split_budget_normalises_shares():
    assert split_budget(10.0, {"a": 3, "b": 1, "c": 0}) == {"a": 7.5, "b": 2.5, "c": 0.0}
    assert split_budget(10.0, {"a": 0, "b": 0}) == {"a": 0.0, "b": 0.0}


def test_target_weights_names_the_target_layers():
    model, _ = _params()

    class T:
        layers = ("fc2",)

    assert list(target_weights(model, T)) == ["fc2"] and target_weights(model, T)["fc2"] is model.fc2.weight


# ---------------------------------------------------------------- ADMM pieces


def test_penalty_value_and_gradient_are_rho_times_w_minus_z_plus_u():
    model, params = _params()
    penalty = ADMMPenalty(params, rho=0.3, project=sparse_projection(_unstructured(20)))
    for n, p in params.items():
        penalty.u[n] = torch.randn_like(p)
    value = penalty(model)
    expected = 0.15 * sum(float(((p.detach() - penalty.z[n] + penalty.u[n]) ** 2).sum()) for n, p in params.items())
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    value.backward()
    for n, p in params.items():
        torch.testing.assert_close(p.grad, 0.3 * (p.detach() - penalty.z[n] + penalty.u[n]))


def test_penalty_starts_at_the_projection_and_zero_dual():
    _, params = _params()
    penalty = ADMMPenalty(params, rho=1.0, project=sparse_projection(_unstructured(10)))
    assert sum(int((z != 0).sum()) for z in penalty.z.values()) == 10
    assert all(not u.any() for u in penalty.u.values())


def test_z_step_projects_w_plus_u_onto_the_budget():
    _, params = _params()
    penalty = ADMMPenalty(params, rho=0.5)
    for n, p in params.items():
        penalty.u[n] = torch.randn_like(p)
    z_prev = {n: z.clone() for n, z in penalty.z.items()}
    w_plus_u = {n: p.detach() + penalty.u[n] for n, p in params.items()}
    dual = penalty.z_step(sparse_projection(_unstructured(12)))
    assert sum(int((z != 0).sum()) for z in penalty.z.values()) == 12
    # the 12 largest |W + U| survive, unchanged
    flat = torch.cat([v.flatten() for v in w_plus_u.values()])
    kept = torch.cat([z.flatten() for z in penalty.z.values()])
    top = flat.abs().topk(12).indices
    torch.testing.assert_close(kept[top], flat[top])
    expected = 0.5 * sum(float(((penalty.z[n] - z_prev[n]) ** 2).sum()) for n in params) ** 0.5
    assert dual == pytest.approx(expected)


def test_u_step_adds_w_minus_z():
    _, params = _params()
    penalty = ADMMPenalty(params, rho=0.5, project=sparse_projection(_unstructured(12)))
    for n, p in params.items():
        penalty.u[n] = torch.randn_like(p)
    u_prev = {n: u.clone() for n, u in penalty.u.items()}
    primal = penalty.u_step()
    for n, p in params.items():
        torch.testing.assert_close(penalty.u[n], u_prev[n] + p.detach() - penalty.z[n])
    expected = sum(float(((p.detach() - penalty.z[n]) ** 2).sum()) for n, p in params.items()) ** 0.5
    assert primal == pytest.approx(expected) and primal > 0


def test_stage_schedule_splits_epochs_and_grows_rho():
    _, params = _params()
    trainer = _FakeTrainer(budget=10.0)
    project = sparse_projection(_unstructured(12))
    penalty = ADMMPenalty(params, rho=0.01, project=project)
    cb = KeepMasked({})
    records = run_admm_stages(trainer, penalty, project, 6.0, stages=3, iterations=2, rho_multiplier=10.0,
                              callbacks=[cb])
    assert [(r["stage"], r["iteration"]) for r in records] == [(s, i) for s in range(3) for i in range(2)]
    assert [r["rho"] for r in records] == pytest.approx([0.01, 0.01, 0.1, 0.1, 1.0, 1.0])
    assert penalty.rho == pytest.approx(1.0)  # changed between stages only
    assert [c[0] for c in trainer.calls] == [1.0] * 6
    assert all(c[1]["penalty"] is penalty and list(c[1]["callbacks"]) == [cb] for c in trainer.calls)
    assert all({"primal_residual", "dual_residual", "primal_relative"} <= set(r) for r in records)


# ---------------------------------------------------------------- the dual when rho changes


def test_rescale_keeps_the_unscaled_multiplier_across_a_rho_change():
    _, params = _params()
    project = sparse_projection(_unstructured(12))
    penalty = ADMMPenalty(params, rho=0.1, project=project)
    for n, p in params.items():
        penalty.u[n] = torch.randn_like(p)
    y_before = {n: y.clone() for n, y in penalty.multiplier().items()}
    penalty.set_rho(1.0)  # rescale is the default
    assert penalty.rho == 1.0
    for n in params:
        torch.testing.assert_close(penalty.multiplier()[n], y_before[n])
        torch.testing.assert_close(penalty.u[n], y_before[n] / 1.0)
    # at W = Z the penalty's gradient is the multiplier Y: the same before and after the change
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(penalty.z[n])
    penalty(None).backward()
    for n, p in params.items():
        torch.testing.assert_close(p.grad, y_before[n])


def test_keep_and_reset_rules():
    _, params = _params()
    project = sparse_projection(_unstructured(12))
    penalty = ADMMPenalty(params, rho=0.1, project=project)
    for n, p in params.items():
        penalty.u[n] = torch.randn_like(p)
    u = {n: v.clone() for n, v in penalty.u.items()}
    penalty.set_rho(1.0, "keep")  # version 1: Y jumps by rho'/rho
    for n in params:
        torch.testing.assert_close(penalty.u[n], u[n])
        torch.testing.assert_close(penalty.multiplier()[n], 10 * 0.1 * u[n])
    with torch.no_grad():
        params["fc1"].add_(1.0)
    penalty.set_rho(10.0, "reset", project)
    assert all(not v.any() for v in penalty.u.values())
    expected = project({n: p.detach() for n, p in params.items()})
    for n in params:
        torch.testing.assert_close(penalty.z[n], expected[n])
    with pytest.raises(ValueError, match="needs the projection"):
        penalty.set_rho(1.0, "reset")
    with pytest.raises(ValueError, match="dual must be one of rescale, reset, keep, got 'halve'"):
        penalty.set_rho(1.0, "halve")
    with pytest.raises(ValueError, match="rho must be a finite number > 0, got -1"):
        penalty.set_rho(-1)


class _GradientDescent:
    """Exact-enough W-steps for a least-squares toy: plain gradient descent on f(W) + penalty."""

    class task:
        @staticmethod
        def steps_per_epoch():
            return 1

    def __init__(self, w, f, lr):
        self.w, self.f, self.lr = w, f, lr
        self.steps_left = 10**9

    def steps_for(self, epochs, rounding="exact"):
        return int(epochs + 1e-9)

    def fit(self, epochs=None, *, steps, penalty, callbacks=()):
        for _ in range(steps):
            self.w.grad = None
            (self.f(self.w) + penalty(None)).backward()
            with torch.no_grad():
                self.w -= self.lr * self.w.grad
        self.steps_left -= steps


def _box_least_squares(dual):
    """min 1/2 ||A w - b||^2 s.t. |w| <= 0.5 (convex, so ADMM converges at any fixed rho), by
    3 stages x 4 ADMM iterations with rho 0.1 -> 1 -> 10."""
    import math

    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 20, generator=g, dtype=torch.float64) / math.sqrt(30)
    b = a @ torch.randn(20, generator=g, dtype=torch.float64)
    w = nn.Parameter(torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1).clone())

    def project(ws):
        return {n: v.clamp(-0.5, 0.5) for n, v in ws.items()}

    penalty = ADMMPenalty({"w": w}, 0.1, project=project)
    trainer = _GradientDescent(w, lambda v: 0.5 * ((a @ v - b) ** 2).sum(), lr=0.05)
    records = run_admm_stages(trainer, penalty, project, 3 * 4 * 200, stages=3, iterations=4,
                              rho_multiplier=10.0, dual=dual)
    return [[r["primal_residual"] for r in records if r["stage"] == s] for s in range(3)], records, {"w": w}


def test_primal_residual_falls_across_stages_with_the_rescaled_dual():
    # rescale: 0.96 at the end of stage 0, 0.47 right after rho x10, 0.048, then 0.0057 ... 0.0005
    stages, records, params = _box_least_squares("rescale")
    for prev, nxt in zip(stages, stages[1:]):
        assert nxt[0] < prev[-1], stages  # no jump when rho changes
        assert nxt[-1] < 0.2 * prev[-1], stages
    conv = admm_convergence(records, params, tol=0.01)
    assert conv["converged"] and conv["primal_relative"] < 1e-3, conv


def test_primal_residual_jumps_at_every_rho_change_when_u_is_kept():
    # keep (version 1): 0.96 -> 2.01 when rho x10, 0.25 -> 1.16 at the next change
    stages, records, params = _box_least_squares("keep")
    for prev, nxt in zip(stages, stages[1:]):
        assert nxt[0] > 1.5 * prev[-1], stages
    # reset (the authors' stages) restarts from Proj(W): it falls too, slower than rescale
    reset, _, _ = _box_least_squares("reset")
    assert reset[1][-1] < 0.2 * reset[0][-1] and reset[2][-1] < reset[1][-1], reset


def test_convergence_flags_a_large_or_rising_primal_residual():
    _, params = _params()
    norm = sum(float((p.detach() ** 2).sum()) for p in params.values()) ** 0.5
    recs = [{"stage": 0, "iteration": 0, "primal_residual": 0.2 * norm, "dual_residual": 1.0},
            {"stage": 1, "iteration": 0, "primal_residual": 0.01 * norm, "dual_residual": 0.5},
            {"stage": 1, "iteration": 1, "primal_residual": 0.02 * norm, "dual_residual": 0.1}]
    conv = admm_convergence(recs, params, tol=0.05)
    assert conv["converged"] is False and conv["primal_relative"] == pytest.approx(0.02)
    assert conv["last_stage_primal"] == pytest.approx([0.01 * norm, 0.02 * norm])
    assert conv["reasons"] == [f"primal residual rose over the last stage: {0.01 * norm:.4g} -> {0.02 * norm:.4g}"]
    recs[-1]["primal_residual"] = 0.005 * norm
    assert admm_convergence(recs, params, tol=0.05)["converged"] is True
    conv = admm_convergence(recs, params, tol=0.001)
    assert conv["converged"] is False and "above tol 0.001" in conv["reasons"][0]
    assert admm_convergence([], params) is None


# ---------------------------------------------------------------- hard projection, retraining, mapping


def test_hard_project_zeroes_outside_the_masks():
    _, params = _params()
    masks = hard_project_(params, _unstructured(9))
    assert sum(int(m.sum()) for m in masks.values()) == 9
    for n, p in params.items():
        assert not bool(p[~masks[n]].any()) and bool(p[masks[n]].all())


def test_hard_prune_and_retrain_evaluates_before_retraining(synthetic_task, dense):
    from prunebench import OptimizerConfig, Trainer

    torch.manual_seed(0)
    model = synthetic_task.build_model()
    model.load_state_dict(dense)
    params = {"conv2": model.conv2.weight, "fc1": model.fc1.weight}
    keep = sum(p.numel() for p in params.values()) // 8
    trainer = Trainer(synthetic_task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=1.0, progress=False)
    masks, metrics = hard_prune_and_retrain(trainer, params, lambda w: project_masks(w, "filter", keep), 1.0)
    assert "top1" in metrics and trainer.epochs_spent == pytest.approx(1.0)
    for n, p in params.items():
        assert not bool(p[~masks[n]].any())  # retraining kept pruned weights at zero
    assert sum(int((p != 0).sum()) for p in params.values()) <= keep


def test_level_projection_keeps_zero_for_pruned_weights():
    _, params = _params()
    masks = project_masks({n: p.detach() for n, p in params.items()}, "unstructured", 20)
    q = level_projection(masks, Quantization(2, "ternary"))({n: p.detach() for n, p in params.items()})
    for n, z in q.items():
        assert not bool(z[~masks[n]].any())
        assert torch.unique(z.abs()).numel() <= 2  # {0, a}


def test_freeze_keeps_frozen_weights_through_sgd():
    model, params = _params()
    trainable = {n: torch.rand(p.shape) > 0.5 for n, p in params.items()}
    before = {n: p.detach().clone() for n, p in params.items()}
    cb = Freeze(params, trainable)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        (model.fc2(model.fc1(torch.randn(4, 6))) ** 2).sum().backward()
        cb.after_backward(None)
        opt.step()
        cb.after_step(None)
    for n, p in params.items():
        assert torch.equal(p.detach()[~trainable[n]], before[n][~trainable[n]])
        assert not torch.equal(p.detach()[trainable[n]], before[n][trainable[n]])


def test_progressive_mapping_ends_on_the_level_set():
    _, params = _params()
    masks = hard_project_(params, _unstructured(24))
    quant = Quantization(2, "uniform")
    trainer = _FakeTrainer(budget=10.0)
    progressive_mapping(trainer, params, masks, level_projection(masks, quant), 3.0, fraction=0.3, rounds=4)
    assert [c[0] for c in trainer.calls] == [1.0] * 3  # rounds - 1 retraining periods
    assert all(isinstance(c[1]["callbacks"][0], Freeze) for c in trainer.calls)
    for n, p in params.items():
        assert not bool(p[~masks[n]].any())
        assert torch.unique(p.detach()[masks[n]]).numel() <= 4  # 2 bits


# ---------------------------------------------------------------- a third-party method built from the recipes


@dataclass(frozen=True)
class _RecipeConfig:
    rho: float = 1e-2
    stages: int = 2
    iterations: int = 2


class RecipeADMM(Method):
    """What a plugin author writes: ADMM pruning + ternary-or-uniform mapping, all from recipes."""

    Config = _RecipeConfig
    structures = ("unstructured", "filter")
    quantizes = True
    quantization_schemes = ("uniform", "ternary")

    def compress(self, model, target, trainer):
        cfg = self.config
        params = target_weights(model, target)
        keep = target.keep_budget({n: p.numel() for n, p in params.items()})

        def masks_of(w):
            return project_masks(w, target.structure, keep)

        epochs = split_budget(trainer.epochs_left, {"admm": 2, "retrain": 1, "map": 1})
        project = sparse_projection(masks_of)
        penalty = ADMMPenalty(params, cfg.rho, project=project)
        residuals = run_admm_stages(trainer, penalty, project, epochs["admm"], stages=cfg.stages,
                                    iterations=cfg.iterations, rho_multiplier=10.0)
        masks, metrics = hard_prune_and_retrain(trainer, params, masks_of, epochs["retrain"])
        progressive_mapping(trainer, params, masks, level_projection(masks, target.quantization), epochs["map"],
                            fraction=0.5, rounds=2)
        return {"residuals": residuals, "hard_prune_metrics": metrics}


class TestRecipeMethod(MethodConformance):
    method_class = RecipeADMM


def test_recipe_method_trains_and_records_residuals():
    run = TestRecipeMethod()
    model, target, trainer, info = run.run_method("filter", "ternary")
    assert len(info["residuals"]) == 4 and "top1" in info["hard_prune_metrics"]
    assert trainer.steps_taken > 0
    assert Structure.parse("filter") == target.structure
