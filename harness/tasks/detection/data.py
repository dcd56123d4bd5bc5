"""Detection data on disk: KITTI object labels, COCO instances files, and
small generated datasets in both formats for tests and smoke suites.

Box conventions.  KITTI boxes are (x1, y1, x2, y2) in pixels; COCO boxes are
[x, y, w, h].  The generators treat pixel i as covering [i, i + 1), so a shape
filling columns c0..c1-1 has x1 = c0, x2 = c1 (KITTI) or x = c0, w = c1 - c0
(COCO), and a box's height is its number of pixel rows.

Missing data raises ``DatasetUnavailable`` naming the places searched.
Generation is deterministic: the same arguments give byte-identical files
(each image draws from its own seed, so image k does not depend on how many
images are generated).  Generators always write into ``root``; caching is the
caller's business.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...interfaces import DatasetUnavailable
from .kitti_eval import KittiBox

__all__ = [
    "COCO_SHAPES",
    "KITTI_CLASSES",
    "CocoAnnotation",
    "CocoCategory",
    "CocoDataset",
    "CocoImage",
    "generate_coco",
    "generate_kitti",
    "load_coco",
    "load_kitti_split",
    "read_kitti_labels",
    "write_kitti_labels",
]

# devkit readme: values marking 3D fields as not given (alpha and rotation
# -10, dimensions -1, location -1000); the 2D evaluation never reads them
_NO_ALPHA = "-10"
_NO_DIMENSIONS = "-1 -1 -1"
_NO_LOCATION = "-1000 -1000 -1000"
_NO_ROTATION = "-10"

KITTI_HOW_TO_GET = (
    "download data_object_image_2.zip and data_object_label_2.zip from "
    "https://www.cvlibs.net/datasets/kitti/eval_object.php (2D object benchmark) and extract them so that "
    "training/image_2 and training/label_2 exist, or generate a synthetic set with "
    "prunebench.tasks.detection.data.generate_kitti"
)
COCO_HOW_TO_GET = (
    "download the images and annotations_trainval2017.zip from https://cocodataset.org/#download, or "
    "generate a synthetic set with prunebench.tasks.detection.data.generate_coco"
)

# ===================================================================== KITTI


def _fmt(value: float) -> str:
    # repr is the shortest text that reads back as the same float
    return repr(float(value))


def read_kitti_labels(path: str | Path) -> list[KittiBox]:
    """Read a KITTI object label (or result) file.

    Each line has 15 fields (type, truncated, occluded, alpha, x1 y1 x2 y2,
    h w l, x y z, rotation_y) or 16 with a trailing score (detections).
    Only the 2D fields are kept; a line without a score gets score 1.0.
    """
    path = Path(path)
    boxes = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise ValueError(f"{path}:{lineno}: expected 15 or 16 fields, got {len(fields)}: {line!r}")
        try:
            boxes.append(KittiBox(
                name=fields[0],
                truncated=float(fields[1]),
                occluded=int(float(fields[2])),
                bbox=(float(fields[4]), float(fields[5]), float(fields[6]), float(fields[7])),
                score=float(fields[15]) if len(fields) == 16 else 1.0,
            ))
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}: {line!r}") from None
    return boxes


def write_kitti_labels(path: str | Path, boxes: Sequence[KittiBox], *, with_score: bool = False) -> None:
    """Write ``boxes`` as a KITTI label file, one 15-field line each, plus the
    score as a 16th field when ``with_score`` (detection results).

    Truncation and occlusion are written as the boxes hold them; alpha,
    dimensions, location and rotation get the devkit's "not given" values.
    """
    lines = []
    for box in boxes:
        if not isinstance(box, KittiBox):
            raise TypeError(f"boxes must be KittiBox objects, got {type(box).__name__}: {box!r}")
        fields = [box.name, _fmt(box.truncated), str(box.occluded), _NO_ALPHA,
                  *(_fmt(v) for v in box.bbox), _NO_DIMENSIONS, _NO_LOCATION, _NO_ROTATION]
        if with_score:
            fields.append(_fmt(box.score))
        lines.append(" ".join(fields) + "\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))


def _numbered(directory: Path, suffix: str) -> dict[int, Path]:
    """Files named by a number (KITTI's 000123.png), keyed by that number."""
    return {int(p.stem): p for p in directory.iterdir() if p.suffix == suffix and re.fullmatch(r"\d+", p.stem)}


def load_kitti_split(root: str | Path) -> list[tuple[Path, list[KittiBox]]]:
    """(image path, labels) pairs from ``root/image_2/*.png`` and
    ``root/label_2/*.txt`` (``root`` is KITTI's ``training`` folder), in
    image-id order.  Every image needs a label file and vice versa."""
    root = Path(root)
    image_dir, label_dir = root / "image_2", root / "label_2"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise DatasetUnavailable("kitti", [str(image_dir), str(label_dir)], KITTI_HOW_TO_GET)
    images, labels = _numbered(image_dir, ".png"), _numbered(label_dir, ".txt")
    if not images:
        raise DatasetUnavailable("kitti", [str(image_dir)], KITTI_HOW_TO_GET)
    if images.keys() != labels.keys():
        no_label = sorted(images.keys() - labels.keys())[:5]
        no_image = sorted(labels.keys() - images.keys())[:5]
        raise ValueError(f"{root}: image and label ids differ; images without labels {no_label}, "
                         f"labels without images {no_image} (first 5 of each)")
    return [(images[i], read_kitti_labels(labels[i])) for i in sorted(images)]


# ====================================================================== COCO


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    path: Path


@dataclass(frozen=True)
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h
    area: float  # the annotation's area field (mask area), not w * h
    iscrowd: int


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str
    supercategory: str


@dataclass
class CocoDataset:
    ann_file: Path
    image_dir: Path
    images: list[CocoImage]
    categories: list[CocoCategory]
    #: image id -> its annotations (every image has an entry, maybe empty)
    annotations: dict[int, list[CocoAnnotation]]


def load_coco(ann_file: str | Path, image_dir: str | Path) -> CocoDataset:
    """Read a COCO instances file; images are looked for in ``image_dir``."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file() or not image_dir.is_dir():
        raise DatasetUnavailable("coco", [str(ann_file), str(image_dir)], COCO_HOW_TO_GET)
    data = json.loads(ann_file.read_text())
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{ann_file}: not a COCO instances file, no {key!r} list (keys: {sorted(data)})")
    images = [CocoImage(int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"]),
                        image_dir / im["file_name"]) for im in data["images"]]
    categories = [CocoCategory(int(c["id"]), str(c["name"]), str(c.get("supercategory", "")))
                  for c in data["categories"]]
    known_cats = {c.id for c in categories}
    per_image: dict[int, list[CocoAnnotation]] = {im.id: [] for im in images}
    for a in data["annotations"]:
        bbox = tuple(float(v) for v in a["bbox"])
        if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{ann_file}: annotation {a.get('id')!r} has bad bbox {a['bbox']!r}")
        if a["image_id"] not in per_image:
            raise ValueError(f"{ann_file}: annotation {a.get('id')!r} names unknown image_id {a['image_id']!r}")
        if a["category_id"] not in known_cats:
            raise ValueError(f"{ann_file}: annotation {a.get('id')!r} names unknown category_id {a['category_id']!r}")
        per_image[a["image_id"]].append(CocoAnnotation(
            int(a["id"]), int(a["image_id"]), int(a["category_id"]), bbox,
            float(a.get("area", bbox[2] * bbox[3])), int(a.get("iscrowd", 0))))
    return CocoDataset(ann_file, image_dir, images, categories, per_image)


# ================================================================ generation

Mask = np.ndarray  # bool [h, w]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates normalised to [0, 1]: v down, u across."""
    # full [h, w] arrays, so masks of v alone still cover the whole patch
    return np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")


def _shape_square(h: int, w: int) -> Mask:
    return np.ones((h, w), bool)


def _shape_disc(h: int, w: int) -> Mask:
    v, u = _grid(h, w)
    return (2 * u - 1) ** 2 + (2 * v - 1) ** 2 <= 1.0


def _shape_triangle(h: int, w: int) -> Mask:
    v, u = _grid(h, w)
    return np.abs(u - 0.5) <= v / 2  # apex at the top centre, base along the bottom


def _shape_diamond(h: int, w: int) -> Mask:
    v, u = _grid(h, w)
    return np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5


def _shape_cross(h: int, w: int) -> Mask:
    v, u = _grid(h, w)
    return (np.abs(u - 0.5) <= 1 / 6) | (np.abs(v - 0.5) <= 1 / 6)


#: shapes the COCO generator can draw, with their colour (RGB)
COCO_SHAPES: dict[str, tuple[Callable[[int, int], Mask], tuple[int, int, int]]] = {
    "square": (_shape_square, (220, 40, 40)),
    "disc": (_shape_disc, (40, 200, 60)),
    "triangle": (_shape_triangle, (50, 80, 230)),
    "diamond": (_shape_diamond, (230, 200, 40)),
    "cross": (_shape_cross, (200, 60, 220)),
}
#: how far an object's colour strays from its class colour, per channel
COLOUR_JITTER = 15


def _check_size(image_size: Sequence[int], min_hw: tuple[int, int]) -> tuple[int, int]:
    if len(image_size) != 2 or any(int(s) != s for s in image_size):
        raise ValueError(f"image_size must be (H, W) integers, got {image_size!r}")
    h, w = int(image_size[0]), int(image_size[1])
    if h < min_hw[0] or w < min_hw[1]:
        raise ValueError(f"image_size must be at least {min_hw}, got {tuple(image_size)!r}")
    return h, w


def _check_count(name: str, n: int, minimum: int) -> int:
    if int(n) != n or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    # fast compression: these images are regenerated, not archived
    Image.fromarray(pixels, "RGB").save(path, format="PNG", compress_level=1)


def _noisy_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grey = rng.uniform(70, 150) + rng.uniform(-15, 15, size=3)
    return grey + rng.normal(0.0, 6.0, size=(h, w, 3))


def _object_colour(rng: np.random.Generator, base: Sequence[int]) -> np.ndarray:
    return np.clip(np.asarray(base, np.float64) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3), 0, 255)


def _place(rng: np.random.Generator, size: tuple[int, int], bounds: tuple[int, int],
           taken: list[tuple[int, int, int, int]], gap: int = 2, tries: int = 20) -> tuple[int, int] | None:
    """Top-left corner for an (h, w) patch that keeps ``gap`` pixels from the
    taken boxes (y0, x0, y1, x1), or None."""
    h, w = size
    for _ in range(tries):
        y0 = int(rng.integers(0, bounds[0] - h + 1))
        x0 = int(rng.integers(0, bounds[1] - w + 1))
        if all(y0 >= b[2] + gap or y0 + h + gap <= b[0] or x0 >= b[3] + gap or x0 + w + gap <= b[1]
               for b in taken):
            return y0, x0
    return None


def _coco_image(rng: np.random.Generator, h: int, w: int, class_ids: list[int],
                classes: Sequence[str]) -> tuple[np.ndarray, list[dict]]:
    """One image with 1-4 non-overlapping shapes; returns pixels and
    annotation stubs (category_id, bbox, area)."""
    canvas = _noisy_background(rng, h, w)
    side = min(h, w)
    lo, hi = max(6, round(side * 12 / 128)), max(8, round(side * 40 / 128))
    taken: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(len(classes)))
        size = int(rng.integers(lo, hi + 1))
        aspect = rng.uniform(0.75, 1.33)  # w / h
        ph, pw = size, max(4, round(size * aspect))
        corner = _place(rng, (ph, pw), (h, w), taken)
        if corner is None:
            continue
        y0, x0 = corner
        draw, base = COCO_SHAPES[classes[k]]
        mask = draw(ph, pw)
        region = canvas[y0:y0 + ph, x0:x0 + pw]
        region[mask] = _object_colour(rng, base)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        # tight box from the drawn pixels
        bx, by = x0 + int(cols[0]), y0 + int(rows[0])
        bw, bh = int(cols[-1]) + 1 - int(cols[0]), int(rows[-1]) + 1 - int(rows[0])
        taken.append((y0, x0, y0 + ph, x0 + pw))
        objects.append({"category_id": class_ids[k], "bbox": [bx, by, bw, bh], "area": int(mask.sum())})
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), objects


def generate_coco(
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    image_size: Sequence[int] = (128, 128),
    seed: int,
    classes: Sequence[str] = ("square", "disc", "triangle"),
) -> dict:
    """Write a COCO-format shapes dataset: ``root/{train,val}/NNNNNN.png`` and
    ``root/annotations/instances_{train,val}.json``.

    Each image has a noisy grey background and 1-4 non-overlapping filled
    shapes, each class a fixed shape and colour (``COCO_SHAPES``), sized
    12-40 px at 128 px (scaled with the short side).  Boxes are tight around
    the drawn pixels; ``area`` is the shape's pixel count (as COCO's area is
    the mask area); ``segmentation`` is the box as one polygon.

    Returns ``{"train": {"image_dir", "ann_file", "n_images",
    "n_annotations"}, "val": {...}, "categories": [...]}`` (paths as str).
    """
    n_train = _check_count("n_train", n_train, 0)
    n_val = _check_count("n_val", n_val, 0)
    h, w = _check_size(image_size, (32, 32))
    if isinstance(classes, str) or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct shape names, got {classes!r}")
    unknown = [c for c in classes if c not in COCO_SHAPES]
    if unknown:
        raise ValueError(f"unknown shape classes {unknown!r}; choose from {sorted(COCO_SHAPES)}")
    root = Path(root)
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(classes)]
    class_ids = [c["id"] for c in categories]
    summary: dict = {"categories": categories}
    for split_index, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        image_dir = root / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for k in range(n):
            rng = np.random.default_rng([seed, split_index, k])
            pixels, objects = _coco_image(rng, h, w, class_ids, classes)
            image_id = k + 1
            file_name = f"{image_id:06d}.png"
            _save_png(pixels, image_dir / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 1})
            for obj in objects:
                x, y, bw, bh = obj["bbox"]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": obj["category_id"],
                    "bbox": [x, y, bw, bh], "area": obj["area"], "iscrowd": 0,
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                })
        ann_file = root / "annotations" / f"instances_{split}.json"
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        ann_file.write_text(json.dumps({
            # no timestamps: the same arguments must give the same bytes
            "info": {"description": "prunebench synthetic shapes", "version": "1", "year": 2024,
                     "contributor": "prunebench", "url": "", "date_created": ""},
            "licenses": [{"id": 1, "name": "synthetic, no restrictions", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }))
        summary[split] = {"image_dir": str(image_dir), "ann_file": str(ann_file),
                          "n_images": n, "n_annotations": len(annotations)}
    return summary


# ---------------------------------------------------------------- KITTI-like

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")
_KITTI_CLASS_P = (0.5, 0.3, 0.2)
#: width / height of each class's box
_KITTI_ASPECT = {"Car": (1.6, 2.5), "Pedestrian": (0.3, 0.45), "Cyclist": (0.55, 0.8)}
_KITTI_COLOUR = {"Car": (190, 40, 40), "Pedestrian": (40, 60, 180), "Cyclist": (40, 160, 70)}
_DARK = (25, 25, 25)
_SKIN = (205, 170, 140)
#: fraction of an object hidden by nearer ones -> KITTI occlusion level
_OCCLUSION_LEVELS = ((0.1, 0), (0.5, 1), (math.inf, 2))
#: objects hidden more than this are left unlabelled
_MAX_HIDDEN = 0.9


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> Mask:
    y = np.arange(h)[:, None] + 0.5
    x = np.arange(w)[None, :] + 0.5
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _paint_car(h: int, w: int, colour: np.ndarray) -> list[tuple[Mask, np.ndarray]]:
    v, u = _grid(h, w)
    r = 0.16 * h
    body = (v >= 0.38) & (v <= 0.86)
    cabin = (v < 0.38) & (u >= 0.2) & (u <= 0.78)
    wheels = _disc(h, w, h - r, 0.22 * w, r) | _disc(h, w, h - r, 0.78 * w, r)
    return [(body, colour), (cabin, colour * 0.55), (wheels, np.asarray(_DARK, float))]


def _paint_pedestrian(h: int, w: int, colour: np.ndarray) -> list[tuple[Mask, np.ndarray]]:
    v, u = _grid(h, w)
    r = min(0.09 * h, 0.5 * w)
    head = _disc(h, w, r, 0.5 * w, r)
    torso = (v >= 0.18) & (v < 0.6) & (u >= 0.08) & (u <= 0.92)
    legs = (v >= 0.6) & (((u >= 0.2) & (u <= 0.45)) | ((u >= 0.55) & (u <= 0.8)))
    return [(head, np.asarray(_SKIN, float)), (torso, colour), (legs, np.asarray((50, 50, 80), float))]


def _paint_cyclist(h: int, w: int, colour: np.ndarray) -> list[tuple[Mask, np.ndarray]]:
    v, u = _grid(h, w)
    r = min(0.22 * h, 0.25 * w)
    wheels = _disc(h, w, h - r, r, r) | _disc(h, w, h - r, w - r, r)
    frame = (v >= 0.62) & (v <= 0.68) & (u >= 0.2) & (u <= 0.8)
    head_r = 0.08 * h
    rider = _disc(h, w, head_r, 0.5 * w, head_r) | ((v >= 0.15) & (v < 0.62) & (u >= 0.35) & (u <= 0.65))
    return [(wheels, np.asarray(_DARK, float)), (frame, np.asarray((120, 120, 120), float)), (rider, colour)]


_PAINTERS = {"Car": _paint_car, "Pedestrian": _paint_pedestrian, "Cyclist": _paint_cyclist}


@dataclass
class _Object:
    name: str
    x1: int  # may lie outside the image (truncation)
    y1: int
    h: int
    w: int
    parts: list[tuple[Mask, np.ndarray]]

    @property
    def mask(self) -> Mask:
        out = np.zeros((self.h, self.w), bool)
        for part, _ in self.parts:
            out |= part
        return out


def _street_background(rng: np.random.Generator, h: int, w: int, horizon: int) -> np.ndarray:
    canvas = np.empty((h, w, 3))
    sky_top, sky_low = np.array([110.0, 150.0, 210.0]), np.array([190.0, 205.0, 225.0])
    t = np.linspace(0.0, 1.0, horizon)[:, None, None]
    canvas[:horizon] = sky_top + (sky_low - sky_top) * t
    canvas[horizon:] = np.array([95.0, 95.0, 100.0]) + rng.uniform(-10, 10)
    return canvas + rng.normal(0.0, 5.0, size=(h, w, 3))


def _random_object(rng: np.random.Generator, h: int, w: int, horizon: int) -> _Object:
    name = KITTI_CLASSES[int(rng.choice(len(KITTI_CLASSES), p=_KITTI_CLASS_P))]
    oh = int(rng.integers(14, max(15, round(0.72 * h)) + 1))
    ow = max(3, min(w, round(oh * rng.uniform(*_KITTI_ASPECT[name]))))
    # on the ground: bigger (nearer) objects stand lower in the image
    y2 = round(horizon + oh * rng.uniform(0.45, 0.65))
    y1 = min(max(y2 - oh, 0), h - oh)
    if rng.random() < 0.2:  # cut by the left or right image edge
        outside = round(ow * rng.uniform(0.05, 0.6))
        x1 = -outside if rng.random() < 0.5 else w - ow + outside
    else:
        x1 = int(rng.integers(0, w - ow + 1))
    return _Object(name, x1, y1, oh, ow, _PAINTERS[name](oh, ow, _object_colour(rng, _KITTI_COLOUR[name])))


def _paste(canvas: np.ndarray, owner: np.ndarray | None, obj: _Object, index: int) -> None:
    """Paint obj's parts onto the canvas (clipped to the image), marking its
    pixels in ``owner`` so later, nearer objects can occlude them."""
    w = canvas.shape[1]
    c0, c1 = max(obj.x1, 0), min(obj.x1 + obj.w, w)
    if c1 <= c0:
        return
    rows = slice(obj.y1, obj.y1 + obj.h)
    local = slice(c0 - obj.x1, c1 - obj.x1)
    for part, colour in obj.parts:
        m = part[:, local]
        canvas[rows, c0:c1][m] = colour
        if owner is not None:
            owner[rows, c0:c1][m] = index


def _dontcare(rng: np.random.Generator, canvas: np.ndarray, horizon: int) -> KittiBox:
    """A distant cluttered strip of tiny unlabelled cars, labelled DontCare."""
    w = canvas.shape[1]
    rh, rw = int(rng.integers(10, 21)), int(rng.integers(25, min(70, w // 2) + 1))
    y1 = max(0, horizon - int(rh * 0.6))
    x1 = int(rng.integers(0, w - rw + 1))
    for _ in range(int(rng.integers(1, 4))):
        ch = int(rng.integers(6, min(10, rh) + 1))
        cw = min(rw, round(ch * rng.uniform(1.6, 2.5)))
        tiny = _Object("Car", x1 + int(rng.integers(0, rw - cw + 1)), y1 + rh - ch, ch, cw,
                       _paint_car(ch, cw, _object_colour(rng, _KITTI_COLOUR["Car"])))
        _paste(canvas, None, tiny, -1)
    return KittiBox("DontCare", (x1, y1, x1 + rw, y1 + rh), truncated=-1, occluded=-1)


def _occlusion_level(hidden: float) -> int:
    return next(level for bound, level in _OCCLUSION_LEVELS if hidden < bound)


def _kitti_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[KittiBox]]:
    horizon = round(0.42 * h)
    canvas = _street_background(rng, h, w, horizon)
    dontcare = [_dontcare(rng, canvas, horizon)] if rng.random() < 0.35 else []
    # far (small) objects first, so nearer ones are drawn over them
    objects = sorted((_random_object(rng, h, w, horizon) for _ in range(int(rng.integers(1, 6)))),
                     key=lambda o: o.h)
    owner = np.full((h, w), -1, np.int64)
    for i, obj in enumerate(objects):
        _paste(canvas, owner, obj, i)
    labels = []
    for i, obj in enumerate(objects):
        c0, c1 = max(obj.x1, 0), min(obj.x1 + obj.w, w)
        mask = obj.mask[:, c0 - obj.x1:c1 - obj.x1]
        in_image = int(mask.sum())
        if in_image == 0:
            continue
        hidden = 1.0 - int(np.sum(owner == i)) / in_image
        if hidden > _MAX_HIDDEN:
            continue
        truncated = round(1.0 - (c1 - c0) / obj.w, 2)
        labels.append(KittiBox(obj.name, (c0, obj.y1, c1, obj.y1 + obj.h),
                               truncated=truncated, occluded=_occlusion_level(hidden)))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), labels + dontcare


def generate_kitti(
    root: str | Path,
    *,
    n_images: int,
    image_size: Sequence[int] = (96, 320),
    seed: int,
) -> dict:
    """Write a KITTI-format street dataset: ``root/training/image_2/NNNNNN.png``
    and ``root/training/label_2/NNNNNN.txt`` (read it back with
    ``load_kitti_split(root / "training")``).

    Each image has a sky/road background and 1-5 objects standing on the
    road: Cars (wide, with cabin and wheels), Pedestrians (tall and thin) and
    Cyclists (tall, on two wheels), 14 px up to 72% of the image height so
    that all three difficulty levels and too-small boxes occur.  About one in
    five objects is cut by the image edge (``truncated`` is the fraction of
    the box outside); nearer objects hide farther ones (``occluded`` 0/1/2
    for under 10%, under 50%, more of its pixels hidden; objects more than
    90% hidden are unlabelled).  About a third of the images have a DontCare
    strip of tiny unlabelled cars near the horizon.

    Returns ``{"root", "image_dir", "label_dir", "n_images", "objects":
    {class: count}}`` (paths as str; ``root`` is the ``training`` folder).
    """
    n_images = _check_count("n_images", n_images, 0)
    h, w = _check_size(image_size, (48, 96))
    split = Path(root) / "training"
    image_dir, label_dir = split / "image_2", split / "label_2"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys((*KITTI_CLASSES, "DontCare"), 0)
    for k in range(n_images):
        pixels, labels = _kitti_image(np.random.default_rng([seed, k]), h, w)
        _save_png(pixels, image_dir / f"{k:06d}.png")
        write_kitti_labels(label_dir / f"{k:06d}.txt", labels)
        for box in labels:
            counts[box.name] += 1
    return {"root": str(split), "image_dir": str(image_dir), "label_dir": str(label_dir),
            "n_images": n_images, "objects": counts}
