"""PE-wise pruning + ternarization with Weight Penalty Clipping."""

import math

import pytest
import torch

from prunebench import OptimizerConfig, Quantization, Structure, Target, Trainer
from prunebench.methods.pe_ternary import (
    PETernary,
    PETernaryConfig,
    _TernarySTE,
    group_lasso_grad,
    group_scores,
    wpc_clip_,
    wpc_threshold,
)
from prunebench.projections import structure_groups
from prunebench.verify import verify

LAYERS = ("conv1", "conv2", "fc1", "fc2")  # fc3 stays out of the target
TERNARY = Quantization(2, "ternary")
PE4 = Structure.parse("pe:4")




def _run(task, dense, config=None, quant=TERNARY, epochs=3.0, seed=0, rate=4.0):
    torch.manual_seed(seed)
    model = task.build_model()
    model.load_state_dict(dense)
    target = Target(layers=LAYERS, structure=PE4, rate=rate, quantization=quant)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=epochs, seed=seed,
                      progress=False)
    info = PETernary(config or PETernaryConfig(group_lasso=1e-3)).compress(model, target, trainer)
    return model, target, trainer, info


def _hand_layer():
    # pe:2 on a (4, 3) linear weight: group (f mod 2) * 3 + c holds rows f and f + 2 of column c
    w = torch.tensor([[3.0, 0.0, 1.0], [0.0, 6.0, 2.0], [4.0, 1.0, 2.0], [0.0, 8.0, 2.0]])
    gid, n = structure_groups(w, "pe:2")
    return w, gid, n  # group norms: 5, 1, sqrt(5), 0, 10, sqrt(8)


def test_meets_target_one_magnitude_whole_pe_groups(synthetic_task, dense):
    model, target, trainer, info = _run(synthetic_task, dense)
    check = verify(model, target, method="pe_ternary")
    assert check.achieved_rate >= 4.0
    assert trainer.epochs_spent <= 3.0 + 1e-9
    modules = dict(model.named_modules())
    for n in LAYERS:
        w = modules[n].weight.detach()
        mags = torch.unique(w[w != 0].abs())
        assert mags.numel() == 1 and float(mags[0]) == pytest.approx(info["scales"][n])
        gid, ng = structure_groups(w, PE4)
        nonzero = torch.bincount(gid.flatten(), weights=(w != 0).flatten().double(), minlength=ng)
        size = torch.bincount(gid.flatten(), minlength=ng).double()
        assert bool(((nonzero == 0) | (nonzero == size)).all()), n  # a group is all zero or all +-a
        kept, total = info["groups_kept"][n]
        assert int((nonzero > 0).sum()) == kept and 0 < kept < total == ng
    assert info["sparsify"] and info["finetune"] and "top1" in info["hard_prune_metrics"]


def test_layers_outside_the_target_untouched_and_deterministic(synthetic_task, dense):
    a, *_ = _run(synthetic_task, dense, quant=None, epochs=2.0, seed=5)  # no suite quantization: ternary anyway
    b, *_ = _run(synthetic_task, dense, quant=None, epochs=2.0, seed=5)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    fc3 = a.fc3.weight.detach()
    assert bool((fc3 != 0).all()) and torch.unique(fc3).numel() > 100
    assert torch.unique(a.fc1.weight.detach().abs()).numel() == 2  # 0 and a


def test_rejects_a_non_ternary_suite_quantization(synthetic_task, dense):
    with pytest.raises(ValueError, match="'uniform'"):
        _run(synthetic_task, dense, quant=Quantization(4))


def test_group_lasso_gradient_by_hand():
    w, gid, n = _hand_layer()
    g, norms = group_lasso_grad(w, gid, n)
    assert norms.tolist() == pytest.approx([5, 1, math.sqrt(5), 0, 10, math.sqrt(8)])
    assert g[0, 0] == pytest.approx(0.6) and g[2, 0] == pytest.approx(0.8)  # w / ||W_g||
    assert g[1, 1] == pytest.approx(0.6) and g[3, 1] == pytest.approx(0.8)
    assert g[1, 0] == 0 and g[3, 0] == 0 and bool(torch.isfinite(g).all())  # all-zero group: subgradient 0


def test_self_adapting_threshold_is_the_kth_largest_group_norm():
    w, gid, n = _hand_layer()
    # keep 6 weights = 3 groups of 2: the 3rd largest norm is sqrt(8); as an RMS score, sqrt(8) / sqrt(2) = 2
    t = wpc_threshold({"a": w}, "pe:2", 6)["a"]
    assert t * math.sqrt(2) == pytest.approx(math.sqrt(8)) and t == pytest.approx(2.0)
    # 5 weights still fit only 2 whole groups: the 2nd largest norm, 5
    assert wpc_threshold({"a": w}, "pe:2", 5)["a"] * math.sqrt(2) == pytest.approx(5.0)
    assert wpc_threshold({"a": w}, "pe:2", 1)["a"] == math.inf  # nothing kept, nothing protected
    # global allocation: one threshold shared by all layers
    both = wpc_threshold({"a": w, "b": 0.5 * w}, "pe:2", 12)
    assert both["a"] == both["b"]
    per_layer = wpc_threshold({"a": w, "b": 0.5 * w}, "pe:2", 12, allocation="uniform")
    assert per_layer["a"] == pytest.approx(2.0) and per_layer["b"] == pytest.approx(1.0)


def test_wpc_clipping_zeroes_the_penalty_gradient_above_the_threshold():
    w, gid, n = _hand_layer()
    grad = torch.ones_like(w)
    scores = group_scores(w, gid, n)
    clipped = wpc_clip_(grad, gid, scores, 2.0)
    assert clipped.tolist() == [True, False, False, False, True, True]  # norms 5, 10 and sqrt(8) (RMS >= 2)
    expected = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert torch.equal(grad, expected)


def test_ste_swaps_ternary_in_and_latent_out(synthetic_task, dense):
    model = synthetic_task.build_model()
    model.load_state_dict(dense)
    params = {n: dict(model.named_modules())[n].weight for n in LAYERS}
    latent = {n: p.detach().clone() for n, p in params.items()}
    keep = sum(p.numel() for p in params.values()) // 4
    ste = _TernarySTE(params, PE4, keep, "uniform")
    ste.begin()
    for n, p in params.items():
        w = p.detach()
        assert torch.unique(w[w != 0].abs()).numel() == 1
        assert bool(torch.equal(torch.sign(w)[w != 0], torch.sign(latent[n])[w != 0]))
    ste.end()
    for n, p in params.items():
        assert torch.equal(p.detach(), latent[n])


def test_wpc_keeps_survivors_out_of_the_zero_zone(synthetic_task, dense):
    # a strong group lasso shrinks every group; with WPC the kept groups are spared, so their scale a stays larger
    cfg = dict(group_lasso=0.2, finetune_share=0.0)
    _, _, _, with_wpc = _run(synthetic_task, dense, PETernaryConfig(wpc=True, **cfg), epochs=2.0)
    _, _, _, without = _run(synthetic_task, dense, PETernaryConfig(wpc=False, **cfg), epochs=2.0)
    for n in LAYERS:
        assert with_wpc["scales"][n] > without["scales"][n], n
    last = with_wpc["sparsify"][-1]
    assert 0.2 < last["clipped_fraction"] < 0.3  # about the kept quarter of the groups
    assert "clipped_fraction" not in without["sparsify"][-1]


def test_config_checks_echo_the_bad_value():
    with pytest.raises(ValueError, match="-0.1"):
        PETernaryConfig(group_lasso=-0.1)
    with pytest.raises(ValueError, match="'sideways'"):
        PETernaryConfig(allocation="sideways")
    with pytest.raises(ValueError, match="-1"):
        PETernaryConfig(finetune_share=-1)
    with pytest.raises(ValueError, match=r"0 \+ 0"):
        PETernaryConfig(sparsify_share=0, finetune_share=0)
