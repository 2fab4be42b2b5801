"""Losses in pure ``keras.ops``: the margin hinge triplet loss, the two in-batch mining losses, and
the proxy softmax over all catalog products; the triplet terms also as loss objects
(``HingeTripletLoss`` ...) that ``TripletModel`` takes, made from a ``TrainConfig.loss`` name by
``make_triplet_loss``.

The in-batch losses reproduce ``tensorflow_addons.losses.triplet_semihard_loss`` and
``triplet_hard_loss`` (Euclidean ``"L2"`` distance), which cannot be used any more: the package is
end-of-life and does not import under Keras 3. One deliberate difference: a batch without any
positive pair gives 0 here instead of TFA's 0/0 = NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from keras import ops

from engine.config import LOSSES

_EPS = 1e-12


def triplet_distances(q, p, n):
    """Euclidean d(q, p) and d(q, n) per row. ``q, p, n``: float (B, D) → two float (B,)."""
    d_pos = ops.sqrt(ops.maximum(ops.sum(ops.square(q - p), axis=-1), _EPS))
    d_neg = ops.sqrt(ops.maximum(ops.sum(ops.square(q - n), axis=-1), _EPS))
    return d_pos, d_neg


def triplet_hinge_loss(q, p, n, margin: float = 1.0):
    """``mean(max(0, margin + d(q, p) - d(q, n)))`` over the B triplets; inputs float (B, D)."""
    d_pos, d_neg = triplet_distances(q, p, n)
    return ops.mean(ops.maximum(margin + d_pos - d_neg, 0.0))


def pairwise_distances(embeddings, squared: bool = False):
    """Pairwise Euclidean distances, float (N, D) → float (N, N), exact zeros on the diagonal.

    Same numerics as TFA's ``pairwise_distance``: clipped at 0, gradient-safe sqrt.
    """
    e = ops.cast(embeddings, "float32")
    sq = ops.sum(ops.square(e), axis=1)
    d2 = ops.expand_dims(sq, 1) + ops.expand_dims(sq, 0) - 2.0 * ops.matmul(e, ops.transpose(e))
    d2 = ops.maximum(d2, 0.0)
    zero = ops.cast(d2 <= 0.0, "float32")
    d = d2 if squared else ops.sqrt(d2 + zero * 1e-16)
    d = d * (1.0 - zero)
    n = ops.shape(e)[0]
    return d * (1.0 - ops.eye(n, dtype="float32"))


def _masked_maximum(data, mask):
    """Row-wise max of ``data`` over ``mask``; the row minimum where the mask is empty."""
    axis_min = ops.min(data, axis=1, keepdims=True)
    return ops.max((data - axis_min) * mask, axis=1, keepdims=True) + axis_min


def _masked_minimum(data, mask):
    """Row-wise min of ``data`` over ``mask``; the row maximum where the mask is empty."""
    axis_max = ops.max(data, axis=1, keepdims=True)
    return ops.min((data - axis_max) * mask, axis=1, keepdims=True) + axis_max


def _adjacency(labels):
    labels = ops.reshape(labels, (-1, 1))
    return ops.cast(ops.equal(labels, ops.transpose(labels)), "float32")


def batch_hard_triplet_loss(labels, embeddings, margin: float = 1.0, soft: bool = False):
    """Batch-hard triplet loss (Hermans et al. 2017; TFA ``triplet_hard_loss``).

    For each anchor: hardest positive (largest distance, same label, not itself) against hardest
    negative (smallest distance, other label); mean over anchors of ``max(hp - hn + margin, 0)``
    (``softplus(hp - hn)`` when ``soft``). ``labels``: int (N,), ``embeddings``: float (N, D).
    """
    pdist = pairwise_distances(embeddings)
    adjacency = _adjacency(labels)
    n = ops.shape(pdist)[0]
    mask_pos = adjacency - ops.eye(n, dtype="float32")
    hardest_pos = _masked_maximum(pdist, mask_pos)
    hardest_neg = _masked_minimum(pdist, 1.0 - adjacency)
    if soft:
        loss = ops.log1p(ops.exp(hardest_pos - hardest_neg))
    else:
        loss = ops.maximum(hardest_pos - hardest_neg + margin, 0.0)
    return ops.mean(loss)


def semi_hard_triplet_loss(labels, embeddings, margin: float = 1.0):
    """Semi-hard triplet loss (Schroff et al. 2015, FaceNet; TFA ``triplet_semihard_loss``).

    For every anchor-positive pair (a, p): the negative n with the smallest d(a, n) still greater
    than d(a, p); if none exists, the negative farthest from a. Loss = sum over pairs of
    ``max(margin + d(a, p) - d(a, n), 0)`` / number of pairs.
    ``labels``: int (N,), ``embeddings``: float (N, D).
    """
    pdist = pairwise_distances(embeddings)
    adjacency = _adjacency(labels)
    not_adj = 1.0 - adjacency
    n = ops.shape(pdist)[0]
    # [a, p, k]: k is a negative of a that is farther from a than p is.
    farther = ops.cast(ops.expand_dims(pdist, 1) > ops.expand_dims(pdist, 2), "float32")
    mask = farther * ops.expand_dims(not_adj, 1)
    has_semi_hard = ops.sum(mask, axis=2) > 0.0
    d_k = ops.broadcast_to(ops.expand_dims(pdist, 1), (n, n, n))
    axis_max = ops.max(d_k, axis=2, keepdims=True)
    outside = ops.squeeze(ops.min((d_k - axis_max) * mask, axis=2, keepdims=True) + axis_max, 2)
    inside = ops.broadcast_to(_masked_maximum(pdist, not_adj), (n, n))
    negatives = ops.where(has_semi_hard, outside, inside)
    mask_pos = adjacency - ops.eye(n, dtype="float32")
    loss_mat = (margin + pdist - negatives) * mask_pos
    num_pos = ops.sum(mask_pos)
    return ops.sum(ops.maximum(loss_mat, 0.0)) / ops.maximum(num_pos, 1.0)


def proxy_softmax_loss(embeddings, labels, proxies, temperature: float = 0.05, margin: float = 0.0):
    """NormSoftmax / proxy softmax loss (Zhai & Wu 2018): cross-entropy of cosine logits / temperature.

    Each class has one learnable proxy; the logit of class j for a row is
    ``cos(e, proxy_j) / temperature``, so every row is scored against every class at once (the
    whole catalog when the classes are products). ``margin`` m > 0 is CosFace's additive margin
    (Wang et al. 2018): the row's own class scores ``(cos - m) / temperature``, so a row is only
    done when its own proxy is nearer than every other by m. ``embeddings``: float (N, D);
    ``labels``: int (N,) in [0, C); ``proxies``: float (C, D). Returns the mean over rows.
    """
    e = ops.cast(embeddings, "float32")
    e = e / ops.sqrt(ops.maximum(ops.sum(ops.square(e), axis=-1, keepdims=True), _EPS))
    p = ops.cast(proxies, "float32")
    p = p / ops.sqrt(ops.maximum(ops.sum(ops.square(p), axis=-1, keepdims=True), _EPS))
    labels = ops.cast(labels, "int32")
    cosines = ops.matmul(e, ops.transpose(p))
    if margin:
        cosines = cosines - margin * ops.one_hot(labels, ops.shape(p)[0], dtype="float32")
    return ops.mean(ops.sparse_categorical_crossentropy(labels, cosines / temperature, from_logits=True))


class TripletLoss(Protocol):
    """The triplet term of ``TripletModel``'s loss, one scalar for a batch of B triplets.

    ``q, p, n``: float (B, D) embeddings of queries, positives and negatives; ``label_p, label_n``:
    int (B,) product labels of the positives and negatives (the query's label is ``label_p``).
    ``margin``: the margin m, also where ``TripletModel`` counts a triplet as already satisfied.
    """

    margin: float

    def __call__(self, q, p, n, label_p, label_n): ...


def _in_batch(q, p, n, label_p, label_n):
    """An in-batch mining loss's arguments: labels int (3B,) and embeddings float (3B, D) of q, p and n."""
    return ops.concatenate([label_p, label_p, label_n], axis=0), ops.concatenate([q, p, n], axis=0)


@dataclass(frozen=True)
class HingeTripletLoss:
    """Each triplet on its own: ``mean(max(0, m + d(q, p) - d(q, n)))`` (``triplet_hinge_loss``)."""

    margin: float = 1.0

    def __call__(self, q, p, n, label_p, label_n):
        return triplet_hinge_loss(q, p, n, self.margin)


@dataclass(frozen=True)
class BatchHardTripletLoss:
    """Hardest positive against hardest negative over all 3B embeddings (``batch_hard_triplet_loss``)."""

    margin: float = 1.0

    def __call__(self, q, p, n, label_p, label_n):
        return batch_hard_triplet_loss(*_in_batch(q, p, n, label_p, label_n), margin=self.margin)


@dataclass(frozen=True)
class SemiHardTripletLoss:
    """FaceNet's semi-hard negatives over all 3B embeddings (``semi_hard_triplet_loss``)."""

    margin: float = 1.0

    def __call__(self, q, p, n, label_p, label_n):
        return semi_hard_triplet_loss(*_in_batch(q, p, n, label_p, label_n), margin=self.margin)


TRIPLET_LOSSES: dict[str, type] = {"hinge": HingeTripletLoss, "batch_hard": BatchHardTripletLoss, "semi_hard": SemiHardTripletLoss}


def make_triplet_loss(name: str, margin: float = 1.0) -> TripletLoss:
    """The triplet term named ``name`` (one of ``engine.config.LOSSES``: ``TrainConfig.loss``) at ``margin``."""
    if name not in TRIPLET_LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    return TRIPLET_LOSSES[name](margin=float(margin))
