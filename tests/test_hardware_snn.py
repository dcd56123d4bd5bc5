"""The snn hardware plugin: weight / membrane memory, synaptic operations, spike rates."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("snntorch")

from prunebench import registry
from prunebench.artifact import CompressedModel
from prunebench.hardware.snn import SNNConfig, SNNModel
from prunebench.tasks.classification.models import create_model
from prunebench.verify import VerificationError

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _evaluated(quantize_lif1: bool = False):
    torch.manual_seed(0)
    model = create_model("snn_test", num_classes=10, in_chans=1, time_steps=3)
    with torch.no_grad():
        model.conv2.weight[:, :4] = 0  # a quarter of conv2 pruned
        if quantize_lif1:
            model.lif1.mem_bits.fill_(4)
            model.lif1.mem_scale.fill_(0.125)
        model.eval()
        model(torch.rand(20, 1, 12, 12))
    artifact = CompressedModel.from_model(model, LAYERS, torch.zeros(1, 1, 12, 12))
    return model, artifact


def test_registered():
    assert registry.hardware_models.get("snn") is SNNModel


def test_figures_by_hand():
    model, art = _evaluated(quantize_lif1=True)
    figs = SNNModel().score(art, model=model)
    stats = model.snn_stats()
    assert stats.samples == 20  # the artifact's one-sample probe did not replace the evaluation
    numel = {n: art[n].numel for n in LAYERS}
    assert figs["weight_memory_dense_bits"] == 32 * sum(numel.values())
    assert figs["weight_memory_bits"] == 32 * (sum(numel.values()) - 16 * 4 * 9)
    n1, n2, n3 = 8 * 12 * 12, 16 * 6 * 6, 32
    assert figs["neurons"] == n1 + n2 + n3
    assert figs["membrane_memory_bits"] == 4 * n1 + 32 * (n2 + n3)
    assert figs["membrane_memory_dense_bits"] == 32 * (n1 + n2 + n3)
    assert figs["membrane_access_bits"] == 2 * 3 * figs["membrane_memory_bits"]
    assert figs["layer.lif1.membrane_bits"] == 4 and figs["layer.lif1.membrane_levels"] <= 16
    # conv1 is fed the analog image once; conv2, fc1, fc2 are fed spikes on 3 steps,
    # and the artifact's positions sum the calls of its probe forward pass
    assert [art[n].calls for n in LAYERS] == [1, 3, 3, 3]
    assert art["conv2"].output_positions == 3 * art["conv2"].positions_per_call
    assert figs["analog_macs"] == art["conv1"].nonzeros * art["conv1"].output_positions
    expect = sum(3 * stats.input_rate(n) * art[n].nonzeros * art[n].positions_per_call for n in LAYERS[1:])
    dense = sum(3 * stats.input_rate(n) * art[n].numel * art[n].positions_per_call for n in LAYERS[1:])
    assert figs["synaptic_ops"] == pytest.approx(expect)
    assert figs["sop_reduction_x"] == pytest.approx(dense / expect)
    assert figs["sop_reduction_x"] > 1
    assert figs["ann_dense_macs"] == sum(art[n].numel * art[n].positions_per_call for n in LAYERS)
    assert figs["energy_pj"] == pytest.approx(4.6 * figs["analog_macs"] + 0.9 * expect)
    rates = [figs[f"layer.lif{i}.spike_rate"] for i in (1, 2, 3)]
    assert all(0 <= r <= 1 for r in rates)


def test_membrane_target_is_checked():
    model, art = _evaluated(quantize_lif1=True)
    with pytest.raises(VerificationError, match="lif2"):
        SNNModel(SNNConfig(membrane_bits=4)).score(art, model=model)
    for lif in (model.lif2, model.lif3):
        lif.mem_bits.fill_(4)
        lif.mem_scale.fill_(0.25)
    model.train()
    model.eval()
    with torch.no_grad():
        model(torch.rand(20, 1, 12, 12))
    figs = SNNModel(SNNConfig(membrane_bits=4)).score(art, model=model)
    assert figs["membrane_bits_max"] == 4
    assert figs["membrane_memory_reduction_x"] == pytest.approx(8.0)
    with pytest.raises(VerificationError, match="allows 4"):
        SNNModel(SNNConfig(membrane_bits=2)).score(art, model=model)


def test_a_claimed_membrane_width_is_checked_without_a_suite_target():
    model, art = _evaluated(quantize_lif1=True)
    levels = len(model.snn_stats().neurons["lif1"].levels)
    assert 4 < levels <= 16  # the recorded states sit on the 4-bit grid, and use more than 4 of its levels
    SNNModel().score(art, model=model)  # the claim holds
    model.lif1.mem_bits.fill_(2)  # claims 2 bits (4 levels) for what held more: credited 16x, refused
    with pytest.raises(VerificationError, match=f"lif1: a 2-bit membrane \\(at most 4 levels\\) held {levels} distinct"):
        SNNModel().score(art, model=model)


def test_without_a_spiking_model_activity_is_not_modelled():
    _, art = _evaluated()
    figs = SNNModel().score(art)
    assert figs["weight_memory_bits"] > 0 and figs["ann_dense_macs"] > 0
    assert figs["synaptic_ops"] is None and figs["membrane_memory_bits"] is None and figs["spike_rate_mean"] is None


def test_rate_encoding_makes_the_first_layer_spike_driven():
    torch.manual_seed(0)
    model = create_model("snn_test", num_classes=10, in_chans=1, time_steps=3, encoding="rate").eval()
    with torch.no_grad():
        model(torch.rand(10, 1, 12, 12))
    art = CompressedModel.from_model(model, LAYERS, torch.zeros(1, 1, 12, 12))
    figs = SNNModel().score(art, model=model)
    stats = model.snn_stats()
    assert figs["analog_macs"] == 0
    rate = stats.input_rate("conv1")
    assert 0.3 < rate < 0.7  # Bernoulli spikes of uniform intensities
    assert figs["layer.conv1.input_spike_rate"] == rate
    expect = sum(3 * stats.input_rate(n) * art[n].nonzeros * art[n].positions_per_call for n in LAYERS)
    assert figs["synaptic_ops"] == pytest.approx(expect)
