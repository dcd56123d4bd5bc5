"""Bad input (issue 17.7): every check that can run before compute does; each
message is one line, ``file: dotted.key: expected X, got Y`` (or the option for
command-line input); a broken suite fails as one item and the others still run.

Each suite case is checked twice: by load_suite (the exact message), and in one
shared pytest session holding every case beside a good suite (the case fails
as one item with that line, nothing of it is computed, the good suite passes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from prunebench.suite import Suite, SuiteError, load_suite

from conftest import SYNTHETIC_TASK

BASE = textwrap.dedent("""\
    suite: bad-input
    version: 1
    """) + SYNTHETIC_TASK + textwrap.dedent("""\
    dense: {epochs: 1, optimizer: {lr: 0.05}}
    budget: {epochs: 0.25}
    seeds: [0]
    methods: [magnitude]
    hardware: [storage]
    protocols:
      equal_compression: {structure: [unstructured], rates: [4], expect: {max_accuracy_drop: 100, methods: [magnitude]}}
      equal_accuracy: {structure: [unstructured], tolerance: 5, search: {lo: 2, hi: 8, steps: 1}}
    """)

# the good suite of the shared session: one quick point
GOOD_RUN = BASE.replace("suite: bad-input", "suite: bad-input-good").replace(
    "  equal_accuracy: {structure: [unstructured], tolerance: 5, search: {lo: 2, hi: 8, steps: 1}}\n", "")

LONG_NAME = "a" * 101
EC = "protocols.equal_compression"
EA = "protocols.equal_accuracy"
NAME_RULE = "a name of 1 to 100 characters from A-Z a-z 0-9 . _ - not starting with '.'"
# the keys a suite file may hold (path and smoke_mode are set by the loader, never read)
KEYS = ", ".join(sorted(f.name for f in fields(Suite) if not f.metadata.get("internal")))


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (case id, suite text (str or bytes; {tmp} is the folder of the case files), exact message after "file: ")
CASES = [
    # duplicate keys: YAML would keep the last one silently
    ("duplicate top-level key", BASE + "seeds: [1]\n",
     "seeds: expected each key once in a mapping, got 'seeds' again (line 16; first at line 10)"),
    ("duplicate nested key", edit("  model: lenet5\n", "  model: lenet5\n  model: lenet5_caffe\n"),
     "task.model: expected each key once in a mapping, got 'model' again (line 6; first at line 5)"),
    ("duplicate key in a flow mapping", edit("rates: [4],", "rates: [4], rates: [8],"),
     f"{EC}.rates: expected each key once in a mapping, got 'rates' again (line 14; first at line 14)"),
    # names that would switch an expectation off without a word
    ("expect.methods typo", edit("methods: [magnitude]}", "methods: [magnitde]}"),
     f"{EC}.expect.methods[0]: expected one of the suite's methods (magnitude), got 'magnitde'"),
    ("expect.methods not in the suite", edit("methods: [magnitude]}", "methods: [random]}"),
     f"{EC}.expect.methods[0]: expected one of the suite's methods (magnitude), got 'random'"),
    ("expect.structures not run", edit("max_accuracy_drop: 100,", "max_accuracy_drop: 100, structures: [filter],"),
     f"{EC}.expect.structures[0]: expected one of the protocol's structures (unstructured), got 'filter'"),
    # duplicates that would make one run point twice
    ("duplicate seeds", edit("seeds: [0]", "seeds: [0, 0]"),
     "seeds[1]: expected distinct seeds, got 0 twice"),
    ("duplicate rates", edit("rates: [4]", "rates: [4, 4.0]"),
     f"{EC}.rates[1]: expected distinct rates, got 4 twice"),
    ("rates with one point id", edit("rates: [4]", "rates: [4, 4.0000001]"),
     f"{EC}.rates[1]: expected distinct rates, got 4.0000001, the same point (4x) as rates[0]"),
    ("duplicate structures", edit("structure: [unstructured], rates", "structure: [unstructured, unstructured], rates"),
     f"{EC}.structure[1]: expected distinct structures, got 'unstructured' twice"),
    ("one structure spelled twice", edit("structure: [unstructured], rates", "structure: ['2:4', '02:4'], rates"),
     f"{EC}.structure[1]: expected distinct structures, got '02:4' (structure[0] is '2:4': the same structure)"),
    ("duplicate methods", edit("methods: [magnitude]\n", "methods: [magnitude, magnitude]\n"),
     "methods[1]: expected each name once, got 'magnitude' twice"),
    ("duplicate hardware", edit("hardware: [storage]", "hardware: [storage, storage]"),
     "hardware[1]: expected each name once, got 'storage' twice"),
    ("duplicate seeds under smoke", BASE + "smoke: {seeds: [1, 1]}\n",
     "smoke.seeds[1]: expected distinct seeds, got 1 twice"),
    # NaN anywhere
    ("NaN tolerance", edit("tolerance: 5", "tolerance: .nan"),
     f"{EA}.tolerance: expected a finite number in [0, 100], got nan"),
    ("NaN rate", edit("rates: [4]", "rates: [.nan]"),
     f"{EC}.rates[0]: expected a finite number >= 1, got nan"),
    ("NaN dense epochs", edit("dense: {epochs: 1,", "dense: {epochs: .nan,"),
     "dense.epochs: expected a finite number > 0, got nan"),
    ("NaN learning rate", edit("optimizer: {lr: 0.05}", "optimizer: {lr: .nan}"),
     "dense.optimizer.lr: expected a finite number, got nan"),
    ("NaN max_accuracy_drop", edit("max_accuracy_drop: 100", "max_accuracy_drop: .nan"),
     f"{EC}.expect.max_accuracy_drop: expected a finite number in [-100, 100] or null, got nan"),
    ("NaN in a free-form plugin mapping", edit("  batch_size: 64\n", "  batch_size: 64\n  model_kwargs: {p: .nan}\n"),
     "task.model_kwargs.p: expected a number, got nan (NaN is never a valid setting)"),
    ("NaN under smoke", BASE + "smoke: {budget: {epochs: .nan}}\n",
     "smoke.budget.epochs: expected a finite number >= 0, got nan"),
    # ranges
    ("dense epochs 0", edit("dense: {epochs: 1,", "dense: {epochs: 0,"),
     "dense.epochs: expected a number > 0, got 0"),
    ("dense epochs negative", edit("dense: {epochs: 1,", "dense: {epochs: -2,"),
     "dense.epochs: expected a number > 0, got -2"),
    ("seed 2^64", edit("seeds: [0]", "seeds: [18446744073709551616]"),
     "seeds[0]: expected an integer in 0..4294967295, got 18446744073709551616"),
    ("negative seed", edit("seeds: [0]", "seeds: [-1]"),
     "seeds[0]: expected an integer in 0..4294967295, got -1"),
    ("version 0", edit("version: 1", "version: 0"),
     "version: expected an integer >= 1, got 0"),
    ("tolerance over 100 points", edit("tolerance: 5", "tolerance: 1000"),
     f"{EA}.tolerance: expected a number in [0, 100], got 1000"),
    ("negative tolerance", edit("tolerance: 5", "tolerance: -1"),
     f"{EA}.tolerance: expected a number in [0, 100], got -1"),
    ("min_accuracy over 100", edit("max_accuracy_drop: 100", "min_accuracy: 101"),
     f"{EC}.expect.min_accuracy: expected a number in [0, 100] or null, got 101"),
    ("min_rate below 1", edit("steps: 1}", "steps: 1}, expect: {min_rate: 0.5}"),
     f"{EA}.expect.min_rate: expected a number >= 1 or null, got 0.5"),
    ("rate below 1", edit("rates: [4]", "rates: [0.5]"),
     f"{EC}.rates[0]: expected a number >= 1, got 0.5"),
    ("infinite search bound", edit("hi: 8", "hi: .inf"),
     f"{EA}.search.hi: expected a finite number, got inf"),
    ("search steps out of range", edit("steps: 1", "steps: 21"),
     f"{EA}.search.steps: expected an integer in 0..20, got 21"),
    ("negative budget", edit("budget: {epochs: 0.25}", "budget: {epochs: -1}"),
     "budget.epochs: expected a number >= 0, got -1"),
    ("quantization bits 0", BASE + "quantization: {bits: 0}\n",
     "quantization.bits: expected an integer in 1..32, got 0"),
    # empty lists that would silently run nothing
    ("no rates", edit("rates: [4]", "rates: []"),
     f"{EC}.rates: expected a non-empty list of numbers >= 1, got []"),
    ("no structures", edit("structure: [unstructured], rates", "structure: [], rates"),
     f"{EC}.structure: expected a non-empty list of structures (unstructured, filter, channel, column, kernel, "
     "pattern, block:RxC, pe:N or N:M with 0 < N <= M), got []"),
    ("no layers included", BASE + "layers: {include: []}\n",
     "layers.include: expected a non-empty list of strings, got []"),
    # the suite name is a folder of the results store
    ("empty suite name", edit("suite: bad-input", "suite: ''"), f"suite: expected {NAME_RULE}, got ''"),
    ("suite name too long", edit("suite: bad-input", f"suite: {LONG_NAME}"),
     f"suite: expected {NAME_RULE}, got '{LONG_NAME[:56]}..."),
    ("suite name with a slash", edit("suite: bad-input", "suite: a/b"), f"suite: expected {NAME_RULE}, got 'a/b'"),
    ("hidden suite name", edit("suite: bad-input", "suite: .cache"), f"suite: expected {NAME_RULE}, got '.cache'"),
    # checkpoints that are not weights
    ("text file as checkpoint", edit("dense: {epochs: 1,", "dense: {checkpoint: '{tmp}/notes.txt', epochs: 1,"),
     "dense.checkpoint: expected a safetensors or torch.save weights file, got a file that is neither "
     "safetensors nor torch.save '{tmp}/notes.txt'"),
    ("empty file as checkpoint", edit("dense: {epochs: 1,", "dense: {checkpoint: '{tmp}/empty.pt', epochs: 1,"),
     "dense.checkpoint: expected a safetensors or torch.save weights file, got an empty file '{tmp}/empty.pt'"),
    ("empty checkpoint string", edit("dense: {epochs: 1,", "dense: {checkpoint: '', epochs: 1,"),
     "dense.checkpoint: expected a non-empty string or null, got ''"),
    # the file itself
    ("non-UTF-8 file", BASE.encode().replace(b"bad-input", b"bad-\xffinput"),
     "expected UTF-8 text, got byte 0xff (line 1, column 12)"),
    ("empty file", "", "<root>: expected a mapping at the top of the suite, got an empty file"),
    ("a list at the top", "- suite: x\n", "<root>: expected a mapping at the top of the suite, got a list"),
    ("internal field in the file", BASE + "path: elsewhere.yaml\n",
     f"path: unknown key (expected one of {KEYS})."),
    ("unknown key", BASE + "budgett: {epochs: 1}\n",
     f"budgett: unknown key (expected one of {KEYS}). Did you mean: budget?"),
]
IDS = [c[0] for c in CASES]


def _slug(case_id: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in case_id)


def _write_case(folder: Path, tmp: Path, case_id: str, text) -> Path:
    path = folder / f"{_slug(case_id)}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.replace("{tmp}", str(tmp)))
    return path


def _fixtures(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("these are not weights\n")
    (tmp / "empty.pt").write_bytes(b"")


def test_the_base_suite_is_good(tmp_path):
    # the cases' control: without the edit the suite loads
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    assert [p.id for p in load_suite(path).points()] == ["magnitude-unstructured-4x-s0", "magnitude-unstructured-s0"]


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40 and len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("case_id, text, expected", CASES, ids=IDS)
def test_bad_suite_is_refused_with_one_line(tmp_path, case_id, text, expected):
    _fixtures(tmp_path)
    path = _write_case(tmp_path, tmp_path, case_id, text)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert "\n" not in message
    assert message == f"{path}: {expected.replace('{tmp}', str(tmp_path))}"


def test_yaml_merge_keys_may_still_override(tmp_path):
    # the duplicate-key check leaves YAML's own override (<<: *anchor, then a key) alone
    text = BASE.replace("dense: {epochs: 1,", "dense: &d {epochs: 1,") + "smoke: {dense: {<<: *d, epochs: 0.5}}\n"
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    assert load_suite(path, smoke=True).dense.epochs == 0.5


# ------------------------------------------------------------------ one shared pytest session

RUNTIME_CHECKPOINT = "damaged.pt"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Every bad suite beside a good one and two that fail at run time, in one
    pytest run: (stdout, results dir, dense cache dir, case folder)."""
    root = tmp_path_factory.mktemp("bad_input_session")
    suites = root / "suites"
    suites.mkdir()
    _fixtures(root)
    for case_id, text, _ in CASES:
        _write_case(suites, root, case_id, text)
    (suites / "good.yaml").write_text(GOOD_RUN)
    # run time: a zip that is no torch checkpoint (passes the file sniff), and a dense recipe of no step
    (root / RUNTIME_CHECKPOINT).write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    (suites / "damaged_checkpoint.yaml").write_text(GOOD_RUN.replace("suite: bad-input-good", "suite: bad-ckpt").replace(
        "dense: {epochs: 1,", f"dense: {{checkpoint: {RUNTIME_CHECKPOINT}, epochs: 1,"))
    (suites / "no_step.yaml").write_text(GOOD_RUN.replace("suite: bad-input-good", "suite: no-step").replace(
        "dense: {epochs: 1,", "dense: {epochs: 0.001,"))
    env = {**os.environ, "PRUNEBENCH_CACHE": str(root / "cache"), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider",
         "-p", "no:randomly", "-rf"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    return proc, root


def _failure_section(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line and line.startswith("_"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("_", "=")))
    return lines[start + 1:end]


@pytest.mark.parametrize("case_id, text, expected", CASES, ids=IDS)
def test_in_a_session_a_bad_suite_is_one_failing_item_and_computes_nothing(session, case_id, text, expected):
    proc, root = session
    name = f"{_slug(case_id)}.yaml"
    path = root / "suites" / name
    section = _failure_section(proc.stdout, f" {name}: does not load ")
    # the whole report of the item: its one line, no traceback
    assert section == [f"{path}: {expected.replace('{tmp}', str(root))}"]
    assert f"FAILED suites/{name}::load" in proc.stdout
    assert not (root / "res" / "bad-input").exists()  # no record of any bad suite


def test_in_a_session_the_good_suite_still_runs_and_only_it_trains(session):
    proc, root = session
    assert f"{len(CASES) + 2} failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "bad-input-good::equal_compression[magnitude-unstructured-4x-s0]" in proc.stdout
    from prunebench.results import ResultStore

    suites = {r["suite"] for r in ResultStore(root / "res").records() if r["status"] != "error"}
    assert suites == {"bad-input-good"}
    # one dense model trained: the good suite's (the damaged checkpoint and the no-step recipe trained none)
    assert len(list((root / "cache" / "dense").glob("*.safetensors"))) == 1


def test_a_damaged_checkpoint_fails_at_load_with_one_line_first(session):
    proc, root = session
    section = _failure_section(proc.stdout, "bad-ckpt::equal_compression")
    assert section[0].startswith(
        "suites/damaged_checkpoint.yaml: equal_compression[magnitude-unstructured-4x-s0]: ValueError: "
        f"dense.checkpoint: expected weights of this suite's model in a safetensors or torch.save file, "
        f"got '{RUNTIME_CHECKPOINT}' (")


def test_a_run_time_error_reports_its_message_first_and_a_short_traceback(session):
    proc, _ = session
    section = _failure_section(proc.stdout, "no-step::equal_compression")
    assert section[0] == ("suites/no_step.yaml: equal_compression[magnitude-unstructured-4x-s0]: ValueError: "
                          "dense.epochs: expected at least one step (0.25 epochs at 4 steps per epoch), got 0.001")
    assert section[1].endswith("in runtest")  # the traceback starts at the item, not inside pytest or pluggy
    assert not any("pluggy" in line or "_pytest" in line for line in section)
    assert len(section) < 40


# ------------------------------------------------------------------ command-line options

OPTION_CASES = [
    ("device cuda:99", ["--device", "cuda:99"], "--device: expected cpu", "got cuda:99"),
    ("device unknown", ["--device", "tpu"], "--device: expected cpu", "got tpu"),
    ("seeds twice", ["--seeds", "0,0"], "--seeds: expected distinct seeds, got 0 twice", ""),
    ("seed 2^64", ["--seeds", "18446744073709551616"],
     "--seeds: expected comma-separated integers in 0..4294967295, got '18446744073709551616'", ""),
    ("negative seed", ["--seeds=-1"], "--seeds: expected comma-separated integers in 0..4294967295, got '-1'", ""),
    ("seeds not integers", ["--seeds", "a"], "--seeds: expected comma-separated integers in 0..4294967295, got 'a'",
     ""),
    ("budgets not numbers", ["--budgets", "1,x"],
     "--budgets: expected comma-separated positive numbers of epochs, e.g. 1,3, got '1,x'", ""),
    ("budget zero", ["--budgets", "0"], "--budgets: expected comma-separated positive numbers of epochs, e.g. 1,3, got '0'",
     ""),
    ("method twice", ["--method", "magnitude", "--method", "magnitude"],
     "--method: expected each method once, got 'magnitude' twice", ""),
    ("threads 0", ["--threads", "0"], "--threads: expected an integer >= 1, got 0", ""),
    ("search workers 0", ["--search-workers", "0"], "--search-workers: expected an integer >= 1, got 0", ""),
    ("results not writable", ["--results", "blocker/res"],
     "--results: expected a writable directory, got blocker/res (", ""),
    ("data root missing", ["--data-root", "no/such/dir"], "--data-root: expected an existing directory, got no/such/dir",
     ""),
]


@pytest.mark.parametrize("case_id, args, start, end", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_option_is_refused_before_compute(tmp_path, case_id, args, start, end):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "good.yaml").write_text(GOOD_RUN)
    (tmp_path / "blocker").write_text("a file, not a directory")
    env = {**os.environ, "PRUNEBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites", "--wandb", "off", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"ERROR: {start}") and errors[0].endswith(end)
    assert not (tmp_path / "cache").exists()  # no dense model
    assert not (tmp_path / "runs").exists()  # no results store, no record


@pytest.mark.parametrize("device, count, expected", [
    ("cuda:3", 1, "--device: expected cpu, cuda or cuda:N with N < 1 (1 CUDA device here), got cuda:3"),
    ("cuda", 0, "--device: expected cpu (no CUDA device here), got cuda"),
    ("cuda:0", 0, "--device: expected cpu (no CUDA device here), got cuda:0"),
    ("gpu", 2, "--device: expected cpu, cuda or cuda:N with N < 2 (2 CUDA devices here), got gpu"),
    ("cuda:1", 2, None),
    ("cuda", 1, None),
    ("cpu", 0, None),
])
def test_device_is_checked_once_against_this_machine(monkeypatch, device, count, expected):
    import torch

    from prunebench.pytest_plugin import device_problem

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device_problem(device) == expected


# ------------------------------------------------------------------ prunebench validate


def test_validate_reports_every_bad_file_and_goes_on(tmp_path, capsys):
    from prunebench.cli import main

    (tmp_path / "a_bad.yaml").write_bytes(b"suite: \xff\n")
    (tmp_path / "b_dup.yaml").write_text(BASE + "seeds: [1]\n")
    (tmp_path / "c_good.yaml").write_text(BASE)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"error {tmp_path / 'a_bad.yaml'}: expected UTF-8 text, got byte 0xff (line 1, column 8)",
        f"error {tmp_path / 'b_dup.yaml'}: seeds: expected each key once in a mapping, got 'seeds' again "
        "(line 16; first at line 10)",
        f"ok    {tmp_path / 'c_good.yaml'}: bad-input v1, 2 run points",
    ]
