"""The hand-drawn boxes file: read and checked, and the shipped files read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data.boxes import BoxesFileError, read_boxes, to_pixels

ROOT = Path(__file__).resolve().parents[3]


def test_boxes_file_is_checked(tmp_path: Path):
    good = tmp_path / "b.json"
    good.write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": {"s": [["lamp", 0.1, 0.2, 0.3, 0.4]]}}))
    assert read_boxes(good) == {"s": [("lamp", (0.1, 0.2, 0.3, 0.4))]}
    good.write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": {"s": [["lamp", 0.3, 0.2, 0.1, 0.4]]}}))
    with pytest.raises(BoxesFileError, match="x1 < x2"):
        read_boxes(good)
    good.write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": {"s": [["lamp", "a", 0.2, 0.1, 0.4]]}}))
    with pytest.raises(BoxesFileError, match=r"must be \[group, x1, y1, x2, y2\]"):
        read_boxes(good)
    good.write_text("{}")
    with pytest.raises(BoxesFileError, match="showroom.boxes v1"):
        read_boxes(good)
    good.write_text("{")
    with pytest.raises(BoxesFileError, match="not readable JSON"):
        read_boxes(good)


def test_to_pixels_rounds_inside_the_photo():
    assert to_pixels((0.1, 0.25, 0.5, 1.0), 200, 100) == (20, 25, 100, 100)
    assert to_pixels((0.0, 0.0, 1.0, 1.0), 7, 3) == (0, 0, 7, 3)


def test_the_shipped_dev_boxes_file_reads():
    boxes = read_boxes(ROOT / "evaluation" / "data" / "ikea_dev_boxes.json")
    assert len(boxes) == 25 and sum(len(v) for v in boxes.values()) == 581


def test_the_shipped_background_boxes_are_of_other_scenes_than_the_dev_boxes():
    train = read_boxes(ROOT / "training" / "data" / "ikea_background_boxes.json")
    dev = read_boxes(ROOT / "evaluation" / "data" / "ikea_dev_boxes.json")
    assert len(train) == 97 and sum(len(v) for v in train.values()) == 2373
    assert not set(train) & set(dev), "a development (validation) scene drawn as a training background"


def test_no_shipped_box_is_drawn_on_a_readme_hold_out_scene(ikea_catalog: Path):
    from engine.data.catalog import load_catalog
    from engine.data.splits import holdout_scenes

    catalog = load_catalog(ikea_catalog)
    held = set(holdout_scenes(catalog, 0.2, seed=0))  # the README's hold-out: python -m evaluation.holdout defaults
    names = {s.scene for s in catalog.scenes}
    for path in (ROOT / "training" / "data" / "ikea_background_boxes.json", ROOT / "evaluation" / "data" / "ikea_dev_boxes.json"):
        drawn = set(read_boxes(path))
        assert drawn <= names and not drawn & held, path.name


def test_several_files_read_as_one_drawing(tmp_path: Path):
    from engine.data.boxes import read_boxes_files

    def write(name: str, boxes: dict) -> Path:
        (tmp_path / name).write_text(json.dumps({"format": "showroom.boxes", "version": 1, "boxes": boxes}))
        return tmp_path / name

    a, b = write("a.json", {"s": [["lamp", 0.1, 0.2, 0.3, 0.4]]}), write("b.json", {"t": [["rug", 0.0, 0.5, 1.0, 1.0]]})
    assert read_boxes_files([a, b]) == {"s": [("lamp", (0.1, 0.2, 0.3, 0.4))], "t": [("rug", (0.0, 0.5, 1.0, 1.0))]}
    with pytest.raises(BoxesFileError, match="both draw scene s"):
        read_boxes_files([a, b, write("c.json", {"s": [["vase", 0.1, 0.2, 0.3, 0.4]]})])


def test_the_shipped_files_draw_each_scene_once():
    from engine.data.boxes import read_boxes_files

    boxes = read_boxes_files([ROOT / "evaluation" / "data" / "ikea_dev_boxes.json", ROOT / "training" / "data" / "ikea_background_boxes.json"])
    assert len(boxes) == 25 + 97
