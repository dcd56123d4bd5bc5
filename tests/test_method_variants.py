"""NAME:LABEL: one method plugin listed twice in a suite with different settings
(an ablation), each its own points, records and leaderboard rows."""

import pytest

from prunebench import registry
from prunebench.methods.magnitude import MagnitudePruning
from prunebench.report import render
from prunebench.results import ResultStore
from prunebench.runner import RunContext, run_point
from prunebench.suite import SuiteError, load_suite

from conftest import SYNTHETIC_TASK

SUITE = """\
suite: variants-test
version: 1
""" + SYNTHETIC_TASK + """\
dense: {epochs: 1, optimizer: {lr: 0.05}}
budget: {epochs: 0.25}
seeds: [0]
hardware: [storage]
reference_method: magnitude
methods:
  magnitude: {}
  magnitude:uniform: {allocation: uniform}
protocols:
  equal_compression: {structure: [unstructured], rates: [8]}
"""


def test_a_variant_is_its_plugin_under_its_own_name():
    assert registry.methods.get("magnitude:uniform") is MagnitudePruning
    assert registry.methods.info("magnitude:uniform").name == "magnitude"
    with pytest.raises(registry.UnknownPlugin, match="Did you mean: magnitude"):
        registry.methods.get("magnitud:uniform")
    with pytest.raises(registry.UnknownPlugin, match="expected NAME or NAME:LABEL"):
        registry.methods.get("magnitude:two words")
    with pytest.raises(registry.UnknownPlugin, match="Unknown task"):  # only methods have variants
        registry.tasks.get("classification:x")


def test_variants_run_and_rank_apart(tmp_path, isolated_cache):
    path = tmp_path / "variants.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    assert suite.method_config("magnitude:uniform").allocation == "uniform"
    assert suite.method_config("magnitude").allocation == "global"
    points = suite.points()
    assert [p.id for p in points] == ["magnitude-unstructured-8x-s0", "magnitude:uniform-unstructured-8x-s0"]
    store = ResultStore(tmp_path / "res")
    recs = [run_point(suite, p, RunContext(results=store, progress=False)).record for p in points]
    assert [r.method.name for r in recs] == ["magnitude", "magnitude:uniform"]
    assert recs[0].point_key != recs[1].point_key
    # uniform allocation prunes every layer to the same fraction; global does not
    masks = [r.hardware["storage"] for r in recs]
    assert masks[0] != masks[1]
    page = render(store.records())["variants-test.md"].splitlines()
    header = next(line for line in page if line.startswith("| Method"))
    paired = [c.strip() for c in header.strip("|").split("|")].index("Δ top1 vs magnitude (paired, 95% CI)")
    cells = {c[0]: c for c in ([c.strip() for c in line.strip("|").split("|")] for line in page
                               if line.startswith("| magnitude"))}
    assert set(cells) == {"magnitude v2", "magnitude:uniform v2"}  # two rows, not one merged
    assert cells["magnitude v2"][paired] == "reference"
    assert cells["magnitude:uniform v2"][paired].endswith("(n=1)")  # paired with magnitude, same seed


def test_a_bad_variant_in_a_suite_is_refused_before_any_run(tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text(SUITE.replace("magnitude:uniform: {allocation: uniform}", "magnitude:uniform: {allocaton: uniform}"))
    with pytest.raises(SuiteError, match="methods.magnitude:uniform"):
        load_suite(path)
