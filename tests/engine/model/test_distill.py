"""The one-pass student of an ensemble: the members' averaged backbone under member 0's branches, and
a ridge head that predicts the ensemble's embeddings; members that did not share a start are refused."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import ModelConfig
from engine.model.distill import (BACKBONE_LAYER, backbone_spread, build_student, ensemble_parts, fit_head,
                                  student_trunk)
from engine.model.embedder import ModelError
from engine.model.ensemble import build_ensemble
from engine.model.network import build_embedder

CFG = ModelConfig(weights="none", image_size=48, embedding_dim=8)


def _model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return build_embedder(CFG)


@pytest.fixture(scope="module")
def seeds():
    """Two 'seeds of one recipe': the same backbone start, fine-tuned a little apart (1 % noise), and
    their own random low-level branch and head."""
    a, b = _model(1), _model(2)
    rng = np.random.default_rng(0)
    start = a.get_layer(BACKBONE_LAYER).get_weights()
    b.get_layer(BACKBONE_LAYER).set_weights([w + 0.01 * np.std(w) * rng.standard_normal(w.shape).astype(w.dtype) for w in start])
    return a, b


def test_the_head_learns_to_follow_its_targets_and_ignores_rows_of_weight_0():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, [1.0, 5.0, 0.1, 2.0, 1.0, 1.0], (400, 6)).astype(np.float32)  # features on very different scales
    y = np.tanh((x - 3.0) @ rng.normal(size=(6, 5))).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    fit, test = slice(0, 300), slice(300, 400)
    garbage = y.copy()
    garbage[:100] = -garbage[:100]  # rows the fit must not follow
    weights = np.r_[np.zeros(100), np.ones(300)]
    head = fit_head(x[fit], garbage[fit], weights=weights[fit], hidden=32, epochs=60, batch_size=32, learning_rate=3e-3)
    pred = head.predict(x[test], verbose=0)
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1.0, atol=1e-5)
    assert np.mean(np.sum(pred * y[test], axis=1)) > 0.9  # follows the weighted rows on rows it never saw
    untrained = fit_head(x[fit], garbage[fit], hidden=32, epochs=1, batch_size=300, learning_rate=1e-6)
    assert np.mean(np.sum(untrained.predict(x[test], verbose=0) * y[test], axis=1)) < 0.7


def test_fit_head_refuses_bad_input():
    x = np.ones((5, 2))
    with pytest.raises(ValueError, match="same N"):
        fit_head(x, np.ones((4, 3)))
    with pytest.raises(ValueError, match="weights"):
        fit_head(x, np.ones((5, 3)), weights=np.zeros(5))
    with pytest.raises(ValueError, match="epochs"):
        fit_head(x, np.ones((5, 3)), epochs=0)


def test_the_trunk_averages_the_backbones_and_keeps_member_0s_branches(seeds):
    a, b = seeds
    trunk = student_trunk([a, b])
    backbone = next(layer for layer in _walk(trunk) if layer.name == BACKBONE_LAYER)
    got = backbone.get_weights()
    want = [(x + y) / 2 for x, y in zip(a.get_layer(BACKBONE_LAYER).get_weights(), b.get_layer(BACKBONE_LAYER).get_weights())]
    assert all(np.allclose(g, w) for g, w in zip(got, want))
    low = next(layer for layer in _walk(trunk) if layer.name == "low_conv1")
    assert np.allclose(low.get_weights()[0], a.get_layer("low_conv1").get_weights()[0])
    assert not np.allclose(low.get_weights()[0], b.get_layer("low_conv1").get_weights()[0])
    assert trunk.output_shape[-1] == a.get_layer("projection").input.shape[-1]
    assert backbone_spread([a, b]) < 0.05
    # the members themselves are not changed
    assert not np.allclose(a.get_layer(BACKBONE_LAYER).get_weights()[0], want[0])


def test_members_of_different_starts_are_refused():
    with pytest.raises(ModelError, match="not fine-tuned from the same weights"):
        student_trunk([_model(3), _model(4)])  # random backbones: nothing shared to average


def test_the_student_is_the_trunk_through_the_head(seeds):
    trunk = student_trunk(list(seeds))
    F = trunk.output_shape[-1]
    rng = np.random.default_rng(2)
    head = fit_head(rng.normal(size=(16, F)), rng.normal(size=(16, 12)), hidden=8, epochs=1)
    student = build_student(trunk, head)
    images = rng.integers(0, 256, (3, 48, 48, 3)).astype(np.float32)
    want = np.asarray(head.predict_on_batch(np.asarray(trunk.predict_on_batch(images))))
    got = np.asarray(student.predict_on_batch(images))
    assert got.shape == (3, 12)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ModelError, match="the head reads"):
        build_student(trunk, fit_head(np.ones((4, F + 1)), np.ones((4, 12)), hidden=4, epochs=1))


def test_ensemble_parts_are_the_members_in_order(seeds):
    import keras

    members = [keras.models.clone_model(m) for m in seeds]
    ens = build_ensemble(members)
    assert [m.name for m in ensemble_parts(ens)] == ["member_0", "member_1"]
    with pytest.raises(ModelError, match="not an ensemble"):
        ensemble_parts(seeds[0])


def _walk(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
