import pytest
import torch

from prunebench import BudgetExceeded, Callback, KeepMasked, OptimizerConfig, Trainer


def test_budget_is_counted_and_enforced(synthetic_task):
    torch.manual_seed(0)
    model = synthetic_task.build_model()
    tr = Trainer(synthetic_task, model, budget_epochs=1.0, progress=False)
    assert synthetic_task.steps_per_epoch() == 4
    rep = tr.fit(0.5)
    assert rep.steps == 2 and tr.epochs_spent == pytest.approx(0.5)
    tr.fit(0.5)
    assert tr.epochs_left == pytest.approx(0.0)
    with pytest.raises(BudgetExceeded, match=r"asked for 1 steps \(0.25 epochs\) with 0 of the 4-step \(1-epoch\) budget left"):
        tr.fit(0.25)
    assert tr.steps_taken == 4


def test_fractional_steps_are_refused_unless_the_rounding_is_named(synthetic_task):
    model = synthetic_task.build_model()
    tr = Trainer(synthetic_task, model, budget_epochs=0.6, progress=False)
    assert tr.budget_steps == 2  # floor(0.6 x 4)
    with pytest.raises(ValueError, match=r"0.6 epochs is 2.4 steps at 4 steps per epoch: pass steps=, or rounding="):
        tr.fit(0.6)
    assert tr.steps_taken == 0  # refused before any step
    tr.fit(0.6, rounding="down")  # 2.4 steps -> 2, said so
    assert tr.steps_taken == 2 and tr.epochs_spent == 0.5 and tr.steps_left == 0
    with pytest.raises(ValueError, match="exactly one of them"):
        tr.fit(1, steps=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 1.5"):
        tr.fit(steps=1.5)


def test_fitting_the_epochs_left_takes_exactly_the_steps_left(synthetic_task):
    """The issue's case: 24 steps per epoch, a 3-epoch budget spent in thirds of
    an epoch, then fit(epochs_left) must not take an extra step from float residue."""
    model = synthetic_task.build_model()
    tr = Trainer(synthetic_task, model, budget_epochs=3, progress=False)
    per = tr.steps_per_epoch
    for _ in range(7):
        tr.fit(1 / per * 1, rounding="exact")  # one step at a time, as epochs
    tr.fit(tr.epochs_left)
    assert tr.steps_taken == 3 * per and tr.epochs_spent == 3.0 and tr.epochs_left == 0
    with pytest.raises(BudgetExceeded):
        tr.fit(steps=1)


def test_penalty_and_callbacks_are_applied(synthetic_task):
    torch.manual_seed(0)
    model = synthetic_task.build_model()
    seen = {"backward": 0, "step": 0, "epochs": []}

    class Count(Callback):
        def after_backward(self, trainer):
            seen["backward"] += 1

        def after_step(self, trainer):
            seen["step"] += 1

        def after_epoch(self, trainer, epoch, mean_loss):
            seen["epochs"].append(epoch)

    target = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    calls = []

    def pull_to_zero(m):
        calls.append(1)
        return 100.0 * sum(((p - target[n]) ** 2).sum() for n, p in m.named_parameters())

    norm0 = sum(p.norm() for p in model.parameters())
    Trainer(synthetic_task, model, optimizer=OptimizerConfig(lr=0.001, weight_decay=0), progress=False).fit(
        2, penalty=pull_to_zero, callbacks=[Count()]
    )
    assert len(calls) == seen["backward"] == seen["step"] == 8
    assert seen["epochs"] == [0, 1]
    assert sum(p.norm() for p in model.parameters()) < 0.5 * norm0  # the penalty dominated


def test_keep_masked_keeps_pruned_weights_zero(synthetic_task):
    torch.manual_seed(0)
    model = synthetic_task.build_model()
    mask = torch.rand_like(model.fc1.weight) < 0.3
    with torch.no_grad():
        model.fc1.weight.mul_(mask)
    Trainer(synthetic_task, model, progress=False).fit(1, callbacks=[KeepMasked({"fc1": mask})])
    assert torch.equal(model.fc1.weight != 0, mask)


def test_same_seed_same_training(synthetic_task):
    def run(seed):
        torch.manual_seed(0)
        m = synthetic_task.build_model()
        Trainer(synthetic_task, m, seed=seed, progress=False).fit(1)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_bad_epochs_rejected(synthetic_task):
    tr = Trainer(synthetic_task, synthetic_task.build_model(), progress=False)
    with pytest.raises(ValueError, match="-1"):
        tr.fit(-1)
