"""input_scaling: the baseline Light-Weight RetinaNet (arXiv 1905.10011)
compares against, meeting a MACs target by shrinking the input image.

A convolutional network's MACs scale about quadratically with the input's
side, so a compute reduction r asks for a side about 1/sqrt(r) of the
original.  "About": a detector pads its input to a multiple of its largest
stride and runs a fixed-size head per pyramid level, and Linear layers after
a global pooling do not shrink at all, so the side is chosen by counting, not
by the formula:

- the scale s (on each side of the task's input size) is the largest in
  [``min_scale``, 1] whose MACs per sample meet the target, found by
  bisection over ``search_steps`` steps, each step counting the model on the
  task's example input made at s (:func:`prunebench.hardware.compute.count_macs`,
  the count the harness verifies with);
- no weight changes: every filter stays, so any structure is trivially
  respected;
- then fine-tuning at that resolution for ``finetune_fraction`` of the
  budget (the task reads its training images at s inside
  ``task.input_scaled(s)``), so the model adapts to the smaller objects.

The scale goes back to the harness as ``input_scale`` in the info; the
harness checks it, re-counts the MACs there and evaluates the model at that
resolution (:mod:`prunebench.macs`).  The task must offer ``input_scaled``
(the detection task does); only MACs targets are met (``rates_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from prunebench import Method
from prunebench.config import Between, Gt, Le, Validated
from prunebench.hardware.compute import count_macs

from ._baselines import steps_left_int

__all__ = ["InputScaling", "InputScalingConfig"]


@dataclass(frozen=True)
class InputScalingConfig(Validated):
    #: the smallest scale on each side the search may pick
    min_scale: Annotated[float, Gt(0), Le(1)] = 0.1
    #: bisection steps on the scale (the scale is found within (1 - min_scale) / 2^steps)
    search_steps: Annotated[int, Between(1, 30)] = 12
    #: share of the steps left spent fine-tuning at the chosen resolution
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0


class InputScaling(Method):
    """Meets a MACs target by a smaller input; fine-tunes at that resolution."""

    Config = InputScalingConfig
    version = "1"
    # nothing is pruned, so every one of these holds trivially
    structures = ("unstructured", "filter", "channel")
    #: targets this method can meet: compute reductions only (prunebench.macs.rates_of)
    rates_of = ("macs",)

    def compress(self, model, target, trainer):
        cfg = self.config
        if target.rate_of != "macs":
            raise ValueError(f"input_scaling meets MACs targets only (rate_of: macs), got rate_of {target.rate_of!r}")
        task = trainer.task
        scaled = getattr(task, "input_scaled", None)
        if not callable(scaled):
            raise ValueError(f"input_scaling: the {type(task).__name__} task cannot change its input size "
                             f"(it has no input_scaled)")
        dense = count_macs(model, task.example_input())
        budget = target.macs_budget(dense.dense_macs)

        def macs_at(scale: float):
            with scaled(scale):
                return count_macs(model, task.example_input())

        trace = []

        def fits(scale: float) -> bool:
            count = macs_at(scale)
            trace.append({"scale": scale, "macs": count.compact_macs})
            return count.compact_macs <= budget

        if fits(1.0):
            scale = 1.0
        elif not fits(cfg.min_scale):
            raise ValueError(f"input_scaling: {target.rate:g}x MACs needs a smaller input than min_scale "
                             f"{cfg.min_scale:g} ({trace[-1]['macs']} MACs there, {budget} allowed)")
        else:
            lo, hi = cfg.min_scale, 1.0
            for _ in range(cfg.search_steps):
                mid = (lo + hi) / 2
                if fits(mid):
                    lo = mid
                else:
                    hi = mid
            scale = lo
        at = macs_at(scale)
        info = {
            "input_scale": scale,
            "input_shape": list(at.input_shape),
            "dense_input_shape": list(dense.input_shape),
            "dense_macs": dense.dense_macs,
            "planned_macs": at.compact_macs,
            "planned_macs_reduction_x": dense.dense_macs / at.compact_macs,
            "scale_search": trace,
        }
        with scaled(scale):
            trainer.record_hard_prune()  # the dense weights at the small input, before fine-tuning
            steps = int(steps_left_int(trainer) * cfg.finetune_fraction)
            info["finetune_steps"] = 0
            if steps >= 1:
                with trainer.phase("finetune"):
                    report = trainer.fit(steps=steps)
                info.update(finetune_steps=report.steps, finetune_losses=report.epoch_losses)
        return info
