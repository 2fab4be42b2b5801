"""A small saved embedder (untrained, 48 px, D = 16) for the engine tests that need a ``.keras`` file."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ModelConfig, Preprocessing
from engine.model.embedder import save_embedder
from engine.model.network import build_embedder


@pytest.fixture(scope="session")
def saved_embedder(tmp_path_factory) -> Path:
    """The ``.keras`` file of an untrained 48 px embedder (D = 16) with its preprocessing."""
    path = tmp_path_factory.mktemp("embedder") / "model.keras"
    return save_embedder(build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=16)), path, Preprocessing(image_size=48))
