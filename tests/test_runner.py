"""run_point in-process: the harness checks what a method claims."""


import pytest

from prunebench.results import ResultStore
from prunebench.runner import RunContext, Unsupported, run_point
from prunebench.suite import RunPoint, load_suite
from prunebench.verify import VerificationError

from conftest import SYNTHETIC_TASK

LIAR = '''
import torch
from prunebench import Method

class HalfHearted(Method):
    """Says it prunes to the target, removes half of what it should."""
    structures = ("unstructured",)

    def compress(self, model, target, trainer):
        mods = dict(model.named_modules())
        for n in target.layers:
            w = mods[n].weight
            with torch.no_grad():
                k = int(w.numel() * (1 - 1 / target.rate) / 2)
                w.view(-1)[w.abs().flatten().argsort()[:k]] = 0
        return {"claimed_rate": target.rate}
'''

SUITE = """
suite: runner-test
version: 1
""" + SYNTHETIC_TASK + """dense: {epochs: 1}
budget: {epochs: 0.5}
quantization: {bits: 4}
methods: [magnitude]
protocols:
  equal_compression: {structure: [unstructured, pattern], rates: [8]}
"""


@pytest.fixture
def suite(tmp_path, isolated_cache):
    path = tmp_path / "suites" / "s.yaml"
    path.parent.mkdir()
    path.write_text(SUITE)
    return load_suite(path)


def test_lying_method_fails_verification_and_is_recorded(suite, fake_dists, tmp_path):
    fake_dists("fakeplug-liar", {"prunebench.methods": {"liar": "fakeplug_liar:HalfHearted"}},
               module_source={"fakeplug_liar": LIAR})
    store = ResultStore(tmp_path / "res")
    ctx = RunContext(results=store, progress=False)
    with pytest.raises(VerificationError) as err:
        run_point(suite, RunPoint("equal_compression", "liar", "unstructured", 8.0, 0), ctx)
    assert "target rate 8x" in str(err.value) and "achieved 1.78x" in str(err.value)
    (rec,) = store.records()
    assert rec["status"] == "error" and "VerificationError" in rec["failure"]
    assert rec["method"]["distribution"] == "fakeplug-liar"


def test_honest_run_record_has_the_promised_fields(suite, tmp_path):
    store = ResultStore(tmp_path / "res")
    res = run_point(suite, RunPoint("equal_compression", "magnitude", "unstructured", 8.0, 0), RunContext(results=store, progress=False))
    rec = res.record
    assert rec.status == "passed" and rec.method.name == "magnitude" and rec.seed == 0
    assert rec.git_commit and "torch" in rec.versions and rec.wall_time_s > 0 and rec.torch_threads == 1
    assert rec.achieved_rate >= 8.0
    assert max(rec.levels_per_layer.values()) <= 15  # 4-bit, zero reserved
    assert 0 < rec.epochs_spent <= 0.5
    assert rec.suite_file == "s.yaml" or not rec.suite_file.startswith("/")
    assert {"top1", "top5", "per_class_recall"} <= set(rec.metrics)
    assert rec.hardware["storage"]["stored_bits"] > 0
    # what the store holds reads back as the same record
    (stored,) = store.run_records()
    assert stored == rec
    assert store.records()[0]["point_id"] == "magnitude-unstructured-8x-s0"


def test_unsupported_structure_is_reported_before_running(suite):
    with pytest.raises(Unsupported, match="does not produce unstructured"):
        run_point(suite, RunPoint("equal_compression", "pattern", "unstructured", 8.0, 0), RunContext(progress=False))


PARALLEL_SUITE = SUITE.replace(
    "  equal_compression: {structure: [unstructured, pattern], rates: [8]}",
    "  equal_accuracy: {structure: [unstructured], tolerance: 3, search: {lo: 2, hi: 256, steps: 3, parallel: 3}}")


@pytest.mark.slow
def test_parallel_search_rounds_in_processes_match_in_process(tmp_path, isolated_cache):
    """The probes of a round run in other processes (spawned, dense model from
    the cache) with exactly the numbers the same probes give in this process."""
    path = tmp_path / "p.yaml"
    path.write_text(PARALLEL_SUITE)
    suite = load_suite(path)
    (point,) = suite.points()
    here = run_point(suite, point, RunContext(progress=False)).record
    apart = run_point(suite, point, RunContext(progress=False, search_workers=3)).record
    assert here.search.runs == apart.search.runs and here.search.runs % 3 == 0
    assert [s["round"] for s in here.search.trace][:3] == [1, 1, 1]
    assert here.search.trace == apart.search.trace
    assert here.search.rate_found == apart.search.rate_found
    assert here.metrics == apart.metrics and here.achieved_rate == apart.achieved_rate
    # the point's identity names the parallel search (another answer than bisection's)
    assert here.point_key == apart.point_key


def test_parallel_search_is_part_of_the_point_identity(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PARALLEL_SUITE)
    rounds = load_suite(path)
    path.write_text(PARALLEL_SUITE.replace(", parallel: 3", ""))
    bisection = load_suite(path)
    (point,) = rounds.points()
    a, b = rounds.protocol(point.protocol).identity(point), bisection.protocol(point.protocol).identity(point)
    assert a["search"]["parallel"] == 3 and "parallel" not in b["search"]


PID_METHOD = '''
import os
import torch
from prunebench import KeepMasked, Method
from prunebench.projections import project_masks


class PidMagnitude(Method):
    """Magnitude pruning that says which process it ran in."""
    structures = ("unstructured",)

    def compress(self, model, target, trainer):
        mods = dict(model.named_modules())
        weights = {n: mods[n].weight.detach() for n in target.layers}
        keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
        masks = project_masks(weights, "unstructured", keep)
        with torch.no_grad():
            for n, m in masks.items():
                mods[n].weight.mul_(m.to(mods[n].weight.dtype))
        trainer.fit(steps=2, callbacks=[KeepMasked(masks)])
        return {"pid": os.getpid()}
'''


def test_third_party_methods_run_in_their_own_process_by_default(suite, fake_dists, tmp_path):
    import os

    from prunebench.runner import isolated

    fake_dists("fakeplug-pid", {"prunebench.methods": {"pidmag": "fakeplug_pid:PidMagnitude"}},
               module_source={"fakeplug_pid": PID_METHOD})
    assert isolated("pidmag", "auto") and not isolated("magnitude", "auto")
    assert isolated("magnitude", "process") and not isolated("pidmag", "off")
    point = RunPoint("equal_compression", "pidmag", "unstructured", 8.0, 0)
    apart = run_point(suite, point, RunContext(progress=False)).record
    here = run_point(suite, point, RunContext(progress=False, isolation="off")).record
    assert apart.method_info["pid"] != os.getpid() and here.method_info["pid"] == os.getpid()
    # the harness's part (quantizer, checks, evaluation, scores) ran here on the same weights
    assert apart.metrics == here.metrics and apart.achieved_rate == here.achieved_rate
    assert apart.hardware == here.hardware and apart.steps_spent == here.steps_spent == 2
    assert apart.train_samples_seen == here.train_samples_seen > 0


def test_records_count_the_whole_model_and_credit_dependent_removals(suite, tmp_path):
    rec = run_point(suite, RunPoint("equal_compression", "magnitude", "filter", 4.0, 0),
                    RunContext(progress=False)).record
    whole = rec.whole_model
    assert whole["total_weights"] >= rec.total_weights  # every Conv/Linear, excluded ones too
    # removed filters take the next layer's channels with them: more is gone than the method zeroed
    assert whole["weights_removed_by_dependency"] > 0 and whole["dead_units"]
    assert whole["effective_rate"] > whole["rate"]
    assert whole["effective_nonzero_weights"] == whole["nonzero_weights"] - whole["weights_removed_by_dependency"]
    # every removed filter's constant output is accounted for: folded into its consumers, or dropped
    assert sum(whole["folded_constants"].values()) + sum(whole["dropped_constants"].values()) > 0
    assert set(whole["folded_constants"]) | set(whole["dropped_constants"]) <= set(whole["dead_units"])
    # storage scores the whole, effective model
    assert rec.hardware["storage"]["weights"] == whole["total_weights"]


@pytest.mark.parametrize("method", ["magnitude", "admm"])
def test_every_record_has_hard_prune_accuracy_and_budget_per_phase(suite, method):
    rec = run_point(suite, RunPoint("equal_compression", method, "unstructured", 8.0, 0),
                    RunContext(progress=False)).record
    assert sum(rec.phases.values()) == rec.steps_spent > 0
    assert "top1" in rec.checkpoints["hard_prune"]


CRASHER = '''
import os
from prunebench import Method


class Crasher(Method):
    structures = ("unstructured",)

    def compress(self, model, target, trainer):
        os._exit(3)
'''


def test_an_isolated_method_that_dies_is_one_clear_error_and_the_harness_lives(suite, fake_dists):
    fake_dists("fakeplug-crash", {"prunebench.methods": {"crasher": "fakeplug_crash:Crasher"}},
               module_source={"fakeplug_crash": CRASHER})
    with pytest.raises(RuntimeError, match=r"crasher \(isolated in its own process\) died without a result"):
        run_point(suite, RunPoint("equal_compression", "crasher", "unstructured", 8.0, 0), RunContext(progress=False))
