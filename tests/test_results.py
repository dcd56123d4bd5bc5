"""Results store: one atomic file per run point, concurrent writers, legacy JSONL, env info."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import warnings

import pytest

from prunebench.results import (
    CorruptRecordWarning,
    ResultStore,
    environment_info,
    git_commit,
    git_dirty,
    sanitize_name,
)

PER_WORKER = 100
WORKERS = 2  # one per core on small CI machines; each child pays a torch import
# (numpy/torch are imported inside tests: spawned writers re-import this module)
# bigger than PIPE_BUF (4 KiB) so a torn or interleaved write would show
PAD = "x" * 6000


def _rec(seed, suite="s", **kw):
    """A minimal stored record; the seed makes its point identity distinct."""
    rec = {"suite": suite, "suite_version": 1, "protocol": "equal_compression", "method": {"name": "m"},
           "structure": "unstructured", "seed": seed, "point_id": f"m-unstructured-4x-s{seed}",
           "primary_metric": "top1", "status": "passed"}
    rec.update(kw)
    return rec


def _put_many(root: str, worker: int, barrier) -> None:
    store = ResultStore(root)
    barrier.wait(timeout=120)  # start together, so the writes really overlap
    for i in range(PER_WORKER):
        store.put(_rec(i, worker=worker, pad=PAD))  # both workers write the same points


def test_concurrent_writers_never_leave_a_torn_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_put_many, args=(str(tmp_path), w, barrier)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    files = sorted((tmp_path / "s").glob("*.json"))
    assert len(files) == PER_WORKER  # one file per point, whoever wrote last
    assert not list((tmp_path / "s").glob(".*.tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recs = ResultStore(tmp_path).records("s")
    assert sorted(r["seed"] for r in recs) == list(range(PER_WORKER))
    assert all(r["pad"] == PAD and r["worker"] in (0, 1) for r in recs)  # each one whole


def test_one_file_per_point_named_by_its_key_and_replaced_on_rerun(tmp_path):
    store = ResultStore(tmp_path)
    path = store.put(_rec(0, b=1, a={"z": 1, "y": "two\nlines"}))
    (rec,) = store.records()
    assert path == tmp_path / "s" / f"{rec['point_key']}.json"
    text = path.read_text()
    assert text.count("\n") == 1 and text.index('"a"') < text.index('"b"') and text.index('"y"') < text.index('"z"')
    assert rec["a"] == {"z": 1, "y": "two\nlines"} and rec["schema"] == 2
    store.put(_rec(0, b=2, created="2027-01-01T00:00:00Z"))  # the same point again
    assert [r["b"] for r in store.records()] == [2] and len(list((tmp_path / "s").iterdir())) == 1
    store.put(_rec(1))
    assert len(store.records()) == 2 and store.get("s", rec["point_key"])["b"] == 2


def test_suite_name_is_sanitised(tmp_path):
    store = ResultStore(tmp_path)
    store.put(_rec(0, suite="../evil suite/x", v=1))
    assert sanitize_name("../evil suite/x") == "_evil_suite_x"
    assert [p.name for p in tmp_path.iterdir()] == ["_evil_suite_x"]
    assert [r["v"] for r in store.records("../evil suite/x")] == [1]
    assert store.records("other") == []
    with pytest.raises(ValueError, match="point_key must be a hex digest"):
        store.path_for("s", "../../etc")


def test_record_needs_suite(tmp_path):
    with pytest.raises(ValueError, match="suite"):
        ResultStore(tmp_path).put({"x": 1})


def test_inf_nan_and_array_scalars(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    store = ResultStore(tmp_path)
    path = store.put(_rec(
        0,
        inf=math.inf,
        nested={"nan": float("nan"), "list": [1.0, -math.inf, (2, math.nan)]},
        np_f=np.float32(1.5), np_nan=np.float64("nan"), np_i=np.int64(7), np_b=np.bool_(True),
        np_arr=np.array([1, 2]), t=torch.tensor(0.25), t_inf=torch.tensor(float("inf")),
    ))
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    (rec,) = store.records()
    assert rec["inf"] is None
    assert rec["nested"] == {"nan": None, "list": [1.0, None, [2, None]]}
    assert rec["np_f"] == 1.5 and rec["np_nan"] is None and rec["np_i"] == 7 and rec["np_b"] is True
    assert rec["np_arr"] == [1, 2] and rec["t"] == 0.25 and rec["t_inf"] is None


def test_a_killed_writer_leaves_nothing_a_reader_sees(tmp_path):
    store = ResultStore(tmp_path)
    store.put(_rec(0))
    # what a writer killed before its rename leaves, and a damaged file
    (tmp_path / "s" / ".0123abcd.json.123.tmp").write_text('{"suite": "s", "seed": 9, "sta')
    (tmp_path / "s" / "0123456789abcdef0123.json").write_text('{"suite": "s", "se')
    with pytest.warns(CorruptRecordWarning, match=r"0123456789abcdef0123\.json"):
        assert [r["seed"] for r in store.records()] == [0]


def test_legacy_jsonl_is_read_deduplicated_and_migrated(tmp_path):
    old = [_rec(0, top1=1.0, created="2026-01-01T00:00:00Z"), _rec(1, created="2026-01-01T00:00:00Z"),
           _rec(0, top1=2.0, created="2026-02-01T00:00:00Z")]  # seed 0 run twice: the newer counts
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old) + "not json\n")
    store = ResultStore(tmp_path)
    with pytest.warns(CorruptRecordWarning, match=r"s\.jsonl:4"):
        before = store.records()
    assert sorted((r["seed"], r.get("top1")) for r in before) == [(0, 2.0), (1, None)]
    with pytest.warns(CorruptRecordWarning):
        assert store.migrate_legacy() == 2
    assert not list(tmp_path.glob("*.jsonl")) and len(list((tmp_path / "s").glob("*.json"))) == 2
    after = store.records()
    assert sorted((r["seed"], r.get("top1")) for r in after) == [(0, 2.0), (1, None)]
    assert all(r["schema"] == 2 and (tmp_path / "s" / f"{r['point_key']}.json").is_file() for r in after)
    assert store.export_jsonl("s").count("\n") == 2


def test_missing_store_is_empty(tmp_path):
    store = ResultStore(tmp_path / "nothing")
    assert store.records() == [] and store.records("s") == [] and store.suites() == []


def test_environment_info_has_versions_but_no_environment(monkeypatch):
    torch = pytest.importorskip("torch")
    secret = "s3cr3t-do-not-store-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("PRUNEBENCH_TEST_TOKEN", secret)
    info = environment_info()
    assert info["torch"] == torch.__version__.split("+")[0] or info["torch"] == torch.__version__
    assert "numpy" in info and "prunebench" in info and "python" in info and "platform" in info
    assert "git_commit" in info and "git_dirty" in info
    assert "mmdet-not-a-package" not in info
    text = json.dumps(info)
    assert secret not in text and "WANDB_API_KEY" not in text
    for key in os.environ:
        assert key not in info


def _git_ok() -> bool:
    try:
        return subprocess.run(["git", "--version"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _git_ok(), reason="git not installed")
def test_git_state(tmp_path):
    assert git_commit(tmp_path) is None and git_dirty(tmp_path) is None  # not a repo
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    commit = git_commit(tmp_path)
    assert commit is not None and len(commit) == 40
    assert git_dirty(tmp_path) is False
    # harness outputs do not count as changes, even from a subdirectory
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.jsonl").write_text("{}\n")
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "README.md").write_text("x")
    assert git_dirty(tmp_path) is False
    assert git_dirty(tmp_path / "results") is False
    (tmp_path / "a.txt").write_text("changed")
    assert git_dirty(tmp_path) is True


def test_records_carry_no_machine_paths(tmp_path, monkeypatch):
    """A failure message naming files in the working directory, the venv's
    site-packages and the home directory is stored with placeholders."""
    import os
    import site
    import sys

    from prunebench.results import ResultStore

    monkeypatch.chdir(tmp_path)
    site_pkgs = site.getsitepackages()[0]
    failure = (f"FileNotFoundError: {tmp_path}/data/x.pt; in {site_pkgs}/torch/serialization.py; "
               f"cache {os.path.expanduser('~')}/.cache/prunebench; python {sys.prefix}/bin/python; /rootfs/keep")
    store = ResultStore(tmp_path / "res")
    path = store.put(_rec(0, failure=failure, nested={"trace": [f"{tmp_path}/a.py"]}))
    text = path.read_text()
    for machine_path in (str(tmp_path), site_pkgs, os.path.expanduser("~") + "/", sys.prefix):
        assert machine_path not in text
    (rec,) = store.records()
    assert rec["failure"].startswith("FileNotFoundError: ./data/x.pt; in <site-packages>/torch/serialization.py")
    assert "~/.cache/prunebench" in rec["failure"] and "/rootfs/keep" in rec["failure"]
    assert rec["nested"]["trace"] == ["./a.py"]
