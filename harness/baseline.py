"""The dense baseline: trained once per (task, model, data, recipe, seed), cached.

The cache key hashes the task name and config, the data fingerprint, the
dense recipe and the seed.  Training happens under a file lock so parallel
workers (pytest-xdist) train it once; the others wait and load it.  A suite
may instead name a checkpoint, which is loaded and evaluated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from . import distributed
from .checkpoint import load_state_dict, save_state_dict
from .config import to_plain
from .interfaces import Task
from .trainer import Trainer

__all__ = ["DenseBaseline", "dense_baseline", "default_cache_dir", "baseline_key", "dense_key"]

CACHE_FORMAT = 2  # 2: the torch thread count is part of the key


def default_cache_dir() -> Path:
    env = os.environ.get("PRUNEBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "prunebench"


@dataclass
class DenseBaseline:
    key: str
    state: dict[str, torch.Tensor]
    metrics: dict
    source: str  # "trained", "cache" or "checkpoint"
    train_time_s: float | None
    #: epochs the dense model was trained (None: loaded, or cached before this was kept)
    epochs_trained: float | None = None


def baseline_key(task_name: str, task: Task, dense_plain: dict, seed: int) -> str:
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "task": task_name,
            "task_version": task.version,
            "config": to_plain(task.config),
            "data": task.data_fingerprint(),
            "dense": dense_plain,
            "seed": seed,
            # the same recipe under another thread count trains a different model
            "torch_threads": torch.get_num_threads(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def dense_key(task_name: str, task: Task, dense, seed: int) -> str:
    """The cache key :func:`dense_baseline` uses for this recipe and seed,
    computed without training (a run point's identity includes it)."""
    dense_plain = to_plain(dense)
    return baseline_key(task_name, task, dense_plain, 0 if dense.checkpoint else seed)


#: how long a run waits for another process training the same dense model
LOCK_TIMEOUT_S = float(os.environ.get("PRUNEBENCH_LOCK_TIMEOUT_S", 6 * 3600))
LOCK_NOTICE_S = 60.0


@contextlib.contextmanager
def _held_lock(path: Path):
    """The dense model's lock, naming its holder: a waiter says every minute
    who holds it (pid, host, since when) and gives up after LOCK_TIMEOUT_S
    with that name, instead of waiting silently forever (e.g. on a stopped
    process)."""
    import socket
    import warnings
    from datetime import datetime, timezone

    from filelock import Timeout

    lock = FileLock(str(path))
    holder = path.with_name(path.name + ".holder")
    waited = 0.0
    while True:
        try:
            lock.acquire(timeout=min(LOCK_NOTICE_S, max(LOCK_TIMEOUT_S - waited, 0.01)))
            break
        except Timeout:
            waited += LOCK_NOTICE_S
            who = holder.read_text().strip() if holder.is_file() else "unknown holder"
            if waited >= LOCK_TIMEOUT_S:
                raise TimeoutError(
                    f"dense model lock {path} still held after {waited:.0f} s by {who}; if that process is "
                    f"gone or stopped, end it (or delete {path}) and run again"
                ) from None
            warnings.warn(f"waiting for the dense model lock {path}, held by {who} ({waited:.0f} s so far)",
                          stacklevel=3)
    try:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _load_cached(weights: Path, meta: Path):
    """The cached state and its metadata, or None when the entry is damaged:
    then both files are moved aside (named in a warning) and the model is
    trained again."""
    import warnings

    try:
        info = json.loads(meta.read_text())
        if not isinstance(info, dict) or "metrics" not in info:
            raise ValueError("metadata without metrics")
        return load_state_dict(weights), info
    except Exception as err:  # noqa: BLE001 - any damage means: rebuild
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path in (weights, meta):
            if path.exists():
                path.replace(path.with_name(f"{path.name}.corrupt-{stamp}"))
        warnings.warn(f"dense cache entry {weights} is damaged ({type(err).__name__}: {err}); "
                      f"moved aside as *.corrupt-{stamp} and training it again", stacklevel=3)
        return None


def _load_checkpoint(task: Task, model, path: str) -> None:
    """The task loads the suite's checkpoint; whatever breaks inside the loader
    (a damaged file, weights of another model) reads as one line naming it."""
    from .interfaces import DatasetUnavailable, DependencyUnavailable

    try:
        task.load_dense_checkpoint(model, path)
    except (FileNotFoundError, DatasetUnavailable, DependencyUnavailable):
        raise  # already say what was looked for and where
    except Exception as err:  # noqa: BLE001 - torch's unpickler and load_state_dict raise many kinds
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"dense.checkpoint: expected weights of this suite's model in a safetensors or "
                         f"torch.save file, got {path!r} ({type(err).__name__}: {first})") from err


class _Converged(Exception):
    """Raised at the end of the epoch in which the convergence rule held."""


class _ConvergenceRule:
    """After each epoch: the monitored value (training loss, or the primary
    metric on the validation split) and whether it improved by more than
    ``min_delta`` on the best so far; ``patience`` epochs without stop training."""

    def __init__(self, task: Task, model, rule):
        self.task, self.model, self.rule = task, model, rule
        self.best: float | None = None
        self.waited = 0
        self.history: list[float] = []

    def after_backward(self, trainer) -> None:
        pass

    def after_step(self, trainer) -> None:
        pass

    def after_epoch(self, trainer, epoch: int, mean_loss: float) -> None:
        if self.rule.monitor == "validation":
            value = -float(self.task.evaluate(self.model, split="validation")[self.task.primary_metric])
        else:
            value = float(mean_loss)
        self.history.append(-value if self.rule.monitor == "validation" else value)
        if self.best is None or self.best - value > self.rule.min_delta:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        if self.waited >= self.rule.patience:
            raise _Converged()


def _fit_until_converged(trainer: Trainer, task: Task, model, dense) -> None:
    """Whole epochs up to ``dense.epochs`` until the suite's convergence rule holds.
    The optimizer's schedule runs over the cap, so stopping early leaves it
    where it was (the rule says the model no longer improves there)."""
    rule = dense.converge
    if rule.monitor == "validation" and not getattr(task, "has_validation", False):
        raise ValueError("dense.converge.monitor: expected a task with a validation split (task.validation_fraction > 0), "
                         "got 'validation'")
    watch = _ConvergenceRule(task, model, rule)
    try:
        trainer.fit(dense.epochs, rounding="down", callbacks=[watch])
    except _Converged:
        pass


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def dense_baseline(
    task_name: str,
    task: Task,
    dense,  # suite.DenseSpec
    seed: int,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> DenseBaseline:
    """Load the cached dense model for this config, or make it."""
    dense_plain = to_plain(dense)
    if dense.checkpoint:
        _seed_all(seed)
        model = task.build_model()
        _load_checkpoint(task, model, dense.checkpoint)
        metrics = task.evaluate(model)
        key = dense_key(task_name, task, dense, seed)
        return DenseBaseline(key, {k: v.detach().clone() for k, v in model.state_dict().items()}, metrics, "checkpoint", None)

    key = dense_key(task_name, task, dense, seed)
    root = (cache_dir or default_cache_dir()) / "dense"
    root.mkdir(parents=True, exist_ok=True)
    weights, meta = root / f"{key}.safetensors", root / f"{key}.json"
    # under torchrun the ranks train together (collectives inside), so none may
    # wait on a lock another holds: rank 0 decides, all follow, rank 0 writes
    lock = _held_lock(root / f"{key}.lock") if not distributed.active() else contextlib.nullcontext()
    with lock:
        if distributed.broadcast_object(weights.is_file() and meta.is_file()):
            cached = _load_cached(weights, meta)
            if cached is not None:
                state, info = cached
                return DenseBaseline(key, state, info["metrics"], "cache", info.get("train_time_s"),
                                     info.get("epochs_trained"))
        _seed_all(seed)
        model = task.build_model()
        trainer = Trainer(task, model, optimizer=dense.optimizer, seed=seed, progress=progress, desc="dense")
        if trainer.steps_for(dense.epochs, rounding="down") < 1:  # known only once the data is: before training
            per = trainer.steps_per_epoch
            raise ValueError(f"dense.epochs: expected at least one step ({1 / per:.4g} epochs at {per} steps "
                             f"per epoch), got {dense.epochs:g}")
        start = time.perf_counter()
        if getattr(dense, "converge", None) is None:
            trainer.fit(dense.epochs, rounding="down")  # the recipe's epochs, whole steps
        else:
            _fit_until_converged(trainer, task, model, dense)
        epochs_trained = trainer.epochs_spent
        elapsed = time.perf_counter() - start
        metrics = task.evaluate(model)
        if not distributed.is_main():
            distributed.barrier()  # wait until rank 0 has written the cache
            return DenseBaseline(key, {k: v.detach().clone() for k, v in model.state_dict().items()}, metrics, "trained",
                                 elapsed, epochs_trained)
        save_state_dict(model.state_dict(), weights)
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {"metrics": metrics, "train_time_s": elapsed, "dense": dense_plain, "seed": seed,
                 "epochs_trained": epochs_trained,
                 "task": task_name, "config": to_plain(task.config)},
                sort_keys=True, indent=1, default=str,
            )
        )
        tmp.replace(meta)
        distributed.barrier()
        return DenseBaseline(key, {k: v.detach().clone() for k, v in model.state_dict().items()}, metrics, "trained",
                             elapsed, epochs_trained)
