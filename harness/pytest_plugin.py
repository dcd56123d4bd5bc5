"""pytest plugin: every suites/**/*.yaml becomes one test item per run point.

    pytest suites/ --method slr --seeds 0,1 --smoke

Item ids read ``lenet5_fashion_mnist.yaml::equal_compression[magnitude-filter-16x-s0]``.
An unmet ``expect`` fails the item with target vs achieved; missing data skips
it with where the harness looked and how to get the data.  Every run is
appended to the results store whatever its outcome.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from . import registry
from .interfaces import DatasetUnavailable, DependencyUnavailable
from .registry import PluginError
from .suite import SuiteError, load_suite
from .tracking import WANDB_MODES
from .verify import VerificationError

_CTX = pytest.StashKey()
_RECORDS = pytest.StashKey()
_REUSED = pytest.StashKey()
_HANDLES = pytest.StashKey()


def pytest_addoption(parser):
    group = parser.getgroup("prunebench", "prunebench benchmark suites")
    group.addoption("--method", action="append", default=[], dest="pb_methods", metavar="NAME",
                    help="run only this compression method (repeatable); default: the suite's methods")
    group.addoption("--smoke", action="store_true", dest="pb_smoke",
                    help="use each suite's smoke settings (tiny data and budgets)")
    group.addoption("--seeds", dest="pb_seeds", default=None, metavar="LIST",
                    help="comma-separated seeds overriding the suites' seeds, e.g. 0,1,2")
    group.addoption("--budgets", dest="pb_budgets", default=None, metavar="LIST",
                    help="comma-separated training budgets (epochs) to run, e.g. 1,3: the rungs of a "
                         "suite's budget ladder, or a suite's single budget; other points are deselected")
    group.addoption("--device", dest="pb_device", default="cpu", help="torch device (default: cpu)")
    group.addoption("--data-root", dest="pb_data_root", default=None,
                    help="directory searched first for datasets and weights")
    # not the committed results/: a user's runs never change the published store
    group.addoption("--results", dest="pb_results", default="runs/results",
                    help="results store directory (default: runs/results; the committed store is results/)")
    group.addoption("--wandb", dest="pb_wandb", default="offline", choices=WANDB_MODES,
                    help="wandb logging: offline (default, no network), online or off")
    group.addoption("--rerun", action="store_true", dest="pb_rerun",
                    help="run every point again, even those whose passed or failed record is in the store "
                         "(default: reuse them; error records are always retried)")
    group.addoption("--models", dest="pb_models", default="off", choices=("off", "keep", "reuse"),
                    help="each method's output model: off (default: not kept), keep (kept in the cache, "
                         "keyed by point), reuse (with --rerun: a kept model is scored again instead of "
                         "training it again; a change to scoring then costs no training)")
    group.addoption("--executor", dest="pb_executor", default="local", choices=("local", "submitit", "slurm"),
                    help="where points run: local (this process, default), submitit (each point in its own "
                         "process on this machine) or slurm (one job array on a Slurm cluster)")
    group.addoption("--workers", dest="pb_workers", default=None, type=int, metavar="N",
                    help="points running at once under --executor submitit (default: cores / --threads), "
                         "or the Slurm array's parallelism (default: 32)")
    group.addoption("--slurm-partition", dest="pb_partition", default=None, help="Slurm partition")
    group.addoption("--slurm-time-min", dest="pb_time_min", default=None, type=int, metavar="MIN",
                    help="time limit per point in minutes (default: 60); a job past it is requeued")
    group.addoption("--cpus-per-point", dest="pb_cpus", default=None, type=int, metavar="N",
                    help="CPUs per Slurm job (default: --threads)")
    group.addoption("--gpus-per-point", dest="pb_gpus", default=None, type=int, metavar="N",
                    help="GPUs per Slurm job (default: 0; use 1 with --device cuda: one GPU per worker)")
    group.addoption("--isolation", dest="pb_isolation", default="auto", choices=("auto", "process", "off"),
                    help="where a method runs: auto (default: third-party methods in their own process, "
                         "built-ins here), process (every method in its own process), off")
    group.addoption("--search-workers", dest="pb_search_workers", default=1, type=int, metavar="N",
                    help="processes for the probes of one equal-accuracy search round (suites with "
                         "search: {parallel: k}; default 1: in the point's own process; under Slurm, "
                         "give the job as many CPUs with --cpus-per-point)")
    group.addoption("--threads", dest="pb_threads", default=1, type=int, metavar="N",
                    help="torch threads inside each run point (default: 1; part of the dense cache key "
                         "and of every record, since results change with it)")


def _seeds(config) -> list[int] | None:
    from .suite import MAX_SEED

    text = config.getoption("pb_seeds")
    if text is None:
        return None
    expected = f"--seeds: expected comma-separated integers in 0..{MAX_SEED}"
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise pytest.UsageError(f"{expected}, got {text!r}") from None
    if not seeds or not all(0 <= s <= MAX_SEED for s in seeds):
        raise pytest.UsageError(f"{expected}, got {text!r}")
    for i, seed in enumerate(seeds):
        if seed in seeds[:i]:  # two items with one id, one record
            raise pytest.UsageError(f"--seeds: expected distinct seeds, got {seed} twice")
    return seeds


def _budgets(config) -> list[float] | None:
    text = config.getoption("pb_budgets")
    if text is None:
        return None
    expected = "--budgets: expected comma-separated positive numbers of epochs, e.g. 1,3"
    try:
        budgets = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise pytest.UsageError(f"{expected}, got {text!r}") from None
    if not budgets or not all(0 < b < float("inf") for b in budgets):
        raise pytest.UsageError(f"{expected}, got {text!r}")
    return budgets


def pytest_collection_modifyitems(session, config, items):
    """--budgets: keep the points of the listed rungs (``-k b1`` would also match b10)."""
    budgets = _budgets(config)
    if budgets is None:
        return
    keep, drop = [], []
    for item in items:
        if isinstance(item, SuiteItem) and item.suite.budget_epochs(item.point) not in budgets:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def device_problem(device: str) -> str | None:
    """What is wrong with ``--device`` on this machine (None: usable). Checked
    once, before any compute, instead of failing every point after training."""
    import re

    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device == "cpu":
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if match and count and (match.group(1) is None or int(match.group(1)) < count):
        return None
    if device == "mps" and mps:
        return None
    options = ["cpu"] + (["cuda", f"cuda:N with N < {count}"] if count else []) + (["mps"] if mps else [])
    here = f"{count} CUDA device{'s' if count != 1 else ''} here" if count else "no CUDA device here"
    listed = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
    return f"--device: expected {listed} ({here}), got {device}"


def pytest_configure(config):
    methods = config.getoption("pb_methods") or []
    for i, name in enumerate(methods):
        try:
            registry.methods.get(name)
        except PluginError as err:
            raise pytest.UsageError(str(err)) from None
        if name in methods[:i]:
            raise pytest.UsageError(f"--method: expected each method once, got {name!r} twice")
    _seeds(config)
    _budgets(config)
    for opt, flag, least in (("pb_threads", "--threads", 1), ("pb_search_workers", "--search-workers", 1),
                             ("pb_workers", "--workers", 1), ("pb_time_min", "--slurm-time-min", 1),
                             ("pb_cpus", "--cpus-per-point", 1), ("pb_gpus", "--gpus-per-point", 0)):
        value = config.getoption(opt)
        if value is not None and value < least:
            raise pytest.UsageError(f"{flag}: expected an integer >= {least}, got {value!r}")
    root = config.getoption("pb_data_root")
    if root is not None and not Path(root).is_dir():
        raise pytest.UsageError(f"--data-root: expected an existing directory, got {root}")
    # a Slurm job's node has its own GPUs: only this machine's runs are checked here
    if config.getoption("pb_executor") != "slurm":
        problem = device_problem(config.getoption("pb_device"))
        if problem:
            raise pytest.UsageError(problem)
    executor = config.getoption("pb_executor")
    if executor != "local":
        from .executors import executor_problem

        problem = executor_problem(executor)
        if problem:
            raise pytest.UsageError(problem)
    # the option, not the environment: a pytest started from inside an xdist worker inherits its variables
    if config.getoption("pb_executor") != "local" and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--executor submitit/slurm runs points in their own processes: drop -n (pytest-xdist)")
    config.stash[_RECORDS] = []
    config.stash[_REUSED] = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: one run on several processes
        from . import distributed

        distributed.init_from_env(config.getoption("pb_device"))
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and int(workers) > 1:
        # share the cores between xdist workers instead of oversubscribing them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_unconfigure(config):
    ctx = config.stash.get(_CTX, None)
    if ctx is not None and ctx.tracker is not None:
        ctx.tracker.close()


def _check_results_writable(path: str) -> None:
    """Before any compute: the results store can be created and written."""
    import tempfile

    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as err:
        raise pytest.UsageError(f"--results: expected a writable directory, got {path} ({err.strerror or err})") from None


def worker_device(device: str, xdist_worker: str | None) -> str:
    """One GPU per pytest-xdist worker: ``cuda`` becomes ``cuda:<worker index
    mod GPUs>`` in worker ``gw<index>``. An explicit ``cuda:N``, a CPU, and a
    process outside xdist (a Slurm job sees only its allocated GPUs) keep theirs."""
    if device != "cuda" or not xdist_worker or not xdist_worker.startswith("gw"):
        return device
    import torch

    count = torch.cuda.device_count()
    if count < 1:
        return device  # refused at configure time (device_problem)
    return f"cuda:{int(xdist_worker[2:]) % count}"


def _context(config):
    if _CTX not in config.stash:
        from .results import ResultStore
        from .runner import RunContext
        from .tracking import Tracker

        results = Path(config.getoption("pb_results"))
        config.stash[_CTX] = RunContext(
            device=worker_device(config.getoption("pb_device"), os.environ.get("PYTEST_XDIST_WORKER")),
            data_root=config.getoption("pb_data_root"),
            results=ResultStore(results),
            tracker=Tracker(config.getoption("pb_wandb"), directory=results.parent if results.parent != Path("") else "."),
            progress=False,
            threads=config.getoption("pb_threads"),
            rerun=config.getoption("pb_rerun"),
            search_workers=config.getoption("pb_search_workers"),
            isolation=config.getoption("pb_isolation"),
            models=config.getoption("pb_models"),
        )
    return config.stash[_CTX]


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix in (".yaml", ".yml") and "suites" in file_path.parts:
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    def collect(self):
        config = self.config
        try:
            suite = load_suite(self.path, smoke=config.getoption("pb_smoke"))
            methods = config.getoption("pb_methods") or None
            points = suite.points(methods, _seeds(config))
        except (SuiteError, KeyError, ValueError) as err:
            # one failing item, not a collection error: the other suites still run
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            if config.getoption("collectonly"):  # nothing runs: say it as a collection error
                raise self.CollectError(message) from None
            yield BrokenSuiteItem.from_parent(self, name="load", message=message)
            return
        for point in points:
            yield SuiteItem.from_parent(self, name=f"{point.protocol}[{point.id}]", suite=suite, point=point)


class SuiteLoadError(Exception):
    pass


class BrokenSuiteItem(pytest.Item):
    """A suite that does not load: fails with its one-line message, computes nothing."""

    def __init__(self, *, message: str, **kwargs):
        super().__init__(**kwargs)
        self.message = message

    def runtest(self):
        raise SuiteLoadError(self.message)

    def repr_failure(self, excinfo):
        if excinfo.errisinstance(SuiteLoadError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: does not load"


def pytest_collection_finish(session):
    """Before any point runs: the results store must be writable; under
    --executor submitit/slurm, every selected point is submitted at once."""
    config = session.config
    name = config.getoption("pb_executor", "local")
    items = [i for i in session.items if isinstance(i, SuiteItem)]
    if not items or config.getoption("collectonly"):
        return
    _check_results_writable(config.getoption("pb_results"))
    if name == "local":
        return
    from .executors import make_executor

    results = Path(config.getoption("pb_results"))
    threads = config.getoption("pb_threads")
    folder = results.parent / "jobs" if results.parent != Path("") else Path("jobs")
    # one executor per distinct set of resources: a suite's resources: block, with the
    # command line's options winning where given
    groups: dict[tuple, list] = {}
    for item in items:
        key = tuple(sorted(job_resources(config, name, item.suite.resources, threads).items()))
        groups.setdefault(key, []).append(item)
    for key, group in groups.items():
        executor = make_executor(name, folder, **dict(key))
        _submit(config, executor, group, results, threads)


def job_resources(config, executor: str, suite_resources, threads: int) -> dict:
    """Resources of one point's job: command-line option, else the suite's
    ``resources:``, else the default (60 min, CPUs = --threads, no GPU)."""
    def pick(option: str, field: str, default):
        given = config.getoption(option)
        if given is not None:
            return given
        from_suite = getattr(suite_resources, field, None) if suite_resources is not None else None
        return from_suite if from_suite is not None else default

    parallel_default = max(1, (os.cpu_count() or 1) // threads) if executor == "submitit" else 32
    out = {"time_min": pick("pb_time_min", "time_min", 60), "cpus_per_point": pick("pb_cpus", "cpus_per_point", threads),
           "gpus_per_point": pick("pb_gpus", "gpus_per_point", 0),
           "array_parallelism": pick("pb_workers", "array_parallelism", parallel_default)}
    partition = pick("pb_partition", "partition", None)
    if partition:
        out["partition"] = partition
    return out


def _submit(config, executor, items, results: Path, threads: int) -> None:
    from .executors import PointJob

    jobs = [PointJob(suite_path=str(Path(i.suite.path).resolve()), smoke=i.suite.smoke_mode, protocol=i.point.protocol,
                     method=i.point.method, structure=i.point.structure, rate=i.point.rate, seed=i.point.seed,
                     budget=i.point.budget, start=i.point.start,
                     results=str(results.resolve()), device=config.getoption("pb_device"),
                     data_root=config.getoption("pb_data_root"), threads=threads,
                     rerun=config.getoption("pb_rerun"), search_workers=config.getoption("pb_search_workers"),
                     isolation=config.getoption("pb_isolation"), models=config.getoption("pb_models"))
            for i in items]
    handles = executor.submit(jobs)
    config.stash[_HANDLES] = config.stash.get(_HANDLES, []) + list(handles)
    for item, handle in zip(items, handles):
        item.handle = handle


def _progress(config) -> None:
    from .executors import progress_counts

    tr = config.pluginmanager.get_plugin("terminalreporter")
    handles = config.stash.get(_HANDLES, [])
    if tr is None or not handles:
        return
    c = progress_counts(handles)
    line = f"prunebench: {c['done']} done, {c['running']} running, {c['queued']} queued of {len(handles)} points"
    capture = config.pluginmanager.getplugin("capturemanager")
    # written from inside an item: past pytest's output capture, to the terminal
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        tr.write_line(line)


class ExpectationNotMet(AssertionError):
    pass


class SuiteItem(pytest.Item):
    def __init__(self, *, suite, point, **kwargs):
        super().__init__(**kwargs)
        self.suite = suite
        self.point = point
        #: the point's job under --executor submitit/slurm
        self.handle = None

    def runtest(self):
        from .runner import Unsupported, run_point

        ctx = _context(self.config)
        if self.handle is not None:
            result = self._from_job(ctx)
        else:
            try:
                result = run_point(self.suite, self.point, ctx)
            except (DatasetUnavailable, DependencyUnavailable) as err:
                pytest.skip(str(err))
            except Unsupported as err:
                pytest.skip(str(err))
        rec = result.record
        self.user_properties.append(("achieved_rate", rec.achieved_rate))
        self.user_properties.append((rec.primary_metric, rec.primary_value))
        self.user_properties.append(("reused", result.reused))
        self.config.stash[_REUSED if result.reused else _RECORDS].append(rec)
        if result.unmet:
            note = ["(reused: the stored record of this point; --rerun runs it again)"] if result.reused else []
            raise ExpectationNotMet("\n".join(result.unmet + note))

    def _from_job(self, ctx):
        from .records import RunRecord
        from .runner import PointResult

        try:
            outcome = self.handle.result()
        finally:
            _progress(self.config)
        if outcome.skip is not None:
            pytest.skip(outcome.skip)
        record = RunRecord.from_json(outcome.record)
        if not outcome.reused and ctx.tracker is not None:
            ctx.tracker.log_record(record)  # the job wrote the store; wandb is logged here, once
        return PointResult(record, outcome.unmet, reused=outcome.reused)

    def repr_failure(self, excinfo):
        if excinfo.errisinstance(ExpectationNotMet):
            return f"{self.name}: expectation not met\n  " + str(excinfo.value).replace("\n", "\n  ")
        if excinfo.errisinstance(VerificationError):
            return f"{self.name}: verification failed: {excinfo.value}"
        from .executors import JobFailed

        if excinfo.errisinstance(JobFailed):
            return f"{self.name}: {excinfo.value}"
        # the message first, on one line, then a short traceback (--tb, when given, decides)
        err = excinfo.value
        lines = str(err).strip().splitlines()
        where = self.nodeid.split("::")[0]
        head = f"{where}: {self.name}: {type(err).__name__}" + (f": {lines[0]}" if lines else "")
        style = self.config.getoption("tbstyle", "auto")
        trace = self._repr_failure_py(excinfo, style="short" if style == "auto" else style)
        return f"{head}\n{trace}"

    def reportinfo(self):
        return self.path, None, f"{self.suite.suite}::{self.name}"

    def _traceback_filter(self, excinfo):
        # from runtest on: pytest's and pluggy's own frames say nothing about the point
        tb = excinfo.traceback
        for i, entry in enumerate(tb):
            if entry.name in ("runtest", "_from_job") and Path(entry.path) == Path(__file__):
                return tb[i:].filter(excinfo)
        return tb.filter(excinfo)


def pytest_report_teststatus(report, config):
    if report.when == "call" and report.passed and ("reused", True) in getattr(report, "user_properties", []):
        return "reused", "r", "REUSED"
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    records = config.stash.get(_RECORDS, [])
    reused = config.stash.get(_REUSED, [])
    if not records and not reused:
        return
    tr = terminalreporter
    tr.section("prunebench")
    for rec in records:
        extra = ""
        if rec.search is not None:
            found = rec.search.rate_found
            extra = f" rate_found={'none' if found is None else f'{found:.3g}x'} runs={rec.search.runs}"
        rate = f"rate={rec.achieved_rate:.3g}x"
        if (rec.target or {}).get("rate_of") == "macs" and rec.macs:  # the harness's count of the target's quantity
            rate = f"macs_reduction={rec.macs['macs_reduction_x']:.3g}x input_scale={rec.macs['input_scale']:.3g}"
        tr.write_line(
            f"{rec.suite}::{rec.protocol}[{rec.point_id}] {rec.primary_metric}={rec.primary_value:.2f} "
            f"(dense {rec.dense_value:.2f}) {rate}{extra} [{rec.status}]"
        )
    store = config.getoption("pb_results")
    tr.write_line(f"{len(records)} records written to {store}/, {len(reused)} reused (already there; "
                  f"--rerun runs them again); see them with "
                  f"`prunebench leaderboard --results {store} --out <dir>` or `prunebench compare {store}`")
