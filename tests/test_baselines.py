"""The baselines of issue 16.4, each checked for the behaviour that defines it:
gmp's cubic schedule, imp_lrr's rounds, tp's dependency groups, obc's layer
reconstruction, random_shuffled's per-layer counts.  (Conformance: see
tests/test_conformance.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunebench import OptimizerConfig, Structure, Target, Trainer
from prunebench.config import ConfigError
from prunebench.methods.gmp import GMP, GMPConfig, cubic_schedule
from prunebench.methods.imp_lrr import IMPLRR, IMPLRRConfig, round_keeps, round_steps
from prunebench.methods.obc import OBC, OBCConfig, obc_prune_rows
from prunebench.methods.random_shuffled import RandomShuffled, shuffled_masks
from prunebench.methods.tp_structured import TPL1, TPTaylor, TPTaylorConfig
from prunebench.projections import project_masks
from prunebench.testing import TinyTask, compress_tiny, tiny_dense
from prunebench.verify import verify

LAYERS = ("conv1", "conv2", "fc1")


def _weights(model, layers=LAYERS):
    mods = dict(model.named_modules())
    return {n: mods[n].weight.detach() for n in layers}


# ------------------------------------------------------------------ gmp


def test_cubic_schedule_is_zhu_gupta_equation_1():
    sched = cubic_schedule(100, start_fraction=0.1, prune_fraction=0.5, updates=5, initial_sparsity=0.0,
                           final_sparsity=0.8)
    assert [t for t, _ in sched] == [10, 20, 30, 40, 50, 60]  # t0 = 10, Δt = 50 / 5
    for k, (_, s) in enumerate(sched):
        assert s == pytest.approx(0.8 + (0.0 - 0.8) * (1 - k / 5) ** 3)
    assert sched[-1][1] == pytest.approx(0.8)
    # fewer pruning steps than updates: n shrinks to the steps; no steps: one-shot at t0
    assert [t for t, _ in cubic_schedule(6, start_fraction=0, prune_fraction=0.5, updates=10,
                                         initial_sparsity=0, final_sparsity=0.5)] == [0, 1, 2, 3]
    assert cubic_schedule(0, start_fraction=0, prune_fraction=0.5, updates=10, initial_sparsity=0,
                          final_sparsity=0.5) == [(0, 0.5)]


def test_gmp_config_refuses_shares_over_the_budget():
    with pytest.raises(ConfigError, match="prune_fraction"):
        GMPConfig(start_fraction=0.6, prune_fraction=0.6)


@pytest.mark.parametrize("structure", ["unstructured", "filter"])
def test_gmp_sparsity_after_each_update_follows_the_cubic_schedule(structure):
    cfg = GMPConfig(initial_sparsity=0.1, start_fraction=0.125, prune_fraction=0.5, updates=4)
    model, target, trainer, guarded = compress_tiny(GMP(cfg), name="gmp", structure=structure, rate=4.0,
                                                    budget_epochs=4.0)  # 32 steps
    log = guarded.info["gmp_updates"]
    total = sum(w.numel() for w in _weights(model).values())
    final = 1 - target.keep_budget({n: w.numel() for n, w in _weights(model).items()}) / total
    expected = cubic_schedule(32, start_fraction=0.125, prune_fraction=0.5, updates=4, initial_sparsity=0.1,
                              final_sparsity=final)
    assert [e["step"] for e in log] == [t for t, _ in expected] == [4, 8, 12, 16, 20]
    # one group short of the count at most per layer (masks never keep more than scheduled)
    slack = 3 * (1 if structure == "unstructured" else max(w[0].numel() for w in _weights(model).values())) / total
    for e, (_, s) in zip(log, expected):
        assert e["scheduled_sparsity"] == pytest.approx(s, abs=1 / total)
        assert s - 1 / total <= e["sparsity"] <= s + slack
    assert [e["sparsity"] for e in log] == sorted(e["sparsity"] for e in log)  # masks only shrink
    assert trainer.steps_taken == 32  # one fit over the whole budget
    verify(model, target, method="gmp", dense=tiny_dense()[1], trained=guarded.trained)


def test_gmp_pruned_weights_never_return():
    from prunebench import Callback

    task, state = tiny_dense()
    torch.manual_seed(0)
    model = task.build_model()
    model.load_state_dict(state)
    target = Target(layers=LAYERS, rate=4.0)
    history = []

    class Record(Callback):
        def after_step(self, tr):
            history.append({n: (w == 0).clone() for n, w in _weights(tr.model).items()})

    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=2.0, progress=False,
                      observers=(Record(),))
    GMP(GMPConfig(prune_fraction=0.75, updates=3)).compress(model, target, trainer)
    assert len(history) == 16
    for before, after in zip(history, history[1:]):
        for n in LAYERS:
            assert not (before[n] & ~after[n]).any(), f"a pruned weight of {n} came back"
    assert sum(int(z.sum()) for z in history[-1].values()) > sum(int(z.sum()) for z in history[0].values())


# ------------------------------------------------------------------ imp_lrr


def test_imp_round_keeps_are_geometric_and_end_on_the_target():
    keeps = round_keeps(10_000, 625, 4)  # 16x in 4 rounds: half of what is left each round
    assert keeps == [5000, 2500, 1250, 625]
    assert round_steps(10, 3) == [3, 3, 4]


def test_imp_prunes_per_round_and_replays_the_schedule_each_round():
    task, state = tiny_dense()
    torch.manual_seed(0)
    model = task.build_model()
    model.load_state_dict(state)
    target = Target(layers=LAYERS, rate=8.0)
    calls = []

    class Recording(Trainer):
        def fit(self, *args, **kwargs):
            zeros = sum(int((w == 0).sum()) for w in _weights(self.model).values())
            calls.append((kwargs.get("steps"), kwargs.get("lr"), zeros))
            return super().fit(*args, **kwargs)

    trainer = Recording(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=2.0, progress=False)
    info = IMPLRR(IMPLRRConfig(rounds=3)).compress(model, target, trainer)
    total = sum(w.numel() for w in _weights(model).values())
    keep = target.keep_budget({n: w.numel() for n, w in _weights(model).items()})
    expected = round_keeps(total, keep, 3)
    rounds = info["imp_rounds"]
    assert [r["sparsity"] for r in rounds] == pytest.approx([1 - k / total for k in expected], abs=1e-12)
    assert rounds[0]["sparsity"] == pytest.approx(1 - 8 ** (-1 / 3), abs=1e-3)  # half-way geometric
    # one fresh fit per round (a fresh optimizer and schedule: the LR rewound), at the suite's lr,
    # starting from the pruned weights (not rewound), the budget split over the rounds
    assert [c[0] for c in calls] == round_steps(16, 3) == [5, 5, 6]
    assert all(c[1] is None for c in calls)
    assert [c[2] for c in calls] == [total - k for k in expected]
    assert trainer.steps_taken == 16


# ------------------------------------------------------------------ tp


def test_tp_filter_zeroes_the_whole_dependency_group():
    model, target, trainer, guarded = compress_tiny(TPL1(), name="tp_l1", structure="filter", rate=4.0,
                                                    budget_epochs=1.0)
    verify(model, target, method="tp_l1", dense=tiny_dense()[1], trained=guarded.trained)
    dead1 = (model.conv1.weight.reshape(8, -1) == 0).all(1)
    dead2 = (model.conv2.weight.reshape(16, -1) == 0).all(1)
    dead3 = (model.fc1.weight == 0).all(1)
    assert dead1.any() and dead2.any() and dead3.any()
    # conv1 filter f: its bias and conv2's input channel f
    assert (model.conv1.bias[dead1] == 0).all()
    assert (model.conv2.weight[:, dead1] == 0).all()
    # conv2 filter f: its bias and fc1's 36 flattened columns of channel f
    assert (model.conv2.bias[dead2] == 0).all()
    cols = model.fc1.weight.reshape(32, 16, 36)
    assert (cols[:, dead2] == 0).all() and (cols[:, ~dead2] != 0).any()
    # fc1 row f: its bias; fc2 (outside the target) keeps its columns: the harness refuses new zeros there
    assert (model.fc1.bias[dead3] == 0).all()
    assert (model.fc2.weight != 0).all()
    assert guarded.info["zeroed_entries"] > 0


def test_tp_channel_zeroes_the_producing_filter():
    model, target, _, guarded = compress_tiny(TPL1(), name="tp_l1", structure="channel", rate=4.0,
                                              budget_epochs=1.0)
    verify(model, target, method="tp_l1", dense=tiny_dense()[1], trained=guarded.trained)
    dead_in = (model.conv2.weight.transpose(0, 1).reshape(8, -1) == 0).all(1)
    assert dead_in.any()
    # conv2's input channel c is conv1's filter c: zeroed with its bias
    assert (model.conv1.weight[dead_in] == 0).all() and (model.conv1.bias[dead_in] == 0).all()
    # fc1's columns are pruned in whole blocks of a conv2 channel (36 columns) where a block goes, conv2's filter goes
    blocks = (model.fc1.weight.reshape(32, 16, 36) == 0).all(0).all(1)
    assert blocks.any()
    assert (model.conv2.weight[blocks] == 0).all()


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class _BNTask(TinyTask):
    def build_model(self):
        return _BNNet().to(self.device)


def test_tp_zeroes_batch_norm_entries_and_keeps_them_zero_through_training():
    task = _BNTask()
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model()
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), budget_epochs=2.0, progress=False)
    target = Target(layers=LAYERS, structure=Structure("filter"), rate=4.0)
    info = TPTaylor(TPTaylorConfig(taylor_fraction=0.25)).compress(model, target, trainer)
    assert info["importance"] == "taylor" and info["taylor_steps"] == 4
    dead = (model.conv1.weight.reshape(8, -1) == 0).all(1)
    assert dead.any()
    assert (model.bn1.weight[dead] == 0).all() and (model.bn1.bias[dead] == 0).all()
    assert (model.bn1.weight[~dead] != 0).all()
    assert (model.conv2.weight[:, dead] == 0).all()
    assert trainer.steps_taken == 16  # 4 gradient steps for the Taylor scores, 12 fine-tuning


def test_tp_taylor_falls_back_to_l1_without_budget_and_changes_only_target_weights():
    model, target, _, guarded = compress_tiny(TPTaylor(), name="tp_taylor", structure="filter", rate=4.0,
                                              budget_epochs=0.0)
    assert guarded.info["importance"].startswith("l1")
    assert not guarded.trained
    verify(model, target, method="tp_taylor", dense=tiny_dense()[1], trained=False)


# ------------------------------------------------------------------ obc


def _layer_error(W, W2, X):
    return float(((W.double() - W2.double()) @ X.double()).pow(2).sum())


def test_obc_beats_magnitude_on_a_random_layer():
    g = torch.Generator().manual_seed(0)
    R, d, n = 12, 40, 400
    X = torch.randn(d, d, generator=g) @ torch.randn(d, n, generator=g)  # correlated inputs
    W = torch.randn(R, d, generator=g)
    H = 2 * X @ X.t() / n
    prune = R * d * 3 // 4
    pruned, fig = obc_prune_rows(W, H, prune, damp=1e-6)
    assert int((pruned == 0).sum()) == prune
    mag = project_masks({"w": W}, "unstructured", R * d - prune, floor=None)["w"]
    # magnitude's one-shot: its mask, no update; OBC: its mask and the OBS updates
    err_mag = _layer_error(W, W * mag, X)
    err_obc = _layer_error(W, pruned, X)
    assert err_obc < 0.5 * err_mag
    # the OBS update matters: OBC's own mask without the update is much worse
    assert err_obc < 0.5 * _layer_error(W, W * (pruned != 0), X)
    # the per-row counts differ (the layer's count is shared by the OBS losses)
    assert fig["row_counts_min"] < fig["row_counts_max"]


def test_obc_single_row_matches_brute_force_for_one_weight():
    g = torch.Generator().manual_seed(1)
    d = 6
    X = torch.randn(d, 50, generator=g)
    W = torch.randn(1, d, generator=g)
    H = 2 * X @ X.t() / 50
    pruned, _ = obc_prune_rows(W, H, 1, damp=0.0)
    # best single removal with the optimal refit of the rest, by brute force
    Y = W.double() @ X.double()
    errors = []
    for p in range(d):
        K = [j for j in range(d) if j != p]
        w_K = torch.linalg.lstsq(X[K].t().double(), Y.t()).solution.t()
        errors.append(float((Y - w_K @ X[K].double()).pow(2).sum()))
    assert _layer_error(W, pruned, X) == pytest.approx(min(errors), rel=1e-6)
    assert pruned[0, min(range(d), key=errors.__getitem__)] == 0


def test_obc_calibration_is_not_training():
    model, target, _, guarded = compress_tiny(OBC(OBCConfig(calibration_samples=64)), name="obc",
                                              budget_epochs=0.0, layers=("conv1", "conv2"))
    assert not guarded.trained and guarded.train_samples_seen == 0
    assert guarded.info["calibration_samples"] == 64
    verify(model, target, method="obc", dense=tiny_dense()[1], trained=False)


# ------------------------------------------------------------------ random_shuffled


@pytest.mark.parametrize("structure", ["unstructured", "filter"])
def test_random_shuffled_keeps_magnitudes_per_layer_counts(structure):
    task, state = tiny_dense()
    torch.manual_seed(0)
    model = task.build_model()
    model.load_state_dict(state)
    target = Target(layers=LAYERS, structure=Structure.parse(structure), rate=8.0)
    weights = _weights(model)
    magnitude, shuffled = shuffled_masks(weights, target, torch.Generator().manual_seed(0))
    mag_counts = {n: int(m.sum()) for n, m in magnitude.items()}
    assert {n: int(m.sum()) for n, m in shuffled.items()} == mag_counts
    assert len(set(round(c / weights[n].numel(), 3) for n, c in mag_counts.items())) > 1  # not uniform
    assert any(not torch.equal(magnitude[n], shuffled[n]) for n in weights)
    _, other = shuffled_masks(weights, target, torch.Generator().manual_seed(1))
    assert any(not torch.equal(other[n], shuffled[n]) for n in weights)
    if structure == "filter":  # whole filters
        for n, m in shuffled.items():
            rows = m.reshape(m.shape[0], -1)
            assert bool((rows.all(1) | ~rows.any(1)).all())


def test_random_shuffled_end_to_end_counts_match_magnitude():
    model, target, _, guarded = compress_tiny(RandomShuffled(), name="random_shuffled", rate=8.0,
                                                budget_epochs=0.5)
    verify(model, target, method="random_shuffled", dense=tiny_dense()[1], trained=guarded.trained)
    task, state = tiny_dense()
    dense = {n: state[f"{n}.weight"] for n in LAYERS}
    keep = target.keep_budget({n: w.numel() for n, w in dense.items()})
    mag = project_masks(dense, "unstructured", keep, allocation="global", floor=target.layer_floor)
    assert guarded.info["kept_per_layer"] == {n: int(m.sum()) for n, m in mag.items()}
    # quantization may zero a few more kept weights, never revive one
    for n, w in _weights(model).items():
        assert int((w != 0).sum()) <= int(mag[n].sum())
    assert math.isfinite(sum(guarded.info["finetune_losses"]))
