"""Triplet losses against plain-numpy loop references on random and hand-made inputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.model.losses import (
    batch_hard_triplet_loss,
    pairwise_distances,
    proxy_softmax_loss,
    semi_hard_triplet_loss,
    triplet_hinge_loss,
)


def np_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum()))


def ref_hinge(q, p, n, margin):
    return float(np.mean([max(0.0, margin + np_dist(q[i], p[i]) - np_dist(q[i], n[i])) for i in range(len(q))]))


def ref_batch_hard(labels, emb, margin):
    losses = []
    for a in range(len(emb)):
        pos = [np_dist(emb[a], emb[j]) for j in range(len(emb)) if j != a and labels[j] == labels[a]]
        neg = [np_dist(emb[a], emb[j]) for j in range(len(emb)) if labels[j] != labels[a]]
        hp = max(pos) if pos else 0.0  # TFA: masked max over an empty mask is the row minimum, 0
        hn = min(neg)
        losses.append(max(hp - hn + margin, 0.0))
    return float(np.mean(losses))


def ref_semi_hard(labels, emb, margin):
    total, count = 0.0, 0
    for a in range(len(emb)):
        negs = [np_dist(emb[a], emb[k]) for k in range(len(emb)) if labels[k] != labels[a]]
        for p in range(len(emb)):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = np_dist(emb[a], emb[p])
            farther = [d for d in negs if d > d_ap]
            d_an = min(farther) if farther else max(negs)
            total += max(margin + d_ap - d_an, 0.0)
            count += 1
    return total / count


def as_np(x) -> float:
    return float(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hinge_matches_reference_on_random_triplets(seed):
    rng = np.random.default_rng(seed)
    q, p, n = (rng.normal(size=(16, 8)).astype(np.float32) for _ in range(3))
    for margin in (0.2, 1.0):
        assert as_np(triplet_hinge_loss(q, p, n, margin)) == pytest.approx(ref_hinge(q, p, n, margin), rel=1e-5)


def test_hinge_hand_made():
    q = np.array([[0.0, 0.0], [0.0, 0.0]], np.float32)
    p = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)  # d(q,p) = 1, 0.5
    n = np.array([[0.0, 3.0], [0.0, 1.0]], np.float32)  # d(q,n) = 3, 1
    # max(0, 1 + 1 - 3) = 0 ; max(0, 1 + 0.5 - 1) = 0.5  → mean 0.25
    assert as_np(triplet_hinge_loss(q, p, n, 1.0)) == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_batch_hard_matches_reference(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=20)
    emb = rng.normal(size=(20, 6)).astype(np.float32)
    for margin in (0.5, 1.0):
        got = as_np(batch_hard_triplet_loss(labels, emb, margin))
        assert got == pytest.approx(ref_batch_hard(labels, emb, margin), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_semi_hard_matches_reference(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=20)
    emb = rng.normal(size=(20, 6)).astype(np.float32)
    for margin in (0.5, 1.0):
        got = as_np(semi_hard_triplet_loss(labels, emb, margin))
        assert got == pytest.approx(ref_semi_hard(labels, emb, margin), rel=1e-4, abs=1e-5)


def test_in_batch_losses_hand_made():
    # Two classes on a line: a0=0, a1=1 (label 0), b0=3 (label 1).
    emb = np.array([[0.0], [1.0], [3.0]], np.float32)
    labels = np.array([0, 0, 1])
    # batch-hard: anchor0 hp=1 hn=3 -> 0 ; anchor1 hp=1 hn=2 -> 0 ; anchor2 (no positive) hp=0 hn=2 -> 0
    assert as_np(batch_hard_triplet_loss(labels, emb, 1.0)) == pytest.approx(0.0)
    # margin 2.5: anchor0 .5, anchor1 1.5, anchor2 .5 -> mean 2.5/3
    assert as_np(batch_hard_triplet_loss(labels, emb, 2.5)) == pytest.approx(2.5 / 3)
    # semi-hard, margin 2.5: pairs (0,1): d_ap=1, semi-hard neg d=3 -> .5 ; (1,0): d_ap=1, neg d=2 -> 1.5
    assert as_np(semi_hard_triplet_loss(labels, emb, 2.5)) == pytest.approx(1.0)


def test_pairwise_distances_zero_diagonal_and_finite_gradients():
    emb = tf.Variable(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32))  # a duplicate pair
    labels = np.array([0, 0, 1])
    with tf.GradientTape() as tape:
        loss = semi_hard_triplet_loss(labels, emb, 1.0) + batch_hard_triplet_loss(labels, emb, 1.0)
        loss += triplet_hinge_loss(emb[:1], emb[1:2], emb[2:], 1.0)
    grad = tape.gradient(loss, emb)
    assert np.all(np.isfinite(grad.numpy()))
    d = keras.ops.convert_to_numpy(pairwise_distances(emb))
    assert np.allclose(np.diag(d), 0.0)
    assert d[0, 2] == pytest.approx(np.sqrt(2.0), rel=1e-6)


def ref_proxy_softmax(emb, labels, proxies, temperature, margin=0.0):
    """Plain numpy: cross-entropy of (cosine(e, proxy_j) - margin [j is the label]) / T over all classes, averaged."""
    total = 0.0
    for e, y in zip(emb, labels):
        cos = np.array([np.dot(e, p) / (np.linalg.norm(e) * np.linalg.norm(p)) for p in proxies])
        cos[y] -= margin
        logits = cos / temperature
        logits -= logits.max()
        total += -(logits[y] - np.log(np.exp(logits).sum()))
    return total / len(emb)


@pytest.mark.parametrize("seed", [0, 1])
def test_proxy_softmax_matches_reference(seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(12, 6)).astype(np.float32)
    proxies = rng.normal(size=(5, 6)).astype(np.float32)
    labels = rng.integers(0, 5, 12)
    for t in (0.05, 1.0):
        assert as_np(proxy_softmax_loss(emb, labels, proxies, t)) == pytest.approx(ref_proxy_softmax(emb, labels, proxies, t), rel=1e-4)
        for m in (0.1, 0.35):
            assert as_np(proxy_softmax_loss(emb, labels, proxies, t, m)) == pytest.approx(ref_proxy_softmax(emb, labels, proxies, t, m), rel=1e-4)


def test_the_cosface_margin_keeps_a_row_learning_until_its_proxy_leads_by_the_margin():
    proxies = np.float32([[1, 0], [0.8, 0.6]])  # cosines of a row on proxy 0 against 1: 1.0 vs 0.8
    row, label = np.float32([[1, 0]]), np.array([0])
    plain = as_np(proxy_softmax_loss(row, label, proxies, 0.05))
    # by hand: -log(e^(c0/T) / (e^(c0/T) + e^(c1/T))) = log(1 + e^((c1 - c0)/T))
    assert plain == pytest.approx(np.log1p(np.exp((0.8 - 1.0) / 0.05)), rel=1e-5)
    margined = as_np(proxy_softmax_loss(row, label, proxies, 0.05, 0.2))
    assert margined == pytest.approx(np.log(2.0), rel=1e-5)  # a lead of exactly m is a coin toss
    assert margined > 30 * plain


def test_proxy_softmax_is_scale_free_and_rewards_the_right_proxy():
    proxies = np.eye(4, dtype=np.float32)
    right = np.eye(4, dtype=np.float32)[[0, 1, 2]] * 7.0  # any length: logits are cosines
    wrong = np.eye(4, dtype=np.float32)[[1, 2, 3]]
    labels = np.array([0, 1, 2])
    assert as_np(proxy_softmax_loss(right, labels, proxies, 0.05)) < 1e-6
    assert as_np(proxy_softmax_loss(wrong, labels, proxies, 0.05)) > 19.0  # (1 - 0) / 0.05 = 20 nats behind
