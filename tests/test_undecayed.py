"""Undecayed Pruning (arXiv 2206.02976): the conformance kit, and the score
against magnitude on hand-made cases where they must (or must not) differ."""

from __future__ import annotations

import pytest
import torch

from prunebench import registry
from prunebench.methods.undecayed import UndecayedConfig, group_scores, undecayed_saliency
from prunebench.projections import project_masks
from prunebench.testing import MethodConformance, compress_tiny, tiny_dense

EPS = 0.1


class TestUndecayed(MethodConformance):
    method = "undecayed"


def test_registered():
    assert registry.methods.get("undecayed").__name__ == "UndecayedPruning"


def test_saliency_is_the_papers_formula():
    w = torch.tensor([1.0, -0.5, 2.0])
    g = torch.tensor([0.3, 0.2, -0.1])
    # -θ g + ε θ^2, by hand: -0.3 + 0.1 = -0.2; 0.1 + 0.025 = 0.125; 0.2 + 0.4 = 0.6
    assert torch.allclose(undecayed_saliency(w, g, EPS), torch.tensor([-0.2, 0.125, 0.6], dtype=torch.float64))
    # the literal reading (decay inside ∇L): -θ (g + εθ) + εθ^2 = -θ g
    assert torch.allclose(undecayed_saliency(w, g, EPS, decay_in_gradient=True), (-w * g).double())
    # no decay: gradient (Taylor) pruning's signed term
    assert torch.allclose(undecayed_saliency(w, g, 0.0), (-w * g).double())


def test_prunes_what_magnitude_keeps():
    """The largest weight sits where its gradient cancels the decay (g = εθ):
    zeroing it leaves T unchanged to first order, so UP prunes it; magnitude
    prunes the smallest weight instead."""
    w = torch.tensor([[1.0, 0.5, -0.8, 0.1]])
    g = torch.tensor([[EPS * 1.0, 0.0, 0.0, 0.0]])
    scores = {"fc": group_scores(undecayed_saliency(w, g, EPS), "unstructured")}
    # |s| = [0, 0.025, 0.064, 0.001]
    assert torch.allclose(scores["fc"], torch.tensor([0.0, 0.025, 0.064, 0.001], dtype=torch.float64))
    up = project_masks({"fc": w}, "unstructured", 3, scores=scores, floor=None, counter=None)["fc"]
    mag = project_masks({"fc": w}, "unstructured", 3, floor=None, counter=None)["fc"]
    assert up.tolist() == [[False, True, True, True]]
    assert mag.tolist() == [[True, True, True, False]]


def test_zero_gradient_ranks_as_magnitude():
    w = torch.tensor([[0.3, -2.0, 0.01, 1.5, -0.7]])
    s = group_scores(undecayed_saliency(w, torch.zeros_like(w), EPS), "unstructured")
    assert torch.argsort(s).tolist() == torch.argsort(w.abs().flatten()).tolist()


def test_group_score_sums_signed_changes():
    # one 2x2 linear layer, filter groups (rows): row 0's changes cancel, row 1's add up
    w = torch.tensor([[1.0, 1.0], [0.1, 0.1]])
    g = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    s = group_scores(undecayed_saliency(w, g, 0.0), "filter")
    # ε = 0: row 0 |-1 + 1| / 2 = 0, row 1 0; ε = 0.1: row 0 |-0.9 + 1.1| / 2 = 0.1, row 1 |0.001 + 0.001| / 2
    assert s.tolist() == [0.0, 0.0]
    s = group_scores(undecayed_saliency(w, g, EPS), "filter")
    assert torch.allclose(s, torch.tensor([0.1, 0.001], dtype=torch.float64))


def _zeros(model, layers=("conv1", "conv2", "fc1")):
    mods = dict(model.named_modules())
    return {n: mods[n].weight.detach() == 0 for n in layers}


def test_gradient_at_the_dense_weights_and_counted():
    """The gradient steps run at learning rate 0: with no fine-tuning the kept
    weights are the dense ones (before the suite's quantizer), and the steps
    are counted in their own phase."""
    method = registry.methods.get("undecayed")(UndecayedConfig(finetune_fraction=0.0, gradient_batches=3))
    model, _, trainer, guarded = compress_tiny(method, name="undecayed", budget_epochs=1.0, bits=8)
    dense = tiny_dense()[1]
    for n in ("conv1", "conv2", "fc1"):
        w = dict(trainer.model.named_modules())[n].weight.detach()  # the method's model, not quantized
        kept = w != 0
        assert torch.equal(w[kept], dense[f"{n}.weight"][kept])
    assert trainer.phases.get("gradient") == 3
    assert trainer.steps_taken == 3
    assert guarded.info["gradient_steps"] == 3
    assert guarded.info["weight_decay"] == pytest.approx(trainer.optimizer_config.weight_decay)


def test_no_budget_is_magnitude_and_gradient_changes_the_choice():
    up0, _, _, g0 = compress_tiny(registry.methods.get("undecayed")(), name="undecayed", budget_epochs=0.0)
    mag, _, _, _ = compress_tiny(registry.methods.get("magnitude")(), name="magnitude", budget_epochs=0.0)
    assert "magnitude" in g0.info["criterion"]
    assert all(torch.equal(a, b) for a, b in zip(_zeros(up0).values(), _zeros(mag).values()))
    # with gradients (no fine-tuning, so the masks are the criterion's alone) the choice differs
    cfg = UndecayedConfig(finetune_fraction=0.0, weight_decay=5e-4)
    up, _, _, _ = compress_tiny(registry.methods.get("undecayed")(cfg), name="undecayed", budget_epochs=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(_zeros(up).values(), _zeros(mag).values()))


def test_a_small_budget_still_fine_tunes():
    # 0.25 epoch of the tiny task is 2 steps: 1 for the gradient, 1 for fine-tuning
    _, _, trainer, guarded = compress_tiny(registry.methods.get("undecayed")(), name="undecayed", budget_epochs=0.25)
    assert guarded.info["gradient_steps"] == 1
    assert trainer.phases == {"gradient": 1, "finetune": 1}
