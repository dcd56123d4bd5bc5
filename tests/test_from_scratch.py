"""The suite's ``start:`` (issue 16.7): a from-scratch point hands the method a
fresh initialisation seeded with the point's seed, not the dense model; its id
and record key differ from the dense point's; its record says so, keeps the
dense model's reference accuracy, and counts total epochs and wall time."""

from __future__ import annotations

import pytest
import torch

from prunebench.baseline import dense_baseline
from prunebench.protocols.equal_compression import EqualCompression
from prunebench.records import RunRecord, key_of_identity, point_identity
from prunebench.report.scratch import scratch_section
from prunebench.results import ResultStore
from prunebench.runner import RunContext, fixed_threads, get_task, run_point
from prunebench.suite import RunPoint, SuiteError, load_suite

from conftest import SYNTHETIC_TASK

# a magnitude run that also reports the first weights it was handed
SPY = '''
from prunebench.methods.magnitude import MagnitudePruning


class Spy(MagnitudePruning):
    def compress(self, model, target, trainer):
        mods = dict(model.named_modules())
        handed = {n: [float(v) for v in mods[n].weight.detach().flatten()[:16]] for n in target.layers}
        return {"handed": handed, **super().compress(model, target, trainer)}
'''

SUITE = """
suite: scratch-test
version: 1
""" + SYNTHETIC_TASK + """dense: {epochs: 2, optimizer: {lr: 0.05}}
budget: {epochs: 1, optimizer: {lr: 0.01}}
methods: [spy, gmp]
start: {scratch: [spy, gmp], dense: [spy]}
protocols:
  equal_compression: {structure: [unstructured], rates: [4]}
"""


@pytest.fixture
def spy(fake_dists):
    fake_dists("fakeplug-spy", {"prunebench.methods": {"spy": "fakeplug_spy:Spy"}},
               module_source={"fakeplug_spy": SPY})


@pytest.fixture
def suite(tmp_path, isolated_cache, spy):
    path = tmp_path / "suites" / "s.yaml"
    path.parent.mkdir()
    path.write_text(SUITE)
    return load_suite(path)


def _point(method="spy", start="dense", seed=0):
    return RunPoint("equal_compression", method, "unstructured", 4.0, seed, start=start)


def _fresh(task, seed):
    torch.manual_seed(seed)
    return task.build_model().state_dict()


def _handed(record, layer="conv1"):
    return torch.tensor(record.method_info["handed"][layer])


@pytest.mark.parametrize("seed", [0, 1])
def test_scratch_hands_the_method_a_fresh_init_for_the_seed(suite, tmp_path, seed):
    ctx = RunContext(progress=False, isolation="off", results=ResultStore(tmp_path / "res"))
    scratch = run_point(suite, _point(start="scratch", seed=seed), ctx).record
    task = get_task(suite, ctx)
    fresh = _fresh(task, seed)
    with fixed_threads(1):  # the thread count is part of the dense cache key
        dense = dense_baseline(suite.task_name, task, suite.dense, seed, progress=False).state
    for layer in ("conv1", "fc1"):
        got = _handed(scratch, layer)
        assert torch.equal(got, fresh[f"{layer}.weight"].flatten()[:16])
        assert not torch.equal(got, dense[f"{layer}.weight"].flatten()[:16])
    # the dense start is handed the dense model, as before
    at_dense = run_point(suite, _point(seed=seed), ctx).record
    assert torch.equal(_handed(at_dense), dense["conv1.weight"].flatten()[:16])
    # the fresh draw is the one the dense model started from, not another seed's
    assert not torch.equal(_handed(scratch), _fresh(task, seed + 7)["conv1.weight"].flatten()[:16])


def test_scratch_in_its_own_process_gets_the_same_init(suite):
    """Isolated methods run in a spawned process: the point's start travels with it."""
    here = run_point(suite, _point(start="scratch"), RunContext(progress=False, isolation="off")).record
    apart = run_point(suite, _point(start="scratch"), RunContext(progress=False, isolation="process")).record
    assert here.method_info["handed"] == apart.method_info["handed"]
    assert here.metrics == apart.metrics


def test_point_id_key_and_record_say_which_start(suite, tmp_path):
    store = ResultStore(tmp_path / "res")
    ctx = RunContext(progress=False, isolation="off", results=store)
    scratch = run_point(suite, _point(start="scratch"), ctx).record
    dense = run_point(suite, _point(), ctx).record
    assert scratch.point_id == "spy-unstructured-4x-scratch-s0" and dense.point_id == "spy-unstructured-4x-s0"
    assert scratch.point_key != dense.point_key
    assert (scratch.start, dense.start) == ("scratch", "dense")
    assert {r["point_id"]: r["start"] for r in store.records()} == {scratch.point_id: "scratch",
                                                                     dense.point_id: "dense"}
    # a dense start leaves the identity as it was before starts existed: stored keys stay valid
    ident = dict(suite="s", suite_version=1, smoke=False, protocol="equal_compression", method={"name": "m"},
                 structure="unstructured", seed=0, budget_epochs=1.0, quantization=None, rate=4.0, search=None,
                 dense_key="k")
    assert key_of_identity(point_identity(**ident)) == key_of_identity(point_identity(**ident, start="dense"))
    assert key_of_identity(point_identity(**ident)) != key_of_identity(point_identity(**ident, start="scratch"))
    # what the store holds migrates to the same key (resume finds the scratch record)
    again = run_point(suite, _point(start="scratch"), ctx)
    assert again.reused and again.record.point_key == scratch.point_key
    assert RunRecord.from_json(scratch.to_json()).start == "scratch"


def test_scratch_keeps_the_dense_reference_and_counts_epochs_and_time(suite):
    ctx = RunContext(progress=False, isolation="off")
    scratch = run_point(suite, _point(start="scratch"), ctx).record
    dense = run_point(suite, _point(), ctx).record
    assert scratch.dense_metrics == dense.dense_metrics and scratch.dense_key == dense.dense_key
    assert scratch.accuracy_drop == pytest.approx(scratch.dense_value - scratch.primary_value)
    assert scratch.epochs_spent == pytest.approx(1.0)
    assert scratch.epochs_from_init == pytest.approx(scratch.epochs_spent)
    assert dense.epochs_from_init == pytest.approx(dense.dense_epochs_trained + dense.epochs_spent) == 3.0
    assert 0 < scratch.method_wall_time_s <= scratch.wall_time_s
    assert scratch.end_to_end_time_s == pytest.approx(scratch.method_wall_time_s)
    assert dense.dense_train_time_s is not None and dense.dense_train_time_s > 0
    assert dense.end_to_end_time_s == pytest.approx(dense.method_wall_time_s + dense.dense_train_time_s)


def test_gmp_runs_from_scratch_unchanged(suite):
    point = next(p for p in suite.points() if p.method == "gmp")
    assert point.start == "scratch" and point.id == "gmp-unstructured-4x-scratch-s0"
    rec = run_point(suite, point, RunContext(progress=False)).record
    assert rec.status == "passed" and rec.achieved_rate >= 4.0 and rec.start == "scratch"
    assert rec.epochs_from_init == pytest.approx(1.0)


def test_a_start_the_suite_does_not_run_is_refused(suite):
    # e.g. a runner that dropped the point's start on its way (gmp runs from scratch only here)
    with pytest.raises(ValueError, match="start"):
        run_point(suite, _point(method="gmp"), RunContext(progress=False))


def test_points_follow_the_start_mapping(suite):
    ids = [p.id for p in suite.points()]
    assert ids == ["spy-unstructured-4x-scratch-s0", "spy-unstructured-4x-s0", "gmp-unstructured-4x-scratch-s0"]
    assert [p.id for p in suite.points(methods=["spy"])] == ids[:2]


@pytest.mark.parametrize("value, message", [
    ("scrach", "start: expected one of 'dense', 'scratch', got 'scrach'"),
    ("[dense, dense]", "start[1]: expected distinct starts, got 'dense' twice"),
    ("{scratch: [spyy], dense: [spy, gmp]}", "start.scratch[0]: expected one of the suite's methods (spy, gmp), got 'spyy'"),
    ("{scratch: [spy]}", "start: expected every method of the suite under some start, got gmp under none"),
    ("{fresh: [spy]}", "start.fresh: expected a key that is one of 'dense', 'scratch', got 'fresh'"),
])
def test_bad_start_is_refused_with_the_value(tmp_path, spy, value, message):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.replace("start: {scratch: [spy, gmp], dense: [spy]}", f"start: {value}"))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value) == f"{path}: {message}"


def test_one_start_for_every_point(tmp_path, spy):
    path = tmp_path / "one.yaml"
    path.write_text(SUITE.replace("start: {scratch: [spy, gmp], dense: [spy]}", "start: scratch"))
    assert [p.id for p in load_suite(path).points()] == ["spy-unstructured-4x-scratch-s0",
                                                         "gmp-unstructured-4x-scratch-s0"]
    path.write_text(SUITE.replace("start: {scratch: [spy, gmp], dense: [spy]}\n", ""))
    assert {p.start for p in load_suite(path).points()} == {"dense"}


def _rec(method, start, seed, value, **extra):
    return {"protocol": "equal_compression", "status": "passed", "method": {"name": method, "version": "1"},
            "structure": "unstructured", "seed": seed, "dense_key": "d", "primary_metric": "top1",
            "target": {"rate": 4.0}, "metrics": {"top1": value}, "accuracy_drop": 90.0 - value,
            "budget_epochs": 12.0, "start": start, **extra}


def test_tables_keep_the_starts_apart():
    records = [_rec("gmp", "scratch", s, 80.0 + s, epochs_from_init=12.0, method_wall_time_s=10.0,
                    end_to_end_time_s=10.0) for s in range(2)]
    records += [_rec("gmp", "dense", s, 85.0 + s, epochs_from_init=22.0, method_wall_time_s=10.0,
                     end_to_end_time_s=30.0) for s in range(2)]
    rows = EqualCompression.rows(records, "top1", "unstructured")
    assert sorted(r.method for r in rows) == ["gmp v1", "gmp v1 (from scratch)"]
    lines, png = scratch_section(records, "top1", 90.0, "t", "t")
    page = "\n".join(lines)
    assert "From scratch and after training" in page and "(t-scratch.png)" in page
    assert png is not None and png.startswith(b"\x89PNG")
    cells = {line.split("|")[4].strip(): [c.strip() for c in line.split("|")[1:-1]]
             for line in page.splitlines() if "| gmp v1" in line}
    # start, epochs from init, budget, method wall, end to end
    assert cells["scratch"][3:8] == ["scratch", "12", "12", "10", "10"]
    assert cells["dense"][2:8] == ["gmp v1", "dense", "22", "12", "10", "30"]
    assert scratch_section([_rec("gmp", None, 0, 80.0)], "top1", 90.0, "t", "t") == ([], None)  # no scratch arm


def test_scratch_section_keeps_budgets_apart():
    # a budget ladder: the 24-epoch from-scratch arm is its own row, not averaged into the 12-epoch one
    records = [_rec("gmp", "scratch", s, 80.0, epochs_from_init=12.0) for s in range(2)]
    records += [_rec("gmp", "scratch", s, 88.0, epochs_from_init=24.0, budget_epochs=24.0) for s in range(2)]
    lines, _ = scratch_section(records, "top1", 90.0, "t", "t")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if "| gmp v1" in line]
    assert [(r[4], r[5], r[8].split(" ")[0]) for r in rows] == [("12", "12", "80.00"), ("24", "24", "88.00")]
