"""An outside package plugs in: pip-installed, listed, run on the smoke suite, conformant."""

import os
import shutil
import subprocess
import sys

import pytest

from prunebench.results import ResultStore

from conftest import REPO

EXAMPLE = REPO / "tests" / "example_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example package into a directory put on PYTHONPATH (the test
    environment itself stays untouched)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(EXAMPLE, build / "example", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(build / "example")],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def test_prunebench_list_finds_it(installed):
    out = subprocess.run([sys.executable, "-m", "prunebench.cli", "list"], env=installed, check=True,
                         capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.strip().startswith("layerwise"))
    assert "prunebench-example 0.1.0" in line and "BROKEN" not in line


@pytest.mark.slow
def test_smoke_suite_runs_it(installed, pytester, isolated_cache, monkeypatch):
    # the classification smoke suite only; detection and lanes have their own end-to-end tests
    (pytester.path / "suites" / "smoke").mkdir(parents=True)
    shutil.copy(REPO / "suites" / "smoke" / "lenet5_synthetic.yaml", pytester.path / "suites" / "smoke")
    monkeypatch.setenv("PYTHONPATH", installed["PYTHONPATH"])
    res = pytester.runpytest_subprocess("suites/smoke", "--method", "layerwise", "--wandb", "off",
                                        "--results", "res", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=3)
    recs = ResultStore(pytester.path / "res").records()
    assert {r["method"]["distribution"] for r in recs} == {"prunebench-example"}
    assert all(r["status"] == "passed" for r in recs)


@pytest.mark.slow
def test_its_own_conformance_tests_pass(installed, pytester, monkeypatch):
    shutil.copy(EXAMPLE / "test_example_conformance.py", pytester.path)
    monkeypatch.setenv("PYTHONPATH", installed["PYTHONPATH"])
    res = pytester.runpytest_subprocess("test_example_conformance.py", "-p", "no:cacheprovider", "-q")
    res.assert_outcomes(passed=9)  # declares + (meets, budget, deterministic, unlisted) x 2 structures
