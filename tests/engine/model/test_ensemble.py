"""An ensemble of saved embedders is one embedder whose squared distance is the mean of its members';
an embedder read at several sizes is one whose embedding is the normalised sum of the sizes'."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import ModelConfig, Preprocessing
from engine.model.embedder import Embedder, ModelError, backbone_record, save_embedder
from engine.model.ensemble import (IMAGENET_MEMBER, at_input_size, build_ensemble, build_multiscale, ensemble_members,
                                   save_ensemble, save_multiscale, scales_record)
from engine.model.network import build_embedder


def _saved(path, *, size=48, dim=16, seed=0, l2=True, padding=None):
    """An untrained embedder saved at ``path``; ``seed`` gives it its own random projection."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_embedder(ModelConfig(weights="none", image_size=size, embedding_dim=dim, l2_normalize=l2))
    prep = Preprocessing(image_size=size) if padding is None else Preprocessing(image_size=size, crop_padding=padding)
    return save_embedder(model, path, prep)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [_saved(folder / "a.keras", seed=1), _saved(folder / "b.keras", seed=2, dim=8, l2=False)]


def test_the_ensemble_distance_is_the_mean_of_the_members_squared_distances(members, tmp_path):
    out, recorded = save_ensemble(members, tmp_path / "e.keras")
    ens = Embedder.load(out)
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    got = ens(images)
    singles = [Embedder.load(p)(images) for p in members]
    assert got.shape == (6, 16 + 8) and ens.dim == 24
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # unit norm, whatever the members'

    def sq(v):
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return ((v[:, None] - v[None]) ** 2).sum(-1)

    np.testing.assert_allclose(sq(got), (sq(singles[0]) + sq(singles[1])) / 2, atol=1e-5)
    # the member without its own normalisation is normalised inside the ensemble, not skipped
    assert not np.allclose(np.linalg.norm(singles[1], axis=1), 1.0)
    assert ens.preprocessing == Preprocessing(image_size=48)
    assert [m.name for m in recorded] == ["a", "b"] and [m.dim for m in recorded] == [16, 8]
    assert {m.model for m in recorded} == {"showroom_mobilenet_v2"} and ens.model.name == "ensemble"
    assert ensemble_members(out) == recorded
    assert all(len(m.fingerprint) == 64 for m in recorded) and recorded[0].fingerprint != recorded[1].fingerprint
    assert backbone_record(out) is None  # its members' backbones are in the members' records
    assert ensemble_members(members[0]) == []


def _sq(v):
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return ((v[:, None] - v[None]) ** 2).sum(-1)


def test_imagenet_features_join_a_trained_embedder_with_their_share_of_the_distance(members, tmp_path):
    # "ImageNet" weights of the backbone: a fixed file, so the features member can be built again here
    bb = tmp_path / "bb.weights.h5"
    build_embedder(ModelConfig(weights="none", image_size=48)).get_layer("backbone").save_weights(bb)
    out, recorded = save_ensemble([members[0]], tmp_path / "fi.keras", ModelConfig(weights=str(bb), image_size=224), 0.25)
    fused = Embedder.load(out)
    images = np.random.default_rng(1).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    got = fused(images)
    trained = Embedder.load(members[0])(images)
    features = Embedder.imagenet(ModelConfig(weights=str(bb), image_size=48))(images)  # built at the members' 48 px
    assert got.shape == (6, 16 + features.shape[1]) and fused.size == 48
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(_sq(got), 0.75 * _sq(trained) + 0.25 * _sq(features), atol=1e-5)
    assert not np.allclose(_sq(got), (_sq(trained) + _sq(features)) / 2, atol=1e-3)  # the share is not the mean
    assert [(m.name, m.share) for m in recorded] == [("a", 0.75), ("imagenet-mobilenet_v2", 0.25)]
    assert recorded[1].model == IMAGENET_MEMBER and len(recorded[1].fingerprint) == 64
    assert ensemble_members(out) == recorded
    with pytest.raises(ModelError, match=r"share of the distance must be in \(0, 1\)"):
        save_ensemble([members[0]], tmp_path / "f1.keras", ModelConfig(weights=str(bb)), 1.0)
    with pytest.raises(ModelError, match="at least two"):
        save_ensemble([members[0]], tmp_path / "f2.keras")
    assert not (tmp_path / "f1.keras").exists() and not (tmp_path / "f2.keras").exists()


def test_shares_weight_the_members_squared_distances(members):
    import keras

    models = [keras.saving.load_model(p, compile=False) for p in members]
    ens = build_ensemble(models, shares=[0.9, 0.1])
    images = np.random.default_rng(2).integers(0, 256, (5, 48, 48, 3)).astype("float32")
    singles = [Embedder.load(p)(images.astype(np.uint8)) for p in members]
    got = keras.ops.convert_to_numpy(ens(images))
    np.testing.assert_allclose(_sq(got), 0.9 * _sq(singles[0]) + 0.1 * _sq(singles[1]), atol=1e-5)
    for bad in ([0.5, 0.6], [1.0, 0.0], [1.0]):
        with pytest.raises(ModelError, match="shares must be one per member"):
            build_ensemble(models, shares=bad)


def test_an_ensemble_refuses_members_that_see_different_crops(tmp_path, members):
    other_size = _saved(tmp_path / "s.keras", size=64)
    with pytest.raises(ModelError, match="prepares its inputs differently"):
        save_ensemble([members[0], other_size], tmp_path / "e1.keras")
    with pytest.raises(ModelError, match="same input size"):
        build_ensemble([Embedder.load(members[0]).model, Embedder.load(other_size).model])
    other_padding = _saved(tmp_path / "p.keras", padding=0.2)
    with pytest.raises(ModelError, match="prepares its inputs differently"):
        save_ensemble([members[0], other_padding], tmp_path / "e2.keras")
    with pytest.raises(ModelError, match="listed twice"):
        save_ensemble([members[0], members[0]], tmp_path / "e3.keras")
    copy = tmp_path / "copy.keras"
    copy.write_bytes(members[0].read_bytes())
    with pytest.raises(ModelError, match="listed twice"):
        save_ensemble([members[0], copy], tmp_path / "e4.keras")
    with pytest.raises(ModelError, match="at least two"):
        build_ensemble([Embedder.load(members[0]).model])
    assert not list(tmp_path.glob("e*.keras"))  # nothing half-written


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _resized(images, size):
    import tensorflow as tf

    return tf.image.resize(np.asarray(images, np.float32), (size, size), antialias=True).numpy()


def test_a_network_rebuilt_for_another_input_size_keeps_its_weights(members):
    model = Embedder.load(members[0]).model
    bigger = at_input_size(model, 64)
    assert bigger.input_shape == (None, 64, 64, 3) and bigger.output_shape == model.output_shape
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), bigger.get_weights()))
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3)).astype(np.float32)
    back = at_input_size(bigger, 48)  # and back again: the very network
    np.testing.assert_allclose(back.predict_on_batch(images), model.predict_on_batch(images), atol=1e-5)
    big = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3)).astype(np.float32)
    assert not np.allclose(bigger.predict_on_batch(big), model.predict_on_batch(_resized(big, 48)), atol=1e-3)  # 64 px is read as 64 px


def test_a_multiscale_embedder_is_the_normalised_sum_of_its_sizes_unit_embeddings(members, tmp_path):
    out = save_multiscale(members[1], [48, 64], tmp_path / "ms.keras")  # the member without its own normalisation
    ms = Embedder.load(out)
    assert ms.preprocessing == Preprocessing(image_size=64) and ms.dim == 8 and ms.model.name == "showroom_mobilenet_v2"
    record = scales_record(out)
    assert record["sizes"] == [48, 64] and record["trained_size"] == 48 and record["from"] == "b.keras"
    assert len(record["fingerprint"]) == 64 and scales_record(members[1]) is None
    assert backbone_record(out) == backbone_record(members[1]) is not None
    base = Embedder.load(members[1]).model
    images = np.random.default_rng(3).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    by_hand = _unit(_unit(base.predict_on_batch(_resized(images, 48))) + _unit(at_input_size(base, 64).predict_on_batch(images.astype(np.float32))))
    got = ms(images)
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # one size read from crops cut larger: the network at its own size on the resized crop
    one = build_multiscale(base, [48], input_side=64)
    np.testing.assert_allclose(one.predict_on_batch(images.astype(np.float32)), _unit(base.predict_on_batch(_resized(images, 48))), atol=1e-5)


def test_an_ensemble_read_at_two_sizes_keeps_its_members(members, tmp_path):
    ens, recorded = save_ensemble(members, tmp_path / "e.keras")
    out = save_multiscale(ens, [40, 48], tmp_path / "e-ms.keras")  # a smaller size too: crops stay cut at 48
    ms = Embedder.load(out)
    assert ms.dim == 24 and ms.preprocessing.image_size == 48 and ensemble_members(out) == recorded
    images = np.random.default_rng(4).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    single = Embedder.load(ens).model
    by_hand = _unit(_unit(at_input_size(single, 40).predict_on_batch(_resized(images, 40))) + _unit(single.predict_on_batch(images.astype(np.float32))))
    np.testing.assert_allclose(ms(images), by_hand, atol=1e-5)


def test_multiscale_refuses_sizes_it_cannot_read(members, tmp_path):
    model = Embedder.load(members[0]).model
    for sizes in ([48, 48], [16, 48], []):
        with pytest.raises(ModelError, match="distinct and at least"):
            build_multiscale(model, sizes)
    with pytest.raises(ModelError, match="smaller than the largest size"):
        build_multiscale(model, [48, 64], input_side=56)
    out = save_multiscale(members[0], [48, 64], tmp_path / "ms.keras")
    with pytest.raises(ModelError, match="already a multi-scale embedder"):
        save_multiscale(out, [48, 96], tmp_path / "twice.keras")
    assert not (tmp_path / "twice.keras").exists()
