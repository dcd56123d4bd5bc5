"""--executor slurm against a real one-node Slurm (scripts/slurm_local.sh starts one;
CI does). Skipped, saying so, where no cluster answers."""

import shutil
import subprocess

import pytest

from conftest import REPO
from test_pytest_plugin import TINY, _records, _suite

pytestmark = pytest.mark.slurm


def _cluster() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm client here (bash scripts/slurm_local.sh installs and starts a one-node cluster)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    if out.returncode != 0 or not any(s in out.stdout for s in ("idle", "mixed", "allocated")):
        return f"no Slurm node up (sinfo: {out.stdout.strip() or out.stderr.strip()}); run bash scripts/slurm_local.sh"
    return None


_missing = _cluster()
needs_slurm = pytest.mark.skipif(_missing is not None, reason=str(_missing))

RAISER = '''
from prunebench import Method

class Raiser(Method):
    version = "1"
    structures = ("unstructured",)

    def compress(self, model, target, trainer):
        raise RuntimeError("raiser-marker: this method always fails")
'''


@needs_slurm
def test_the_smoke_suite_runs_as_one_slurm_job_array_and_resumes(pytester, isolated_cache):
    """The classification smoke suite (magnitude: 3 points) through --executor slurm."""
    pytest.importorskip("submitit")
    (pytester.path / "suites").mkdir()
    shutil.copy(REPO / "suites" / "smoke" / "lenet5_synthetic.yaml", pytester.path / "suites")
    args = ("suites", "--method", "magnitude", "--executor", "slurm", "--slurm-partition", "debug",
            "--slurm-time-min", "20", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    res = pytester.runpytest_subprocess(*args)
    res.assert_outcomes(passed=3)
    res.stdout.fnmatch_lines(["*prunebench: * done, * running, * queued of 3 points*"])
    recs = _records(pytester.path / "res")
    assert len(recs) == 3 and {r["status"] for r in recs} == {"passed"}
    # one array: its tasks are <array id>_<index>
    tasks = sorted(p.name for p in (pytester.path / "jobs").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 3 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    assert pytester.runpytest_subprocess(*args).parseoutcomes() == {"reused": 3}


@needs_slurm
def test_a_failing_slurm_job_shows_its_stderr(pytester, isolated_cache, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from conftest import make_dist

    site = tmp_path / "site"
    site.mkdir()
    (site / "pbraiser.py").write_text(RAISER)
    make_dist(site, "pbraiser", {"prunebench.methods": {"raiser": "pbraiser:Raiser"}})
    monkeypatch.setenv("PYTHONPATH", str(site))
    _suite(pytester, "fails", text=TINY.format(name="fails", expect="{}").replace("methods: [magnitude]", "methods: [raiser]"))
    res = pytester.runpytest_subprocess("suites", "--executor", "slurm", "--slurm-time-min", "10", "--wandb", "off",
                                        "--results", "res", "-p", "no:cacheprovider")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*raiser-marker: this method always fails*"])
    (rec,) = _records(pytester.path / "res")
    assert rec["status"] == "error" and "raiser-marker" in rec["failure"]
