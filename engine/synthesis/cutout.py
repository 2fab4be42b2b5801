"""Cut a product out of its white-background catalog photo as a soft alpha mask.

Background is the near-white, unsaturated region connected to the image border, so white parts
inside the product (a white shade outlined by its frame, a label) stay foreground. The mask is then
cleaned (specks dropped, enclosed holes filled, also those behind gaps a closing seals) and
feathered inwards, so edge pixels that are half product, half white backdrop get a low alpha
instead of a white halo.

Images are ``uint8 (H, W, 3)`` RGB; alphas ``float32 (H, W)`` in [0, 1]; boxes ``(x1, y1, x2, y2)``
integer pixels with x2/y2 exclusive (as in ``engine.data.images``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.data.images import Box

SEE_THROUGH_MIN_SHARE = 0.002  # see ``CutoutConfig.see_through_level``


class CutoutError(ValueError):
    """The image cannot be cut out: not an RGB image, all white, or not a white-background photo."""


@dataclass(frozen=True)
class CutoutConfig:
    """How a white-background photo is cut out.

    white_level: a backdrop pixel's darkest channel is >= this (0..255).
    backdrop_margin: None, or raise the level to the border backdrop's median darkest channel minus
        this (but not above the backdrop's noise floor, its 1st percentile), when that is higher: on a
        pure-white studio backdrop, light-grey product surfaces (a white chair's shaded back at 230)
        then stay product instead of merging with the backdrop.
    max_spread: a backdrop pixel's channel spread (max - min) is <= this (0..255), i.e. unsaturated.
    close_px: radius of the morphological closing that seals gaps in the product's outline, pixels
        (0: off), so the white inside counts as enclosed; white seal pixels themselves stay backdrop.
    min_part_share: separate foreground parts smaller than this share of the whole foreground are
        dropped as specks (dust, JPEG noise); 0 keeps every part.
    feather_px: width of the soft inward edge, pixels (0: hard 0/1 mask).
    max_foreground_share: more foreground than this share of the frame means the photo is not a
        product on white (a room photo, a close-up); raised as ``CutoutError``.
    see_through_level: None keeps every enclosed white region as foreground. A level (254 suits
        studio shots on pure white) turns enclosed pixels whose darkest channel is >= it (plus their
        2-pixel anti-aliased rim) into background: the backdrop seen through the product (between
        chair slats, inside a shelf frame), as opposed to a white surface, which is shaded. Patches
        under ``SEE_THROUGH_MIN_SHARE`` of the foreground are left alone. A white product whose
        faces are blown out to pure white (a photo frame's blank insert, a mirror) loses those
        faces, hence off by default.
    """

    white_level: int = 225
    backdrop_margin: int | None = 5
    max_spread: int = 25
    close_px: int = 2
    min_part_share: float = 0.01
    feather_px: float = 2.0
    max_foreground_share: float = 0.95
    see_through_level: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.white_level <= 255 or not 0 <= self.max_spread <= 255:
            raise ValueError(f"white_level and max_spread are 0..255 levels, got {self.white_level}, {self.max_spread}")
        if self.backdrop_margin is not None and not 0 <= self.backdrop_margin <= 255:
            raise ValueError(f"backdrop_margin must be None or 0..255, got {self.backdrop_margin}")
        if self.close_px < 0:
            raise ValueError(f"close_px must be >= 0, got {self.close_px}")
        if not 0 <= self.min_part_share < 1:
            raise ValueError(f"min_part_share must be in [0, 1), got {self.min_part_share}")
        if self.feather_px < 0:
            raise ValueError(f"feather_px must be >= 0, got {self.feather_px}")
        if not 0 < self.max_foreground_share <= 1:
            raise ValueError(f"max_foreground_share must be in (0, 1], got {self.max_foreground_share}")
        if self.see_through_level is not None and not self.white_level <= self.see_through_level <= 255:
            raise ValueError(f"see_through_level must be None or in [white_level, 255], got {self.see_through_level}")

    def mask(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``float32 (H, W)`` in [0, 1] of the product in ``uint8 (H, W, 3)`` RGB ``image``."""
        fg = self.hard_mask(image)
        return feather(fg, self.feather_px)

    def hard_mask(self, image: np.ndarray) -> np.ndarray:
        """Foreground ``bool (H, W)`` before feathering; raises ``CutoutError`` (see the class)."""
        img = _check_image(image)
        h, w = img.shape[:2]
        px = img.astype(np.int16)
        lo, hi = px.min(axis=2), px.max(axis=2)
        white = (lo >= self.level(lo)) & (hi - lo <= self.max_spread)
        fg = ~_touching_border(white, connectivity=4)
        if not fg.any():
            raise CutoutError("no foreground: the image is all white; expected a product photographed on a white background")
        fg = _drop_small_parts(fg, self.min_part_share)
        if not fg.any():
            raise CutoutError("no foreground: only scattered specks differ from the white background; "
                              "lower min_part_share if the product really is that fragmented")
        sealed = fg
        if self.close_px > 0:
            size = 2 * self.close_px + 1
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
            sealed = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
        # fill the holes the backdrop cannot reach once small gaps are sealed; the seals themselves
        # (backdrop pixels between close rods, in a crack) stay backdrop
        fg = (sealed | ~_touching_border(~sealed, connectivity=4)) & ~(sealed & ~fg & white)
        if self.see_through_level is not None:
            fg &= ~_see_through(white & fg, lo >= self.see_through_level, SEE_THROUGH_MIN_SHARE * fg.sum())
        share = float(fg.mean())
        if share > self.max_foreground_share:
            raise CutoutError(
                f"foreground covers {share:.0%} of the {w}x{h} frame (limit {self.max_foreground_share:.0%}): "
                "not a product on a white background; skip this photo, or lower white_level / raise "
                "max_spread for an off-white backdrop"
            )
        return fg

    def level(self, darkest: np.ndarray) -> int:
        """The darkest-channel level a backdrop pixel reaches, from ``darkest`` ``int (H, W)`` (see the fields)."""
        if self.backdrop_margin is None:
            return self.white_level
        border = np.concatenate([darkest[0], darkest[-1], darkest[1:-1, 0], darkest[1:-1, -1]])
        backdrop = border[border >= self.white_level]
        if backdrop.size < border.size // 2:
            return self.white_level
        # below the backdrop's typical level by the margin, but never above its own noise floor
        floor = int(np.percentile(backdrop, 1)) - 1
        return max(self.white_level, min(int(np.median(backdrop)) - self.backdrop_margin, floor))


def cutout_mask(
    image: np.ndarray,
    *,
    white_level: int = 225,
    backdrop_margin: int | None = 5,
    max_spread: int = 25,
    close_px: int = 2,
    feather_px: float = 2.0,
    min_part_share: float = 0.01,
    max_foreground_share: float = 0.95,
    see_through_level: int | None = None,
) -> np.ndarray:
    """Alpha ``float32 (H, W)`` in [0, 1] of the product in a white-background ``uint8 (H, W, 3)`` RGB photo.

    Shorthand for ``CutoutConfig(...).mask(image)``; the parameters are documented there.
    Raises ``CutoutError`` when the image is all white or is not a white-background photo.
    """
    cfg = CutoutConfig(
        white_level=white_level, backdrop_margin=backdrop_margin, max_spread=max_spread, close_px=close_px,
        feather_px=feather_px, min_part_share=min_part_share, max_foreground_share=max_foreground_share,
        see_through_level=see_through_level,
    )
    return cfg.mask(image)


def feather(fg: np.ndarray, feather_px: float) -> np.ndarray:
    """Soft alpha ``float32 (H, W)`` from a ``bool (H, W)`` mask, ramping up over ``feather_px`` pixels *inside* it.

    A pixel on the mask's edge gets ``0.5 / feather_px``; nothing outside the mask becomes visible, so
    the white backdrop does not bleed in as a halo. The frame edge does not count as an edge.
    """
    if feather_px <= 0:
        return fg.astype(np.float32)
    padded = np.pad(fg.astype(np.uint8), 1, mode="edge")  # the frame edge is not a mask edge
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    return np.clip((dist - 0.5) / feather_px, 0.0, 1.0).astype(np.float32)


def mask_box(alpha: np.ndarray, threshold: float = 0.5) -> Box | None:
    """Tight box ``(x1, y1, x2, y2)`` (x2/y2 exclusive) of the pixels with ``alpha >= threshold``; None when none are."""
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be (H, W), got shape {alpha.shape}")
    on = alpha >= threshold
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise CutoutError(f"expected a uint8 (H, W, 3) RGB image, got {got}")
    if min(image.shape[:2]) < 3:
        raise CutoutError(f"image {image.shape[1]}x{image.shape[0]} is too small to cut out")
    return image


def _touching_border(mask: np.ndarray, *, connectivity: int) -> np.ndarray:
    """``bool (H, W)``: the pixels of ``mask`` whose connected component reaches the image border."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=connectivity)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.zeros(n, bool)
    keep[edge] = True
    keep[0] = False  # label 0 is the outside of ``mask``
    return keep[labels]


def _see_through(enclosed: np.ndarray, backdrop: np.ndarray, min_area: float, rim_px: int = 2) -> np.ndarray:
    """Backdrop seen through the product: the ``backdrop`` pixels of the white ``enclosed`` region, pinholes
    closed, in parts of at least ``min_area`` pixels, grown by ``rim_px`` into ``enclosed`` to take the
    anti-aliased rim (the white pixels not yet at backdrop level) along."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim_px + 1, 2 * rim_px + 1))
    core = cv2.morphologyEx((backdrop & enclosed).astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool) & enclosed
    _, labels, stats, _ = cv2.connectedComponentsWithStats(core.astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(min_area, 1)
    keep[0] = False
    holes = keep[labels]
    return holes | (cv2.dilate(holes.astype(np.uint8), kernel).astype(bool) & enclosed)


def _drop_small_parts(fg: np.ndarray, min_share: float) -> np.ndarray:
    """``fg`` without the 8-connected parts smaller than ``min_share`` of its area."""
    if min_share <= 0:
        return fg
    _, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= min_share * areas[1:].sum()
    keep[0] = False
    return keep[labels]
