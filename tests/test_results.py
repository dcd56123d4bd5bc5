"""Results store: atomic appends under concurrent processes, corrupt lines, env info."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import time
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

PER_WORKER = 200
WORKERS = 2  # one per core on small CI machines; each child pays a torch import
# (numpy/torch are imported inside tests: spawned writers re-import this module)
# bigger than PIPE_BUF (4 KiB) so a torn or interleaved write would show
PAD = "x" * 6000


def _append_many(root: str, worker: int, barrier) -> None:
    store = ResultStore(root)
    barrier.wait(timeout=120)  # start together, so the appends really overlap
    for i in range(PER_WORKER):
        store.append({"suite": "concurrent", "worker": worker, "i": i, "pad": PAD})
        time.sleep(0.001)  # release the lock now and then so writers take turns


def test_concurrent_appends_from_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, barrier)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    raw = (tmp_path / "concurrent.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == WORKERS * PER_WORKER
    parsed = [json.loads(line) for line in lines]  # every line is one whole record
    assert all(r["pad"] == PAD for r in parsed)
    seen = {(r["worker"], r["i"]) for r in parsed}
    assert seen == {(w, i) for w in range(WORKERS) for i in range(PER_WORKER)}
    for w in range(WORKERS):  # each writer's records stay in its own order
        assert [r["i"] for r in parsed if r["worker"] == w] == list(range(PER_WORKER))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ResultStore(tmp_path).records("concurrent")) == WORKERS * PER_WORKER


def test_one_sorted_line_per_record(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"suite": "s", "b": 1, "a": {"z": 1, "y": "two\nlines"}})
    text = (tmp_path / "s.jsonl").read_text()
    assert text.count("\n") == 1
    assert text.index('"a"') < text.index('"b"') and text.index('"y"') < text.index('"z"')
    assert store.records() == [{"suite": "s", "b": 1, "a": {"z": 1, "y": "two\nlines"}}]


def test_suite_name_is_sanitised(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"suite": "../evil suite/x", "v": 1})
    assert sanitize_name("../evil suite/x") == "_evil_suite_x"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl"] == ["_evil_suite_x.jsonl"]
    assert store.records("../evil suite/x") == [{"suite": "../evil suite/x", "v": 1}]
    assert store.records("other") == []


def test_record_needs_suite(tmp_path):
    with pytest.raises(ValueError, match="suite"):
        ResultStore(tmp_path).append({"x": 1})


def test_inf_nan_and_array_scalars(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    store = ResultStore(tmp_path)
    store.append(
        {
            "suite": "s",
            "inf": math.inf,
            "nested": {"nan": float("nan"), "list": [1.0, -math.inf, (2, math.nan)]},
            "np_f": np.float32(1.5),
            "np_nan": np.float64("nan"),
            "np_i": np.int64(7),
            "np_b": np.bool_(True),
            "np_arr": np.array([1, 2]),
            "t": torch.tensor(0.25),
            "t_inf": torch.tensor(float("inf")),
        }
    )
    text = (tmp_path / "s.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    (rec,) = store.records()
    assert rec["inf"] is None
    assert rec["nested"] == {"nan": None, "list": [1.0, None, [2, None]]}
    assert rec["np_f"] == 1.5 and rec["np_nan"] is None and rec["np_i"] == 7 and rec["np_b"] is True
    assert rec["np_arr"] == [1, 2] and rec["t"] == 0.25 and rec["t_inf"] is None


def test_corrupt_last_line_is_skipped_with_warning(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"suite": "s", "i": 0})
    store.append({"suite": "s", "i": 1})
    path = tmp_path / "s.jsonl"
    with path.open("ab") as fh:  # a crash mid-write
        fh.write(b'{"suite": "s", "i": 2, "metr')
    with pytest.warns(CorruptRecordWarning, match=r"s\.jsonl:3"):
        assert [r["i"] for r in store.records()] == [0, 1]
    # a later append starts on a fresh line, so only the torn line is lost
    store.append({"suite": "s", "i": 3})
    with pytest.warns(CorruptRecordWarning, match=r"s\.jsonl:3"):
        assert [r["i"] for r in store.records("s")] == [0, 1, 3]


def test_corrupt_middle_line_and_non_object(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"suite": "s", "i": 0}\nnot json\n[1, 2]\n\n{"suite": "s", "i": 1}\n')
    with pytest.warns(CorruptRecordWarning) as caught:
        assert [r["i"] for r in ResultStore(tmp_path).records()] == [0, 1]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and ":2:" in messages[0] and ":3:" in messages[1]


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
    store.append({"suite": "s", "failure": failure, "nested": {"trace": [f"{tmp_path}/a.py"]}})
    text = next((tmp_path / "res").glob("*.jsonl")).read_text()
    for machine_path in (str(tmp_path), site_pkgs, os.path.expanduser("~") + "/", sys.prefix):
        assert machine_path not in text
    (rec,) = store.records()
    assert rec["failure"].startswith("FileNotFoundError: ./data/x.pt; in <site-packages>/torch/serialization.py")
    assert "~/.cache/prunebench" in rec["failure"] and "/rootfs/keep" in rec["failure"]
    assert rec["nested"]["trace"] == ["./a.py"]
