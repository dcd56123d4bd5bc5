"""Runs one point of a suite: dense baseline, method, quantizer, checks, scores.

The method runs under the harness's guard (:mod:`prunebench.guard`): what is
quantized, verified, evaluated and scored is a freshly built model holding
the method's ``state_dict``; patches of the harness are put back and refused;
the training samples the model saw are counted by the harness, checked
against the budget and recorded (``train_samples_seen``).

``run_point`` returns a :class:`~prunebench.records.RunRecord` and
appends it to the store, whether the point met its ``expect`` or not.  A run
that raises (a method crash, a failed verification) is recorded with status
``error`` before the exception propagates.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import distributed, registry
from .artifact import CompressedModel
from .baseline import DenseBaseline, dense_baseline, dense_key
from .config import to_plain
from .dependency import EffectiveCounter, count_weights, counting_effective, effective_model, weight_layers
from .projections import EFFECTIVE_KINDS, structured_live_mask
from .guard import HarnessTampered, guarded_compress
from .interfaces import DatasetUnavailable, DependencyUnavailable, Task
from .macs import at_input_scale, declared_input_scale, rates_of, verify_macs
from .quant import QuantizationAware, quantize_
from .records import MethodRef, RunRecord, key_of_identity, point_identity
from .results import ResultStore, environment_info
from .suite import RunPoint, Suite
from .target import Quantization, Structure, Target
from .trainer import Trainer
from .verify import verify

__all__ = ["RunContext", "Unsupported", "PointResult", "run_point", "get_task", "isolated", "ISOLATION"]

ISOLATION = ("auto", "process", "off")


class Unsupported(Exception):
    """The method cannot produce what the point asks (e.g. a structure)."""


@dataclass
class RunContext:
    device: str = "cpu"
    data_root: str | None = None
    results: ResultStore | None = None
    cache_dir: Path | None = None
    tracker: Any = None  # prunebench.tracking.Tracker or None
    progress: bool = True
    #: torch intra-op threads inside a run point; fixed so results do not depend on
    #: the machine's core count or on how many pytest-xdist workers share it
    threads: int = 1
    #: run points whose passed or failed record is in the store again (default: reuse it)
    rerun: bool = False
    #: processes for the probes of one search round (``search: {parallel: k}``); 1: in this process
    search_workers: int = 1
    #: where a method runs: ``auto`` (third-party methods in their own process), ``process``, ``off``
    isolation: str = "auto"
    #: the method's output model: ``off`` (not kept), ``keep`` (kept in the cache, keyed by the
    #: point and rate), ``reuse`` (a kept one is scored instead of running the method again;
    #: new ones are kept): a change to what scores a model then costs no retraining
    models: str = "off"
    _tasks: dict = field(default_factory=dict)
    _dense: dict = field(default_factory=dict)


@dataclass
class PointResult:
    record: RunRecord
    #: unmet expectations, "target vs achieved" each
    unmet: list[str]
    #: the record was found in the store (resume), not run now
    reused: bool = False


def get_task(suite: Suite, ctx: RunContext) -> Task:
    """One prepared task per (suite, smoke, data_root, device) per process."""
    key = (suite.path, suite.smoke_mode, ctx.data_root, ctx.device)
    if key not in ctx._tasks:
        cls = registry.tasks.get(suite.task_name)
        task = cls(suite.task_config(), data_root=ctx.data_root, device=ctx.device)
        try:
            task.prepare()
        except (DatasetUnavailable, DependencyUnavailable) as err:
            ctx._tasks[key] = err  # remembered: a failed lookup can take seconds (hub retries)
        else:
            ctx._tasks[key] = task
    found = ctx._tasks[key]
    if isinstance(found, (DatasetUnavailable, DependencyUnavailable)):
        raise found
    return found


def _forget_task(suite: Suite, ctx: RunContext) -> None:
    ctx._tasks.pop((suite.path, suite.smoke_mode, ctx.data_root, ctx.device), None)


def _dense(suite: Suite, task: Task, seed: int, ctx: RunContext) -> DenseBaseline:
    key = (suite.path, suite.smoke_mode, ctx.data_root, ctx.device, seed)
    if key not in ctx._dense:
        ctx._dense[key] = dense_baseline(
            suite.task_name, task, suite.dense, seed, cache_dir=ctx.cache_dir, progress=ctx.progress
        )
    return ctx._dense[key]


@dataclass
class _MethodRun:
    """What the method's part of a run hands to the harness's part."""

    guarded: Any  # prunebench.guard.Guarded: a fresh model holding the method's state_dict
    epochs_spent: float
    steps_spent: int
    budget_steps: int | None
    #: the method quantized to the target itself (else the suite's quantizer runs after it)
    quantizes: bool
    #: optimizer steps per phase of the method, and its checkpoints' metrics (hard prune, ...)
    phases: dict = field(default_factory=dict)
    checkpoints: dict = field(default_factory=dict)


def _setup(suite: Suite, task: Task, dense: DenseBaseline, point: RunPoint, rate: float, ctx: RunContext):
    """The method, the dense model's copy it may change, its target and trainer."""
    method_cls = registry.methods.get(point.method)
    method = method_cls(suite.method_config(point.method))
    structure = Structure.parse(point.structure)
    torch.manual_seed(point.seed)
    model = task.build_model()  # from scratch: this draw, the one the dense model started from
    if point.start == "dense":
        model.load_state_dict(dense.state)
    layers = suite.layers.select(task.compressible_layers(model), structure.is_structured)
    if not layers:
        raise ValueError(f"{suite.path}: no compressible layer matches layers.include/exclude for {structure}")
    target = Target(
        layers=tuple(layers),
        structure=structure,
        rate=rate,
        quantization=suite.quantization if method.quantizes else None,
        layer_floor=suite.layers.floor,
        allow_collapsed=suite.layers.allow_collapsed,
        membrane_bits=suite.quantization.membrane_bits if suite.quantization is not None else None,
        rate_of=suite.protocol(point.protocol).rate_of,
    )
    quant = suite.quantization
    # the same quantization treatment for every method: under qat a prune-only method
    # fine-tunes quantization-aware inside its budget, as the quantizing methods do
    observers = ((QuantizationAware(layers, quant),)
                 if quant is not None and quant.mode == "qat" and not method.quantizes else ())
    trainer = Trainer(
        task, model, optimizer=suite.budget.optimizer, budget_epochs=suite.budget_epochs(point),
        seed=point.seed, progress=ctx.progress, desc=f"{point.method} {rate:g}x", observers=observers,
    )
    return method, model, target, trainer


def _effective_counter(model, task: Task) -> EffectiveCounter | None:
    """The dependency-aware counter for ``model``; None where Torch-Pruning cannot
    trace it (then budgets and checks fall back to the nominal count)."""
    try:
        return EffectiveCounter(model, task.example_input())
    except Exception:  # noqa: BLE001 - an untraceable graph is counted without credit, as in the record
        return None


def _run_method(suite: Suite, task: Task, dense: DenseBaseline, point: RunPoint, rate: float,
                ctx: RunContext) -> _MethodRun:
    """The method under the guard, in this process."""
    method, model, target, trainer = _setup(suite, task, dense, point, rate, ctx)
    # the method's own model is dropped: a fresh one holding its state_dict is
    # quantized, verified, evaluated and scored (prunebench.guard)
    # structured budgets are met on the dependency-aware count (prunebench.dependency)
    with counting_effective(_effective_counter(model, task)):
        guarded = guarded_compress(
            method, model, target, trainer, task, budget_epochs=suite.budget_epochs(point), name=point.method,
            classes=[registry.hardware_models.get(name) for name in suite.hardware],
        )
    return _MethodRun(guarded, trainer.epochs_spent, trainer.steps_taken, trainer.budget_steps, bool(method.quantizes),
                      dict(trainer.phases), _jsonable(dict(trainer.checkpoints)))


def isolated(method: str, isolation: str) -> bool:
    """Whether ``method`` runs in its own process under ``isolation``: ``process``
    always, ``off`` never, ``auto`` for methods from other distributions than
    prunebench (third-party code; the built-ins are trusted and run faster here)."""
    if isolation not in ISOLATION:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION)}, got {isolation!r}")
    if isolation == "auto":
        return registry.methods.info(method).distribution != "prunebench"
    return isolation == "process"


MODEL_MODES = ("off", "keep", "reuse")


def kept_model_path(ctx: RunContext, point_key: str | None, rate: float) -> Path | None:
    """Where the method's output for ``point_key`` at ``rate`` is kept; None when not kept."""
    if ctx.models not in MODEL_MODES:
        raise ValueError(f"models: expected one of {', '.join(MODEL_MODES)}, got {ctx.models!r}")
    if ctx.models == "off" or not point_key:
        return None
    from .baseline import default_cache_dir

    return Path(ctx.cache_dir or default_cache_dir()) / "models" / f"{point_key}-{float(rate):.6g}.pt"


def _keep_model(path: Path, run: "_MethodRun", method_wall_time_s: float) -> None:
    """The method's output as the isolated path returns it, with the run that made it;
    written to a temporary name and renamed (a killed run leaves no half file)."""
    import os

    env = environment_info()
    payload = {**_method_payload(run), "method_wall_time_s": method_wall_time_s,
               "git_commit": env.get("git_commit"), "git_dirty": env.get("git_dirty"),
               "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _kept_model(path: Path, task: Task, point: RunPoint) -> tuple["_MethodRun", float | None, dict] | None:
    """A kept output loaded into a model this process builds and checked as an isolated
    method's is; None when nothing is kept there."""
    if not path.is_file():
        return None
    out = torch.load(path, map_location="cpu", weights_only=True)
    run = _method_run_from(out, task, point, "kept model")
    made_by = {"git_commit": out.get("git_commit"), "git_dirty": out.get("git_dirty"), "created": out.get("created")}
    return run, out.get("method_wall_time_s"), made_by


def _compress_once(suite: Suite, task: Task, dense: DenseBaseline, point: RunPoint, rate: float, ctx: RunContext,
                   model_key: str | None = None) -> dict:
    """Compress the dense model to ``rate``; return metrics, figures and checks.

    The method runs here or, isolated, in a spawned process that returns only
    the model's state_dict, its info and the counts; everything after it
    (quantizer, verification, evaluation, scores) is the harness's, here.
    An input scale the method declares holds for everything after it and
    ends with this call, however it ends (prunebench.macs)."""
    with contextlib.ExitStack() as scaled:
        return _compress_scaled(suite, task, dense, point, rate, ctx, scaled, model_key)


def _compress_scaled(suite: Suite, task: Task, dense: DenseBaseline, point: RunPoint, rate: float, ctx: RunContext,
                     scaled: contextlib.ExitStack, model_key: str | None = None) -> dict:
    structure = Structure.parse(point.structure)
    quantity = suite.protocol(point.protocol).rate_of
    # resolved before the method runs: what scores the model is not the method's to choose
    hw_classes = {name: registry.hardware_models.get(name) for name in suite.hardware}
    hw_configs = {name: suite.hardware_config(name) for name in suite.hardware}
    quant = suite.quantization
    layers = suite.layers.select(task.compressible_layers(task.build_model()), structure.is_structured)
    kept = kept_model_path(ctx, model_key, rate)
    reused = _kept_model(kept, task, point) if kept is not None and ctx.models == "reuse" else None
    output_from = None
    if reused is not None:  # scored again, not trained again: the record says which run trained it
        run, method_wall_time_s, output_from = reused
    else:
        started = time.perf_counter()
        if isolated(point.method, ctx.isolation):
            run = _run_method_apart(suite, task, point, rate, ctx)
        else:
            run = _run_method(suite, task, dense, point, rate, ctx)
        method_wall_time_s = time.perf_counter() - started  # isolated: its process's start included
        if kept is not None:
            _keep_model(kept, run, method_wall_time_s)
    guarded, quantizes = run.guarded, run.quantizes
    model, info = guarded.model, guarded.info
    # a declared input scale is checked, then evaluated and counted at (prunebench.macs)
    input_scale = declared_input_scale(info, point.method)
    scaled.enter_context(at_input_scale(task, input_scale, point.method))
    metrics_before_q = None
    if quant is not None and not quantizes:
        metrics_before_q = task.evaluate(model)
        _standard_quantize(model, layers, quant)
    check_target = Target(layers=tuple(layers), structure=structure, rate=rate, quantization=quant,
                          layer_floor=suite.layers.floor, allow_collapsed=suite.layers.allow_collapsed,
                          rate_of=quantity)
    effective_nonzero = None
    if structure.kind in EFFECTIVE_KINDS:
        counter = _effective_counter(model, task)
        if counter is not None:
            modules = dict(model.named_modules())
            effective_nonzero = counter.per_layer(
                {n: structured_live_mask(modules[n].weight.detach(), structure) for n in layers})
    check = verify(model, check_target, method=point.method, dense=_start_state(task, dense, point),
                   trained=guarded.trained,
                   effective_nonzero=effective_nonzero)
    # the whole model counts: the layers the suite left out are quantized like the rest
    # (after verification, which checks they are as the dense model had them)
    every_layer = weight_layers(model)
    excluded = [n for n in every_layer if n not in set(layers)]
    if quant is not None and excluded:
        _standard_quantize(model, excluded, quant)
    membrane_bits = quant.membrane_bits if quant is not None else None
    if membrane_bits:
        _standard_membrane(model, membrane_bits)
    # what the structure really removes (prunebench.dependency): evaluated and scored
    whole = None
    try:
        effective, count = effective_model(model, task.example_input())
        whole = {**count.as_dict(), "excluded_layers": excluded}
    except Exception as err:  # noqa: BLE001 - a graph Torch-Pruning cannot trace: counted without credit
        effective = model
        total, nonzero = count_weights(model, every_layer)
        whole = {"total_weights": total, "nonzero_weights": nonzero, "effective_nonzero_weights": None,
                 "rate": total / max(nonzero, 1), "effective_rate": None, "excluded_layers": excluded,
                 "dependency_unavailable": f"{type(err).__name__}: {err}"[:300]}
    macs = None  # the harness's own count, on the effective model at the evaluated input
    if quantity == "macs" or input_scale != 1.0:
        macs = verify_macs(effective, task, rate if quantity == "macs" else 1.0, input_scale=input_scale,
                           method=point.method)
    metrics = task.evaluate(effective)
    if membrane_bits:
        _check_membrane(effective, membrane_bits, point.method)
    validation = task.evaluate(effective, split="validation") if getattr(task, "has_validation", False) else None
    metrics_nominal = task.evaluate(model) if effective is not model and whole.get("weights_removed_by_dependency") else None
    artifact = CompressedModel.from_model(
        effective, every_layer, task.example_input(), structure=str(structure),
        weight_bits=quant.bits if quant is not None else None,
        model_name=task.describe().get("model", ""),
    )
    hardware, hardware_versions = {}, {}
    for name, hw_cls in hw_classes.items():
        hardware[name] = hw_cls(hw_configs[name]).score(
            artifact, model=effective, example_input=task.example_input()
        )
        hardware_versions[name] = hw_cls.version
    return {
        "target": {"rate": rate, "structure": str(structure),
                   "quantization": to_plain(quant) if quant else None, "layers": list(layers),
                   **({} if quantity == "weights" else {"rate_of": quantity})},
        "macs": macs,
        "metrics": metrics,
        "metrics_before_quantization": metrics_before_q,
        "metrics_nominal": metrics_nominal,
        "validation_metrics": validation,
        "whole_model": whole,
        "achieved_rate": check.achieved_rate,
        "nonzero_weights": check.nonzero_weights,
        "total_weights": check.total_weights,
        "levels_per_layer": dict(check.levels_per_layer),
        "hardware": hardware,
        "hardware_versions": hardware_versions,
        "epochs_spent": run.epochs_spent,
        "budget_steps": run.budget_steps,
        "steps_spent": run.steps_spent,
        "phases": run.phases or None,
        "checkpoints": run.checkpoints or None,
        "train_samples_seen": guarded.train_samples_seen,
        "method_info": _jsonable(info),
        "method_wall_time_s": None if method_wall_time_s is None else round(method_wall_time_s, 3),
        "method_output_from": output_from,
    }


def _start_state(task: Task, dense: DenseBaseline, point: RunPoint) -> dict:
    """The state the method's model started from, which layers outside the target
    are checked against: the dense model's, or (start scratch) the fresh draw for
    the point's seed (made again without touching the global generator)."""
    if point.start == "dense":
        return dense.state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(point.seed)
        return {k: v.detach().clone() for k, v in task.build_model().state_dict().items()}


def _check_start(suite: Suite, point: RunPoint) -> None:
    """A point must start where the suite's ``start:`` runs its method (a runner that
    lost the point's start on the way would otherwise run another point silently)."""
    methods = suite.start.get(point.start, ())
    if methods is not None and point.method not in methods:
        runs = ", ".join(s for s, ms in suite.start.items() if ms is None or point.method in ms) or "none"
        raise ValueError(f"{suite.path}: start: {point.method} does not run from {point.start!r} in this suite "
                         f"(it runs from: {runs})")


def _count_from_init(record: RunRecord, dense: DenseBaseline, point: RunPoint) -> None:
    """Epochs and wall time from random initialisation to the compressed model: the
    method's alone from scratch, plus the dense model's from a dense start."""
    if point.start == "dense":
        before_epochs, before_s = dense.epochs_trained, dense.train_time_s
    else:
        before_epochs, before_s = 0.0, 0.0
    if record.epochs_spent is not None and before_epochs is not None:
        record.epochs_from_init = before_epochs + record.epochs_spent
    if record.method_wall_time_s is not None and before_s is not None:
        record.end_to_end_time_s = round(before_s + record.method_wall_time_s, 3)


def _run_method_apart(suite: Suite, task: Task, point: RunPoint, rate: float, ctx: RunContext) -> _MethodRun:
    """The method in a spawned process: nothing it patches there reaches this
    process's checks or a later run.  Its model comes back as a state_dict and
    is loaded strictly into a model this process builds."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    job = ProbeJob(suite_path=suite.path, smoke=suite.smoke_mode, point=point, rate=rate, device=ctx.device,
                   data_root=ctx.data_root, threads=ctx.threads,
                   cache_dir=str(ctx.cache_dir) if ctx.cache_dir else None)
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            out = pool.submit(_run_method_job, job).result()
    except BrokenProcessPool:
        # the method's process ended without a result (killed, os._exit, a crash in C):
        # one line, so its own stderr just above stays in view
        raise RuntimeError(f"{point.method} (isolated in its own process) died without a result; "
                           f"its stderr is above") from None
    return _method_run_from(out, task, point, "isolated")


def _method_run_from(out: dict, task: Task, point: RunPoint, where: str) -> "_MethodRun":
    """A method's output sent as plain data (an isolated process, a kept model), loaded
    strictly into a model this process builds, and checked for non-finite numbers."""
    from .guard import Guarded
    from .verify import VerificationError, nonfinite

    model = task.build_model()
    try:
        model.load_state_dict(out["state"], strict=True)
    except RuntimeError as err:
        raise VerificationError(f"{point.method} ({where}) returned a model that is not the task's: {err}") from None
    bad = nonfinite(model)
    if bad:
        raise VerificationError(f"{point.method} left non-finite numbers in the model: {'; '.join(bad)}")
    guarded = Guarded(model=model, info=out["info"], train_samples_seen=out["seen"],
                      train_samples_allowed=out["allowed"])
    return _MethodRun(guarded, out["epochs_spent"], out["steps_spent"], out["budget_steps"], out["quantizes"],
                      out["phases"], out["checkpoints"])


def _run_method_job(job: "ProbeJob") -> dict:
    from .suite import load_suite

    suite = load_suite(job.suite_path, smoke=job.smoke)
    ctx = RunContext(device=job.device, data_root=job.data_root, progress=False, threads=job.threads,
                     cache_dir=Path(job.cache_dir) if job.cache_dir else None)
    with fixed_threads(job.threads):
        task = get_task(suite, ctx)
        dense = _dense(suite, task, job.point.seed, ctx)
        run = _run_method(suite, task, dense, job.point, job.rate, ctx)
    return _method_payload(run)


def _method_payload(run: "_MethodRun") -> dict:
    """A method's output as plain data: its model's state_dict, its info and the counts."""
    g = run.guarded
    return {"state": {k: v.detach().cpu() for k, v in g.model.state_dict().items()},
            "info": _jsonable(g.info), "seen": g.train_samples_seen, "allowed": g.train_samples_allowed,
            "epochs_spent": run.epochs_spent, "steps_spent": run.steps_spent, "budget_steps": run.budget_steps,
            "quantizes": run.quantizes, "phases": run.phases, "checkpoints": run.checkpoints}


class _Compressor:
    """``compress(rate)`` for a protocol; ``compress.many(rates)`` runs several
    rates, in ``ctx.search_workers`` processes when that is above 1 (each
    process loads the suite, its task and the cached dense model, so the
    results are those of the same rates run here)."""

    def __init__(self, suite: Suite, task: Task, dense: DenseBaseline, point: RunPoint, ctx: RunContext,
                 model_key: str | None = None):
        self.suite, self.task, self.dense, self.point, self.ctx = suite, task, dense, point, ctx
        self.model_key = model_key  # the point's key: names its kept models (RunContext.models)

    def __call__(self, rate: float) -> dict:
        return _compress_once(self.suite, self.task, self.dense, self.point, rate, self.ctx, self.model_key)

    def dense_metrics(self, split: str) -> dict:
        """The dense model's metrics on ``split`` ("test": the cached figures)."""
        if split == "test":
            return self.dense.metrics
        model = self.task.build_model()
        model.load_state_dict(self.dense.state)
        return self.task.evaluate(model, split=split)

    def many(self, rates: list[float]) -> list[dict]:
        workers = min(self.ctx.search_workers, len(rates))
        if workers <= 1:
            return [self(rate) for rate in rates]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        jobs = [ProbeJob(suite_path=self.suite.path, smoke=self.suite.smoke_mode, point=self.point, rate=rate,
                         device=self.ctx.device, data_root=self.ctx.data_root, threads=self.ctx.threads,
                         cache_dir=str(self.ctx.cache_dir) if self.ctx.cache_dir else None,
                         models=self.ctx.models, model_key=self.model_key) for rate in rates]
        # spawn: a forked child would inherit torch's thread pools and this process's locks
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_run_probe, jobs))


@dataclass
class ProbeJob:
    """One rate of a search round, as plain data for another process."""

    suite_path: str
    smoke: bool
    point: RunPoint
    rate: float
    device: str = "cpu"
    data_root: str | None = None
    threads: int = 1
    cache_dir: str | None = None
    models: str = "off"
    model_key: str | None = None


def _run_probe(job: ProbeJob) -> dict:
    from .suite import load_suite

    suite = load_suite(job.suite_path, smoke=job.smoke)
    ctx = RunContext(device=job.device, data_root=job.data_root, progress=False, threads=job.threads,
                     cache_dir=Path(job.cache_dir) if job.cache_dir else None, models=job.models)
    with fixed_threads(job.threads):
        task = get_task(suite, ctx)
        dense = _dense(suite, task, job.point.seed, ctx)  # from the cache the point filled
        return _compress_once(suite, task, dense, job.point, job.rate, ctx, job.model_key)


def _standard_membrane(model, bits: int) -> None:
    """Spiking neurons whose membrane the method left unquantized store it on a
    uniform 2^bits-level grid over [-threshold, threshold] (the same for every
    method; a method's own membrane grid is kept and checked)."""
    for module in model.modules():
        if hasattr(module, "mem_bits") and hasattr(module, "mem_scale") and int(module.mem_bits) == 0:
            theta = float(module.threshold.detach().clamp(min=1e-3))
            with torch.no_grad():
                module.mem_bits.fill_(bits)
                module.mem_scale.fill_(theta / max(2 ** (bits - 1) - 1, 1))
                module.mem_offset.fill_(0.0)


def _check_membrane(model, bits: int, method: str) -> None:
    """The membrane states recorded while evaluating hold at most 2^bits levels per layer."""
    from .verify import VerificationError

    stats = getattr(model, "snn_stats", None)
    if stats is None:
        raise VerificationError("quantization.membrane_bits: the model has no spiking neurons to check")
    from .tasks.classification.snn import membrane_levels_problems

    problems = membrane_levels_problems(stats(), bits)
    if problems:
        raise VerificationError(f"{method} missed its membrane target ({bits}-bit):\n  " + "\n  ".join(problems))


def _standard_quantize(model, layers, quant: Quantization) -> None:
    """The suite's quantizer on top of a prune-only method: zeros stay zero."""
    modules = dict(model.named_modules())
    for name in layers:
        quantize_(modules[name].weight.data, quant)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"<tensor {tuple(value.shape)}>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _portable_path(path: str) -> str:
    """The suite path relative to the working directory; never a machine path."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def _base_record(suite: Suite, task: Task, point: RunPoint) -> RunRecord:
    info = registry.methods.info(point.method)
    method_cls = registry.methods.get(point.method)
    env = environment_info()
    desc = task.describe()
    return RunRecord(
        suite=suite.suite,
        suite_version=suite.version,
        suite_file=_portable_path(suite.path),
        smoke=suite.smoke_mode,
        reference=suite.reference,
        task=suite.task_name,
        model=desc.get("model"),
        dataset=desc.get("dataset"),
        protocol=point.protocol,
        point_id=point.id,
        method=MethodRef(
            name=point.method,
            version=method_cls.version,
            distribution=info.distribution,
            distribution_version=info.version,
            config=to_plain(suite.method_config(point.method)),
        ),
        structure=point.structure,
        seed=point.seed,
        primary_metric=task.primary_metric,
        budget_epochs=suite.budget_epochs(point),
        start=point.start,
        git_commit=env.pop("git_commit", None),
        git_dirty=env.pop("git_dirty", None),
        versions=env,
        device=str(task.device),
        torch_threads=torch.get_num_threads(),
        reference_method=suite.reference_method,
        provenance=task.describe(suite.dense).get("provenance") if "provenance" in desc else None,
    )


@contextlib.contextmanager
def fixed_threads(threads: int):
    """A fixed torch thread count and deterministic algorithms for one run point.

    A CPU reduction's result depends on how it is split across threads, so the
    same point under 1 and 2 threads trains to different models; fixing the
    count makes a point's numbers independent of the machine's cores and load.
    The previous settings are restored afterwards."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    # warn_only: an op without a deterministic kernel (some CUDA ops) warns, not fails
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def run_point(suite: Suite, point: RunPoint, ctx: RunContext) -> PointResult:
    """Run ``point`` of ``suite``; always records, even on error."""
    with fixed_threads(ctx.threads):
        return _run_point(suite, point, ctx)


def unsupported(suite: Suite, point: RunPoint) -> str | None:
    """Why the point's method cannot run it (a structure or target quantity it
    does not declare), or None; such a point is skipped, never run."""
    method_cls = registry.methods.get(point.method)  # unknown name: the registry's error
    structure = Structure.parse(point.structure)
    if structure.kind not in method_cls.structures:
        return (f"method {point.method!r} does not produce {structure} structure "
                f"(it declares: {', '.join(method_cls.structures)})")
    quantity = suite.protocol(point.protocol).rate_of
    if quantity not in rates_of(method_cls):
        return (f"method {point.method!r} does not meet {quantity} targets "
                f"(it declares: {', '.join(rates_of(method_cls))})")
    return None


def _run_point(suite: Suite, point: RunPoint, ctx: RunContext) -> PointResult:
    why = unsupported(suite, point)
    if why:
        raise Unsupported(why)
    _check_start(suite, point)
    task = get_task(suite, ctx)
    start = time.perf_counter()
    record = _base_record(suite, task, point)
    record.dense_key = dense_key(suite.task_name, task, suite.dense, point.seed)
    record.point_key = _point_key(suite, point, record)
    if ctx.results is not None and not ctx.rerun:
        # under torchrun every rank must take rank 0's decision
        stored = distributed.broadcast_object(ctx.results.get(record.suite, record.point_key))
        if stored is not None and stored.get("status") in ("passed", "failed"):
            done = RunRecord.from_json(stored)
            return PointResult(done, done.failure.split("; ") if done.status == "failed" and done.failure else [],
                               reused=True)
    metric = task.primary_metric
    try:
        dense = _dense(suite, task, point.seed, ctx)
        record.dense_metrics = dense.metrics
        record.dense_source = dense.source
        record.dense_epochs_trained = dense.epochs_trained
        record.dense_train_time_s = None if dense.train_time_s is None else round(dense.train_time_s, 3)
        record.dense_key = dense.key
        dense_value = dense.metrics[metric]
        protocol = suite.protocol(point.protocol)
        record.update(protocol.run(point, _Compressor(suite, task, dense, point, ctx, record.point_key), dense_value,
                                   metric))
        record.accuracy_drop = dense_value - record.metrics[metric]
        _count_from_init(record, dense, point)
        unmet = protocol.unmet(point, record)
        record.status = "failed" if unmet else "passed"
        record.failure = "; ".join(unmet) or None
    except Exception as err:
        if isinstance(err, HarnessTampered):  # the task may hold what the method changed: prepare it anew
            _forget_task(suite, ctx)
        record.status = "error"
        record.failure = f"{type(err).__name__}: {err}"
        _finish(record, start, ctx)
        raise
    _finish(record, start, ctx)
    return PointResult(record, unmet)


def _point_key(suite: Suite, point: RunPoint, record: RunRecord) -> str:
    """The hash naming this point's record; the same for every run of the point."""
    quant = suite.quantization
    return key_of_identity(point_identity(
        suite=record.suite, suite_version=record.suite_version, smoke=record.smoke, protocol=point.protocol,
        method={"name": record.method.name, "version": record.method.version, "config": record.method.config},
        structure=point.structure, seed=point.seed, budget_epochs=record.budget_epochs,
        quantization=_quant_identity(quant), dense_key=record.dense_key, start=point.start,
        **suite.protocol(point.protocol).identity(point),
    ))


def _quant_identity(quant: Quantization | None) -> dict | None:
    """The quantization part of a point's identity; the default mode (ptq) is left
    out so points from before modes existed keep their keys."""
    if quant is None:
        return None
    plain = dict(to_plain(quant))
    if plain.get("mode") == "ptq":
        del plain["mode"]
    if plain.get("membrane_bits") is None:
        plain.pop("membrane_bits", None)
    return plain


def _finish(record: RunRecord, start: float, ctx: RunContext) -> None:
    record.wall_time_s = round(time.perf_counter() - start, 3)
    record.created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not distributed.is_main():
        return  # under torchrun, rank 0 alone writes the record (every rank holds the same one)
    if ctx.results is not None:
        ctx.results.append(record)
    if ctx.tracker is not None:
        ctx.tracker.log_record(record)
