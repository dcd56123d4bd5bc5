"""ClickTrain (arXiv 2011.10170): the conformance kit, then the behaviour that
defines the plugin: one fit split into dense / select / finetune phases,
Taylor importance, a pattern library distilled anew at every selection,
soft pruning until the last selection, and the target's floor."""

from __future__ import annotations

import pytest
import torch

from prunebench import Callback, OptimizerConfig, Target, Trainer
from prunebench.config import ConfigError
from prunebench.methods import clicktrain as ct
from prunebench.methods.clicktrain import ClickTrain, ClickTrainConfig, _Selector
from prunebench.methods.gmp import cubic_schedule
from prunebench.projections import structure_violations
from prunebench.target import Structure
from prunebench.testing import MethodConformance, compress_tiny, tiny_dense
from prunebench.verify import verify

LAYERS = ("conv1", "conv2", "fc1")


class TestClickTrain(MethodConformance):
    method = "clicktrain"


def _weights(model):
    mods = dict(model.named_modules())
    return {n: mods[n].weight.detach() for n in LAYERS}


def _fresh_model():
    task, state = tiny_dense()
    torch.manual_seed(0)
    model = task.build_model()
    model.load_state_dict(state)
    return task, model


def test_config_refuses_shares_over_the_budget():
    with pytest.raises(ConfigError, match="select_fraction"):
        ClickTrainConfig(warmup_fraction=0.7, select_fraction=0.4)
    with pytest.raises(ConfigError, match="library_size"):
        ClickTrainConfig(library_size=9)  # the harness allows 8 distinct 4-of-9 patterns per layer


def test_one_fit_split_into_dense_select_and_finetune_phases():
    cfg = ClickTrainConfig(warmup_fraction=0.25, select_fraction=0.5, updates=4)
    model, target, trainer, guarded = compress_tiny(ClickTrain(cfg), name="clicktrain", structure="pattern",
                                                    rate=4.0, budget_epochs=4.0)  # 32 steps
    plan = cubic_schedule(32, start_fraction=0.25, prune_fraction=0.5, updates=4, initial_sparsity=0.0,
                          final_sparsity=0.5)
    t0, last = plan[0][0], plan[-1][0]
    assert (t0, last) == (8, 24)
    assert trainer.steps_taken == 32
    assert trainer.phases == {"dense": t0, "select": last - t0, "finetune": 32 - last}
    assert "hard_prune" in trainer.checkpoints
    info = guarded.info
    assert [s["step"] for s in info["selections"]] == [t for t, _ in plan]
    assert info["hard_prune_step"] == last
    # the kept count falls on the cubic schedule to the target's
    sched = [s["scheduled_sparsity"] for s in info["selections"]]
    assert sched == sorted(sched)
    verify(model, target, method="clicktrain", dense=tiny_dense()[1], trained=guarded.trained)


def test_library_is_distilled_from_the_current_importance_at_every_selection(monkeypatch):
    calls = []
    real = ct.pattern_library_pdnn

    def counting(kernels, size=8):
        calls.append([k.clone() for k in kernels])
        return real(kernels, size=size)

    monkeypatch.setattr(ct, "pattern_library_pdnn", counting)
    cfg = ClickTrainConfig(updates=4, library_size=4)
    model, target, _, guarded = compress_tiny(ClickTrain(cfg), name="clicktrain", structure="pattern", rate=4.0,
                                              budget_epochs=4.0)
    selections = guarded.info["selections"]
    assert len(calls) == len(selections) == 5
    # importance, not weights: (w g)^2 is nonnegative and orders of magnitude below w^2
    for kernels in calls:
        assert len(kernels) == 2 and all(bool((k >= 0).all()) for k in kernels)  # conv1, conv2: the 3x3 layers
    for s in selections:
        lib = torch.tensor(s["library"], dtype=torch.bool)
        assert lib.shape == (4, 9) and bool(lib[:, 4].all()) and bool((lib.sum(1) == 4).all())
    # the final masks use the last library only, within the harness's pattern rules
    final = torch.tensor(selections[-1]["library"], dtype=torch.bool)
    for name in ("conv1", "conv2"):
        w = dict(model.named_modules())[name].weight.detach()
        kernels = (w != 0).flatten(0, 1).flatten(1)
        used = kernels[kernels.any(1)]
        assert bool((used[:, None, :] == final[None]).all(2).any(1).all()), f"{name} uses a pattern outside the library"
        assert not structure_violations(w, Structure.parse("pattern"))
    assert all(s["kernels_switched"] is None or s["kernels_switched"] >= 0 for s in selections)


def test_taylor_importance_is_the_mean_of_w_times_grad_squared():
    _, model = _fresh_model()
    target = Target(layers=LAYERS, rate=4.0)
    sel = _Selector(model, target, ClickTrainConfig())
    grads = []
    for k in range(3):
        for n, p in sel.params.items():
            p.grad = torch.full_like(p, float(k + 1))
        grads.append(k + 1)
        sel.observe()
    imp = sel.importance()
    w = sel.params["conv1"].detach()
    expected = sum((w * g) ** 2 for g in grads) / 3
    assert torch.allclose(imp["conv1"], expected)
    sel.select(0, 0.5, False)  # a selection empties the interval: back to |w|^2 until new gradients
    assert torch.equal(sel.importance()["conv1"], w.pow(2))
    assert torch.equal(_Selector(model, target, ClickTrainConfig(importance="magnitude")).importance()["fc1"],
                       sel.params["fc1"].detach().pow(2))


class _Zeros(Callback):
    """Records which target weights are exactly zero after every step."""

    def __init__(self):
        self.history = []

    def after_step(self, trainer):
        self.history.append({n: (w == 0).clone() for n, w in _weights(trainer.model).items()})


@pytest.mark.parametrize("pruning", ["soft", "progressive"])
def test_progressive_prunes_at_every_selection_soft_only_at_the_last(pruning):
    task, model = _fresh_model()
    target = Target(layers=LAYERS, structure=Structure.parse("unstructured"), rate=4.0)
    zeros = _Zeros()
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=4.0, progress=False,
                      observers=(zeros,))
    cfg = ClickTrainConfig(warmup_fraction=0.25, select_fraction=0.5, updates=4, initial_sparsity=0.2,
                           pruning=pruning)
    info = ClickTrain(cfg).compress(model, target, trainer)
    last = info["hard_prune_step"]
    assert last == 24
    pruned = lambda h: sum(int(z.sum()) for z in h.values())  # noqa: E731
    total = sum(w.numel() for w in _weights(model).values())
    # history[i]: after the step with index i (the (i+1)-th step)
    if pruning == "progressive":
        for sel in info["selections"][:-1]:  # zeroed at each selection, as scheduled
            assert pruned(zeros.history[sel["step"] - 1]) == round(sel["scheduled_sparsity"] * total)
        assert pruned(zeros.history[7]) == round(0.2 * total)  # the first, after 8 steps, at 20%
    else:
        assert pruned(zeros.history[last - 2]) == 0  # only the penalty acts before the last selection
    # from the hard prune on, the zero set is fixed and meets the target
    after = zeros.history[last - 1:]
    for a, b in zip(after, after[1:]):
        assert all(torch.equal(a[n], b[n]) for n in LAYERS)
    assert total - pruned(after[-1]) <= target.keep_budget({n: w.numel() for n, w in _weights(model).items()})


def test_progressive_penalty_is_on_what_the_next_selection_removes():
    _, model = _fresh_model()
    target = Target(layers=LAYERS, rate=4.0)
    sel = _Selector(model, target, ClickTrainConfig(importance="magnitude"))
    sel.select(8, 0.2, False, 0.5)
    total = sel.total
    kept = sum(int(m.sum()) for m in sel.masks.values())
    doomed = sum(int(d.sum()) for d in sel.doomed.values())
    assert kept == total - round(0.2 * total)
    assert doomed == round(0.5 * total) - round(0.2 * total)  # kept now, gone at 50%
    assert all(not bool((d & ~sel.masks[n]).any()) for n, d in sel.doomed.items())
    # smallest first: every doomed weight is at most as large as every weight kept at 50%
    w = torch.cat([p.detach().abs().flatten() for p in sel.params.values()])
    d = torch.cat([m.flatten() for m in sel.doomed.values()])
    m = torch.cat([m.flatten() for m in sel.masks.values()])
    assert float(w[d].max()) <= float(w[m & ~d].min())
    sel.select(24, 0.75, True)  # the last: nothing left to push
    assert all(not bool((d & sel.masks[n]).any()) for n, d in sel.doomed.items())


def test_penalty_pushes_the_weights_outside_the_masks_toward_zero():
    def outside_norm(penalty):
        task, model = _fresh_model()
        target = Target(layers=LAYERS, structure=Structure.parse("pattern"), rate=4.0)
        seen = {}

        class Before(Callback):  # the weights just before the final selection hardens them
            def after_step(self, trainer):
                if trainer.steps_taken == 22:  # counted after the callbacks: step 23 of 32
                    seen.update({n: w.clone() for n, w in _weights(trainer.model).items()})

        trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=4.0, progress=False,
                          observers=(Before(),))
        cfg = ClickTrainConfig(warmup_fraction=0.25, select_fraction=0.5, updates=4, penalty=penalty,
                               importance="magnitude", pruning="soft")
        ClickTrain(cfg).compress(model, target, trainer)
        masks = {n: w != 0 for n, w in _weights(model).items()}
        return sum(float(seen[n][~masks[n]].norm()) for n in LAYERS)

    assert outside_norm(0.05) < outside_norm(0.0)


def test_no_budget_is_one_shot_on_magnitude():
    model, target, trainer, guarded = compress_tiny(ClickTrain(), name="clicktrain", structure="pattern",
                                                    rate=4.0, budget_epochs=0.0)
    assert trainer.steps_taken == 0
    assert [s["step"] for s in guarded.info["selections"]] == [0]
    verify(model, target, method="clicktrain", dense=tiny_dense()[1], trained=guarded.trained)


def test_target_floor_keeps_every_layer_alive():
    model, target, _, guarded = compress_tiny(ClickTrain(ClickTrainConfig(allocation="global")), name="clicktrain",
                                              structure="kernel", rate=64.0, budget_epochs=2.0)
    for n, w in _weights(model).items():
        assert bool((w != 0).any()), f"{n} collapsed"
    verify(model, target, method="clicktrain", dense=tiny_dense()[1], trained=guarded.trained)
