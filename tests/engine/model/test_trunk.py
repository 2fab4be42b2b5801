"""An ensemble whose members hold the same leading backbone layers runs them once and gives the
same embeddings; members that differ from the first layer, or a single embedder, are left alone."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from engine.config import ModelConfig, Preprocessing
from engine.model.embedder import Embedder, load_embedder, save_embedder
from engine.model.ensemble import build_ensemble, save_ensemble
from engine.model.network import backbone_features_model, build_embedder
from engine.model.trunk import BACKBONE_LAYER, share_trunk, shared_prefix

SIZE = 48
TUNED = 12  # backbone layers a "fine-tuned" member changes at the end


def _embedder(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_embedder(ModelConfig(weights="none", image_size=SIZE, embedding_dim=16))


def _tuned_from(start: keras.Model, seed: int, last: int = TUNED) -> keras.Model:
    """A member that shares ``start``'s backbone but its last ``last`` layers (and has its own head):
    what fine-tuning the last layers of one ImageNet backbone gives."""
    model = _embedder(seed)
    ours, theirs = model.get_layer(BACKBONE_LAYER), start.get_layer(BACKBONE_LAYER)
    rng = np.random.default_rng(seed)
    for j, (a, b) in enumerate(zip(ours.layers, theirs.layers)):
        weights = b.get_weights()
        if j >= len(ours.layers) - last:  # scaled, so normalisation variances stay positive
            weights = [w * (1 + 0.05 * rng.random(w.shape)).astype(w.dtype) for w in weights]
        a.set_weights(weights)
    return model


def _images(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.float32)


def _conv_calls(model: keras.Model) -> int:
    """Convolutions one forward pass of ``model`` applies, nested models included (each is called once)."""
    return sum(_conv_calls(layer) if isinstance(layer, keras.Model) else
               isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) for layer in model.layers)


def _expected_cut(backbone: keras.Model, last: int) -> int:
    """The first layer of the last ``last`` with weights (the ones before it compute the same)."""
    return next((j for j in range(len(backbone.layers) - last, len(backbone.layers)) if backbone.layers[j].weights),
                len(backbone.layers))


def test_members_that_share_their_first_layers_run_them_once_with_the_same_embeddings():
    start = _embedder(0)
    members = [start, _tuned_from(start, 1), _tuned_from(start, 2), backbone_features_model(start)]
    ensemble = build_ensemble(members, shares=[0.3, 0.3, 0.2, 0.2])
    backbone = start.get_layer(BACKBONE_LAYER)
    expected = _expected_cut(backbone, TUNED)
    assert shared_prefix([m.get_layer(BACKBONE_LAYER) for m in members]) == expected
    shared, cut = share_trunk(ensemble)
    assert cut == expected and shared.name == ensemble.name
    x = _images()
    np.testing.assert_allclose(shared.predict_on_batch(x), ensemble.predict_on_batch(x), atol=1e-6)
    # the shared convolutions run once instead of once a member (3 embedders with 2 low-level convolutions each)
    convs = [isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) for layer in backbone.layers]
    assert _conv_calls(ensemble) == 4 * sum(convs) + 3 * 2
    assert _conv_calls(shared) == sum(convs[:cut]) + 4 * sum(convs[cut:]) + 3 * 2 < _conv_calls(ensemble)
    # the same layer objects: nothing copied, so weights set later are the ensemble's
    own = {id(w) for w in ensemble.weights}
    assert {id(w) for w in shared.weights} <= own


def test_a_wholly_shared_backbone_and_members_that_differ_from_the_start():
    start = _embedder(0)
    twin = _tuned_from(start, 3, last=0)  # the same backbone, its own head
    ensemble = build_ensemble([start, twin])
    shared, cut = share_trunk(ensemble)
    assert cut == len(start.get_layer(BACKBONE_LAYER).layers)
    x = _images()
    np.testing.assert_allclose(shared.predict_on_batch(x), ensemble.predict_on_batch(x), atol=1e-6)
    # two seeds trained from scratch share no layer: nothing to share, the ensemble stays as it is
    assert share_trunk(build_ensemble([_embedder(4), _embedder(5)])) is None
    assert share_trunk(start) is None  # one embedder is not an ensemble


def test_a_saved_ensemble_is_loaded_with_its_trunk_shared_unless_asked_not_to(tmp_path):
    start = _embedder(0)
    paths = []
    for i, model in enumerate([start, _tuned_from(start, 1)]):
        paths.append(save_embedder(model, tmp_path / f"m{i}.keras", Preprocessing(image_size=SIZE)))
    out, _ = save_ensemble(paths, tmp_path / "e.keras")
    shared, plain = Embedder.load(out), Embedder.load(out, shared_trunk=False)
    assert any("shared_trunk" in layer.name for layer in shared.model.layers)
    assert not any("shared_trunk" in layer.name for layer in plain.model.layers)
    assert shared.fingerprint == plain.fingerprint and shared.dim == plain.dim == 32
    images = _images(4).astype(np.uint8)
    np.testing.assert_allclose(shared(images), plain(images), atol=1e-6)
    # the file itself keeps the members apart (training.distill reads them)
    assert [layer.name for layer in load_embedder(out).layers if isinstance(layer, keras.Model)] == ["member_0", "member_1"]


@pytest.mark.parametrize("last", [2, 30])
def test_the_cut_is_the_first_layer_that_differs(last):
    start = _embedder(0)
    backbones = [start.get_layer(BACKBONE_LAYER), _tuned_from(start, 1, last=last).get_layer(BACKBONE_LAYER)]
    assert shared_prefix(backbones) == _expected_cut(backbones[0], last) < len(backbones[0].layers)


def _tiny_member(skip_from_first: bool) -> keras.Model:
    """An embedder-shaped model whose 'backbone' adds its second convolution to the first one's
    output, or to itself: the same layers with the same weights, wired differently."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((8, 8, 3))
    first = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x_in)
    second = keras.layers.Conv2D(4, 3, padding="same", name="c2")(first)
    joined = keras.layers.Add(name="add")([first if skip_from_first else second, second])
    backbone = keras.Model(x_in, joined, name=BACKBONE_LAYER)
    inp = keras.Input((8, 8, 3), name="image")
    feats = keras.layers.GlobalAveragePooling2D(name="deep_pool")(backbone(keras.layers.Rescaling(1 / 255, name="to_unit_range")(inp)))
    return keras.Model(inp, feats)


def test_members_wired_differently_are_left_alone():
    """Backbones whose layers all agree but read different tensors compute different functions."""
    a, b = _tiny_member(True), _tiny_member(False)
    assert [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()]
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    assert not np.allclose(a.predict_on_batch(x), b.predict_on_batch(x))
    assert shared_prefix([a.get_layer(BACKBONE_LAYER), b.get_layer(BACKBONE_LAYER)]) == 4  # layer by layer, all agree
    assert share_trunk(build_ensemble([a, b])) is None
    again, twin = _tiny_member(True), _tiny_member(True)  # fresh models: a model called in two ensembles is not shared
    again.set_weights(a.get_weights())
    twin.set_weights(a.get_weights())
    shared, cut = share_trunk(build_ensemble([again, twin]))
    assert cut == 4 and np.allclose(shared.predict_on_batch(x)[:, :4], shared.predict_on_batch(x)[:, 4:])
