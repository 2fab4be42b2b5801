"""Resuming a killed training run: Keras ``BackupAndRestore`` for the weights, optimizer state and
epoch count, plus a ``state.json`` that says how to rebuild the run (configs, data, MLflow run id).

Layout of a run's folder (deleted when the run finishes)::

    <state>/checkpoints/<run_id>/state.json   # written once, atomically, before the first epoch
    <state>/checkpoints/<run_id>/backup/      # BackupAndRestore: latest.weights.h5 (+ .bkp), training_metadata.json

``BackupAndRestore`` saves after every epoch and keeps the previous save too
(``double_checkpoint``), so a kill in the middle of a save falls back to the epoch before.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import keras

from engine.files import write_json_atomic

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """No usable checkpoint for a resume."""


def run_folder(state_dir: Path, run_id: str) -> Path:
    """The checkpoint folder of one run."""
    return Path(state_dir) / "checkpoints" / run_id


def write_run_state(folder: Path, state: dict[str, Any]) -> None:
    """Record how to rebuild the run (written once, before training starts)."""
    write_json_atomic(Path(folder) / "state.json", state, indent=2)


def read_run_state(folder: Path) -> dict[str, Any]:
    """The state of a killed run, with ``epochs_done`` from its last backup; ``CheckpointError``
    when the run never finished an epoch."""
    path = Path(folder) / "state.json"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {folder}: the run never started training; start it again without --resume")
    state = json.loads(path.read_text())
    state["epochs_done"] = epochs_done(folder)
    if state["epochs_done"] == 0:
        raise CheckpointError(f"no checkpoint in {folder}: the run never finished an epoch, start it again without --resume")
    return state


def backup_callback(folder: Path) -> keras.callbacks.BackupAndRestore:
    """Saves weights, optimizer state and the epoch after every epoch; restores them when ``fit`` starts."""
    return keras.callbacks.BackupAndRestore(str(Path(folder) / "backup"), save_freq="epoch", double_checkpoint=True)


def epochs_done(folder: Path) -> int:
    """Epochs the run's last backup holds (0 without one)."""
    meta = Path(folder) / "backup" / "training_metadata.json"
    for path in (meta, meta.with_name(meta.name + ".bkp")):
        try:
            return int(json.loads(path.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            continue
    return 0


def latest_run(state_dir: Path) -> str:
    """The run id of the most recently backed-up killed run."""
    folders = sorted((p.parent.parent for p in (Path(state_dir) / "checkpoints").glob("*/backup/training_metadata.json")),
                     key=lambda p: (p / "backup").stat().st_mtime)
    if not folders:
        raise CheckpointError(f"--resume last: no checkpoints under {Path(state_dir) / 'checkpoints'}")
    return folders[-1].name


def finish(folder: Path) -> None:
    """Delete a finished run's checkpoint folder."""
    shutil.rmtree(folder, ignore_errors=True)
