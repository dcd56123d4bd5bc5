"""Executors: points as submitit jobs in their own processes, through pytest."""

import pytest

from conftest import make_dist
from prunebench.executors import LocalExecutor, PointJob, SubmititExecutor, make_executor
from test_pytest_plugin import TINY, _records, _suite

pytest.importorskip("submitit")

TWO_SEEDS = TINY.replace("seeds: [0]", "seeds: [0, 1]")


def test_make_executor_checks_its_arguments(tmp_path):
    assert isinstance(make_executor("local", tmp_path), LocalExecutor)
    with pytest.raises(ValueError, match="executor must be one of local, submitit, slurm, got 'slurmm'"):
        make_executor("slurmm", tmp_path)
    with pytest.raises(ValueError, match="array_parallelism must be an integer >= 1, got 0"):
        SubmititExecutor(tmp_path, "local", array_parallelism=0)


def test_local_executor_runs_a_point_when_asked(tmp_path, isolated_cache):
    path = tmp_path / "suites" / "t.yaml"
    path.parent.mkdir()
    path.write_text(TINY.format(name="t", expect="{max_accuracy_drop: 100}"))
    job = PointJob(suite_path=str(path), smoke=False, protocol="equal_compression", method="magnitude",
                   structure="unstructured", rate=4.0, seed=0, results=str(tmp_path / "res"))
    (handle,) = LocalExecutor().submit([job])
    assert handle.state() == "queued"
    out = handle.result()
    assert handle.state() == "done" and out.record["status"] == "passed" and not out.reused
    assert PointJob(**{**job.__dict__})().reused  # a second run of the same point reuses its record


def test_a_job_keeps_the_points_start(tmp_path, isolated_cache):
    path = tmp_path / "suites" / "t.yaml"
    path.parent.mkdir()
    text = TINY.format(name="t", expect="{max_accuracy_drop: 100}") + "start: [dense, scratch]\n"
    path.write_text(text)
    job = PointJob(suite_path=str(path), smoke=False, protocol="equal_compression", method="magnitude",
                   structure="unstructured", rate=4.0, seed=0, results=str(tmp_path / "res"), start="scratch")
    (handle,) = LocalExecutor().submit([job])
    record = handle.result().record
    assert record["start"] == "scratch"  # not the dense point under the same name


@pytest.mark.slow
def test_submitit_runs_each_point_in_its_own_process(pytester, isolated_cache):
    _suite(pytester, "jobs", text=TWO_SEEDS.format(name="jobs", expect="{max_accuracy_drop: 100}"))
    res = pytester.runpytest_subprocess("suites", "--executor", "submitit", "--workers", "2", "--wandb", "off",
                                        "--results", "res", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2)
    res.stdout.fnmatch_lines(["*prunebench: 2 done, 0 running, 0 queued of 2 points*"])
    recs = _records(pytester.path / "res")
    assert sorted(r["seed"] for r in recs) == [0, 1] and all(r["status"] == "passed" for r in recs)
    logs = sorted((pytester.path / "jobs").glob("*/*_log.out"))
    assert len(logs) == 2  # two jobs, two processes
    again = pytester.runpytest_subprocess("suites", "--executor", "submitit", "--wandb", "off",
                                          "--results", "res", "-p", "no:cacheprovider")
    assert again.parseoutcomes() == {"reused": 2}


CRASHER = '''
import os, sys
from prunebench import Method

class Crasher(Method):
    version = "1"
    structures = ("unstructured",)

    def compress(self, model, target, trainer):
        print("crasher-marker: giving up", file=sys.stderr, flush=True)
        os._exit(3)
'''


@pytest.mark.slow
def test_a_job_that_dies_shows_the_tail_of_its_stderr(pytester, isolated_cache, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "pbcrasher.py").write_text(CRASHER)
    make_dist(site, "pbcrasher", {"prunebench.methods": {"crasher": "pbcrasher:Crasher"}})
    monkeypatch.setenv("PYTHONPATH", str(site))
    _suite(pytester, "dies", text=TINY.format(name="dies", expect="{}").replace("methods: [magnitude]", "methods: [crasher]"))
    res = pytester.runpytest_subprocess("suites", "--executor", "submitit", "--wandb", "off",
                                        "--results", "res", "-p", "no:cacheprovider",
                                            "--isolation", "off")  # the job itself dies, not a method process
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*job * failed; the end of its stderr:*", "*crasher-marker: giving up*"])


def test_executor_and_xdist_do_not_mix(pytester):
    _suite(pytester, "mix")
    res = pytester.runpytest_subprocess("suites", "--executor", "submitit", "-n", "2", "--wandb", "off")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*drop -n (pytest-xdist)*"])


def test_each_xdist_worker_takes_its_own_gpu(monkeypatch):
    import torch

    from prunebench.pytest_plugin import worker_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [worker_device("cuda", f"gw{i}") for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_device("cuda", None) == "cuda"  # not under xdist: a Slurm job sees its own GPUs as cuda:0..
    assert worker_device("cuda:1", "gw0") == "cuda:1" and worker_device("cpu", "gw1") == "cpu"


def test_bad_executor_input_is_refused_before_compute(pytester, monkeypatch, tmp_path):
    import shutil as sh

    from prunebench.executors import executor_problem

    _suite(pytester, "bad")
    res = pytester.runpytest_subprocess("suites", "--executor", "slurmm", "--wandb", "off")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*invalid choice: 'slurmm'*"])
    blocker = pytester.path / "blocker"
    blocker.write_text("a file, not a directory")
    res = pytester.runpytest_subprocess("suites", "--results", "blocker/res", "--wandb", "off")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--results: expected a writable directory, got blocker/res (*"])
    monkeypatch.setattr(sh, "which", lambda name: None)
    assert "no sbatch on PATH" in executor_problem("slurm")
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)
    assert executor_problem("submitit") == "--executor submitit needs submitit: pip install 'prunebench[cluster]'"


def test_job_resources_come_from_options_then_the_suite_then_defaults():
    from prunebench.pytest_plugin import job_resources
    from prunebench.suite import ResourcesSpec

    class Config:
        def __init__(self, **given):
            self.given = given

        def getoption(self, name):
            return self.given.get(name)

    suite = ResourcesSpec(partition="gpu", time_min=120, cpus_per_point=4, gpus_per_point=1)
    assert job_resources(Config(), "slurm", suite, threads=1) == {
        "time_min": 120, "cpus_per_point": 4, "gpus_per_point": 1, "array_parallelism": 32, "partition": "gpu"}
    assert job_resources(Config(pb_time_min=30, pb_partition="cpu"), "slurm", suite, threads=1)["time_min"] == 30
    assert job_resources(Config(pb_time_min=30, pb_partition="cpu"), "slurm", suite, threads=1)["partition"] == "cpu"
    assert job_resources(Config(), "slurm", None, threads=2) == {
        "time_min": 60, "cpus_per_point": 2, "gpus_per_point": 0, "array_parallelism": 32}


def test_a_suite_resources_block_is_validated(tmp_path):
    import yaml

    from prunebench.suite import SuiteError, load_suite

    from conftest import REPO

    data = yaml.safe_load((REPO / "suites" / "smoke" / "lenet5_synthetic.yaml").read_text())
    data["resources"] = {"partition": "gpu", "time_min": 0}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SuiteError, match=r"resources.time_min: expected an integer >= 1"):
        load_suite(path)
    data["resources"]["time_min"] = 90
    path.write_text(yaml.safe_dump(data))
    assert load_suite(path).resources.time_min == 90
