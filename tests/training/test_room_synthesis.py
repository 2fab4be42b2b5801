"""Rooms filled with several products for the group detector: every box true, labels in YOLO form,
the photo's own objects labelled from detections, scenes kept apart, cached by the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.category_map import GROUPS_MAP, load_category_map
from engine.data.catalog import load_catalog
from engine.data.detection import Detection
from engine.data.images import load_image
from engine.synthesis.composite import CompositeConfig
from training import synthesize_rooms
from training.room_synthesis import RoomSynthesisConfig, load_rooms_manifest, synthesize_rooms as make_rooms

# geometry only (no relighting, shadow, blur, noise), lossless enough to find the pasted pixels again
CLEAN = CompositeConfig(scale_jitter=(1, 1), perspective=(0, 0), brightness=(1, 1), contrast=(1, 1), tint=(0, 0), temperature=(0, 0),
                        shadow_prob=0, occlusion_prob=0, edge_prob=0, blur_prob=0, noise_sigma=(0, 0), jpeg_prob=0, min_visible=0.4)


def _background(catalog, name: str, max_side: int) -> np.ndarray:
    image = load_image(catalog.scene(name).image)
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return image


def test_every_pasted_box_is_tight_around_what_changed(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    scenes = sorted(s.scene for s in catalog.scenes)
    splits = {"train": scenes[:6], "val": scenes[6:8]}
    cfg = RoomSynthesisConfig(train_images=6, val_images=2, products=(2, 3), max_side=256, jpeg_quality=100, composite=CLEAN)
    groups = load_category_map(GROUPS_MAP)
    images, stats = make_rooms(catalog, splits, {}, groups, cfg, tmp_path, workers=1)
    assert stats["train"]["images"] == 6 and stats["val"]["images"] == 2
    assert {im.background for im in images if im.split == "train"} <= set(splits["train"])
    assert {im.background for im in images if im.split == "val"} <= set(splits["val"])
    for im in images:
        # luminance only: JPEG keeps it at full resolution (colour is subsampled and bleeds a block or two)
        out = cv2.cvtColor(load_image(tmp_path / im.image), cv2.COLOR_RGB2GRAY).astype(np.int16)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_background(catalog, im.background, 256), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
        bg = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY).astype(np.int16)
        changed = np.abs(out - bg) > 10
        covered = np.zeros_like(changed)
        assert im.labels, "every image holds at least one pasted product"
        for lb in im.labels:
            assert lb.source == "pasted" and lb.group in groups.groups
            x1, y1, x2, y2 = lb.box
            assert 0 <= x1 < x2 <= im.size[0] and 0 <= y1 < y2 <= im.size[1]
            covered[y1:y2, x1:x2] = True
            inside = changed[y1:y2, x1:x2]
            # tight: what changed reaches (within 2 px) every edge of the box
            assert inside[:, :3].any() and inside[:, -3:].any() and inside[:3, :].any() and inside[-3:, :].any()
        # the cut-outs' feathered rims (alpha below one half, outside the box) and JPEG ringing stay within a block of it
        near = cv2.dilate(covered.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        assert (changed & ~near).sum() == 0, "changed pixels outside every box"


def test_yolo_labels_and_manifest_agree(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    scenes = sorted(s.scene for s in catalog.scenes)
    groups = load_category_map(GROUPS_MAP)
    cfg = RoomSynthesisConfig(train_images=3, val_images=1, max_side=200, seed=4)
    images, _ = make_rooms(catalog, {"train": scenes[:3], "val": scenes[3:4]}, {}, groups, cfg, tmp_path, workers=1)
    data = (tmp_path / "data.yaml").read_text()
    assert "train: images/train" in data and "  0: seating" in data and f"  {len(groups.groups) - 1}: decor" in data
    for im in images:
        rows = [line.split() for line in (tmp_path / "labels" / im.split / (Path(im.image).stem + ".txt")).read_text().splitlines()]
        assert len(rows) == len(im.labels)
        w, h = im.size
        for row, lb in zip(rows, im.labels):
            assert groups.groups[int(row[0])] == lb.group
            cx, cy, bw, bh = (float(v) for v in row[1:])
            assert cx * w == pytest.approx((lb.box[0] + lb.box[2]) / 2, abs=0.01) and bw * w == pytest.approx(lb.box[2] - lb.box[0], abs=0.01)
            assert cy * h == pytest.approx((lb.box[1] + lb.box[3]) / 2, abs=0.01) and bh * h == pytest.approx(lb.box[3] - lb.box[1], abs=0.01)
    again, _, _ = load_rooms_manifest(_save(tmp_path, images))
    assert again == images


def _save(folder: Path, images) -> Path:
    from training.room_synthesis import save_rooms_manifest

    return save_rooms_manifest(folder / "manifest.json", images, {"tool": "test"}, {})


def test_a_backgrounds_own_objects_are_labelled_by_their_group(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    scene = sorted(s.scene for s in catalog.scenes)[0]
    w, h = catalog.scene(scene).size
    dets = [Detection((0, 0, w // 4, h // 4), "couch", 0.9),  # a sofa in the corner: labelled
            Detection((0, 0, w // 4, h // 4), "person", 0.9),  # not a product group: no label
            Detection((w // 2, h // 2, w // 2 + 20, h // 2 + 20), "chair", 0.2)]  # not confident enough
    groups = load_category_map(GROUPS_MAP)
    cfg = RoomSynthesisConfig(train_images=2, val_images=0, products=(1, 1), max_side=max(w, h), min_uncovered=0.0)
    images, stats = make_rooms(catalog, {"train": [scene]}, {scene: dets}, groups, cfg, tmp_path, workers=1)
    for im in images:
        detected = [lb for lb in im.labels if lb.source != "pasted"]
        assert [(lb.group, lb.source, lb.box) for lb in detected] == [("sofa", "detected:couch", (0, 0, w // 4, h // 4))]
    assert stats["train"]["per_group"]["sofa"]["detected"] == 2


def test_config_and_splits_are_checked(tiny_catalog: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="products"):
        RoomSynthesisConfig(products=(3, 1))
    catalog = load_catalog(tiny_catalog)
    scenes = sorted(s.scene for s in catalog.scenes)
    with pytest.raises(ValueError, match="different scenes"):
        make_rooms(catalog, {"train": scenes[:2], "val": scenes[1:3]}, {}, load_category_map(GROUPS_MAP), RoomSynthesisConfig(), tmp_path)
    split = synthesize_rooms.split_backgrounds(scenes, 0.25, seed=0)
    assert not set(split["train"]) & set(split["val"]) and sorted(split["train"] + split["val"]) == scenes and len(split["val"]) == 4


def test_cli_leaves_held_out_scenes_out_and_reuses_its_dataset(tiny_catalog: Path, tmp_path: Path, capsys):
    catalog = load_catalog(tiny_catalog)
    held = sorted(s.scene for s in catalog.scenes)[:3]
    (tmp_path / "holdout.txt").write_text("".join(f"{s}\n" for s in held))
    argv = ["--catalog", str(tiny_catalog), "--holdout-scenes", str(tmp_path / "holdout.txt"), "--no-detector", "--train-images", "4",
            "--val-images", "2", "--max-side", "160", "--workers", "1", "--out", str(tmp_path / "rooms")]
    assert synthesize_rooms.main(argv) == 0
    assert "4 training images" in capsys.readouterr().out
    images, producer, _ = load_rooms_manifest(tmp_path / "rooms" / "manifest.json")
    assert not {im.background for im in images} & set(held)
    assert producer["holdout_scenes"] == held and not set(producer["train_scenes"]) & set(producer["val_scenes"])
    assert synthesize_rooms.main(argv) == 0
    assert "reusing the rooms dataset" in capsys.readouterr().out


def _boxes_file(path: Path, boxes: dict) -> Path:
    path.write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": boxes}))
    return path


def test_hand_drawn_boxes_label_what_no_detector_reaches_and_yield_to_a_detection(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    scene = sorted(s.scene for s in catalog.scenes)[0]
    w, h = catalog.scene(scene).size
    dets = [Detection((0, 0, w // 4, h // 4), "couch", 0.9)]
    hand = [("lamp", (0.5, 0.0, 0.6, 0.3)),  # no COCO class: labelled from the drawing
            ("sofa", (0.0, 0.0, 0.26, 0.24))]  # the couch the detector already boxed: its tighter box wins
    groups = load_category_map(GROUPS_MAP)
    cfg = RoomSynthesisConfig(train_images=2, val_images=0, products=(1, 1), max_side=max(w, h), min_uncovered=0.0)
    images, stats = make_rooms(catalog, {"train": [scene]}, {scene: dets}, groups, cfg, tmp_path, workers=1, hand={scene: hand})
    for im in images:
        own = [(lb.group, lb.source, lb.box) for lb in im.labels if lb.source != "pasted"]
        assert own == [("sofa", "detected:couch", (0, 0, w // 4, h // 4)), ("lamp", "hand", (round(0.5 * w), 0, round(0.6 * w), round(0.3 * h)))]
    assert stats["train"]["per_group"]["lamp"]["hand"] == 2 and stats["train"]["boxes_hand"] == 2
    from training.room_synthesis import background_labels

    with pytest.raises(ValueError, match="groups the groups map does not have"):
        background_labels([], groups, 0.5, [("lampp", (0.1, 0.1, 0.2, 0.2))], (w, h))


def test_relabel_adds_what_the_pasted_products_leave_visible_and_is_idempotent():
    from training.room_synthesis import Label, RoomImage, relabel_rooms

    pasted = Label("vase", (0, 0, 50, 100), "pasted", "p1")
    chair = Label("seating", (60, 60, 100, 100), "detected:chair", confidence=0.9)
    im = RoomImage("images/train/train-00000.jpg", "train", "room", (100, 100), 1, (pasted, chair))
    hand = {"room": [("lamp", (0.0, 0.0, 0.4, 0.4)),  # under the pasted vase: hidden, no label
                     ("rug", (0.3, 0.0, 1.0, 0.2)),  # 2/7 covered: kept
                     ("seating", (0.6, 0.6, 1.0, 0.99)),  # the detected chair: not twice
                     ("frame", (0.7, 0.3, 0.9, 0.5))]}  # uncovered: kept
    groups = load_category_map(GROUPS_MAP).groups
    (once,) = relabel_rooms([im], hand, groups, min_uncovered=0.5)
    assert once.labels == (pasted, chair, Label("rug", (30, 0, 100, 20), "hand"), Label("frame", (70, 30, 90, 50), "hand"))
    assert relabel_rooms([once], hand, groups, 0.5) == [once]
    assert relabel_rooms([once], {}, groups, 0.5)[0].labels == (pasted, chair)  # an emptied file takes its labels back
    assert relabel_rooms([im], {"other room": hand["room"]}, groups, 0.5) == [im]


def test_cli_relabels_a_written_dataset_with_hand_drawn_boxes(tiny_catalog: Path, tmp_path: Path, capsys):
    argv = ["--catalog", str(tiny_catalog), "--no-detector", "--train-images", "4", "--val-images", "2", "--max-side", "160",
            "--workers", "1", "--out", str(tmp_path / "rooms")]
    assert synthesize_rooms.main(argv) == 0
    capsys.readouterr()
    images, producer, _ = load_rooms_manifest(tmp_path / "rooms" / "manifest.json")
    drawn = {s: [("lamp", (0.0, 0.0, 0.05, 0.05))] for s in producer["train_scenes"] + producer["val_scenes"]}
    boxes = _boxes_file(tmp_path / "boxes.json", {s: [[g, *b] for g, b in v] for s, v in drawn.items()})
    before = {im.image: len((tmp_path / "rooms" / "labels" / im.split / (Path(im.image).stem + ".txt")).read_text().splitlines()) for im in images}
    assert synthesize_rooms.main(["--relabel", str(tmp_path / "rooms"), "--background-boxes", str(boxes)]) == 0
    assert "hand-drawn boxes" in capsys.readouterr().out
    again, producer2, stats = load_rooms_manifest(tmp_path / "rooms" / "manifest.json")
    assert producer2["background_boxes"][0]["path"] == str(boxes) and producer2["key"] != producer["key"]
    for im in again:
        rows = (tmp_path / "rooms" / "labels" / im.split / (Path(im.image).stem + ".txt")).read_text().splitlines()
        hand = [lb for lb in im.labels if lb.source == "hand"]
        assert len(rows) == before[im.image] + len(hand) and len(hand) <= 1
    assert stats["train"]["boxes_hand"] == sum(lb.source == "hand" for im in again if im.split == "train" for lb in im.labels)
    assert synthesize_rooms.main(["--relabel", str(tmp_path / "rooms"), "--background-boxes", str(boxes)]) == 0
    assert load_rooms_manifest(tmp_path / "rooms" / "manifest.json")[1]["key"] == producer2["key"]  # the same boxes again: the same dataset
    with pytest.raises(SystemExit):
        synthesize_rooms.main(["--relabel", str(tmp_path / "rooms")])  # nothing to add
