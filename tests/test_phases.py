"""The trainer's record of how a run spent its budget (phases) and what the model scored on
the way (checkpoints, hard_prune first of all), and every ADMM-family method filling it in."""

import pytest
import torch

from prunebench import OptimizerConfig, Trainer
from prunebench.projections import project_masks
from prunebench.recipes import hard_prune_and_retrain
from prunebench.testing import compress_tiny
from prunebench.trainer import HARD_PRUNE, UNASSIGNED


def _trainer(task, budget=3.0):
    torch.manual_seed(0)
    return Trainer(task, task.build_model(), optimizer=OptimizerConfig(lr=0.01), budget_epochs=budget,
                   progress=False)


def test_steps_are_attributed_to_the_innermost_phase(synthetic_task):
    tr = _trainer(synthetic_task)
    tr.fit(steps=1)
    with tr.phase("admm"):
        tr.fit(steps=2)
        with tr.phase("inner"):
            tr.fit(steps=3)
        tr.fit(steps=1)
    with tr.phase("retrain"):
        pass  # entered, trained nothing: still on record
    with tr.phase("admm"):
        tr.fit(steps=1)  # the same name again adds up
    assert tr.phases == {UNASSIGNED: 1, "admm": 4, "inner": 3, "retrain": 0}
    assert list(tr.phases) == [UNASSIGNED, "admm", "inner", "retrain"]
    assert sum(tr.phases.values()) == tr.steps_taken == 8


def test_a_failing_phase_is_left_and_its_steps_stay_counted(synthetic_task):
    tr = _trainer(synthetic_task, budget=0.5)
    with pytest.raises(RuntimeError, match="boom"):
        with tr.phase("a"):
            tr.fit(steps=1)
            raise RuntimeError("boom")
    tr.fit(steps=1)
    assert tr.phases == {"a": 1, UNASSIGNED: 1}
    with pytest.raises(ValueError, match="phase name must be a non-empty string, got ''"):
        with tr.phase(""):
            pass


def test_checkpoint_evaluates_without_spending_budget(synthetic_task):
    tr = _trainer(synthetic_task)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    metrics = tr.record_hard_prune()
    assert tr.checkpoints == {HARD_PRUNE: metrics} and "top1" in metrics
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert tr.steps_taken == 0 and tr.phases == {}
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in tr.model.parameters())  # evaluated under no_grad
    tr.fit(steps=4)
    assert tr.checkpoint("after") == tr.checkpoints["after"] and list(tr.checkpoints) == [HARD_PRUNE, "after"]
    with pytest.raises(ValueError, match="checkpoint name must be a non-empty string, got None"):
        tr.checkpoint(None)


def test_hard_prune_and_retrain_records_the_checkpoint_and_the_phase(synthetic_task, dense):
    tr = _trainer(synthetic_task, budget=1.0)
    tr.model.load_state_dict(dense)
    params = {"conv2": tr.model.conv2.weight, "fc1": tr.model.fc1.weight}
    keep = sum(p.numel() for p in params.values()) // 8
    _, metrics = hard_prune_and_retrain(tr, params, lambda w: project_masks(w, "filter", keep), 0.5, phase="ft")
    assert tr.checkpoints[HARD_PRUNE] == metrics and tr.phases == {"ft": 2}


# every method in this brief: (name, structure, scheme, phases it trains in, in order)
METHODS = [
    ("admm", "unstructured", "uniform", ["admm", "retrain", "quant_admm", "mapping"]),
    ("admm_memristor", "block:4x4", "levels", ["admm", "retrain", "quant_admm", "mapping"]),
    ("pattern", "pattern", None, ["admm", "retrain"]),
    ("pe_ternary", "pe:4", "ternary", ["sparsify", "finetune"]),
    ("slr", "unstructured", None, ["slr", "retrain"]),
    ("autoprune", "unstructured", None, ["auxiliary", "retrain"]),
]


@pytest.mark.parametrize("name, structure, scheme, phases", METHODS, ids=[m[0] for m in METHODS])
def test_every_method_records_hard_prune_and_its_phases(name, structure, scheme, phases):
    from prunebench import registry

    cls = registry.methods.get(name)
    config = None
    if name in ("admm", "admm_memristor"):
        config = cls.Config(stages=1, iterations=2, quant_iterations=1, mapping_rounds=2,
                            **({"mismatch_trials": 1} if name == "admm_memristor" else {}))
    _, _, trainer, guarded = compress_tiny(cls(config), name=name, structure=structure, scheme=scheme)
    assert list(trainer.phases) == phases, trainer.phases
    assert UNASSIGNED not in trainer.phases and sum(trainer.phases.values()) == trainer.steps_taken > 0
    hard = trainer.checkpoints[HARD_PRUNE]
    assert "top1" in hard and guarded.info["hard_prune_metrics"] == hard


def test_pattern_records_convergence_through_the_shared_loop():
    from prunebench.methods.pattern import PatternConfig, PatternPruning

    _, _, trainer, guarded = compress_tiny(PatternPruning(PatternConfig(stages=2, iterations=2, rho=0.1)),
                                           name="pattern", structure="pattern")
    info = guarded.info
    assert [r["rho"] for r in info["residuals"]] == pytest.approx([0.1, 0.1, 1.0, 1.0])
    assert all({"primal_residual", "dual_residual", "primal_relative"} <= set(r) for r in info["residuals"])
    assert info["converged"] is info["convergence"]["converged"]
    assert info["convergence"]["last_stage_primal"] == [r["primal_residual"] for r in info["residuals"][2:]]
    with pytest.raises(ValueError, match="halve"):
        PatternConfig(dual_on_rho_change="halve")


@pytest.mark.parametrize("method", ["admm", "slr"])
def test_hard_pruned_accuracy_per_iteration_leaves_the_run_unchanged(synthetic_task, method):
    """track_hard_prune evaluates the hard projection after every iteration and
    restores W: the run's weights are the same as without it."""
    from prunebench import Structure, Target, Trainer
    from prunebench.config import parse
    from prunebench.registry import methods

    cls = methods.get(method)
    settings = {"rho": 0.1, "iterations": 3}
    if method == "admm":
        settings.update(quantize=False, stages=1, rho_multiplier=1.0)
    out = {}
    for track in (False, True):
        torch.manual_seed(0)
        model = synthetic_task.build_model()
        target = Target(layers=("conv1", "conv2", "fc1", "fc2"), structure=Structure.parse("unstructured"), rate=8.0)
        trainer = Trainer(synthetic_task, model, budget_epochs=4, seed=0, progress=False)
        info = cls(parse(cls.Config, {**settings, "track_hard_prune": track})).compress(model, target, trainer)
        out[track] = (info, {k: v.clone() for k, v in model.state_dict().items()})
    per_iter = out[True][0]["residuals" if method == "admm" else "iterations"]
    assert len(per_iter) == 3 and all("top1" in r["hard_prune"] for r in per_iter)
    assert all("hard_prune" not in r for r in out[False][0]["residuals" if method == "admm" else "iterations"])
    for k, v in out[False][1].items():
        assert torch.equal(v, out[True][1][k]), k


@pytest.mark.parametrize("name", ["gmp", "imp_lrr"])
def test_gradual_baselines_record_hard_prune_at_the_target_sparsity(name, monkeypatch):
    from prunebench import registry
    from prunebench.trainer import Trainer

    seen = []
    real = Trainer.record_hard_prune

    def spy(self):
        nonzero = sum(int((p != 0).sum()) for n, p in self.model.named_parameters() if n.endswith("weight"))
        seen.append((self.steps_taken, nonzero))
        return real(self)

    monkeypatch.setattr(Trainer, "record_hard_prune", spy)
    cls = registry.methods.get(name)
    model, target, trainer, _ = compress_tiny(cls(None), name=name, structure="unstructured", scheme=None)
    assert "top1" in trainer.checkpoints[HARD_PRUNE] and len(seen) == 1
    steps_then, nonzero_then = seen[0]
    final = sum(int((p != 0).sum()) for n, p in model.named_parameters() if n.endswith("weight"))
    assert nonzero_then == final  # the target's sparsity was already reached (masks only hold after it)
    assert steps_then < trainer.steps_taken  # and training went on after the checkpoint
