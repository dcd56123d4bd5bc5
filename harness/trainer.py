"""The task's training loop, handed to methods, with an epoch budget.

``Trainer.fit(epochs, penalty=..., callbacks=...)`` runs SGD on
``task.loss + penalty(model)``.  Every epoch spent is counted; asking for more
than the budget left raises :class:`BudgetExceeded` before any step is taken.

The budget is counted in optimizer steps: ``budget_steps`` = floor(budget
epochs x steps per epoch), recorded with every run.  A fit asks for whole
steps (``steps=n``) or for epochs that are a whole number of steps; any other
fraction must say how to round it (``rounding="down"`` or ``"nearest"``), so
nothing is rounded silently and repeated fits cannot drift past the budget.

How a method spent its budget is recorded too: steps taken inside
``with trainer.phase("admm"):`` are counted in ``trainer.phases["admm"]``
(the innermost phase when they nest; steps outside any phase under
``"unassigned"``), and ``trainer.checkpoint("hard_prune")`` evaluates the
current model (no budget: no grad) and keeps its scalar metrics in
``trainer.checkpoints``.  The harness copies both into the run's record.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from . import distributed
from .interfaces import Task

__all__ = ["OptimizerConfig", "Trainer", "Callback", "KeepMasked", "BudgetExceeded", "FitReport", "UNASSIGNED",
           "HARD_PRUNE"]

#: the ``Trainer.phases`` key for steps taken outside any ``Trainer.phase``
UNASSIGNED = "unassigned"
#: the checkpoint name for the model right after the hard projection, before any fine-tuning
HARD_PRUNE = "hard_prune"


class BudgetExceeded(RuntimeError):
    """A method asked for more training than the suite's budget allows."""


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD settings for one ``fit`` call.  ``schedule`` is over that call's steps."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")


class Callback:
    """Hooks into ``Trainer.fit``; override what you need."""

    def after_backward(self, trainer: "Trainer") -> None:
        """Gradients are ready, the optimizer has not stepped."""

    def after_step(self, trainer: "Trainer") -> None:
        """The optimizer has stepped."""

    def after_epoch(self, trainer: "Trainer", epoch: int, mean_loss: float) -> None:
        """An epoch (or the final partial epoch) of this fit call ended."""


class KeepMasked(Callback):
    """Masked training: pruned weights get no gradient and stay exactly zero."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks = dict(masks)
        self._params: dict[str, nn.Parameter] | None = None

    def _bind(self, trainer: "Trainer") -> dict[str, nn.Parameter]:
        if self._params is None:
            modules = dict(trainer.model.named_modules())
            self._params = {n: modules[n].weight for n in self.masks}
            self.masks = {n: m.to(self._params[n].device, self._params[n].dtype) for n, m in self.masks.items()}
        return self._params

    def after_backward(self, trainer):
        for name, p in self._bind(trainer).items():
            if p.grad is not None:
                p.grad.mul_(self.masks[name])

    def after_step(self, trainer):
        with torch.no_grad():
            for name, p in self._bind(trainer).items():
                p.mul_(self.masks[name])


@dataclass
class FitReport:
    epochs: float
    steps: int
    epoch_losses: list[float]


class Trainer:
    """Runs SGD for a task on one model; counts and enforces the epoch budget.

    ``budget_epochs=None`` means unlimited (used for the dense baseline).
    """

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        *,
        optimizer: OptimizerConfig = OptimizerConfig(),
        budget_epochs: float | None = None,
        seed: int = 0,
        progress: bool = True,
        desc: str = "train",
        observers: Sequence[Callback] = (),
    ):
        if budget_epochs is not None and budget_epochs < 0:
            raise ValueError(f"budget_epochs must be >= 0, got {budget_epochs!r}")
        self.task = task
        self.model = model
        self.optimizer_config = optimizer
        self.budget_epochs = budget_epochs
        self.epochs_spent = 0.0
        self.steps_taken = 0
        self._steps_per_epoch: int | None = None
        self.progress = progress
        self.desc = desc
        #: callbacks that see every fit call, whoever makes it (benchmarks, probes)
        self.observers = tuple(observers)
        self.generator = torch.Generator().manual_seed(seed)
        #: optimizer steps per phase name, in the order phases were first entered
        self.phases: dict[str, int] = {}
        #: scalar metrics per checkpoint name (see :meth:`checkpoint`)
        self.checkpoints: dict[str, dict] = {}
        self._phase_stack: list[str] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the steps taken inside the block to phase ``name``.

        Entering records the phase with 0 steps, so a phase that trained
        nothing still shows in the record.  Nested phases: the innermost one
        gets the steps, so ``sum(phases.values()) == steps_taken``.  The same
        name entered again adds to its count.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"phase name must be a non-empty string, got {name!r}")
        self.phases.setdefault(name, 0)
        self._phase_stack.append(name)
        try:
            yield
        finally:
            self._phase_stack.pop()

    def checkpoint(self, name: str) -> dict:
        """Evaluate the current model (no budget spent) and keep its scalar metrics
        under ``checkpoints[name]``; returns them.  Named again, it is overwritten."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"checkpoint name must be a non-empty string, got {name!r}")
        metrics = {k: v for k, v in self.evaluate().items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.checkpoints[name] = metrics
        return dict(metrics)

    def record_hard_prune(self) -> dict:
        """``checkpoint("hard_prune")``: the accuracy right after the hard projection,
        before fine-tuning (an ADMM paper's "without retraining")."""
        return self.checkpoint(HARD_PRUNE)

    @property
    def steps_per_epoch(self) -> int:
        if self._steps_per_epoch is None:
            self._steps_per_epoch = int(self.task.steps_per_epoch())
        return self._steps_per_epoch

    @property
    def budget_steps(self) -> int | None:
        """The budget in optimizer steps (None: unlimited)."""
        if self.budget_epochs is None:
            return None
        return math.floor(self.budget_epochs * self.steps_per_epoch + 1e-9)

    @property
    def steps_left(self) -> float | int:
        budget = self.budget_steps
        return math.inf if budget is None else max(0, budget - self.steps_taken)

    @property
    def epochs_left(self) -> float:
        """Whole steps left, in epochs (a fit of exactly this many epochs is exact)."""
        left = self.steps_left
        return math.inf if left == math.inf else left / self.steps_per_epoch

    def steps_for(self, epochs: float, rounding: str = "exact") -> int:
        """Whole steps in ``epochs``: exact (a whole number of steps, else an
        error naming both), or rounded ``down`` / to the ``nearest`` step."""
        if not (isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs > 0
                and math.isfinite(epochs)):
            raise ValueError(f"epochs must be a positive number, got {epochs!r}")
        if rounding not in ("exact", "down", "nearest"):
            raise ValueError(f"rounding must be 'exact', 'down' or 'nearest', got {rounding!r}")
        exact = epochs * self.steps_per_epoch
        nearest = round(exact)
        if abs(exact - nearest) <= 1e-6 * max(1.0, exact):
            return nearest
        if rounding == "exact":
            raise ValueError(
                f"{epochs:g} epochs is {exact:.4g} steps at {self.steps_per_epoch} steps per epoch: "
                f"pass steps=, or rounding='down' or 'nearest'"
            )
        return math.floor(exact) if rounding == "down" else nearest

    def fit(
        self,
        epochs: float | None = None,
        *,
        steps: int | None = None,
        rounding: str = "exact",
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        callbacks: Sequence[Callback] = (),
        lr: float | None = None,
        params: Iterable[nn.Parameter] | None = None,
    ) -> FitReport:
        """Train for ``steps`` optimizer steps, or ``epochs`` (see :meth:`steps_for`),
        with a fresh SGD optimizer.

        ``penalty(model)`` is added to the task loss each step (e.g. ADMM's
        rho/2 ||W - Z + U||^2).  ``lr`` overrides the configured rate;
        ``params`` restricts which parameters are optimised (default: all).
        """
        if (epochs is None) == (steps is None):
            raise ValueError("fit takes epochs or steps, exactly one of them")
        if steps is None:
            total_steps = self.steps_for(epochs, rounding)
            if total_steps < 1:
                raise ValueError(f"{epochs:g} epochs rounded {rounding} is no step at "
                                 f"{self.steps_per_epoch} steps per epoch")
        else:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
            total_steps = steps
        if total_steps > self.steps_left:
            raise BudgetExceeded(
                f"asked for {total_steps} steps ({total_steps / self.steps_per_epoch:g} epochs) with "
                f"{self.steps_left} of the {self.budget_steps}-step ({self.budget_epochs:g}-epoch) budget left"
            )
        per_epoch = self.steps_per_epoch
        epochs = total_steps / per_epoch
        cfg = self.optimizer_config
        opt = torch.optim.SGD(
            list(params) if params is not None else [p for p in self.model.parameters() if p.requires_grad],
            lr=lr if lr is not None else cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0,
        )
        sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
            if cfg.schedule == "cosine"
            else None
        )
        callbacks = (*callbacks, *self.observers)
        bar = _progress(total_steps, f"{self.desc} ({epochs:g} ep)", self.progress)
        self.model.train()
        losses: list[float] = []
        step = 0
        epoch = 0
        while step < total_steps:
            running, count = torch.zeros((), device=self.task.device), 0
            for batch in self.task.train_batches(self.generator):
                # under torchrun: this rank's rows of the batch, gradients averaged below
                loss = self.task.loss(self.model, distributed.shard_batch(batch))
                if penalty is not None:
                    loss = loss + penalty(self.model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(opt.param_groups[0]["params"])
                for cb in callbacks:
                    cb.after_backward(self)
                opt.step()
                if sched is not None:
                    sched.step()
                for cb in callbacks:
                    cb.after_step(self)
                running += loss.detach()
                count += 1
                step += 1
                # counted as it happens, so callbacks see the epochs spent so far;
                # from the step count, so no float residue accumulates
                self.steps_taken += 1
                self.epochs_spent = self.steps_taken / per_epoch
                key = self._phase_stack[-1] if self._phase_stack else UNASSIGNED
                self.phases[key] = self.phases.get(key, 0) + 1
                if bar is not None:
                    bar.update(1)
                if step >= total_steps:
                    break
            mean_loss = float(running) / max(count, 1)
            losses.append(mean_loss)
            for cb in callbacks:
                cb.after_epoch(self, epoch, mean_loss)
            epoch += 1
        if bar is not None:
            bar.close()
        return FitReport(epochs=total_steps / per_epoch, steps=total_steps, epoch_losses=losses)

    def evaluate(self) -> dict:
        """The task's metrics for the current model (does not spend budget).

        Runs without grad: the harness counts forward passes with grad as
        training samples seen."""
        with torch.no_grad():
            return self.task.evaluate(self.model)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency; stay quiet if it is missing
        return None
    # disable=None: shown on a terminal, silent in logs and CI
    return tqdm(total=total, desc=desc, leave=False, disable=None)
