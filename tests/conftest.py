"""Shared fixtures: offline runtime, an isolated state folder and MLflow store, tiny real catalogs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="showroom-tests-"))
os.environ["SHOWROOM_HOME"] = str(_SESSION_HOME / "state")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_HOME / 'mlflow.db'}"
os.environ.pop("SHOWROOM_WEIGHTS_DIR", None)  # tests choose weights explicitly
os.environ.pop("SHOWROOM_DETECTOR_WEIGHTS", None)

from engine.runtime import PROJECT_ROOT, configure_runtime  # noqa: E402

configure_runtime(offline=True)

SHARED = (PROJECT_ROOT.parent / "shared").resolve()
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
IKEA = SHARED / "data" / "ikea"


@pytest.fixture(scope="session")
def tiny_catalog() -> Path:
    """A small generated demo catalog (18 products, 16 scenes, boxes known)."""
    from training.demo_catalog import DemoSpec, generate_demo_catalog

    return generate_demo_catalog(_SESSION_HOME / "tiny_catalog", DemoSpec(products_per_category=3, scenes=16, iconic_size=64, seed=3))


@pytest.fixture()
def mobilenet_weights() -> Path:
    """The shared ImageNet MobileNetV2(alpha=0.35) weights; skips when ../shared is absent."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"needs {MOBILENET_WEIGHTS} (the ../shared folder beside the project); absent here")
    return MOBILENET_WEIGHTS


@pytest.fixture()
def ikea_catalog() -> Path:
    """The real IKEA dev catalog; skips when ../shared is absent."""
    if not (IKEA / "products.csv").is_file():
        pytest.skip(f"needs the IKEA catalog at {IKEA} (the ../shared folder beside the project); absent here")
    return IKEA
