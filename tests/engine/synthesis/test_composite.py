"""Pasting cut-outs into scenes: the returned box is the product's visible extent, draws are seeded."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from engine.synthesis.composite import (
    FLOOR_BOXES,
    Composite,
    CompositeConfig,
    CompositeError,
    PlacementPrior,
    Placement,
    composite,
    composite_many,
    to_rel_box,
)
from engine.synthesis.cutout import mask_box

BG = (90, 120, 150)
RED = (220, 30, 30)
GREEN = (20, 200, 40)

# Geometry only: no relighting, shadow, blur, noise or JPEG, so changed pixels are product pixels.
CLEAN = CompositeConfig(scale_jitter=(1, 1), perspective=(0, 0), brightness=(1, 1), contrast=(1, 1), tint=(0, 0),
                        temperature=(0, 0), shadow_prob=0, occlusion_prob=0, edge_prob=0, blur_prob=0,
                        noise_sigma=(0, 0), jpeg_prob=0)


def scene(h=200, w=300) -> np.ndarray:
    return np.full((h, w, 3), BG, np.uint8)


def square(colour=RED, h=40, w=40) -> tuple[np.ndarray, np.ndarray]:
    return np.full((h, w, 3), colour, np.uint8), np.ones((h, w), np.float32)


def changed_box(out: np.ndarray, tol: int = 12):
    diff = np.abs(out.astype(np.int16) - np.int16(BG)).max(axis=2)
    return mask_box((diff > tol).astype(np.float32))


def coloured_box(out: np.ndarray, colour, tol: int = 40):
    near = np.abs(out.astype(np.int16) - np.int16(colour)).max(axis=2) <= tol
    return mask_box(near.astype(np.float32))


def paste(cfg: CompositeConfig, rel=(0.5, 0.5, 0.2, 0.3), seed=0, occluder=None, product=None) -> Composite:
    img, alpha = product or square()
    return composite(scene(), img, alpha, rel, np.random.default_rng(seed), cfg, occluder=occluder)


def test_plain_paste_box_is_exact_and_fitted_into_the_sampled_box():
    c = paste(CLEAN, rel=(0.5, 0.5, 0.2, 0.3))
    # 0.2 x 300 = 60 wide, 0.3 x 200 = 60 high: the square is 60 x 60, centred on (150, 100)
    assert c.box == (120, 70, 180, 130) == changed_box(c.image)
    assert c.image[100, 150].tolist() == list(RED) and c.image[5, 5].tolist() == list(BG)
    assert c.params["visible_share"] == pytest.approx(1.0)


def test_fit_keeps_aspect_ratio_and_stands_on_the_box_bottom():
    tall = square(h=80, w=20)
    c = paste(CLEAN, rel=(0.5, 0.5, 0.4, 0.5), product=tall)  # a 120 x 100 box; the product is 25 x 100
    x1, y1, x2, y2 = c.box
    assert (x2 - x1, y2 - y1) == (25, 100) and y2 == 150 and abs((x1 + x2) / 2 - 150) <= 1
    assert c.box == changed_box(c.image)


@pytest.mark.parametrize("seed", range(4))
def test_box_is_true_under_perspective(seed):
    c = paste(replace(CLEAN, perspective=(0.08, 0.12)), seed=seed)
    got, want = np.array(c.box), np.array(changed_box(c.image))
    assert np.abs(got - want).max() <= 1  # the warp's anti-aliased rim is under 0.5 alpha
    assert c.params["perspective"] >= 0.08


def test_box_is_clipped_where_the_product_leaves_the_frame():
    c = paste(CLEAN, rel=(0.97, 0.5, 0.2, 0.3))
    assert c.box == changed_box(c.image) and c.box[2] == 300 and c.box[0] == 261
    with pytest.raises(CompositeError, match="too hidden"):
        paste(replace(CLEAN, min_visible=0.9), rel=(0.97, 0.5, 0.2, 0.3))


@pytest.mark.parametrize("seed", range(6))
def test_box_is_true_when_pushed_over_a_frame_edge(seed):
    c = paste(replace(CLEAN, edge_prob=1.0, edge_cut=(0.2, 0.4), perspective=(0, 0.05)), seed=seed)
    assert c.params["edge"] in {"left", "right", "top", "bottom"}
    h, w = c.image.shape[:2]
    x1, y1, x2, y2 = c.box
    assert {"left": x1 == 0, "right": x2 == w, "top": y1 == 0, "bottom": y2 == h}[c.params["edge"]]
    assert np.abs(np.array(c.box) - np.array(changed_box(c.image))).max() <= 1
    assert 0.55 <= c.params["visible_share"] <= 0.85


@pytest.mark.parametrize("seed", range(6))
def test_box_is_true_behind_an_occluder(seed):
    occluder = square(GREEN, h=20, w=100)  # wide and low: hides the product's lower part, full width
    c = paste(replace(CLEAN, occlusion_prob=1.0, min_visible=0.3), seed=seed, occluder=occluder)
    assert c.params["occluder_box"] is not None
    assert c.box == coloured_box(c.image, RED)
    assert c.box[3] < 130 and c.box[:3] == (120, 70, 180)  # the bottom is hidden, the rest is not
    assert coloured_box(c.image, GREEN) is not None
    assert c.params["visible_share"] < 1


def test_all_augmentations_on_box_still_covers_the_product():
    cfg = CompositeConfig(occlusion_prob=0, edge_prob=0, blur_prob=1.0, jpeg_prob=1.0, shadow_prob=1.0)
    for seed in range(3):
        c = paste(cfg, seed=seed)
        want = coloured_box(c.image, RED, tol=90)  # red-ish pixels after relighting and JPEG
        assert np.abs(np.array(c.box) - np.array(want)).max() <= 3
        assert c.image.dtype == np.uint8 and c.image.shape == (200, 300, 3)
        assert c.params["jpeg_quality"] is not None and c.params["blur_sigma"] > 0 and c.params["shadow"] > 0


def test_contact_shadow_darkens_below_the_base_only():
    c = paste(replace(CLEAN, shadow_prob=1.0, shadow=(0.6, 0.6)))
    x1, y1, x2, y2 = c.box
    below = c.image[y2 : y2 + 4, x1 + 10 : x2 - 10].astype(int)
    assert (below < np.array(BG)).all()  # darker just under the object
    assert c.image[y1 - 5, (x1 + x2) // 2].tolist() == list(BG)  # nothing above it
    assert c.box == (120, 70, 180, 130)  # the shadow does not enter the box


def test_same_seed_same_composite_and_params():
    occ = square(GREEN, 30, 30)
    cfg = CompositeConfig(occlusion_prob=0.5, edge_prob=0.3)
    runs = [paste(cfg, seed=7, occluder=occ) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    assert runs[0].box == runs[1].box and runs[0].params == runs[1].params
    assert json.loads(json.dumps(runs[0].params)) == runs[0].params  # plain types, ready for a manifest
    other = paste(cfg, seed=8, occluder=occ)
    assert other.params != runs[0].params


def test_relighting_moves_product_toward_scene_cast():
    warm_scene = np.full((100, 100, 3), (200, 150, 100), np.uint8)
    grey = np.full((20, 20, 3), 128, np.uint8)
    cfg = replace(CLEAN, tint=(1, 1))
    c = composite(warm_scene, grey, np.ones((20, 20), np.float32), (0.5, 0.5, 0.4, 0.4), np.random.default_rng(0), cfg)
    r, g, b = c.image[50, 50].astype(int)
    assert r > g > b  # the grey product took on the room's warm light


def test_input_errors():
    img, alpha = square()
    rng = np.random.default_rng(0)
    with pytest.raises(CompositeError, match="background must be a uint8"):
        composite(scene().astype(np.float32), img, alpha, (0.5, 0.5, 0.2, 0.2), rng)
    with pytest.raises(CompositeError, match="alpha must be"):
        composite(scene(), img, alpha[:10], (0.5, 0.5, 0.2, 0.2), rng)
    with pytest.raises(CompositeError, match="empty"):
        composite(scene(), img, np.zeros_like(alpha), (0.5, 0.5, 0.2, 0.2), rng)
    with pytest.raises(CompositeError, match="relative box"):
        composite(scene(), img, alpha, (50, 50, 20, 20), rng)


@pytest.mark.parametrize("kwargs", [{"perspective": (0.1, 0.05)}, {"tint": (0, 2)}, {"jpeg_quality": (0, 90)},
                                    {"blur_prob": 1.5}, {"min_visible": -0.1}, {"max_tries": 0},
                                    {"brightness": (0, 1)}, {"box_threshold": 0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        CompositeConfig(**kwargs)


def test_prior_follows_observed_boxes_and_stays_inside():
    observed = {"Chair": [(0.3, 0.7, 0.2, 0.3)], "Pendant lamp": [(0.5, 0.15, 0.1, 0.2), (0.8, 0.2, 0.1, 0.2)]}
    prior = PlacementPrior.from_boxes(observed)
    rng = np.random.default_rng(0)
    chairs = np.array([prior.sample("Chair", rng) for _ in range(500)])
    assert np.abs(chairs.mean(axis=0) - observed["Chair"][0]).max() < 0.02
    assert np.abs(chairs[:, 0] - 0.3).max() <= 0.15 * 0.2 * 1.15 + 1e-9  # jitter is relative to the box
    lamps = np.array([prior.sample("Pendant lamp", rng) for _ in range(500)])
    assert (lamps[:, 1] < 0.35).all() and (lamps[:, 0] > 0.6).any() and (lamps[:, 0] < 0.6).any()
    unknown = np.array([prior.sample("Sofa", rng) for _ in range(500)])
    assert unknown[:, 1].min() > 0.5  # floor-standing default: low in the frame
    for boxes in (chairs, lamps, unknown):
        cx, cy, w, h = boxes.T
        assert (w > 0).all() and (h > 0).all()
        assert (cx - w / 2 >= 0).all() and (cx + w / 2 <= 1).all() and (cy - h / 2 >= 0).all() and (cy + h / 2 <= 1).all()


def test_prior_clamps_boxes_at_the_frame_and_validates():
    prior = PlacementPrior.from_boxes({"Rug": [(0.5, 0.95, 1.0, 0.2)]}, scale_jitter=(1.2, 1.2))
    cx, cy, w, h = prior.sample("Rug", np.random.default_rng(0))
    assert w == 1.0 and cx == 0.5 and cy + h / 2 <= 1.0
    assert prior.boxes_for("Lamp") == FLOOR_BOXES
    assert PlacementPrior.from_boxes({"Empty": []}).boxes_for("Empty") == FLOOR_BOXES
    with pytest.raises(ValueError, match="class 'Bad'"):
        PlacementPrior.from_boxes({"Bad": [(0.5, 0.5, 1.5, 0.2)]})
    with pytest.raises(ValueError, match="scale_jitter"):
        PlacementPrior(scale_jitter=(0, 1))


def test_to_rel_box():
    assert to_rel_box((30, 20, 90, 100), 300, 200) == pytest.approx((0.2, 0.3, 0.2, 0.4))


# --- several products in one room -------------------------------------------------------------

BLUE = (30, 40, 220)


def test_several_products_each_box_is_its_visible_colour():
    placements = [Placement(*square(RED), (0.3, 0.5, 0.2, 0.3)), Placement(*square(GREEN), (0.7, 0.5, 0.2, 0.3)),
                  Placement(*square(BLUE, 20, 60), (0.5, 0.85, 0.3, 0.1))]
    c = composite_many(scene(), placements, np.random.default_rng(0), CLEAN)
    assert len(c.boxes) == 3 and all(b is not None for b in c.boxes)
    for box, colour in zip(c.boxes, (RED, GREEN, BLUE)):
        assert box == coloured_box(c.image, colour, tol=5)
    assert [p["visible_share"] for p in c.params] == pytest.approx([1.0, 1.0, 1.0])


def test_a_later_product_hides_an_earlier_one_and_its_box_shrinks_to_what_shows():
    # GREEN lands on the right half of RED: RED's box is only its visible left part
    cfg = replace(CLEAN, min_visible=0.3)
    placements = [Placement(*square(RED), (0.5, 0.5, 0.2, 0.3)), Placement(*square(GREEN), (0.6, 0.5, 0.2, 0.3))]
    c = composite_many(scene(), placements, np.random.default_rng(0), cfg)
    red, green = c.boxes
    assert green == (150, 70, 210, 130) == coloured_box(c.image, GREEN, tol=5)
    assert red == (120, 70, 150, 130) == coloured_box(c.image, RED, tol=5)
    assert c.params[0]["visible_share"] == pytest.approx(0.5)


def test_a_product_that_would_hide_too_much_of_another_is_left_out():
    cfg = replace(CLEAN, min_visible=0.8, max_tries=3)
    placements = [Placement(*square(RED), (0.5, 0.5, 0.2, 0.3)), Placement(*square(GREEN), (0.5, 0.5, 0.2, 0.3))]
    c = composite_many(scene(), placements, np.random.default_rng(0), cfg)
    assert c.boxes[0] == (120, 70, 180, 130) and c.boxes[1] is None and "skipped" in c.params[1]
    assert coloured_box(c.image, GREEN, tol=5) is None


def test_squash_lays_a_product_flat_and_keep_boxes_report_what_stays_uncovered():
    placements = [Placement(*square(RED, 60, 60), (0.5, 0.8, 0.4, 0.3), squash=0.5)]
    c = composite_many(scene(), placements, np.random.default_rng(0), CLEAN, keep=[(120, 145, 180, 175), (0, 0, 50, 50)])
    x1, y1, x2, y2 = c.boxes[0]
    assert (x2 - x1) == 2 * (y2 - y1)  # a 60 x 60 square squashed to 60 x 30, then fitted
    assert c.kept_visible[0] == pytest.approx(0.0) and c.kept_visible[1] == pytest.approx(1.0)


def test_several_products_are_seeded():
    placements = [Placement(*square(RED), (0.3, 0.5, 0.2, 0.3)), Placement(*square(GREEN), (0.6, 0.6, 0.3, 0.3))]
    a = composite_many(scene(), placements, np.random.default_rng(5))
    b = composite_many(scene(), placements, np.random.default_rng(5))
    assert a.boxes == b.boxes and np.array_equal(a.image, b.image)
    with pytest.raises(CompositeError, match="squash"):
        Placement(*square(), (0.5, 0.5, 0.2, 0.2), squash=0)
