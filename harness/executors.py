"""Where run points run: in this process, or as submitit jobs.

One small interface: ``Executor.submit(jobs)`` returns a handle per job, and
``handle.result()`` waits for that job and gives its :class:`JobOutcome`.

- ``local``: in this process, when the result is asked for (what pytest did
  before executors existed);
- ``submitit``: submitit's LocalExecutor, every point in its own process on
  this machine (a method's patches cannot reach the harness or a later run);
- ``slurm``: submitit's SlurmExecutor, all points as one job array; a
  preempted or timed-out job is requeued (``PointJob.checkpoint``) and, since
  a point's finished record is reused, it resumes instead of repeating.

A job writes its record to the results store itself (one atomic file per
point, safe on shared filesystems) and returns it as plain data.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["PointJob", "JobOutcome", "Executor", "LocalExecutor", "SubmititExecutor", "make_executor",
           "EXECUTORS", "JobFailed"]

EXECUTORS = ("local", "submitit", "slurm")


class JobFailed(RuntimeError):
    """A job ended without a result; the message carries the tail of its stderr."""


@dataclass
class PointJob:
    """Everything a worker needs to run one point, as plain data."""

    suite_path: str
    smoke: bool
    protocol: str
    method: str
    structure: str
    rate: float | None
    seed: int
    results: str | None
    device: str = "cpu"
    data_root: str | None = None
    threads: int = 1
    rerun: bool = False
    cache_dir: str | None = None
    search_workers: int = 1
    isolation: str = "auto"
    models: str = "off"
    budget: float | None = None
    #: where the point's model starts (a scratch point is another point: it must not become a dense one)
    start: str = "dense"

    def __call__(self) -> "JobOutcome":
        from .interfaces import DatasetUnavailable, DependencyUnavailable
        from .results import ResultStore
        from .runner import RunContext, Unsupported, run_point
        from .suite import RunPoint, load_suite

        suite = load_suite(self.suite_path, smoke=self.smoke)
        point = RunPoint(self.protocol, self.method, self.structure, self.rate, self.seed, self.budget,
                         start=self.start)
        ctx = RunContext(
            device=self.device, data_root=self.data_root, progress=False, threads=self.threads,
            rerun=self.rerun, results=ResultStore(self.results) if self.results else None,
            search_workers=self.search_workers, isolation=self.isolation,
            cache_dir=Path(self.cache_dir) if self.cache_dir else None, models=self.models,
        )
        try:
            res = run_point(suite, point, ctx)
        except (DatasetUnavailable, DependencyUnavailable, Unsupported) as err:
            return JobOutcome(skip=str(err))
        return JobOutcome(record=res.record.to_dict(), unmet=list(res.unmet), reused=res.reused)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit calls this on preemption or timeout: requeue the same point
        (its finished record, if any, is reused; an unfinished one reruns)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


@dataclass
class JobOutcome:
    record: dict | None = None
    unmet: list = field(default_factory=list)
    reused: bool = False
    #: why the point was skipped (missing data or dependency, unsupported structure)
    skip: str | None = None


class Handle(abc.ABC):
    @abc.abstractmethod
    def result(self) -> JobOutcome:
        """Wait for the job; raise what the point raised, or JobFailed."""

    @abc.abstractmethod
    def state(self) -> str:
        """'queued', 'running' or 'done'."""


class Executor(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def submit(self, jobs: Sequence[PointJob]) -> list[Handle]:
        """Start (or queue) every job; one handle per job, in order."""


class _LocalHandle(Handle):
    def __init__(self, job: PointJob):
        self.job = job
        self._outcome: JobOutcome | None = None

    def result(self) -> JobOutcome:
        if self._outcome is None:
            self._outcome = self.job()
        return self._outcome

    def state(self) -> str:
        return "done" if self._outcome is not None else "queued"


class LocalExecutor(Executor):
    """In this process, one point at a time, when its result is asked for."""

    name = "local"

    def submit(self, jobs: Sequence[PointJob]) -> list[Handle]:
        return [_LocalHandle(job) for job in jobs]


class _SubmititHandle(Handle):
    def __init__(self, pool: "_Pool", index: int):
        self.pool = pool
        self.index = index

    @property
    def job(self):
        return self.pool.submitted.get(self.index)

    def result(self) -> JobOutcome:
        job = self.pool.start_through(self.index)
        try:
            return job.result()
        except Exception as err:
            from submitit.core.utils import FailedJobError, UncompletedJobError

            if isinstance(err, (FailedJobError, UncompletedJobError)):
                raise JobFailed(f"job {job.job_id} failed; the end of its stderr:\n{_tail(job)}") from None
            raise

    def state(self) -> str:
        job = self.job
        if job is None:
            return "queued"
        if job.done():
            return "done"
        return "running" if str(job.state).upper().startswith("RUNNING") else "queued"


class _Pool:
    """Submits jobs in order, at most ``parallelism`` unfinished at a time
    (submitit's LocalExecutor itself would start them all at once)."""

    def __init__(self, executor, jobs: Sequence[PointJob], parallelism: int):
        self.executor, self.jobs, self.parallelism = executor, list(jobs), parallelism
        self.submitted: dict[int, Any] = {}

    def _unfinished(self) -> int:
        return sum(1 for job in self.submitted.values() if not job.done())

    def top_up(self) -> None:
        while len(self.submitted) < len(self.jobs) and self._unfinished() < self.parallelism:
            i = len(self.submitted)
            self.submitted[i] = self.executor.submit(self.jobs[i])

    def start_through(self, index: int):
        import time

        self.top_up()
        while index not in self.submitted:
            time.sleep(0.2)
            self.top_up()
        return self.submitted[index]


def _tail(job, lines: int = 30) -> str:
    try:
        text = job.stderr() or ""
    except Exception:  # noqa: BLE001 - a missing log must not hide the failure itself
        text = ""
    return "\n".join(text.splitlines()[-lines:]) or "(no stderr)"


class SubmititExecutor(Executor):
    """submitit's LocalExecutor (``kind="local"``) or SlurmExecutor (``"slurm"``)."""

    def __init__(self, folder: str | Path, kind: str = "local", *, partition: str | None = None,
                 time_min: int = 60, cpus_per_point: int = 1, gpus_per_point: int = 0,
                 array_parallelism: int = 32):
        if kind not in ("local", "slurm"):
            raise ValueError(f"kind must be 'local' or 'slurm', got {kind!r}")
        for name, value, least in (("time_min", time_min, 1), ("cpus_per_point", cpus_per_point, 1),
                                    ("gpus_per_point", gpus_per_point, 0), ("array_parallelism", array_parallelism, 1)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        import submitit

        self.name = "submitit" if kind == "local" else "slurm"
        self.kind = kind
        self.folder = Path(folder)
        self.parallelism = array_parallelism
        if kind == "local":
            self._executor = submitit.LocalExecutor(folder=str(self.folder / "%j"))
            self._executor.update_parameters(timeout_min=time_min)
        else:
            self._executor = submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=3)
            params: dict[str, Any] = {"time": time_min, "cpus_per_task": cpus_per_point,
                                      "array_parallelism": array_parallelism}
            if gpus_per_point:
                params["gpus_per_node"] = gpus_per_point
            if partition:
                params["partition"] = partition
            self._executor.update_parameters(**params)

    def submit(self, jobs: Sequence[PointJob]) -> list[Handle]:
        if not jobs:
            return []
        if self.kind == "slurm":
            # one job array for every point; Slurm itself limits how many run
            with self._executor.batch():
                submitted = [self._executor.submit(job) for job in jobs]
            pool = _Pool(self._executor, jobs, len(jobs))
            pool.submitted = dict(enumerate(submitted))
        else:
            pool = _Pool(self._executor, jobs, self.parallelism)
            pool.top_up()
        return [_SubmititHandle(pool, i) for i in range(len(jobs))]


def executor_problem(name: str) -> str | None:
    """Why executor ``name`` cannot run here (checked before any compute), or None."""
    import shutil
    import subprocess

    if name not in EXECUTORS:
        return f"--executor: expected one of {', '.join(EXECUTORS)}, got {name!r}"
    if name == "local":
        return None
    try:
        import submitit  # noqa: F401
    except ImportError:
        return f"--executor {name} needs submitit: pip install 'prunebench[cluster]'"
    if name == "slurm":
        if shutil.which("sbatch") is None:
            return "--executor slurm: no sbatch on PATH (not a Slurm login node? bash scripts/slurm_local.sh starts a one-node cluster)"
        try:
            out = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as err:
            return f"--executor slurm: sinfo failed ({err}); is slurmctld reachable?"
        if out.returncode != 0:
            return f"--executor slurm: Slurm is unreachable (sinfo: {out.stderr.strip() or out.returncode})"
    return None


def make_executor(name: str, folder: str | Path, **resources: Any) -> Executor:
    """The executor called ``name`` (one of :data:`EXECUTORS`)."""
    if name == "local":
        return LocalExecutor()
    if name == "submitit":
        keep = {k: v for k, v in resources.items() if k in ("time_min", "array_parallelism")}
        return SubmititExecutor(folder, "local", **keep)
    if name == "slurm":
        return SubmititExecutor(folder, "slurm", **resources)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")


def progress_counts(handles: Sequence[Handle]) -> dict[str, int]:
    counts = {"done": 0, "running": 0, "queued": 0}
    for h in handles:
        counts[h.state()] += 1
    return counts
