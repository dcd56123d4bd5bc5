"""Structured targets met on the dependency-aware count: the group engine, with
the harness's counter set, keeps as many groups as the live count allows."""

import pytest
import torch

from prunebench.dependency import EffectiveCounter, counting_effective, effective_model
from prunebench.projections import project_masks, structured_live_mask
from prunebench.target import Structure, Target
from prunebench.tasks.classification.models import create_model
from prunebench.verify import VerificationError, verify

LAYERS = ("conv1", "conv2", "fc1")  # fc2 is the classifier, left dense as the suites do


def _lenet():
    torch.manual_seed(0)
    return create_model("lenet5_caffe", num_classes=10, in_chans=1).eval(), torch.zeros(1, 1, 28, 28)


def _weights(model):
    return {n: getattr(model, n).weight.detach() for n in LAYERS}


def _apply(model, masks):
    with torch.no_grad():
        for n, m in masks.items():
            getattr(model, n).weight.mul_(m)


@pytest.mark.parametrize("zero", [{"conv1": [3]}, {"conv2": [7, 9]}, {"conv1": [0, 1], "conv2": [5]}])
def test_the_counter_agrees_with_the_effective_model(zero):
    model, x = _lenet()
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in _weights(model).items()}
    for n, rows in zero.items():
        masks[n][rows] = False
    counter = EffectiveCounter(model, x)
    _apply(model, masks)
    eff, _ = effective_model(model, x)
    expected = {n: int((getattr(eff, n).weight != 0).sum()) for n in LAYERS}
    assert counter.per_layer(masks) == expected
    assert counter(masks) < sum(int(m.sum()) for m in masks.values())  # the dependants were credited


@pytest.mark.parametrize("structure,rate", [("filter", 4.0), ("filter", 16.0), ("channel", 4.0)])
def test_the_engine_meets_the_rate_on_the_live_count_and_no_more(structure, rate):
    model, x = _lenet()
    weights = _weights(model)
    total = sum(w.numel() for w in weights.values())
    keep = Target(layers=LAYERS, structure=Structure.parse(structure), rate=rate).keep_budget({n: w.numel() for n, w in weights.items()})
    counter = EffectiveCounter(model, x)
    # uniform: every layer loses its share, so conv filters go and take columns downstream with them
    nominal = project_masks(weights, structure, keep, allocation="uniform", counter=None)
    aware = project_masks(weights, structure, keep, allocation="uniform", counter=counter)
    live_nominal, live_aware = counter(nominal), counter(aware)
    assert live_aware <= keep
    # the nominal engine overshoots (every removed filter also kills columns downstream);
    # the dependency-aware one keeps more groups and lands much closer to the target
    assert live_aware >= live_nominal and live_aware >= 0.95 * keep
    if structure == "filter":  # conv filters go, and their columns downstream: a large overshoot
        assert live_nominal < 0.5 * keep
        assert sum(int(m.sum()) for m in aware.values()) > sum(int(m.sum()) for m in nominal.values())
    assert total / live_aware >= rate


def test_the_harness_context_reaches_the_engine_and_leaves_unstructured_alone():
    model, x = _lenet()
    weights = _weights(model)
    keep = sum(w.numel() for w in weights.values()) // 4
    with counting_effective(EffectiveCounter(model, x)):
        in_context = project_masks(weights, "filter", keep, allocation="uniform")
        unstructured = project_masks(weights, "unstructured", keep)
    assert sum(int(m.sum()) for m in in_context.values()) > keep  # nominal count above: live count meets it
    plain = project_masks(weights, "unstructured", keep)
    assert all(torch.equal(unstructured[n], plain[n]) for n in LAYERS)
    outside = project_masks(weights, "filter", keep, allocation="uniform")
    assert sum(int(m.sum()) for m in outside.values()) <= keep  # no counter outside the block


def test_verification_checks_the_live_count():
    model, x = _lenet()
    weights = _weights(model)
    target = Target(layers=LAYERS, structure=Structure.parse("filter"), rate=4.0)
    keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
    counter = EffectiveCounter(model, x)
    _apply(model, project_masks(weights, "filter", keep, allocation="uniform", counter=counter))
    live = counter.per_layer({n: structured_live_mask(getattr(model, n).weight, "filter") for n in LAYERS})
    with pytest.raises(VerificationError, match="sparsity"):
        verify(model, target)  # on the nominal count the model is over budget
    check = verify(model, target, effective_nonzero=live)
    assert check.achieved_rate >= 4.0
    with pytest.raises(VerificationError, match="sparsity"):  # a live count over budget fails
        verify(model, target, effective_nonzero={n: getattr(model, n).weight.numel() for n in LAYERS})
