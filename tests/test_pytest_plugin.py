"""End to end through pytest itself (pytester), as a user runs the suites."""

import shutil

import pytest

from conftest import REPO

TINY = """
suite: tiny-{name}
version: 1
task:
  name: classification
  model: lenet5
  data: {{name: synthetic, synthetic_train: 256, synthetic_test: 128}}
  batch_size: 64
dense: {{epochs: 1, optimizer: {{lr: 0.05}}}}
budget: {{epochs: 0.25}}
seeds: [0]
quantization: {{bits: 4}}
hardware: [storage, compute]
methods: [magnitude]
protocols:
  equal_compression: {{structure: [unstructured], rates: [4], expect: {expect}}}
"""


def _suite(pytester, name, expect="{max_accuracy_drop: 100}", text=None):
    path = pytester.path / "suites" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text or TINY.format(name=name, expect=expect))
    return path


def _records(results_dir):
    from prunebench.results import ResultStore

    return ResultStore(results_dir).records()


@pytest.mark.slow
def test_smoke_suites_pass_with_magnitude(pytester, isolated_cache):
    # the classification smoke suite; detection and lanes have their own end-to-end tests
    (pytester.path / "suites" / "smoke").mkdir(parents=True)
    shutil.copy(REPO / "suites" / "smoke" / "lenet5_synthetic.yaml", pytester.path / "suites" / "smoke")
    res = pytester.runpytest_subprocess("suites/smoke", "--method", "magnitude", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=3)
    res.stdout.fnmatch_lines(["*3 records written to res*0 reused*"])
    recs = _records(pytester.path / "res")
    assert {r["point_id"] for r in recs} == {"magnitude-unstructured-4x-s0", "magnitude-filter-4x-s0", "magnitude-unstructured-s0"}
    for r in recs:
        assert r["status"] == "passed"
        assert r["achieved_rate"] >= (r["target"]["rate"] or r["search"]["lo"]) * 0.999
        assert r["method"]["distribution"] == "prunebench"
        assert r["hardware"]["storage"]["stored_bits"] > 0
        assert r["epochs_spent"] <= r["budget_epochs"] + 1e-9
        assert "torch" in r["versions"]
    search = next(r for r in recs if r["protocol"] == "equal_accuracy")["search"]
    assert search["runs"] == len(search["trace"]) >= 1


@pytest.mark.slow
def test_smoke_suite_outcome_does_not_depend_on_the_thread_count(pytester, tmp_path, monkeypatch):
    """The classification smoke suite under 1 and 2 host threads gives the same
    numbers (run points fix their thread count), and passes under --threads 2
    too (the suite's margins were measured under both)."""
    (pytester.path / "suites" / "smoke").mkdir(parents=True)
    shutil.copy(REPO / "suites" / "smoke" / "lenet5_synthetic.yaml", pytester.path / "suites" / "smoke")
    runs = {}
    for label, host_threads, extra in (("host1", "1", []), ("host2", "2", []), ("threads2", "2", ["--threads", "2"])):
        monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / f"cache-{label}"))  # each trains its own dense model
        monkeypatch.setenv("OMP_NUM_THREADS", host_threads)
        res = pytester.runpytest_subprocess("suites/smoke", "--method", "magnitude", "--wandb", "off",
                                            "--results", f"res-{label}", "-p", "no:cacheprovider", *extra)
        res.assert_outcomes(passed=3)
        runs[label] = {r["point_id"]: r for r in _records(pytester.path / f"res-{label}")}
    assert {r["torch_threads"] for r in runs["host1"].values()} == {1}
    assert {r["torch_threads"] for r in runs["threads2"].values()} == {2}
    for point, rec in runs["host1"].items():
        other = runs["host2"][point]
        assert (rec["dense_metrics"], rec["metrics"], rec["achieved_rate"]) == \
            (other["dense_metrics"], other["metrics"], other["achieved_rate"]), point
        assert rec["dense_key"] != runs["threads2"][point]["dense_key"]  # another thread count, another model


def test_item_ids_are_readable(pytester, isolated_cache):
    _suite(pytester, "ids")
    res = pytester.runpytest_subprocess("suites", "--collect-only", "-q", "--wandb", "off")
    res.stdout.fnmatch_lines(["suites/ids.yaml::equal_compression[[]magnitude-unstructured-4x-s0[]]"])


def test_unmet_expect_fails_with_target_vs_achieved(pytester, isolated_cache):
    _suite(pytester, "unmet", expect="{min_accuracy: 100}")
    res = pytester.runpytest_subprocess("suites", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*expectation not met*", "*top1: target >= 100, achieved *"])
    (rec,) = _records(pytester.path / "res")
    assert rec["status"] == "failed" and "target >= 100" in rec["failure"]  # recorded anyway


def test_unknown_method_suggests_the_closest(pytester):
    _suite(pytester, "x")
    res = pytester.runpytest_subprocess("suites", "--method", "magnitud", "--wandb", "off")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*Unknown method 'magnitud'. Did you mean: magnitude?*"])


def test_missing_dataset_skips_naming_where_it_looked(pytester, isolated_cache):
    text = TINY.format(name="nodata", expect="{}").replace("{name: synthetic, synthetic_train: 256, synthetic_test: 128}", "{name: mnist}")
    _suite(pytester, "nodata", text=text)
    empty = pytester.mkdir("empty_root")
    res = pytester.runpytest_subprocess("suites", "--wandb", "off", "--data-root", str(empty), "-rs", "-p", "no:cacheprovider")
    res.assert_outcomes(skipped=1)
    res.stdout.fnmatch_lines([f"*dataset 'mnist' not found (looked in*{empty}*To get it*"])


def test_broken_suite_is_a_collection_error_not_a_silent_skip(pytester):
    path = _suite(pytester, "broken", text=TINY.format(name="b", expect="{}").replace("seeds: [0]", "seeds: [zero]"))
    res = pytester.runpytest_subprocess("suites", "--wandb", "off")
    assert res.ret != 0
    res.stdout.fnmatch_lines([f"*{path}: seeds[[]0[]]: expected an integer in 0..4294967295, got 'zero'*"])


def test_seeds_option_overrides_suite_seeds(pytester):
    _suite(pytester, "seeds")
    res = pytester.runpytest_subprocess("suites", "--collect-only", "-q", "--seeds", "3,4")
    res.stdout.fnmatch_lines(["*magnitude-unstructured-4x-s3*", "*magnitude-unstructured-4x-s4*"])
    bad = pytester.runpytest_subprocess("suites", "--collect-only", "--seeds", "a")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_a_second_run_reuses_completed_points_and_rerun_runs_them_again(pytester, isolated_cache):
    _suite(pytester, "resume")
    args = ("suites", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    first = pytester.runpytest_subprocess(*args)
    first.assert_outcomes(passed=1)
    (rec,) = _records(pytester.path / "res")
    second = pytester.runpytest_subprocess(*args, "-rA")
    assert second.parseoutcomes() == {"reused": 1}
    second.stdout.fnmatch_lines(["*0 records written to res*1 reused*"])
    assert _records(pytester.path / "res") == [rec]  # nothing ran, nothing was rewritten
    third = pytester.runpytest_subprocess(*args, "--rerun")
    third.assert_outcomes(passed=1)
    (again,) = _records(pytester.path / "res")  # the same point: its file replaced, not a second record
    assert again["point_key"] == rec["point_key"] and again["created"] >= rec["created"]


def test_a_failed_point_is_reused_as_failed_and_an_error_is_retried(pytester, isolated_cache):
    _suite(pytester, "unmet2", expect="{min_accuracy: 100}")
    args = ("suites", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    pytester.runpytest_subprocess(*args).assert_outcomes(failed=1)
    again = pytester.runpytest_subprocess(*args)
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*target >= 100*", "*reused: the stored record of this point*"])
    # an error record is never reused
    from prunebench.results import ResultStore

    store = ResultStore(pytester.path / "res")
    (rec,) = store.records()
    rec.update(status="error", failure="RuntimeError: killed", created="2000-01-01T00:00:00Z")
    store.put(rec)
    retried = pytester.runpytest_subprocess(*args)
    retried.assert_outcomes(failed=1)
    assert "reused: the stored record" not in retried.stdout.str()
    retried.stdout.fnmatch_lines(["*1 records written to res*0 reused*"])
    (rec,) = store.records()
    assert rec["status"] == "failed" and rec["created"] > "2000"


KILL_SUITE = TINY.replace("rates: [4]", "rates: [2, 4, 8, 16]").replace("seeds: [0]", "seeds: [0, 1]")


@pytest.mark.slow
def test_a_suite_killed_with_sigkill_resumes_without_losing_or_repeating_points(pytester, isolated_cache):
    import os
    import signal
    import subprocess
    import sys
    import time

    _suite(pytester, "killed", text=KILL_SUITE.format(name="killed", expect="{max_accuracy_drop: 100}"))
    res_dir = pytester.path / "res"
    cmd = [sys.executable, "-m", "pytest", "suites", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider", "-q"]
    proc = subprocess.Popen(cmd, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(res_dir.glob("*/*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {r["point_key"]: r["created"] for r in _records(res_dir)}
    assert 3 <= len(done) < 8, len(done)
    res = pytester.runpytest_subprocess("suites", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    outcomes = res.parseoutcomes()
    assert outcomes.get("reused") == len(done) and outcomes.get("passed") == 8 - len(done)
    after = _records(res_dir)
    assert len(after) == 8 and len({r["point_key"] for r in after}) == 8
    assert all(r["created"] == done[r["point_key"]] for r in after if r["point_key"] in done)  # not repeated
    assert all(r["dense_source"] == "cache" for r in after if r["point_key"] not in done)  # the dense model reused
