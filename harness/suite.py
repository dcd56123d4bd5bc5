"""Suite files: schema, loading, validation and the run points they expand to.

A suite is one YAML file per (task, model, dataset).  It is read with a
subclass of yaml's SafeLoader that refuses duplicate keys (nothing else
changes: no tags are executed), validated completely before anything runs
(including the settings of every task, method and hardware plugin it names,
and rules across fields: distinct seeds, rates and methods, ``expect.methods``
naming methods of the suite, no NaN anywhere), and errors read
``file: dotted.key: expected X, got Y``.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml

from . import registry
from .config import (
    Between,
    ConfigError,
    Ge,
    MinLen,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Satisfies,
    Validated,
    parse,
    to_plain,
)
from .protocols.base import Protocol, RunPoint, ordered
from .registry import PluginError
from .results import sanitize_name
from .target import DEFAULT_LAYER_FLOOR, LayerFloor, Quantization
from .trainer import OptimizerConfig

__all__ = [
    "SuiteError",
    "Suite",
    "RunPoint",
    "load_suite",
]


class SuiteError(ValueError):
    """A suite file is malformed; the message starts with ``file: dotted.key:``."""


#: seeds every consumer takes (torch generators, numpy's default_rng and legacy seeding)
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Between(0, MAX_SEED)]
#: a suite name is a directory of the results store and part of page file names
MAX_NAME = 100
#: where a point's model starts: the suite's cached dense model (prune after training) or a
#: fresh initialisation seeded with the point's seed (training from scratch inside the budget)
Start = Literal["dense", "scratch"]
STARTS: tuple[str, ...] = ("dense", "scratch")


def _usable_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_NAME and sanitize_name(name) == name


SuiteName = Annotated[str, Satisfies(
    _usable_name, f"a name of 1 to {MAX_NAME} characters from A-Z a-z 0-9 . _ - not starting with '.'")]


def _checkpoint_problem(path: str) -> str | None:
    """What is wrong with a checkpoint file that exists (None: it looks like
    weights, or it is no file here: a name the task knows, or data to come)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with p.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"a readable file, got {path!r} ({err.strerror or err})"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save: zip, or a legacy pickle
        return None
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte header size, then JSON
        return None
    kind = "an empty file" if not head else "a file that is neither safetensors nor torch.save"
    return f"a safetensors or torch.save weights file, got {kind} {path!r}"


@dataclass(frozen=True)
class ConvergeSpec(Validated):
    """When dense training has converged: no improvement of more than
    ``min_delta`` for ``patience`` epochs in a row (``epochs`` stays the cap)."""

    #: ``train_loss`` (the epoch's mean training loss, lower is better) or
    #: ``validation`` (the primary metric on the task's validation split, in points);
    #: not called ``on``, which YAML 1.1 reads as the boolean true
    monitor: Literal["train_loss", "validation"] = "train_loss"
    patience: Annotated[int, Ge(1)] = 2
    min_delta: NonNegativeFloat = 0.01


@dataclass(frozen=True)
class ResourcesSpec(Validated):
    """What one point's job asks a cluster for under --executor slurm / submitit
    (command-line options win where given)."""

    partition: Annotated[str, MinLen(1)] | None = None
    time_min: PositiveInt | None = None
    cpus_per_point: PositiveInt | None = None
    gpus_per_point: Annotated[int, Ge(0)] | None = None
    #: jobs of the array running at once (submitit: processes at once)
    array_parallelism: PositiveInt | None = None


@dataclass(frozen=True)
class DenseSpec:
    """How the dense baseline is made: trained with this recipe, or loaded."""

    #: epochs to train, or the cap when ``converge`` is set
    epochs: PositiveFloat = 10.0
    optimizer: OptimizerConfig = OptimizerConfig()
    #: pretrained weights to load instead of training (path, or a name the task knows)
    checkpoint: Annotated[str, MinLen(1)] | None = None
    #: train until converged (the rule is part of the dense cache key)
    converge: ConvergeSpec | None = None


@dataclass(frozen=True)
class BudgetSpec(Validated):
    """Training a method may spend per run (epochs of the task's train split)."""

    epochs: NonNegativeFloat = 1.0
    optimizer: OptimizerConfig = OptimizerConfig(lr=0.005, schedule="cosine")


@dataclass(frozen=True)
class LayerSpec:
    """Which Conv2d/Linear layers are compressible, by glob on module names."""

    include: Annotated[tuple[str, ...], MinLen(1)] = ("*",)
    exclude: tuple[str, ...] = ()
    #: also left dense for structured targets (e.g. the classifier, whose rows are classes)
    exclude_structured: tuple[str, ...] = ()
    #: every allocation keeps max(1, floor x groups) groups per layer (Target.layer_floor; null: no floor)
    floor: LayerFloor | None = DEFAULT_LAYER_FLOOR
    #: let verification accept a layer left with no live output (Target.allow_collapsed)
    allow_collapsed: bool = False

    def select(self, candidates: list[str], structured: bool) -> list[str]:
        def hit(name: str, globs) -> bool:
            return any(fnmatch.fnmatchcase(name, g) for g in globs)

        excluded = self.exclude + (self.exclude_structured if structured else ())
        return [n for n in candidates if hit(n, self.include) and not hit(n, excluded)]


@dataclass(frozen=True)
class Suite:
    suite: SuiteName
    version: PositiveInt
    task: Mapping[str, Any]
    #: protocol name -> its settings (parsed into the protocol's Spec by load_suite)
    protocols: Mapping[str, Any]
    reference: str = ""
    description: str = ""
    dense: DenseSpec = DenseSpec()
    budget: BudgetSpec = BudgetSpec()
    seeds: Annotated[tuple[Seed, ...], MinLen(1)] = (0,)
    #: a budget ladder: every point runs once per budget (epochs), with budget.optimizer;
    #: the budget is then part of the point's id and of every table
    budgets: tuple[NonNegativeFloat, ...] | None = None
    #: where each point's model starts, start -> the methods run from it (None: all).
    #: ``dense``: the cached dense model (prune after training); ``scratch``: a fresh
    #: initialisation seeded with the point's seed (the same draw the dense model started
    #: from), so the budget covers all training; accuracy drops stay against the dense
    #: model.  The file may give one start (``start: scratch``), a list (every point once
    #: per start) or this mapping; scratch points carry ``-scratch`` in their id.
    start: Mapping[Start, Annotated[tuple[str, ...], MinLen(1)] | None] = field(
        default_factory=lambda: {"dense": None})
    quantization: Quantization | None = None
    layers: LayerSpec = LayerSpec()
    hardware: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"storage": {}, "compute": {}})
    #: methods run when no --method is given, with their settings
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"magnitude": {}, "random": {}})
    #: cluster resources per point (partition, time, CPUs, GPUs, array parallelism)
    resources: ResourcesSpec | None = None
    #: the method others are compared with on the pages, run by run (same seed, same
    #: dense model): paired differences with their CI; None: no paired column
    reference_method: str | None = None
    #: overrides merged into this suite under --smoke
    smoke: Mapping[str, Any] | None = None

    # set by load_suite, never by the file
    path: str = field(default="", metadata={"internal": True})
    smoke_mode: bool = field(default=False, metadata={"internal": True})

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
        points = []
        for method in methods:
            for protocol in protocols:
                rungs = (getattr(protocol.spec, "budgets", None) or self.budgets) if self.budgets else None
                for point in protocol.points(method, seeds):
                    points += [replace(point, budget=float(b)) for b in rungs] if rungs else [point]
        return [replace(point, start=start) for point in points for start in self.start
                if self.start[start] is None or point.method in self.start[start]]

    def budget_epochs(self, point: RunPoint) -> float:
        """The training budget of ``point``: its rung of the ladder, or the suite's budget."""
        return self.budget.epochs if point.budget is None else point.budget

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


def _normalise_named(value: Any, key: str) -> Any:
    """A list of plugin names is shorthand for a mapping of name -> {};
    a name listed twice would be dropped silently, so it is refused."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for i, v in enumerate(value):
            if v in value[:i]:
                raise ConfigError(f"{key}[{i}]", f"expected each name once, got {v!r} twice")
        return {v: {} for v in value}
    return value


def _normalise_start(value: Any) -> Any:
    """``start: scratch`` and ``start: [dense, scratch]`` are shorthand for the
    mapping start -> None (every method from each); a bad name is echoed here,
    where the file has it (a mapping's keys are checked by its type)."""
    if value is None:
        return {"dense": None}
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        return value  # a mapping (or a wrong type, which parse names)
    expected = ", ".join(repr(s) for s in STARTS)
    for i, name in enumerate(names):
        key = "start" if isinstance(value, str) else f"start[{i}]"
        if not isinstance(name, str) or name not in STARTS:
            raise ConfigError(key, f"expected one of {expected}, got {name!r}")
        if name in names[:i]:
            raise ConfigError(key, f"expected distinct starts, got {name!r} twice")
    if not names:
        raise ConfigError("start", f"expected at least one of {expected}, got an empty list")
    return {name: None for name in names}


def _find_nan(value: Any, key: str) -> str | None:
    """The dotted key of a NaN anywhere in plain data (None: none)."""
    if isinstance(value, float) and math.isnan(value):
        return key
    if isinstance(value, Mapping):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, v in items:
        found = _find_nan(v, sub)
        if found is not None:
            return found
    return None


def _check_distinct(values, key: str, what: str, show=repr) -> None:
    """Refuse two equal items of a list: they would make one run point twice."""
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ConfigError(f"{key}[{i}]", f"expected distinct {what}, got {show(v)} twice")


def _parse_suite(data: Any, file: str) -> Suite:
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError("", f"expected a mapping at the top of the suite, got {got}")
    data = dict(data)
    if "start" in data:
        data["start"] = _normalise_start(data["start"])
    for key in ("hardware", "methods"):
        if key in data:
            data[key] = _normalise_named(data[key], key)
            if data[key] is None:
                data[key] = {}
    task = data.get("task")
    if not isinstance(task, Mapping) or not isinstance(task.get("name"), str):
        raise ConfigError("task.name", f"expected a task name string, got {_got(task)}")
    suite = parse(Suite, data)
    suite = replace(suite, protocols=_parse_protocols(suite.protocols))
    _check_distinct(list(suite.budgets or ()), "budgets", "budgets", show="{:g}".format)
    for name, spec in suite.protocols.items():  # a protocol may run some rungs of the ladder only
        rungs = getattr(spec, "budgets", None)
        if rungs is None:
            continue
        if not suite.budgets:
            raise ConfigError(f"protocols.{name}.budgets", f"expected no budgets without a suite ladder "
                                                           f"(top-level budgets:), got {list(rungs)}")
        for i, b in enumerate(rungs):
            if b not in suite.budgets:
                raise ConfigError(f"protocols.{name}.budgets[{i}]", f"expected one of the suite's budgets "
                                                                    f"{list(suite.budgets)}, got {b:g}")
        _check_distinct(list(rungs), f"protocols.{name}.budgets", "budgets", show="{:g}".format)
    # every plugin named must exist and accept its settings
    _check_plugin("task.name", lambda: registry.tasks.get(suite.task_name))
    task_config = suite.task_config()
    for name, spec in suite.protocols.items():
        if getattr(spec, "decide_on", "test") == "validation" and not getattr(task_config, "validation_fraction", 0):
            raise ConfigError(f"protocols.{name}.decide_on", "expected a task with a validation split "
                                                             "(task.validation_fraction > 0), got 'validation'")
    for name in suite.methods:
        _check_plugin(f"methods.{name}", lambda n=name: registry.methods.get(n))
        suite.method_config(name)
    if suite.reference_method is not None and suite.reference_method not in suite.methods:
        raise ConfigError("reference_method", f"expected one of the suite's methods ({', '.join(suite.methods)}), "
                                              f"got {suite.reference_method!r}")
    for name in suite.hardware:
        _check_plugin(f"hardware.{name}", lambda n=name: registry.hardware_models.get(n))
        suite.hardware_config(name)
    _check_across(suite)
    # a type that lets anything through (a plugin's Any, a mapping of Any) must not let NaN through
    found = _find_nan({k: v for k, v in data.items() if k != "smoke"}, "")
    if found is not None:
        raise ConfigError(found, "expected a number, got nan (NaN is never a valid setting)")
    return suite


def _check_across(suite: Suite) -> None:
    """Rules relating fields: what would make duplicate run points, or switch
    an expectation off without a word."""
    # two equal seeds make two items with one id and one record
    _check_distinct(suite.seeds, "seeds", "seeds")
    if suite.dense.checkpoint:
        problem = _checkpoint_problem(suite.dense.checkpoint)
        if problem:
            raise ConfigError("dense.checkpoint", f"expected {problem}")
    if not suite.start:
        raise ConfigError("start", f"expected at least one of {', '.join(repr(s) for s in STARTS)}, got none")
    for start, methods in suite.start.items():
        for i, method in enumerate(methods or ()):
            if method not in suite.methods:  # a typo would drop that method's points without a word
                raise ConfigError(f"start.{start}[{i}]", f"expected one of the suite's methods "
                                                         f"({', '.join(suite.methods) or 'none'}), got {method!r}")
            if method in methods[:i]:
                raise ConfigError(f"start.{start}[{i}]", f"expected each method once, got {method!r} twice")
    if all(methods is not None for methods in suite.start.values()):
        unrun = [m for m in suite.methods if not any(m in methods for methods in suite.start.values())]
        if unrun:
            raise ConfigError("start", f"expected every method of the suite under some start, got "
                                       f"{', '.join(unrun)} under none")
    for name, spec in suite.protocols.items():
        # a method that reads every rate as a weight budget would miss a MACs target, and a
        # MACs-only method cannot meet a weight rate: each method must meet the rate's quantity
        quantity = getattr(spec, "rate_of", "weights")
        from .macs import rates_of

        for method in suite.methods:
            meets = rates_of(registry.methods.get(method))
            if quantity not in meets:
                raise ConfigError(f"protocols.{name}.rate_of",
                                  f"expected a quantity every method of the suite meets; got {quantity!r}, "
                                  f"which {method} does not (it meets {', '.join(meets)})")
        methods = getattr(getattr(spec, "expect", None), "methods", None)
        for i, method in enumerate(methods or ()):
            if method not in suite.methods:
                # a typo here would switch the expectation off for the method meant
                raise ConfigError(f"protocols.{name}.expect.methods[{i}]",
                                  f"expected one of the suite's methods ({', '.join(suite.methods) or 'none'}), "
                                  f"got {method!r}")


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


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, name: str, line: int, first: int):
        self.key, self.name, self.line, self.first = key, name, line, first
        super().__init__(key)


class UniqueKeySafeLoader(yaml.SafeLoader):
    """yaml's SafeLoader (still no tags executed) that refuses a key given
    twice in one mapping, where plain YAML keeps the last silently."""

    def construct_document(self, node):
        self._check_unique(node, "", set())
        return super().construct_document(node)

    def _check_unique(self, node, key: str, seen: set) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # <<: keys merged in may be overridden
                    continue
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
                sub = f"{key}.{name}" if key else str(name)
                line = key_node.start_mark.line + 1
                if (key_node.tag, name) in first:
                    raise _DuplicateKey(sub, name, line, first[(key_node.tag, name)])
                first[(key_node.tag, name)] = line
                self._check_unique(value_node, sub, seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, f"{key}[{i}]", seen)


def _read_yaml(path: Path) -> Any:
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SuiteError(f"{file}: cannot read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SuiteError(f"{file}: expected UTF-8 text, got byte 0x{data[err.start]:02x} "
                         f"(line {line}, column {col})") from None
    try:
        return yaml.load(text, Loader=UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise SuiteError(f"{file}: {err.key}: expected each key once in a mapping, got {err.name!r} again "
                         f"(line {err.line}; first at line {err.first})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SuiteError(f"{file}: invalid YAML{where}: {problem}") from None


def load_suite(path: str | Path, *, smoke: bool = False) -> Suite:
    """Read and validate a suite file (and its smoke variant, always)."""
    path = Path(path)
    file = str(path)
    raw = _read_yaml(path)
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
