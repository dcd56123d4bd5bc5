"""The lanes task: TuSimple loader and generator, row-anchor encoding and
decoding, the UFLD-style model and loss, the task, and compression through
the ordinary runner."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import REPO
from prunebench.config import parse
from prunebench.interfaces import DatasetUnavailable
from prunebench.tasks.lanes import task as lanes_mod
from prunebench.tasks.lanes.data import (
    LaneDataSpec,
    generate_tusimple,
    load_image,
    load_lane_split,
    read_labels,
    scaled_rows,
    synthetic_root,
)
from prunebench.tasks.lanes.models import (
    assign_slots,
    cells_to_x,
    create_lane_model,
    decode_cells,
    encode_targets,
    lane_loss,
    lane_x_at_rows,
    lanes_from_anchors,
    resample_to_rows,
)
from prunebench.tasks.lanes import LanesConfig, LanesTask
from prunebench.tasks.lanes.metric import bench_image

SIZE = (72, 128)  # generated frame (height, width): a tenth of TuSimple's


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_tusimple(tmp_path_factory.mktemp("tusimple") / "tusimple", n_train=9, n_test=6, image_size=SIZE, seed=3)


def _config(root, **over):
    """A tiny lanes config; the runtime rule is off so that scores do not depend on the machine's load."""
    base = {"backbone": "test_resnet", "input_size": [32, 64], "griding_num": 16, "num_row_anchors": 8,
            "head_hidden": 32, "batch_size": 4, "eval_batch_size": 4, "runtime_limit_ms": None,
            "data": {"name": "tusimple", "path": str(root)}}
    base.update(over)
    return parse(LanesConfig, base)


# ------------------------------------------------------------------- loader


def test_generated_data_is_tusimple_format(dataset):
    names = sorted(p.name for p in dataset.iterdir())
    assert names == ["clips", "label_data_0313.json", "label_data_0531.json", "label_data_0601.json", "test_label.json"]
    lines = [json.loads(l) for l in (dataset / "test_label.json").read_text().splitlines()]
    assert len(lines) == 6
    rows = scaled_rows(SIZE[0])
    # TuSimple's 160..710 step 10 scaled to 72 rows: 16..71, 56 distinct rows
    assert rows == list(range(16, 72)) and all(l["h_samples"] == rows for l in lines)
    for line in lines:
        assert line["raw_file"].startswith("clips/0530/") and line["raw_file"].endswith("/20.jpg")
        assert 2 <= len(line["lanes"]) <= 4
        for lane in line["lanes"]:
            assert len(lane) == len(rows) and all(x == -2 or 0 <= x < SIZE[1] for x in lane)
            assert -2 in lane  # lanes start below the horizon
    # a third of the train frames use TuSimple's shorter row set (240..710 -> 24..71)
    train_rows = {len(json.loads(l)["h_samples"]) for f in dataset.glob("label_data_*.json")
                  for l in f.read_text().splitlines()}
    assert train_rows == {56, 48}


def test_generator_is_deterministic(dataset, tmp_path):
    again = generate_tusimple(tmp_path / "again", n_train=9, n_test=6, image_size=SIZE, seed=3)
    other = generate_tusimple(tmp_path / "other", n_train=9, n_test=6, image_size=SIZE, seed=4)
    same = (dataset / "test_label.json").read_text()
    assert (again / "test_label.json").read_text() == same != (other / "test_label.json").read_text()
    assert (again / "clips/0530/0/20.jpg").read_bytes() == (dataset / "clips/0530/0/20.jpg").read_bytes()


def test_labels_lie_on_the_drawn_lanes(dataset):
    """Labelled points are much brighter than the road 12 px beside them."""
    on, off = [], []
    for label in read_labels(dataset / "test_label.json", dataset):
        img, orig = load_image(label.path, SIZE)
        lum = img.float().mean(0)
        assert orig == SIZE
        for lane in label.lanes:
            for x, y in zip(lane, label.h_samples):
                if x >= 0 and 12 <= x < SIZE[1] - 12:
                    on.append(float(lum[int(y), int(x)]))
                    off.append(float(lum[int(y), int(x) - 12]))
    assert np.mean(on) > np.mean(off) + 30, (np.mean(on), np.mean(off))


def test_loader_round_trip(dataset):
    spec = LaneDataSpec("tusimple", path=str(dataset))
    train, test = load_lane_split(spec, "train"), load_lane_split(spec, "test")
    assert (len(train), len(test)) == (9, 6)
    raw = [json.loads(l) for l in (dataset / "test_label.json").read_text().splitlines()]
    assert [l.record() for l in test.labels] == [
        {"raw_file": r["raw_file"], "lanes": [[float(x) for x in lane] for lane in r["lanes"]],
         "h_samples": [float(y) for y in r["h_samples"]]} for r in raw
    ]
    assert all(l.path.is_file() for l in train.labels + test.labels)
    limited = load_lane_split(LaneDataSpec("tusimple", path=str(dataset), limit_test=2), "test")
    assert len(limited) == 2 and {l.raw_file for l in limited.labels} <= {l.raw_file for l in test.labels}


def test_two_folder_layout_is_found(dataset, tmp_path):
    """The dataset as shipped: train_set/ and test_set/, each with its own clips/."""
    root = tmp_path / "tusimple"
    (root / "train_set" / "clips").mkdir(parents=True)
    (root / "test_set" / "clips").mkdir(parents=True)
    for f in dataset.glob("label_data_*.json"):
        shutil.copy(f, root / "train_set")
    shutil.copy(dataset / "test_label.json", root / "test_set")
    shutil.copytree(dataset / "clips" / "0530", root / "test_set" / "clips" / "0530")
    for d in ("0313-1", "0531", "0601"):
        shutil.copytree(dataset / "clips" / d, root / "train_set" / "clips" / d)
    spec = LaneDataSpec("tusimple")  # found as <data_root>/tusimple
    test = load_lane_split(spec, "test", data_root=str(tmp_path))
    assert test.labels[0].path == root / "test_set" / test.labels[0].raw_file
    assert len(load_lane_split(spec, "train", data_root=str(tmp_path))) == 9


def test_missing_data_names_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load_lane_split(LaneDataSpec("tusimple"), "train", data_root=str(tmp_path))
    assert str(tmp_path / "tusimple") in err.value.looked_in
    assert "label_data_0313.json" in err.value.how_to_get and "test_label.json" in err.value.how_to_get
    (tmp_path / "tusimple").mkdir()
    (tmp_path / "tusimple" / "test_label.json").write_text("")
    with pytest.raises(DatasetUnavailable, match="missing label_data"):
        load_lane_split(LaneDataSpec("tusimple"), "train", data_root=str(tmp_path))
    with pytest.raises(DatasetUnavailable, match="no --data-root"):
        load_lane_split(LaneDataSpec("tusimple"), "test")


def test_synthetic_spec_generates_into_the_cache_once(isolated_cache):
    spec = LaneDataSpec("tusimple_synthetic", synthetic_train=3, synthetic_test=2, synthetic_image_size=(48, 96))
    root = synthetic_root(spec)
    assert root.parent == isolated_cache / "data" and (root / "test_label.json").is_file()
    stamp = (root / "test_label.json").stat().st_mtime_ns
    assert len(load_lane_split(spec, "test")) == 2 and synthetic_root(spec) == root
    assert (root / "test_label.json").stat().st_mtime_ns == stamp  # not regenerated


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="name: expected one of 'tusimple', 'tusimple_synthetic', got 'culane'"):
        LaneDataSpec("culane")
    with pytest.raises(ValueError, match=r"synthetic_image_size: expected a list of 2 integers >= 32, got \[8, 8\]"):
        LaneDataSpec("tusimple_synthetic", synthetic_image_size=(8, 8))
    with pytest.raises(ValueError, match="metric_revision: expected one of .* got '2020'"):
        _config("x", metric_revision="2020")


# -------------------------------------------------------- encoding/decoding


def test_lane_x_at_rows_interpolates_only_inside_the_labelled_span():
    x = lane_x_at_rows([-2, 100, 120, -2], [10, 20, 30, 40], [15, 20, 25, 30, 35])
    assert np.isnan(x[0]) and np.isnan(x[4])
    assert x[1:4].tolist() == [100.0, 110.0, 120.0]


def test_slots_fill_outward_from_the_centre():
    rows = [100, 200]
    lane = lambda x: [x, x]  # noqa: E731
    # width 1000: 100 and 300 are left (slots 1, 0 from the centre out), 700 and 900 right (2, 3)
    assert assign_slots([lane(700), lane(100), lane(900), lane(300)], rows, 1000, 4) == [(0, 1), (1, 3), (2, 0), (3, 2)]
    # two lanes around the centre take the two middle slots
    assert assign_slots([lane(400), lane(600)], rows, 1000, 4) == [(1, 0), (2, 1)]
    # three left lanes: the outermost (x = 50) finds no slot
    assert assign_slots([lane(50), lane(200), lane(400), lane(600)], rows, 1000, 4) == [(0, 1), (1, 2), (2, 3)]


def _one_hot_logits(targets: np.ndarray, griding_num: int) -> torch.Tensor:
    t = torch.from_numpy(targets)
    return torch.nn.functional.one_hot(t, griding_num + 1).permute(2, 0, 1).unsqueeze(0).float() * 30.0


@pytest.mark.parametrize("anchor_step", [1, 3])
def test_targets_decode_back_within_one_cell(dataset, anchor_step):
    g = 16
    cell = SIZE[1] / g  # 8 px
    for label in read_labels(dataset / "test_label.json", dataset):
        anchors = np.asarray(label.h_samples[::anchor_step])
        targets = encode_targets(label.lanes, label.h_samples, SIZE[1], anchors, g, 4)
        loc = decode_cells(_one_hot_logits(targets, g))[0]
        assert torch.equal(torch.nan_to_num(loc.round(), nan=g), torch.from_numpy(targets).float())
        xs = cells_to_x(loc.double(), SIZE[1], g).numpy()
        pred = lanes_from_anchors(xs, anchors, label.h_samples)
        slots = assign_slots(label.lanes, label.h_samples, SIZE[1], 4)
        assert len(pred) == len(slots)
        for (_, i), p in zip(slots, pred):
            gt = np.asarray(label.lanes[i])
            p = np.asarray(p)
            both = (gt >= 0) & (p >= 0)
            assert np.abs(p[both] - gt[both]).max() <= cell, (p, gt)
            if anchor_step == 1:  # anchors on every labelled row: the same support exactly
                assert ((gt >= 0) == (p >= 0)).all()
        if anchor_step == 1:  # 8 px cells are well inside the 20 px threshold
            assert bench_image(pred, label.lanes, label.h_samples) == (1.0, 0.0, 0.0)


def test_resample_needs_both_neighbouring_anchors():
    x = resample_to_rows(np.array([10.0, 20.0, np.nan, 40.0]), [0, 10, 20, 30], [0, 5, 15, 20, 25, 30, 35])
    assert x[:2].tolist() == [10.0, 15.0]
    assert np.isnan(x[2]) and np.isnan(x[3]) and np.isnan(x[4])  # next to the gap, or on it
    assert x[5] == 40.0 and np.isnan(x[6])  # on the last anchor; below it nothing


# ------------------------------------------------------------- model, loss


def test_model_output_shape_and_layers():
    model = create_lane_model("test_resnet", input_hw=(64, 128), griding_num=20, num_anchors=7, num_lanes=4, hidden=16)
    out = model(torch.zeros(2, 3, 64, 128))
    assert out.shape == (2, 21, 7, 4)
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert names[0].startswith("backbone.") and names[-3:] == ["reduce", "fc1", "fc2"]
    # UFLD's head: 8 reduced channels over the stride-32 map (2 x 4) -> fc1 in = 64
    assert model.fc1.in_features == 8 * 2 * 4 and model.fc2.out_features == 21 * 7 * 4
    with pytest.raises(ValueError, match="unknown lane backbone 'resnet18x'"):
        create_lane_model("resnet18x", input_hw=(64, 128), griding_num=4, num_anchors=2, num_lanes=2)


def test_loss_terms():
    targets = torch.tensor([[[3, 4], [3, 4]]])  # [B=1, A=2, L=2]
    good = _one_hot_logits(targets[0].numpy(), 4)
    assert lane_loss(good, targets) < 1e-6
    noisy = good + torch.randn(good.shape, generator=torch.Generator().manual_seed(0)) * 10
    ce = lane_loss(noisy, targets)
    assert 0 < lane_loss(noisy, targets, focal_gamma=2.0) < ce  # focal down-weights
    # identical anchors: the similarity term adds nothing; differing ones add their mean |difference|
    assert lane_loss(good, targets, similarity_weight=1.0) == lane_loss(good, targets)
    sim = (noisy[:, :, 1] - noisy[:, :, 0]).abs().mean()
    assert lane_loss(noisy, targets, similarity_weight=0.5) == pytest.approx(float(ce + 0.5 * sim), rel=1e-5)


# --------------------------------------------------------------------- task


@pytest.fixture(scope="module")
def task(dataset):
    t = LanesTask(_config(dataset))
    t.prepare()
    return t


def test_task_trains_and_evaluates(task):
    from prunebench import OptimizerConfig, Trainer

    assert task.anchors.tolist() == np.linspace(16, 71, 8).tolist()  # the data's row span
    torch.manual_seed(0)
    model = task.build_model()
    x, y = next(task.train_batches(torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 32, 64) and y.shape == (4, 8, 4) and int(y.max()) <= 16
    before = float(task.loss(model, (x, y)).detach())
    report = Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(2 / task.steps_per_epoch())
    assert report.steps == 2 and float(task.loss(model, (x, y)).detach()) < before
    m = task.evaluate(model)
    assert m["eval_images"] == 6 and 0 <= m["accuracy"] <= 125 and m["runtime_ms_per_image"] > 0
    assert m["images_over_runtime_limit"] is None  # the rule is off: not modelled, not 0
    assert {"accuracy", "fp_rate", "fn_rate", "f1", "runtime_ms_per_image", "loss"} <= set(m)
    records, _ = task.predict_records(model)
    for rec, label in zip(records, task.test.labels):
        assert rec["raw_file"] == label.raw_file and rec["run_time"] > 0
        assert all(len(lane) == len(label.h_samples) for lane in rec["lanes"])
    assert task.example_input().shape == (1, 3, 32, 64)
    assert task.describe() == {"model": "ufld_test_resnet", "dataset": "tusimple"}


def test_runtime_limit_zeroes_slow_images(dataset):
    slow = LanesTask(_config(dataset, runtime_limit_ms=1e-6))
    slow.prepare()
    torch.manual_seed(0)
    m = slow.evaluate(slow.build_model())
    # every image's forward "took" longer than the limit: (0, 0, 1) each
    assert (m["accuracy"], m["fp_rate"], m["fn_rate"], m["images_over_runtime_limit"]) == (0.0, 0.0, 1.0, 6)


def test_streamed_frames_match_frames_in_memory(dataset, monkeypatch, task):
    torch.manual_seed(0)
    model = task.build_model()
    in_memory = task.evaluate(model)
    monkeypatch.setattr(lanes_mod, "IN_MEMORY_MAX_BYTES", 0)
    streamed = LanesTask(_config(dataset))
    streamed.prepare()
    assert streamed._test_mem is None and streamed._train_mem is None
    x, y = next(streamed.train_batches(torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 32, 64) and y.shape == (4, 8, 4)
    again = streamed.evaluate(model)
    for key in ("accuracy", "fp_rate", "fn_rate", "loss"):
        assert again[key] == pytest.approx(in_memory[key]), key


# ------------------------------------------------------------------- runner

SUITE = """
suite: lanes-runner-test
version: 1
task:
  name: lanes
  backbone: test_resnet
  input_size: [32, 64]
  griding_num: 16
  num_row_anchors: 8
  head_hidden: 32
  batch_size: 8
  data: {{name: tusimple, path: {root}}}
dense: {{epochs: 1, optimizer: {{lr: 0.05}}}}
budget: {{epochs: 0.5}}
quantization: {{bits: 8}}
layers: {{exclude_structured: [fc2]}}
hardware: [storage, compute]
methods:
  magnitude: {{}}
  admm: {{quantize: false, stages: 2, iterations: 1}}  # prune-only keeps it fast; the suite's quantizer follows
protocols:
  equal_compression: {{structure: [unstructured, filter], rates: [4]}}
"""


@pytest.mark.parametrize("method,structure", [("magnitude", "unstructured"), ("magnitude", "filter"), ("admm", "unstructured")])
def test_methods_compress_the_lane_model_through_the_runner(dataset, tmp_path, isolated_cache, method, structure):
    from prunebench.results import ResultStore
    from prunebench.runner import RunContext, run_point
    from prunebench.suite import RunPoint, load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(root=dataset))
    suite = load_suite(path)
    store = ResultStore(tmp_path / "res")
    res = run_point(suite, RunPoint("equal_compression", method, structure, 4.0, 0), RunContext(results=store, progress=False))
    rec = res.record
    assert rec.status == "passed" and rec.task == "lanes" and rec.primary_metric == "accuracy"
    assert rec.achieved_rate >= 4.0 * 0.999 and rec.epochs_spent <= 0.5 + 1e-9
    layers = rec.target["layers"]
    assert layers[0] == "backbone.conv1.0" and {"reduce", "fc1"} <= set(layers)
    assert ("fc2" in layers) == (structure == "unstructured")  # the suite keeps fc2 dense for structured targets
    compute = rec.hardware["compute"]
    for name in ("backbone.conv1.0", "backbone.layer4.0.conv2", "reduce", "fc1"):
        assert f"layer.{name}.dense_macs" in compute or any(k.startswith(f"layer.{name}.") for k in compute), name
    assert rec.hardware["storage"]["stored_bits"] > 0
    assert {"accuracy", "fp_rate", "fn_rate"} <= set(rec.metrics) <= set(rec.dense_metrics)
    assert max(rec.levels_per_layer.values()) <= 255  # 8-bit
    assert store.records()[0]["model"] == "ufld_test_resnet"


# --------------------------------------------------------------- real suite


def test_real_suite_skips_with_the_dataset_message(pytester, tmp_path):
    suite = REPO / "suites" / "lanes" / "ufld_resnet18_tusimple.yaml"
    (pytester.path / "suites").mkdir()
    shutil.copy(suite, pytester.path / "suites" / suite.name)
    res = pytester.runpytest_subprocess(
        "suites", "--data-root", str(tmp_path), "--method", "magnitude", "--wandb", "off",
        "--results", "res", "-p", "no:cacheprovider", "-rs",
    )
    outcomes = res.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 1 and "passed" not in outcomes and "failed" not in outcomes
    res.stdout.fnmatch_lines([f"*dataset 'tusimple' not found (looked in: {tmp_path / 'tusimple'}*label_data_0313.json*"])
