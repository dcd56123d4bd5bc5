"""--models keep / reuse: a method's output model kept by point, and scored again
without training it again (a change to scoring then costs no retraining)."""

import pytest
import torch

from prunebench import runner
from prunebench.results import ResultStore
from prunebench.runner import RunContext, kept_model_path, run_point
from prunebench.suite import RunPoint, load_suite
from prunebench.verify import VerificationError

from conftest import SYNTHETIC_TASK

SUITE = """
suite: kept-test
version: 1
""" + SYNTHETIC_TASK + """dense: {epochs: 1}
budget: {epochs: 0.5}
quantization: {bits: 4}
methods: [magnitude]
protocols:
  equal_compression: {structure: [filter], rates: [4]}
"""


@pytest.fixture
def suite(tmp_path, isolated_cache):
    path = tmp_path / "suites" / "s.yaml"
    path.parent.mkdir()
    path.write_text(SUITE)
    return load_suite(path)


POINT = RunPoint("equal_compression", "magnitude", "filter", 4.0, 0)


def test_a_kept_model_is_scored_again_without_running_the_method(suite, tmp_path, monkeypatch):
    store = ResultStore(tmp_path / "res")
    first = run_point(suite, POINT, RunContext(results=store, progress=False, models="keep")).record
    kept = kept_model_path(RunContext(models="keep"), first.point_key, 4.0)
    assert kept.is_file() and first.method_output_from is None
    assert "method_output_from" not in first.to_dict()  # records that trained their model stay as before

    def no_training(*args, **kwargs):
        raise AssertionError("the method ran again")

    monkeypatch.setattr(runner, "_run_method", no_training)
    again = run_point(suite, POINT, RunContext(results=store, progress=False, rerun=True, models="reuse")).record
    assert again.method_output_from["created"] and "git_commit" in again.method_output_from
    # the same model, scored the same way: the same figures; the counts are the training run's
    assert again.metrics == first.metrics and again.whole_model == first.whole_model
    assert again.nonzero_weights == first.nonzero_weights and again.hardware == first.hardware
    assert (again.steps_spent, again.method_wall_time_s) == (first.steps_spent, first.method_wall_time_s)
    assert store.get("kept-test", first.point_key)["method_output_from"] == again.method_output_from
    # off (the default) neither keeps nor reuses: the method runs
    with pytest.raises(AssertionError, match="the method ran again"):
        run_point(suite, POINT, RunContext(results=store, progress=False, rerun=True))


def test_a_kept_model_that_is_not_the_tasks_is_refused(suite, tmp_path):
    ctx = RunContext(progress=False, models="reuse")
    first = run_point(suite, POINT, ctx).record
    kept = kept_model_path(ctx, first.point_key, 4.0)
    payload = torch.load(kept, weights_only=True)
    payload["state"]["conv1.weight"] = torch.zeros(3, 3)
    torch.save(payload, kept)
    with pytest.raises(VerificationError, match=r"magnitude \(kept model\) returned a model that is not the task's"):
        run_point(suite, POINT, ctx)


def test_models_mode_is_checked():
    with pytest.raises(ValueError, match="models: expected one of 'off'|models: expected one of off, keep, reuse"):
        kept_model_path(RunContext(models="always"), "k", 4.0)
