"""Lying methods are refused: through run_point on a suite, and by the conformance kit.

Each liar of prunebench.testing_liars breaks one rule (trains outside the
budget, resets the trainer, touches excluded layers, fakes uniform levels,
leaves NaN, patches the harness, computes through hooks or hidden tensors,
rewrites the test split) and is registered here as a method plugin.
"""

import pytest
import torch
from prunebench import registry
from prunebench.guard import HarnessTampered
from prunebench.results import ResultStore
from prunebench.runner import RunContext, run_point
from prunebench.suite import RunPoint, load_suite
from prunebench.testing import HarnessRefusesLiars
from prunebench.testing_liars import LIARS
from prunebench.verify import VerificationError

from conftest import SYNTHETIC_TASK

SUITE = """
suite: liars-test
version: 1
""" + SYNTHETIC_TASK + """dense: {epochs: 1}
budget: {epochs: 1}
quantization: {bits: 4}
layers: {exclude: [fc3]}
methods: [magnitude]
protocols:
  equal_compression: {structure: [unstructured], rates: [8]}
"""


class TestKitRefusesLiars(HarnessRefusesLiars):
    """The conformance kit's negative side, on its tiny task."""


@pytest.fixture
def suite(tmp_path, isolated_cache):
    path = tmp_path / "suites" / "liars.yaml"
    path.parent.mkdir()
    path.write_text(SUITE)
    return load_suite(path)


@pytest.fixture
def liars(fake_dists):
    """Every liar registered as a method plugin of a fake distribution."""
    fake_dists("fakeplug-liars", {"prunebench.methods": {
        name: f"prunebench.testing_liars:{spec.method.__name__}" for name, spec in LIARS.items()
    }})
    return LIARS


@pytest.fixture
def ctx(tmp_path):
    return RunContext(results=ResultStore(tmp_path / "res"), progress=False)


def _point(method: str) -> RunPoint:
    return RunPoint("equal_compression", method, "unstructured", 8.0, 0)


def _refused(suite, ctx, name, expect):
    with pytest.raises(VerificationError, match=expect) as err:
        run_point(suite, _point(name), ctx)
    rec = next(r for r in ctx.results.records() if r["method"]["name"] == name)
    assert rec["status"] == "error" and type(err.value).__name__ in rec["failure"]
    return err.value


@pytest.mark.parametrize("name", list(LIARS))
def test_liar_is_refused_by_run_point(suite, liars, ctx, name):
    _refused(suite, ctx, name, liars[name].expect)


def test_honest_methods_still_pass(suite, ctx):
    for method in ("magnitude", "admm"):
        res = run_point(suite, _point(method), ctx)
        rec = res.record
        assert rec.status == "passed", rec.failure
        assert rec.achieved_rate >= 8.0
        # the harness's own count agrees with the trainer's: at most one budget of 4 batches of 64
        assert rec.train_samples_seen <= 256
        assert rec.epochs_spent == pytest.approx(rec.train_samples_seen / 256)
        if method == "magnitude":  # fine-tunes for the whole budget
            assert rec.train_samples_seen == 256


def test_no_training_leaves_everything_else_bitwise(suite, ctx, tmp_path):
    """budget 0: magnitude prunes and does not train; the record says so."""
    path = tmp_path / "suites" / "zero.yaml"
    path.write_text(SUITE.replace("budget: {epochs: 1}", "budget: {epochs: 0}"))
    res = run_point(load_suite(path), _point("magnitude"), ctx)
    assert res.record.status == "passed" and res.record.train_samples_seen == 0


def test_a_patch_does_not_outlive_its_run(suite, liars, ctx):
    """After the liar patched verify and evaluate, the harness is itself again:
    a later under-pruning liar is still caught and an honest run still scored."""
    import prunebench.runner
    import prunebench.verify
    from prunebench.tasks.classification import ClassificationTask

    before = (prunebench.verify.verify, prunebench.runner.verify, ClassificationTask.evaluate)
    err = _refused(suite, ctx, "liar_patches_harness", liars["liar_patches_harness"].expect)
    assert isinstance(err, HarnessTampered)
    assert (prunebench.verify.verify, prunebench.runner.verify, ClassificationTask.evaluate) == before
    _refused(suite, ctx, "liar_under_prunes", r"target rate 8x allows \d+ nonzero weights")
    honest = run_point(suite, _point("magnitude"), ctx).record
    assert honest.status == "passed" and honest.metrics["top1"] < 100.0


def test_patched_torch_is_put_back(suite, liars, ctx):
    forwards = (torch.nn.Conv2d.forward, torch.nn.Linear.forward)
    _refused(suite, ctx, "liar_patches_torch", liars["liar_patches_torch"].expect)
    assert (torch.nn.Conv2d.forward, torch.nn.Linear.forward) == forwards


def test_a_rewritten_test_set_does_not_reach_later_runs(suite, liars, ctx):
    """The task whose test split was rewritten in place is prepared anew for the next point."""
    first = run_point(suite, _point("magnitude"), ctx).record
    _refused(suite, ctx, "liar_test_set", liars["liar_test_set"].expect)
    again = run_point(suite, _point("magnitude"),
                      RunContext(results=None, progress=False, _tasks=ctx._tasks, _dense=ctx._dense)).record
    assert again.metrics["top1"] == first.metrics["top1"]


def test_every_liar_is_a_method_plugin(liars):
    for name in liars:
        assert registry.methods.get(name) is liars[name].method
