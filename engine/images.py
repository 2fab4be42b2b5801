"""Image decode, box padding, cropping and square resizing shared by training, serving and evaluation.

All images are ``uint8 (H, W, 3)`` RGB numpy arrays. Boxes are ``(x1, y1, x2, y2)`` integer
pixels with x2/y2 exclusive.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]


class ImageError(ValueError):
    """Bytes that are not a decodable image, or a box that does not fit the image."""


def decode_image(data: bytes, *, source: str = "image") -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP bytes into ``uint8 (H, W, 3)`` RGB (alpha composited on white)."""
    if not data:
        raise ImageError(f"{source}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f"{source}: not a decodable image (JPEG, PNG, WebP or BMP expected)")
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        rgb = img[..., :3].astype(np.float32)
        alpha = img[..., 3:4].astype(np.float32) / 255.0
        img = (rgb * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file into ``uint8 (H, W, 3)`` RGB."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, source=str(path))


def check_box(box: Box, width: int, height: int) -> Box:
    """Validate that ``box`` lies inside a ``width`` x ``height`` image and is not empty."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ImageError(
            f"box ({x1},{y1},{x2},{y2}) is outside the {width}x{height} image or empty; "
            "use pixels with 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height"
        )
    return x1, y1, x2, y2


def pad_box(box: Box, width: int, height: int, padding: float, *, square: bool = True) -> Box:
    """Grow ``box`` by ``padding`` x its longer side on every side, optionally to a square, clipped.

    Squaring takes more of the scene around the object rather than stretching the crop.
    """
    x1, y1, x2, y2 = check_box(box, width, height)
    bw, bh = x2 - x1, y2 - y1
    pad = padding * max(bw, bh)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half_w, half_h = bw / 2.0 + pad, bh / 2.0 + pad
    if square:
        half_w = half_h = max(half_w, half_h)
    nx1 = max(0, int(np.floor(cx - half_w)))
    ny1 = max(0, int(np.floor(cy - half_h)))
    nx2 = min(width, int(np.ceil(cx + half_w)))
    ny2 = min(height, int(np.ceil(cy + half_h)))
    return nx1, ny1, nx2, ny2


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The ``box`` region of ``image`` (a view), validated."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = check_box(box, w, h)
    return image[y1:y2, x1:x2]


def to_square(image: np.ndarray, size: int, *, fill: int = 255) -> np.ndarray:
    """Resize keeping aspect ratio so the longer side is ``size``; pad to ``(size, size, 3)`` with ``fill``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.full((size, size, 3), fill, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def query_crop(image: np.ndarray, box: Box | None, size: int, padding: float) -> np.ndarray:
    """A query as the model sees it: padded square crop of ``box`` (or the whole image), ``(size, size, 3)``."""
    if box is not None:
        h, w = image.shape[:2]
        image = crop(image, pad_box(box, w, h, padding))
    return to_square(image, size, fill=255)
