"""Executor throughput: the same run points in process, and as submitit-local jobs
with 1 and 2 workers, measured one after another in this run.

    python benchmarks/executor_bench.py [--points 6]

Every mode runs the same points (classic LeNet-5 on generated data, magnitude,
unstructured, rates 2x..., seed 0) into its own empty results store, from the
same dense model, trained once beforehand into a shared cache, so a point costs
its compression run plus, for a job, a new Python process (imports, task set-up).
Prints points per hour per mode, the per-point overhead of a job against an
in-process run, and the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SUITE = """
suite: bench-executor
version: 1
task:
  name: classification
  model: lenet5
  data: {name: synthetic, synthetic_train: 2048, synthetic_test: 512}
  batch_size: 64
dense: {epochs: 2, optimizer: {lr: 0.05}}
budget: {epochs: 1, optimizer: {lr: 0.01}}
seeds: [0]
quantization: {bits: 4}
hardware: [storage, compute]
methods: [magnitude]
protocols:
  equal_compression: {structure: [unstructured], rates: RATES}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=6)
    args = parser.parse_args()
    if args.points < 2:
        parser.error(f"--points must be >= 2, got {args.points}")

    import os

    from prunebench.executors import PointJob, SubmititExecutor
    from prunebench.results import ResultStore
    from prunebench.runner import RunContext, run_point
    from prunebench.suite import load_suite

    work = Path(tempfile.mkdtemp(prefix="pb-executor-bench-"))
    os.environ["PRUNEBENCH_CACHE"] = str(work / "cache")
    rates = [2 ** (1 + i / 2) for i in range(args.points)]
    path = work / "suites" / "bench.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(SUITE.replace("RATES", "[" + ", ".join(f"{r:.4g}" for r in rates) + "]"))
    suite = load_suite(path)
    points = suite.points()

    # the shared dense model, trained once before anything is timed
    run_point(suite, points[0], RunContext(progress=False))

    def jobs(store: Path) -> list[PointJob]:
        return [PointJob(suite_path=str(path), smoke=False, protocol=p.protocol, method=p.method, structure=p.structure,
                         rate=p.rate, seed=p.seed, results=str(store)) for p in points]

    timings: dict[str, float] = {}
    start = time.perf_counter()
    ctx = RunContext(progress=False, results=ResultStore(work / "res-inprocess"))
    for p in points:
        run_point(suite, p, ctx)
    timings["in process"] = time.perf_counter() - start

    for workers in (1, 2):
        store = work / f"res-submitit-{workers}"
        executor = SubmititExecutor(work / f"jobs-{workers}", "local", array_parallelism=workers)
        start = time.perf_counter()
        handles = executor.submit(jobs(store))
        outcomes = [h.result() for h in handles]
        timings[f"submitit, {workers} worker{'s' if workers > 1 else ''}"] = time.perf_counter() - start
        assert all(o.record and o.record["status"] == "passed" and not o.reused for o in outcomes)

    base = timings["in process"]
    n = len(points)
    print(f"{n} points, {os.cpu_count()} CPUs; each mode into its own empty store")
    for mode, secs in timings.items():
        print(f"{mode:<22} {secs:7.1f} s  {3600 * n / secs:7.0f} points/hour  time ratio to in process {secs / base:.2f}")
    overhead = (timings["submitit, 1 worker"] - base) / n
    print(f"job overhead per point (1 worker vs in process): {overhead:.1f} s "
          f"({timings['submitit, 1 worker'] / base:.2f}x the in-process time)")


if __name__ == "__main__":
    main()
