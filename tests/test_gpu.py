"""The pipeline on a CUDA device (run with -m gpu where one exists)."""

import pytest
import torch

from prunebench.runner import RunContext, run_point
from prunebench.suite import RunPoint, load_suite

from conftest import REPO

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("structure", ["unstructured", "filter"])
def test_smoke_point_on_cuda(structure, isolated_cache):
    suite = load_suite(REPO / "suites" / "smoke" / "lenet5_synthetic.yaml")
    res = run_point(suite, RunPoint("equal_compression", "magnitude", structure, 4.0, 0), RunContext(device="cuda", progress=False))
    assert res.record.device.startswith("cuda")
    assert res.record.achieved_rate >= 4.0
    assert res.record.metrics["top1"] > 50
