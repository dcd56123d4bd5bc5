"""TuSimple lane data: the JSON-lines loader, image loading, and a generator
that writes small TuSimple-format datasets for tests and smoke suites.

Layout searched (the real dataset unpacked in one folder, as UFLD expects)::

    <root>/label_data_0313.json  label_data_0531.json  label_data_0601.json
    <root>/test_label.json
    <root>/clips/<date>/<clip>/20.jpg          (raw_file is relative to <root>)

The original two-folder layout (``<root>/train_set/label_data_*.json``,
``<root>/test_set/test_label.json``, each with its own ``clips/``) is found
too: a ``raw_file`` is resolved against its JSON file's folder first.

Each label line is ``{"lanes": [[x, ...], ...], "h_samples": [y, ...],
"raw_file": "clips/..."}``: one x per row of ``h_samples`` for every lane,
-2 where the lane has no point on that row.  Real TuSimple frames are
720x1280 and use two row sets: 160..710 and 240..710, step 10.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ...config import Ge, NonNegativeInt, PositiveInt, Validated
from ...interfaces import DatasetUnavailable
from ..common import LIMIT_SEED, candidate_dirs, generate_once, limit_indices

__all__ = [
    "LaneDataSpec",
    "LaneLabel",
    "LaneSplit",
    "LaneImages",
    "TUSIMPLE_IMAGE_HW",
    "TUSIMPLE_ROWS",
    "TUSIMPLE_ROWS_SHORT",
    "scaled_rows",
    "parse_label_line",
    "read_labels",
    "find_tusimple",
    "load_lane_split",
    "load_image",
    "load_images",
    "generate_tusimple",
    "synthetic_root",
    "fingerprint",
    "HOW_TO_GET",
]

#: bump when a loader's or the generator's output for the same spec changes
DATA_VERSION = "1"
GENERATOR_VERSION = "1"
TUSIMPLE_IMAGE_HW = (720, 1280)
_Side = Annotated[int, Ge(32)]  # generated frame height / width
TUSIMPLE_ROWS = tuple(range(160, 711, 10))  # 56 rows
TUSIMPLE_ROWS_SHORT = tuple(range(240, 711, 10))  # 48 rows, used by part of the train set
HOW_TO_GET = (
    "download the TuSimple lane benchmark (train_set.zip, test_set.zip and test_label.json; see "
    "github.com/TuSimple/tusimple-benchmark), unpack all of it into one folder so that "
    "<folder>/label_data_0313.json, <folder>/test_label.json and <folder>/clips/ exist, and pass "
    "--data-root <parent of folder> with the folder named 'tusimple' (or set task.data.path)"
)


@dataclass(frozen=True)
class LaneDataSpec(Validated):
    """What lane data a suite uses: ``tusimple`` (on disk) or
    ``tusimple_synthetic`` (generated into the prunebench cache on first use)."""

    name: Literal["tusimple", "tusimple_synthetic"]
    #: tusimple: the dataset folder (relative paths are tried under data_root first)
    path: str | None = None
    train_glob: str = "label_data_*.json"
    test_file: str = "test_label.json"
    #: keep the first N after a fixed seeded shuffle (LIMIT_SEED), for quick runs
    limit_train: PositiveInt | None = None
    limit_test: PositiveInt | None = None
    synthetic_train: NonNegativeInt = 384
    synthetic_test: PositiveInt = 128
    #: (height, width) of generated frames; a quarter of TuSimple's 720x1280 by default
    synthetic_image_size: tuple[_Side, _Side] = (180, 320)
    synthetic_seed: int = 0


@dataclass(frozen=True)
class LaneLabel:
    """One labelled frame."""

    raw_file: str
    path: Path
    lanes: tuple[tuple[float, ...], ...]
    h_samples: tuple[float, ...]

    def record(self) -> dict:
        """The GT record the metric reads."""
        return {"raw_file": self.raw_file, "lanes": [list(l) for l in self.lanes], "h_samples": list(self.h_samples)}


@dataclass
class LaneSplit:
    labels: list[LaneLabel]
    #: the label files read, for messages
    sources: list[str]

    def __len__(self) -> int:
        return len(self.labels)


# ------------------------------------------------------------------ labels


def parse_label_line(line: str, base: Path, where: str = "") -> LaneLabel:
    """A TuSimple JSON line; ``raw_file`` resolved against ``base``."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON: {err}") from None
    for key in ("lanes", "h_samples", "raw_file"):
        if key not in rec:
            raise ValueError(f"{where}: label has no {key!r} (keys: {', '.join(sorted(rec))})")
    rows = tuple(float(y) for y in rec["h_samples"])
    lanes = tuple(tuple(float(x) for x in lane) for lane in rec["lanes"])
    for i, lane in enumerate(lanes):
        if len(lane) != len(rows):
            raise ValueError(f"{where}: lane {i} has {len(lane)} points but h_samples has {len(rows)}")
    return LaneLabel(str(rec["raw_file"]), base / rec["raw_file"], lanes, rows)


def read_labels(path: Path, root: Path) -> list[LaneLabel]:
    """All lines of one label file; ``raw_file`` relative to the file's folder, else ``root``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                label = parse_label_line(line, path.parent, f"{path}:{n}")
                if not label.path.is_file() and (root / label.raw_file).is_file():
                    label = LaneLabel(label.raw_file, root / label.raw_file, label.lanes, label.h_samples)
                out.append(label)
    return out


def _label_files(root: Path, spec: LaneDataSpec) -> tuple[list[Path], Path | None]:
    train = sorted(root.glob(spec.train_glob)) + sorted((root / "train_set").glob(spec.train_glob))
    test = next((p for p in (root / spec.test_file, root / "test_set" / spec.test_file) if p.is_file()), None)
    return train, test


def find_tusimple(spec: LaneDataSpec, data_root: str | None) -> tuple[Path, list[Path], Path]:
    """(root, train label files, test label file) of the first complete copy."""
    looked = []
    for root in candidate_dirs(spec.path, data_root, ("tusimple", "TuSimple", "")):
        train, test = _label_files(root, spec)
        if train and test is not None:
            return root, train, test
        missing = ([] if train else [spec.train_glob]) + ([] if test else [spec.test_file])
        looked.append(f"{root} (missing {', '.join(missing)})" if root.exists() else str(root))
    if not looked:
        looked = ["nowhere: no --data-root and no task.data.path given"]
    raise DatasetUnavailable("tusimple", looked, HOW_TO_GET)


def _limit(labels: list[LaneLabel], limit: int | None) -> list[LaneLabel]:
    keep = limit_indices(len(labels), limit)
    return labels if keep is None else [labels[i] for i in keep]


def load_lane_split(spec: LaneDataSpec, split: str, data_root: str | None = None) -> LaneSplit:
    """Labels of the 'train' or 'test' split; images are loaded by the caller."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if spec.name == "tusimple_synthetic":
        root = synthetic_root(spec)
        files = sorted(root.glob("label_data_*.json")) if split == "train" else [root / "test_label.json"]
    else:
        root, train, test = find_tusimple(spec, data_root)
        files = train if split == "train" else [test]
    labels = [label for f in files for label in read_labels(f, root)]
    labels = _limit(labels, spec.limit_train if split == "train" else spec.limit_test)
    missing = [l.path for l in labels[:1] if not l.path.is_file()]
    if missing:
        raise DatasetUnavailable(
            "tusimple", [str(missing[0]), str(root / labels[0].raw_file)],
            f"the label files are there but not the frames: {HOW_TO_GET}",
        )
    return LaneSplit(labels, [str(f) for f in files])


# ------------------------------------------------------------------ images


def load_image(path: Path, input_hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 [3, H, W] resized to ``input_hw`` (bilinear), and the original (height, width)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        orig = (img.height, img.width)
        if orig != tuple(input_hw):
            img = img.resize((input_hw[1], input_hw[0]), Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a)), orig


def load_images(labels: Sequence[LaneLabel], input_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames in memory: uint8 [N, 3, H, W] and int64 original sizes [N, 2]."""
    images = torch.empty((len(labels), 3, *input_hw), dtype=torch.uint8)
    sizes = torch.empty((len(labels), 2), dtype=torch.int64)
    for i, label in enumerate(labels):
        images[i], orig = load_image(label.path, input_hw)
        sizes[i] = torch.tensor(orig)
    return images, sizes


class LaneImages(Dataset):
    """Decodes frames lazily (the real set is too big to hold): yields
    (uint8 image, int64 targets, original (h, w), index)."""

    def __init__(self, labels: Sequence[LaneLabel], input_hw: tuple[int, int],
                 encode: Callable[[LaneLabel, tuple[int, int]], np.ndarray]):
        self.labels, self.input_hw, self.encode = list(labels), tuple(input_hw), encode

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        label = self.labels[i]
        image, orig = load_image(label.path, self.input_hw)
        return image, torch.from_numpy(self.encode(label, orig)), torch.tensor(orig), i


# --------------------------------------------------------------- generator


def scaled_rows(height: int, rows: Sequence[int] = TUSIMPLE_ROWS) -> list[int]:
    """TuSimple's label rows scaled from 720 to ``height`` pixels (duplicates dropped)."""
    return sorted({min(height - 1, round(y * height / TUSIMPLE_IMAGE_HW[0])) for y in rows})


def _background(rng: np.random.Generator, h: int, w: int, horizon: float) -> np.ndarray:
    """Sky gradient over a grey road with coarse blotches and fine grain (float HxWx3)."""
    y = np.arange(h, dtype=np.float32)[:, None, None]
    sky_top, sky_low = rng.uniform(150, 200, 3), rng.uniform(200, 240, 3)
    sky = sky_top + (sky_low - sky_top) * np.clip(y / max(horizon, 1.0), 0, 1)
    grey = rng.uniform(70, 120)
    coarse = rng.uniform(-18, 18, size=(max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
    blotch = np.kron(coarse, np.ones((16, 16, 1), dtype=np.float32))[:h, :w]
    blotch = np.pad(blotch, ((0, h - blotch.shape[0]), (0, w - blotch.shape[1]), (0, 0)), mode="edge")
    road = grey + blotch + rng.normal(0, 6, size=(h, w, 1))
    img = np.where(y < horizon, sky, np.broadcast_to(road, (h, w, 3)))
    return img + rng.normal(0, 3, size=(h, w, 3))


def _lane_bottoms(rng: np.random.Generator, w: int) -> np.ndarray:
    """x of each lane at the bottom row: 2-4 lanes around a jittered ego position."""
    n = int(rng.choice([2, 3, 4], p=[0.25, 0.25, 0.5]))
    spacing = w * rng.uniform(0.34, 0.46)
    ego = w / 2 + rng.uniform(-0.2, 0.2) * spacing
    offsets = {2: [-0.5, 0.5], 4: [-1.5, -0.5, 0.5, 1.5]}.get(n) or (
        [-1.5, -0.5, 0.5] if rng.random() < 0.5 else [-0.5, 0.5, 1.5]
    )
    return ego + spacing * np.asarray(offsets)


def _draw_frame(rng: np.random.Generator, h: int, w: int, rows: Sequence[int]):
    """One frame (PIL image) and its lanes (lists of int x, -2 where absent)."""
    from PIL import Image, ImageDraw

    horizon = h * rng.uniform(0.24, 0.32)
    vanish_x = w * (0.5 + rng.uniform(-0.08, 0.08))
    bend = w * rng.uniform(-0.12, 0.12)  # shifts the far end: a curving road
    top = horizon + h * rng.uniform(0.03, 0.09)
    img = Image.fromarray(np.clip(_background(rng, h, w, horizon), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    yellow = (230, 200, 60)
    width_px = max(2.0, w * rng.uniform(0.015, 0.025))

    def x_at(bottom: float, y: np.ndarray) -> np.ndarray:
        t = (y - horizon) / (h - 1 - horizon)
        return vanish_x + (bottom - vanish_x) * t + bend * (1 - t) ** 2

    lanes = []
    for bottom in _lane_bottoms(rng, w):
        colour = yellow if rng.random() < 0.2 else tuple(int(c) for c in rng.uniform(215, 255, 3))
        dashed = rng.random() < 0.5
        ys = np.arange(np.ceil(top), h, dtype=np.float64)
        xs = x_at(bottom, ys)
        for i in range(len(ys) - 1):
            t = (ys[i] - horizon) / (h - 1 - horizon)
            if dashed and int(6 * np.sqrt(t) + 0.5) % 2:  # dashes lengthen toward the camera
                continue
            draw.line([(xs[i], ys[i]), (xs[i + 1], ys[i + 1])], fill=colour, width=max(1, round(width_px * t)))
        r = np.asarray(rows, dtype=np.float64)
        lx = np.rint(x_at(bottom, r))
        valid = (r >= top) & (lx >= 0) & (lx < w)
        lane = [int(x) if ok else -2 for x, ok in zip(lx, valid)]
        if sum(valid) >= 2:
            lanes.append(lane)
    return img, lanes


_TRAIN_FILES = (("label_data_0313.json", "0313-1"), ("label_data_0531.json", "0531"), ("label_data_0601.json", "0601"))
_TEST_DIR = "0530"


def _write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")


def generate_tusimple(
    root: str | os.PathLike,
    *,
    n_train: int,
    n_test: int,
    image_size: tuple[int, int] = (180, 320),
    seed: int = 0,
    image_format: str = "jpg",
) -> Path:
    """Write a TuSimple-format dataset under ``root`` (which must not exist yet or be empty).

    Frames are ``clips/<date>/<i>/20.<image_format>`` (the labelled 20th frame
    of a clip, as in TuSimple); train lines are spread over the three
    ``label_data_*.json`` files, test lines go to ``test_label.json``.  Rows
    are TuSimple's scaled to the frame height; a third of the train frames
    use the shorter row set (240..710), the rest and all test frames the
    full one (160..710).  Deterministic from ``seed``.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    h, w = (int(s) for s in image_size)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    full, short = scaled_rows(h), scaled_rows(h, TUSIMPLE_ROWS_SHORT)
    train_lines: dict[str, list[dict]] = {f: [] for f, _ in _TRAIN_FILES}
    test_lines: list[dict] = []
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
            if split == "train":
                label_file, folder = _TRAIN_FILES[i % len(_TRAIN_FILES)]
                rows = short if i % 3 == 2 else full
            else:
                label_file, folder, rows = None, _TEST_DIR, full
            img, lanes = _draw_frame(rng, h, w, rows)
            raw_file = f"clips/{folder}/{i}/20.{image_format}"
            (root / raw_file).parent.mkdir(parents=True, exist_ok=True)
            if image_format == "jpg":
                img.save(root / raw_file, quality=90)
            else:
                img.save(root / raw_file)
            line = {"lanes": lanes, "h_samples": list(rows), "raw_file": raw_file}
            (train_lines[label_file] if label_file else test_lines).append(line)
    for name, lines in train_lines.items():
        _write_lines(root / name, lines)
    _write_lines(root / "test_label.json", test_lines)
    return root


def _synthetic_key(spec: LaneDataSpec) -> str:
    blob = json.dumps([GENERATOR_VERSION, spec.synthetic_train, spec.synthetic_test,
                       list(spec.synthetic_image_size), spec.synthetic_seed])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def synthetic_root(spec: LaneDataSpec, cache_dir: Path | None = None) -> Path:
    """The generated dataset for ``spec`` in the cache, generated on first use."""
    from ...baseline import default_cache_dir

    root = (cache_dir or default_cache_dir()) / "data" / f"tusimple_synthetic-{_synthetic_key(spec)}"
    return generate_once(root, lambda folder: generate_tusimple(
        folder, n_train=spec.synthetic_train, n_test=spec.synthetic_test,
        image_size=spec.synthetic_image_size, seed=spec.synthetic_seed))


def fingerprint(spec: LaneDataSpec) -> dict:
    """What identifies the data for the dense-baseline cache key."""
    fp = {"data_version": DATA_VERSION, "name": spec.name, "limit_train": spec.limit_train,
          "limit_test": spec.limit_test, "limit_seed": LIMIT_SEED}
    if spec.name == "tusimple_synthetic":
        fp.update(generator_version=GENERATOR_VERSION, synthetic_train=spec.synthetic_train,
                  synthetic_test=spec.synthetic_test, synthetic_image_size=list(spec.synthetic_image_size),
                  synthetic_seed=spec.synthetic_seed)
    else:
        fp.update(path=spec.path, train_glob=spec.train_glob, test_file=spec.test_file)
    return fp
