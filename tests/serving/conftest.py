"""A real index folder built from the tiny demo catalog with a small untrained model (and the same
with its vectors in Milvus Lite)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.index.backends import BackendSpec
from engine.index.serving_folder import build_catalog_indexes
from engine.data.catalog import load_catalog
from engine.config import ModelConfig, Preprocessing
from engine.data.detection import Detection
from engine.model.embedder import Embedder, save_embedder
from engine.index.generations import publish_generation
from engine.index.milvus import MilvusSettings
from engine.model.network import build_embedder


class BoxDetector:
    """Fake detector: a 'chair' in the middle of any image, a 'couch' top left, and a 'potted plant'
    top right below the confidence a box needs (the fill-in of its class: a less sure object)."""

    class_names = ("chair", "couch", "potted plant")
    fingerprint = "fake-box:2"

    def detect(self, image):
        h, w = image.shape[:2]
        return [Detection((w // 4, h // 4, 3 * w // 4, 3 * h // 4), "chair", 0.9), Detection((0, 0, w // 3, h // 3), "couch", 0.5),
                Detection((4 * w // 5, h // 20, 19 * w // 20, 3 * h // 10), "potted plant", 0.1)]


@pytest.fixture(scope="session")
def index_folder(tiny_catalog: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    model = build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=16))
    save_embedder(model, folder / "model.keras", Preprocessing(image_size=48))
    build_catalog_indexes(load_catalog(tiny_catalog), Embedder.load(folder / "model.keras"), folder)
    return folder


@pytest.fixture(scope="session")
def milvus_index_folder(index_folder: Path, tiny_catalog: Path, tmp_path_factory) -> Path:
    """``index_folder``'s model and catalog, the vectors in collections of a Milvus Lite file beside it."""
    folder = tmp_path_factory.mktemp("milvus_index")
    shutil.copyfile(index_folder / "model.keras", folder / "model.keras")
    build_catalog_indexes(load_catalog(tiny_catalog), Embedder.load(folder / "model.keras"), folder,
                          backend=BackendSpec("milvus", MilvusSettings(str(folder.parent / f"{folder.name}.db"), "tiny")))
    return folder


@pytest.fixture()
def app(index_folder: Path):
    from serving import create_app

    return create_app({"SHOWROOM_INDEX": str(index_folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True,
                       "MAX_CONTENT_LENGTH": 200_000, "SHOWROOM_RELOAD_TOKEN": "s3cret",
                       "SHOWROOM_RATE_LIMIT": ""})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def copy_of() -> Callable[[Path], Callable[[Path], None]]:
    """``copy_of(folder)``: a ``publish_generation`` writer that copies ``folder``'s contents into the new generation."""
    def copy_of(folder: Path) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            for p in folder.iterdir():
                (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
        return write
    return copy_of


@pytest.fixture()
def served(index_folder: Path, tmp_path: Path, monkeypatch, copy_of) -> Path:
    """A serving folder whose one generation is a copy of ``index_folder``, with this test's own
    shared generation record (so its apps are the workers of one server)."""
    out = tmp_path / "serve"
    publish_generation(out, copy_of(index_folder))
    monkeypatch.setenv("SHOWROOM_GENERATION_FILE", str(tmp_path / "run" / "generation.json"))
    return out
