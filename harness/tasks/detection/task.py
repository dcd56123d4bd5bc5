"""Object detection: mmdetection 3.x detectors on COCO-format or KITTI data.

The suite names a config shipped inside mmdet (``retinanet/...``,
``faster_rcnn/...``, ``yolo/...``); mmdet builds the model, and this task
feeds it through the same ``Task`` contract classification uses, so every
method compresses detectors with no detection-specific code.  Images are read
here (PIL), resized to fit ``image_size`` keeping the aspect ratio, and handed
to the detector's own data preprocessor (normalisation, BGR->RGB, padding).

Metrics (percent).  COCO-format data: mmdet's ``CocoMetric`` (pycocotools):
``mAP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``AP_small/medium/large``;
mmdet rounds these to 3 decimals of a fraction, i.e. 0.1 point.  KITTI data:
the devkit's 2D AP (:mod:`.kitti_eval`) per class and difficulty, R40 and R11;
the primary metric is ``AP_R40_moderate``, the mean over classes of moderate
AP_R40 (the KITTI leaderboard's ranking figure).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping, Sequence, get_args

import numpy as np
import torch
from torch import nn

from ...config import Ge, Gt, Lt, PositiveInt, Validated
from ...interfaces import DatasetUnavailable, Task
from ..common import candidate_dirs, generate_once, limit_indices

__all__ = ["DetectionTask", "DetectionConfig", "DetectionData", "DETECTION_DATASETS"]

#: bump when what the loaders produce for the same spec changes (cache key)
DETECTION_DATA_VERSION = "2"  # 2: limit_* picks items with the shared limit_indices
#: seed of the KITTI train/val split of ``training/`` (its test labels are private)
KITTI_SPLIT_SEED = 0
#: generated data: train and val images come from different seeds
SYNTHETIC_SEEDS = {"train": 1, "val": 2}
#: decoded images are kept in memory up to this many per split
IN_MEMORY_MAX_IMAGES = 4000

DetectionDataset = Literal["coco", "coco_synthetic", "kitti", "kitti_synthetic"]
DETECTION_DATASETS = get_args(DetectionDataset)
_Side = Annotated[int, Ge(32)]  # image height / width


@dataclass(frozen=True)
class DetectionData(Validated):
    """Where detection data comes from.  ``name`` picks the format:
    ``coco`` (``<path>/annotations/instances_<split>.json`` and ``<path>/<split>/``),
    ``kitti`` (``<path>/training/image_2`` and ``label_2``), or their
    ``_synthetic`` variants, generated into the cache in exactly those formats."""

    name: DetectionDataset
    #: dataset root; relative paths are looked up under data_root, then the working directory
    path: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    limit_train: PositiveInt | None = None
    limit_val: PositiveInt | None = None
    #: KITTI classes to detect (the devkit evaluates Car, Pedestrian, Cyclist)
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    #: share of KITTI training/ held out for evaluation (seeded split)
    kitti_val_fraction: Annotated[float, Gt(0), Lt(1)] = 0.5
    synthetic_train: PositiveInt = 96
    synthetic_val: PositiveInt = 32
    #: (height, width) of generated images
    synthetic_size: tuple[_Side, _Side] = (128, 128)

    @property
    def is_kitti(self) -> bool:
        return self.name.startswith("kitti")


@dataclass(frozen=True)
class DetectionConfig(Validated):
    #: an mmdet config, relative to the configs shipped in the mmdet package
    config: str
    data: DetectionData
    #: (height, width) the image is resized to fit, keeping its aspect ratio
    image_size: tuple[_Side, _Side] = (800, 1333)
    batch_size: PositiveInt = 8
    eval_batch_size: PositiveInt = 8
    #: dotted keys under the config's ``model`` (e.g. ``backbone.depth: 18``)
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    #: label for results and leaderboards; default: the config's file stem
    model_name: str | None = None

    def __post_init__(self):
        super().__post_init__()
        from .mmdet_support import check_overrides  # plain data only: mmdet is not imported

        check_overrides(self.model_overrides)


@dataclass
class _Image:
    """One image and its ground truth in original pixels (x1, y1, x2, y2)."""

    img_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (n, 4) float32, trained on
    labels: np.ndarray  # (n,) int64
    ignore_boxes: np.ndarray  # (m, 4): crowd / DontCare regions, neither positive nor negative
    kitti_gt: list | None = None  # full KITTI labels, for the devkit evaluation


# --------------------------------------------------------------------- data


def _resolve_root(spec: DetectionData, data_root: str | None, default: str) -> tuple[Path | None, list[str]]:
    candidates = candidate_dirs(spec.path or default, data_root)
    for c in candidates:
        if c.is_dir():
            return c, [str(c) for c in candidates]
    return None, [str(c) for c in candidates]


def _generated_root(spec: DetectionData, fmt: str) -> Path:
    """The synthetic dataset in the cache, generated on first use."""
    from ...baseline import default_cache_dir
    from . import data as det_formats

    params = {"fmt": fmt, "n_train": spec.synthetic_train, "n_val": spec.synthetic_val,
              "size": list(spec.synthetic_size), "v": DETECTION_DATA_VERSION}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]

    def generate(folder: Path) -> None:
        if fmt == "coco":
            det_formats.generate_coco(folder, n_train=spec.synthetic_train, n_val=spec.synthetic_val,
                                      image_size=spec.synthetic_size, seed=SYNTHETIC_SEEDS["train"])
        else:
            det_formats.generate_kitti(folder, n_images=spec.synthetic_train + spec.synthetic_val,
                                       image_size=spec.synthetic_size, seed=SYNTHETIC_SEEDS["train"])

    return generate_once(default_cache_dir() / "data" / f"{fmt}_synthetic-{digest}", generate)


def _limit(items: list, n: int | None) -> list:
    keep = limit_indices(len(items), n)
    return items if keep is None else [items[i] for i in keep]


def _load_coco_split(root: Path, split: str) -> tuple[list[_Image], list[str], Path]:
    from pycocotools.coco import COCO

    ann_file = root / "annotations" / f"instances_{split}.json"
    image_dir = root / split
    if not ann_file.is_file() or not image_dir.is_dir():
        raise DatasetUnavailable(
            f"coco:{split}", [str(ann_file), str(image_dir)],
            f"put the COCO images in {image_dir} and annotations/instances_{split}.json under {root} (cocodataset.org)",
        )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
        coco = COCO(str(ann_file))
    cats = coco.dataset["categories"]
    classes = [c["name"] for c in cats]
    # label order = category order in the file, as mmdet's CocoDataset does
    cat2label = {cat_id: i for i, cat_id in enumerate(coco.getCatIds(catNms=classes))}
    images = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs([img_id])[0]
        boxes, labels, ignore = [], [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            x, y, w, h = ann["bbox"]
            if w < 1 or h < 1 or ann.get("area", w * h) <= 0 or ann["category_id"] not in cat2label:
                continue
            box = [x, y, x + w, y + h]
            if ann.get("iscrowd", 0):
                ignore.append(box)
            else:
                boxes.append(box)
                labels.append(cat2label[ann["category_id"]])
        images.append(_Image(img_id, image_dir / info["file_name"], int(info["height"]), int(info["width"]),
                             np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                             np.asarray(ignore, np.float32).reshape(-1, 4)))
    return images, classes, ann_file


def _load_kitti(root: Path, classes: Sequence[str]) -> list[_Image]:
    from PIL import Image

    from .data import load_kitti_split

    images = []
    for i, (path, objects) in enumerate(load_kitti_split(root / "training")):
        with Image.open(path) as im:
            width, height = im.size
        keep = [o for o in objects if o.name in classes]
        dontcare = [o.bbox for o in objects if o.name == "DontCare"]
        images.append(_Image(
            int(Path(path).stem) if Path(path).stem.isdigit() else i, Path(path), height, width,
            np.asarray([o.bbox for o in keep], np.float32).reshape(-1, 4),
            np.asarray([classes.index(o.name) for o in keep], np.int64),
            np.asarray(dontcare, np.float32).reshape(-1, 4),
            kitti_gt=list(objects),
        ))
    return images


# --------------------------------------------------------------------- task


class DetectionTask(Task):
    Config = DetectionConfig
    version = "1"
    primary_metric = "mAP"

    def __init__(self, config: Any = None, *, data_root: str | None = None, device: str = "cpu"):
        super().__init__(config, data_root=data_root, device=device)
        if self.config.data.is_kitti:
            self.primary_metric = "AP_R40_moderate"
        #: factor on each side of image_size (input_scaled); 1.0: the suite's size
        self._input_scale = 1.0
        #: example inputs made at other scales, by (max_h, max_w)
        self._scaled_examples: dict = {}

    @contextlib.contextmanager
    def input_scaled(self, scale: float) -> Iterator[None]:
        """Inside the block images are resized to fit ``scale`` x image_size (each
        side rounded), for training, evaluation and ``example_input``: the input
        resolution of an input-scaling baseline (:mod:`prunebench.macs`).  Outside,
        the suite's size again."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise ValueError(f"input_scaled: expected a scale in (0, 1], got {scale!r}")
        previous = self._input_scale
        self._input_scale = float(scale)
        try:
            yield
        finally:
            self._input_scale = previous

    def _fit_size(self) -> tuple[int, int]:
        """(max_h, max_w) images are resized to fit at the current input scale."""
        max_h, max_w = self.config.image_size
        scale = getattr(self, "_input_scale", 1.0)
        if scale == 1.0:
            return max_h, max_w
        return max(1, round(max_h * scale)), max(1, round(max_w * scale))

    # ---------------------------------------------------------------- data
    def prepare(self) -> None:
        from .mmdet_support import load_model_config, require_mmdet

        require_mmdet()  # DependencyUnavailable before any data work
        spec = self.config.data
        self._val_ann: Path | None = None
        if spec.name in ("coco", "coco_synthetic"):
            if spec.name == "coco":
                root, looked = _resolve_root(spec, self.data_root, "coco")
                if root is None:
                    raise DatasetUnavailable("coco", looked, "download COCO 2017 (cocodataset.org) into <data_root>/coco")
                train_split, val_split = spec.train_split, spec.val_split
            else:
                root, train_split, val_split = _generated_root(spec, "coco"), "train", "val"
            self.train, self.classes, _ = _load_coco_split(root, train_split)
            self.val, val_classes, self._val_ann = _load_coco_split(root, val_split)
            if val_classes != self.classes:
                raise ValueError(f"{root}: train and val splits list different categories")
        else:
            if spec.name == "kitti":
                root, looked = _resolve_root(spec, self.data_root, "kitti")
                if root is None or not (root / "training").is_dir():
                    raise DatasetUnavailable(
                        "kitti", [str(Path(p) / "training") for p in looked],
                        "download the KITTI 2D object images (left color) and labels from cvlibs.net and unpack "
                        "them so that <data_root>/kitti/training/image_2 and label_2 exist",
                    )
            else:
                root = _generated_root(spec, "kitti")
            self.classes = list(spec.classes)
            images = _load_kitti(root, self.classes)
            order = np.random.default_rng(KITTI_SPLIT_SEED).permutation(len(images))
            n_val = max(1, round(len(images) * spec.kitti_val_fraction))
            self.val = [images[i] for i in sorted(order[:n_val])]
            self.train = [images[i] for i in sorted(order[n_val:])]
        self.train = _limit(self.train, spec.limit_train)
        self.val = _limit(self.val, spec.limit_val)
        if not self.val:
            raise ValueError(f"the {spec.name} evaluation split is empty")
        self._model_cfg = load_model_config(self.config.config, len(self.classes), self.config.model_overrides)
        self._pixels: dict[Path, tuple[torch.Tensor, tuple[float, float]]] = {}
        self._cache_pixels = max(len(self.train), len(self.val)) <= IN_MEMORY_MAX_IMAGES

    def _load_image(self, image: _Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """uint8 BGR (3, h, w) resized to fit image_size, and (w_scale, h_scale)."""
        max_h, max_w = self._fit_size()
        # keyed by size too: an input-scaled run reads the same files at another size
        key = image.path if (max_h, max_w) == tuple(self.config.image_size) else (image.path, max_h, max_w)
        hit = self._pixels.get(key)
        if hit is not None:
            return hit
        from PIL import Image

        try:
            with Image.open(image.path) as im:
                rgb = im.convert("RGB")
        except FileNotFoundError:
            raise DatasetUnavailable(self.config.data.name, [str(image.path)], "the image listed in the annotations is missing") from None
        scale = min(max_h / image.height, max_w / image.width)
        new_w, new_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        if (new_w, new_h) != rgb.size:
            rgb = rgb.resize((new_w, new_h), Image.BILINEAR)
        # mmdet configs expect BGR (cv2 order); their preprocessor converts to RGB
        pixels = torch.from_numpy(np.asarray(rgb)[:, :, ::-1].copy()).permute(2, 0, 1).contiguous()
        out = (pixels, (new_w / image.width, new_h / image.height))
        if self._cache_pixels:
            self._pixels[key] = out
        return out

    def _batch(self, images: Sequence[_Image], with_gt: bool) -> dict:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        inputs, samples = [], []
        for image in images:
            pixels, (sx, sy) = self._load_image(image)
            sample = DetDataSample(metainfo={
                "img_id": image.img_id, "img_path": str(image.path),
                "ori_shape": (image.height, image.width), "img_shape": tuple(pixels.shape[1:]),
                "scale_factor": (sx, sy),
            })
            if with_gt:
                scale = np.asarray([sx, sy, sx, sy], np.float32)
                gt = InstanceData()
                gt.bboxes = torch.from_numpy(image.boxes * scale)
                gt.labels = torch.from_numpy(image.labels)
                sample.gt_instances = gt
                ignored = InstanceData()
                ignored.bboxes = torch.from_numpy(image.ignore_boxes * scale)
                ignored.labels = torch.zeros(len(image.ignore_boxes), dtype=torch.int64)
                sample.ignored_instances = ignored
            inputs.append(pixels)
            samples.append(sample)
        return {"inputs": inputs, "data_samples": samples}

    # ---------------------------------------------------------------- Task API
    def build_model(self) -> nn.Module:
        from .mmdet_support import build_detector

        return build_detector(self._model_cfg).to(self.device)

    def load_dense_checkpoint(self, model: nn.Module, path: str) -> None:
        from .mmdet_support import load_mmengine_checkpoint

        model.load_state_dict(load_mmengine_checkpoint(path))
        model.to(self.device)

    def steps_per_epoch(self) -> int:
        if not self.train:
            raise ValueError(f"the {self.config.data.name} train split is empty; this suite cannot train (budget.epochs must be 0)")
        return -(-len(self.train) // self.config.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        bs = self.config.batch_size
        order = torch.randperm(len(self.train), generator=generator).tolist()
        for i in range(0, len(order), bs):
            yield self._batch([self.train[j] for j in order[i : i + bs]], with_gt=True)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        data = model.data_preprocessor(batch, True)
        losses = model.loss(data["inputs"], data["data_samples"])
        total, _ = model.parse_losses(losses)
        return total

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Sequence[_Image] | None = None) -> list[dict]:
        """Detections in original pixels: per image img_id, bboxes (n, 4) xyxy, scores, labels."""
        was_training = model.training
        model.eval()
        images = self.val if images is None else images
        out = []
        bs = self.config.eval_batch_size
        try:
            for i in range(0, len(images), bs):
                data = model.data_preprocessor(self._batch(images[i : i + bs], with_gt=False), False)
                for sample in model.predict(data["inputs"], data["data_samples"], rescale=True):
                    pred = sample.pred_instances
                    out.append({
                        "img_id": sample.metainfo["img_id"], "ori_shape": sample.metainfo["ori_shape"],
                        "bboxes": pred.bboxes.detach().cpu(), "scores": pred.scores.detach().cpu(),
                        "labels": pred.labels.detach().cpu(),
                    })
        finally:
            model.train(was_training)
        return out

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        preds = self.predict(model)
        metrics = self._kitti_metrics(preds) if self.config.data.is_kitti else self._coco_metrics(preds)
        metrics["eval_images"] = len(self.val)
        metrics["detections"] = int(sum(len(p["scores"]) for p in preds))
        return metrics

    def _coco_metrics(self, preds: list[dict]) -> dict[str, Any]:
        return coco_metrics(self._val_ann, self.classes, preds)

    def _kitti_metrics(self, preds: list[dict]) -> dict[str, Any]:
        from .kitti_eval import KittiBox, evaluate_kitti, flatten_kitti

        by_id = {p["img_id"]: p for p in preds}
        gt, dets = [], []
        for image in self.val:
            gt.append(image.kitti_gt)
            p = by_id[image.img_id]
            dets.append([
                KittiBox(name=self.classes[int(label)], bbox=tuple(float(v) for v in box), score=float(score))
                for box, score, label in zip(p["bboxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())
            ])
        results = evaluate_kitti(gt, dets, classes=tuple(self.classes))
        metrics: dict[str, Any] = dict(flatten_kitti(results))
        for level in ("easy", "moderate", "hard"):
            for ap in ("AP_R40", "AP_R11"):
                vals = [results[c][level][ap] for c in self.classes if results[c][level][ap] is not None]
                metrics[f"{ap}_{level}"] = float(np.mean(vals)) if vals else None
        return metrics

    def example_input(self) -> tuple:
        """(inputs, data_samples, "tensor"): the detector's raw forward, as its
        ``forward(inputs, data_samples, mode)`` takes it."""
        from mmdet.registry import MODELS

        def make() -> tuple:
            pre = MODELS.build(dict(self._model_cfg["data_preprocessor"]))
            data = pre(self._batch(self.val[:1], with_gt=False), False)
            return (data["inputs"], data["data_samples"])

        size = self._fit_size()
        if size != tuple(self.config.image_size):  # at an input scale (input_scaled)
            if size not in self._scaled_examples:
                self._scaled_examples[size] = make()
            inputs, samples = self._scaled_examples[size]
        else:
            if not hasattr(self, "_example"):
                self._example = make()
            inputs, samples = self._example
        return (inputs.to(self.device), samples, "tensor")

    def data_fingerprint(self) -> dict[str, Any]:
        spec = asdict(self.config.data)
        spec["version"] = DETECTION_DATA_VERSION
        spec["image_size"] = list(self.config.image_size)
        return spec

    def describe(self) -> dict[str, str]:
        name = self.config.model_name or Path(self.config.config).stem
        return {"model": name, "dataset": self.config.data.name}


def coco_metrics(ann_file: str | os.PathLike, classes: Sequence[str], preds: Sequence[Mapping]) -> dict[str, Any]:
    """mmdet's CocoMetric (pycocotools COCOeval, bbox) on predictions in
    original pixels; figures in percent.  No detections at all scores 0."""
    from mmdet.evaluation import CocoMetric

    from .mmdet_support import require_mmdet

    require_mmdet()  # also makes a quiet mmengine logger current
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
        metric = CocoMetric(ann_file=str(ann_file), metric="bbox")
    metric.dataset_meta = {"classes": tuple(classes)}
    n_dets = 0
    for p in preds:
        n_dets += len(p["scores"])
        metric.process({}, [{"img_id": p["img_id"], "ori_shape": p["ori_shape"],
                             "pred_instances": {"bboxes": p["bboxes"], "scores": p["scores"], "labels": p["labels"]}}])
    names = {"mAP": "bbox_mAP", "AP50": "bbox_mAP_50", "AP75": "bbox_mAP_75",
             "AP_small": "bbox_mAP_s", "AP_medium": "bbox_mAP_m", "AP_large": "bbox_mAP_l"}
    if n_dets == 0:
        # CocoMetric stops on an empty result set; with no detections every AP is 0
        return {k: 0.0 for k in names}
    with contextlib.redirect_stdout(io.StringIO()):
        raw = metric.evaluate(len(preds))
    out = {}
    for key, mm in names.items():
        v = raw.get(f"coco/{mm}")
        # COCOeval marks "no ground truth in this area range" as -1
        out[key] = None if v is None or v < 0 else round(100.0 * float(v), 4)
    return out
