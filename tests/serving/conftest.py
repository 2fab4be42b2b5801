"""A real index folder built from the tiny demo catalog with a small untrained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.base import Detection
from engine.catalog import load_catalog
from engine.config import ModelConfig
from engine.model import build_embedder
from engine.search import model_fingerprint
from engine.indexing import build_catalog_indexes


class BoxDetector:
    """Fake detector: one fixed 'chair' box in the middle of any image."""

    class_names = ("chair", "couch")
    fingerprint = "fake-box:1"

    def detect(self, image):
        h, w = image.shape[:2]
        return [Detection((w // 4, h // 4, 3 * w // 4, 3 * h // 4), "chair", 0.9), Detection((0, 0, w // 3, h // 3), "couch", 0.5)]


@pytest.fixture(scope="session")
def index_folder(tiny_catalog: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    model = build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=16))
    model.save(folder / "model.keras")
    build_catalog_indexes(load_catalog(tiny_catalog), model, model_fingerprint(folder / "model.keras"), folder, detector=None)
    return folder


@pytest.fixture()
def app(index_folder: Path):
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True,
                       "MAX_CONTENT_LENGTH": 200_000, "SHOWROOM_RELOAD_TOKEN": "s3cret"})


@pytest.fixture()
def client(app):
    return app.test_client()
