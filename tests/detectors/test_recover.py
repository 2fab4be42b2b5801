"""Recovering a trainable YOLOv8 from the int8 TFLite export: the torch model computes the file's boxes,
BatchNorm calibration keeps them and fixes train mode, and the checkpoint loads and transfers in Ultralytics."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from detectors.agreement import Agreement, agreement
from detectors.litert import LiteRTDetector, read_class_names
from detectors.postprocess import decode, letterbox
from detectors.recover import calibrate_batchnorm, dequantize, main, raw_predictions, read_fused_convs, recover_yolov8
from engine.data.detection import DetectorError
from engine.data.images import load_image


def test_dequantize_by_hand():
    q = np.array([[-2, 0, 3], [4, 5, -6]], np.int8)
    per_channel = dequantize(q, np.array([0.5, 0.1]), np.array([0, 1]), axis=0)
    np.testing.assert_allclose(per_channel, [[-1.0, 0.0, 1.5], [0.3, 0.4, -0.7]], rtol=1e-6)
    assert per_channel.dtype == np.float32
    np.testing.assert_allclose(dequantize(q, np.array([2.0]), np.array([1]), axis=0), 2.0 * (q - 1.0))
    np.testing.assert_allclose(dequantize(q, np.array([1.0, 2.0, 3.0]), np.array([0]), axis=1), q * np.array([1.0, 2.0, 3.0]))


def test_bad_files_and_arguments(tmp_path: Path):
    with pytest.raises(DetectorError, match="existing .tflite"):
        read_fused_convs(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(DetectorError, match="cannot read"):
        read_fused_convs(junk)
    assert main(["--tflite", str(junk), "--out", str(tmp_path / "model.onnx")]) == 2  # --out must be a .pt


@pytest.fixture(scope="module")
def recovered(yolo_weights: Path):
    """The recovered model (identity-plus-bias BatchNorms) and its input size."""
    return recover_yolov8(yolo_weights)


@pytest.fixture(scope="module")
def scenes(ikea_catalog: Path) -> list[np.ndarray]:
    from engine.data.catalog import load_catalog

    return [load_image(s.image) for s in load_catalog(ikea_catalog).scenes[:14]]


def _detections(y: np.ndarray, image: np.ndarray, imgsz: int, names: tuple[str, ...]):
    _, scale, pad = letterbox(image, imgsz)
    return decode(y, box_scale=imgsz, scale=scale, pad=pad, image_hw=image.shape[:2], names=names, conf=0.10, iou=0.7)


@pytest.mark.slow
def test_the_recovered_model_gives_the_files_boxes(recovered, scenes, yolo_weights: Path):
    model, imgsz = recovered
    names = read_class_names(yolo_weights)
    assert imgsz == 640 and tuple(model.names.values()) == names
    lite = LiteRTDetector(yolo_weights)
    ours, theirs = Agreement(), Agreement()
    for image in scenes[:6]:
        y, _, _ = lite.forward(image)
        t = raw_predictions(model, image, imgsz)
        # int8 weights and LiteRT's int8 activations make small differences; a wrong layer mapping makes large ones
        assert np.abs(y[4:] - t[4:]).mean() < 1e-4
        a, b = _detections(y, image, imgsz, names), _detections(t, image, imgsz, names)
        theirs = theirs + agreement([d for d in a if d.confidence >= 0.25], b)
        ours = ours + agreement([d for d in b if d.confidence >= 0.25], a)
    for side in (theirs, ours):  # every confident box of either has a same-class twin of at least 0.10 on the other
        assert side.matched > 40 and side.unmatched_reference == 0
        assert np.median(side.ious) > 0.98 and min(side.ious) > 0.7
        assert np.median(side.score_diffs) < 0.02 and max(side.score_diffs) < 0.2


@pytest.mark.slow
def test_calibration_keeps_eval_outputs_and_brings_train_mode_to_them(recovered, scenes):
    import torch

    from detectors.recover import _batches

    model, imgsz = copy.deepcopy(recovered[0]), recovered[1]
    batch = next(_batches(scenes[6:14], imgsz, 8))

    def train_mode_gap(m) -> float:
        """Mean |score difference| between train mode (batch statistics) and eval mode on confident anchors."""
        m = copy.deepcopy(m)
        with torch.no_grad():
            ev = m.eval()(batch)[1]["scores"].sigmoid()
            tr = m.train()(batch)["scores"].sigmoid()
        confident = ev > 0.25
        return float((ev - tr).abs()[confident].mean())

    before = [raw_predictions(model, im, imgsz) for im in scenes[:2]]
    identity_gap = train_mode_gap(model)
    calibrate_batchnorm(model, scenes[:6], imgsz)
    after = [raw_predictions(model, im, imgsz) for im in scenes[:2]]
    for a, b in zip(before, after):
        assert np.abs(a - b).max() < 1e-4
    bn = model.model[0].bn
    assert bn.running_mean.abs().max() > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert train_mode_gap(model) < identity_gap / 2


@pytest.mark.slow
def test_cli_writes_a_checkpoint_ultralytics_predicts_with_and_fine_tunes_from(yolo_weights: Path, ikea_catalog: Path, tmp_path: Path):
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    from detectors.yolo import YoloDetector

    out = tmp_path / "yolov8n_coco.pt"
    assert main(["--tflite", str(yolo_weights), "--out", str(out), "--calibration-images", str(ikea_catalog / "images" / "scenes"),
                 "--max-images", "4", "--check", "2"]) == 0
    detector = YoloDetector(out)
    assert detector.class_names == read_class_names(yolo_weights)
    dets = detector.detect(load_image(sorted((ikea_catalog / "images" / "scenes").glob("*.jpg"))[0]))
    assert dets and all(d.label in detector.class_names for d in dets)
    # A new class count (20 product groups): every tensor but the class branch's last convolution transfers.
    source, _ = load_checkpoint(str(out))
    target = DetectionModel(source.yaml, nc=20, verbose=False)
    target.load(source, verbose=False)
    src, dst = source.state_dict(), target.state_dict()
    same = {k for k, v in dst.items() if k in src and v.shape == src[k].shape and bool((v == src[k]).all())}
    assert sorted({k.rsplit(".", 1)[0] for k in dst if k not in same}) == [f"model.22.cv3.{i}.2" for i in range(3)]
