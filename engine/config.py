"""Frozen, validated configuration dataclasses shared by training, serving and evaluation."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

BACKBONES = ("mobilenet_v2", "xception", "inception_resnet_v2")  # by name; any keras.applications class name works too
KERAS_APPLICATION = re.compile(r"[A-Z][A-Za-z0-9]+")  # e.g. EfficientNetV2S, ConvNeXtTiny, ResNet50
RESIZE_RULES = ("pad_square",)
CATALOG_DECODES = ("reduced", "full")

# The one place these defaults are stated; every CLI and library function takes them from here.
DEFAULT_CROP_PADDING = 0.0625  # around a query box, per side, x its longer side (Bell & Bala: 16 px per 256)
DEFAULT_MIN_CONFIDENCE = 0.25  # detector score a proposed crop needs (also the YOLO wrapper's own floor)
# A class the category map uses with no box at DEFAULT_MIN_CONFIDENCE in a scene gets its best box down
# to this score (chosen on the development scenes: right-class coverage 0.72 -> 0.88, +2.2 crops a scene).
DEFAULT_FILL_CONFIDENCE = 0.05
LOSSES = ("hinge", "batch_hard", "semi_hard")
DISTRIBUTE = ("auto", "none", "mirrored", "multi_worker")


@dataclass(frozen=True)
class ImageLimits:
    """What an untrusted image may declare in its header before any pixel is decoded.

    max_pixels: width x height above this is refused (a decompression bomb declares 30000 x 30000
        in a few KB); 24 MP covers a phone's photos (12 MP by default, 24 MP at most on most), and
        bounds what one upload may cost in memory to decode (``engine.data.images.decode_cost``).
    min_side: a shorter side below this holds no product to find.
    max_aspect: longer side / shorter side above this is a strip, not a photo.
    """

    max_pixels: int = 24_000_000
    min_side: int = 32
    max_aspect: float = 10.0

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.min_side < 1 or self.max_aspect < 1:
            raise ValueError(f"image limits must be positive (aspect >= 1), got {self}")


@dataclass(frozen=True)
class ModelConfig:
    """How the embedder is built.

    backbone: the pooled ImageNet CNN: one of ``BACKBONES``, or the name of any ``keras.applications``
        class (``EfficientNetV2S``, ``ConvNeXtTiny``, ``ResNet50`` …; its input convention is
        applied, see ``engine.model.network.input_convention``).
    weights: ``"imagenet"`` (Keras download, or the ``$SHOWROOM_WEIGHTS_DIR`` mirror, see
        ``engine.model.network.resolve_weights``),
        ``"none"`` (random init) or a path to a ``.weights.h5``/``.h5`` file for the backbone.
    image_size: side of the square RGB input, pixels.
    alpha: width multiplier, used by ``mobilenet_v2`` only.
    embedding_dim: D, size of the output embedding.
    low_level_branch: add the shallow conv branch on a downsampled copy of the input.
    l2_normalize: L2-normalise the embedding (unit vectors).
    train_backbone: ``"all"``, ``"none"`` or a positive number N as a string: the last N
        backbone layers are trainable.
    """

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    image_size: int = 128
    alpha: float = 0.35
    embedding_dim: int = 256
    low_level_branch: bool = True
    l2_normalize: bool = True
    train_backbone: str = "all"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES and not KERAS_APPLICATION.fullmatch(self.backbone):
            raise ValueError(f"backbone must be one of {BACKBONES} or a keras.applications class name (e.g. EfficientNetV2S), "
                             f"got {self.backbone!r}")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [32, 1024] pixels, got {self.image_size}")
        if self.backbone == "xception" and self.image_size < 71:
            raise ValueError("xception needs image_size >= 71")
        if self.backbone == "inception_resnet_v2" and self.image_size < 75:
            raise ValueError("inception_resnet_v2 needs image_size >= 75")
        if self.embedding_dim < 2:
            raise ValueError(f"embedding_dim must be >= 2, got {self.embedding_dim}")
        if self.alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
            raise ValueError(f"alpha must be one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4, got {self.alpha}")
        self.trainable_backbone_layers()  # validates train_backbone

    def trainable_backbone_layers(self) -> int | None:
        """Number of trailing backbone layers to train: None = all, 0 = none."""
        value = str(self.train_backbone).strip().lower()
        if value == "all":
            return None
        if value == "none":
            return 0
        try:
            n = int(value)
        except ValueError:
            raise ValueError(
                f"train_backbone must be 'all', 'none' or a positive integer, got {self.train_backbone!r}"
            ) from None
        if n <= 0:
            raise ValueError(f"train_backbone as a number must be positive, got {n}")
        return n


@dataclass(frozen=True)
class TrainConfig:
    """How a training run samples triplets and optimises.

    loss: ``hinge`` (per-triplet margin hinge), ``batch_hard`` or ``semi_hard`` (in-batch mining).
    in_class_negatives / out_class_negatives: negatives sampled per positive pair each epoch,
        from the positive's category / from other categories.
    crop_padding: padding added around a query box on each side, as a fraction of the box's
        longer side (Bell & Bala: 16 px per 256 = 0.0625).
    val_fraction: share of scenes held out for validation (split by scene).
    max_triplets_per_epoch: cap on the triplets of one epoch (0 = no cap), sampled with the seed.
    triplet_weight, softmax_weight, type_softmax_weight: the loss is their weighted sum of the
        triplet loss (``loss``), the proxy softmax over every catalog product and the proxy softmax
        over product types (``engine.model.network.TripletModel``); temperature: of both softmaxes;
        proxy_margin: CosFace's additive margin on the own class's cosine in both (0 = none).
    mix: shares of each epoch's queries by source, ``"real=1,synthetic=1,lifestyle=0.25"``
        (real room-photo crops, synthetic views, product photos not on white); "" = every query
        once per epoch. Checked here for its shape; the source names are training's
        (``training.query_sources.SOURCE_NAMES``), checked there. queries_per_epoch: how many
        (0 = the number of training queries); a source with fewer queries than its share repeats them.
    batch_products: P > 0 makes class-balanced batches: P products x (batch_size / P) triplets
        each, so in-batch losses have positives to mine; 0 = shuffled.
    one_pass: embed query, positive and negative as one batch of 3B images, so batch norm
        normalises all three with the same statistics (as inference does); False = three batches of
        B, each normalised by its own statistics while training (room crops apart from product
        photos). Matters only where batch-norm layers train.
    """

    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-4
    margin: float = 1.0
    loss: str = "hinge"
    in_class_negatives: int = 10
    out_class_negatives: int = 2
    crop_padding: float = DEFAULT_CROP_PADDING
    val_fraction: float = 0.2
    max_triplets_per_epoch: int = 0
    augment: bool = True
    triplet_weight: float = 1.0
    softmax_weight: float = 0.0
    type_softmax_weight: float = 0.0
    temperature: float = 0.05
    proxy_margin: float = 0.0
    mix: str = ""
    queries_per_epoch: int = 0
    batch_products: int = 0
    one_pass: bool = False
    seed: int = 1234
    mixed_precision: bool = False
    distribute: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.margin <= 0:
            raise ValueError(f"margin must be > 0, got {self.margin}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.in_class_negatives < 0 or self.out_class_negatives < 0:
            raise ValueError("negative counts must be >= 0")
        if self.in_class_negatives + self.out_class_negatives == 0:
            raise ValueError("at least one negative per positive is needed")
        if not 0 <= self.crop_padding <= 1:
            raise ValueError(f"crop_padding must be in [0, 1], got {self.crop_padding}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_triplets_per_epoch < 0:
            raise ValueError("max_triplets_per_epoch must be >= 0")
        if self.distribute not in DISTRIBUTE:
            raise ValueError(f"distribute must be one of {DISTRIBUTE}, got {self.distribute!r}")
        if min(self.triplet_weight, self.softmax_weight, self.type_softmax_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.triplet_weight + self.softmax_weight + self.type_softmax_weight == 0:
            raise ValueError("at least one loss weight must be > 0")
        if not 0 < self.temperature <= 10:
            raise ValueError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0 <= self.proxy_margin < 1:
            raise ValueError(f"proxy_margin must be in [0, 1), got {self.proxy_margin}")
        if self.queries_per_epoch < 0:
            raise ValueError(f"queries_per_epoch must be >= 0, got {self.queries_per_epoch}")
        if self.batch_products < 0 or (self.batch_products and self.batch_size % self.batch_products):
            raise ValueError(f"batch_products must be 0 or divide batch_size {self.batch_size}, got {self.batch_products}")
        self.mix_weights()  # validates mix

    def mix_weights(self) -> dict[str, float] | None:
        """``mix`` as {source name: weight}, or None when empty."""
        if not self.mix.strip():
            return None
        out = {}
        for part in self.mix.split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or not name.isidentifier():
                raise ValueError(f"mix must look like 'real=1,synthetic=1,lifestyle=0.25' (source=weight, comma-separated), got {self.mix!r}")
            try:
                out[name] = float(value)
            except ValueError:
                raise ValueError(f"mix weight of {name!r} must be a number, got {value!r}") from None
            if out[name] < 0:
                raise ValueError(f"mix weight of {name!r} must be >= 0, got {out[name]}")
        if not sum(out.values()):
            raise ValueError(f"mix {self.mix!r} gives every source weight 0")
        return out


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a model input; saved with every model and index, read by every consumer.

    image_size: side S of the square model input, pixels.
    crop_padding: a query box grows by this share of its longer side on every side, then is
        squared and clipped to the photo (``engine.data.images.pad_box``).
    resize: ``pad_square``: keep the aspect ratio, fit the longer side to S, pad with white.
    min_confidence: detector score a proposed scene crop needs (indexing, evaluation, mining and
        the search service's detections).
    fill_confidence: a class of interest with no box at ``min_confidence`` in a photo gets its
        single best box down to this score (0 = off; ``engine.data.proposals.confident``).
    catalog_decode: how a catalog (iconic) photo is read (``engine.data.images.load_square``):
        ``reduced`` lets the JPEG decoder scale a large photo down by 2-8 first (4x faster);
        ``full`` decodes every pixel, as models saved before this field existed were trained.
    """

    image_size: int = 128
    crop_padding: float = DEFAULT_CROP_PADDING
    resize: str = "pad_square"
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    fill_confidence: float = DEFAULT_FILL_CONFIDENCE
    catalog_decode: str = "reduced"

    @property
    def detector_confidence(self) -> float:
        """The lowest score the detector must report for these proposals."""
        return detector_floor(self.min_confidence, self.fill_confidence)

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [32, 1024] pixels, got {self.image_size}")
        if not 0 <= self.crop_padding <= 1:
            raise ValueError(f"crop_padding must be in [0, 1], got {self.crop_padding}")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {RESIZE_RULES}, got {self.resize!r}")
        if self.catalog_decode not in CATALOG_DECODES:
            raise ValueError(f"catalog_decode must be one of {CATALOG_DECODES}, got {self.catalog_decode!r}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0 <= self.fill_confidence <= 1:
            raise ValueError(f"fill_confidence must be in [0, 1], got {self.fill_confidence}")


def detector_floor(min_confidence: float, fill_confidence: float) -> float:
    """The lowest detector score proposals at ``min_confidence`` with fill-in down to ``fill_confidence`` use."""
    return min(min_confidence, fill_confidence) if fill_confidence > 0 else min_confidence


def flatten(prefix: str, config: Any) -> dict[str, Any]:
    """Flatten a config dataclass into ``{prefix.field: value}`` for logging as params."""
    return {f"{prefix}.{k}": v for k, v in asdict(config).items()}


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from a dict, ignoring unknown keys (forward compatibility)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
