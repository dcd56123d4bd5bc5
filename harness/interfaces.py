"""The three extension points: ``Method``, ``HardwareModel`` and ``Task``.

Each plugin class names a frozen dataclass ``Config``; the suite's settings for
the plugin are parsed into it (unknown keys rejected) before anything runs.
Plugins are registered by entry point (see :mod:`prunebench.registry`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal, Mapping

import torch
from torch import nn

if TYPE_CHECKING:
    from .artifact import CompressedModel
    from .target import Target
    from .trainer import Trainer

__all__ = ["Method", "HardwareModel", "Task", "NoConfig", "DatasetUnavailable", "DependencyUnavailable", "Figure",
           "Headline"]

Figure = float | int | str | None


@dataclass(frozen=True)
class Headline:
    """A figure of a hardware model that the leaderboards show.

    ``role``: ``column`` (a table column; ``primary`` ones also in the
    equal-accuracy table), ``size`` (the Pareto plot's x axis) or
    ``dense_size`` (the dense model's point on that axis).  The report reads
    only these declarations, never a plugin's figure names."""

    key: str
    label: str
    #: "x" (a ratio, shown "12.3×"), "%", or a unit written after the value
    unit: str
    better: Literal["higher", "lower"]
    #: the shown value is ``figure * scale`` (a fraction shown in percent: 100)
    scale: float = 1.0
    primary: bool = False
    role: Literal["column", "size", "dense_size"] = "column"
    #: column position among all plugins' headlines (lower first)
    rank: int = 50
    #: what the figure is, for the page's legend
    note: str = ""


@dataclass(frozen=True)
class NoConfig:
    """For plugins without settings."""


class DatasetUnavailable(RuntimeError):
    """Data a task needs is not on disk.  Suite items are skipped, not failed.

    ``looked_in`` lists the places searched; ``how_to_get`` tells the user
    the command or download that provides the data.
    """

    def __init__(self, dataset: str, looked_in: list[str], how_to_get: str):
        self.dataset = dataset
        self.looked_in = list(looked_in)
        self.how_to_get = how_to_get
        where = "; ".join(self.looked_in) or "nowhere"
        super().__init__(f"dataset {dataset!r} not found (looked in: {where}). To get it: {how_to_get}")


class DependencyUnavailable(RuntimeError):
    """An optional package a task needs is missing or incomplete (e.g. mmcv
    without its compiled ops).  Suite items are skipped, not failed."""

    def __init__(self, package: str, problem: str, how_to_get: str):
        self.package = package
        self.problem = problem
        self.how_to_get = how_to_get
        super().__init__(f"{package}: {problem}. To get it: {how_to_get}")


class _Plugin(abc.ABC):
    Config: ClassVar[type] = NoConfig
    #: Bump when the plugin's behaviour changes; it is recorded with each result.
    version: ClassVar[str] = "0"

    def __init__(self, config: Any = None):
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__name__}, got {type(self.config).__name__}")


class Method(_Plugin):
    """A compression method: prunes and/or quantizes a model toward a Target.

    ``compress`` mutates ``model`` in place: pruned weights are exactly zero on
    return.  It calls ``trainer.fit(...)`` for any SGD work, which counts the
    epochs it spends against the suite's budget.  It may return a mapping of
    extra figures (residuals, search traces) to record with the result.

    The harness never trusts a method: after ``compress`` it checks sparsity,
    structure and quantization levels itself, on a freshly built model that
    holds only ``model.state_dict()`` (hooks, extra modules, parameters or
    buffers are refused).  It counts the training samples the model sees
    itself: training outside ``trainer.fit`` or beyond the budget is refused.
    Layers outside ``target.layers`` may gain no zeros, and without training
    nothing but the target layers' weights may change.  A method that patches
    the harness, torch or the task is refused (the patch is undone).
    """

    #: Structure kinds (see ``Structure.kind``) the method can produce.
    structures: ClassVar[tuple[str, ...]] = ("unstructured",)
    #: True when the method quantizes to ``target.quantization`` itself;
    #: otherwise the suite's standard quantizer runs after it.  A method may
    #: make this a property of its config (e.g. prune-only or joint).
    quantizes: bool = False
    #: Quantization schemes the method produces when it quantizes itself.
    quantization_schemes: ClassVar[tuple[str, ...]] = ("uniform",)

    @abc.abstractmethod
    def compress(self, model: nn.Module, target: "Target", trainer: "Trainer") -> Mapping[str, Any] | None:
        """Compress ``model`` to ``target`` on ``target.layers``."""


class HardwareModel(_Plugin):
    """Scores a CompressedModel: returns named figures, each with its unit in
    its name (``storage_bits``, ``latency_ms``).  ``None`` means not modelled.

    Analytical models use the artifact alone.  A measured model (latency) also
    gets the compressed torch ``model`` and an ``example_input`` batch when the
    harness has them; it must return None figures when they are absent.
    """

    #: the figures the leaderboards show (see :class:`Headline`)
    headline: ClassVar[tuple[Headline, ...]] = ()

    @abc.abstractmethod
    def score(
        self,
        artifact: "CompressedModel",
        *,
        model: nn.Module | None = None,
        example_input: torch.Tensor | None = None,
    ) -> dict[str, Figure]:
        """Figures for ``artifact``."""


class Task(_Plugin):
    """Builds model and data, defines the loss and the evaluation.

    The harness constructs a task with its parsed config and the run's
    ``data_root`` and ``device``, calls ``prepare()`` (which raises
    DatasetUnavailable when data is missing), then uses the rest.
    """

    #: The metric protocols compare, e.g. "top1"; higher is better.
    primary_metric: ClassVar[str] = "top1"

    def __init__(self, config: Any = None, *, data_root: str | None = None, device: str = "cpu"):
        super().__init__(config)
        self.data_root = data_root
        self.device = torch.device(device)

    @abc.abstractmethod
    def prepare(self) -> None:
        """Load or locate the data; raise DatasetUnavailable if it is absent."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the caller seeds torch)."""

    @abc.abstractmethod
    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        """One epoch of training batches, on ``self.device``, shuffled by ``generator``."""

    @abc.abstractmethod
    def steps_per_epoch(self) -> int:
        """How many batches ``train_batches`` yields."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Training loss of ``model`` on ``batch``."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Metrics on the evaluation split; must include ``primary_metric``."""

    @abc.abstractmethod
    def example_input(self) -> torch.Tensor:
        """A batch of one real-shaped input, for shape tracing and MACs."""

    def load_dense_checkpoint(self, model: nn.Module, path: str) -> None:
        """Load pretrained weights the suite names (safe loading only)."""
        from .checkpoint import load_state_dict

        model.load_state_dict(load_state_dict(path))

    def compressible_layers(self, model: nn.Module) -> list[str]:
        """Default: every Conv2d and Linear layer, in module order."""
        return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def describe(self) -> dict[str, str]:
        """Short labels for results and leaderboards, e.g. model and dataset."""
        return {}

    def data_fingerprint(self) -> dict[str, Any]:
        """What identifies the data for the dense-baseline cache key."""
        return {}
