"""The embedding model: ImageNet backbone in parallel with a shallow low-level conv branch.

``build_embedder(cfg)`` returns a ``keras.Model`` mapping ``float32 (B, S, S, 3)`` RGB in
[0, 255] to ``float32 (B, D)`` embeddings (unit length when ``cfg.l2_normalize``). This model is
what serving loads (saved as ``.keras``); ``TripletModel`` wraps it only for training.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers, ops

from engine.config import ModelConfig
from engine.model.losses import HingeTripletLoss, TripletLoss, proxy_softmax_loss, triplet_distances

logger = logging.getLogger(__name__)
BACKBONE_LAYER = "backbone"  # the name of the nested ImageNet network inside an embedder of build_embedder

WEIGHTS_DIR_ENV = "SHOWROOM_WEIGHTS_DIR"


class WeightsError(ValueError):
    """Backbone weights that cannot be found or do not fit the backbone."""


NAMED = {"mobilenet_v2": "MobileNetV2", "xception": "Xception", "inception_resnet_v2": "InceptionResNetV2"}
# How each keras.applications family wants its RGB 0..255 input (by the module its class lives in):
# 'tf' scales to [-1, 1]; 'torch' to [0, 1] then ImageNet mean / std; 'caffe' flips to BGR and
# subtracts the ImageNet mean; 'raw' passes 0..255 (the model normalises inside).
CONVENTIONS = {
    "tf": ("inception_resnet_v2", "inception_v3", "mobilenet", "mobilenet_v2", "nasnet", "resnet_v2", "xception"),
    "torch": ("densenet",),
    "caffe": ("resnet", "vgg16", "vgg19"),
    "raw": ("convnext", "efficientnet", "efficientnet_v2", "mobilenet_v3"),
}


def application(backbone: str):
    """The ``keras.applications`` constructor of a backbone name (``BACKBONES`` or a class name)."""
    name = NAMED.get(backbone, backbone)
    ctor = getattr(keras.applications, name, None)
    if ctor is None or not callable(ctor):
        known = ", ".join(n for n in dir(keras.applications) if n[:1].isupper())
        raise WeightsError(f"keras.applications has no backbone {backbone!r}; one of {', '.join(NAMED)} or of: {known}")
    return ctor


def input_convention(backbone: str) -> str:
    """'tf', 'torch', 'caffe' or 'raw' (``CONVENTIONS``) for a backbone name."""
    family = application(backbone).__module__.rsplit(".", 1)[-1]
    for convention, families in CONVENTIONS.items():
        if family in families:
            return convention
    raise WeightsError(f"no known input convention for {backbone} (keras.applications.{family}); add its family to CONVENTIONS")


@keras.saving.register_keras_serializable(package="showroom")
class ImageNetInput(layers.Layer):
    """RGB ``float32 (B, S, S, 3)`` in [0, 255] → the input convention ``mode`` of a backbone
    family (``CONVENTIONS``; 'tf' models use a plain ``Rescaling`` instead)."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("torch", "caffe", "raw"):
            raise ValueError(f"input mode must be torch, caffe or raw, got {mode!r}")
        self.mode = mode

    def call(self, x):
        if self.mode == "torch":
            return (x / 255.0 - ops.convert_to_tensor(self.MEAN, x.dtype)) / ops.convert_to_tensor(self.STD, x.dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(self.CAFFE_MEAN_BGR, x.dtype)
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def local_weights_name(cfg: ModelConfig) -> str:
    """File name of the backbone's ImageNet no-top weights in a local mirror folder."""
    if cfg.backbone == "mobilenet_v2":
        return f"mobilenet_v2_{cfg.alpha:g}_224_imagenet_no_top.weights.h5"
    return f"{cfg.backbone if cfg.backbone in NAMED else cfg.backbone.lower()}_imagenet_no_top.weights.h5"


def weights_record(cfg: ModelConfig, weights: str | Path | None, backbone: keras.Model) -> dict[str, str]:
    """What the backbone started from, saved with the model: its name, the weights' source and
    sha256 (of the file when one was loaded, else of the initial weight arrays in order)."""
    if isinstance(weights, Path):
        digest, of = hashlib.sha256(weights.read_bytes()).hexdigest(), "file"
    else:
        h = hashlib.sha256()
        for w in backbone.weights:
            h.update(keras.ops.convert_to_numpy(w).tobytes())
        digest, of = h.hexdigest(), "arrays"
    source = str(weights) if weights is not None else "none"
    return {"backbone": cfg.backbone, "application": NAMED.get(cfg.backbone, cfg.backbone), "weights": source,
            "weights_sha256": digest, "sha256_of": of}


def resolve_weights(cfg: ModelConfig) -> str | Path | None:
    """What to initialise the backbone with: ``"imagenet"`` (Keras download), a file, or None.

    ``imagenet`` first looks for ``local_weights_name(cfg)`` in ``$SHOWROOM_WEIGHTS_DIR`` (an
    offline mirror, e.g. ``../shared/weights``); if the folder or file is absent Keras downloads
    the weights into its cache (``~/.keras/models``).
    """
    w = cfg.weights.strip()
    if w.lower() == "none":
        return None
    if w.lower() == "imagenet":
        mirror = os.environ.get(WEIGHTS_DIR_ENV)
        if mirror:
            path = Path(mirror) / local_weights_name(cfg)
            if path.is_file():
                logger.info("ImageNet weights for %s from local mirror %s", cfg.backbone, path)
                return path
            logger.info("no %s in %s=%s; Keras will download ImageNet weights", path.name, WEIGHTS_DIR_ENV, mirror)
        return "imagenet"
    path = Path(w).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; pass 'imagenet', 'none' or an existing .weights.h5 path")
    return path


def _backbone(cfg: ModelConfig, weights: str | Path | None) -> keras.Model:
    shape = (cfg.image_size, cfg.image_size, 3)
    keras_weights = "imagenet" if weights == "imagenet" else None
    ctor = application(cfg.backbone)
    extra = {"alpha": cfg.alpha} if cfg.backbone == "mobilenet_v2" else {}
    try:
        net = ctor(input_shape=shape, include_top=False, weights=keras_weights, **extra)
    except WeightsError:
        raise
    except ValueError as exc:  # e.g. an input too small for the backbone
        if keras_weights == "imagenet" and "download" in str(exc).lower():
            raise WeightsError(f"could not get the ImageNet weights of {cfg.backbone} from Keras ({exc})") from exc
        raise WeightsError(f"backbone {cfg.backbone} at {cfg.image_size} px: {exc}") from None
    except Exception as exc:  # Keras raises a bare Exception when the download fails
        if keras_weights != "imagenet":
            raise
        raise WeightsError(
            f"could not get the ImageNet weights of {cfg.backbone} from Keras ({exc}). Without network access, "
            f"pass --weights PATH, or put {local_weights_name(cfg)} in a folder named by ${WEIGHTS_DIR_ENV}."
        ) from exc
    if isinstance(weights, Path):
        try:
            net.load_weights(weights)
        except (ValueError, OSError, KeyError) as exc:
            raise WeightsError(
                f"weights file {weights} does not fit backbone {cfg.backbone}"
                f"{f' alpha={cfg.alpha:g}' if cfg.backbone == 'mobilenet_v2' else ''}: {exc}"
            ) from None
        logger.info("loaded backbone weights from %s", weights)
    net.name = BACKBONE_LAYER
    return net


def _apply_freeze(backbone: keras.Model, cfg: ModelConfig) -> None:
    n = cfg.trainable_backbone_layers()
    backbone.trainable = n != 0
    if n:
        for layer in backbone.layers[:-n]:
            layer.trainable = False


def build_embedder(cfg: ModelConfig) -> keras.Model:
    """Build the embedder. Input ``float32 (B, S, S, 3)`` RGB 0..255 → output ``float32 (B, D)``.

    The backbone always runs with BatchNorm in inference mode (``training=False``), the usual
    choice when fine-tuning ImageNet CNNs with small batches.
    """
    weights = resolve_weights(cfg)
    inp = keras.Input((cfg.image_size, cfg.image_size, 3), name="image", dtype="float32")
    convention = input_convention(cfg.backbone)
    if convention == "tf":  # the named backbones: a plain Rescaling, as models saved before other families existed
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(inp)
    else:
        x = ImageNetInput(convention, name=f"to_{convention}_input")(inp)
    backbone = _backbone(cfg, weights)
    record = weights_record(cfg, weights, backbone)
    _apply_freeze(backbone, cfg)
    deep = layers.GlobalAveragePooling2D(name="deep_pool")(backbone(x, training=False))
    features = deep
    if cfg.low_level_branch:
        # Wang et al. 2014: a shallow net on a subsampled copy captures colour and texture that
        # the deep, invariant features discard.
        unit = x if convention == "tf" else layers.Rescaling(1.0 / 127.5, offset=-1.0, name="low_unit_range")(inp)  # [-1, 1] whatever the backbone's
        low = layers.AveragePooling2D(pool_size=2, name="low_subsample")(unit)
        low = layers.Conv2D(48, 5, strides=2, padding="same", activation="relu", name="low_conv1")(low)
        low = layers.MaxPooling2D(3, strides=2, padding="same", name="low_pool1")(low)
        low = layers.Conv2D(96, 3, padding="same", activation="relu", name="low_conv2")(low)
        low = layers.MaxPooling2D(3, strides=2, padding="same", name="low_pool2")(low)
        low = layers.GlobalAveragePooling2D(name="low_gap")(low)
        features = layers.Concatenate(name="concat")([deep, low])
    out = layers.Dense(cfg.embedding_dim, name="projection", dtype="float32")(features)
    if cfg.l2_normalize:
        out = layers.UnitNormalization(name="l2_normalize", dtype="float32")(out)
    model = keras.Model(inp, out, name=f"showroom_{cfg.backbone}")
    model.showroom_backbone = record  # saved beside the preprocessing by engine.model.embedder.save_embedder
    logger.info(
        "embedder %s: %d params (%d trainable), input %d px, D=%d, low-level branch %s",
        model.name, model.count_params(), sum(int(ops.size(w)) for w in model.trainable_weights),
        cfg.image_size, cfg.embedding_dim, "on" if cfg.low_level_branch else "off",
    )
    return model


def backbone_features_model(embedder: keras.Model) -> keras.Model:
    """The embedder's pooled backbone features (no projection): the ImageNet baseline."""
    return keras.Model(embedder.input, embedder.get_layer("deep_pool").output, name="pooled_backbone")


def imagenet_features(cfg: ModelConfig) -> tuple[keras.Model, dict[str, str]]:
    """The untrained backbone of ``cfg``, pooled: ``float32 (B, S, S, 3)`` RGB 0..255 → ``float32 (B, F)``,
    F the backbone's channels, S = ``cfg.image_size``; and what its weights are (``weights_record``).
    The one place the ImageNet baseline and an ensemble's ImageNet member are built."""
    embedder = build_embedder(cfg)
    return backbone_features_model(embedder), embedder.showroom_backbone


class TripletModel(keras.Model):
    """Training-only wrapper: embeds query, positive and negative with one shared embedder and
    trains it with a weighted sum of a triplet term and, optionally, catalog-wide softmax terms.

    Inputs: dict with ``query``, ``positive``, ``negative`` (``float32 (B, S, S, 3)``) and
    ``label_p``, ``label_n`` (``int32 (B,)`` product labels). Output of ``call``: ``float32 (3, B, D)``.

    Loss = ``triplet_weight`` x ``triplet_loss`` (default ``HingeTripletLoss(margin)``; any
           ``engine.model.losses.TripletLoss``, e.g. ``make_triplet_loss("batch_hard", m)``)
         + ``softmax_weight`` x proxy softmax of all 3B embeddings over one proxy per product
         + ``type_weight`` x proxy softmax over one proxy per product type.
    ``margin``: of the default triplet term (1.0 when unset); ``zero_loss_share`` counts the
    triplets with ``d(q, n) - d(q, p) >= triplet_loss.margin``.
    ``proxies``: float (P, D) initial product proxies (e.g. the untrained embedder's iconic
    embeddings), required when ``softmax_weight`` > 0; ``product_types``: int (P,) type index of
    each product and ``type_proxies`` float (T, D), required when ``type_weight`` > 0. Proxies learn
    ``proxy_lr_scale`` times faster than the embedder (they are stored divided by it).
    ``proxy_margin``: CosFace's margin in both softmax terms (``proxy_softmax_loss``).
    ``one_pass``: embed the 3B images as one batch (shared batch-norm statistics) instead of three
    batches of B (see ``TrainConfig.one_pass``).
    """

    def __init__(self, embedder: keras.Model, *, triplet_loss: TripletLoss | None = None, margin: float | None = None,
                 triplet_weight: float = 1.0, softmax_weight: float = 0.0, temperature: float = 0.05, proxy_margin: float = 0.0,
                 proxies=None,
                 type_weight: float = 0.0, product_types=None, type_proxies=None, proxy_lr_scale: float = 10.0,
                 one_pass: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.embedder = embedder
        if triplet_loss is not None and margin is not None and float(margin) != float(triplet_loss.margin):
            raise ValueError(f"margin {margin} differs from the triplet loss's own margin {triplet_loss.margin}: pass one of them")
        self.triplet_loss = triplet_loss if triplet_loss is not None else HingeTripletLoss(1.0 if margin is None else float(margin))
        self.margin = float(self.triplet_loss.margin)
        self.triplet_weight, self.softmax_weight, self.type_weight = float(triplet_weight), float(softmax_weight), float(type_weight)
        self.temperature = float(temperature)
        self.proxy_margin = float(proxy_margin)
        self.proxy_lr_scale = float(proxy_lr_scale)
        self.one_pass = bool(one_pass)
        self.proxies = self.type_proxies = self.product_types = None
        if self.softmax_weight > 0:
            if proxies is None:
                raise ValueError("softmax_weight > 0 needs initial proxies (one row per product)")
            self.proxies = self._proxy_variable("product_proxies", proxies)
        if self.type_weight > 0:
            if type_proxies is None or product_types is None:
                raise ValueError("type_weight > 0 needs type_proxies and product_types")
            self.type_proxies = self._proxy_variable("type_proxies", type_proxies)
            self.product_types = ops.convert_to_tensor(product_types, dtype="int32")
        self.absolute_accuracy = keras.metrics.Mean(name="absolute_accuracy")
        self.zero_loss_share = keras.metrics.Mean(name="zero_loss_share")
        self.mean_d_pos = keras.metrics.Mean(name="mean_d_pos")
        self.mean_d_neg = keras.metrics.Mean(name="mean_d_neg")
        self.triplet_term = keras.metrics.Mean(name="triplet_loss")
        self.softmax_term = keras.metrics.Mean(name="softmax_loss")
        self.proxy_accuracy = keras.metrics.Mean(name="proxy_accuracy")

    # Keras 3.15's fit under MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow#72388):
    # its symbolic build reduces a batch of per-worker values, and its log reduction takes a mean
    # along axis 0 of scalars; both fail. The build only needs shapes, so it takes this worker's
    # batch; each log becomes shape (1,), whose mean over the workers is the scalar Keras reports.
    # There is no public way around the first: Keras' TensorFlow trainer calls
    # ``strategy.reduce("MEAN", batch)`` on the first batch before it looks whether the model is
    # built, and ``Strategy.reduce`` takes no nested value (our batch is a dict), so building the
    # model from a local batch first fails the same way (measured with 2 workers on loopback).
    # tests/engine/model/test_network.py pins the Keras method this overrides.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _worker_logs(self, logs: dict) -> dict:
        if isinstance(getattr(self, "_distribute_strategy", None), tf.distribute.MultiWorkerMirroredStrategy):
            return {k: ops.reshape(v, (1,)) for k, v in logs.items()}
        return logs

    def train_step(self, data):
        return self._worker_logs(super().train_step(data))

    def test_step(self, data):
        return self._worker_logs(super().test_step(data))

    def _proxy_variable(self, name: str, init):
        init = ops.convert_to_numpy(init).astype("float32") / self.proxy_lr_scale
        return self.add_weight(name=name, shape=init.shape, initializer=keras.initializers.Constant(init), trainable=True)

    def call(self, inputs, training=False):
        if not self.one_pass:
            return ops.stack([self.embedder(inputs[k], training=training) for k in ("query", "positive", "negative")])
        b = ops.shape(inputs["query"])[0]
        both = ops.concatenate([inputs["query"], inputs["positive"], inputs["negative"]], axis=0)
        e = self.embedder(both, training=training)  # one pass over 3B images
        return ops.stack([e[:b], e[b : 2 * b], e[2 * b :]])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The one loss computation shared by ``train_step`` and ``test_step``."""
        q, p, n = y_pred[0], y_pred[1], y_pred[2]
        emb = ops.concatenate([q, p, n], axis=0)
        labels = ops.concatenate([x["label_p"], x["label_p"], x["label_n"]], axis=0)
        triplet = self.triplet_loss(q, p, n, x["label_p"], x["label_n"])
        loss = self.triplet_weight * triplet
        self.triplet_term.update_state(triplet)
        if self.proxies is not None:
            proxies = self.proxies * self.proxy_lr_scale
            softmax = proxy_softmax_loss(emb, labels, proxies, self.temperature, self.proxy_margin)
            loss = loss + self.softmax_weight * softmax
            self.softmax_term.update_state(softmax)
            logits = ops.matmul(q, ops.transpose(proxies))
            self.proxy_accuracy.update_state(ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.cast(x["label_p"], "int64")), "float32"))
        if self.type_proxies is not None:
            type_labels = ops.take(self.product_types, ops.cast(labels, "int32"))
            loss = loss + self.type_weight * proxy_softmax_loss(emb, type_labels, self.type_proxies * self.proxy_lr_scale, self.temperature,
                                                                self.proxy_margin)
        d_pos, d_neg = triplet_distances(q, p, n)
        self.absolute_accuracy.update_state(ops.cast(d_pos < d_neg, "float32"))
        self.zero_loss_share.update_state(ops.cast(self.margin + d_pos - d_neg <= 0.0, "float32"))
        self.mean_d_pos.update_state(d_pos)
        self.mean_d_neg.update_state(d_neg)
        # under tf.distribute Keras sums the replicas' gradients and multiplies the reported loss back,
        # so each replica's loss is divided by their number, as Keras' own losses do
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss
