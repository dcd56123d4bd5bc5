"""Detection task: mmdet configs, safe checkpoints, the COCO metric, and an
end-to-end run on generated COCO data (skipped where mmcv has no ops)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from prunebench.interfaces import DependencyUnavailable


def _mmdet_ready() -> str | None:
    from prunebench.tasks.detection.mmdet_support import require_mmdet

    try:
        require_mmdet()
    except DependencyUnavailable as err:
        return str(err)
    return None


_missing = _mmdet_ready()
needs_mmdet = pytest.mark.skipif(_missing is not None, reason=f"detection needs mmdet with mmcv ops: {_missing}")


# ------------------------------------------------------------------ configs


@needs_mmdet
@pytest.mark.parametrize(
    "config, head",
    [
        ("retinanet/retinanet_r18_fpn_1x_coco.py", "RetinaHead"),
        ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "Shared2FCBBoxHead"),
        ("yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py", "YOLOV3Head"),
    ],
)
def test_packaged_configs_build_with_our_class_count(config, head):
    from prunebench.tasks.detection.mmdet_support import build_detector, load_model_config

    cfg = load_model_config(config, num_classes=3, overrides={})
    model = build_detector(cfg)
    heads = [m for m in model.modules() if type(m).__name__ == head]
    assert len(heads) == 1 and heads[0].num_classes == 3
    # no weights are fetched at build time: Pretrained init_cfgs are dropped
    assert "Pretrained" not in json.dumps(cfg, default=str)


@needs_mmdet
def test_config_names_are_confined_to_the_mmdet_package():
    from prunebench.tasks.detection.mmdet_support import load_model_config

    for bad in ("/etc/passwd.py", "../../evil.py", "retinanet/retinanet_r18_fpn_1x_coco.yaml"):
        with pytest.raises(ValueError, match="inside mmdet's configs"):
            load_model_config(bad, 3, {})
    with pytest.raises(ValueError, match="Did you mean: retinanet_r18_fpn_1x_coco.py"):
        load_model_config("retinanet/retinanet_r18_fpn_1x_cooc.py", 3, {})


@needs_mmdet
def test_model_overrides_reach_the_built_model():
    from prunebench.tasks.detection.mmdet_support import build_detector, load_model_config

    cfg = load_model_config(
        "retinanet/retinanet_r18_fpn_1x_coco.py", 2,
        {"backbone.base_channels": 16, "neck.in_channels": [16, 32, 64, 128], "neck.out_channels": 32,
         "bbox_head.in_channels": 32, "bbox_head.feat_channels": 32},
    )
    model = build_detector(cfg)
    assert model.backbone.conv1.out_channels == 16
    assert model.neck.fpn_convs[0].conv.out_channels == 32


# -------------------------------------------------------------- checkpoints


def _mmengine_style_checkpoint(path, extra=None):
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("prunebench-test-ckpt")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/loss", np.float64(1.25))
    ckpt = {
        "meta": {"epoch": 3, "seed": np.int64(7), "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": {"module.conv.weight": torch.ones(2, 1, 1, 1), "fc.bias": torch.zeros(2)},
        "message_hub": hub.state_dict(),
    }
    if extra:
        ckpt["meta"]["extra"] = extra
    torch.save(ckpt, path)


@needs_mmdet
def test_mmengine_checkpoint_loads_under_weights_only(tmp_path):
    from prunebench.tasks.detection.mmdet_support import load_mmengine_checkpoint

    path = tmp_path / "epoch_3.pth"
    _mmengine_style_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):  # torch's default refuses it...
        torch.load(path, weights_only=True)
    state = load_mmengine_checkpoint(path)  # ...the allow-list admits exactly what mmengine writes
    assert set(state) == {"conv.weight", "fc.bias"}
    assert torch.equal(state["conv.weight"], torch.ones(2, 1, 1, 1))


class _Gadget:
    """Pickles as getattr(HistoryBuffer, '__init_subclass__'): an allow-listed
    owner with a name that is not one of its statistics, the shape a crafted
    checkpoint would use to climb from an allowed class to arbitrary code."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer

        return (getattr, (HistoryBuffer, "__init_subclass__"))


@needs_mmdet
def test_mmengine_checkpoint_refuses_other_getattr(tmp_path):
    from prunebench.tasks.detection.mmdet_support import load_mmengine_checkpoint

    path = tmp_path / "evil.pth"
    _mmengine_style_checkpoint(path, extra=_Gadget())
    with pytest.raises(pickle.UnpicklingError, match="only HistoryBuffer statistics"):
        load_mmengine_checkpoint(path)


# --------------------------------------------------------------- COCO metric


def _tiny_coco(tmp_path):
    """Two images, two categories (ids 3 and 7: not contiguous, as in COCO)."""
    ann = {
        "info": {}, "licenses": [],
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100},
                   {"id": 2, "file_name": "b.png", "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "cat", "supercategory": "x"}, {"id": 7, "name": "dog", "supercategory": "x"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [60, 60, 30, 20], "area": 600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 50, 80], "area": 4000, "iscrowd": 0},
        ],
    }
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(ann))
    return path


def _pred(img_id, boxes_xyxy, scores, labels):
    return {"img_id": img_id, "ori_shape": (100, 100), "bboxes": torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


@needs_mmdet
def test_coco_metric_hand_case(tmp_path):
    from prunebench.tasks.detection.task import coco_metrics

    ann = _tiny_coco(tmp_path)
    perfect = [_pred(1, [[10, 10, 50, 50], [60, 60, 90, 80]], [0.9, 0.8], [0, 1]), _pred(2, [[0, 0, 50, 80]], [0.7], [0])]
    assert coco_metrics(ann, ["cat", "dog"], perfect)["mAP"] == pytest.approx(100.0)
    # Only "dog" detected, shifted so IoU = (24*20)/(30*20 + 30*20 - 24*20) = 480/720 = 0.667:
    # a hit at IoU thresholds 0.50..0.65 (4 of 10) for dog -> dog AP 40; cat has GT but no
    # detection -> AP 0; mAP = (40 + 0) / 2 = 20.
    shifted = [_pred(1, [[66, 60, 96, 80]], [0.9], [1]), _pred(2, [], [], [])]
    got = coco_metrics(ann, ["cat", "dog"], shifted)
    assert got["mAP"] == pytest.approx(20.0)
    assert got["AP50"] == pytest.approx(50.0)  # dog 100, cat 0
    assert got["AP75"] == pytest.approx(0.0)
    # nothing detected anywhere: every AP is 0, not a crash
    assert coco_metrics(ann, ["cat", "dog"], [_pred(1, [], [], []), _pred(2, [], [], [])])["mAP"] == 0.0


@needs_mmdet
def test_coco_metric_matches_pycocotools(tmp_path):
    """Random detections: the task's figures equal COCOeval's own (mmdet rounds to 1e-3)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from prunebench.tasks.detection.task import coco_metrics

    ann = _tiny_coco(tmp_path)
    rng = np.random.default_rng(0)
    preds, dets = [], []
    cat_ids = [3, 7]
    for img_id in (1, 2):
        xy = rng.uniform(0, 60, size=(6, 2))
        wh = rng.uniform(10, 50, size=(6, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.uniform(0.05, 1, size=6)
        labels = rng.integers(0, 2, size=6)
        preds.append(_pred(img_id, boxes.tolist(), scores.tolist(), labels.tolist()))
        for b, s, lab in zip(boxes, scores, labels):
            dets.append({"image_id": img_id, "category_id": cat_ids[lab], "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    # a few near-GT boxes so that AP is not trivially 0
    preds[0]["bboxes"][0] = torch.tensor([12.0, 11.0, 49.0, 52.0])
    preds[0]["labels"][0] = 0
    dets[0]["bbox"], dets[0]["category_id"] = [12.0, 11.0, 37.0, 41.0], 3
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    ours = coco_metrics(ann, ["cat", "dog"], preds)
    assert ev.stats[0] > 0.05
    assert ours["mAP"] == pytest.approx(100 * round(ev.stats[0], 3), abs=1e-6)
    assert ours["AP50"] == pytest.approx(100 * round(ev.stats[1], 3), abs=1e-6)
    assert ours["AP75"] == pytest.approx(100 * round(ev.stats[2], 3), abs=1e-6)


# ---------------------------------------------------------------- end to end


@needs_mmdet
@pytest.mark.slow
def test_retinanet_smoke_suite_end_to_end(pytester, isolated_cache):
    """The shipped detection smoke suite (--smoke variant) through pytest, as a
    user runs it: mmdet RetinaNet on generated COCO data, magnitude and ADMM,
    mmdet's COCO metric, hardware scores, then the leaderboard."""
    import shutil

    from conftest import REPO
    from prunebench.report import write_leaderboards

    (pytester.path / "suites").mkdir()
    shutil.copy(REPO / "suites" / "smoke" / "retinanet_coco_synthetic.yaml", pytester.path / "suites")
    res = pytester.runpytest_subprocess("suites", "--smoke", "--wandb", "off", "--results", "res", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2)
    from prunebench.results import ResultStore

    recs = ResultStore(pytester.path / "res").records()
    assert {r["method"]["name"] for r in recs} == {"magnitude", "admm"}
    for r in recs:
        assert r["task"] == "detection" and r["primary_metric"] == "mAP"
        assert r["dense_metrics"]["mAP"] > 10, r["dense_metrics"]  # the detector learned the shapes
        assert r["metrics"]["mAP"] is not None and r["metrics"]["eval_images"] == 48
        assert r["achieved_rate"] >= 2 * 0.999
        layers = r["target"]["layers"]
        for part in ("backbone.", "neck.", "bbox_head."):
            assert any(name.startswith(part) for name in layers), part
        assert r["hardware"]["storage"]["stored_bits"] > 0
        assert r["hardware"]["compute"]["dense_macs"] > 0
        assert r["versions"]["mmdet"] == "3.3.0" and "mmcv" in r["versions"]
    pages = write_leaderboards(pytester.path / "res", pytester.path / "boards")
    text = "\n".join(p.read_text() for p in pages if p.suffix == ".md")
    assert "smoke-retinanet-coco-synthetic" in text
    assert "magnitude" in text and "admm" in text and "mAP" in text


def test_detection_items_skip_with_the_reason_when_mmcv_has_no_ops(pytester, isolated_cache):
    """mmcv installed without its compiled ops (or not at all): the detection
    suite's items are skipped, naming mmcv._ext and how to build it."""
    import shutil

    from conftest import REPO

    (pytester.path / "suites").mkdir()
    shutil.copy(REPO / "suites" / "smoke" / "retinanet_coco_synthetic.yaml", pytester.path / "suites")
    # a None entry in sys.modules makes `import mmcv._ext` raise ImportError
    pytester.makeconftest("import sys\nsys.modules['mmcv._ext'] = None\n")
    res = pytester.runpytest_subprocess("suites", "--smoke", "--wandb", "off", "--results", "res", "-rs", "-p", "no:cacheprovider")
    res.assert_outcomes(skipped=2)
    res.stdout.fnmatch_lines(["*SKIPPED*mmcv*To get it: run scripts/setup.sh*"])


# the three families the suites name, shrunk so one CPU step takes about a second
_FAMILIES = {
    "retinanet/retinanet_r18_fpn_1x_coco.py": {
        "backbone.base_channels": 16, "neck.in_channels": [16, 32, 64, 128], "neck.out_channels": 32,
        "bbox_head.in_channels": 32, "bbox_head.feat_channels": 32, "bbox_head.stacked_convs": 1},
    "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py": {
        "backbone.depth": 18, "backbone.base_channels": 16, "neck.in_channels": [16, 32, 64, 128],
        "neck.out_channels": 32, "rpn_head.in_channels": 32, "rpn_head.feat_channels": 32,
        "roi_head.bbox_roi_extractor.out_channels": 32, "roi_head.bbox_head.in_channels": 32,
        "roi_head.bbox_head.fc_out_channels": 64},
    "yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py": {},
}


@needs_mmdet
@pytest.mark.parametrize("config", list(_FAMILIES))
def test_each_detector_family_trains_evaluates_and_is_compressed(config, isolated_cache):
    """RetinaNet, Faster R-CNN and YOLOv3 through the plain Task contract:
    SGD steps, COCO evaluation, magnitude pruning (no detector-specific code),
    and a CompressedModel covering backbone, neck and head."""
    from prunebench import CompressedModel, OptimizerConfig, Structure, Target, Trainer
    from prunebench.config import parse
    from prunebench.methods.magnitude import MagnitudePruning
    from prunebench.tasks.detection import DetectionConfig, DetectionTask
    from prunebench.verify import verify

    cfg = parse(DetectionConfig, {
        "config": config, "image_size": [96, 96], "batch_size": 2, "eval_batch_size": 4,
        "data": {"name": "coco_synthetic", "synthetic_train": 4, "synthetic_val": 2, "synthetic_size": [96, 96]},
        "model_overrides": _FAMILIES[config],
    })
    task = DetectionTask(cfg)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model()
    layers = task.compressible_layers(model)
    target = Target(layers=tuple(layers), structure=Structure.parse("unstructured"), rate=2.0)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.001), budget_epochs=1, progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    MagnitudePruning().compress(model, target, trainer)
    assert trainer.steps_taken == 2  # one epoch of 4 images in batches of 2
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("backbone.") for n in changed)
    check = verify(model, target, method="magnitude")
    assert check.achieved_rate >= 2.0 * 0.999
    metrics = task.evaluate(model)
    assert metrics["eval_images"] == 2 and "mAP" in metrics
    artifact = CompressedModel.from_model(model, layers, task.example_input())
    names = [layer.name for layer in artifact.layers]
    assert any(n.startswith("backbone.") for n in names)
    assert any(n.startswith("neck.") for n in names)
    assert any(n.startswith(("bbox_head.", "roi_head.", "rpn_head.")) for n in names)
    assert artifact.compression_rate >= 2.0 * 0.999
    assert all(layer.output_positions > 0 for layer in artifact.layers)


@needs_mmdet
def test_kitti_data_is_scored_with_the_devkit_ap(isolated_cache):
    """Generated KITTI data through the detection task: a seeded half split of
    training/, and KITTI AP per class and difficulty as the metrics."""
    from prunebench.config import parse
    from prunebench.tasks.detection import DetectionConfig, DetectionTask

    cfg = parse(DetectionConfig, {
        "config": "retinanet/retinanet_r18_fpn_1x_coco.py", "image_size": [96, 320], "batch_size": 4,
        "data": {"name": "kitti_synthetic", "synthetic_train": 6, "synthetic_val": 6, "synthetic_size": [96, 320]},
        "model_overrides": _FAMILIES["retinanet/retinanet_r18_fpn_1x_coco.py"],
    })
    task = DetectionTask(cfg)
    task.prepare()
    assert task.primary_metric == "AP_R40_moderate"
    assert len(task.train) == len(task.val) == 6 and task.classes == ["Car", "Pedestrian", "Cyclist"]
    assert not {i.img_id for i in task.train} & {i.img_id for i in task.val}
    torch.manual_seed(0)
    model = task.build_model()
    metrics = task.evaluate(model)
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for level in ("easy", "moderate", "hard"):
            assert f"{cls}_{level}_AP_R40" in metrics and f"{cls}_{level}_AP_R11" in metrics
    # an untrained detector: every AP that has ground truth is a number in [0, 100]
    scored = [v for k, v in metrics.items() if "_AP_R" in k and v is not None]
    assert scored and all(0.0 <= v <= 100.0 for v in scored)
    assert metrics["AP_R40_moderate"] is not None


@needs_mmdet
def test_model_config_types_are_checked_against_the_registries_before_building(tmp_path):
    """load_model_config refuses a dotted ``type`` even when called without
    DetectionConfig's check, and any bare name no registry holds; the shipped
    configs' own types all pass (they are built in the tests above)."""
    from prunebench.tasks.detection.mmdet_support import check_registry_types, load_model_config

    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="dotted paths and objects are refused"):
        load_model_config("retinanet/retinanet_r18_fpn_1x_coco.py", 2, {"bbox_head.type": "os.system"})
    with pytest.raises(ValueError, match="'NoSuchHead' is not a registered"):
        load_model_config("retinanet/retinanet_r18_fpn_1x_coco.py", 2, {"bbox_head.type": "NoSuchHead"})
    with pytest.raises(ValueError, match="model.test_cfg.nms.type: expected one of nms, soft_nms"):
        check_registry_types({"type": "RetinaNet", "test_cfg": {"nms": {"type": f"open('{marker}', 'w')"}}})
    assert not marker.exists()


@needs_mmdet
def test_an_unregistered_bare_type_is_not_imported(tmp_path, monkeypatch):
    """mmengine's Registry.get imports a name it does not hold as a module; the
    registry check must refuse such a name without importing it."""
    from prunebench.tasks.detection.mmdet_support import load_model_config

    marker = tmp_path / "imported"
    (tmp_path / "pb_side_effect_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="'pb_side_effect_mod' is not a registered"):
        load_model_config("retinanet/retinanet_r18_fpn_1x_coco.py", 2, {"bbox_head.type": "pb_side_effect_mod"})
    assert not marker.exists()
