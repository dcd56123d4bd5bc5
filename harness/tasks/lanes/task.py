"""Lane detection on TuSimple with a row-anchor (UFLD) model.

Metrics (see ``metric``): ``accuracy`` (percent; the official
Accuracy x 100, the primary metric), ``fp_rate`` and ``fn_rate`` (the
official FP and FN, fractions), ``f1`` (percent, from FP and FN as later
papers report it; not official), ``runtime_ms_per_image``,
``images_over_runtime_limit``, ``eval_images`` and the mean eval ``loss``.

Runtime rule.  The official evaluator zeroes an image whose reported
``run_time`` exceeds 200 ms.  Here an image's run_time is the wall time of
the model's forward pass over its evaluation batch divided by the batch
size (throughput per image, CUDA synchronised; decoding and the metric are
not timed), so it depends on ``eval_batch_size`` and on the machine.  One
untimed forward pass on the first batch comes first, since the first call
pays one-off set-up costs (2-3x a later call here).  The figure is only as
steady as the machine: on 2 CPU cores shared with another busy process a
forward pass of the smoke model went from 0.5 to 20-160 ms per image (torch's
two threads waiting on each other), so the rule can zero images on a loaded
CPU; ``images_over_runtime_limit`` says when it did.
``runtime_limit_ms`` keeps the official 200 ms by default; null switches
the rule off (the early 2017-05 evaluator also ignored run_time).  The
measured figure is always reported, so a zeroed result shows why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator

import numpy as np
import torch
from torch import nn

from ...config import ConfigError, Ge, NonNegativeFloat, NonNegativeInt, OneOf, PositiveFloat, PositiveInt, Validated
from ...interfaces import DatasetUnavailable, Task
from .data import LaneDataSpec, LaneImages, LaneLabel, fingerprint, load_images, load_lane_split
from .models import cells_to_x, create_lane_model, decode_cells, encode_targets, lane_loss, lanes_from_anchors
from .metric import MAX_RUNTIME_MS, REVISIONS, bench_records, f1_from_rates

__all__ = ["LanesTask", "LanesConfig"]

#: splits up to this many bytes of uint8 pixels (at input size) stay in memory
IN_MEMORY_MAX_BYTES = 1 << 30
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_Side = Annotated[int, Ge(16)]
_AtLeast2 = Annotated[int, Ge(2)]


@dataclass(frozen=True)
class LanesConfig(Validated):
    data: LaneDataSpec
    #: a timm model name; its last feature map feeds the row-anchor head
    backbone: str = "resnet18"
    #: (height, width) the frames are resized to (UFLD: 288x800)
    input_size: tuple[_Side, _Side] = (288, 800)
    griding_num: _AtLeast2 = 100
    num_lanes: PositiveInt = 4
    num_row_anchors: _AtLeast2 = 56
    #: (top, bottom) anchor rows in frame pixels, evenly spaced; None: the data's h_samples span
    row_anchor_range: tuple[NonNegativeFloat, NonNegativeFloat] | None = None
    head_hidden: PositiveInt = 2048
    reduce_channels: PositiveInt = 8
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 32
    focal_gamma: NonNegativeFloat = 0.0
    similarity_weight: NonNegativeFloat = 0.0
    #: a decoded slot with fewer points than this is not reported as a lane
    min_lane_points: PositiveInt = 2
    #: the official per-image runtime limit; None switches the rule off
    runtime_limit_ms: PositiveFloat | None = MAX_RUNTIME_MS
    #: which official evaluator revision scores (see .metric)
    metric_revision: Annotated[str, OneOf(REVISIONS)] = "2017-07-17"
    #: RGB
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: DataLoader workers when frames are decoded lazily (the real set)
    num_workers: NonNegativeInt = 0
    #: local weights for the backbone alone (e.g. timm's ImageNet resnet18 saved as .safetensors)
    backbone_checkpoint: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.row_anchor_range is not None:
            top, bottom = self.row_anchor_range
            if not top < bottom:
                raise ConfigError(
                    "row_anchor_range", f"expected [top, bottom] with top < bottom, got {list(self.row_anchor_range)!r}"
                )


class LanesTask(Task):
    Config = LanesConfig
    version = "1"
    primary_metric = "accuracy"

    # ------------------------------------------------------------ data
    def prepare(self) -> None:
        cfg = self.config
        ckpt = cfg.backbone_checkpoint
        if ckpt is not None and not Path(ckpt).is_file():
            raise DatasetUnavailable(
                f"backbone weights {ckpt}", [str(Path(ckpt).resolve())],
                f"save the backbone's weights there, e.g. timm.create_model({cfg.backbone!r}, pretrained=True)"
                ".state_dict() as .safetensors, on a machine with network",
            )
        self.train = load_lane_split(cfg.data, "train", self.data_root)
        self.test = load_lane_split(cfg.data, "test", self.data_root)
        self.anchors = self._anchors(self.train.labels + self.test.labels)
        self._mean = torch.tensor(cfg.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.std, device=self.device).view(1, 3, 1, 1)
        self._train_mem = self._in_memory(self.train.labels)
        self._test_mem = self._in_memory(self.test.labels)

    def _anchors(self, labels: list[LaneLabel]) -> np.ndarray:
        if self.config.row_anchor_range is not None:
            top, bottom = self.config.row_anchor_range
        else:
            rows = [y for label in labels for y in label.h_samples]
            top, bottom = min(rows), max(rows)
        return np.linspace(top, bottom, self.config.num_row_anchors)

    def _encode(self, label: LaneLabel, orig_hw: tuple[int, int]) -> np.ndarray:
        cfg = self.config
        return encode_targets(label.lanes, label.h_samples, int(orig_hw[1]), self.anchors, cfg.griding_num, cfg.num_lanes)

    def _in_memory(self, labels: list[LaneLabel]):
        """(uint8 images, targets, original sizes) on the device, or None when too big."""
        h, w = self.config.input_size
        if not labels or len(labels) * 3 * h * w > IN_MEMORY_MAX_BYTES:
            return None
        images, sizes = load_images(labels, (h, w))
        targets = torch.from_numpy(np.stack([self._encode(l, tuple(s.tolist())) for l, s in zip(labels, sizes)]))
        return images.to(self.device), targets.to(self.device), sizes

    def _norm(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.device, torch.float32) / 255.0 - self._mean) / self._std

    def _loader(self, labels, *, batch_size: int, shuffle: bool, generator=None):
        data = LaneImages(labels, self.config.input_size, self._encode)
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                           num_workers=self.config.num_workers)

    # ----------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        cfg = self.config
        model = create_lane_model(
            cfg.backbone, input_hw=cfg.input_size, griding_num=cfg.griding_num, num_anchors=len(self.anchors),
            num_lanes=cfg.num_lanes, reduce_channels=cfg.reduce_channels, hidden=cfg.head_hidden,
        )
        if cfg.backbone_checkpoint is not None:
            _load_backbone(model.backbone, cfg.backbone_checkpoint)
        return model.to(self.device)

    # -------------------------------------------------------- training
    def steps_per_epoch(self) -> int:
        n = len(self.train)
        if n == 0:
            raise ValueError(f"the {self.config.data.name} train split is empty; this suite cannot train")
        return -(-n // self.config.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        bs = self.config.batch_size
        if self._train_mem is not None:
            images, targets, _ = self._train_mem
            order = torch.randperm(images.shape[0], generator=generator).to(self.device)
            for i in range(0, images.shape[0], bs):
                idx = order[i : i + bs]
                yield self._norm(images[idx]), targets[idx]
        else:
            for images, targets, _, _ in self._loader(self.train.labels, batch_size=bs, shuffle=True, generator=generator):
                yield self._norm(images), targets.to(self.device)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        cfg = self.config
        return lane_loss(model(x), y, focal_gamma=cfg.focal_gamma, similarity_weight=cfg.similarity_weight)

    # ------------------------------------------------------ evaluation
    def _eval_batches(self):
        """(normalised images, targets, original sizes, label indices), in file order."""
        bs = self.config.eval_batch_size
        if self._test_mem is not None:
            images, targets, sizes = self._test_mem
            for i in range(0, images.shape[0], bs):
                yield self._norm(images[i : i + bs]), targets[i : i + bs], sizes[i : i + bs], range(i, min(i + bs, images.shape[0]))
        else:
            for images, targets, sizes, idx in self._loader(self.test.labels, batch_size=bs, shuffle=False):
                yield self._norm(images), targets.to(self.device), sizes, idx.tolist()

    def _timed_forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Logits and the forward wall time in ms (CUDA synchronised)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda *a: None)
        sync(self.device)
        start = time.perf_counter()
        logits = model(x)
        sync(self.device)
        return logits, (time.perf_counter() - start) * 1000.0

    @torch.no_grad()
    def predict_records(self, model: nn.Module) -> tuple[list[dict], float]:
        """TuSimple prediction lines ``{raw_file, lanes, run_time}`` for the
        test split (model in eval mode), and the summed eval loss."""
        was_training = model.training
        model.eval()
        try:
            return self._predict(model)
        finally:
            model.train(was_training)

    def _predict(self, model: nn.Module) -> tuple[list[dict], float]:
        cfg = self.config
        records: list[dict] = []
        loss_sum = 0.0
        for n, (x, targets, sizes, idx) in enumerate(self._eval_batches()):
            if n == 0:
                model(x)  # untimed warm-up: the first call pays one-off set-up costs
            logits, ms = self._timed_forward(model, x)
            loss_sum += float(lane_loss(logits, targets, focal_gamma=cfg.focal_gamma,
                                        similarity_weight=cfg.similarity_weight)) * x.shape[0]
            widths = sizes[:, 1].to(torch.float64).view(-1, 1, 1)
            xs = cells_to_x(decode_cells(logits).cpu().double(), widths, cfg.griding_num).numpy()
            for b, i in enumerate(idx):
                label = self.test.labels[i]
                lanes = lanes_from_anchors(xs[b], self.anchors, label.h_samples, cfg.min_lane_points)
                records.append({"raw_file": label.raw_file, "lanes": lanes, "run_time": ms / x.shape[0]})
        return records, loss_sum

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        cfg = self.config
        records, loss_sum = self.predict_records(model)
        result = bench_records(records, [l.record() for l in self.test.labels],
                               revision=REVISIONS[cfg.metric_revision], max_runtime_ms=cfg.runtime_limit_ms)
        runtimes = [r["run_time"] for r in records]
        limit = cfg.runtime_limit_ms
        return {
            "accuracy": 100.0 * result.accuracy,
            "fp_rate": result.fp,
            "fn_rate": result.fn,
            "f1": 100.0 * f1_from_rates(result.fp, result.fn),
            "runtime_ms_per_image": float(np.mean(runtimes)),
            "images_over_runtime_limit": None if limit is None else sum(1 for t in runtimes if t > limit),
            "eval_images": len(records),
            "loss": loss_sum / len(records),
        }

    def example_input(self) -> torch.Tensor:
        return torch.zeros((1, 3, *self.config.input_size), device=self.device)

    def data_fingerprint(self) -> dict[str, Any]:
        return fingerprint(self.config.data)

    def describe(self) -> dict[str, str]:
        return {"model": f"ufld_{self.config.backbone}", "dataset": self.config.data.name}


def _load_backbone(backbone: nn.Module, path: str) -> None:
    """Weights for the feature extractor; a classifier's extra keys (fc.*) are ignored."""
    from ...checkpoint import load_state_dict

    own = backbone.state_dict()
    state = {k: v for k, v in load_state_dict(path).items() if k in own}
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: no weights for {len(missing)} backbone tensors, e.g. {', '.join(missing[:3])}")
    backbone.load_state_dict(state)
