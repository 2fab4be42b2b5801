"""An ensemble of trained embedders as one embedder: several seeds of a recipe searched together.

Each member's embedding is L2-normalised; the ensemble's embedding is their concatenation divided
by sqrt(n), so it has unit norm and its squared distance is the mean of the members' squared
distances: ``|e(a) - e(b)|² = (1/n) Σ_i |e_i(a) - e_i(b)|²``. Seeds of one recipe disagree most on
a query's first matches (the development scenes: three seeds span 0.28-0.31 in room recall@50,
their ensemble 0.316), and averaging their distances keeps what they agree on.

A member's share of the squared distance can be set (``shares``), and the backbone's pooled
**ImageNet features** can join the trained members as one more (``imagenet_features``): a
frozen ImageNet branch beside the trained one, with no training. On IKEA's development folds a
trained model with ImageNet features at a quarter of the distance gained +0.008 s2p recall@10
over the model alone (three seeds, ``docs/evaluation.md``). Seeds fine-tuned from one ImageNet
backbone, and that backbone's ImageNet features, hold the same leading layers:
``engine.model.trunk`` runs those once for all members when the ensemble is loaded.

The result is an ordinary Keras model (image → embedding, D = the members' dims summed), saved as
one ``.keras`` file with the members' preprocessing, so indexing, serving, evaluation and
calibration use it unchanged; its record names every member by fingerprint.

An embedder (one model or an ensemble) can also be searched at **several input sizes**
(``build_multiscale``): the crop is cut at the largest size, each size sees it resized (bilinear,
antialiased) through a copy of the network built for that size with the same weights, and the
embedding is the normalised sum of the sizes' unit embeddings (D unchanged). A network trained at
224 px reads a 288 px crop with finer detail and a different receptive field. On IKEA, 224 + 288 px
gained about +0.01 of room recall@50 on development scenes and lost 0.006 on the hold-out, so the
recipe reads at its training size and this stays an option (``docs/evaluation.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras
from keras import layers

from engine.config import ModelConfig
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
from engine.model.network import imagenet_features

ENSEMBLE_RECORD = "ensemble"  # key of showroom.json listing the members
IMAGENET_MEMBER = "pooled_backbone"  # the Keras model name of a member that is a backbone's pooled ImageNet features
SCALES_RECORD = "scales"  # key of showroom.json: the input sizes of a multi-scale embedder and the model it was made from
MIN_SCALE = 32


@dataclass(frozen=True)
class Member:
    """One embedder of an ensemble: its file's name, sha256, output size, Keras model name
    (``showroom_<backbone>`` for a model of ``build_embedder``, ``IMAGENET_MEMBER`` for a backbone's
    ImageNet features, whose name is ``imagenet-<backbone>`` and fingerprint its weights' sha256) and
    its share of the ensemble's squared distance (0.0: an ensemble saved before shares, equal ones)."""

    name: str
    fingerprint: str
    dim: int
    model: str = ""
    share: float = 0.0


def build_ensemble(members: Sequence[keras.Model], name: str = "ensemble", shares: Sequence[float] | None = None) -> keras.Model:
    """One model from ``members`` (each ``float32 (B, S, S, 3)`` RGB 0..255 → ``float32 (B, D_i)``,
    all with the same S): ``float32 (B, S, S, 3)`` → ``float32 (B, Σ D_i)``, the members'
    L2-normalised embeddings concatenated and scaled by 1/sqrt(n) (unit norm): the squared distance
    is the mean of the members'. With ``shares`` (one per member, > 0, summing to 1), member i is
    scaled by sqrt(share_i) instead: the squared distance is ``Σ share_i |e_i(a) - e_i(b)|²``.

    The members are used as they are (not copied): build an ensemble from models loaded for it."""
    if len(members) < 2:
        raise ModelError(f"an ensemble needs at least two embedders, got {len(members)}")
    if shares is not None:
        shares = [float(w) for w in shares]
        if len(shares) != len(members) or min(shares) <= 0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            raise ModelError(f"an ensemble's shares must be one per member, each > 0, summing to 1; got {shares} "
                             f"for {len(members)} members")
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
        unit = layers.UnitNormalization(name=f"member_{i}_l2", dtype="float32")(member(inp))
        if shares is not None:
            unit = layers.Rescaling(math.sqrt(shares[i]), name=f"member_{i}_share", dtype="float32")(unit)
        outs.append(unit)
    joined = layers.Concatenate(name="members", dtype="float32")(outs)
    if shares is not None:
        return keras.Model(inp, joined, name=name)
    out = layers.Rescaling(1.0 / math.sqrt(len(members)), name="mean_distance_scale", dtype="float32")(joined)
    return keras.Model(inp, out, name=name)


def save_ensemble(paths: Sequence[str | Path], out: str | Path, imagenet: ModelConfig | None = None,
                  imagenet_share: float = 0.0) -> tuple[Path, list[Member]]:
    """Load the saved embedders at ``paths``, check they cut and scale crops the same way, and save
    their ensemble (``build_ensemble``) at ``out`` with their shared preprocessing and a record of
    the members. Returns (``out``, the members).

    With ``imagenet`` (a backbone, its ImageNet weights and alpha; its image size is the members')
    and ``imagenet_share`` in (0, 1), that backbone's pooled ImageNet features join as the last
    member with that share of the squared distance; the saved embedders share the rest equally.
    One saved embedder is then enough."""
    paths = [Path(p) for p in paths]
    if imagenet is not None and not 0.0 < imagenet_share < 1.0:
        raise ModelError(f"the ImageNet features' share of the distance must be in (0, 1), got {imagenet_share}")
    if len(paths) + (imagenet is not None) < 2:
        raise ModelError(f"an ensemble needs at least two embedders, got {len(paths)}")
    models = [load_embedder(p) for p in paths]
    fingerprints = [model_fingerprint(p) for p in paths]
    if len(set(fingerprints)) != len(paths):  # the same file, or a copy of it: the same weights
        raise ModelError("an embedder is listed twice: an ensemble of a model with itself only doubles its cost")
    preps = [load_preprocessing(p, m) for p, m in zip(paths, models)]
    for p, prep in zip(paths[1:], preps[1:]):
        if prep != preps[0]:
            raise ModelError(f"{p} prepares its inputs differently from {paths[0]} ({prep} vs {preps[0]}): "
                             "the members of an ensemble must see the same crops")
    backbones = [backbone_record(p) for p in paths]
    if imagenet is None:
        shares, share = None, 1.0 / len(paths)
    else:
        share = (1.0 - imagenet_share) / len(paths)
        shares = [share] * len(paths) + [imagenet_share]
    members = [Member(p.stem, fp, int(m.output_shape[-1]), m.name, share) for p, fp, m in zip(paths, fingerprints, models)]
    if imagenet is not None:
        features, weights = imagenet_features(replace(imagenet, image_size=preps[0].image_size))
        models.append(features)
        backbones.append(weights)
        members.append(Member(f"imagenet-{imagenet.backbone}", weights["weights_sha256"], int(features.output_shape[-1]),
                              features.name, imagenet_share))
    model = build_ensemble(models, shares=shares)  # renames the members' models
    record = [{"name": m.name, "fingerprint": m.fingerprint, "dim": m.dim, "model": m.model, "share": m.share, "backbone": b}
              for m, b in zip(members, backbones)]
    return save_embedder(model, out, preps[0], {ENSEMBLE_RECORD: record}), members


def ensemble_members(path: str | Path) -> list[Member]:
    """The members a saved ensemble records ([] for a single embedder)."""
    return [Member(m["name"], m["fingerprint"], int(m["dim"]), m.get("model", ""), float(m.get("share", 0.0)))
            for m in saved_record(path, ENSEMBLE_RECORD) or []]


def at_input_size(model: keras.Model, size: int, name: str | None = None) -> keras.Model:
    """A copy of ``model`` (``float32 (B, S, S, 3)`` → ``float32 (B, D)``, fully convolutional up to a
    global pooling) built for ``float32 (B, size, size, 3)`` inputs, with the same weights.

    Every input shape ``(None, S, S, 3)`` in the model's config (its own input and its nested
    models', e.g. the backbone's or an ensemble's members') becomes ``(None, size, size, 3)``."""
    old = input_size(model)
    found = 0

    def resized(node):
        nonlocal found
        if isinstance(node, dict):
            return {k: resized(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            if len(node) == 4 and node[0] is None and node[1] == old and node[2] == old and node[3] == 3:
                found += 1
                return [None, size, size, 3]
            return [resized(v) for v in node]
        return node

    config = resized(model.get_config())
    if not found:
        raise ModelError(f"{model.name}: no (None, {old}, {old}, 3) input in its config to rebuild at {size} px")
    if name is not None:
        config["name"] = name
    try:
        copy = model.__class__.from_config(config)
        copy.set_weights(model.get_weights())
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{model.name} cannot be rebuilt for {size} px inputs: {exc}") from None
    if input_size(copy) != size or copy.output_shape != model.output_shape:
        raise ModelError(f"{model.name} rebuilt for {size} px gives {copy.input_shape} → {copy.output_shape}, not a "
                         f"({size}, {size}) input and its {model.output_shape} output")
    return copy


def build_multiscale(model: keras.Model, sizes: Sequence[int], input_side: int | None = None, name: str = "multiscale") -> keras.Model:
    """``model`` (``float32 (B, S, S, 3)`` → ``float32 (B, D)``) read at each of ``sizes``:
    ``float32 (B, M, M, 3)``, M = ``input_side`` (default max(sizes)) → ``float32 (B, D)``, the
    unit-norm sum of the unit embeddings of the input resized to each size (bilinear, antialiased;
    the size M as given).

    ``model`` itself serves its own size (it is used, not copied); other sizes get copies built by
    ``at_input_size``. One size is allowed: ``model`` reading inputs cut at another side (the
    ImageNet baseline of a multi-scale embedder reads its crops at the size it was trained at)."""
    sizes = [int(s) for s in sizes]
    if not sizes or len(set(sizes)) != len(sizes) or min(sizes) < MIN_SCALE:
        raise ModelError(f"the sizes of a multi-scale embedder must be distinct and at least {MIN_SCALE} px, got {sizes}")
    if len(model.output_shape) != 2:
        raise ModelError(f"the embedder gives outputs of shape {model.output_shape}, not (batch, D)")
    own, top = input_size(model), int(input_side or max(sizes))
    if top < max(sizes):
        raise ModelError(f"the input side {top} px is smaller than the largest size {max(sizes)} px: crops would be enlarged")
    inp = keras.Input((top, top, 3), name="image", dtype="float32")
    outs = []
    for size in sizes:
        net = model if size == own else at_input_size(model, size, name=f"{model.name}_{size}px")
        x = inp if size == top else layers.Resizing(size, size, interpolation="bilinear", antialias=True,
                                                    name=f"resize_{size}", dtype="float32")(inp)
        outs.append(layers.UnitNormalization(name=f"scale_{size}_l2", dtype="float32")(net(x)))
    joined = outs[0] if len(outs) == 1 else layers.Add(name="scales_sum", dtype="float32")(outs)
    out = layers.UnitNormalization(name="multiscale_l2", dtype="float32")(joined)
    return keras.Model(inp, out, name=name)


def save_multiscale(path: str | Path, sizes: Sequence[int], out: str | Path) -> Path:
    """Load the saved embedder at ``path`` (one model or an ensemble) and save it read at ``sizes``
    (``build_multiscale``) at ``out``: its preprocessing with the largest size, its records (an
    ensemble's members, its backbone) kept, and the sizes and the source's sha256 recorded."""
    path = Path(path)
    if scales_record(path):
        raise ModelError(f"{path} is already a multi-scale embedder (sizes {scales_record(path)['sizes']}): give the model it was made from")
    model = load_embedder(path)
    prep = load_preprocessing(path, model)
    built = build_multiscale(model, sizes, name=model.name)  # its name names the backbone of a single model (showroom_<backbone>)
    records = {key: value for key in (ENSEMBLE_RECORD, "backbone") if (value := saved_record(path, key)) is not None}
    records[SCALES_RECORD] = {"sizes": [int(s) for s in sizes], "trained_size": input_size(model), "from": path.name,
                              "fingerprint": model_fingerprint(path)}
    return save_embedder(built, out, replace(prep, image_size=max(int(s) for s in sizes)), records)


def scales_record(path: str | Path) -> dict | None:
    """What a saved multi-scale embedder records (``sizes``, ``trained_size``, ``from``, ``fingerprint``),
    or None for any other embedder."""
    record = saved_record(path, SCALES_RECORD)
    return record if isinstance(record, dict) else None
