"""quantization: {mode: qat}: prune-only methods fine-tune quantization-aware
inside their budget, as the quantizing methods do."""

import torch

from prunebench import KeepMasked, Trainer
from prunebench.quant import QuantizationAware
from prunebench.results import ResultStore
from prunebench.runner import RunContext, run_point
from prunebench.suite import RunPoint, load_suite
from prunebench.target import Quantization

Q4 = Quantization(bits=4)


def test_forward_passes_see_quantized_weights_and_masks_hold(synthetic_task):
    torch.manual_seed(0)
    model = synthetic_task.build_model()
    mask = (torch.rand_like(model.fc1.weight) > 0.5).float()
    with torch.no_grad():
        model.fc1.weight.mul_(mask)
    seen = []
    hook = model.fc1.register_forward_hook(lambda m, i, o: seen.append(int(torch.unique(m.weight).numel())))
    qat = QuantizationAware(["fc1"], Q4)
    trainer = Trainer(synthetic_task, model, budget_epochs=1, progress=False, observers=[qat])
    trainer.fit(1, callbacks=[KeepMasked({"fc1": mask})])
    hook.remove()
    assert seen[0] > 100  # the first step sees the weights as they were
    assert max(seen[1:]) <= 15  # then 4-bit uniform: +-7 steps and zero
    assert not model.fc1.weight[mask == 0].any()
    assert int(torch.unique(model.fc1.weight).numel()) <= 15


def test_a_change_between_fits_is_kept_not_undone(synthetic_task):
    torch.manual_seed(0)
    model = synthetic_task.build_model()
    qat = QuantizationAware(["fc1"], Q4)
    trainer = Trainer(synthetic_task, model, budget_epochs=2, progress=False, observers=[qat])
    trainer.fit(1)
    with torch.no_grad():
        model.fc1.weight[:5] = 0  # a projection the method makes between its fits
    trainer.fit(steps=1, callbacks=[KeepMasked({"fc1": (model.fc1.weight != 0).float()})])
    assert not model.fc1.weight[:5].any()


def test_the_scale_is_refitted_periodically_and_after_a_change(synthetic_task, monkeypatch):
    import prunebench.quant as quant

    fits = []
    real = quant.quantize_
    monkeypatch.setattr(quant, "quantize_", lambda w, q: fits.append(1) or real(w, q))
    torch.manual_seed(0)
    model = synthetic_task.build_model()
    qat = QuantizationAware(["fc1"], Q4, refit_every_steps=3)
    assert isinstance(qat, quant.Callback)
    trainer = Trainer(synthetic_task, model, budget_epochs=2, progress=False, observers=[qat])
    steps = []
    hook = model.fc1.register_forward_hook(lambda m, i, o: steps.append(int(torch.unique(m.weight).numel())))
    trainer.fit(steps=7)
    assert len(fits) == 3  # steps 1, 4 and 7
    assert max(steps[1:]) <= 15  # the reused scale still gives 4-bit levels
    with torch.no_grad():
        model.fc1.weight[:5] = 0  # the method changes the weights: the next step refits
    trainer.fit(steps=1)
    hook.remove()
    assert len(fits) == 4


def test_refit_every_steps_is_checked():
    import pytest

    with pytest.raises(ValueError, match="refit_every_steps must be at least 1, got 0"):
        QuantizationAware(["fc1"], Q4, refit_every_steps=0)


SUITE = """
suite: qat-test
version: 1
task:
  name: classification
  model: lenet5
  data: {{name: synthetic, synthetic_train: 256, synthetic_test: 128}}
  batch_size: 64
dense: {{epochs: 1}}
budget: {{epochs: 0.5}}
quantization: {{bits: 4, mode: {mode}}}
methods: [magnitude]
protocols:
  equal_compression: {{structure: [unstructured], rates: [8]}}
"""


def test_qat_suites_run_prune_only_methods_quantization_aware(tmp_path, isolated_cache):
    records = {}
    for mode in ("ptq", "qat"):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(SUITE.format(mode=mode))
        suite = load_suite(path)
        (point,) = suite.points()
        assert point == RunPoint("equal_compression", "magnitude", "unstructured", 8.0, 0)
        records[mode] = run_point(suite, point, RunContext(results=ResultStore(tmp_path / "res"),
                                                           progress=False)).record
    ptq, qat = records["ptq"], records["qat"]
    assert qat.target["quantization"]["mode"] == "qat" and qat.status == "passed"
    assert ptq.point_key != qat.point_key
    # under qat the model was already on the grid when the harness's quantizer ran:
    # its accuracy before and after that quantizer is the same
    assert qat.metrics_before_quantization == qat.metrics
    assert ptq.metrics_before_quantization != ptq.metrics
    assert max(qat.levels_per_layer.values()) <= 15
