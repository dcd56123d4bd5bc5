"""Every hardware model's declared headline figures are figures it returns:
a renamed figure fails here instead of turning a leaderboard column into dashes."""

import pytest
import torch
from torch import nn

from prunebench import CompressedModel, registry


def _artifact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[3].weight[torch.rand_like(model[3].weight) < 0.7] = 0
    x = torch.randn(1, 1, 8, 8)
    return model, x, CompressedModel.from_model(model, ["0", "3"], x)


@pytest.mark.parametrize("name", registry.hardware_models.names())
def test_headline_keys_are_returned_figures(name):
    cls = registry.hardware_models.get(name)
    if not cls.headline:
        pytest.skip(f"{name} declares no headline figure")
    model, x, art = _artifact()
    figures = cls().score(art, model=model, example_input=x)
    for h in cls.headline:
        assert h.key in figures, f"{name}: headline {h.key!r} is not among its figures"
        assert h.better in ("higher", "lower") and h.label


def test_the_built_in_columns():
    storage = {h.key: h for h in registry.hardware_models.get("storage").headline}
    assert storage["compression_with_index_x"].primary and storage["compression_with_index_x"].better == "higher"
    assert storage["stored_bits"].role == "size" and storage["fp32_dense_bits"].role == "dense_size"
    (macs,) = registry.hardware_models.get("compute").headline
    assert macs.key == "remaining_macs_fraction" and macs.scale == 100.0 and macs.better == "lower"
