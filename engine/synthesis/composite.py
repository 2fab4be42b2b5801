"""Synthetic in-situ views: a cut-out catalog product pasted into a room photo, with its true box.

A ``PlacementPrior`` says where objects of a class sit in room photos; ``composite`` fits the cut-out
into a sampled box, warps and re-lights it, casts a soft contact shadow, blends it in, optionally hides
part of it (behind another cut-out or beyond the frame edge), then blurs and re-compresses the scene.
The returned box is measured on the product's final visibility mask, so it is the box an annotator
would draw, whatever the augmentation did.

Images are ``uint8 (H, W, 3)`` RGB; alphas ``float32 (H, W)`` in [0, 1]; pixel boxes
``(x1, y1, x2, y2)`` with x2/y2 exclusive (``engine.data.images.Box``); relative boxes ``(cx, cy, w, h)``
are fractions of the scene's width and height. Every random draw comes from the ``rng`` passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from engine.synthesis.cutout import mask_box
from engine.data.images import Box

RelBox = tuple[float, float, float, float]
Range = tuple[float, float]

# Floor-standing default: low in the frame, a third of its width, left / centre / right.
FLOOR_BOXES: tuple[RelBox, ...] = ((0.3, 0.7, 0.28, 0.34), (0.5, 0.72, 0.3, 0.36), (0.7, 0.7, 0.28, 0.34))

_EPS = 1e-6


class CompositeError(ValueError):
    """Inputs that cannot be composited, or a product that stays too hidden after every try."""


def to_rel_box(box: Box, width: int, height: int) -> RelBox:
    """Pixel ``(x1, y1, x2, y2)`` in a ``width`` x ``height`` scene as relative ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


def _check_rel_box(box: Sequence[float], where: str) -> RelBox:
    if len(box) != 4:
        raise CompositeError(f"{where}: a relative box is (cx, cy, w, h), got {box!r}")
    cx, cy, w, h = (float(v) for v in box)
    if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
        raise CompositeError(f"{where}: relative box {box!r} needs cx, cy in [0, 1] and w, h in (0, 1] "
                             "(fractions of the scene's width and height)")
    return cx, cy, w, h


@dataclass(frozen=True)
class PlacementPrior:
    """Where an object of each class sits in a room photo, as observed relative boxes.

    boxes: class label -> observed relative boxes ``(cx, cy, w, h)``.
    default: boxes for classes without observations (``FLOOR_BOXES``: floor-standing).
    scale_jitter: a sampled box's width and height are multiplied by one factor from this range.
    shift_jitter: its centre moves by up to this fraction of its own width / height.
    """

    boxes: Mapping[str, tuple[RelBox, ...]] = field(default_factory=dict)
    default: tuple[RelBox, ...] = FLOOR_BOXES
    scale_jitter: Range = (0.85, 1.15)
    shift_jitter: float = 0.15

    def __post_init__(self) -> None:
        checked = {str(label): tuple(_check_rel_box(b, f"class {label!r}") for b in boxes)
                   for label, boxes in self.boxes.items() if len(boxes)}
        object.__setattr__(self, "boxes", checked)  # a plain dict, so the prior pickles to worker processes
        object.__setattr__(self, "default", tuple(_check_rel_box(b, "default") for b in self.default))
        if not self.default:
            raise ValueError("default needs at least one relative box")
        _check_range("scale_jitter", self.scale_jitter, 0.0, None, open_low=True)
        if not 0 <= self.shift_jitter <= 1:
            raise ValueError(f"shift_jitter must be in [0, 1], got {self.shift_jitter}")

    @classmethod
    def from_boxes(cls, boxes_by_class: Mapping[str, Sequence[Sequence[float]]], **kwargs: Any) -> PlacementPrior:
        """A prior from observed relative boxes per class; ``kwargs`` set the other fields."""
        return cls(boxes={k: tuple(tuple(b) for b in v) for k, v in boxes_by_class.items()}, **kwargs)

    def boxes_for(self, label: str) -> tuple[RelBox, ...]:
        """The observed boxes of ``label``, or the default ones."""
        return self.boxes.get(label, self.default)

    def sample(self, label: str, rng: np.random.Generator) -> RelBox:
        """One observed box of ``label`` with scale and position jitter, kept inside the frame."""
        options = self.boxes_for(label)
        cx, cy, w, h = options[int(rng.integers(len(options)))]
        s = rng.uniform(*self.scale_jitter)
        w, h = min(1.0, w * s), min(1.0, h * s)
        cx += rng.uniform(-self.shift_jitter, self.shift_jitter) * w
        cy += rng.uniform(-self.shift_jitter, self.shift_jitter) * h
        cx = float(np.clip(cx, w / 2, 1 - w / 2))
        cy = float(np.clip(cy, h / 2, 1 - h / 2))
        return cx, cy, float(w), float(h)


def _check_range(name: str, r: Sequence[float], lo: float | None, hi: float | None, *, open_low: bool = False) -> None:
    if len(r) != 2 or r[0] > r[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {r!r}")
    if lo is not None and (r[0] < lo or (open_low and r[0] <= lo)):
        raise ValueError(f"{name} must lie {'above' if open_low else 'at or above'} {lo}, got {r!r}")
    if hi is not None and r[1] > hi:
        raise ValueError(f"{name} must lie at or below {hi}, got {r!r}")


def _check_prob(name: str, p: float) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


@dataclass(frozen=True)
class CompositeConfig:
    """Random augmentation ranges for ``composite``; each ``(low, high)`` is drawn uniformly.

    scale_jitter: factor on the size that fits the cut-out into the sampled box.
    perspective: corner displacement, as a fraction of the product's width / height (0: no warp).
    brightness, contrast: factors on the product's colours (contrast around its mean luminance).
    tint: how far the product's colour balance moves toward the scene's mean colour cast (0..1).
    temperature: warm (+) / cool (-) shift of the product: red x (1 + t), blue x (1 - t).
    shadow_prob, shadow: chance and strength (peak darkening, 0..1) of the contact shadow at the base.
    occlusion_prob, occluder_scale: chance that the ``occluder`` cut-out is pasted in front, and its
        height as a fraction of the product's.
    edge_prob, edge_cut: chance that the product is pushed over a frame edge, and the share of it
        that goes beyond.
    blur_prob, blur_sigma: chance and Gaussian sigma (pixels) of a global blur.
    noise_sigma: Gaussian sensor noise, 0..255 levels.
    jpeg_prob, jpeg_quality: chance and quality range of JPEG re-compression.
    box_threshold: a pixel is visible product when its final alpha is >= this.
    min_visible: least alpha-weighted share of the (warped) product that must stay visible.
    max_tries: draws before ``CompositeError`` when the product stays too hidden.
    """

    scale_jitter: Range = (0.9, 1.1)
    perspective: Range = (0.0, 0.06)
    brightness: Range = (0.8, 1.08)
    contrast: Range = (0.85, 1.05)
    tint: Range = (0.1, 0.5)
    temperature: Range = (-0.04, 0.04)
    shadow_prob: float = 0.8
    shadow: Range = (0.25, 0.5)
    occlusion_prob: float = 0.3
    occluder_scale: Range = (0.35, 0.7)
    edge_prob: float = 0.1
    edge_cut: Range = (0.1, 0.35)
    blur_prob: float = 0.3
    blur_sigma: Range = (0.4, 1.2)
    noise_sigma: Range = (0.0, 2.0)
    jpeg_prob: float = 0.8
    jpeg_quality: tuple[int, int] = (60, 95)
    box_threshold: float = 0.5
    min_visible: float = 0.5
    max_tries: int = 10

    def __post_init__(self) -> None:
        _check_range("scale_jitter", self.scale_jitter, 0.0, None, open_low=True)
        _check_range("perspective", self.perspective, 0.0, 0.25)
        _check_range("brightness", self.brightness, 0.0, None, open_low=True)
        _check_range("contrast", self.contrast, 0.0, None, open_low=True)
        _check_range("tint", self.tint, 0.0, 1.0)
        _check_range("temperature", self.temperature, -0.5, 0.5)
        _check_range("shadow", self.shadow, 0.0, 1.0)
        _check_range("occluder_scale", self.occluder_scale, 0.0, None, open_low=True)
        _check_range("edge_cut", self.edge_cut, 0.0, 0.95)
        _check_range("blur_sigma", self.blur_sigma, 0.0, None)
        _check_range("noise_sigma", self.noise_sigma, 0.0, 255.0)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        for name in ("shadow_prob", "occlusion_prob", "edge_prob", "blur_prob", "jpeg_prob"):
            _check_prob(name, getattr(self, name))
        if not 0 < self.box_threshold <= 1:
            raise ValueError(f"box_threshold must be in (0, 1], got {self.box_threshold}")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {self.min_visible}")
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {self.max_tries}")


@dataclass(frozen=True, eq=False)
class Composite:
    """image: ``uint8 (H, W, 3)`` RGB scene with the product in it; box: tight ``(x1, y1, x2, y2)`` of the
    product's visible pixels; params: the values drawn (plain Python types, for a manifest)."""

    image: np.ndarray
    box: Box
    params: dict[str, Any]


def composite(
    background: np.ndarray,
    product: np.ndarray,
    alpha: np.ndarray,
    rel_box: Sequence[float],
    rng: np.random.Generator,
    cfg: CompositeConfig | None = None,
    occluder: tuple[np.ndarray, np.ndarray] | None = None,
) -> Composite:
    """Paste ``product`` (``uint8 (h, w, 3)``, cut out by ``alpha`` ``float32 (h, w)``) into ``background``.

    The cut-out, cropped to its mask, is fitted into ``rel_box`` keeping its aspect ratio (centred
    horizontally, standing on the box's bottom edge), then augmented as ``cfg`` says. ``occluder`` is
    another ``(image, alpha)`` cut-out that may be pasted in front of the product's lower part.
    Raises ``CompositeError`` for malformed inputs, or when less than ``cfg.min_visible`` of the
    product stays visible in ``cfg.max_tries`` draws.
    """
    cfg = cfg or CompositeConfig()
    scene = _check_rgb(background, "background")
    patch = _cropped_cutout(product, alpha, "product")
    occ = None if occluder is None else _cropped_cutout(occluder[0], occluder[1], "occluder")
    rb = _check_rel_box(rel_box, "rel_box")
    scene_f = scene.astype(np.float32)
    scene_mean = scene_f.reshape(-1, 3).mean(axis=0)
    best = 0.0
    for attempt in range(cfg.max_tries):
        result = _attempt(scene_f, scene_mean, patch, occ, rb, rng, cfg)
        if result is not None and result[2]["visible_share"] >= cfg.min_visible:
            image, box, params = result
            params["attempt"] = attempt
            return Composite(image=_finish(image, rng, cfg, params), box=box, params=params)
        best = max(best, 0.0 if result is None else result[2]["visible_share"])
    raise CompositeError(
        f"the product stayed too hidden: at best {best:.0%} visible after {cfg.max_tries} tries "
        f"(min_visible {cfg.min_visible:.0%}); move rel_box inside the frame, or lower occlusion_prob / edge_prob"
    )


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise CompositeError(f"{name} must be a uint8 (H, W, 3) RGB image, got {got}")
    return image


def _cropped_cutout(image: np.ndarray, alpha: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied colour ``float32 (h, w, 3)`` and alpha ``float32 (h, w)``, cropped to the alpha's support."""
    _check_rgb(image, name)
    if not isinstance(alpha, np.ndarray) or alpha.shape != image.shape[:2]:
        got = alpha.shape if isinstance(alpha, np.ndarray) else type(alpha).__name__
        raise CompositeError(f"{name} alpha must be (H, W) = {image.shape[:2]}, got {got}")
    a = np.clip(alpha.astype(np.float32), 0.0, 1.0)
    box = mask_box(a, threshold=_EPS)
    if box is None:
        raise CompositeError(f"{name} alpha is empty: nothing to paste (was the cut-out all white?)")
    x1, y1, x2, y2 = box
    a = a[y1:y2, x1:x2]
    return image[y1:y2, x1:x2].astype(np.float32) * a[..., None], a


def _resize(pm: np.ndarray, a: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    interp = cv2.INTER_AREA if width < a.shape[1] else cv2.INTER_LINEAR
    a = np.clip(cv2.resize(a, (width, height), interpolation=interp), 0, 1)
    return cv2.resize(pm, (width, height), interpolation=interp), a


def _perspective(
    pm: np.ndarray, a: np.ndarray, strength: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Warp premultiplied colour and alpha by moving each corner up to ``strength`` x the size; returns the
    warped pair and the offset of the new patch's origin from the old one."""
    h, w = a.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + rng.uniform(-strength, strength, (4, 2)).astype(np.float32) * np.float32([w, h])
    origin = np.floor(dst.min(axis=0))
    dst = (dst - origin).astype(np.float32)
    out_w, out_h = (int(v) for v in np.ceil(dst.max(axis=0)))
    m = cv2.getPerspectiveTransform(src, dst)
    kw = {"flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    pm_w = cv2.warpPerspective(pm, m, (out_w, out_h), **kw)
    a_w = np.clip(cv2.warpPerspective(a, m, (out_w, out_h), **kw), 0, 1)
    return pm_w, a_w, int(origin[0]), int(origin[1])


def _relight(pm: np.ndarray, a: np.ndarray, gains: np.ndarray, contrast: float) -> np.ndarray:
    """Premultiplied colour with contrast around the alpha-weighted mean luminance, then per-channel ``gains``."""
    colour = pm / np.maximum(a, _EPS)[..., None]
    weight = a.sum() + _EPS
    mean = float((colour.mean(axis=2) * a).sum() / weight)
    colour = (colour - mean) * contrast + mean
    colour = np.clip(colour * gains, 0, 255)
    return colour * a[..., None]


def _place(patch: np.ndarray, x: int, y: int, height: int, width: int) -> np.ndarray:
    """``patch`` at top-left ``(x, y)`` on a zero canvas of ``height`` x ``width``, clipped at the frame."""
    out = np.zeros((height, width) + patch.shape[2:], np.float32)
    ph, pw = patch.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + pw, width), min(y + ph, height)
    if x1 < x2 and y1 < y2:
        out[y1:y2, x1:x2] = patch[y1 - y : y2 - y, x1 - x : x2 - x]
    return out


def _contact_shadow(a: np.ndarray, x: int, y: int, height: int, width: int) -> np.ndarray:
    """Soft ellipse ``float32 (height, width)`` in [0, 1] under the base of alpha patch ``a`` placed at ``(x, y)``."""
    box = mask_box(a, 0.5) or (0, 0, a.shape[1], a.shape[0])
    bx1, _, bx2, by2 = box
    obj_w = bx2 - bx1
    axes = (max(2, round(0.55 * obj_w)), max(2, round(0.07 * obj_w)))
    centre = (round(x + (bx1 + bx2) / 2), round(y + by2 - axes[1] * 0.3))
    # draw on a local canvas with room for the blur, then place it
    pad = 4 * axes[1]
    local = np.zeros((2 * (axes[1] + pad), 2 * (axes[0] + pad)), np.float32)
    cv2.ellipse(local, (axes[0] + pad, axes[1] + pad), axes, 0, 0, 360, 1.0, thickness=-1)
    local = cv2.GaussianBlur(local, (0, 0), sigmaX=max(1.0, axes[1] * 0.8))
    return _place(local, centre[0] - axes[0] - pad, centre[1] - axes[1] - pad, height, width)


def _paste(
    scene: np.ndarray,
    scene_mean: np.ndarray,
    patch: tuple[np.ndarray, np.ndarray],
    rb: RelBox,
    rng: np.random.Generator,
    cfg: CompositeConfig,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[np.ndarray, np.ndarray, int, int, np.ndarray, float]]:
    """One draw of geometry and lighting, pasted: the new float scene, the product's full-frame alpha
    ``float32 (H, W)``, the params drawn, and (its alpha patch, premultiplied patch, x, y, gains,
    contrast) for an occluder that must be lit like it."""
    height, width = scene.shape[:2]
    pm, a = patch
    # fit into the box, keeping aspect ratio; centred horizontally, standing on the box's bottom
    cx, cy, bw, bh = rb[0] * width, rb[1] * height, rb[2] * width, rb[3] * height
    scale = min(bw / a.shape[1], bh / a.shape[0]) * rng.uniform(*cfg.scale_jitter)
    new_w, new_h = max(2, round(a.shape[1] * scale)), max(2, round(a.shape[0] * scale))
    pm, a = _resize(pm, a, new_w, new_h)
    x, y = round(cx - new_w / 2), round(cy + bh / 2 - new_h)
    strength = float(rng.uniform(*cfg.perspective))
    if strength > 0:
        pm, a, dx, dy = _perspective(pm, a, strength, rng)
        x, y = x + dx, y + dy
    params: dict[str, Any] = {"rel_box": [float(v) for v in rb], "scale": float(scale), "size": [new_w, new_h],
                              "perspective": strength}
    x, y = _push_over_edge(a, x, y, width, height, rng, cfg, params)
    # re-light: contrast, brightness, the scene's colour cast, a warm/cool shift
    brightness = float(rng.uniform(*cfg.brightness))
    contrast = float(rng.uniform(*cfg.contrast))
    tint = float(rng.uniform(*cfg.tint))
    temperature = float(rng.uniform(*cfg.temperature))
    cast = scene_mean / max(float(scene_mean.mean()), _EPS)
    gains = brightness * (1 + tint * (cast - 1)) * np.float32([1 + temperature, 1, 1 - temperature])
    gains = gains.astype(np.float32)
    pm = _relight(pm, a, gains, contrast)
    params.update(brightness=brightness, contrast=contrast, tint=tint, temperature=temperature)
    # contact shadow on the scene, then the product over it
    out = scene.copy()
    shadow = float(rng.uniform(*cfg.shadow)) if rng.random() < cfg.shadow_prob else 0.0
    if shadow > 0:
        out *= (1 - shadow * _contact_shadow(a, x, y, height, width))[..., None]
    params["shadow"] = shadow
    a_full = _place(a, x, y, height, width)
    out = out * (1 - a_full[..., None]) + _place(pm, x, y, height, width)
    return out, a_full, params, (a, pm, x, y, gains, contrast)


def _attempt(
    scene: np.ndarray,
    scene_mean: np.ndarray,
    patch: tuple[np.ndarray, np.ndarray],
    occ: tuple[np.ndarray, np.ndarray] | None,
    rb: RelBox,
    rng: np.random.Generator,
    cfg: CompositeConfig,
) -> tuple[np.ndarray, Box, dict[str, Any]] | None:
    """One draw of geometry, lighting and occlusion: float scene, visible box and params (None: nothing visible)."""
    out, a_full, params, (a, _, x, y, gains, contrast) = _paste(scene, scene_mean, patch, rb, rng, cfg)
    visible = a_full
    params["occluder_box"] = None
    if occ is not None and rng.random() < cfg.occlusion_prob:
        out, o_full = _occlude(out, a, x, y, occ, gains, contrast, rng, cfg, params)
        visible = a_full * (1 - o_full)
    params["visible_share"] = float(visible.sum() / max(float(a.sum()), _EPS))
    box = mask_box(visible, cfg.box_threshold)
    if box is None:
        return None
    return out, box, params


def _push_over_edge(a: np.ndarray, x: int, y: int, width: int, height: int, rng: np.random.Generator,
                    cfg: CompositeConfig, params: dict[str, Any]) -> tuple[int, int]:
    """With probability ``cfg.edge_prob``, move the cut-out (alpha ``a`` at ``x, y``) so a share of it is beyond a frame edge."""
    edge, cut = None, 0.0
    if rng.random() < cfg.edge_prob:
        edge = ("left", "right", "top", "bottom")[int(rng.integers(4))]
        cut = float(rng.uniform(*cfg.edge_cut))
        ax1, ay1, ax2, ay2 = mask_box(a, _EPS) or (0, 0, a.shape[1], a.shape[0])
        if edge == "left":
            x = -ax1 - round(cut * (ax2 - ax1))
        elif edge == "right":
            x = width - ax2 + round(cut * (ax2 - ax1))
        elif edge == "top":
            y = -ay1 - round(cut * (ay2 - ay1))
        else:
            y = height - ay2 + round(cut * (ay2 - ay1))
    params.update(edge=edge, edge_cut=cut, offset=[int(x), int(y)])
    return x, y


def _occlude(out: np.ndarray, a: np.ndarray, x: int, y: int, occ: tuple[np.ndarray, np.ndarray], gains: np.ndarray,
             contrast: float, rng: np.random.Generator, cfg: CompositeConfig, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Paste the occluder cut-out in front of the product's lower part (re-lit like it); the new
    float scene and the occluder's full-frame alpha."""
    height, width = out.shape[:2]
    pbox = mask_box(a, 0.5) or (0, 0, a.shape[1], a.shape[0])
    p_w, p_h = pbox[2] - pbox[0], pbox[3] - pbox[1]
    o_pm, o_a = occ
    o_scale = rng.uniform(*cfg.occluder_scale) * p_h / o_a.shape[0]
    o_w, o_h = max(2, round(o_a.shape[1] * o_scale)), max(2, round(o_a.shape[0] * o_scale))
    o_pm, o_a = _resize(o_pm, o_a, o_w, o_h)
    o_pm = _relight(o_pm, o_a, gains, contrast)
    o_cx = x + pbox[0] + rng.uniform(0, p_w)
    o_bottom = y + pbox[3] + rng.uniform(0, 0.15) * p_h
    o_x, o_y = round(o_cx - o_w / 2), round(o_bottom - o_h)
    o_full = _place(o_a, o_x, o_y, height, width)
    out = out * (1 - o_full[..., None]) + _place(o_pm, o_x, o_y, height, width)
    params["occluder_box"] = [o_x, o_y, o_x + o_w, o_y + o_h]
    return out, o_full


def _finish(image: np.ndarray, rng: np.random.Generator, cfg: CompositeConfig, params: dict[str, Any]) -> np.ndarray:
    """Global blur, sensor noise and JPEG re-compression of the float scene; ``uint8 (H, W, 3)``."""
    sigma = float(rng.uniform(*cfg.blur_sigma)) if rng.random() < cfg.blur_prob else 0.0
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
    noise = float(rng.uniform(*cfg.noise_sigma))
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.jpeg_prob else None
    if quality is not None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise CompositeError("JPEG re-compression failed")
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    params.update(blur_sigma=sigma, noise_sigma=noise, jpeg_quality=quality)
    return out


@dataclass(frozen=True, eq=False)
class Placement:
    """One cut-out for ``composite_many``: ``image`` ``uint8 (h, w, 3)`` cut out by ``alpha`` ``float32
    (h, w)``, fitted into ``rel_box`` ``(cx, cy, w, h)``; ``squash`` scales its height first (a rug
    photographed from above lies flat on the floor: 0.3–0.5), 1 = as photographed."""

    image: np.ndarray
    alpha: np.ndarray
    rel_box: RelBox
    squash: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.squash <= 1:
            raise CompositeError(f"squash must be in (0, 1], got {self.squash}")


@dataclass(frozen=True, eq=False)
class RoomComposite:
    """image: ``uint8 (H, W, 3)`` RGB scene with every pasted product; boxes: per placement, in the
    order given, the tight box of its visible pixels, or None when it could not be pasted visibly
    enough; params: the values drawn per placement; kept_visible: per ``keep`` box, the share of its
    area no pasted product covers; finish: the blur, noise and JPEG quality drawn for the whole scene."""

    image: np.ndarray
    boxes: tuple[Box | None, ...]
    params: tuple[dict[str, Any], ...]
    kept_visible: tuple[float, ...]
    finish: dict[str, Any]


def composite_many(
    background: np.ndarray,
    placements: Sequence[Placement],
    rng: np.random.Generator,
    cfg: CompositeConfig | None = None,
    keep: Sequence[Box] = (),
) -> RoomComposite:
    """Paste several cut-outs into ``background`` in the order given (back to front), each re-lit and
    shadowed as ``composite`` does, then blur, noise and JPEG once.

    A later product may hide part of an earlier one; a draw is accepted only when the new product
    and every earlier one keep at least ``cfg.min_visible`` of their pixels visible (else it is drawn
    again, ``cfg.max_tries`` times, then left out: its box is None). Each returned box is measured on
    the product's final visibility mask, so every box is true. ``keep``: boxes of objects already in
    the photo (e.g. detected); the share of each that stays uncovered is returned, so a caller can
    drop the label of one that is mostly hidden.
    """
    cfg = cfg or CompositeConfig()
    scene = _check_rgb(background, "background").astype(np.float32)
    scene_mean = scene.reshape(-1, 3).mean(axis=0)
    height, width = scene.shape[:2]
    visible: list[np.ndarray | None] = []  # per placement: its visible alpha so far
    totals: list[float] = []
    params: list[dict[str, Any]] = []
    for i, pl in enumerate(placements):
        patch = _cropped_cutout(pl.image, pl.alpha, f"placement {i}")
        if pl.squash < 1:
            patch = _resize(patch[0], patch[1], patch[1].shape[1], max(2, round(patch[1].shape[0] * pl.squash)))
        rb = _check_rel_box(pl.rel_box, f"placement {i}")
        drawn = None
        for attempt in range(cfg.max_tries):
            out, a_full, p, (a, *_rest) = _paste(scene, scene_mean, patch, rb, rng, cfg)
            total = float(a.sum())
            own = float(a_full.sum()) / max(total, _EPS)
            if own >= cfg.min_visible and all(v is None or float((v * (1 - a_full)).sum()) >= cfg.min_visible * t
                                               for v, t in zip(visible, totals)):
                drawn = (out, a_full, total, {**p, "attempt": attempt, "squash": pl.squash})
                break
        if drawn is None:
            visible.append(None)
            totals.append(0.0)
            params.append({"skipped": f"not visible enough in {cfg.max_tries} draws"})
            continue
        scene, a_full, total, p = drawn
        visible = [v if v is None else v * (1 - a_full) for v in visible] + [a_full]
        totals.append(total)
        params.append(p)
    boxes = []
    for v, t, p in zip(visible, totals, params):
        box = None if v is None else mask_box(v, cfg.box_threshold)
        if v is not None:
            p["visible_share"] = float(v.sum()) / max(t, _EPS)
        boxes.append(box)
    covered = np.zeros((height, width), np.float32)
    for v in visible:
        if v is not None:
            covered = np.maximum(covered, v)
    kept = tuple(_uncovered_share(covered, b) for b in keep)
    finish: dict[str, Any] = {}
    image = _finish(scene, rng, cfg, finish)
    return RoomComposite(image, tuple(boxes), tuple(params), kept, finish)


def _uncovered_share(covered: np.ndarray, box: Box) -> float:
    """The share of ``box``'s area where ``covered`` (alpha, ``float32 (H, W)``) is below one half."""
    x1, y1, x2, y2 = (int(v) for v in box)
    region = covered[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
    return 1.0 if region.size == 0 else float((region < 0.5).mean())
