"""Training data: an image bank decoded in parallel with tf.data, and the augmented triplet pipeline.

The bank holds every distinct image the run needs (query crops and iconic product images) once,
as ``uint8 (N, S, S, 3)``, decoded and cropped in parallel by a ``tf.data`` map. Each epoch's
triplets are index triples into it; the triplet pipeline gathers, augments (albumentations, in
parallel), batches and prefetches, so the model never waits for JPEG decoding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import tensorflow as tf

from engine.data.images import Box, load_image, load_square, query_crop
from training.triplets import Triplets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSpec:
    """One bank image: a query crop (``box`` in the scene, or the whole scene when None) or an iconic image."""

    path: Path
    box: Box | None = None
    is_query: bool = False


def build_bank(specs: Sequence[ImageSpec], size: int, padding: float) -> np.ndarray:
    """Decode, crop and resize every spec in parallel → ``uint8 (N, size, size, 3)``."""
    if not specs:
        return np.zeros((0, size, size, 3), np.uint8)

    def load(i: np.int64) -> np.ndarray:
        spec = specs[int(i)]
        if spec.is_query:
            return query_crop(load_image(spec.path), spec.box, size, padding)
        return load_square(spec.path, size, fill=255)

    ds = tf.data.Dataset.range(len(specs)).map(
        lambda i: tf.ensure_shape(tf.numpy_function(load, [i], tf.uint8, stateful=False), (size, size, 3)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    bank = np.empty((len(specs), size, size, 3), np.uint8)
    pos = 0
    for batch in ds.batch(64).prefetch(2).as_numpy_iterator():
        bank[pos : pos + len(batch)] = batch
        pos += len(batch)
    logger.info("image bank: %d images at %dpx (%.0f MB)", len(specs), size, bank.nbytes / 1e6)
    return bank


def query_augmenter(size: int, seed: int) -> A.Compose:
    """Strong augmentation for query crops: flips, rotation, crop/pad, blur, colour, noise, dropout."""
    return A.Compose(
        [
            A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.8, 1.25), p=1.0),
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.85, 1.1), rotate=(-12, 12), translate_percent=(-0.05, 0.05), border_mode=cv2.BORDER_CONSTANT, fill=255, p=0.6),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.3),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.5),
            A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
            A.PixelDropout(dropout_prob=0.01, p=0.2),
        ],
        seed=seed,
    )


def iconic_augmenter(size: int, seed: int) -> A.Compose:
    """Light augmentation for iconic product images: flip, small scale/shift on white, brightness."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.85, 1.05), translate_percent=(-0.04, 0.04), border_mode=cv2.BORDER_CONSTANT, fill=255, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
        ],
        seed=seed,
    )


def triplet_dataset(
    bank: np.ndarray, epochs: Sequence[Triplets], *, batch_size: int, augment: bool, seed: int
) -> tf.data.Dataset:
    """Batches of ``{"query", "positive", "negative": float32 (B, S, S, 3), "label_p", "label_n": int32 (B,)}``.

    ``epochs`` holds one ``Triplets`` per epoch, all of the same length T; the stream is their
    concatenation, batched within each epoch (no batch straddles two epochs), so
    ``fit(steps_per_epoch=ceil(T / batch_size))`` sees each epoch's fresh triplets in turn.
    Gathering and augmentation run as one numpy call per batch, several batches in parallel.
    """
    if not epochs:
        raise ValueError("no epochs of triplets")
    if len({len(t) for t in epochs}) != 1:
        raise ValueError("every epoch must have the same number of triplets")
    size = bank.shape[1]
    local = threading.local()  # albumentations pipelines are not shared between tf.data threads

    def load(step: np.ndarray, q: np.ndarray, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qs, ps, ns = bank[q], bank[p], bank[n]  # fancy indexing copies
        if augment:
            if not hasattr(local, "q_aug"):  # built once per thread
                local.q_aug, local.i_aug = query_augmenter(size, seed), iconic_augmenter(size, seed + 1)
            q_aug, i_aug = local.q_aug, local.i_aug
            # seeded by the batch's own number, so a batch is augmented the same whichever thread takes it
            q_aug.set_random_seed(seed + 2 * int(step))
            i_aug.set_random_seed(seed + 2 * int(step) + 1)
            for i in range(len(q)):
                qs[i] = q_aug(image=qs[i])["image"]
                ps[i] = i_aug(image=ps[i])["image"]
                ns[i] = i_aug(image=ns[i])["image"]
        return qs, ps, ns

    def to_inputs(step, batch):
        q, p, n, lp, ln = batch
        qs, ps, ns = tf.numpy_function(load, [step, q, p, n], [tf.uint8] * 3, stateful=False)
        shape = (None, size, size, 3)
        return {
            "query": tf.cast(tf.ensure_shape(qs, shape), tf.float32),
            "positive": tf.cast(tf.ensure_shape(ps, shape), tf.float32),
            "negative": tf.cast(tf.ensure_shape(ns, shape), tf.float32),
            "label_p": lp,
            "label_n": ln,
        }

    cols = [np.stack([getattr(t, f) for t in epochs]) for f in ("query", "positive", "negative", "label_p", "label_n")]
    ds = tf.data.Dataset.from_tensor_slices(tuple(cols))  # one element per epoch
    ds = ds.flat_map(lambda *c: tf.data.Dataset.from_tensor_slices(c).batch(batch_size))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(epochs) * steps_per_epoch(epochs[0], batch_size)))
    ds = ds.enumerate().map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(triplets: Triplets, batch_size: int) -> int:
    """Batches in one epoch of ``triplet_dataset``."""
    return -(-len(triplets) // batch_size)


def triplet_sheet(bank: np.ndarray, triplets: Triplets, names: Sequence[str], rows: int = 8, seed: int = 0) -> np.ndarray:
    """A contact sheet of sample triplets: each row query | positive | negative, ``uint8 (H, W, 3)``."""
    size = bank.shape[1]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(triplets), size=min(rows, len(triplets)), replace=False) if len(triplets) else []
    label_h = 18
    sheet = np.full((max(1, len(pick)) * (size + label_h), 3 * size, 3), 255, np.uint8)
    for r, t in enumerate(pick):
        y = r * (size + label_h)
        for c, (idx, text) in enumerate(
            (
                (triplets.query[t], "query " + names[triplets.label_p[t]]),
                (triplets.positive[t], "positive"),
                (triplets.negative[t], ("in-class " if triplets.in_class[t] else "other ") + names[triplets.label_n[t]]),
            )
        ):
            sheet[y + label_h : y + label_h + size, c * size : (c + 1) * size] = bank[idx]
            cv2.putText(sheet, text[:28], (c * size + 3, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet
