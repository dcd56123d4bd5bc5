import json

import pytest
import torch
from torch import nn

from prunebench import CompressedModel
from prunebench.hardware.latency import (
    LatencyConfig,
    LatencyModel,
    compact_model,
    measure_break_even,
    sparse_model,
    write_break_even,
)

NAMES = ["0", "2", "5"]


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(),
                      nn.Flatten(), nn.Linear(32 * 6 * 6, 10)).eval()
    return m, torch.randn(2, 3, 8, 8)


def test_compact_model_removes_zero_filters_and_keeps_outputs():
    m, x = _model()
    with torch.no_grad():
        m[0].weight[:6] = 0
        m[0].bias[:6] = 0  # a removed filter with zero bias contributes nothing
    c = compact_model(m, NAMES, x)
    assert c[0].weight.shape[0] == 10 and c[2].weight.shape[1] == 10
    assert torch.allclose(c(x), m(x), atol=1e-5)
    assert m[0].weight.shape[0] == 16  # the original is untouched


def test_sparse_model_matches_dense_numerically():
    m, x = _model()
    with torch.no_grad():
        for n in NAMES:
            w = dict(m.named_modules())[n].weight
            w[torch.rand_like(w) < 0.7] = 0
    s = sparse_model(m, NAMES)
    assert type(s[0]).__name__ == "_SparseConv2d" and type(s[5]).__name__ == "_SparseLinear"
    assert torch.allclose(s(x), m(x), atol=1e-5)


def test_latency_figures_and_runtime_named():
    m, x = _model()
    with torch.no_grad():
        m[2].weight[:16] = 0
    art = CompressedModel.from_model(m, NAMES, x)
    out = LatencyModel(LatencyConfig(repeats=3, warmup=1)).score(art, model=m, example_input=x)
    for key in ("dense_latency_ms", "compact_latency_ms", "sparse_latency_ms"):
        assert out[key] > 0
    if not torch.cuda.is_available():
        assert out["semi_structured_latency_ms"] is None and out["semi_structured_available"] is False
    assert out["runtime"].startswith("torch ") and out["device_name"]
    assert out["compact_mac_reduction_x"] > 1.5  # half of conv2's filters gone
    assert out["compact_speedup_x"] == pytest.approx(out["dense_latency_ms"] / out["compact_latency_ms"])


def test_mac_reduction_is_per_sample_whatever_the_batch():
    m, _ = _model()
    with torch.no_grad():
        m[2].weight[:16] = 0
    out = {}
    for batch in (1, 8):
        x = torch.randn(batch, 3, 8, 8)
        art = CompressedModel.from_model(m, NAMES, x)
        out[batch] = LatencyModel(LatencyConfig(repeats=1, warmup=0)).score(art, model=m, example_input=x)
    # the dense count is per sample; the compact one was divided by the batch once more (8x at batch 8)
    assert out[8]["compact_mac_reduction_x"] == pytest.approx(out[1]["compact_mac_reduction_x"])
    assert 1.5 < out[1]["compact_mac_reduction_x"] < 3


def test_latency_not_modelled_without_a_model():
    m, x = _model()
    out = LatencyModel().score(CompressedModel.from_model(m, NAMES, x))
    assert out["dense_latency_ms"] is None and out["compact_speedup_x"] is None


def test_break_even_measurement_shape(tmp_path):
    res = measure_break_even("linear", densities=(1.0, 0.1, 0.01), repeats=2, warmup=1)
    assert [p["density"] for p in res["points"]] == [1.0, 0.1, 0.01]
    assert res["sparse_cost_per_nonzero"] == pytest.approx(1 / res["break_even_density"])
    assert res["fitted_slope_per_nonzero"] > 0
    path = write_break_even(tmp_path / "be.json", {"linear": res})
    data = json.loads(path.read_text())
    assert data["linear"]["sparse_cost_per_nonzero"] == res["sparse_cost_per_nonzero"] and data["runtime"]
    with pytest.raises(ValueError, match="'rnn'"):
        measure_break_even("rnn")


def test_written_break_even_loads_in_the_compute_model(tmp_path):
    from prunebench.hardware.compute import load_break_even

    res = {k: measure_break_even(k, densities=(1.0, 0.1, 0.01), repeats=2, warmup=1) for k in ("conv", "linear")}
    costs = load_break_even(write_break_even(tmp_path / "be.json", res))
    assert set(costs) == {"conv", "linear"}
    assert all(c >= 1.0 for c in costs.values())  # break-even density <= 1
