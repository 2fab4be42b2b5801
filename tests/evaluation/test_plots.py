"""Evaluation figures are real images with what they claim to show."""

from __future__ import annotations

import numpy as np

from evaluation import plots


def test_recall_curves_draw_every_model():
    one = plots.recall_curves({"a": {"scene_to_product": [0.1, 0.2, 0.3], "product_to_scene": [0.5, None, 0.9]}})
    two = plots.recall_curves({"a": {"scene_to_product": [0.1, 0.2, 0.3], "product_to_scene": [0.5, 0.6, 0.9]},
                               "b": {"scene_to_product": [0.4, 0.5, 0.6], "product_to_scene": [0.1, 0.2, 0.3]}})
    assert one.ndim == 3 and one.dtype == np.uint8 and one.shape == two.shape
    assert not np.array_equal(one, two)


def test_result_grid_frames_the_true_product_in_green():
    query = np.full((32, 32, 3), 200, np.uint8)
    results = [np.full((32, 32, 3), 255, np.uint8) for _ in range(3)]
    grid = plots.result_grid([(query, results, [False, True, False], "q")], size=40)
    green = (grid[..., 1] > 150) & (grid[..., 0] < 50) & (grid[..., 2] < 50)
    cols = np.flatnonzero(green.any(0))
    gap = 6
    x_true = gap + 2 * (40 + gap)  # tile 0 is the query, the true result is tile 2
    assert x_true - 3 <= cols.min() and cols.max() < x_true + 40 + 3  # a 4 px frame straddles the tile edge


def test_tsne_map_places_thumbnails():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 8))
    thumbs = np.zeros((12, 16, 16, 3), np.uint8)
    out = plots.tsne_map(emb, thumbs, canvas=200, thumb=16)
    assert out.shape == (200, 200, 3) and (out < 255).any()
