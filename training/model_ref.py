"""One resolver for every way a model is named: a ``.keras`` path, an MLflow run id of
``training.fit``, or a registered version ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.model.embedder import ModelError
from engine.runtime import state_dir
from training.tracking import download_artifact, download_registered

REGISTRY_PREFIX = "models:/"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference.

    path: the local ``.keras`` embedder file.
    folder: for a registered version, its downloaded folder (``model.keras`` and, when its run
        built them, the ``products``/``scenes`` indexes); else None.
    run_id: the MLflow run that trained it ('' for a bare file).
    version: the registered version ('' unless ``models:/``).
    """

    ref: str
    path: Path
    folder: Path | None = None
    run_id: str = ""
    version: str = ""


def is_registered(ref: str) -> bool:
    return str(ref).startswith(REGISTRY_PREFIX)


def resolve_model(ref: str) -> ModelRef:
    """Resolve ``ref`` to a local ``.keras`` file (downloading a run's or a version's artifacts once).

    A path that exists is used as is; ``models:/...`` is a registered version; otherwise ``ref``
    is the MLflow run id of a ``training.fit`` run. ``ModelError`` says what was expected.
    """
    ref = str(ref)
    if is_registered(ref):
        folder, run_id, version = download_registered(ref, state_dir() / "registry")
        for name in ("model.keras", "embedder.keras"):
            if (folder / name).is_file():
                return ModelRef(ref, folder / name, folder, run_id, version)
        raise ModelError(f"{ref} ({folder}) holds no model.keras or embedder.keras")
    path = Path(ref).expanduser()
    if path.is_file():
        return ModelRef(ref, path)
    if path.suffix == ".keras" or "/" in ref:
        raise ModelError(f"model file {path} not found")
    local = state_dir() / "models" / ref / "embedder.keras"
    if local.is_file():
        return ModelRef(ref, local, run_id=ref)
    try:
        return ModelRef(ref, download_artifact(ref, "model/embedder.keras", state_dir() / "downloads" / ref), run_id=ref)
    except Exception as exc:  # MLflow raises several kinds for an unknown run or artifact
        raise ModelError(f"{ref!r} is neither a .keras file nor an MLflow run with model/embedder.keras ({exc})") from None
