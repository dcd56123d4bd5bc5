"""Suite files: schema, loading, validation and the run points they expand to.

A suite is one YAML file per (task, model, dataset).  It is read with
``yaml.safe_load`` only, validated completely before anything runs (including
the settings of every task, method and hardware plugin it names), and errors
read ``file: dotted.key: expected X, got Y``.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Mapping

import yaml

from . import registry
from .config import (
    ConfigError,
    MinLen,
    NonNegativeFloat,
    Validated,
    parse,
    to_plain,
)
from .protocols.base import Protocol, RunPoint, ordered
from .registry import PluginError
from .target import Quantization
from .trainer import OptimizerConfig

__all__ = [
    "SuiteError",
    "Suite",
    "RunPoint",
    "load_suite",
]


class SuiteError(ValueError):
    """A suite file is malformed; the message starts with ``file: dotted.key:``."""


@dataclass(frozen=True)
class DenseSpec:
    """How the dense baseline is made: trained with this recipe, or loaded."""

    epochs: float = 10.0
    optimizer: OptimizerConfig = OptimizerConfig()
    #: pretrained weights to load instead of training (path, or a name the task knows)
    checkpoint: str | None = None


@dataclass(frozen=True)
class BudgetSpec(Validated):
    """Training a method may spend per run (epochs of the task's train split)."""

    epochs: NonNegativeFloat = 1.0
    optimizer: OptimizerConfig = OptimizerConfig(lr=0.005, schedule="cosine")


@dataclass(frozen=True)
class LayerSpec:
    """Which Conv2d/Linear layers are compressible, by glob on module names."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    #: also left dense for structured targets (e.g. the classifier, whose rows are classes)
    exclude_structured: tuple[str, ...] = ()

    def select(self, candidates: list[str], structured: bool) -> list[str]:
        def hit(name: str, globs) -> bool:
            return any(fnmatch.fnmatchcase(name, g) for g in globs)

        excluded = self.exclude + (self.exclude_structured if structured else ())
        return [n for n in candidates if hit(n, self.include) and not hit(n, excluded)]


@dataclass(frozen=True)
class Suite:
    suite: str
    version: int
    task: Mapping[str, Any]
    #: protocol name -> its settings (parsed into the protocol's Spec by load_suite)
    protocols: Mapping[str, Any]
    reference: str = ""
    description: str = ""
    dense: DenseSpec = DenseSpec()
    budget: BudgetSpec = BudgetSpec()
    seeds: Annotated[tuple[int, ...], MinLen(1)] = (0,)
    quantization: Quantization | None = None
    layers: LayerSpec = LayerSpec()
    hardware: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"storage": {}, "compute": {}})
    #: methods run when no --method is given, with their settings
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"magnitude": {}, "random": {}})
    #: overrides merged into this suite under --smoke
    smoke: Mapping[str, Any] | None = None

    # set by load_suite
    path: str = ""
    smoke_mode: bool = False

    @property
    def task_name(self) -> str:
        return self.task["name"]

    def task_config(self) -> Any:
        cls = registry.tasks.get(self.task_name)
        return parse(cls.Config, {k: v for k, v in self.task.items() if k != "name"}, "task")

    def method_config(self, name: str) -> Any:
        cls = registry.methods.get(name)
        return parse(cls.Config, dict(self.methods.get(name, {})), f"methods.{name}")

    def hardware_config(self, name: str) -> Any:
        cls = registry.hardware_models.get(name)
        return parse(cls.Config, dict(self.hardware.get(name, {})), f"hardware.{name}")

    def protocol(self, name: str) -> Protocol:
        """The protocol ``name`` with this suite's settings."""
        if name not in self.protocols:
            raise KeyError(f"{self.path or self.suite}: the suite runs no protocol {name!r} "
                           f"(it runs: {', '.join(self.protocols)})")
        return registry.protocols.get(name)(self.protocols[name])

    def points(self, methods: list[str] | None = None, seeds: list[int] | None = None) -> list[RunPoint]:
        methods = list(methods) if methods else list(self.methods)
        seeds = list(seeds) if seeds is not None else list(self.seeds)
        protocols = [self.protocol(name) for name in ordered(self.protocols)]
        return [point for method in methods for protocol in protocols for point in protocol.points(method, seeds)]

    def plain(self) -> dict:
        data = to_plain(self)
        data.pop("path", None)
        return data


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _normalise_named(value: Any) -> Any:
    """A list of plugin names is shorthand for a mapping of name -> {}."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {v: {} for v in value}
    return value


def _parse_suite(data: Any, file: str) -> Suite:
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected a mapping at the top of the suite, got {type(data).__name__}")
    data = dict(data)
    data.pop("path", None)
    data.pop("smoke_mode", None)
    for key in ("hardware", "methods"):
        if key in data:
            data[key] = _normalise_named(data[key])
            if data[key] is None:
                data[key] = {}
    task = data.get("task")
    if not isinstance(task, Mapping) or not isinstance(task.get("name"), str):
        raise ConfigError("task.name", f"expected a task name string, got {_got(task)}")
    suite = parse(Suite, data)
    suite = replace(suite, protocols=_parse_protocols(suite.protocols))
    if suite.quantization is not None and suite.quantization.scheme != "uniform":
        # the standard quantizer, applied to prune-only methods, is uniform
        pass
    # every plugin named must exist and accept its settings
    _check_plugin("task.name", lambda: registry.tasks.get(suite.task_name))
    suite.task_config()
    for name in suite.methods:
        _check_plugin(f"methods.{name}", lambda n=name: registry.methods.get(n))
        suite.method_config(name)
    for name in suite.hardware:
        _check_plugin(f"hardware.{name}", lambda n=name: registry.hardware_models.get(n))
        suite.hardware_config(name)
    return suite


def _parse_protocols(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Each protocol named must be installed; its settings parse into its Spec.
    ``null`` switches a protocol off (a smoke override can drop one)."""
    specs = {}
    for name, settings in raw.items():
        _check_plugin(f"protocols.{name}", lambda n=name: registry.protocols.get(n))
        if settings is not None:
            specs[name] = parse(registry.protocols.get(name).Spec, settings, f"protocols.{name}")
    if not specs:
        raise ConfigError("protocols", f"expected at least one protocol (installed: {', '.join(registry.protocols.names())})")
    return specs


def _got(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _check_plugin(key: str, load) -> None:
    try:
        load()
    except PluginError as err:
        raise ConfigError(key, str(err)) from None


def load_suite(path: str | Path, *, smoke: bool = False) -> Suite:
    """Read and validate a suite file (and its smoke variant, always)."""
    path = Path(path)
    file = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SuiteError(f"{file}: invalid YAML{where}: {problem}") from None
    except OSError as err:
        raise SuiteError(f"{file}: cannot read: {err}") from None
    try:
        suite = _parse_suite(raw, file)
        smoke_suite = None
        if suite.smoke is not None:
            merged = _deep_merge({k: v for k, v in raw.items() if k != "smoke"}, suite.smoke)
            try:
                smoke_suite = _parse_suite(merged, file)
            except ConfigError as err:
                raise ConfigError(f"smoke.{err.key}" if err.key else "smoke", err.message) from None
    except ConfigError as err:
        raise SuiteError(f"{file}: {err}") from None
    chosen = smoke_suite if (smoke and smoke_suite is not None) else suite
    return replace(chosen, path=file, smoke_mode=smoke and smoke_suite is not None)
