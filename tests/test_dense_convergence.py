"""dense: {converge: ...}: the dense model trains until the suite's rule says it
has converged (the cap is dense.epochs), and the record says how long it trained."""

import pytest

from prunebench.baseline import dense_baseline
from prunebench.config import parse
from prunebench.suite import DenseSpec
from prunebench.tasks.classification import ClassificationConfig, ClassificationTask


def _task(fraction=0.0):
    cfg = parse(ClassificationConfig, {"model": "lenet5", "batch_size": 64, "validation_fraction": fraction,
                                       "data": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 128}})
    task = ClassificationTask(cfg)
    task.prepare()
    return task


def test_training_stops_when_the_loss_stops_improving(tmp_path):
    task = _task()
    # a huge min_delta: no epoch counts as an improvement after the first, so
    # patience 2 stops after epoch 3 of a 20-epoch cap
    spec = parse(DenseSpec, {"epochs": 20, "converge": {"monitor": "train_loss", "patience": 2, "min_delta": 1e9}})
    dense = dense_baseline("classification", task, spec, 0, cache_dir=tmp_path, progress=False)
    assert dense.epochs_trained == 3
    again = dense_baseline("classification", task, spec, 0, cache_dir=tmp_path, progress=False)
    assert again.source == "cache" and again.epochs_trained == 3
    # without a rule the cap is the recipe
    plain = dense_baseline("classification", task, parse(DenseSpec, {"epochs": 2}), 0, cache_dir=tmp_path,
                           progress=False)
    assert plain.epochs_trained == 2 and plain.key != dense.key


def test_a_loose_rule_trains_to_the_cap_and_validation_needs_a_split(tmp_path):
    spec = parse(DenseSpec, {"epochs": 3, "converge": {"monitor": "validation", "patience": 50, "min_delta": 0}})
    assert dense_baseline("classification", _task(0.25), spec, 0, cache_dir=tmp_path,
                          progress=False).epochs_trained == 3
    with pytest.raises(ValueError, match=r"dense.converge.monitor: expected a task with a validation split"):
        dense_baseline("classification", _task(), spec, 0, cache_dir=tmp_path, progress=False)
