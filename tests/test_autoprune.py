"""AutoPrune on a tiny model: targets met exactly, recoverable gates, a plain model returned."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from prunebench import Quantization, Structure, Target, Trainer
from prunebench.methods.autoprune import AutoPrune, AutoPruneConfig, _Gates, _GateTraining, _select
from prunebench.projections import group_view, structured_nonzeros
from prunebench.quant import quantize_
from prunebench.verify import verify

from conftest import compress_synthetic

LAYERS = ("conv1", "conv2", "fc1", "fc2")
BUDGET = 2.0


def _run(task, dense, structure="unstructured", rate=4.0, config=None, layers=LAYERS, seed=0):
    return compress_synthetic(task, dense, AutoPrune(config or AutoPruneConfig()), structure=structure, rate=rate, layers=layers,
                              seed=seed, budget=BUDGET)


def _plain(model: nn.Module) -> None:
    for name, mod in model.named_modules():
        assert not parametrize.is_parametrized(mod), name
        assert not mod._forward_pre_hooks and not mod._forward_hooks and not mod._backward_hooks, name
        assert type(mod).__name__ in ("LeNet5", "Sequential", "Conv2d", "Linear"), (name, type(mod))


@pytest.mark.parametrize("structure", ["unstructured", "filter", "channel"])
def test_meets_target_exactly_and_returns_a_plain_model(synthetic_task, dense, structure):
    assert structure in AutoPrune.structures
    model, target, trainer, info = _run(synthetic_task, dense, structure)
    _plain(model)
    reference = synthetic_task.build_model().state_dict()
    assert list(model.state_dict()) == list(reference)  # no M, no parametrization left behind
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in reference.values())
    modules = dict(model.named_modules())
    keep = target.keep_budget({n: modules[n].weight.numel() for n in LAYERS})
    kept = sum(structured_nonzeros(modules[n].weight, structure) for n in LAYERS)
    if structure == "unstructured":
        assert kept == keep == info["kept_weights"]  # the hard threshold keeps exactly the budget
    else:  # whole groups: within one group of the budget, never over it
        largest = max(group_view(modules[n].weight, structure).shape[1] for n in LAYERS)
        assert keep - largest < kept <= keep
    for n in LAYERS:  # the harness's standard quantizer on top of the prune-only method
        quantize_(modules[n].weight.data, Quantization(4))
    verify(model, Target(layers=LAYERS, structure=target.structure, rate=4.0, quantization=Quantization(4)),
           method="autoprune")
    assert trainer.epochs_spent <= BUDGET + 1e-9
    assert info["aux_epochs"] == pytest.approx(1.75) and info["retrain_epochs"] == pytest.approx(0.25)
    assert "top1" in info["hard_prune_metrics"] and info["gate_trace"]
    assert bool((modules["fc3"].weight != 0).all())


def test_layers_outside_the_target_are_not_gated(synthetic_task, dense):
    model, _, _, _ = _run(synthetic_task, dense, "filter", layers=("conv2", "fc1"))
    modules = dict(model.named_modules())
    for n in ("conv1", "fc2", "fc3"):
        assert bool((modules[n].weight != 0).all()), n
    assert int((modules["fc1"].weight.abs().sum(dim=1) == 0).sum()) > 0
    _plain(model)


def test_deterministic_under_a_seed(synthetic_task, dense):
    a, _, _, info_a = _run(synthetic_task, dense, "channel")
    b, _, _, info_b = _run(synthetic_task, dense, "channel")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert info_a["gate_trace"] == info_b["gate_trace"]


def _toy(kind="unstructured"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -2.0, 1.0], [0.1, 0.3, -0.2]]))
    gates = _Gates({"0": model[0]}, kind, "constant", clip=4.0)
    return model, gates


def test_gradient_rules_straight_through_with_sign_of_w():
    model, gates = _toy()
    with torch.no_grad():
        gates.m["0"][0, 0] = -0.5  # gate off
    x = torch.ones(1, 3)
    model(x).sum().backward()  # dL/dT = 1 everywhere
    w = gates.raw_weight("0")
    # dL/dW = dL/dT * h(M): no gradient through a closed gate
    assert w.grad[0, 0] == 0 and bool((w.grad.flatten()[1:] == 1).all())
    # dL/dM = dL/dT * sgn(W): independent of |W|, and flowing while the gate is closed
    assert torch.equal(gates.m["0"].grad, torch.sign(w.detach()))
    gates.remove()


def test_a_pruned_weight_can_come_back():
    model, gates = _toy()
    with torch.no_grad():
        gates.m["0"][0, 0] = -0.01  # gated off at this step
    assert model[0].weight[0, 0] == 0
    opt = torch.optim.SGD(gates.params(), lr=0.1)
    cb = _GateTraining(gates, opt, reg_lambda=0.0, keep=None)
    # a loss that wants T[0, 0] larger: dL/dT[0, 0] = -1, W[0, 0] > 0, so dL/dM[0, 0] = -1
    loss = -(model[0].weight[0, 0])
    loss.backward()
    cb.after_backward(None)
    cb.after_step(None)
    assert gates.m["0"][0, 0].item() == pytest.approx(0.09)
    assert model[0].weight[0, 0].item() == 0.5 and cb.reopened == 1
    raw = gates.raw_weight("0")
    gates.remove()
    _plain(model)
    assert model[0].weight is raw  # the same Parameter object comes back


def test_filter_gate_sums_over_its_group_and_regulariser_pushes_open_gates_down():
    model, gates = _toy("filter")
    assert gates.m["0"].shape == (2,) and gates.size["0"] == 3
    with torch.no_grad():
        gates.m["0"][1] = -1.0
    model(torch.ones(1, 3)).sum().backward()
    assert torch.equal(gates.m["0"].grad, torch.tensor([1.0 - 1.0 + 1.0, 1.0 + 1.0 - 1.0]))
    opt = torch.optim.SGD(gates.params(), lr=1.0)
    cb = _GateTraining(gates, opt, reg_lambda=0.5, keep=None)
    cb.after_backward(None)  # + lambda * n_g where the gate is open only
    assert torch.equal(gates.m["0"].grad, torch.tensor([1.0 + 1.5, 1.0]))
    cb.after_step(None)
    assert torch.allclose(gates.m["0"], torch.tensor([1.0 - 2.5, -2.0]))
    gates.remove()


def test_regulariser_stops_at_the_budget():
    model, gates = _toy()
    opt = torch.optim.SGD(gates.params(), lr=1.0)
    cb = _GateTraining(gates, opt, reg_lambda=0.5, keep=6)  # all 6 open: not above the budget
    model(torch.zeros(1, 3)).sum().backward()
    cb.after_backward(None)
    assert bool((gates.m["0"].grad == 0).all())
    gates.remove()


def test_hard_threshold_ranks_by_m_with_magnitude_tiebreak():
    scores = {"a": torch.tensor([0.5, -1.0, 0.5, 2.0]), "b": torch.tensor([0.5, 3.0])}
    tiebreak = {"a": torch.tensor([1.0, 9.0, 2.0, 0.0]), "b": torch.tensor([5.0, 0.0])}
    kept = _select(scores, tiebreak, {"a": 1, "b": 1}, 4, "global")
    # order: b1 (3.0), a3 (2.0), then the 0.5 ties by tiebreak: b0 (5), a2 (2), a0 (1)
    assert kept["a"].tolist() == [False, False, True, True] and kept["b"].tolist() == [True, True]
    # unequal group sizes: the longest prefix within the budget
    kept = _select(scores, tiebreak, {"a": 1, "b": 3}, 4, "global")
    assert kept["b"].tolist() == [False, True] and kept["a"].tolist() == [False, False, False, True]


@pytest.mark.parametrize("kwargs, bad", [
    ({"reg_lambda": -0.1}, "-0.1"), ({"m_optimizer": "rmsprop"}, "rmsprop"), ({"m_lr": -1.0}, "-1.0"),
    ({"m_optimizer": "sgd"}, "None"), ({"m_init": "random"}, "random"), ({"m_clip": 0}, "0"),
    ({"retrain_share": 1.5}, "1.5"), ({"allocation": "layerwise"}, "layerwise"),
])
def test_config_errors_echo_the_bad_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        AutoPruneConfig(**kwargs)


def test_unsupported_structure_is_refused(synthetic_task, dense):
    model = synthetic_task.build_model()
    trainer = Trainer(synthetic_task, model, budget_epochs=1.0, progress=False)
    with pytest.raises(ValueError, match="column"):
        AutoPrune().compress(model, Target(layers=LAYERS, structure=Structure("column"), rate=4.0), trainer)
    _plain(model)
