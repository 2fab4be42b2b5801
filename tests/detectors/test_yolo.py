"""The Ultralytics wrapper: bad weights give clear errors; on real IKEA photos it finds furniture."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detectors.category_map import load_category_map
from detectors.yolo import YoloDetector
from engine.data.detection import DetectorError
from engine.data.images import load_image


def test_weights_of_the_wrong_kind_or_missing(tmp_path: Path):
    with pytest.raises(DetectorError, match="expected a .pt, .onnx, .tflite file"):
        YoloDetector(tmp_path / "model.h5")
    with pytest.raises(DetectorError, match="not found"):
        YoloDetector(tmp_path / "missing" / "model.pt")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(DetectorError, match="cannot load detector weights"):
        YoloDetector(broken).class_names


def test_an_onnx_detector_without_onnxruntime_is_refused_at_once(tmp_path: Path, monkeypatch):
    """Not installed at the first detection by Ultralytics, mid-request: refused when opened, saying what to install."""
    import importlib.util

    onnx = tmp_path / "groups.onnx"
    onnx.write_bytes(b"onnx bytes")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(DetectorError, match="needs onnxruntime.*pip install onnxruntime"):
        YoloDetector(onnx)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "onnxruntime" else real(name, *a))
    assert YoloDetector(onnx).fingerprint.startswith("yolo:")  # with it installed, the file is accepted as before


@pytest.fixture(scope="module")
def shared_detector(yolo_weights: Path) -> YoloDetector:
    return YoloDetector(yolo_weights)


@pytest.mark.slow
def test_real_ikea_scenes(shared_detector: YoloDetector, ikea_catalog: Path):
    load_category_map().check_classes(shared_detector.class_names)
    assert len(shared_detector.class_names) == 80 and "couch" in shared_detector.class_names
    scenes = {r["scene"]: ikea_catalog / r["image"] for r in csv.DictReader(open(ikea_catalog / "scenes.csv"))}
    # A living room whose pairs include a three-seat sofa: the detector must find a couch in it.
    pairs = list(csv.DictReader(open(ikea_catalog / "pairs.csv")))
    types = {r["product_id"]: r["type"] for r in csv.DictReader(open(ikea_catalog / "products.csv"))}
    sofa_scenes = sorted({p["scene"] for p in pairs if types[p["product_id"]] == "Three-seat sofa"})
    assert sofa_scenes
    found = 0
    for name in sofa_scenes[:3]:
        image = load_image(scenes[name])
        dets = shared_detector.detect(image)
        h, w = image.shape[:2]
        assert all(0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h for d in dets)
        assert [d.confidence for d in dets] == sorted((d.confidence for d in dets), reverse=True)
        found += any(d.label == "couch" and d.confidence >= 0.3 for d in dets)
    assert found >= 2


@pytest.mark.slow
def test_loading_ultralytics_leaves_pillow_alone(shared_detector: YoloDetector, tmp_path: Path):
    """Ultralytics patches PIL.Image.open to pip-install a HEIF plugin on unknown files; we undo that."""
    import PIL.Image

    shared_detector.class_names  # loads Ultralytics
    junk = tmp_path / "x.png"
    junk.write_text("hello")
    with pytest.raises(PIL.UnidentifiedImageError):
        PIL.Image.open(junk)


def test_the_dataset_check_looks_for_its_font_locally_only(monkeypatch):
    """Ultralytics' check_det_dataset asks GitHub for Arial.ttf when matplotlib has none; we answer locally."""
    import requests

    from detectors.yolo import _configure_ultralytics

    def no_network(*args, **kwargs):
        raise AssertionError(f"network request {args}")

    monkeypatch.setattr(requests, "head", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    _configure_ultralytics()
    from ultralytics.data import utils as data_utils

    found = data_utils.check_font("Arial.ttf")
    assert found is None or found.exists()


@pytest.mark.slow
def test_fine_tuning_the_recovered_detector_stays_offline(yolo_weights: Path, tmp_path: Path, monkeypatch):
    """One epoch of Ultralytics training from the recovered checkpoint on 3 new classes, with every
    network lookup failing the test: no font, weights or version check is fetched."""
    import socket

    import cv2
    import numpy as np
    import yaml

    from detectors.recover import recover_yolov8
    from detectors.yolo import OFFLINE_TRAIN_ARGS, save_checkpoint

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i in range(4):
            image = np.full((96, 128, 3), 200, np.uint8)
            c = i % 3
            cv2.rectangle(image, (20, 20), (70, 60), [int(v) for v in rng.integers(0, 255, 3)], -1)
            cv2.imwrite(str(tmp_path / "images" / split / f"{i}.jpg"), image)
            (tmp_path / "labels" / split / f"{i}.txt").write_text(f"{c} 0.35 0.42 0.39 0.42\n")
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val", "names": {0: "lamp", 1: "rug", 2: "cushion"}}))
    model, imgsz = recover_yolov8(yolo_weights)
    weights = save_checkpoint(model, tmp_path / "start.pt", imgsz=imgsz)

    def no_network(*args, **kwargs):
        raise AssertionError(f"network lookup {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from ultralytics import YOLO

    YOLO(str(weights)).train(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, project=str(tmp_path / "runs"), name="t",
                             exist_ok=True, verbose=False, **OFFLINE_TRAIN_ARGS)
    last = tmp_path / "runs" / "t" / "weights" / "last.pt"
    assert last.is_file() and YoloDetector(last, imgsz=64).class_names == ("lamp", "rug", "cushion")


def test_a_checkpoint_cut_short_by_a_kill_resumes_from_the_epoch_before(tmp_path: Path):
    """Ultralytics overwrites ``last.pt`` in place; a kill mid-write leaves it truncated. The whole copy
    kept after each save (``last.safe.pt``) is what the run resumes from then."""
    import torch

    from detectors.yolo import SAFE_LAST, resume_progress

    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(DetectorError, match="never finished an epoch"):
        resume_progress(tmp_path)
    torch.save({"epoch": 1, "train_args": {"epochs": 5}}, weights / SAFE_LAST)
    torch.save({"epoch": 2, "train_args": {"epochs": 5}}, weights / "last.pt")
    assert resume_progress(tmp_path) == (3, 5)  # a whole last.pt is used as it is
    whole = (weights / "last.pt").read_bytes()
    (weights / "last.pt").write_bytes(whole[: len(whole) // 2])  # killed while writing epoch 3's
    assert resume_progress(tmp_path) == (2, 5)
    assert (weights / "last.pt").read_bytes() == (weights / SAFE_LAST).read_bytes()  # put back for Ultralytics to resume
    (weights / "last.pt").write_bytes(b"")
    (weights / SAFE_LAST).unlink()
    with pytest.raises(DetectorError, match="unreadable"):
        resume_progress(tmp_path)
