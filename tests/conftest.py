"""Shared fixtures: offline runtime, an isolated state folder and MLflow store, tiny real catalogs,
the ../shared data (skipping cleanly without it), one trained run shared by the CLI tests, and free
loopback ports and a process-group stop for the tests that start servers.

Tiers: ``python -m pytest`` runs the fast tier; ``python -m pytest -m slow`` the end-to-end CLIs,
real YOLO, the browser, the stack-import subprocesses and the big backbones (pytest.ini).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="showroom-tests-"))
os.environ["SHOWROOM_HOME"] = str(_SESSION_HOME / "state")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_HOME / 'mlflow.db'}"
os.environ.pop("SHOWROOM_WEIGHTS_DIR", None)  # tests choose weights explicitly
os.environ.pop("SHOWROOM_DETECTOR_WEIGHTS", None)

from engine.runtime import PROJECT_ROOT, configure_runtime  # noqa: E402

configure_runtime(offline=True)  # the tests' entry point: before TensorFlow, Ultralytics and MLflow load (importing engine does not)

import mlflow  # noqa: E402

from evaluation import holdout  # noqa: E402
from training import fit  # noqa: E402
from training.demo_catalog import DemoSpec, generate_demo_catalog  # noqa: E402
from training.tracking import tracking_uri  # noqa: E402

SHARED = (PROJECT_ROOT.parent / "shared").resolve()
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
YOLO_TFLITE = SHARED / "weights" / "yolov8n_coco_int8.tflite"
IKEA = SHARED / "data" / "ikea"

TINY_FIT = ["--image-size", "48", "--embedding-dim", "16", "--batch-size", "8", "--in-class-negatives", "2",
            "--out-class-negatives", "1", "--val-fraction", "0.25", "--queries-per-epoch", "0"]


def _needs(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"needs {what} at {path} (the ../shared folder beside the project); absent here")
    return path


@pytest.fixture(scope="session")
def tiny_catalog() -> Path:
    """A small generated demo catalog (18 products, 16 scenes, boxes known)."""
    return generate_demo_catalog(_SESSION_HOME / "tiny_catalog", DemoSpec(products_per_category=3, scenes=16, iconic_size=64, seed=3))


@pytest.fixture()
def mobilenet_weights() -> Path:
    """The shared ImageNet MobileNetV2(alpha=0.35) weights; skips when ../shared is absent."""
    return _needs(MOBILENET_WEIGHTS, "the MobileNetV2 ImageNet weights")


@pytest.fixture(scope="session")
def yolo_weights() -> Path:
    """The shared YOLOv8n COCO int8 TFLite detector; skips when ../shared is absent."""
    return _needs(YOLO_TFLITE, "the YOLOv8n TFLite detector")


@pytest.fixture(scope="session")
def ikea_catalog() -> Path:
    """The real IKEA dev catalog; skips when ../shared is absent."""
    return _needs(IKEA / "products.csv", "the IKEA catalog").parent


@pytest.fixture(scope="session")
def tiny_fit() -> list[str]:
    """``training.fit`` flags of the smallest real model and run: 48 px, D = 16, a few triplets per step."""
    return list(TINY_FIT)


@pytest.fixture(scope="session")
def last_run() -> Callable[[], object]:
    """A function returning the most recently started MLflow run of the test store."""
    def latest() -> mlflow.entities.Run:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri())
        exp = client.get_experiment_by_name("showroom")
        return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]

    return latest


@dataclass(frozen=True)
class TrainedRun:
    """One ``training.fit`` run on the tiny catalog, shared by the fit, evaluate, promote and serve tests."""

    run_id: str
    holdout: Path  # its held-out scene list
    out: Path  # the --out copy of its embedder
    stdout: str


@pytest.fixture(scope="session")
def trained_run(tiny_catalog: Path, tmp_path_factory, last_run) -> TrainedRun:
    """Two epochs with a held-out scene list, the serving indexes built, the embedder copied to --out."""
    folder = tmp_path_factory.mktemp("trained_run")
    held, out = folder / "holdout.txt", folder / "embedder.keras"
    assert holdout.main(["--catalog", str(tiny_catalog), "--fraction", "0.25", "--seed", "0", "--out", str(held)]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = fit.main(["--catalog", str(tiny_catalog), "--weights", "none", "--epochs", "2", "--run-name", "t-fit",
                         "--holdout-scenes", str(held), "--out", str(out), *TINY_FIT, "--val-fraction", "0.4"])
    assert code == 0
    return TrainedRun(last_run().info.run_id, held, out, buf.getvalue())


def _free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port() -> int:
    return _free_ports(1)[0]


def _stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def free_ports() -> Callable[[int], list[int]]:
    """A function giving ``n`` free loopback ports, for servers a test starts."""
    return _free_ports


@pytest.fixture(scope="session")
def stop_group() -> Callable[..., None]:
    """A function stopping a subprocess's process group: SIGTERM, then SIGKILL after a timeout."""
    return _stop_group
