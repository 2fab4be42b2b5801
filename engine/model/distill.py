"""An ensemble of seeds searched at the cost of one model: a shared backbone and a fitted head.

An ensemble of n seeds (``engine.model.ensemble``) runs n networks per crop. Its members are seeds
of one recipe: each fine-tuned the same ImageNet backbone, so their backbones stay close to one
another (on IKEA the trained blocks differ by up to 20 % of their norm) and their *average* is a
backbone as good as any of them (a "model soup", Wortsman et al. 2022). What does differ between
seeds is everything initialised at random: the low-level branch and the projection head. So the
one-pass **student** is

- member 0's network with its backbone replaced by the members' average, cut before its
  projection: ``image → features`` (the backbone's pooled features and member 0's low-level
  branch, F = 1376 for MobileNetV2 α 0.35);
- a small head ``F → D`` (D = the ensemble's, the members' dims summed; a residual MLP,
  L2-normalised) fitted to the ensemble's own embeddings of unlabelled images (room crops of
  training scenes and catalog photos, and their mirror images) by maximising their cosine.

No label is used and the network itself is not trained: only the head, on cached features, in a
minute or two on a CPU. On IKEA the student of three seeds ranks like its ensemble among the first
ten, about a point below it at room recall@50, at the embedding cost of one seed
(``docs/evaluation.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from engine.model.embedder import ModelError
from engine.model.network import BACKBONE_LAYER

HEAD_LAYER = "projection"  # the Dense layer whose input the student's head reads
MAX_BACKBONE_SPREAD = 0.5  # members whose backbones differ by more (relative norm) did not fine-tune one start


def ensemble_parts(model: keras.Model) -> list[keras.Model]:
    """The member networks of an ensemble model (``build_ensemble``: nested models ``member_<i>``), in order."""
    members = sorted((layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith("member_")),
                     key=lambda m: int(m.name.rsplit("_", 1)[1]))
    if len(members) < 2:
        raise ModelError(f"{model.name} is not an ensemble of embedders (python -m training.ensemble): a student needs one")
    return members


def backbone_spread(members: Sequence[keras.Model]) -> float:
    """The largest relative distance ``|w_i - mean| / |mean|`` over the members' backbone kernels
    (its convolution and dense weights flattened to one vector; normalisation statistics, the same
    ones at any random start, left out); ModelError when a member has no backbone or its
    backbone's weights are shaped differently."""
    weights = []
    for m in members:
        try:
            weights.append(m.get_layer(BACKBONE_LAYER).get_weights())
        except ValueError:
            raise ModelError(f"{m.name} has no '{BACKBONE_LAYER}' layer: only embedders of build_embedder can share a backbone") from None
    shapes = [[w.shape for w in ws] for ws in weights]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ModelError("the members' backbones differ in architecture: they cannot be averaged")
    flat = np.stack([np.concatenate([w.ravel() for w in ws if w.ndim >= 2]).astype(np.float64) for ws in weights])
    mean = flat.mean(axis=0)
    return float(np.max(np.linalg.norm(flat - mean, axis=1)) / max(np.linalg.norm(mean), 1e-12))


def student_trunk(members: Sequence[keras.Model]) -> keras.Model:
    """``float32 (B, S, S, 3) → float32 (B, F)``: a copy of member 0 up to its projection's input,
    with the members' mean backbone weights. Refuses members that did not fine-tune one backbone
    (spread above ``MAX_BACKBONE_SPREAD``: seeds trained from different starts average to noise)."""
    spread = backbone_spread(members)
    if spread > MAX_BACKBONE_SPREAD:
        raise ModelError(f"the members' backbones differ by {spread:.2f} of their norm (at most {MAX_BACKBONE_SPREAD}): "
                         "they were not fine-tuned from the same weights, and their average would not be a backbone")
    first = members[0]
    copy = first.__class__.from_config(first.get_config())
    copy.set_weights(first.get_weights())
    backbones = [m.get_layer(BACKBONE_LAYER).get_weights() for m in members]
    copy.get_layer(BACKBONE_LAYER).set_weights([np.mean([b[i] for b in backbones], axis=0) for i in range(len(backbones[0]))])
    try:
        features = copy.get_layer(HEAD_LAYER).input
    except ValueError:
        raise ModelError(f"{first.name} has no '{HEAD_LAYER}' layer to cut the student's trunk before") from None
    return keras.Model(copy.inputs, features, name="student_trunk")


def fit_head(features: np.ndarray, targets: np.ndarray, *, weights: np.ndarray | None = None, hidden: int = 1024,
             epochs: int = 40, batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0) -> keras.Model:
    """``float32 (B, F) → float32 (B, D)``, unit norm: a head fitted to map ``features`` float (N, F)
    to the unit ``targets`` float (N, D) (the ensemble's embeddings), trained to maximise their
    cosine, rows weighted by ``weights`` (N,) when given.

    Standardised features, one GELU layer of ``hidden`` units beside a linear path from the
    features (a residual MLP), L2-normalised. On IKEA a linear head fitted by ridge regression
    followed the ensemble less closely (10 nearest catalog photos of held-aside room crops: 0.84
    shared against 0.90) and ranked a little worse (``docs/evaluation.md``)."""
    x = np.asarray(features, np.float32)
    y = np.asarray(targets, np.float32)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or not len(x):
        raise ValueError(f"features (N, F) and targets (N, D) with the same N > 0, got {x.shape} and {y.shape}")
    w = np.ones(len(x), np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (len(x),) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be (N,) non-negative with a positive sum, got shape {w.shape}")
    if min(hidden, epochs, batch_size) < 1 or not learning_rate > 0:
        raise ValueError(f"hidden, epochs and batch_size must be >= 1 and learning_rate > 0, "
                         f"got {hidden}, {epochs}, {batch_size}, {learning_rate}")
    keras.utils.set_random_seed(seed)
    mean, var = x.mean(axis=0), x.var(axis=0)
    var[var < 1e-12] = 1.0  # a constant feature stays 0 after standardising
    inp = keras.Input((x.shape[1],), name="features", dtype="float32")
    z = layers.Normalization(mean=mean, variance=var, name="head_standardise", dtype="float32")(inp)
    h = layers.Dense(hidden, activation="gelu", name="head_hidden", dtype="float32")(z)
    joined = layers.Concatenate(name="head_residual", dtype="float32")([h, z])
    out = layers.UnitNormalization(name="head_l2", dtype="float32")(layers.Dense(y.shape[1], name="head_out", dtype="float32")(joined))
    head = keras.Model(inp, out, name="student_head")
    head.compile(keras.optimizers.AdamW(learning_rate, weight_decay=1e-4), loss=keras.losses.CosineSimilarity())
    head.fit(x, y, sample_weight=w * (len(w) / w.sum()), batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return head


def build_student(trunk: keras.Model, head: keras.Model, name: str = "student") -> keras.Model:
    """``float32 (B, S, S, 3) → float32 (B, D)``: ``trunk``'s features through the fitted ``head``."""
    F = int(trunk.output_shape[-1])
    if int(head.input_shape[-1]) != F:
        raise ModelError(f"the head reads {head.input_shape[-1]} features, the trunk gives {F}")
    inp = keras.Input(trunk.input_shape[1:], name="image", dtype="float32")
    return keras.Model(inp, head(trunk(inp)), name=name)
