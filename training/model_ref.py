"""Resolve a model reference (a ``.keras`` path or an MLflow run id) to a local ``.keras`` file."""

from __future__ import annotations

from pathlib import Path

from engine.embed import ModelError
from engine.runtime import state_dir


def resolve_model(ref: str) -> Path:
    """A path that exists is used as is; ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) is a
    registered model; otherwise ``ref`` is an MLflow run id of a ``training.fit`` run."""
    if ref.startswith("models:/"):
        from training.tracking import download_registered

        folder, _, _ = download_registered(ref, state_dir() / "registry")
        for name in ("embedder.keras", "model.keras"):
            if (folder / name).is_file():
                return folder / name
        raise ModelError(f"{ref} ({folder}) holds no embedder.keras or model.keras")
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".keras" or "/" in ref:
        raise ModelError(f"model file {path} not found")
    local = state_dir() / "models" / ref / "embedder.keras"
    if local.is_file():
        return local
    from training.tracking import download_artifact

    try:
        return download_artifact(ref, "model/embedder.keras", state_dir() / "downloads" / ref)
    except Exception as exc:  # MLflow raises several kinds for an unknown run or artifact
        raise ModelError(f"{ref!r} is neither a .keras file nor an MLflow run with model/embedder.keras ({exc})") from None
