"""Image decode, padding, cropping and square resizing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.images import ImageError, crop, decode_image, pad_box, query_crop, to_square


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_decode_rgb_gray_and_alpha():
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    rgb = decode_image(png_bytes(bgr))
    assert rgb.shape == (4, 5, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    assert decode_image(png_bytes(np.full((3, 3), 7, np.uint8)))[0, 0].tolist() == [7, 7, 7]
    bgra = np.zeros((2, 2, 4), np.uint8)  # fully transparent black -> white
    assert decode_image(png_bytes(bgra))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("data,msg", [(b"", "empty file"), (b"GIF89a nonsense", "not a decodable image")])
def test_decode_errors(data, msg):
    with pytest.raises(ImageError, match=msg):
        decode_image(data)


def test_pad_box_squares_and_clips():
    assert pad_box((40, 40, 60, 80), 100, 100, 0.0) == (30, 40, 70, 80)
    assert pad_box((40, 40, 60, 80), 100, 100, 0.25) == (20, 30, 80, 90)
    assert pad_box((0, 0, 10, 10), 100, 100, 0.5) == (0, 0, 15, 15)
    with pytest.raises(ImageError, match="outside"):
        pad_box((0, 0, 200, 10), 100, 100, 0.1)


def test_crop_and_to_square():
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    assert crop(img, (1, 2, 4, 5)).shape == (3, 3, 3)
    sq = to_square(np.zeros((10, 20, 3), np.uint8), 16)
    assert sq.shape == (16, 16, 3)
    assert sq[0, 0].tolist() == [255, 255, 255] and sq[8, 8].tolist() == [0, 0, 0]  # letterboxed on white


def test_query_crop_whole_image_or_box():
    img = np.zeros((50, 100, 3), np.uint8)
    img[10:20, 10:20] = 200
    assert query_crop(img, None, 32, 0.1).shape == (32, 32, 3)
    q = query_crop(img, (10, 10, 20, 20), 32, 0.0)
    assert q.mean() == pytest.approx(200, abs=1)
