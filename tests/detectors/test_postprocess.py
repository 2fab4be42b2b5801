"""The numpy pre/post-processing shared by the direct runtimes: letterbox, NMS, decoding."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.postprocess import decode, letterbox, nms


def test_letterbox_centres_and_scales():
    image = np.zeros((100, 200, 3), np.uint8)
    boxed, scale, (left, top) = letterbox(image, 64)
    assert boxed.shape == (64, 64, 3) and scale == pytest.approx(0.32) and (left, top) == (0, 16)
    assert (boxed[:16] == 114).all() and (boxed[16:48] == 0).all() and (boxed[48:] == 114).all()


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.8], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 3, 2, 0]


def test_decode_maps_boxes_back_through_the_letterbox():
    # Two anchors of a 2-class output over a 64 px letterbox of a 200x100 image (scale 0.32, top pad 16).
    y = np.zeros((6, 3), np.float32)
    y[:4, 0] = [32, 32, 16, 8]  # centre of the letterbox, 16x8 px: (24, 28)-(40, 36) -> image (75, 37.5)-(125, 62.5)
    y[4:, 0] = [0.1, 0.9]
    y[:4, 1] = [32, 32, 16, 8]  # same place, lower score, other class: kept (class-aware NMS)
    y[4:, 1] = [0.6, 0.2]
    y[:4, 2] = [10, 10, 4, 4]  # under conf
    y[4:, 2] = [0.1, 0.2]
    dets = decode(y, box_scale=1.0, scale=0.32, pad=(0, 16), image_hw=(100, 200), names=("a", "b"), conf=0.25, iou=0.7)
    assert [(d.label, d.box) for d in dets] == [("b", (75, 37, 125, 63)), ("a", (75, 37, 125, 63))]
    assert dets[0].confidence == pytest.approx(0.9)
    normalised = y.copy()
    normalised[:4] /= 64  # a TFLite export divides boxes by its input size
    assert decode(normalised, box_scale=64, scale=0.32, pad=(0, 16), image_hw=(100, 200), names=("a", "b"), conf=0.25, iou=0.7) == dets
