"""quantization.membrane_bits: the same membrane treatment for every method on a
spiking network, checked by the harness on the states the model stored."""

import pytest
import yaml

from prunebench.runner import RunContext, run_point
from prunebench.suite import RunPoint, load_suite
from prunebench.verify import VerificationError

from conftest import REPO


def _suite(tmp_path, membrane_bits, methods=None):
    data = yaml.safe_load((REPO / "suites" / "smoke" / "snn_synthetic.yaml").read_text())
    data["quantization"]["membrane_bits"] = membrane_bits
    data["dense"]["epochs"] = 1
    data["budget"]["epochs"] = 0.25
    data["task"]["data"].update(synthetic_train=256, synthetic_test=128)
    if methods is not None:
        data["methods"] = methods
    path = tmp_path / "snn.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_suite(path)


def test_a_prune_only_method_gets_the_harness_membrane_grid(tmp_path, isolated_cache):
    suite = _suite(tmp_path, 3)
    rec = run_point(suite, RunPoint("equal_compression", "magnitude", "unstructured", 4.0, 0),
                    RunContext(progress=False)).record
    # magnitude keeps an fp32 membrane; the run passes only because the harness put it
    # on a 3-bit grid and the check on the recorded states found at most 8 levels
    assert rec.status == "passed" and rec.target["quantization"]["membrane_bits"] == 3


def test_a_finer_grid_than_asked_is_refused():
    import torch

    from prunebench.runner import _check_membrane, _standard_membrane
    from prunebench.tasks.classification.models import create_model

    torch.manual_seed(0)
    model = create_model("snn_test", num_classes=10, in_chans=1).eval()
    for m in model.modules():
        if hasattr(m, "mem_bits"):
            m.mem_bits.fill_(6)  # a method's own 64-level grid
            m.mem_scale.fill_(0.01)
    with torch.no_grad():
        model(torch.rand(64, 1, 28, 28) * 3)
    with pytest.raises(VerificationError, match=r"x missed its membrane target \(2-bit\)"):
        _check_membrane(model, 2, "x")
    # the harness's grid is applied only where the method left the membrane unquantized
    _standard_membrane(model, 2)
    assert all(int(m.mem_bits) == 6 for m in model.modules() if hasattr(m, "mem_bits"))
