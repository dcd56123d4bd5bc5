"""The run record: one typed record per run point, stored as one JSON object.

``RunRecord`` is what the runner writes, the results store keeps, and the
pytest plugin, tracking and the leaderboards read.  ``from_json`` is the one
place older schemas are migrated (:data:`MIGRATIONS`), so every committed
record reads back as the current schema; ``to_json`` writes the current one.
Keys a schema does not know are kept in ``extra`` and written back unchanged,
so a record from a newer minor addition survives a read-write round trip.

Schema history:

1. the first stored form;
2. ``torch_threads``: the torch thread count inside the run point (results
   depend on it); ``None`` for schema-1 records, which did not record it.
   ``point_key``: the hash of the point's identity (:func:`point_identity`),
   which names the record's file in the results store.
   Later additions within schema 2 (absent from records written before them):
   ``start`` (``dense`` or ``scratch``: what the method's model started from;
   absent: dense, the only start there was), ``epochs_from_init``,
   ``method_wall_time_s``, ``dense_train_time_s`` and ``end_to_end_time_s``;
   ``macs`` (the harness's MACs count under a MACs target) and ``target.rate_of``
   (``macs``; absent: weights, the only quantity there was).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

__all__ = ["RunRecord", "MethodRef", "SearchSummary", "SCHEMA_VERSION", "MIGRATIONS", "RecordError", "STATUSES",
           "point_identity", "key_of_identity", "migrate"]

SCHEMA_VERSION = 2
STATUSES = ("passed", "failed", "error")


class RecordError(ValueError):
    """A stored record that cannot be read as a RunRecord (the message names the key)."""


@dataclass
class MethodRef:
    """Which method ran: its plugin name and version, where it came from, its settings."""

    name: str
    version: str | None = None
    distribution: str | None = None
    distribution_version: str | None = None
    config: dict = field(default_factory=dict)


@dataclass
class SearchSummary:
    """How an equal-accuracy search went: its range, the rate found, every probe."""

    lo: float
    hi: float
    steps: int
    tolerance: float
    runs: int
    #: the largest rate within tolerance; None: none in [lo, hi]
    rate_found: float | None
    #: one entry per probe: {"rate": r, <metric>: value, "within": bool}
    trace: list = field(default_factory=list)


@dataclass
class RunRecord:
    """One run point's outcome, whatever it was (passed, failed or error)."""

    suite: str
    suite_version: int
    protocol: str
    point_id: str
    method: MethodRef
    structure: str
    seed: int
    primary_metric: str
    status: str = "error"
    schema: int = SCHEMA_VERSION
    suite_file: str | None = None
    smoke: bool = False
    reference: str | None = None
    task: str | None = None
    model: str | None = None
    dataset: str | None = None
    budget_epochs: float | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    versions: dict = field(default_factory=dict)
    device: str | None = None
    torch_threads: int | None = None
    #: hash of the point's identity; names the record's file in the store
    point_key: str | None = None
    # the dense baseline
    dense_metrics: dict | None = None
    dense_source: str | None = None
    dense_key: str | None = None
    # the compressed model
    target: dict | None = None
    metrics: dict | None = None
    metrics_before_quantization: dict | None = None
    achieved_rate: float | None = None
    nonzero_weights: int | None = None
    total_weights: int | None = None
    levels_per_layer: dict | None = None
    hardware: dict | None = None
    hardware_versions: dict | None = None
    epochs_spent: float | None = None
    #: training samples the model saw while the method ran, counted by the harness
    #: (not by the trainer a method holds); None in records written before it was counted
    train_samples_seen: int | None = None
    epochs_spent_total: float | None = None
    method_info: Any = None
    search: SearchSummary | None = None
    accuracy_drop: float | None = None
    failure: str | None = None
    wall_time_s: float | None = None
    created: str | None = None
    #: where the test data and the dense model come from (the task's describe());
    #: None for tasks that do not say and for records written before it existed
    provenance: dict | None = None
    #: every Conv/Linear of the model (excluded layers too), dependency-aware
    #: (prunebench.dependency): total, nonzero and effective nonzero weights, rates
    whole_model: dict | None = None
    #: metrics of the model as the method left it, where removing the units its
    #: structure kills (the effective model, whose metrics are ``metrics``) changed it
    metrics_nominal: dict | None = None
    #: metrics on the task's validation split (carved from training data), where it has one
    validation_metrics: dict | None = None
    #: epochs the dense model trained (the suite's convergence rule may stop it early)
    dense_epochs_trained: float | None = None
    #: optimizer steps per phase of the method (sums to steps_spent), and the metrics
    #: at its checkpoints (``hard_prune``: right after the projection, before fine-tuning)
    phases: dict | None = None
    checkpoints: dict | None = None
    #: the method the suite names for paired comparisons on its pages (None: no reference)
    reference_method: str | None = None
    #: optimizer steps the budget allows and the run took (the budget is counted in steps)
    budget_steps: int | None = None
    steps_spent: int | None = None
    #: what the method's model started from: ``dense`` (the cached dense model: prune after
    #: training) or ``scratch`` (a fresh initialisation seeded with the point's seed); the
    #: dense metrics and accuracy_drop are against the dense model either way
    start: str | None = None
    #: epochs of training the compressed model had since its random initialisation:
    #: dense_epochs_trained + epochs_spent from a dense start, epochs_spent from scratch
    #: (None: a dense model loaded from a checkpoint, whose epochs are unknown)
    epochs_from_init: float | None = None
    #: wall time of the method alone (its training and pruning, from the model handed over
    #: to its return), for the run whose model is recorded
    method_wall_time_s: float | None = None
    #: wall time the dense model took to train when it was made (cached with it; None:
    #: loaded from a checkpoint, or cached before the time was kept)
    dense_train_time_s: float | None = None
    #: method_wall_time_s, plus dense_train_time_s from a dense start: the time from a random
    #: initialisation to the compressed model (None where a part is unknown)
    end_to_end_time_s: float | None = None
    #: MACs per sample counted by the harness where the target's rate is of MACs or the
    #: method declared an input scale (prunebench.macs): dense_macs, compressed_macs,
    #: macs_reduction_x, input_scale, dense_input_shape, input_shape; None: not counted
    macs: dict | None = None
    #: None: the method ran in this run.  Else the method's output was a kept model
    #: (``--models reuse``), scored by this run: the run that trained it (git_commit,
    #: git_dirty, created); method_wall_time_s and the counts are that run's
    method_output_from: dict | None = None
    #: keys this schema does not know, kept as read
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise RecordError(f"status: expected one of {', '.join(STATUSES)}, got {self.status!r}")

    # -- reading and writing --------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON data, the stored form (``extra`` keys at the top level)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if isinstance(value, (MethodRef, SearchSummary)):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            out[f.name] = value
        if self.epochs_spent_total is None:
            del out["epochs_spent_total"]  # only searches spend over several probes
        if self.train_samples_seen is None:
            del out["train_samples_seen"]  # not counted before; older records stay byte-identical
        for name in ("reference_method", "budget_steps", "steps_spent", "whole_model", "metrics_nominal",
                     "validation_metrics", "dense_epochs_trained",
                     "phases", "checkpoints", "start", "epochs_from_init", "method_wall_time_s",
                     "dense_train_time_s", "end_to_end_time_s", "macs", "method_output_from"):
            if out[name] is None:
                del out[name]  # newer fields: older records stay byte-identical
        if self.provenance is None:
            del out["provenance"]  # likewise: records without it stay byte-identical
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_json(self) -> str:
        """One line of canonical JSON (no machine paths: see results.dumps_record)."""
        from .results import dumps_record

        return dumps_record(self.to_dict())

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> "RunRecord":
        """Read a stored record of any schema, migrating it to the current one."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as err:
                raise RecordError(f"not JSON: {err}") from None
        if not isinstance(data, Mapping):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        plain = migrate(dict(data))
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in plain.items() if k in known}
        missing = [f.name for f in fields(cls) if f.name in _REQUIRED and f.name not in kwargs]
        if missing:
            raise RecordError(f"{missing[0]}: missing required key")
        method = kwargs["method"]
        if isinstance(method, str):  # the oldest records named the method only
            method = {"name": method}
        if not isinstance(method, Mapping) or "name" not in method:
            raise RecordError(f"method: expected an object with a name, got {method!r}")
        kwargs["method"] = MethodRef(**{k: v for k, v in method.items() if k in _METHOD_KEYS})
        search = kwargs.get("search")
        if search is not None:
            if not isinstance(search, Mapping):
                raise RecordError(f"search: expected an object or null, got {search!r}")
            try:
                kwargs["search"] = SearchSummary(**search)
            except TypeError as err:
                raise RecordError(f"search: {err}") from None
        kwargs["extra"] = {k: v for k, v in plain.items() if k not in known}
        return cls(**kwargs)

    # -- building -------------------------------------------------------------

    def update(self, values: Mapping[str, Any]) -> None:
        """Set fields from a mapping; an unknown key is an error, not a silent extra."""
        names = {f.name for f in fields(self)} - {"extra", "schema"}
        for key, value in values.items():
            if key not in names:
                raise AttributeError(f"RunRecord has no field {key!r}")
            setattr(self, key, value)

    @property
    def primary_value(self) -> float | None:
        """The primary metric of the compressed model, if it was evaluated."""
        return (self.metrics or {}).get(self.primary_metric)

    @property
    def dense_value(self) -> float | None:
        return (self.dense_metrics or {}).get(self.primary_metric)


_REQUIRED = ("suite", "suite_version", "protocol", "point_id", "method", "structure", "seed", "primary_metric")
_METHOD_KEYS = {f.name for f in fields(MethodRef)}


def point_identity(
    *, suite: str, suite_version: int, smoke: bool, protocol: str, method: Mapping, structure: str, seed: int,
    budget_epochs: float | None, quantization: Any, rate: float | None, search: Mapping | None, dense_key: str | None,
    start: str | None = None, rate_of: str | None = None,
) -> dict:
    """What makes two runs the same run point: the suite and its version, the
    method with its version and settings, structure, rate (or the search's
    range and tolerance), training budget, seed, quantization, the dense
    model (``dense_key`` hashes the task config, data, dense recipe and seed),
    and where the method's model starts (``start``; a dense start, the only one
    there was before, is left out so those points keep their keys), and what the
    rate is of (``rate_of``; weights, the only one before MACs targets, left out)."""
    out = {
        "suite": suite, "suite_version": suite_version, "smoke": bool(smoke), "protocol": protocol,
        "method": {k: method.get(k) for k in ("name", "version", "config")},
        "structure": structure, "seed": seed, "budget_epochs": budget_epochs, "quantization": quantization,
        "rate": rate, "search": None if search is None else {k: search.get(k) for k in ("lo", "hi", "steps", "tolerance")},
        "dense_key": dense_key,
    }
    if start not in (None, "dense"):
        out["start"] = start
    if rate_of not in (None, "weights"):  # a MACs rate is another point; weight-rate keys stay as they were
        out["rate_of"] = rate_of
    return out


def key_of_identity(identity: Mapping) -> str:
    """A short stable hash of :func:`point_identity`'s output (file-name safe)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _identity_of_stored(data: Mapping) -> dict:
    """The identity of a stored record, from what it holds."""
    target = data.get("target") if isinstance(data.get("target"), Mapping) else {}
    method = data.get("method")
    method = {"name": method} if isinstance(method, str) else dict(method or {})
    ea = data.get("protocol") == "equal_accuracy"
    return point_identity(
        suite=data.get("suite"), suite_version=data.get("suite_version"), smoke=data.get("smoke", False),
        protocol=data.get("protocol"), method=method, structure=data.get("structure"), seed=data.get("seed"),
        budget_epochs=data.get("budget_epochs"), quantization=target.get("quantization"),
        rate=None if ea else target.get("rate"), search=data.get("search") if ea else None,
        dense_key=data.get("dense_key"), start=data.get("start"), rate_of=target.get("rate_of"),
    )


def _v1_to_v2(data: dict) -> dict:
    data.setdefault("torch_threads", None)  # not recorded before schema 2
    data.setdefault("point_key", key_of_identity(_identity_of_stored(data)))
    return data


#: schema N -> N+1, applied in turn by :func:`migrate`
MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}


def migrate(data: dict) -> dict:
    """``data`` (a stored record) brought to :data:`SCHEMA_VERSION`."""
    schema = data.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise RecordError(f"schema: expected a positive integer, got {schema!r}")
    if schema > SCHEMA_VERSION:
        raise RecordError(
            f"schema: {schema} was written by a newer prunebench (this one reads up to {SCHEMA_VERSION}); upgrade it"
        )
    while schema < SCHEMA_VERSION:
        data = MIGRATIONS[schema](data)
        schema += 1
        data["schema"] = schema
    return data
