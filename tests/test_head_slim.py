"""head_slim (channel reduction confined to the heaviest layers, sized to a MACs
target) and input_scaling (the same MACs by a smaller input): the conformance
kit on MACs targets, and what each changes."""

from __future__ import annotations

import pytest
import torch

from prunebench import registry
from prunebench.hardware.compute import count_macs
from prunebench.macs import declared_input_scale, verify_macs
from prunebench.testing import MethodConformance, compress_tiny, tiny_dense


class TestHeadSlim(MethodConformance):
    method = "head_slim"
    rate = 2.0  # a MACs reduction: the kit's Target carries rate_of macs (the method's only quantity)


class TestInputScaling(MethodConformance):
    method = "input_scaling"
    rate = 2.0


def _run(name: str, rate: float = 2.0, **config):
    cls = registry.methods.get(name)
    model, target, _, guarded = compress_tiny(cls(cls.Config(**config)), name=name, structure="filter", rate=rate,
                                              rate_of="macs")
    return model, target, guarded.info


def test_head_slim_changes_only_the_heaviest_layers():
    """conv2 holds 85% of the tiny model's MACs: only its filters go (with the fc1
    columns reading them); conv1, fc2 and every other filter stay."""
    task, dense = tiny_dense()
    model, _, info = _run("head_slim")
    assert info["slimmed_layers"] == ["conv2"]
    assert info["slimmed_macs_share"] >= 0.5
    w = {n: p.detach() for n, p in model.named_parameters()}
    assert not (w["conv1.weight"] == 0).any() and not (w["fc2.weight"] == 0).any()
    dead = (w["conv2.weight"].reshape(16, -1) == 0).all(1)
    assert 0 < int(dead.sum()) < 16
    assert not (w["conv2.weight"][~dead] == 0).any()  # whole filters, nothing else
    assert (w["conv2.bias"][dead] == 0).all()
    fc1 = w["fc1.weight"].reshape(32, 16, 36)
    assert (fc1[:, dead] == 0).all() and not (fc1[:, ~dead] == 0).any()  # the dependent columns only
    assert info["kept_filters"]["conv2"] == 16 - int(dead.sum())
    record = verify_macs(model, task, 2.0)
    assert record["compressed_macs"] == info["planned_macs"]


def test_head_slim_keeps_as_many_channels_as_the_target_allows():
    """The largest channel count that meets the MACs target: one more filter would miss it."""
    task, _ = tiny_dense()
    model, _, info = _run("head_slim", rate=2.0)
    kept = info["kept_filters"]["conv2"]
    per_filter = 8 * 9 * 144 + 36 * 32  # a conv2 filter and the fc1 columns it feeds
    assert info["planned_macs"] <= 195008 / 2.0 < info["planned_macs"] + per_filter
    assert kept == 7


def test_head_slim_grows_the_set_when_the_heaviest_cannot_reach_the_target():
    """macs_share names where slimming starts; a target out of its reach brings in the next layers."""
    _, _, info = _run("head_slim", rate=10.0, macs_share=0.1)  # conv2 alone reaches 8.8x at most
    assert info["slimmed_layers"][0] == "conv2" and info["joined_to_meet_target"]
    assert info["joined_to_meet_target"] == ["conv1"] and info["planned_macs_reduction_x"] >= 10.0


def test_head_slim_candidates_restrict_the_layers():
    with pytest.raises(ValueError, match="nothing to slim"):
        _run("head_slim", candidates=("fc2",))


def test_input_scaling_meets_the_target_by_resolution():
    task, dense = tiny_dense()
    model, _, info = _run("input_scaling", rate=2.0)
    scale = declared_input_scale(info)
    assert scale < 1 and info["input_shape"] == [1, 8, 8]  # 12 -> 8 pixels: 2.01x
    for name, p in model.named_parameters():  # no weight pruned
        assert int((p == 0).sum()) == int((dense[name] == 0).sum()), name
    record = verify_macs(model, task, 2.0, input_scale=scale)  # the harness's count at the declared input
    assert record["macs_reduction_x"] >= 2.0
    with pytest.raises(Exception, match="achieved 1x"):  # at the suite's input it reduces nothing
        verify_macs(model, task, 2.0)
    # the largest side that meets it: 9x9 would not
    with task.input_scaled(9 / 12):
        assert count_macs(model, task.example_input()).compact_macs > 195008 / 2.0


def test_input_scaling_refuses_weight_targets():
    from prunebench.target import Structure, Target
    from prunebench.trainer import Trainer

    task, dense = tiny_dense()
    model = task.build_model()
    model.load_state_dict(dense)
    trainer = Trainer(task, model, budget_epochs=0, progress=False)
    target = Target(layers=("conv1",), structure=Structure("filter"), rate=2.0)
    for name in ("input_scaling", "head_slim"):
        with pytest.raises(ValueError, match="MACs targets only"):
            registry.methods.get(name)().compress(model, target, trainer)


@pytest.fixture(scope="module")
def retinanet():
    """The MACs smoke suite's RetinaNet (random weights), its task and a trainer without budget."""
    pytest.importorskip("mmdet")
    from prunebench.interfaces import DependencyUnavailable
    from prunebench.runner import RunContext, get_task
    from prunebench.suite import load_suite

    suite = load_suite("suites/smoke/retinanet_macs_synthetic.yaml", smoke=True)
    try:
        task = get_task(suite, RunContext(progress=False))
    except DependencyUnavailable as err:
        pytest.skip(str(err))
    return suite, task


def test_head_slim_on_retinanet_slims_the_head_convs(retinanet):
    """The smoke suite's RetinaNet: the heaviest layers are head convolutions, and
    nothing outside the head changes (their readers are the head's prediction convs)."""
    from prunebench.dependency import effective_model
    from prunebench.target import Structure, Target
    from prunebench.trainer import Trainer

    suite, task = retinanet
    torch.manual_seed(0)
    model = task.build_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    target = Target(layers=tuple(task.compressible_layers(model)), structure=Structure("filter"), rate=1.8,
                    rate_of="macs")
    trainer = Trainer(task, model, budget_epochs=0, progress=False)
    # no candidates named: the MACs ranking alone finds the head's 96-channel convolutions (2 x 20% of the MACs)
    cls = registry.methods.get("head_slim")
    info = cls(cls.Config(macs_share=0.35)).compress(model, target, trainer)
    assert sorted(info["slimmed_layers"]) == ["bbox_head.cls_convs.1.conv", "bbox_head.reg_convs.1.conv"]
    changed = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("bbox_head.") for n in changed), sorted(changed)
    effective, _ = effective_model(model, task.example_input())
    assert verify_macs(effective, task, 1.8)["macs_reduction_x"] >= 1.8
