"""ComputeModel: MACs of small hand-counted layers, LeNet-5 and timm resnet18;
the break-even model and its measured-cost file."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunebench.artifact import CompressedModel
from prunebench.config import ConfigError, parse
from prunebench.hardware.compute import ComputeModel, load_break_even

from conftest import layer_record


def lenet5() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


LENET_LAYERS = ["0", "3", "7", "9", "11"]


def layers_of(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def hooked_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Independent count: per call, output elements * inputs feeding each one."""
    total = 0

    def conv_hook(m, inputs, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inputs, out):
        nonlocal total
        total += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_lenet5_dense_macs():
    torch.manual_seed(0)
    model = lenet5()
    art = CompressedModel.from_model(model, LENET_LAYERS, torch.randn(1, 1, 28, 28))
    s = ComputeModel().score(art)
    # conv1: 6 filters * 1*5*5 weights * 28*28 positions = 117,600
    assert s["layer.0.dense_macs"] == 6 * 25 * 784 == 117_600
    # conv2: 16 * 6*5*5 * 10*10 = 240,000
    assert s["layer.3.dense_macs"] == 16 * 150 * 100 == 240_000
    # fc: 400*120 = 48,000; 120*84 = 10,080; 84*10 = 840
    assert (s["layer.7.dense_macs"], s["layer.9.dense_macs"], s["layer.11.dense_macs"]) == (48_000, 10_080, 840)
    assert s["dense_macs"] == 117_600 + 240_000 + 48_000 + 10_080 + 840 == 416_520
    assert s["dense_macs"] == hooked_macs(model, torch.randn(1, 1, 28, 28))
    # random init has no zeros
    assert s["remaining_macs"] == s["dense_macs"]
    assert s["mac_reduction_x"] == 1.0
    assert s["remaining_macs_fraction"] == 1.0


def test_lenet5_pruned_macs():
    torch.manual_seed(0)
    model = lenet5()
    with torch.no_grad():
        model[0].weight[:2] = 0  # 2 of 6 conv1 filters
        model[7].weight[:, ::2] = 0  # every other fc1 input column
    art = CompressedModel.from_model(model, LENET_LAYERS, torch.randn(1, 1, 28, 28))
    s = ComputeModel().score(art)
    # conv1: 4 filters * 25 * 784 = 78,400 remaining (and compact: 4 rows x 25 cols)
    assert s["layer.0.remaining_macs"] == 78_400
    assert s["layer.0.compact_macs"] == 78_400
    # fc1: 120 * 200 = 24,000
    assert s["layer.7.remaining_macs"] == 24_000
    remaining = 78_400 + 240_000 + 24_000 + 10_080 + 840  # 353,320
    assert s["remaining_macs"] == remaining
    assert s["mac_reduction_x"] == pytest.approx(416_520 / remaining)
    assert s["remaining_macs_fraction"] == pytest.approx(remaining / 416_520)
    assert s["layer.0.mac_reduction_x"] == pytest.approx(1.5)  # 6/4


def test_scattered_zeros_do_not_shrink_compact_macs():
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 3, 0, 0], [4, 0, 0, 0]]))
    s = ComputeModel().score(CompressedModel.from_model(model, ["0"], torch.randn(1, 4)))
    # 4 nonzeros of 12; column 2 is empty -> compact 3 x 3 = 9
    assert (s["dense_macs"], s["remaining_macs"], s["compact_macs"]) == (12, 4, 9)
    assert s["compact_mac_reduction_x"] == pytest.approx(12 / 9)


def test_grouped_conv_and_sequence_linear():
    # grouped conv: weight (16, 8/4, 3, 3) = 288 weights * 10*10 positions = 28,800
    conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=4))
    s = ComputeModel().score(CompressedModel.from_model(conv, ["0"], torch.randn(1, 8, 10, 10)))
    assert s["dense_macs"] == 16 * 2 * 9 * 100 == 28_800
    assert s["layer.0.output_positions"] == 100
    # linear on 5 tokens: 16*32 weights * 5 positions = 2,560
    lin = nn.Sequential(nn.Linear(16, 32))
    s = ComputeModel().score(CompressedModel.from_model(lin, ["0"], torch.randn(1, 5, 16)))
    assert s["dense_macs"] == 2_560


class SharedHead(nn.Module):
    """One conv applied to two feature maps of different sizes, as a detection
    head shared across pyramid levels; then a linear layer called three times."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        small = nn.functional.avg_pool2d(x, 2)
        a, b = self.head(x).mean((2, 3)), self.head(small).mean((2, 3))
        return self.fc(a) + self.fc(b) + self.fc(a * b)


def test_a_layer_called_more_than_once_counts_every_call():
    from prunebench.hardware.compute import count_macs

    model, x = SharedHead(), torch.randn(1, 4, 8, 8)
    art = CompressedModel.from_model(model, ["head", "fc"], x)
    head = art["head"]
    assert (head.calls, head.output_positions) == (2, 64 + 16)  # 8x8 then 4x4 positions
    assert head.input_shape == (4, 8, 8)  # shapes are the first call's
    assert art["fc"].calls == 3
    s = ComputeModel().score(art)
    assert s["dense_macs"] == hooked_macs(model, x) == 8 * 4 * 9 * 80 + 2 * 8 * 3
    assert count_macs(model, x).dense_macs == s["dense_macs"]
    assert art["head"].positions_per_call == 40


def test_zero_denominators_are_none():
    model = lenet5()
    with torch.no_grad():
        for i in (0, 3, 7, 9, 11):
            model[i].weight.zero_()
    s = ComputeModel().score(CompressedModel.from_model(model, LENET_LAYERS, torch.randn(1, 1, 28, 28)))
    assert s["remaining_macs"] == 0
    assert s["mac_reduction_x"] is None
    assert s["compact_mac_reduction_x"] is None
    assert s["layer.0.mac_reduction_x"] is None
    assert s["remaining_macs_fraction"] == 0.0
    empty = ComputeModel().score(CompressedModel([]))
    assert empty["dense_macs"] == 0
    assert empty["mac_reduction_x"] is None
    assert empty["remaining_macs_fraction"] is None


def test_timm_resnet18_macs():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    x = torch.randn(1, 3, 224, 224)
    s = ComputeModel().score(CompressedModel.from_model(model, layers_of(model), x))
    independent = hooked_macs(model, x)
    assert independent == 1_814_073_344
    assert s["dense_macs"] == independent
    assert s["layer.fc.dense_macs"] == 512 * 1000


def test_save_load_round_trip_scores_the_same(tmp_path):
    torch.manual_seed(0)
    model = lenet5()
    with torch.no_grad():
        model[3].weight[:, :2] = 0  # 2 of 6 conv2 input channels
        model[9].weight.mul_(torch.rand_like(model[9].weight) < 0.2)
    art = CompressedModel.from_model(model, LENET_LAYERS, torch.randn(1, 1, 28, 28), structure="channel")
    before = ComputeModel().score(art)
    after = ComputeModel().score(CompressedModel.load(art.save(tmp_path / "art")))
    assert before == after
    # conv2 compact: 16 rows x 4*25 cols x 100 positions
    assert before["layer.3.compact_macs"] == 16 * 100 * 100


# ------------------------------------------------------------- break-even

def record(name, mask, positions=1):
    return layer_record(name, mask, positions=positions)

# 3 x 4, 4 nonzeros, column 2 empty: dense 12, remaining 4, compact 3 x 3 = 9
SCATTERED = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)


def costs(**kinds: float) -> ComputeModel:
    return ComputeModel(ComputeModel.Config(sparse_cost_per_nonzero=kinds))


def test_break_even_not_modelled_without_costs():
    s = ComputeModel().score(CompressedModel([record("fc", SCATTERED)]))
    for key in ("modelled_macs", "modelled_speedup_x", "conv_break_even_density", "linear_break_even_density",
                "break_even_source", "layer.fc.break_even_density", "layer.fc.modelled_macs",
                "layer.fc.modelled_speedup_x", "layer.fc.modelled_path", "layer.fc.sparse_cost_per_nonzero"):
        assert s[key] is None, key
    assert s["mac_reduction_x"] == pytest.approx(3.0)  # the theoretical speedup is still there


def test_break_even_by_hand():
    art = CompressedModel([record("fc", SCATTERED, positions=5)])
    # c = 2: sparse 2 * 4*5 = 40 < compact 9*5 = 45 -> sparse; speedup 60/40
    s = costs(linear=2.0).score(art)
    assert (s["layer.fc.dense_macs"], s["layer.fc.remaining_macs"], s["layer.fc.compact_macs"]) == (60, 20, 45)
    assert s["layer.fc.break_even_density"] == pytest.approx(0.5)
    assert (s["layer.fc.modelled_macs"], s["layer.fc.modelled_path"]) == (40, "sparse")
    assert s["modelled_speedup_x"] == pytest.approx(1.5)
    assert (s["linear_break_even_density"], s["conv_break_even_density"]) == (0.5, None)
    assert s["break_even_source"] == "config"
    # c = 2.5: sparse 50 > compact 45 -> the compact dense GEMM; speedup 60/45
    s = costs(linear=2.5).score(art)
    assert (s["modelled_macs"], s["layer.fc.modelled_path"]) == (45, "compact")
    assert s["modelled_speedup_x"] == pytest.approx(60 / 45)
    # c = 12: a full-rank layer (no empty row or column) at density 4/12 runs dense
    full = SCATTERED.clone()
    full[0, 2] = True  # 5 nonzeros, compact = dense = 12
    s = costs(linear=3.0).score(CompressedModel([record("fc", full)]))
    # sparse 3 * 5 = 15 > 12 -> dense, speedup 1
    assert (s["modelled_macs"], s["layer.fc.modelled_path"], s["modelled_speedup_x"]) == (12, "dense", 1.0)


def test_structured_layer_takes_compact_and_ties_avoid_decoding():
    # conv (4, 2, 3, 3), filters 1 and 3 kept whole: dense 72, remaining = compact = 36 per position
    mask = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    mask[[1, 3]] = True
    art = CompressedModel([record("conv", mask, positions=10)])
    # c = 1: sparse 360 == compact 360 -> compact (no index decoding on a tie)
    s = costs(conv=1.0).score(art)
    assert (s["layer.conv.modelled_macs"], s["layer.conv.modelled_path"]) == (360, "compact")
    assert s["modelled_speedup_x"] == pytest.approx(2.0)
    # c = 0.5 (a measured sparse kernel faster per MAC): sparse 180 wins
    s = costs(conv=0.5).score(art)
    assert (s["modelled_macs"], s["layer.conv.modelled_path"], s["layer.conv.break_even_density"]) == (180, "sparse", 2.0)


def test_totals_need_every_layer_modelled():
    art = CompressedModel([record("conv", torch.ones(2, 1, 3, 3)), record("fc", SCATTERED)])
    s = costs(conv=4.0, linear=2.0).score(art)
    # conv: full, dense 18; fc: sparse 8 -> 26 of 18 + 12 = 30
    assert s["modelled_macs"] == 26
    assert s["modelled_speedup_x"] == pytest.approx(30 / 26)
    assert s["layer.conv.break_even_density"] == pytest.approx(0.25)
    # no linear cost: the fc layer is not modelled, so neither is the total
    s = costs(conv=4.0).score(art)
    assert s["layer.conv.modelled_macs"] == 18
    assert s["layer.fc.modelled_macs"] is None
    assert s["modelled_macs"] is None and s["modelled_speedup_x"] is None


def test_config_parsing():
    cfg = parse(ComputeModel.Config, {"sparse_cost_per_nonzero": {"conv": 3, "linear": 2.5}}, "hardware.compute")
    assert dict(cfg.sparse_cost_per_nonzero) == {"conv": 3.0, "linear": 2.5}
    assert parse(ComputeModel.Config, {"break_even_file": "be.json"}, "hardware.compute").break_even_file == "be.json"
    for bad in (
        {"sparse_cost_per_nonzero": {"conv": 3}, "break_even_file": "be.json"},  # two sources
        {"sparse_cost_per_nonzero": {"depthwise": 3}},
        {"sparse_cost_per_nonzero": {"conv": 0}},
        {"sparse_cost_per_nonzero": {"conv": -1.0}},
        {"sparse_cost_per_nonzero": [3.0]},
    ):
        with pytest.raises(ConfigError):
            parse(ComputeModel.Config, bad, "hardware.compute")
    # built directly, the mapping is frozen too
    cfg = ComputeModel.Config(sparse_cost_per_nonzero={"conv": 2})
    with pytest.raises(TypeError):
        cfg.sparse_cost_per_nonzero["conv"] = 1.0


GOOD = {
    "conv": {"break_even_density": 0.25, "sparse_cost_per_nonzero": 4.0},
    "linear": {"break_even_density": 0.4, "sparse_cost_per_nonzero": 2.5},
    "device": "test cpu",
    "runtime": "torch sparse csr",
}


def write(tmp_path, data, name: str = "break_even.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_load_break_even(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_break_even(path) == {"conv": 4.0, "linear": 2.5}
    only_conv = {k: v for k, v in GOOD.items() if k != "linear"}
    assert load_break_even(write(tmp_path, {**only_conv, "measured": "2025-01-01"}, "conv.json")) == {"conv": 4.0}
    # scored from the file: fc at c = 2.5 -> compact 9, as by hand above
    s = ComputeModel(ComputeModel.Config(break_even_file=path)).score(CompressedModel([record("fc", SCATTERED)]))
    assert s["modelled_macs"] == 9
    assert s["break_even_source"] == f"test cpu, torch sparse csr ({path})"
    assert (s["conv_break_even_density"], s["linear_break_even_density"]) == (0.25, 0.4)


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "expected a JSON object"),
        ({k: v for k, v in GOOD.items() if k != "device"}, "'device' must be a string"),
        ({**GOOD, "runtime": 3}, "'runtime' must be a string"),
        ({"device": "d", "runtime": "r"}, "no layer kind entries"),
        ({**GOOD, "Conv": GOOD["conv"]}, "unknown layer kind 'Conv'"),
        ({**GOOD, "conv": {"sparse_cost_per_nonzero": 4.0}}, "needs both"),
        ({**GOOD, "conv": {"break_even_density": 0.0, "sparse_cost_per_nonzero": 0.0}}, "positive finite"),
        ({**GOOD, "conv": {"break_even_density": 0.5, "sparse_cost_per_nonzero": True}}, "positive finite"),
        ({**GOOD, "conv": {"break_even_density": 0.5, "sparse_cost_per_nonzero": 4.0}}, "is not 1 / sparse_cost"),
    ],
)
def test_load_break_even_errors(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ValueError, match=message) as err:
        load_break_even(path)
    assert path in str(err.value)


def test_missing_break_even_file(tmp_path):
    path = str(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match="latency plugin"):
        load_break_even(path)
    model = ComputeModel(ComputeModel.Config(break_even_file=path))
    with pytest.raises(FileNotFoundError):
        model.score(CompressedModel([record("fc", SCATTERED)]))
