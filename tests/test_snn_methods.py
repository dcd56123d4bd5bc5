"""SNN methods: the conformance kit, and what each does to a spiking model."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("snntorch")

from prunebench import registry
from prunebench.artifact import CompressedModel
from prunebench.guard import guarded_compress
from prunebench.hardware.snn import SNNConfig, SNNModel
from prunebench.methods.magnitude import MagnitudePruning
from prunebench.target import Quantization, Structure, Target
from prunebench.tasks.classification.data import DataSpec
from prunebench.tasks.classification.task import (
    ClassificationConfig,
    ClassificationTask,
)
from prunebench.testing import MethodConformance
from prunebench.trainer import OptimizerConfig, Trainer
from prunebench.verify import verify


class TestMINT(MethodConformance):
    method = "mint"


class TestStatefulQAT(MethodConformance):
    method = "snn_state_qat"


_SNN: dict = {}
LAYERS = ("conv1", "conv2", "fc1")


def _snn_dense():
    if not _SNN:
        cfg = ClassificationConfig(
            model="snn_test", model_kwargs={"time_steps": 3},
            data=DataSpec(name="synthetic", synthetic_shape=(1, 12, 12), synthetic_train=256, synthetic_test=128),
            batch_size=32)
        task = ClassificationTask(cfg)
        task.prepare()
        torch.manual_seed(0)
        model = task.build_model()
        Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(6)
        _SNN["task"], _SNN["state"] = task, {k: v.clone() for k, v in model.state_dict().items()}
        _SNN["top1"] = task.evaluate(model)["top1"]
    return _SNN["task"], _SNN["state"]


def compress_snn(method, *, membrane_bits=None, structure="unstructured", rate=2.0, bits=4, epochs=1.0):
    task, state = _snn_dense()
    torch.manual_seed(0)
    model = task.build_model()
    model.load_state_dict(state)
    quant = Quantization(bits) if method.quantizes else None
    target = Target(layers=LAYERS, structure=Structure.parse(structure), rate=rate, quantization=quant,
                    membrane_bits=membrane_bits)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=epochs, progress=False)
    guarded = guarded_compress(method, model, target, trainer, task, budget_epochs=epochs, name=type(method).__name__)
    model = guarded.model
    if quant is not None:
        verify(model, Target(layers=LAYERS, structure=target.structure, rate=rate, quantization=quant),
               dense=state, trained=guarded.trained)
    metrics = task.evaluate(model)
    art = CompressedModel.from_model(model, LAYERS + ("fc2",), task.example_input())
    return model, metrics, art, guarded


@pytest.mark.parametrize("name,bits", [("mint", 4), ("snn_state_qat", 3)])
def test_membrane_methods_quantize_the_membrane_and_still_learn(name, bits):
    method = registry.methods.get(name)()
    model, metrics, art, _ = compress_snn(method, membrane_bits=bits)
    figs = SNNModel(SNNConfig(membrane_bits=bits)).score(art, model=model)  # raises if > 2^bits levels
    assert figs["membrane_bits_max"] <= 32 and figs["layer.lif1.membrane_bits"] == bits
    assert figs["membrane_memory_reduction_x"] > 32 / 32
    for lif in (model.lif1, model.lif2, model.lif3):
        assert int(lif.mem_bits) == bits
    assert metrics["top1"] > 20.0, metrics  # 10 classes: chance is 10


def test_mint_shares_the_weight_scale_with_the_membrane():
    model, _, _, _ = compress_snn(registry.methods.get("mint")(), membrane_bits=4)
    for syn, lif in (("conv1", model.lif1), ("conv2", model.lif2), ("fc1", model.lif3)):
        w = getattr(model, syn).weight.detach()
        s = float(lif.mem_scale)
        codes = w[w != 0] / s
        assert torch.allclose(codes, codes.round(), atol=1e-4), syn  # weights are integer multiples of s
        assert float(lif.theta()) <= (2**3 - 1) * s + 1e-6, syn  # the threshold fits the 4-bit membrane grid
    assert model.snn_stats().neurons["lif1"].spike_rate > 0


def test_shadow_quantizer_accumulates_small_steps():
    from prunebench.methods._snn_qat import ShadowQuantizer

    w = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
    qat = ShadowQuantizer({"l": w}, {"l": torch.tensor([1.0, 0.0])}, bits=4, scales={"l": 0.25})
    assert w.tolist() == [0.5, 0.0]
    opt = torch.optim.SGD([w], lr=0.05)
    for _ in range(3):  # each step alone (0.05) is below half a level (0.125)
        w.grad = torch.tensor([-1.0, -1.0])
        qat.after_backward(None)
        opt.step()
        qat.after_step(None)
    # the full-precision shadow reached 0.65, which rounds to 0.75; the pruned weight stays zero
    assert w.tolist() == [0.75, 0.0]


@pytest.mark.parametrize("name,config", [
    ("magnitude", None),
    ("admm", {"stages": 1, "iterations": 2, "quant_iterations": 1, "mapping_rounds": 2}),
    ("slr", {"iterations": 2}),
])
def test_weight_methods_compress_an_snn_with_no_snn_code(name, config):
    cls = registry.methods.get(name)
    method = cls(cls.Config(**config) if config else None)
    model, metrics, art, guarded = compress_snn(method, rate=2.0, epochs=2.0)
    verify(model, Target(layers=LAYERS, rate=2.0, quantization=Quantization(4) if method.quantizes else None),
           dense=_SNN["state"], trained=guarded.trained)
    figs = SNNModel().score(art, model=model)
    assert figs["weight_memory_reduction_x"] > 1.5 and figs["synaptic_ops"] > 0
    assert metrics["top1"] > 20.0, (name, metrics, _SNN["top1"])


def test_magnitude_compresses_an_snn_unchanged():
    model, metrics, art, _ = compress_snn(MagnitudePruning())
    figs = SNNModel().score(art, model=model)
    assert figs["layer.lif1.membrane_bits"] == 32  # a weight method leaves the membrane fp32
    assert figs["weight_memory_reduction_x"] > 1.5 and figs["sop_reduction_x"] > 1.2
    assert metrics["top1"] > 20.0


def test_unquantized_membrane_fails_a_membrane_target():
    from prunebench.verify import VerificationError

    model, _, art, _ = compress_snn(MagnitudePruning())
    with pytest.raises(VerificationError, match="not quantized"):
        SNNModel(SNNConfig(membrane_bits=4)).score(art, model=model)


class TestSpQuant(MethodConformance):
    method = "spquant"


def test_spquant_learns_thresholds_and_integer_membrane():
    model, metrics, art, guarded = compress_snn(registry.methods.get("spquant")(), membrane_bits=3, epochs=2.0)
    figs = SNNModel(SNNConfig(membrane_bits=3)).score(art, model=model)
    assert figs["membrane_memory_reduction_x"] == pytest.approx(32 / 3)  # every LIF at 3 bits
    thetas = [float(lif.threshold) for lif in (model.lif1, model.lif2, model.lif3)]
    assert any(abs(t - 1.0) > 1e-4 for t in thetas), thetas  # thresholds learned
    for lif in (model.lif1, model.lif2, model.lif3):
        assert float(lif.mem_offset) == 0.0  # integer codes
        assert float(lif.mem_scale) == pytest.approx(float(lif.theta()) / 2)  # theta is code 2^(b-2)
        assert not lif.threshold.requires_grad and lif.quant_grad == "ste"
    assert sorted(guarded.info["prior_layers"]) == list(LAYERS)
    assert metrics["top1"] > 20.0


def test_spquant_filter_pruning_removes_whole_channels():
    model, _, _, _ = compress_snn(registry.methods.get("spquant")(), membrane_bits=4, structure="filter")
    w = model.conv2.weight.detach()
    alive = (w.flatten(1) != 0).any(1)
    assert 0 < int(alive.sum()) < w.shape[0]


def test_membrane_prior_changes_the_ranking():
    from prunebench.methods.spquant import membrane_prior

    w = {"l": torch.tensor([[1.0, 1.0], [0.9, 0.9]])}
    plain = membrane_prior({}, w, "filter")["l"]
    assert plain[0] > plain[1]
    primed = membrane_prior({"l": torch.tensor([0.1, 1.0])}, w, "filter")["l"]
    assert primed[1] > primed[0]  # the silent channel loses despite larger weights
