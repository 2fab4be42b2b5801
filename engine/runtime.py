"""Process-wide runtime hygiene shared by every CLI and the tests: state folder, env vars, import guard.

Nothing here runs on import. The entry points set the environment defaults
(``configure_environment``) before TensorFlow, Ultralytics, albumentations or MLflow load: each
CLI's ``main`` through ``run_cli`` (a CLI module imports those libraries inside the function
``run_cli`` calls, never at its top), ``serving.create_app`` (and ``serving``'s lazy
``create_app`` attribute, before ``serving.app`` loads TensorFlow), and the tests' conftest.
``configure_runtime()`` also makes the state folder, once per ``main``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    """Where generated data, checkpoints and caches live: ``$SHOWROOM_HOME`` or ``<project>/.showroom``."""
    return Path(os.environ.get("SHOWROOM_HOME", PROJECT_ROOT / ".showroom")).resolve()


def configure_environment() -> None:
    """Environment defaults the stack must see before it is imported (values already set win).

    Called by the entry points (``run_cli``, ``serving.create_app``, the tests' conftest) before
    TensorFlow, Ultralytics, albumentations and MLflow are imported; importing ``engine`` does not.

    - ``YOLO_CONFIG_DIR`` inside the state folder (Ultralytics writes settings there, not in ~).
    - ``NO_ALBUMENTATIONS_UPDATE=1`` and ``MLFLOW_DISABLE_TELEMETRY=true``: no phoning home;
      ``YOLO_AUTOINSTALL=false``: Ultralytics never pip-installs packages at run time.
    - ``TF_CPP_MIN_LOG_LEVEL=1`` hides TensorFlow's info banners.
    - Blocks ``triton`` from loading: it is only used by GPU ``torch.compile`` (which Showroom
      never calls) and loading it after TensorFlow segfaults the process. The install commands
      also uninstall it; this guard covers machines where it is present anyway.
    """
    os.environ.setdefault("YOLO_CONFIG_DIR", str(state_dir() / "ultralytics"))
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # Ultralytics must never pip-install at run time
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError


def configure_runtime(*, offline: bool = False) -> Path:
    """The environment defaults (``configure_environment``) and the state folder; returns it.

    ``offline=True`` (tests) also sets ``YOLO_OFFLINE=1``.
    """
    configure_environment()
    home = state_dir()
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    if offline:
        os.environ["YOLO_OFFLINE"] = "1"
    return home


def run_cli(run: Callable[[Path], int], *, verbose: bool = False, logger_name: str = "showroom") -> int:
    """Shared ``main`` body: logging, runtime, then ``run(state_dir)``; a user error (any
    ``ValueError``: bad catalog, weights, manifest, model, index) is logged and exits with 2."""
    setup_logging(verbose)
    home = configure_runtime()
    try:
        return run(home)
    except ValueError as exc:
        logging.getLogger(logger_name).error("%s", exc)
        return 2


def setup_logging(verbose: bool = False) -> None:
    """Configure root logging once for a CLI."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "mlflow.store", "PIL", "matplotlib", "h5py", "urllib3", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
