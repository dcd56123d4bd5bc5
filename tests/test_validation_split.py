"""Equal accuracy decided on a validation split carved from the training data;
test accuracy reported at the rate found."""

import pytest

from prunebench.runner import RunContext, run_point
from prunebench.suite import SuiteError, load_suite

SUITE = """
suite: val-test
version: 1
task:
  name: classification
  model: lenet5
  data: {{name: synthetic, synthetic_train: 320, synthetic_test: 128}}
  batch_size: 64
  validation_fraction: {fraction}
dense: {{epochs: 1}}
budget: {{epochs: 0.5}}
methods: [magnitude]
protocols:
  equal_accuracy: {{structure: [unstructured], tolerance: 2, search: {{lo: 2, hi: 64, steps: 2}}, decide_on: {on}}}
"""


def _suite(tmp_path, fraction, on):
    path = tmp_path / f"s-{fraction}-{on}.yaml"
    path.write_text(SUITE.format(fraction=fraction, on=on))
    return load_suite(path)


def test_the_search_decides_on_validation_and_reports_test(tmp_path, isolated_cache):
    from prunebench import registry

    suite = _suite(tmp_path, 0.25, "validation")
    task = registry.tasks.get("classification")(suite.task_config())
    task.prepare()
    assert len(task.validation) == 80 and len(task.train) == 240  # a quarter of each class, seeded
    (point,) = suite.points()
    rec = run_point(suite, point, RunContext(progress=False)).record
    assert rec.validation_metrics is not None and rec.metrics is not None
    trace = rec.search.trace
    assert all("validation_top1" in t and "top1" in t for t in trace)
    # one threshold on the validation value decides (dense validation - tolerance): every
    # probe within it scores higher on validation than every probe outside it
    inside = [t["validation_top1"] for t in trace if t["within"]]
    outside = [t["validation_top1"] for t in trace if not t["within"]]
    if inside and outside:
        assert min(inside) > max(outside)
    best = max((t for t in trace if t["within"]), key=lambda t: t["rate"], default=None)
    if best is not None:
        assert rec.search.rate_found == best["rate"] and rec.metrics["top1"] == best["top1"]
    # another decision rule, another point
    test_suite = _suite(tmp_path, 0.25, "test")
    assert test_suite.protocol("equal_accuracy").identity(point) != suite.protocol("equal_accuracy").identity(point)


def test_deciding_on_validation_needs_a_validation_split(tmp_path):
    with pytest.raises(SuiteError, match=r"protocols.equal_accuracy.decide_on: expected a task with a validation "
                                         r"split \(task.validation_fraction > 0\), got 'validation'"):
        _suite(tmp_path, 0, "validation")
