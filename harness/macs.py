"""MACs targets: the harness's own count of a compute reduction, and the input
scale a method may declare.

A target with ``rate_of: macs`` asks for ``rate`` = dense MACs / compressed
MACs, per sample (:class:`prunebench.target.Target`).  The harness counts
both itself (:func:`prunebench.hardware.compute.count_macs`, every call of
every Conv2d / Linear summed):

- dense MACs: every weight of the model, at the task's example input as the
  suite configures it (the resolution the dense model is evaluated at);
- compressed MACs: the effective model (dependency-dead units removed,
  :mod:`prunebench.dependency`), all-zero rows and columns of each layer
  dropped, at the input the compressed model is evaluated at.

A method may shrink the input instead of the weights (the input-scaling
baseline of Light-Weight RetinaNet, arXiv 1905.10011): it says so with
``input_scale`` in the info it returns, the factor applied to each side of
the task's input size (1.0: unchanged).  The harness never takes the
method's word for the MACs: it checks the value (a number in (0, 1]), runs
the task at that scale (the task must offer ``input_scaled(scale)``, a
context manager; a task without it refuses any scale but 1), re-counts the
MACs on the example input made at that scale, and evaluates the model
there.  Accuracy is then the accuracy at the resolution whose MACs were
counted.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

from .verify import VerificationError

__all__ = ["INPUT_SCALE_KEY", "declared_input_scale", "at_input_scale", "verify_macs", "example_macs", "rates_of"]

#: the key of a method's info that declares its input scale
INPUT_SCALE_KEY = "input_scale"


def rates_of(method_cls: Any) -> tuple[str, ...]:
    """What a method's targets may be of: its ``rates_of`` declaration (``weights``
    and/or ``macs``, see :data:`prunebench.target.RATES_OF`); ``("weights",)`` for
    a method that declares nothing, which reads every rate as a weight budget."""
    declared = getattr(method_cls, "rates_of", None)
    return tuple(declared) if declared else ("weights",)


def declared_input_scale(info: Any, method: str = "the method") -> float:
    """The side-length scale a method's info declares; 1.0 when it declares none.

    Anything but a finite number in (0, 1] is refused (a larger input is not a
    compression, and a string or NaN is no scale)."""
    if not isinstance(info, Mapping) or info.get(INPUT_SCALE_KEY) is None:
        return 1.0
    value = info[INPUT_SCALE_KEY]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 1:
        raise VerificationError(f"{method} declared {INPUT_SCALE_KEY} {value!r}; expected a number in (0, 1] "
                                f"(the factor on each side of the task's input)")
    return float(value)


@contextlib.contextmanager
def at_input_scale(task: Any, scale: float, method: str = "the method") -> Iterator[None]:
    """Inside the block the task reads, trains and evaluates at ``scale`` times
    its input size (``task.input_scaled``).  Scale 1 is the suite's size even
    inside another scale's block (the dense count); a task that cannot scale
    needs nothing for it."""
    scaled = getattr(task, "input_scaled", None)
    if callable(scaled):
        with scaled(scale):
            yield
        return
    if scale != 1.0:
        raise VerificationError(f"{method} declared {INPUT_SCALE_KEY} {scale:g}, but the {type(task).__name__} "
                                f"task cannot run at another input size (it has no input_scaled)")
    yield


def example_macs(model, task: Any, scale: float = 1.0, method: str = "the method"):
    """:class:`~prunebench.hardware.compute.MacsCount` of ``model`` on the task's
    example input made at ``scale``."""
    from .hardware.compute import count_macs

    with at_input_scale(task, scale, method):
        return count_macs(model, task.example_input())


def verify_macs(model, task: Any, rate: float, *, input_scale: float = 1.0, method: str = "the method") -> dict:
    """Check that ``model`` (the effective model) runs at most dense / ``rate``
    MACs per sample at ``input_scale``; the record's ``macs`` fields, or
    VerificationError with target and achieved."""
    full = example_macs(model, task, 1.0, method)  # the suite's input, whatever block this runs in
    mine = example_macs(model, task, input_scale, method) if input_scale != 1.0 else full
    dense, left = full.dense_macs, mine.compact_macs
    reduction = dense / left if left else math.inf
    record = {
        "dense_macs": dense,
        "compressed_macs": left,
        "macs_reduction_x": reduction,
        "input_scale": input_scale,
        "dense_input_shape": list(full.input_shape),
        "input_shape": list(mine.input_shape),
    }
    allowed = math.floor(dense / rate + 1e-9)
    if left > allowed:
        at = f" at input {'x'.join(map(str, mine.input_shape))}" if mine.input_shape else ""
        raise VerificationError(
            f"{method} missed its target ({rate:g}x MACs): the dense model runs {dense} MACs per sample, "
            f"so {rate:g}x allows {allowed}; the compressed model runs {left}{at} (achieved {reduction:.3g}x)"
        )
    return record
