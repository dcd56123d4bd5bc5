"""Classification of event-camera recordings (N-MNIST) with spiking models.

The ``events`` task is the classification task on event data: the loader
(:mod:`.events`) bins each recording into ``time_bins`` binary spike frames
stacked as channels, [N, time_bins * 2, 34, 34], and a spiking model built
with ``encoding: events`` and ``time_steps`` equal to ``time_bins`` (set
here, so a suite names it once) unstacks them.  Training, evaluation and
metrics are the classification task's.  A suite item whose data is absent is
skipped, naming the folders searched (``<data_root>/NMNIST/{Train,Test}``,
``data.path``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...config import PositiveInt, Validated
from ..common import LIMIT_SEED, candidate_dirs, limit_indices
from .events import load_nmnist
from .task import ClassificationTask

__all__ = ["EventClassificationConfig", "EventClassificationTask", "EventDataSpec"]

#: bump when the binning changes (part of the dense cache key)
EVENTS_VERSION = "1"


@dataclass(frozen=True)
class EventDataSpec(Validated):
    name: Literal["nmnist"] = "nmnist"
    #: folder holding NMNIST/ (or Train/ and Test/); relative paths are tried under data_root first
    path: str | None = None
    time_bins: PositiveInt = 4
    limit_train: PositiveInt | None = None
    limit_test: PositiveInt | None = None


@dataclass(frozen=True)
class EventClassificationConfig(Validated):
    model: str
    data: EventDataSpec = field(default_factory=EventDataSpec)
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt = 1000
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


class EventClassificationTask(ClassificationTask):
    Config = EventClassificationConfig
    version = "1"

    def prepare(self) -> None:
        spec = self.config.data
        roots = candidate_dirs(spec.path, self.data_root) if spec.path else (
            [self.data_root] if self.data_root else [])
        self.train = self._limited(load_nmnist("train", roots, spec.time_bins), spec.limit_train)
        self.test = self._limited(load_nmnist("test", roots, spec.time_bins), spec.limit_test)
        self.num_classes = self.train.classes
        self.input_shape = tuple(self.test.x[0].shape)
        self._mean = self._std = None
        self._train_x, self._train_y = self.train.x.to(self.device), self.train.y.to(self.device)
        self._test_x, self._test_y = self.test.x.to(self.device), self.test.y.to(self.device)

    @staticmethod
    def _limited(split, limit):
        keep = limit_indices(len(split), limit)
        if keep is None:
            return split
        return type(split)(split.x[keep], split.y[keep], split.classes)

    def build_model(self):
        kwargs = {"encoding": "events", "time_steps": self.config.data.time_bins, **dict(self.config.model_kwargs)}
        from .models import create_model

        model = create_model(self.config.model, num_classes=self.num_classes, in_chans=self.input_shape[0], **kwargs)
        return model.to(self.device)

    def data_fingerprint(self) -> dict[str, Any]:
        spec = self.config.data
        fp = {"events_version": EVENTS_VERSION, "name": spec.name, "path": spec.path, "time_bins": spec.time_bins,
              "limit_train": spec.limit_train, "limit_test": spec.limit_test}
        if spec.limit_train is not None or spec.limit_test is not None:
            fp["limit_seed"] = LIMIT_SEED
        return fp

    def describe(self) -> dict[str, str]:
        return {"model": self.config.model, "dataset": self.config.data.name}
