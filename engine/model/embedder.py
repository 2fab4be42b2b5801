"""Embedding images: the ``Embedder`` (a model plus the preprocessing its inputs need), batched
embedding, the ImageNet-features baseline, and saving / loading a trained embedder.

A trained embedder is saved as one ``.keras`` file that also carries its ``Preprocessing`` (a
``showroom.json`` member of the Keras zip), so indexing, serving, mining and evaluation cut crops
exactly as training did. The file's sha256 is the model fingerprint that ties indexes to it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import keras
import numpy as np

from engine.config import ModelConfig, Preprocessing, from_dict
from engine.files import atomic_file, file_sha256
from engine.model.network import imagenet_features
from engine.model.trunk import share_trunk

logger = logging.getLogger(__name__)

Embed = Callable[[np.ndarray], np.ndarray]  # uint8 (N, S, S, 3) -> float32 (N, D)
PREPROCESSING_MEMBER = "showroom.json"
T = TypeVar("T")


class ModelError(ValueError):
    """A saved model that cannot be found or loaded."""


def input_size(model: keras.Model) -> int:
    """Square side S the model expects (its input is ``(B, S, S, 3)``)."""
    return int(model.input_shape[1])


def embed_batches(embed: Embed, images: Iterable[np.ndarray], dim: int, batch_size: int = 64) -> np.ndarray:
    """Embed an array or a stream of ``uint8 (S, S, 3)`` images, ``batch_size`` at a time → ``float32 (N, dim)``.

    A stream (e.g. a generator that decodes files) is never held in memory whole.
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, S, S, 3), got {images.shape}")
        parts = [np.asarray(embed(images[i : i + batch_size]), np.float32) for i in range(0, len(images), batch_size)]
    else:
        parts, buf = [], []
        for image in images:
            buf.append(image)
            if len(buf) == batch_size:
                parts.append(np.asarray(embed(np.stack(buf)), np.float32))
                buf = []
        if buf:
            parts.append(np.asarray(embed(np.stack(buf)), np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def read_ahead(items: Iterable[T], depth: int = 128) -> Iterator[T]:
    """``items`` in order, produced on one background thread up to ``depth`` ahead of the consumer.

    For a stream of decoded images feeding the model: OpenCV decodes and resizes without the GIL,
    so decoding fills the gaps the model's own threads leave (``python -m benchmarks.pipeline``).
    An exception in the producer is raised in the consumer at the item it stopped at; a consumer
    that stops early (or raises) stops the producer.
    """
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(entry: tuple[object, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((done, exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = slots.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def embed_images(model: keras.Model, images: Iterable[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Embed ``uint8 (N, S, S, 3)`` RGB images (an array or a stream) with a Keras model → ``float32 (N, D)``."""

    def run(batch: np.ndarray) -> np.ndarray:
        # predict_on_batch runs a compiled (graph) function, made once per model: ~10x less
        # per-call overhead than an eager model(batch) for the single-crop queries of serving.
        return np.asarray(model.predict_on_batch(batch.astype(np.float32)))

    return embed_batches(run, images, int(model.output_shape[-1]), batch_size)


@dataclass(frozen=True)
class Embedder:
    """A Keras model from images to embeddings, with the preprocessing its inputs need.

    model: ``float32 (B, S, S, 3)`` RGB 0..255 → ``float32 (B, D)``.
    fingerprint: sha256 of the saved ``.keras`` file ('' for a model that was never saved).
    normalize: L2-normalise the outputs (the ImageNet baseline's pooled features are not).
    """

    model: keras.Model
    preprocessing: Preprocessing
    fingerprint: str = ""
    normalize: bool = False
    name: str = ""

    @property
    def dim(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def size(self) -> int:
        return self.preprocessing.image_size

    def __call__(self, images: Iterable[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """``uint8 (N, S, S, 3)`` (array or stream) → ``float32 (N, D)``."""
        out = embed_images(self.model, images, batch_size)
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    @classmethod
    def load(cls, path: str | Path, shared_trunk: bool = True) -> Embedder:
        """A saved embedder with its preprocessing and fingerprint. An ensemble whose members hold
        the same leading backbone layers runs them once (``engine.model.trunk``; the same
        embeddings) unless ``shared_trunk`` is False (the members as saved, e.g. to read them)."""
        path = Path(path)
        model = load_embedder(path)
        prep = load_preprocessing(path, model)
        if shared_trunk and (shared := share_trunk(model)) is not None:
            model = shared[0]
        return cls(model, prep, model_fingerprint(path), name=path.stem)

    @classmethod
    def imagenet(cls, cfg: ModelConfig, preprocessing: Preprocessing | None = None) -> Embedder:
        """The baseline: the backbone's global-average-pooled ImageNet features, L2-normalised, no training."""
        prep = preprocessing or Preprocessing(image_size=cfg.image_size)
        if prep.image_size != cfg.image_size:
            raise ValueError(f"preprocessing image_size {prep.image_size} differs from the model's {cfg.image_size}")
        model, _ = imagenet_features(cfg)
        return cls(model, prep, normalize=True, name=f"imagenet-{cfg.backbone}-{cfg.image_size}px")


def model_fingerprint(path: str | Path) -> str:
    """sha256 of a saved ``.keras`` model file: ties an index to the model that built it."""
    return file_sha256(Path(path))


def save_embedder(model: keras.Model, path: str | Path, preprocessing: Preprocessing, records: Mapping[str, object] | None = None) -> Path:
    """Save ``model`` as ``.keras`` with ``preprocessing`` inside it (and, for a model from
    ``build_embedder``, what its backbone started from: ``backbone_record``), atomically; returns ``path``.
    records: further JSON entries saved beside it (an ensemble's members), read back with ``saved_record``."""
    if preprocessing.image_size != input_size(model):
        raise ValueError(f"preprocessing image_size {preprocessing.image_size} differs from the model's input {input_size(model)}")
    path = Path(path)
    with atomic_file(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            record = {**(records or {}), "preprocessing": asdict(preprocessing)}
            if getattr(model, "showroom_backbone", None):
                record["backbone"] = model.showroom_backbone
            zf.writestr(PREPROCESSING_MEMBER, json.dumps(record, indent=1))
    return path


def load_embedder(path: str | Path) -> keras.Model:
    """Load the Keras model of a ``.keras`` embedder file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found; pass a .keras file written by training.fit")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is damaged: not a complete .keras archive (truncated or overwritten?); "
                         "copy or build it again")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path} is not a loadable Keras embedder: {exc}") from None


def saved_record(path: str | Path, key: str) -> object | None:
    """The entry ``key`` of what a saved embedder records beside its weights, or None when absent."""
    try:
        with zipfile.ZipFile(path) as zf:
            if PREPROCESSING_MEMBER in zf.namelist():
                return json.loads(zf.read(PREPROCESSING_MEMBER)).get(key)
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read its records ({exc})") from None
    return None


def backbone_record(path: str | Path) -> dict[str, str] | None:
    """What a saved embedder's backbone started from (``engine.model.network.weights_record``: name,
    weights source and sha256), or None for a file saved before it was recorded."""
    return saved_record(path, "backbone")


def load_preprocessing(path: str | Path, model: keras.Model | None = None) -> Preprocessing:
    """The preprocessing saved in a ``.keras`` embedder; for a file saved without one (older
    runs), the defaults at the model's input size."""
    try:
        with zipfile.ZipFile(path) as zf:
            if PREPROCESSING_MEMBER in zf.namelist():
                record = json.loads(zf.read(PREPROCESSING_MEMBER))["preprocessing"]
                record.setdefault("catalog_decode", "full")  # saved before reduced decoding: trained on full decodes
                return from_dict(Preprocessing, record)
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read its preprocessing ({exc})") from None
    model = model if model is not None else load_embedder(path)
    logger.warning("%s carries no preprocessing record (saved before it existed): using the defaults at %d px", path, input_size(model))
    return Preprocessing(image_size=input_size(model), catalog_decode="full")
