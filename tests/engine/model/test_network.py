"""The embedder: shapes, normalisation, branches, freeze policy, weights, save/load, big backbones."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras
import numpy as np
import pytest

from engine.config import LOSSES, ModelConfig, TrainConfig
from engine.model.embedder import ModelError, embed_images, load_embedder
from engine.model.losses import BatchHardTripletLoss, batch_hard_triplet_loss, make_triplet_loss
from engine.model.network import TripletModel, WeightsError, build_embedder, resolve_weights


def small(**kw) -> ModelConfig:
    return ModelConfig(**{"weights": "none", "image_size": 64, "embedding_dim": 32, **kw})


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_embedder_output_shape_and_unit_norm():
    model = build_embedder(small())
    emb = embed_images(model, images(5, 64), batch_size=2)
    assert emb.shape == (5, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert embed_images(model, images(0, 64)).shape == (0, 32)


def test_l2_normalisation_can_be_switched_off():
    emb = embed_images(build_embedder(small(l2_normalize=False)), images(4, 64))
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)


def test_low_level_branch_is_parallel_and_optional():
    with_branch = build_embedder(small())
    without = build_embedder(small(low_level_branch=False))
    assert "low_conv1" in [layer.name for layer in with_branch.layers]
    assert "low_conv1" not in [layer.name for layer in without.layers]
    concat = with_branch.get_layer("concat")
    assert concat.output.shape[-1] == with_branch.get_layer("deep_pool").output.shape[-1] + 96


@pytest.mark.parametrize("policy,expect", [("all", "all"), ("none", 0), ("10", 10)])
def test_freeze_policy(policy, expect):
    model = build_embedder(small(train_backbone=policy))
    backbone = model.get_layer("backbone")
    trainable_layers = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    weighted = [layer for layer in backbone.layers if layer.weights]
    if expect == "all":
        assert len(trainable_layers) == len(weighted)
    elif expect == 0:
        assert not backbone.trainable
        assert all(w.name for w in model.trainable_weights)  # head still trains
        assert len(model.trainable_weights) > 0
    else:
        assert all(layer.trainable for layer in backbone.layers[-expect:])
        assert not any(layer.trainable for layer in backbone.layers[:-expect])


def test_bad_train_backbone_value():
    with pytest.raises(ValueError, match="train_backbone"):
        ModelConfig(train_backbone="some")


def test_save_load_roundtrip_gives_same_embeddings(tmp_path: Path):
    model = build_embedder(small())
    x = images(3, 64)
    path = tmp_path / "embedder.keras"
    model.save(path)
    loaded = load_embedder(path)
    np.testing.assert_allclose(embed_images(loaded, x), embed_images(model, x), atol=1e-6)


def test_load_embedder_errors(tmp_path: Path):
    with pytest.raises(ModelError, match="not found"):
        load_embedder(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="damaged: not a complete .keras archive"):
        load_embedder(bad)


def test_shared_imagenet_weights_load_and_change_features(mobilenet_weights: Path):
    pretrained = build_embedder(small(weights=str(mobilenet_weights)))
    scratch = build_embedder(small())
    a = pretrained.get_layer("backbone").get_layer("Conv1").get_weights()[0]
    b = scratch.get_layer("backbone").get_layer("Conv1").get_weights()[0]
    ref = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=0.35, include_top=False, weights=None)
    ref.load_weights(mobilenet_weights)
    np.testing.assert_array_equal(a, ref.get_layer("Conv1").get_weights()[0])
    assert not np.allclose(a, b)


def test_weights_errors(tmp_path: Path, mobilenet_weights: Path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(small(weights=str(tmp_path / "nope.h5")))
    with pytest.raises(WeightsError, match="does not fit backbone mobilenet_v2 alpha=0.5"):
        build_embedder(small(weights=str(mobilenet_weights), alpha=0.5))


def test_imagenet_resolves_to_local_mirror(monkeypatch, tmp_path: Path):
    cfg = small(weights="imagenet")
    monkeypatch.setenv("SHOWROOM_WEIGHTS_DIR", str(tmp_path))
    assert resolve_weights(cfg) == "imagenet"  # mirror folder without the file: Keras download
    (tmp_path / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5").write_bytes(b"x")
    assert resolve_weights(cfg) == tmp_path / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"


@pytest.mark.slow
@pytest.mark.parametrize("backbone,size", [("xception", 71), ("inception_resnet_v2", 75)])
def test_big_backbones_build_and_embed(backbone: str, size: int):
    model = build_embedder(ModelConfig(backbone=backbone, weights="none", image_size=size, embedding_dim=256))
    emb = embed_images(model, images(2, size))
    assert emb.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def triplet_batch(rng: np.random.Generator) -> dict:
    """8 random 32-px triplets; query and positive share labels 0..7, negatives 8..15."""
    return {
        "query": rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"),
        "positive": rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"),
        "negative": rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"),
        "label_p": np.arange(8, dtype="int32"),
        "label_n": np.arange(8, 16, dtype="int32"),
    }


def test_triplet_model_trains_and_reports_metrics():
    embedder = build_embedder(small(embedding_dim=8, image_size=32, train_backbone="none"))
    model = TripletModel(embedder, triplet_loss=make_triplet_loss("hinge", 1.0))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    rng = np.random.default_rng(0)
    x = triplet_batch(rng)
    before = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    hist = model.fit(x, batch_size=8, epochs=10, verbose=0)
    after = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert {"loss", "absolute_accuracy", "zero_loss_share", "mean_d_pos", "mean_d_neg"} <= set(hist.history)
    assert after["loss"] < before["loss"]
    assert 0.0 <= after["absolute_accuracy"] <= 1.0


def test_catalog_softmax_terms_train_the_proxies_and_the_embedder():
    embedder = build_embedder(small(embedding_dim=8, image_size=32, train_backbone="none"))
    rng = np.random.default_rng(1)
    proxies = rng.normal(size=(16, 8)).astype("float32")
    types = np.array([0] * 8 + [1] * 8, np.int32)
    model = TripletModel(embedder, triplet_weight=1.0, softmax_weight=1.0, temperature=0.1, proxies=proxies,
                         type_weight=0.5, product_types=types, type_proxies=np.stack([proxies[:8].mean(0), proxies[8:].mean(0)]))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x = triplet_batch(rng)
    before = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    start = keras.ops.convert_to_numpy(model.proxies).copy()
    hist = model.fit(x, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert {"softmax_loss", "proxy_accuracy", "triplet_loss"} <= set(hist.history)
    assert after["softmax_loss"] < before["softmax_loss"] and after["loss"] < before["loss"]
    assert not np.allclose(keras.ops.convert_to_numpy(model.proxies), start)  # the proxies learn
    np.testing.assert_allclose(start * model.proxy_lr_scale, proxies, rtol=1e-6)  # stored scaled down: 10x faster steps
    with pytest.raises(ValueError, match="proxies"):
        TripletModel(embedder, softmax_weight=1.0)


def test_the_proxy_margin_reaches_the_softmax_term():
    embedder = build_embedder(small(embedding_dim=8, image_size=32, train_backbone="none"))
    rng = np.random.default_rng(3)
    proxies = rng.normal(size=(16, 8)).astype("float32")
    x = triplet_batch(rng)
    losses = []
    for margin in (0.0, 0.3):
        model = TripletModel(embedder, softmax_weight=1.0, temperature=0.1, proxy_margin=margin, proxies=proxies)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        losses.append(model.evaluate(x, batch_size=8, verbose=0, return_dict=True)["softmax_loss"])
    assert losses[1] > losses[0] + 0.5  # the same weights and batch: each own logit 3 lower (0.3 / 0.1)
    with pytest.raises(ValueError, match="proxy_margin"):
        TrainConfig(proxy_margin=1.0)


def test_one_pass_shares_batch_norm_statistics_only_while_training():
    embedder = build_embedder(small(embedding_dim=8, image_size=32, train_backbone="all"))
    x = triplet_batch(np.random.default_rng(2))
    batch = {k: v[:4] for k, v in x.items()}
    three, one = TripletModel(embedder), TripletModel(embedder, one_pass=True)
    joint = keras.ops.convert_to_numpy(embedder(np.concatenate([batch[k] for k in ("query", "positive", "negative")]), training=True))
    for training in (False, True):
        out3 = keras.ops.convert_to_numpy(three(batch, training=training))
        out1 = keras.ops.convert_to_numpy(one(batch, training=training))
        assert out3.shape == out1.shape == (3, 4, 8)
        own = [keras.ops.convert_to_numpy(embedder(batch[k], training=training)) for k in ("query", "positive", "negative")]
        np.testing.assert_allclose(out3, np.stack(own), atol=1e-5)  # each of q, p, n normalised by its own batch
        if training:
            np.testing.assert_allclose(out1, joint.reshape(3, 4, 8), atol=1e-5)  # all 3B by the same statistics
            assert not np.allclose(out1, out3, atol=1e-3)
        else:
            np.testing.assert_allclose(out1, out3, atol=1e-5)  # inference: moving statistics, the same either way


class ConstantLoss:
    """A triplet term that ignores its inputs: what TripletModel reports is then known exactly."""

    margin = 0.5

    def __call__(self, q, p, n, label_p, label_n):
        return keras.ops.convert_to_tensor(3.0)


def test_the_triplet_term_is_the_loss_object_passed_in():
    embedder = build_embedder(small(embedding_dim=8, image_size=32, train_backbone="none"))
    x = triplet_batch(np.random.default_rng(3))
    out = TripletModel(embedder, triplet_loss=ConstantLoss(), triplet_weight=2.0)
    out.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = out.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert logs["triplet_loss"] == pytest.approx(3.0) and logs["loss"] == pytest.approx(6.0)
    assert out.margin == 0.5  # zero_loss_share is counted at the loss's own margin
    hard = TripletModel(embedder, triplet_loss=BatchHardTripletLoss(margin=0.3))
    hard.compile(optimizer=keras.optimizers.Adam(1e-3))
    emb = [keras.ops.convert_to_numpy(embedder(x[k])) for k in ("query", "positive", "negative")]
    want = batch_hard_triplet_loss(np.concatenate([x["label_p"], x["label_p"], x["label_n"]]), np.concatenate(emb), margin=0.3)
    got = hard.evaluate(x, batch_size=8, verbose=0, return_dict=True)["triplet_loss"]
    assert got == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(ValueError, match="own margin"):
        TripletModel(embedder, triplet_loss=BatchHardTripletLoss(margin=0.3), margin=1.0)


def test_every_configured_loss_name_has_a_triplet_term():
    for name in LOSSES:
        loss = make_triplet_loss(name, 0.7)
        assert loss.margin == 0.7 and callable(loss)
    with pytest.raises(ValueError, match="loss must be one of"):
        make_triplet_loss("contrastive")


def test_the_multi_worker_build_override_still_matches_keras():
    """``TripletModel._maybe_symbolic_build`` works around keras-team/keras#20585: under
    MultiWorkerMirroredStrategy Keras' TensorFlow trainer reduces the first batch across workers with
    ``Strategy.reduce``, which takes no nested batch (ours is a dict), before it looks whether the
    model is built, so there is no public way around it (building the model first fails the same
    way). If this fails, Keras changed the method: check whether tests/training/test_multi_worker.py
    passes without the override, and delete it if so."""
    keras_build = keras.Model._maybe_symbolic_build
    assert TripletModel._maybe_symbolic_build is not keras_build
    assert list(inspect.signature(keras_build).parameters) == ["self", "iterator", "data_batch"]
    source = inspect.getsource(keras_build)
    assert "self.distribute_strategy.reduce(" in source and "self._symbolic_build(data_batch=data_batch)" in source


def test_each_backbone_family_gets_its_own_input_convention():
    from engine.model.network import ImageNetInput, input_convention

    assert [input_convention(b) for b in ("mobilenet_v2", "xception", "EfficientNetV2S", "ConvNeXtTiny", "DenseNet121", "ResNet50",
                                          "ResNet50V2", "VGG16", "MobileNetV3Small")] == \
        ["tf", "tf", "raw", "raw", "torch", "caffe", "tf", "caffe", "raw"]
    red = np.array([[[[255.0, 0.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(ImageNetInput("caffe")(red))[0, 0, 0], [0 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ImageNetInput("torch")(red))[0, 0, 0],
                               [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(ImageNetInput("raw")(red)), red)
    with pytest.raises(WeightsError, match="no backbone"):
        input_convention("NoSuchNet")
    with pytest.raises(ValueError, match="keras.applications class name"):
        small(backbone="efficientnet b0")


def test_any_keras_application_backbone_from_a_weights_file_is_recorded_with_the_model(tmp_path: Path):
    import hashlib

    from engine.config import Preprocessing
    from engine.model.embedder import Embedder, backbone_record, save_embedder

    # a "pretrained" EfficientNetB0 no-top weights file (random here: the network is not reached in tests)
    donor = keras.applications.EfficientNetB0(input_shape=(64, 64, 3), include_top=False, weights=None)
    donor.save_weights(tmp_path / "efficientnetb0_no_top.weights.h5")
    weights = tmp_path / "efficientnetb0_no_top.weights.h5"
    model = build_embedder(small(backbone="EfficientNetB0", weights=str(weights), embedding_dim=8))
    for a, b in zip(model.get_layer("backbone").get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(a, b)  # the file's weights, not a fresh initialisation
    assert model.get_layer("to_raw_input").mode == "raw" and model.get_layer("low_unit_range") is not None
    save_embedder(model, tmp_path / "e.keras", Preprocessing(image_size=64))
    record = backbone_record(tmp_path / "e.keras")
    assert record["backbone"] == "EfficientNetB0" and record["weights"] == str(weights) and record["sha256_of"] == "file"
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    x = images(3, 64)
    np.testing.assert_allclose(Embedder.load(tmp_path / "e.keras")(x), model(x.astype(np.float32)), atol=1e-5)  # the layer round-trips
    with pytest.raises(WeightsError, match="does not fit"):
        build_embedder(small(backbone="DenseNet121", weights=str(weights)))
