"""An ensemble of trained embedders as one embedder: several seeds of a recipe searched together.

Each member's embedding is L2-normalised; the ensemble's embedding is their concatenation divided
by sqrt(n), so it has unit norm and its squared distance is the mean of the members' squared
distances: ``|e(a) - e(b)|² = (1/n) Σ_i |e_i(a) - e_i(b)|²``. Seeds of one recipe disagree most on
a query's first matches (the development scenes: three seeds span 0.28-0.31 in room recall@50,
their ensemble 0.316), and averaging their distances keeps what they agree on.

The result is an ordinary Keras model (image → embedding, D = the members' dims summed), saved as
one ``.keras`` file with the members' preprocessing, so indexing, serving, evaluation and
calibration use it unchanged; its record names every member by fingerprint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from engine.model.embedder import (
    ModelError,
    backbone_record,
    input_size,
    load_embedder,
    load_preprocessing,
    model_fingerprint,
    save_embedder,
    saved_record,
)

ENSEMBLE_RECORD = "ensemble"  # key of showroom.json listing the members


@dataclass(frozen=True)
class Member:
    """One saved embedder of an ensemble: its file's name, sha256, output size and Keras model name
    (``showroom_<backbone>`` for a model of ``build_embedder``)."""

    name: str
    fingerprint: str
    dim: int
    model: str = ""


def build_ensemble(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model from ``members`` (each ``float32 (B, S, S, 3)`` RGB 0..255 → ``float32 (B, D_i)``,
    all with the same S): ``float32 (B, S, S, 3)`` → ``float32 (B, Σ D_i)``, the members'
    L2-normalised embeddings concatenated and scaled by 1/sqrt(n) (unit norm).

    The members are used as they are (not copied): build an ensemble from models loaded for it."""
    if len(members) < 2:
        raise ModelError(f"an ensemble needs at least two embedders, got {len(members)}")
    sizes = {input_size(m) for m in members}
    if len(sizes) != 1:
        raise ModelError(f"the embedders of an ensemble must take the same input size, got {sorted(sizes)} px")
    size = sizes.pop()
    inp = keras.Input((size, size, 3), name="image", dtype="float32")
    outs = []
    for i, member in enumerate(members):
        if len(member.output_shape) != 2:
            raise ModelError(f"embedder {i} gives outputs of shape {member.output_shape}, not (batch, D)")
        member.name = f"member_{i}"  # a saved embedder's name is its recipe's: unique names keep the members apart
        outs.append(layers.UnitNormalization(name=f"member_{i}_l2", dtype="float32")(member(inp)))
    joined = layers.Concatenate(name="members", dtype="float32")(outs)
    out = layers.Rescaling(1.0 / math.sqrt(len(members)), name="mean_distance_scale", dtype="float32")(joined)
    return keras.Model(inp, out, name=name)


def save_ensemble(paths: Sequence[str | Path], out: str | Path) -> tuple[Path, list[Member]]:
    """Load the saved embedders at ``paths``, check they cut and scale crops the same way, and save
    their ensemble (``build_ensemble``) at ``out`` with their shared preprocessing and a record of
    the members. Returns (``out``, the members)."""
    paths = [Path(p) for p in paths]
    models = [load_embedder(p) for p in paths]
    fingerprints = [model_fingerprint(p) for p in paths]
    if len(set(fingerprints)) != len(paths):  # the same file, or a copy of it: the same weights
        raise ModelError("an embedder is listed twice: an ensemble of a model with itself only doubles its cost")
    preps = [load_preprocessing(p, m) for p, m in zip(paths, models)]
    for p, prep in zip(paths[1:], preps[1:]):
        if prep != preps[0]:
            raise ModelError(f"{p} prepares its inputs differently from {paths[0]} ({prep} vs {preps[0]}): "
                             "the members of an ensemble must see the same crops")
    members = [Member(p.stem, fp, int(m.output_shape[-1]), m.name) for p, fp, m in zip(paths, fingerprints, models)]
    model = build_ensemble(models)  # renames the members' models
    record = [{"name": m.name, "fingerprint": m.fingerprint, "dim": m.dim, "model": m.model, "backbone": backbone_record(p)}
              for m, p in zip(members, paths)]
    return save_embedder(model, out, preps[0], {ENSEMBLE_RECORD: record}), members


def ensemble_members(path: str | Path) -> list[Member]:
    """The members a saved ensemble records ([] for a single embedder)."""
    return [Member(m["name"], m["fingerprint"], int(m["dim"]), m.get("model", "")) for m in saved_record(path, ENSEMBLE_RECORD) or []]
