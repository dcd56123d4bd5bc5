"""budgets: [..]: every point runs once per budget; the budget is in the point's
id and identity, in every table, and the page plots accuracy against budget."""

import pytest

from prunebench.report import render
from prunebench.results import ResultStore
from prunebench.runner import RunContext, run_point
from prunebench.suite import SuiteError, load_suite

SUITE = """
suite: ladder-test
version: 1
task:
  name: classification
  model: lenet5
  data: {{name: synthetic, synthetic_train: 256, synthetic_test: 128}}
  batch_size: 64
dense: {{epochs: 1}}
budgets: {budgets}
methods: [magnitude]
protocols:
  equal_compression: {{structure: [unstructured], rates: [8]}}
"""


def _suite(tmp_path, budgets):
    path = tmp_path / "ladder.yaml"
    path.write_text(SUITE.format(budgets=budgets))
    return load_suite(path)


def test_each_point_runs_at_each_budget_and_the_page_shows_the_ladder(tmp_path, isolated_cache):
    suite = _suite(tmp_path, "[0.25, 0.5, 1]")
    points = suite.points()
    assert [p.id for p in points] == ["magnitude-unstructured-8x-b0.25-s0", "magnitude-unstructured-8x-b0.5-s0",
                                      "magnitude-unstructured-8x-b1-s0"]
    store = ResultStore(tmp_path / "res")
    recs = [run_point(suite, p, RunContext(results=store, progress=False)).record for p in points]
    assert [r.budget_epochs for r in recs] == [0.25, 0.5, 1.0]
    assert [r.steps_spent for r in recs] == [1, 2, 4]  # 4 steps per epoch
    assert len({r.point_key for r in recs}) == 3
    pages = render(store.records())
    page = pages["ladder-test.md"]
    assert "Budget (epochs)" in page and "## Accuracy against training budget" in page
    assert "ladder-test-budget.png" in pages and pages["ladder-test-budget.png"][:4] == b"\x89PNG"
    row = next(line for line in page.splitlines() if line.startswith("| unstructured | magnitude v2 | 8×"))
    assert row.count("(n=1)") == 3


def test_a_budget_listed_twice_is_refused(tmp_path):
    with pytest.raises(SuiteError, match=r"budgets\[1\]: expected distinct budgets, got 1 twice"):
        _suite(tmp_path, "[1, 1]")


def _suite_with_rungs(tmp_path, rungs, budgets="[0.25, 1]"):
    text = SUITE.format(budgets=budgets).replace(
        "  equal_compression: {structure: [unstructured], rates: [8]}\n",
        "  equal_compression: {structure: [unstructured], rates: [8]}\n"
        f"  equal_accuracy: {{structure: [unstructured], tolerance: 5, search: {{lo: 2, hi: 8, steps: 1}}, "
        f"budgets: {rungs}}}\n")
    path = tmp_path / "rungs.yaml"
    path.write_text(text)
    return load_suite(path)


def test_a_protocol_may_run_some_rungs_only(tmp_path):
    some = _suite_with_rungs(tmp_path, "[1]").points()
    ids = [p.id for p in some]
    assert ids == ["magnitude-unstructured-8x-b0.25-s0", "magnitude-unstructured-8x-b1-s0",
                   "magnitude-unstructured-b1-s0"]
    # the points kept are the very points of the protocol running every rung
    every = {p.id: p for p in _suite_with_rungs(tmp_path, "null").points()}
    assert len(every) == 4 and "magnitude-unstructured-b0.25-s0" in every
    assert all(every[p.id] == p for p in some)


@pytest.mark.parametrize("rungs, budgets, message", [
    ("[3]", "[0.25, 1]", r"protocols.equal_accuracy.budgets\[0\]: expected one of the suite's budgets \[0.25, 1.0\], got 3"),
    ("[1, 1]", "[0.25, 1]", r"protocols.equal_accuracy.budgets\[1\]: expected distinct budgets, got 1 twice"),
    ("[1]", "null", r"protocols.equal_accuracy.budgets: expected no budgets without a suite ladder"),
])
def test_bad_rungs_are_refused(tmp_path, rungs, budgets, message):
    with pytest.raises(SuiteError, match=message):
        _suite_with_rungs(tmp_path, rungs, budgets)


def test_the_page_says_how_much_of_the_suite_has_run(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)  # records name their suite file relative to where the run started
    suite = _suite_with_rungs(tmp_path, "[1]")
    store = ResultStore(tmp_path / "res")
    points = suite.points()
    run_point(suite, points[0], RunContext(results=store, progress=False))
    page = render(store.records())["ladder-test.md"]
    assert "- Points run: 1 of the suite's 3 (equal compression 1 of 2; equal accuracy 0 of 1)" in page
    (tmp_path / "rungs.yaml").write_text((tmp_path / "rungs.yaml").read_text().replace("version: 1", "version: 2"))
    assert "Points run" not in render(store.records())["ladder-test.md"]  # the file moved on: no claim


def test_points_a_method_cannot_run_are_not_owed(tmp_path, monkeypatch):
    from prunebench.report.pages import coverage_line

    monkeypatch.chdir(tmp_path)
    (tmp_path / "skip.yaml").write_text(SUITE.format(budgets="[1]").replace("methods: [magnitude]",
                                                                          "methods: [magnitude, tp_l1]"))
    done = {"suite": "ladder-test", "suite_file": "skip.yaml", "protocol": "equal_compression",
            "point_id": "magnitude-unstructured-8x-b1-s0"}
    # tp_l1 prunes whole channels only: its unstructured point is skipped, not counted as missing
    assert coverage_line([done], 1, False) == ("- Points run: 1 of the suite's 1 (equal compression 1 of 1; "
                                               "1 more skipped: their method cannot produce them)")
    assert coverage_line([done], 2, False) is None  # the records are of another version than the file


def _rec(seed, budget, top1, dense_top1):
    return {"protocol": "equal_compression", "status": "passed", "structure": "unstructured", "seed": seed,
            "method": {"name": "magnitude", "version": "2"}, "target": {"rate": 8.0, "structure": "unstructured"},
            "budget_epochs": budget, "metrics": {"top1": top1}, "accuracy_drop": round(dense_top1 - top1, 4)}


def test_reaching_dense_is_judged_per_seed_when_rungs_hold_different_seeds():
    from prunebench.report.pages import _budget_section
    from prunebench.report.stats import stat_of

    # rung 1 has seeds 0-3, rung 3 only seeds 2-3, whose dense models are the weaker ones: their
    # plain mean (88.5) is within 1 point of the all-seed dense mean (89.0) though each of them
    # is 1.5 points below its own dense model
    dense = {0: 90.0, 1: 90.0, 2: 88.0, 3: 88.0}
    records = [_rec(s, 1.0, dense[s] - 3.0, dense[s]) for s in range(4)]
    records += [_rec(s, 3.0, dense[s] - 1.5, dense[s]) for s in (2, 3)]
    dense_stat = stat_of([{"v": v} for v in dense.values()], lambda r: r["v"])
    lines, _ = _budget_section(records, "top1", dense_stat, "x")
    row = next(line for line in lines if line.startswith("| unstructured"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-2] == "4 · 2"
    assert cells[-1] == "> 3"
    # and a rung whose own seeds are within a point counts
    records += [_rec(s, 10.0, dense[s] - 0.5, dense[s]) for s in (0, 1)]
    lines, _ = _budget_section(records, "top1", dense_stat, "x")
    row = next(line for line in lines if line.startswith("| unstructured"))
    assert [c.strip() for c in row.strip("|").split("|")][-2:] == ["4 · 2 · 2", "10"]
    # a row that has not run the top rung is judged on the rungs it ran, not on the ladder's top
    records = [_rec(s, 1.0, dense[s] - 3.0, dense[s]) for s in range(4)]
    records += [{**_rec(s, 10.0, dense[s] - 3.0, dense[s]), "target": {"rate": 16.0, "structure": "unstructured"}}
                for s in range(2)]
    lines, _ = _budget_section(records, "top1", dense_stat, "x")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| unstructured")]
    assert [r[-2:] for r in rows] == [["4 · 0", "> 1"], ["0 · 2", "> 10"]]


def test_the_budget_section_keeps_starts_apart():
    from prunebench.report.pages import _budget_section

    records = [_rec(s, 12.0, 90.0, 90.5) for s in range(2)]
    records += [{**_rec(s, 12.0, 88.0, 90.5), "start": "scratch"} for s in range(2)]
    records += [{**_rec(s, 24.0, 89.0, 90.5), "start": "scratch"} for s in range(2)]
    lines, _ = _budget_section(records, "top1", None, "x")
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| unstructured")}
    assert rows["magnitude v2"][-2:] == ["2 · 0", "12"]
    assert rows["magnitude v2 (from scratch)"][-2:] == ["2 · 2", "> 24"]
    assert rows["magnitude v2 (from scratch)"][3].startswith("88.00")


def test_budgets_option_selects_rungs_and_b1_does_not_take_b10(tmp_path):
    import subprocess
    import sys

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "ladder.yaml").write_text(SUITE.format(budgets="[1, 3, 10]"))

    def collected(*args):
        proc = subprocess.run([sys.executable, "-m", "pytest", "suites", "--collect-only", "-q", "-p",
                               "no:cacheprovider", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line.split("[", 1)[1].rstrip("]") for line in proc.stdout.splitlines() if "::" in line]

    assert collected("--budgets", "1") == ["magnitude-unstructured-8x-b1-s0"]
    assert collected("--budgets", "3,10") == ["magnitude-unstructured-8x-b3-s0", "magnitude-unstructured-8x-b10-s0"]
    assert len(collected()) == 3
    assert collected("-k", "b1-s") == ["magnitude-unstructured-8x-b1-s0"]  # the ids end a rung with "-s"
