"""Per-epoch training checkpoints (embedder weights, optimizer state, run state), written atomically.

Layout of a run's checkpoint folder::

    <state>/checkpoints/<run_id>/epoch-0003/{embedder.weights.h5, optimizer.npz, state.json}
    <state>/checkpoints/<run_id>/LATEST      # "epoch-0003", replaced atomically after each save

A crash mid-save leaves the previous epoch's folder and LATEST untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """No usable checkpoint for a resume."""


def checkpoint_root(state_dir: Path, run_id: str) -> Path:
    return Path(state_dir) / "checkpoints" / run_id


def save_checkpoint(root: Path, epoch: int, embedder: keras.Model, optimizer: keras.optimizers.Optimizer, state: dict[str, Any]) -> Path:
    """Save after ``epoch`` (1-based count of finished epochs); returns the epoch folder."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        embedder.save_weights(tmp / "embedder.weights.h5")
        np.savez(tmp / "optimizer.npz", *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
        (tmp / "state.json").write_text(json.dumps({**state, "epochs_done": epoch}, indent=2))
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / ".LATEST.tmp"
    latest_tmp.write_text(name)
    os.replace(latest_tmp, root / "LATEST")
    for old in root.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("checkpoint %s", final)
    return final


def latest_checkpoint(root: Path) -> Path:
    """The folder named by LATEST; ``CheckpointError`` if there is none."""
    latest = root / "LATEST"
    if not latest.is_file():
        raise CheckpointError(f"no checkpoint in {root}: the run never finished an epoch, start it again without --resume")
    folder = root / latest.read_text().strip()
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete; start the run again without --resume")
    return folder


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


def restore_checkpoint(folder: Path, embedder: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """Load weights and optimizer state saved by ``save_checkpoint``; returns the state dict."""
    embedder.load_weights(folder / "embedder.weights.h5")
    saved = np.load(folder / "optimizer.npz")
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if not optimizer.built:
        optimizer.build(embedder.trainable_variables)
    if len(values) != len(optimizer.variables):
        raise CheckpointError(
            f"optimizer state in {folder} has {len(values)} variables, the model needs {len(optimizer.variables)}; "
            "the checkpoint is from a different model configuration"
        )
    for var, value in zip(optimizer.variables, values):
        var.assign(value)
    return read_state(folder)
