"""SLR pruning on a tiny model: targets met, stepsize rule, gated multiplier updates."""

import math

import pytest
import torch

from prunebench import Quantization, Structure, Target, Trainer
from prunebench.methods.slr import DEFAULT_ITERATIONS, SLR, SLRConfig, _SLRState, slr_alpha, slr_schedule
from prunebench.projections import project
from prunebench.quant import quantize_
from prunebench.verify import verify

from conftest import compress_synthetic

LAYERS = ("conv1", "conv2", "fc1", "fc2")
BUDGET = 2.0


def _run(task, dense, structure="unstructured", rate=4.0, config=None, layers=LAYERS, seed=0):
    return compress_synthetic(task, dense, SLR(config or SLRConfig(period_epochs=0.5)), structure=structure, rate=rate, layers=layers,
                              seed=seed, budget=BUDGET)


# N:M fixes its own budget: 2:4 stores 30,790 of these 60,620 weights (conv1 has one input channel)
RATES = {"2:4": 1.9}


@pytest.mark.parametrize("structure", ["unstructured", "filter", "channel", "column", "kernel", "pattern",
                                       "block:4x4", "pe:4", "2:4"])
def test_meets_target_for_every_structure(synthetic_task, dense, structure):
    assert Structure.parse(structure).kind in SLR.structures
    rate = RATES.get(structure, 4.0)
    model, target, trainer, info = _run(synthetic_task, dense, structure, rate)
    modules = dict(model.named_modules())
    for n in LAYERS:  # the harness's standard quantizer on top of the prune-only method
        quantize_(modules[n].weight.data, Quantization(4))
    check = verify(model, Target(layers=LAYERS, structure=target.structure, rate=rate,
                                 quantization=Quantization(4)), method="slr")
    assert check.achieved_rate >= rate
    assert trainer.epochs_spent <= BUDGET + 1e-9
    assert len(info["iterations"]) == 3  # 7 SLR steps (1 retrain step) in chunks of 2 steps
    assert bool((modules["fc3"].weight != 0).all())  # not a target layer: never pruned


def test_layers_outside_the_target_are_not_pruned(synthetic_task, dense):
    model, _, _, _ = _run(synthetic_task, dense, "filter", layers=("conv2", "fc1"))
    modules = dict(model.named_modules())
    for n in ("conv1", "fc2", "fc3"):
        assert bool((modules[n].weight != 0).all()), n
    assert int((modules["fc1"].weight.abs().sum(dim=1) == 0).sum()) > 0


def test_deterministic_under_a_seed(synthetic_task, dense):
    a, _, _, info_a = _run(synthetic_task, dense, "unstructured")
    b, _, _, info_b = _run(synthetic_task, dense, "unstructured")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert info_a["iterations"] == info_b["iterations"]


def test_stepsize_rule_against_hand_computed_alpha():
    # alpha_k = 1 - 1 / (M * k^(1 - 1/k^r)), M = 300, r = 0.1, computed by hand:
    #   k=2: 2^0.1 = 1.0717735, 1 - 1/1.0717735 = 0.0669670, 2^0.0669670 = 1.0475117, alpha = 1 - 1/314.2535
    #   k=3: 3^0.1 = 1.1161232, exponent 0.1040415, 3^0.1040415 = 1.1210908, alpha = 1 - 1/336.3272
    #   k=10: 10^0.1 = 1.2589254, exponent 0.2056718, 10^0.2056718 = 1.6057434, alpha = 1 - 1/481.7230
    assert slr_alpha(1, 300, 0.1) == pytest.approx(1 - 1 / 300)
    assert slr_alpha(2, 300, 0.1) == pytest.approx(0.9968179, abs=1e-7)
    assert slr_alpha(3, 300, 0.1) == pytest.approx(0.9970267, abs=1e-7)
    assert slr_alpha(10, 300, 0.1) == pytest.approx(0.9979241, abs=1e-7)

    # s_k = alpha_k s_{k-1} ||g_{k-1}|| / ||g_k||; the first accepted update uses s0
    p = torch.nn.Parameter(torch.zeros(2, 2))
    state = _SLRState({"w": p}, rho=0.1, s0=0.01, M=300, r=0.1)
    zero = {"w": torch.zeros(2, 2)}
    assert state.multiplier_step({"w": torch.ones(2, 2)}, zero) is None  # ||g|| = 2
    assert state.s == 0.01 and state.k == 2
    assert torch.allclose(state.lam["w"], torch.full((2, 2), 0.01))
    alpha = state.multiplier_step({"w": torch.full((2, 2), 3.0)}, zero)  # ||g|| = 6
    assert alpha == pytest.approx(0.9968179, abs=1e-7)
    assert state.s == pytest.approx(0.9968179 * 0.01 * 2 / 6, rel=1e-6) and state.k == 3
    assert torch.allclose(state.lam["w"], torch.full((2, 2), 0.01 + 3 * state.s))


def _toy_state():
    p = torch.nn.Parameter(torch.tensor([[3.0, -0.5], [0.2, 2.0]]))
    state = _SLRState({"w": p}, rho=0.1, s0=0.01, M=300, r=0.1)

    def proj(weights):
        return project(weights, "unstructured", 2)

    state.z = proj({"w": p.detach()})
    return p, state, proj


def test_multiplier_moves_only_when_a_condition_holds():
    p, state, proj = _toy_state()
    w = {"w": p.detach().clone()}
    # W did not move and f rose: condition 1 fails; Lambda = 0 gives Z^k = Proj(W) = Z^{k-1},
    # so condition 2 (strict) fails too: nothing changes
    rec = state.iterate(w, 1.0, w, 0.5, proj)
    assert not rec["cond1"] and not rec["cond2"]
    assert state.k == 1 and state.s == 0.01 and bool((state.lam["w"] == 0).all())
    # f fell with the same W: condition 1 holds, Lambda += s0 (W - Z^{k-1}), k advances; the
    # Z-step keeps the same support (Z^k = Z^{k-1}), so condition 2 fails and Lambda moves once
    z_old = state.z["w"].clone()
    rec = state.iterate(w, 0.1, w, 0.5, proj)
    assert rec["cond1"] and not rec["cond1_forced"] and not rec["cond2"]
    assert torch.equal(state.z["w"], z_old)
    assert torch.allclose(state.lam["w"], 0.01 * (w["w"] - z_old)) and state.k == 2


def test_condition_two_alone_updates_the_multiplier():
    p, state, proj = _toy_state()
    w = {"w": p.detach().clone()}
    state.z = {"w": torch.tensor([[0.0, -0.5], [0.2, 0.0]])}  # a poor Z^{k-1}: Proj(W) is closer
    rec = state.iterate(w, 1.0, w, 0.5, proj)
    assert not rec["cond1"] and rec["cond2"]
    z_new = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    assert torch.equal(state.z["w"], z_new)
    assert torch.allclose(state.lam["w"], 0.01 * (w["w"] - z_new)) and state.k == 2


def test_first_iteration_updates_unconditionally():
    p, state, proj = _toy_state()
    w = {"w": p.detach().clone()}
    rec = state.iterate(w, 1.0, w, None, proj)
    assert rec["cond1"] and rec["cond1_forced"] and rec["lagrangian1"][1] is None
    assert state.k >= 2 and bool((state.lam["w"] != 0).any())


def test_hard_prune_metrics_and_retrain_recorded(synthetic_task, dense):
    _, _, trainer, info = _run(synthetic_task, dense, "unstructured")
    assert "top1" in info["hard_prune_metrics"]
    assert info["retrain_epochs"] == pytest.approx(0.25) and "top1" in info["retrained_metrics"]
    it = info["iterations"]
    assert it[0]["cond1"] and it[0]["cond1_forced"] and all(r["primal_residual"] > 0 for r in it)
    assert {"s", "k", "cond2", "dual_residual"} <= set(it[-1])
    # retrain off: the whole budget goes to SLR, the hard-pruned model is returned as is
    _, _, trainer, info = _run(synthetic_task, dense, "filter", config=SLRConfig(retrain_share=0.0, iterations=2))
    assert info["retrain_epochs"] == 0.0 and "retrained_metrics" not in info
    assert info["slr_epochs"] == pytest.approx(BUDGET) and len(info["iterations"]) == 2


def test_epochs_to_target_costs_no_training(synthetic_task, dense):
    plain, _, _, _ = _run(synthetic_task, dense)
    model, _, trainer, info = _run(synthetic_task, dense, config=SLRConfig(period_epochs=0.5, target_accuracy=0.0))
    assert info["epochs_to_target"] == pytest.approx(info["iterations"][0]["epochs"])
    assert info["epochs_to_target_phase"] == "slr"
    # the hard-pruned copy was evaluated and restored: same run, same weights
    for (k, a), (_, b) in zip(plain.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    _, _, _, never = _run(synthetic_task, dense, config=SLRConfig(period_epochs=0.5, target_accuracy=101.0))
    assert never["epochs_to_target"] is None and len(never["hard_pruned_trace"]) == 4  # 3 iterations + retrain


def test_prune_only_and_every_library_structure():
    assert SLR().quantizes is False
    assert set(SLR.structures) == {"unstructured", "filter", "channel", "column", "kernel", "pattern",
                                   "block", "pe", "nm"}


@pytest.mark.parametrize("kwargs, bad", [
    ({"rho": -1}, "-1"), ({"s0": 0}, "0"), ({"M": 0.5}, "0.5"), ({"r": 1.5}, "1.5"),
    ({"period_epochs": -2.0}, "-2.0"), ({"iterations": 0}, "0"), ({"retrain_share": 1.0}, "1.0"),
    ({"allocation": "layerwise"}, "layerwise"), ({"pattern_library": "x9"}, "x9"),
    ({"target_accuracy": math.inf}, "inf"), ({"period_epochs": 1.0, "iterations": 3}, "3"),
])
def test_config_errors_echo_the_bad_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        SLRConfig(**kwargs)


def test_unlimited_budget_is_refused(synthetic_task, dense):
    model = synthetic_task.build_model()
    with pytest.raises(ValueError, match="finite epoch budget"):
        SLR().compress(model, Target(layers=LAYERS, rate=4.0), Trainer(synthetic_task, model, progress=False))


# ---------------------------------------------------------------- iterations scaled into the budget


def test_configured_iterations_are_scaled_into_the_budget():
    # the suites' case: a 1-epoch budget of 469 steps; version 1 cut it into 1-epoch periods: 1 iteration
    plan = slr_schedule(469, retrain_share=0.2, steps_per_epoch=469)
    assert plan["iterations"] == DEFAULT_ITERATIONS == 5 and plan["retrain_steps"] == 93
    chunks = [b - a for a, b in zip(plan["bounds"], plan["bounds"][1:])]
    assert sum(chunks) == plan["slr_steps"] == 376 and set(chunks) <= {75, 76}
    plan = slr_schedule(469, retrain_share=0.0, iterations=40, steps_per_epoch=469)
    assert plan["iterations"] == 40 and plan["retrain_steps"] == 0 and plan["bounds"][-1] == 469
    # fixed periods are still possible: 0.25-epoch periods of a 376-step share
    assert slr_schedule(469, retrain_share=0.2, period_epochs=0.25, steps_per_epoch=469)["iterations"] == 3


def test_default_run_takes_the_default_iterations_and_records_its_phases(synthetic_task, dense):
    _, _, trainer, info = _run(synthetic_task, dense, config=SLRConfig())  # 8 steps: 1 retrain, 7 SLR
    assert len(info["iterations"]) == DEFAULT_ITERATIONS
    assert info["schedule"] == {"iterations": 5, "slr_steps": 7, "retrain_steps": 1}
    assert trainer.phases == {"slr": 7, "retrain": 1}
    assert trainer.checkpoints["hard_prune"] == info["hard_prune_metrics"]
    # more than one iteration: the stepsize rule acted (k advanced past the first update)
    assert info["final_k"] > 2


@pytest.mark.parametrize("config, message", [
    (SLRConfig(iterations=8), "slr: the budget has 8 optimizer steps (2 epochs at 4 steps per epoch); 8 SLR "
     "iterations of at least 1 step each, plus at least 1 masked-retrain step for retrain_share=0.2 need at "
     "least 9 steps: raise the budget, or lower iterations or retrain_share"),
    (SLRConfig(iterations=9, retrain_share=0.0), "slr: the budget has 8 optimizer steps (2 epochs at 4 steps "
     "per epoch); 9 SLR iterations of at least 1 step each need at least 9 steps: raise the budget, or lower "
     "iterations"),
    (SLRConfig(period_epochs=3.0), "slr: the budget has 8 optimizer steps (2 epochs at 4 steps per epoch), of "
     "which 7 for SLR; one period of period_epochs=3 needs 12 SLR steps"),
    (SLRConfig(period_epochs=0.1), "slr: period_epochs=0.1 is 0.4 steps at 4 steps per epoch; a period needs "
     "at least 1 step"),
])
def test_too_small_a_budget_is_refused_before_training(synthetic_task, dense, config, message):
    # 9 steps would do for the first: floor(9 x 0.2) = 1 retrain step leaves 8 SLR steps
    from prunebench import OptimizerConfig

    torch.manual_seed(0)
    model = synthetic_task.build_model()
    model.load_state_dict(dense)
    trainer = Trainer(synthetic_task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=BUDGET,
                      progress=False)
    with pytest.raises(ValueError) as err:
        SLR(config).compress(model, Target(layers=LAYERS, rate=4.0), trainer)
    assert str(err.value) == message
    assert trainer.steps_taken == 0 and trainer.phases == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, dense[k]), k  # nothing trained, nothing pruned


def test_a_budget_with_no_retrain_step_is_refused_unless_retrain_is_off():
    # 4 steps, retrain_share 0.2: floor(0.8) = 0 retrain steps
    with pytest.raises(ValueError, match="plus at least 1 masked-retrain step for retrain_share=0.2 need at least 5 steps"):
        slr_schedule(4, retrain_share=0.2, iterations=2, steps_per_epoch=16)
    plan = slr_schedule(4, retrain_share=0.0, iterations=2, steps_per_epoch=16)
    assert plan["bounds"] == [0, 2, 4]
