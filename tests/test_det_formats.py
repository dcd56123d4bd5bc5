"""KITTI label files, COCO instances files and the generated detection sets."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prunebench.interfaces import DatasetUnavailable
from prunebench.tasks.detection.data import (
    COCO_SHAPES,
    COLOUR_JITTER,
    generate_coco,
    generate_kitti,
    load_coco,
    load_kitti_split,
    read_kitti_labels,
    write_kitti_labels,
)
from prunebench.tasks.detection.kitti_eval import KittiBox

# flat-coloured objects are within the jitter of their class colour, +1 for rounding
COLOUR_TOL = COLOUR_JITTER + 1


def quiet_coco(path):
    # pycocotools comes with the `detection` extra; without it the check is skipped, not failed
    COCO = pytest.importorskip("pycocotools.coco", reason="pycocotools is in the `detection` extra").COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
        return COCO(str(path))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ===================================================================== KITTI labels


def test_kitti_label_round_trip(tmp_path):
    boxes = [
        KittiBox("Car", (712.4, 143.0, 810.73, 307.92), truncated=0.12, occluded=1, score=0.875),
        KittiBox("Pedestrian", (1.0, 2.5, 30.25, 90.0), truncated=0.0, occluded=0, score=0.1234567891),
        KittiBox("DontCare", (0.0, 0.0, 5.0, 5.0), truncated=-1, occluded=-1, score=0.5),
    ]
    labels = tmp_path / "label_2" / "000007.txt"
    write_kitti_labels(labels, boxes)
    lines = labels.read_text().splitlines()
    assert [len(line.split()) for line in lines] == [15, 15, 15]
    # alpha -10, dims -1, location -1000, rotation -10: the devkit's "not given"
    assert lines[0].split()[3] == "-10" and lines[0].split()[8:] == ["-1"] * 3 + ["-1000"] * 3 + ["-10"]
    # without a score field every box reads back with score 1.0
    assert read_kitti_labels(labels) == [KittiBox(b.name, b.bbox, b.truncated, b.occluded) for b in boxes]

    results = tmp_path / "results" / "000007.txt"
    write_kitti_labels(results, boxes, with_score=True)
    assert [len(line.split()) for line in results.read_text().splitlines()] == [16, 16, 16]
    assert read_kitti_labels(results) == boxes


def test_read_official_kitti_line(tmp_path):
    path = tmp_path / "000000.txt"
    path.write_text("Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n"
                    "\n"
                    "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n")
    ped, dc = read_kitti_labels(path)
    assert ped == KittiBox("Pedestrian", (712.40, 143.00, 810.73, 307.92), truncated=0.0, occluded=0)
    assert ped.height == pytest.approx(164.92)
    assert (dc.name, dc.truncated, dc.occluded) == ("DontCare", -1.0, -1)


def test_bad_kitti_line_names_file_and_line(tmp_path):
    path = tmp_path / "000001.txt"
    path.write_text("Car 0 0 -10 1 2 3 4 -1 -1 -1 -1000 -1000 -1000 -10\nCar 0 0 1 2 3 4\n")
    with pytest.raises(ValueError, match=r"000001.txt:2: expected 15 or 16 fields, got 7"):
        read_kitti_labels(path)
    path.write_text("Car 0 0 -10 10 2 3 4 -1 -1 -1 -1000 -1000 -1000 -10\n")  # x2 < x1
    with pytest.raises(ValueError, match=r"000001.txt:1: .*x2 >= x1"):
        read_kitti_labels(path)


# ===================================================================== KITTI split


def test_load_kitti_split_missing_dirs(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_kitti_split(tmp_path / "training")
    assert info.value.dataset == "kitti"
    assert str(tmp_path / "training" / "image_2") in info.value.looked_in
    assert "label_2" in " ".join(info.value.looked_in)
    (tmp_path / "training" / "image_2").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable):  # labels still missing
        load_kitti_split(tmp_path / "training")


def test_load_kitti_split_pairs_sorted_and_checked(tmp_path):
    generate_kitti(tmp_path, n_images=3, image_size=(64, 160), seed=0)
    split = tmp_path / "training"
    items = load_kitti_split(split)
    assert [p.name for p, _ in items] == ["000000.png", "000001.png", "000002.png"]
    assert items[1][1] == read_kitti_labels(split / "label_2" / "000001.txt")
    (split / "image_2" / "000010.png").write_bytes((split / "image_2" / "000000.png").read_bytes())
    with pytest.raises(ValueError, match=r"images without labels \[10\]"):
        load_kitti_split(split)


def test_generated_kitti_covers_the_evaluation_cases(tmp_path):
    info = generate_kitti(tmp_path, n_images=40, seed=3)
    items = load_kitti_split(info["root"])
    assert len(items) == 40 == info["n_images"]
    objects = [(path, b) for path, boxes in items for b in boxes if b.name != "DontCare"]
    assert {b.name for _, b in objects} == {"Car", "Pedestrian", "Cyclist"}
    heights = np.array([b.height for _, b in objects])
    # below Moderate's 25 px, between 25 and 40, and Easy-sized all occur
    assert (heights < 25).any() and ((heights >= 25) & (heights < 40)).any() and (heights >= 40).any()
    assert any(b.truncated > 0 for _, b in objects) and any(b.truncated == 0 for _, b in objects)
    assert {b.occluded for _, b in objects} >= {0, 1}
    assert any(b.name == "DontCare" for _, boxes in items for b in boxes)
    assert sum(info["objects"].values()) == sum(len(boxes) for _, boxes in items)
    # widths: cars wide, pedestrians thin, cyclists between (untruncated boxes)
    ratio = {n: [(b.bbox[2] - b.bbox[0]) / b.height for _, b in objects if b.name == n and b.truncated == 0]
             for n in ("Car", "Pedestrian", "Cyclist")}
    assert min(ratio["Car"]) > max(ratio["Cyclist"]) > min(ratio["Cyclist"]) > max(ratio["Pedestrian"])
    # every box lies in the image, and fully visible objects show their colour inside it
    colour = {"Car": (190, 40, 40), "Pedestrian": (40, 60, 180), "Cyclist": (40, 160, 70)}
    for path, b in objects:
        pixels = np.asarray(Image.open(path), np.int64)
        h, w = pixels.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in b.bbox)
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (path, b)
        if b.occluded == 0 and b.truncated == 0:
            inside = pixels[y1:y2, x1:x2].reshape(-1, 3)
            close = np.abs(inside - np.array(colour[b.name])).max(axis=1) <= COLOUR_TOL
            assert close.mean() > 0.1, (path, b)


# ===================================================================== COCO


def test_load_coco_missing(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_coco(tmp_path / "annotations" / "instances_val.json", tmp_path / "val")
    assert info.value.dataset == "coco"
    assert info.value.looked_in == [str(tmp_path / "annotations" / "instances_val.json"), str(tmp_path / "val")]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2
def test_generated_coco_is_valid_and_boxes_match_pixels(tmp_path):
    info = generate_coco(tmp_path, n_train=6, n_val=4, seed=11)
    assert sorted(p.name for p in (tmp_path / "annotations").iterdir()) == [
        "instances_train.json", "instances_val.json"]
    assert info["categories"] == [{"id": 1, "name": "square", "supercategory": "shape"},
                                  {"id": 2, "name": "disc", "supercategory": "shape"},
                                  {"id": 3, "name": "triangle", "supercategory": "shape"}]
    coco = quiet_coco(info["train"]["ann_file"])
    assert set(coco.dataset) >= {"info", "licenses", "images", "annotations", "categories"}
    assert sorted(coco.getImgIds()) == list(range(1, 7))
    assert len(coco.getAnnIds()) == info["train"]["n_annotations"] >= 6  # 1-4 shapes per image
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann["image_id"])[0]
        pixels = np.asarray(Image.open(tmp_path / "train" / img["file_name"]), np.int64)
        assert pixels.shape == (img["height"], img["width"], 3) == (128, 128, 3)
        x, y, w, h = ann["bbox"]
        # 12-40 px shapes, aspect 0.75-1.33; a triangle's apex row may be empty
        assert 8 <= min(w, h) and max(w, h) <= 54 and ann["iscrowd"] == 0
        assert ann["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
        assert 0 < ann["area"] <= w * h
        assert coco.annToMask(ann).sum() == pytest.approx(w * h, rel=0.1)
        is_obj = np.abs(pixels - np.array(COCO_SHAPES[names[ann["category_id"]]][1])).max(axis=2) <= COLOUR_TOL
        # the box centre is the object's colour, and its pixel count is the area
        assert is_obj[y + h // 2, x + w // 2], ann
        assert is_obj[y:y + h, x:x + w].sum() == ann["area"]
        # tight: the box's edge rows/columns hold object pixels, the ones just outside none
        box = is_obj[y:y + h, x:x + w]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        if y > 0:
            assert not is_obj[y - 1, x:x + w].any()
        if x + w < img["width"]:
            assert not is_obj[y:y + h, x + w].any()


def test_generated_coco_scores_perfectly_in_cocoeval(tmp_path):
    COCOeval = pytest.importorskip("pycocotools.cocoeval", reason="pycocotools is in the `detection` extra").COCOeval

    info = generate_coco(tmp_path, n_train=0, n_val=5, seed=2)
    gt = quiet_coco(info["val"]["ann_file"])
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # mAP@[.5:.95] of the ground truth itself


def test_load_coco_reads_generated_set(tmp_path):
    info = generate_coco(tmp_path, n_train=3, n_val=0, seed=4, classes=("disc", "cross"))
    data = load_coco(info["train"]["ann_file"], info["train"]["image_dir"])
    raw = json.loads(Path(info["train"]["ann_file"]).read_text())
    assert [c.name for c in data.categories] == ["disc", "cross"]
    assert [im.id for im in data.images] == [1, 2, 3]
    assert all(im.path.is_file() and (im.width, im.height) == (128, 128) for im in data.images)
    assert sum(len(a) for a in data.annotations.values()) == len(raw["annotations"])
    first = raw["annotations"][0]
    got = data.annotations[first["image_id"]][0]
    assert (got.id, got.category_id, list(got.bbox), got.area, got.iscrowd) == (
        first["id"], first["category_id"], first["bbox"], first["area"], 0)


def test_generation_is_deterministic(tmp_path):
    generate_coco(tmp_path / "a", n_train=3, n_val=2, image_size=(64, 96), seed=7)
    generate_coco(tmp_path / "b", n_train=3, n_val=2, image_size=(64, 96), seed=7)
    generate_coco(tmp_path / "c", n_train=3, n_val=2, image_size=(64, 96), seed=8)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")
    generate_kitti(tmp_path / "ka", n_images=4, seed=7)
    generate_kitti(tmp_path / "kb", n_images=4, seed=7)
    generate_kitti(tmp_path / "kc", n_images=6, seed=7)
    a, c = tree_bytes(tmp_path / "ka"), tree_bytes(tmp_path / "kc")
    assert a == tree_bytes(tmp_path / "kb")
    # image k does not depend on how many images are generated
    assert all(c[name] == data for name, data in a.items())


def test_generator_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="'hexagon'"):
        generate_coco(tmp_path, n_train=1, n_val=1, seed=0, classes=("square", "hexagon"))
    with pytest.raises(ValueError, match="n_train"):
        generate_coco(tmp_path, n_train=-1, n_val=1, seed=0)
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        generate_coco(tmp_path, n_train=1, n_val=1, seed=0, image_size=(16, 16))
    with pytest.raises(ValueError, match="image_size"):
        generate_kitti(tmp_path, n_images=1, seed=0, image_size=(96,))
