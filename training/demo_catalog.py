"""Procedural demo catalog: shape-family products rendered on white and composited into rooms.

The demo is a real cross-domain retrieval problem in the project's catalog format:
- each category is a family of shapes (chair, table, lamp, vase, sofa, shelf), each product
  a member with its own proportions, colour and surface pattern, so in-class negatives are hard;
- ``products.csv`` holds iconic renders on white;
- ``scenes.csv`` holds room-like photos where products are scaled, rotated, perspective-warped,
  re-lit, blurred, partly occluded and mixed with distractors, JPEG-compressed;
- ``pairs.csv`` gives each product's true box in each scene.

Everything is drawn from one ``numpy`` generator seeded by ``DemoSpec.seed``, so the same spec
gives byte-identical files.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.files import atomic_folder

logger = logging.getLogger(__name__)

CATEGORIES = ("Chair", "Table", "Lamp", "Vase", "Sofa", "Shelf")
RENDER = 192  # canvas side of a product render, pixels
VERSION = 1  # bump when rendering changes, so old generated folders are not reused


@dataclass(frozen=True)
class DemoSpec:
    """Size and seed of the generated demo catalog."""

    products_per_category: int = 12
    scenes: int = 120
    scene_width: int = 320
    scene_height: int = 240
    iconic_size: int = 160
    seed: int = 7

    def __post_init__(self) -> None:
        if self.products_per_category < 2:
            raise ValueError("products_per_category must be >= 2 (in-class negatives need a second product)")
        if self.scenes < 5:
            raise ValueError("scenes must be >= 5")
        if self.scene_width < 128 or self.scene_height < 96:
            raise ValueError("scenes must be at least 128x96 pixels")

    @property
    def folder_name(self) -> str:
        return (
            f"demo-v{VERSION}-s{self.seed}-p{self.products_per_category}-n{self.scenes}-"
            f"{self.scene_width}x{self.scene_height}-i{self.iconic_size}"
        )


# ---------------------------------------------------------------------------------------------
# Product shapes: each returns a uint8 mask (RENDER, RENDER) of the silhouette and a list of
# polylines for dark detail strokes. ``p`` holds the product's proportions in [0, 1].


def _rect(mask: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> None:
    cv2.rectangle(mask, (int(x1), int(y1)), (int(x2), int(y2)), 255, thickness=-1)


def _chair(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((RENDER, RENDER), np.uint8)
    seat_w = 70 + 50 * p[0]
    seat_y = 95 + 25 * p[1]
    back_h = 45 + 45 * p[2]
    leg_t = 4 + 8 * p[3]
    cx = RENDER / 2
    x1, x2 = cx - seat_w / 2, cx + seat_w / 2
    _rect(m, x1, seat_y, x2, seat_y + 10 + 6 * p[4])
    back_x2 = x1 + 8 + 12 * p[5]
    if p[6] > 0.5:  # slanted back
        pts = np.array([[x1, seat_y], [back_x2, seat_y], [back_x2 - 10, seat_y - back_h], [x1 - 10, seat_y - back_h]], np.int32)
        cv2.fillPoly(m, [pts], 255)
    else:
        _rect(m, x1, seat_y - back_h, back_x2, seat_y)
    bottom = RENDER - 12
    _rect(m, x1 + 2, seat_y, x1 + 2 + leg_t, bottom)
    _rect(m, x2 - 2 - leg_t, seat_y, x2 - 2, bottom)
    if p[7] > 0.6:  # stretcher bar
        _rect(m, x1 + 2, bottom - 30, x2 - 2, bottom - 26)
    return m, []


def _table(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((RENDER, RENDER), np.uint8)
    top_w = 110 + 70 * p[0]
    top_y = 60 + 50 * p[1]
    thick = 6 + 12 * p[2]
    cx = RENDER / 2
    x1, x2 = cx - top_w / 2, cx + top_w / 2
    _rect(m, x1, top_y, x2, top_y + thick)
    bottom = RENDER - 12
    if p[3] < 0.33:  # pedestal
        stem = 8 + 14 * p[4]
        _rect(m, cx - stem / 2, top_y, cx + stem / 2, bottom)
        cv2.ellipse(m, (int(cx), int(bottom)), (int(25 + 25 * p[5]), 6), 0, 0, 360, 255, -1)
    else:
        leg = 5 + 9 * p[4]
        inset = 4 + 20 * p[5]
        splay = 12 * p[6] if p[3] > 0.66 else 0.0
        for sx, sign in ((x1 + inset, -1), (x2 - inset - leg, 1)):
            pts = np.array([[sx, top_y], [sx + leg, top_y], [sx + leg + sign * splay, bottom], [sx + sign * splay, bottom]], np.int32)
            cv2.fillPoly(m, [pts], 255)
    return m, []


def _lamp(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((RENDER, RENDER), np.uint8)
    cx = RENDER / 2
    shade_top = 20 + 20 * p[0]
    shade_h = 35 + 35 * p[1]
    top_w = 20 + 50 * p[2]
    bot_w = 60 + 60 * p[3]
    pts = np.array([[cx - top_w / 2, shade_top], [cx + top_w / 2, shade_top], [cx + bot_w / 2, shade_top + shade_h], [cx - bot_w / 2, shade_top + shade_h]], np.int32)
    cv2.fillPoly(m, [pts], 255)
    stem = 3 + 6 * p[4]
    bottom = RENDER - 14
    offset = (p[5] - 0.5) * 40
    cv2.line(m, (int(cx), int(shade_top + shade_h)), (int(cx + offset), int(bottom)), 255, int(stem))
    cv2.ellipse(m, (int(cx + offset), int(bottom)), (int(18 + 22 * p[6]), int(5 + 4 * p[7])), 0, 0, 360, 255, -1)
    return m, []


def _vase(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((RENDER, RENDER), np.uint8)
    cx = RENDER / 2
    top, bottom = 20 + 30 * p[0], RENDER - 12
    t = np.linspace(0, 1, 40)
    neck, belly, foot = 10 + 25 * p[1], 30 + 45 * p[2], 15 + 30 * p[3]
    belly_at = 0.35 + 0.4 * p[4]
    w = np.where(t < belly_at, neck + (belly - neck) * np.clip(np.sin(np.pi / 2 * np.minimum(t / belly_at, 1.0)), 0, 1) ** (0.5 + p[5]),
                 foot + (belly - foot) * np.cos(np.pi / 2 * np.clip((t - belly_at) / (1 - belly_at), 0, 1)))
    y = top + (bottom - top) * t
    pts = np.concatenate([np.stack([cx - w, y], 1), np.stack([cx + w, y], 1)[::-1]]).astype(np.int32)
    cv2.fillPoly(m, [pts], 255)
    return m, []


def _sofa(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((RENDER, RENDER), np.uint8)
    cx = RENDER / 2
    w = 140 + 40 * p[0]
    seat_y = 95 + 25 * p[1]
    back_h = 30 + 35 * p[2]
    arm_w = 10 + 18 * p[3]
    arm_h = 10 + 30 * p[4]
    x1, x2 = cx - w / 2, cx + w / 2
    bottom = RENDER - 22
    _rect(m, x1 + arm_w / 2, seat_y - back_h, x2 - arm_w / 2, seat_y)
    _rect(m, x1, seat_y, x2, bottom)
    _rect(m, x1, seat_y - arm_h, x1 + arm_w, bottom)
    _rect(m, x2 - arm_w, seat_y - arm_h, x2, bottom)
    leg = 6 + 10 * p[5]
    _rect(m, x1 + 4, bottom, x1 + 10, bottom + leg)
    _rect(m, x2 - 10, bottom, x2 - 4, bottom + leg)
    seams = []
    n_cushions = 2 + int(p[6] * 2.99)
    for i in range(1, n_cushions):
        x = x1 + arm_w + (w - 2 * arm_w) * i / n_cushions
        seams.append(np.array([[x, seat_y - back_h + 4], [x, bottom - 4]], np.int32))
    return m, seams


def _shelf(p: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((RENDER, RENDER), np.uint8)
    cx = RENDER / 2
    w = 60 + 100 * p[0]
    h = 110 + 60 * p[1]
    side = 5 + 7 * p[2]
    x1, x2 = cx - w / 2, cx + w / 2
    bottom = RENDER - 8
    top = bottom - h
    _rect(m, x1, top, x1 + side, bottom)
    _rect(m, x2 - side, top, x2, bottom)
    n = 2 + int(p[3] * 3.99)
    board = 4 + 5 * p[4]
    for i in range(n + 1):
        y = top + (h - board) * i / n
        _rect(m, x1, y, x2, y + board)
    if p[5] > 0.5:  # back panel
        inner = np.zeros_like(m)
        _rect(inner, x1, top, x2, bottom)
        m = np.maximum(m, (inner // 255 * 140).astype(np.uint8))
    return m, []


SHAPES = {"Chair": _chair, "Table": _table, "Lamp": _lamp, "Vase": _vase, "Sofa": _sofa, "Shelf": _shelf}


@dataclass(frozen=True)
class _Product:
    product_id: str
    category: str
    params: np.ndarray  # float (8,) in [0, 1]
    color: tuple[int, int, int]  # RGB
    color2: tuple[int, int, int]
    pattern: str  # solid | stripes | checks | dots
    pattern_scale: int
    pattern_angle: float


def _hsv_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    px = np.uint8([[[int(h * 179) % 180, int(s * 255), int(v * 255)]]])
    r, g, b = cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _pattern(prod: _Product) -> np.ndarray:
    """The product's surface texture, ``uint8 (RENDER, RENDER, 3)``."""
    tex = np.empty((RENDER, RENDER, 3), np.uint8)
    tex[:] = prod.color
    if prod.pattern == "solid":
        return tex
    yy, xx = np.mgrid[0:RENDER, 0:RENDER].astype(np.float32)
    a = np.deg2rad(prod.pattern_angle)
    u = xx * np.cos(a) + yy * np.sin(a)
    v = -xx * np.sin(a) + yy * np.cos(a)
    s = float(prod.pattern_scale)
    if prod.pattern == "stripes":
        on = (u // s) % 2 == 0
    elif prod.pattern == "checks":
        on = ((u // s) + (v // s)) % 2 == 0
    else:  # dots
        on = ((u % (2 * s)) - s) ** 2 + ((v % (2 * s)) - s) ** 2 < (0.45 * s) ** 2
    tex[on] = prod.color2
    return tex


def render_product(prod: _Product) -> np.ndarray:
    """RGBA render ``uint8 (RENDER, RENDER, 4)`` of a product: shaded texture inside its silhouette."""
    mask, strokes = SHAPES[prod.category](prod.params)
    tex = _pattern(prod).astype(np.float32)
    # Soft vertical shading so renders are not flat.
    shade = np.linspace(1.08, 0.85, RENDER, dtype=np.float32)[:, None, None]
    tex = np.clip(tex * shade, 0, 255)
    dark = tuple(int(c * 0.45) for c in prod.color)
    rgb = tex.astype(np.uint8)
    for s in strokes:
        cv2.polylines(rgb, [s], False, dark, 2)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, dark, 2)
    alpha = np.where(mask > 0, 255, 0).astype(np.uint8)
    rgb = np.where(mask[..., None] == 140, (rgb * 0.6).astype(np.uint8), rgb)
    return np.dstack([rgb, alpha])


def _make_products(spec: DemoSpec, rng: np.random.Generator) -> list[_Product]:
    products = []
    for ci, cat in enumerate(CATEGORIES):
        for j in range(spec.products_per_category):
            hue = rng.random()
            color = _hsv_rgb(hue, 0.35 + 0.6 * rng.random(), 0.35 + 0.6 * rng.random())
            color2 = _hsv_rgb((hue + 0.25 + 0.5 * rng.random()) % 1.0, 0.3 + 0.7 * rng.random(), 0.3 + 0.7 * rng.random())
            products.append(
                _Product(
                    product_id=f"{ci + 1:02d}{j + 1:03d}",
                    category=cat,
                    params=rng.random(8),
                    color=color,
                    color2=color2,
                    pattern=str(rng.choice(["solid", "stripes", "checks", "dots"])),
                    pattern_scale=int(rng.integers(5, 14)),
                    pattern_angle=float(rng.choice([0.0, 45.0, 90.0, 135.0])),
                )
            )
    return products


def _iconic(rgba: np.ndarray, size: int) -> np.ndarray:
    """Product render composited on white and framed like a catalog shot, ``uint8 (size, size, 3)``."""
    ys, xs = np.nonzero(rgba[..., 3])
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    obj = rgba[y1:y2, x1:x2].astype(np.float32)
    side = int(max(y2 - y1, x2 - x1) * 1.15)
    canvas = np.full((side, side, 3), 255.0, np.float32)
    oy, ox = (side - (y2 - y1)) // 2, (side - (x2 - x1)) // 2
    a = obj[..., 3:4] / 255.0
    region = canvas[oy : oy + (y2 - y1), ox : ox + (x2 - x1)]
    canvas[oy : oy + (y2 - y1), ox : ox + (x2 - x1)] = obj[..., :3] * a + region * (1 - a)
    return cv2.resize(canvas.astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)


def _room(spec: DemoSpec, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A room-like background and its floor line y."""
    w, h = spec.scene_width, spec.scene_height
    wall = np.array(_hsv_rgb(rng.random(), 0.05 + 0.3 * rng.random(), 0.6 + 0.35 * rng.random()), np.float32)
    floor = np.array(_hsv_rgb(0.05 + 0.08 * rng.random(), 0.2 + 0.5 * rng.random(), 0.3 + 0.5 * rng.random()), np.float32)
    horizon = int(h * (0.55 + 0.15 * rng.random()))
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = wall
    img[horizon:] = floor
    # Floor planks or tiles.
    if rng.random() < 0.5:
        for x in range(int(rng.integers(0, 30)), w, int(rng.integers(18, 40))):
            cv2.line(img, (x, horizon), (int(w / 2 + (x - w / 2) * 1.8), h), (floor * 0.75).tolist(), 1)
    else:
        for y in range(horizon, h, int(rng.integers(10, 22))):
            cv2.line(img, (0, y), (w, y), (floor * 0.8).tolist(), 1)
    cv2.rectangle(img, (0, horizon - 4), (w, horizon), (wall * 0.7).tolist(), -1)  # skirting
    # A window or a framed picture or two on the wall.
    for _ in range(int(rng.integers(1, 3))):
        ww, wh = int(w * (0.12 + 0.15 * rng.random())), int(horizon * (0.2 + 0.3 * rng.random()))
        x0, y0 = int(rng.integers(0, w - ww)), int(rng.integers(4, max(5, horizon - wh - 20)))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), (200, 225, 245), -1)
            cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), (240, 240, 240), 3)
            cv2.line(img, (x0 + ww // 2, y0), (x0 + ww // 2, y0 + wh), (240, 240, 240), 2)
        else:
            cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), _hsv_rgb(rng.random(), 0.5, 0.6), -1)
            cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), (40, 30, 20), 2)
    # Light falloff from a random side.
    gx = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * (rng.random() - 0.5) * 0.5
    img = img * (1.0 + gx)
    return np.clip(img, 0, 255), horizon


def _warp_product(rgba: np.ndarray, target_h: int, rng: np.random.Generator) -> np.ndarray:
    """Scale, rotate and perspective-warp an RGBA render; returns the warped RGBA crop."""
    ys, xs = np.nonzero(rgba[..., 3])
    obj = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = target_h / obj.shape[0]
    obj = cv2.resize(obj, (max(2, int(obj.shape[1] * scale)), max(2, target_h)), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        obj = obj[:, ::-1].copy()
    oh, ow = obj.shape[:2]
    pad = int(0.35 * max(oh, ow))
    big = cv2.copyMakeBorder(obj, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
    bh, bw = big.shape[:2]
    src = np.float32([[pad, pad], [pad + ow, pad], [pad + ow, pad + oh], [pad, pad + oh]])
    jitter = 0.12 * np.float32([ow, oh])
    dst = src + rng.uniform(-1, 1, (4, 2)).astype(np.float32) * jitter
    angle = np.deg2rad(rng.uniform(-12, 12))
    c = np.float32([bw / 2, bh / 2])
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (dst - c) @ rot.T + c
    warped = cv2.warpPerspective(big, cv2.getPerspectiveTransform(src, dst), (bw, bh), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(warped[..., 3] > 127)
    return warped[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _distractor(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random blob (plant, box, ball) as RGBA ``(size, size, 4)``."""
    out = np.zeros((size, size, 4), np.uint8)
    color = _hsv_rgb(rng.random(), 0.3 + 0.6 * rng.random(), 0.3 + 0.6 * rng.random())
    kind = rng.integers(0, 3)
    if kind == 0:
        cv2.circle(out, (size // 2, size // 2), size // 2 - 1, (*color, 255), -1)
    elif kind == 1:
        cv2.rectangle(out, (2, size // 4), (size - 3, size - 3), (*color, 255), -1)
    else:  # a leafy plant
        for _ in range(7):
            a = rng.uniform(-2.4, -0.7)
            end = (int(size / 2 + np.cos(a) * size * 0.45), int(size * 0.75 + np.sin(a) * size * 0.7))
            cv2.ellipse(out, ((size // 2 + end[0]) // 2, (int(size * 0.75) + end[1]) // 2), (size // 10, size // 4), np.rad2deg(a) + 90, 0, 360, (40, 120 + int(rng.integers(0, 80)), 50, 255), -1)
        cv2.rectangle(out, (size // 3, int(size * 0.7)), (2 * size // 3, size - 1), (*color, 255), -1)
    return out


def _paste(img: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    """Alpha-composite ``rgba`` into float ``img`` with its top-left at (x, y), clipped."""
    h, w = img.shape[:2]
    oh, ow = rgba.shape[:2]
    x1, y1, x2, y2 = max(0, x), max(0, y), min(w, x + ow), min(h, y + oh)
    if x1 >= x2 or y1 >= y2:
        return
    sub = rgba[y1 - y : y2 - y, x1 - x : x2 - x].astype(np.float32)
    a = sub[..., 3:4] / 255.0
    img[y1:y2, x1:x2] = sub[..., :3] * a + img[y1:y2, x1:x2] * (1 - a)


def _scene(spec: DemoSpec, items: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Compose one scene from product renders; returns the RGB image and each product's box."""
    img, horizon = _room(spec, rng)
    w, h = spec.scene_width, spec.scene_height
    boxes = []
    slots = np.linspace(0, w, len(items) + 1)
    order = rng.permutation(len(items))
    for k, idx in enumerate(order):
        target_h = int(h * rng.uniform(0.38, 0.62))
        obj = _warp_product(items[idx], target_h, rng)
        # Re-light: brightness, contrast and a colour cast.
        rgb = obj[..., :3].astype(np.float32)
        rgb = (rgb - 128) * rng.uniform(0.75, 1.15) + 128 * rng.uniform(0.75, 1.2)
        rgb = rgb * rng.uniform(0.88, 1.12, 3)
        obj = np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), obj[..., 3]])
        oh, ow = obj.shape[:2]
        lo, hi = int(slots[k]), int(slots[k + 1])
        x = int(rng.integers(lo - ow // 4, max(lo - ow // 4 + 1, hi - ow + ow // 4)))
        x = int(np.clip(x, 0, w - ow)) if ow < w else 0
        bottom = int(rng.integers(horizon + 4, h + 1))  # standing on the floor
        y = int(np.clip(bottom - oh, 0, max(0, h - oh)))
        _paste(img, obj, x, y)
        boxes.append((order[k], (x, y, min(w, x + ow), min(h, y + oh))))
    # Distractors, some in front of the products (partial occlusion).
    for _ in range(int(rng.integers(1, 4))):
        s = int(h * rng.uniform(0.12, 0.28))
        _paste(img, _distractor(s, rng), int(rng.integers(-s // 3, w - s // 2)), int(rng.integers(horizon - s, h - s // 2)))
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.1))
    img = img + rng.normal(0, rng.uniform(2, 7), img.shape)
    boxes.sort(key=lambda b: b[0])
    return np.clip(img, 0, 255).astype(np.uint8), [b for _, b in boxes]


def generate_demo_catalog(out_dir: Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Write a demo catalog into ``out_dir`` (created atomically: temp folder, then rename)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    products = _make_products(spec, rng)
    renders = {p.product_id: render_product(p) for p in products}
    with atomic_folder(out_dir) as tmp:
        (tmp / "images" / "products").mkdir(parents=True)
        (tmp / "images" / "scenes").mkdir(parents=True)
        with open(tmp / "products.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["product_id", "name", "type", "color", "pattern", "image"])
            for p in products:
                rel = f"images/products/{p.product_id}.png"
                cv2.imwrite(str(tmp / rel), cv2.cvtColor(_iconic(renders[p.product_id], spec.iconic_size), cv2.COLOR_RGB2BGR))
                wr.writerow([p.product_id, f"{p.category} {p.product_id}", p.category, "#%02x%02x%02x" % p.color, p.pattern, rel])
        # Every product appears in scenes: cycle through a shuffled list so coverage is even.
        queue: list[int] = []
        pair_rows = []
        with open(tmp / "scenes.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["scene", "room_type", "image"])
            for s in range(spec.scenes):
                n_items = int(rng.integers(2, 4))
                chosen: list[int] = []
                while len(chosen) < n_items:
                    if not queue:
                        queue = list(rng.permutation(len(products)))
                    cand = int(queue.pop())
                    if cand not in chosen:
                        chosen.append(cand)
                img, boxes = _scene(spec, [renders[products[c].product_id] for c in chosen], rng)
                name = f"scene{s:04d}"
                rel = f"images/scenes/{name}.jpg"
                cv2.imwrite(str(tmp / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 92))])
                wr.writerow([name, "Living room", rel])
                for c, box in zip(chosen, boxes):
                    pair_rows.append([products[c].product_id, name, *box])
        with open(tmp / "pairs.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["product_id", "scene", "x1", "y1", "x2", "y2"])
            wr.writerows(pair_rows)
        (tmp / "demo_spec.txt").write_text(repr(asdict(spec)) + "\n")
    logger.info("demo catalog: %d products, %d scenes, %d pairs -> %s", len(products), spec.scenes, len(pair_rows), out_dir)
    return out_dir


def ensure_demo_catalog(state_dir: Path, spec: DemoSpec = DemoSpec()) -> Path:
    """The demo catalog under ``state_dir``, generated on first use."""
    out = Path(state_dir) / "demo_catalog" / spec.folder_name
    if (out / "pairs.csv").is_file():
        return out
    logger.info("generating the demo catalog (once) into %s", out)
    return generate_demo_catalog(out, spec)
