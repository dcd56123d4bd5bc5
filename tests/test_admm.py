"""ADMM-NN / ADMM-NN-S on a tiny model: targets met, residuals shrink."""

import pytest
import torch

from prunebench import OptimizerConfig, Quantization, Structure, Target, Trainer
from prunebench.methods.admm import ADMM, ADMMConfig, MemristorADMM, MemristorConfig
from prunebench.verify import verify

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _run(task, dense, structure, rate=4.0, quant=Quantization(4), config=None, epochs=2.0, method_cls=ADMM):
    torch.manual_seed(0)
    model = task.build_model()
    model.load_state_dict(dense)
    method = method_cls(config or ADMMConfig(stages=2, iterations=3, rho=1e-2))
    target = Target(layers=LAYERS, structure=Structure.parse(structure), rate=rate,
                    quantization=quant if method.quantizes else None)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=epochs, seed=0, progress=False)
    info = method.compress(model, target, trainer)
    return model, target, trainer, info


@pytest.mark.parametrize("structure", ["unstructured", "filter", "channel", "column", "kernel"])
def test_admm_meets_target_for_every_structure(synthetic_task, dense, structure):
    model, target, trainer, info = _run(synthetic_task, dense, structure)
    check = verify(model, Target(layers=target.layers, structure=target.structure, rate=target.rate,
                                 quantization=Quantization(4)), method="admm")
    assert check.achieved_rate >= 4.0
    assert trainer.epochs_spent <= 2.0 + 1e-9
    assert len(info["residuals"]) == 6 and info["quant_residuals"]


def test_primal_residual_shrinks(synthetic_task, dense):
    # enough SGD steps per ADMM period, rho doubling per stage (lr * rho / (1 - momentum) stays < 1)
    _, _, _, info = _run(synthetic_task, dense, "unstructured", rate=8.0, epochs=60.0,
                         config=ADMMConfig(stages=3, iterations=3, rho=1.0, rho_multiplier=2.0, quantize=False))
    primal = [r["primal_residual"] for r in info["residuals"]]
    assert primal[-1] < 0.25 * primal[0], primal
    assert [r["rho"] for r in info["residuals"]][::3] == pytest.approx([1.0, 2.0, 4.0])


def test_prune_only_leaves_quantization_to_the_harness(synthetic_task, dense):
    method = ADMM(ADMMConfig(quantize=False))
    assert method.quantizes is False
    model, target, _, info = _run(synthetic_task, dense, "filter", config=ADMMConfig(quantize=False, stages=1, iterations=2))
    assert target.quantization is None and info["quant_residuals"] == []
    levels = max(int(torch.unique(dict(model.named_modules())[n].weight).numel()) for n in LAYERS)
    assert levels > 16  # not quantized by the method


def test_quantize_only_uses_the_standard_pruner(synthetic_task, dense):
    model, target, _, info = _run(synthetic_task, dense, "unstructured",
                                  config=ADMMConfig(prune=False, quant_iterations=2))
    assert info["residuals"] == []
    verify(model, Target(layers=target.layers, rate=4.0, quantization=Quantization(4)))


def test_config_checks_echo_the_bad_value():
    with pytest.raises(ValueError, match="-1"):
        ADMMConfig(rho=-1)
    with pytest.raises(ValueError, match="prune or quantize"):
        ADMMConfig(prune=False, quantize=False)


def test_memristor_preset_blocks_levels_and_mismatch(synthetic_task, dense):
    levels = Quantization(bits=3, scheme="levels", levels=(0.02, 0.05, 0.1))
    cfg = MemristorConfig(stages=1, iterations=2, mismatch_sigma=0.2, mismatch_trials=2)
    model, target, _, info = _run(synthetic_task, dense, "block:4x4", quant=levels, config=cfg, method_cls=MemristorADMM)
    verify(model, Target(layers=target.layers, structure=target.structure, rate=4.0, quantization=levels))
    assert info["mismatch_sigma"] == 0.2 and "top1" in info["metrics_with_mismatch"]
    assert MemristorADMM.structures == ("block",)


def test_rescaled_dual_lets_the_primal_residual_fall_across_stages(synthetic_task, dense):
    """rho 0.1 -> 1 -> 10 on the trained model at 16x.  Version 1 kept U when rho grew, so the
    multiplier Y = rho U jumped x10 and W was pulled off Z: 7.03 -> 18.36 at the second change.
    Rescaled (the default), the stage ends fall: 8.3, 6.0, 2.1."""
    runs = {}
    for rule in ("rescale", "keep"):
        cfg = ADMMConfig(quantize=False, rho=0.1, rho_multiplier=10.0, stages=3, iterations=2, dual_on_rho_change=rule)
        _, _, _, info = _run(synthetic_task, dense, "unstructured", rate=16.0, epochs=24.0, config=cfg)
        runs[rule] = [[r["primal_residual"] for r in info["residuals"] if r["stage"] == s] for s in range(3)]
        assert all(r["dual_residual"] >= 0 for r in info["residuals"])
    ends = [s[-1] for s in runs["rescale"]]
    assert ends[1] < ends[0] and ends[2] < 0.5 * ends[0], runs
    assert any(nxt[0] > 2 * prev[-1] for prev, nxt in zip(runs["keep"], runs["keep"][1:])), runs


def test_convergence_and_budget_per_phase_are_recorded(synthetic_task, dense):
    _, _, trainer, info = _run(synthetic_task, dense, "unstructured", epochs=4.0)
    conv = info["convergence"]
    assert info["converged"] is conv["converged"]
    assert {"primal_final", "primal_relative", "tol", "last_stage_primal", "reasons"} <= set(conv)
    assert conv["primal_final"] == info["residuals"][-1]["primal_residual"]
    # 16 steps: nothing settles, and the record says why
    assert conv["converged"] is False and conv["reasons"]
    assert info["quant_convergence"] is not None
    # shares 0.5 / 0.2 / 0.3 of 16 steps: the ADMM phase's 8 whole steps shared over its 6
    # periods (1 or 2 each), retrain 3.2 -> 3, quant ADMM 2, mapping 2 x 1.2 -> 2 (1 step unspent)
    assert trainer.phases == {"admm": 8, "retrain": 3, "quant_admm": 2, "mapping": 2}
    assert sum(trainer.phases.values()) == trainer.steps_taken == 15
    assert trainer.checkpoints["hard_prune"] == info["hard_prune_metrics"] and "top1" in info["hard_prune_metrics"]
    with pytest.raises(ValueError, match="halve"):
        ADMMConfig(dual_on_rho_change="halve")
