"""No collapsed layers (issue 15.3): verification refuses a target layer with no
live output unit, naming it, unless the suite allows it; the floor and the
allowance are suite settings (layers.floor, layers.allow_collapsed)."""

import pytest
import torch
from torch import nn

from prunebench import Structure, Target
from prunebench.config import ConfigError, parse
from prunebench.projections import project
from prunebench.suite import LayerSpec
from prunebench.verify import VerificationError, collapsed_layers, verify

LAYERS = ("0", "1", "3")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 4 * 4, 12))


def _set(model, weights):
    mods = dict(model.named_modules())
    with torch.no_grad():
        for n, w in weights.items():
            mods[n].weight.copy_(w)


def _weights(model):
    mods = dict(model.named_modules())
    return {n: mods[n].weight.detach().clone() for n in LAYERS}


def test_a_collapsed_layer_is_refused_by_name_and_accepted_when_allowed():
    m = _model()
    w = _weights(m)
    w["1"].zero_()
    _set(m, w)
    target = Target(layers=LAYERS, structure=Structure("filter"), rate=1.0)
    with pytest.raises(VerificationError, match=r"collapsed: layer 1 has no live output \(all 8 output units"):
        verify(m, target)
    assert collapsed_layers(w) == ["1"]
    check = verify(m, Target(layers=LAYERS, structure=Structure("filter"), rate=1.0, allow_collapsed=True))
    assert check.achieved_rate > 1.0


def test_one_live_output_unit_is_enough():
    m = _model()
    w = _weights(m)
    w["3"][1:] = 0.0  # 11 of 12 rows gone, one left
    w["0"][:, 1:] = 0.0  # channel pruning: only input channel 0 left
    _set(m, w)
    verify(m, Target(layers=LAYERS, structure=Structure("filter"), rate=1.1))
    assert collapsed_layers(w) == []


def test_the_plain_projection_collapses_and_the_floor_does_not():
    # a quiet layer: the global ranking without a floor removes it entirely at 8x
    m = _model()
    w = _weights(m)
    w["1"] *= 1e-3
    target = Target(layers=LAYERS, structure=Structure("filter"), rate=8.0)
    keep = target.keep_budget({n: t.numel() for n, t in w.items()})
    _set(m, project(w, "filter", keep, floor=None))
    with pytest.raises(VerificationError, match="layer 1 has no live output"):
        verify(m, target)
    _set(m, project(w, "filter", keep))
    verify(m, target)


def test_suite_and_target_settings_are_validated():
    spec = parse(LayerSpec, {"floor": 0.05, "allow_collapsed": True}, "layers")
    assert spec.floor == 0.05 and spec.allow_collapsed
    assert parse(LayerSpec, {}, "layers").floor == 0.01 and not parse(LayerSpec, {}, "layers").allow_collapsed
    assert parse(LayerSpec, {"floor": None}, "layers").floor is None
    with pytest.raises(ConfigError, match=r"layers.floor: expected a number in \[0, 1\]"):
        parse(LayerSpec, {"floor": 1.5}, "layers")
    with pytest.raises(ConfigError, match="layer_floor"):
        Target(layers=LAYERS, rate=2.0, layer_floor=-0.1)
    assert Target(layers=LAYERS, rate=2.0).layer_floor == 0.01
