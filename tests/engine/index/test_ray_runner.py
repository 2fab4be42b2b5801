"""Embedding on Ray Data gives the in-process vectors, in catalog order, and the manifest says which runner made them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from engine.index.serving_folder import PRODUCTS, SCENES, build_catalog_indexes, build_serving_folder, product_images, scene_rows
from engine.data.catalog import load_catalog
from engine.index.ray_runner import RayRunner
from engine.model.embedder import Embedder

# float32 sums in another order (another batch split, one TensorFlow thread instead of all): the
# model's outputs are L2-normalised, so 1e-5 is ~100x the float32 rounding of a unit vector's entries
ATOL = 1e-5


class InProcessRunner:
    """A runner that embeds in this process, recording what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Path], Path]] = []

    def embed_photos(self, paths, model_path):
        self.calls.append((list(paths), Path(model_path)))
        embedder = Embedder.load(model_path)
        return embedder(product_images([type("P", (), {"image": p}) for p in paths], embedder.preprocessing))

    def embed_scenes(self, catalog, model_path, open_detect, classes):
        self.calls.append(([s.image for s in catalog.scenes], Path(model_path)))
        return scene_rows(catalog, Embedder.load(model_path), open_detect() if open_detect else None, classes)

    def describe(self) -> dict:
        return {"runner": "in-process-test"}


def test_a_runner_embeds_the_products_and_the_manifest_records_it(tiny_catalog: Path, saved_embedder: Path, tmp_path: Path):
    catalog, runner = load_catalog(tiny_catalog), InProcessRunner()
    built = build_catalog_indexes(catalog, Embedder.load(saved_embedder), tmp_path, runner=runner, model_path=saved_embedder)
    assert runner.calls == [([s.image for s in catalog.scenes], saved_embedder), ([p.image for p in catalog.products], saved_embedder)]
    for name in (PRODUCTS, SCENES):
        assert json.loads((tmp_path / name / "manifest.json").read_text())["embedded_by"] == {"runner": "in-process-test"}
    assert len(built[PRODUCTS]) == len(catalog.products)
    local = build_catalog_indexes(catalog, Embedder.load(saved_embedder), tmp_path / "local")
    assert [it.item_id for it in built[SCENES].items] == [it.item_id for it in local[SCENES].items]


def test_a_runner_opens_its_own_detector(tiny_catalog: Path, saved_embedder: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    with pytest.raises(ValueError, match="open_detect"):  # a detector of this process cannot be shipped to workers
        build_catalog_indexes(catalog, Embedder.load(saved_embedder), tmp_path, detect=lambda path, image: [], runner=InProcessRunner(),
                              model_path=saved_embedder)


def test_a_runner_needs_the_model_file(tiny_catalog: Path, saved_embedder: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="model_path"):
        build_catalog_indexes(load_catalog(tiny_catalog), Embedder.load(saved_embedder), tmp_path, runner=InProcessRunner())


def test_ray_runner_settings_are_checked():
    for bad in ({"workers": 0}, {"threads_per_worker": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            RayRunner(**bad)
    assert RayRunner(workers=2, threads_per_worker=3).threads == 3


@pytest.mark.slow
def test_ray_gives_the_in_process_vectors_in_catalog_order(tiny_catalog: Path, saved_embedder: Path, tmp_path: Path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -r requirements-distributed.txt); CI installs only requirements.txt")
    catalog = load_catalog(tiny_catalog)
    local = build_serving_folder(saved_embedder, catalog, tmp_path / "local", tuning=None)
    # batches of 4: the 18 photos go out in 5 batches over both actors and must come back in order
    ray = build_serving_folder(saved_embedder, catalog, tmp_path / "ray", tuning=None, runner=RayRunner(workers=2, threads_per_worker=1, batch_size=4))
    got, want = ray[PRODUCTS].vectors, local[PRODUCTS].vectors
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert [it.item_id for it in ray[PRODUCTS].items] == [it.item_id for it in local[PRODUCTS].items]
    manifest = json.loads((tmp_path / "ray" / PRODUCTS / "manifest.json").read_text())
    assert manifest["embedded_by"]["runner"] == "ray" and manifest["embedded_by"]["workers"] == 2
    # the scene crops too: proposed, cut and embedded by the actors, a few scenes per task, back in scenes.csv order
    np.testing.assert_allclose(ray[SCENES].vectors, local[SCENES].vectors, rtol=0, atol=ATOL)
    assert ray[SCENES].items == local[SCENES].items
    assert json.loads((tmp_path / "ray" / SCENES / "manifest.json").read_text())["embedded_by"]["runner"] == "ray"
