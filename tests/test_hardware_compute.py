"""ComputeModel: MACs of small hand-counted layers, LeNet-5 and timm resnet18."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunebench.artifact import CompressedModel
from prunebench.hardware.compute import ComputeModel


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
