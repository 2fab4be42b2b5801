"""The image bank and the triplet pipeline: shapes, dtypes, per-epoch order, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data.catalog import load_catalog
from engine.config import TrainConfig
from engine.data.images import load_image, query_crop
from training.input_pipeline import triplet_dataset, triplet_sheet, steps_per_epoch
from training.query_sources import queries_from_pairs
from training.training_set import build_training_set, split_queries


def test_split_is_by_scene_and_seeded(tiny_catalog: Path):
    cat = load_catalog(tiny_catalog)
    a = split_queries(queries_from_pairs(cat), 0.25, seed=1)
    assert set(a.train).isdisjoint(a.val) and len(a.val) == 4
    assert set(a.train) | set(a.val) == {p.scene for p in cat.pairs}
    assert split_queries(queries_from_pairs(cat), 0.25, seed=1) == a
    assert split_queries(queries_from_pairs(cat), 0.25, seed=2) != a


def test_training_set_and_pipeline(tiny_catalog: Path):
    cat = load_catalog(tiny_catalog)
    ts = build_training_set(cat, TrainConfig(in_class_negatives=2, out_class_negatives=1, val_fraction=0.25), 48)
    assert ts.bank.shape[1:] == (48, 48, 3) and ts.bank.dtype == np.uint8
    assert len(ts.train_queries) + len(ts.val_queries) == len(cat.pairs)
    val_scenes = set(ts.split.val)
    assert len(ts.val_queries) == sum(p.scene in val_scenes for p in cat.pairs) > 0
    e0, e1 = ts.train_sampler.sample(0), ts.train_sampler.sample(1)
    assert len(e0) == len(e1) == 3 * len(ts.train_queries)
    ds = triplet_dataset(ts.bank, [e0, e1], batch_size=8, augment=False, seed=0)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2 * steps_per_epoch(e0, 8)
    first = batches[0]
    assert first["query"].shape == (8, 48, 48, 3) and first["query"].dtype == np.float32
    np.testing.assert_array_equal(first["query"][0], ts.bank[e0.query[0]].astype(np.float32))
    np.testing.assert_array_equal(first["label_n"], e0.label_n[:8])
    # The second epoch starts on a fresh batch (no batch straddles two epochs).
    second = batches[steps_per_epoch(e0, 8)]
    np.testing.assert_array_equal(second["label_p"], e1.label_p[:8])


def test_no_validation_scene_reaches_a_training_triplet(tiny_catalog: Path):
    """Each pair's query crop, cut here from its scene photo, is found by its pixels among the training
    triplets' queries exactly when its scene is a training scene, and among the validation queries
    exactly when it is a validation scene."""
    cat = load_catalog(tiny_catalog)
    cfg = TrainConfig(in_class_negatives=2, out_class_negatives=1, val_fraction=0.25)
    ts = build_training_set(cat, cfg, 48)
    val_scenes = set(ts.split.val)
    assert val_scenes and val_scenes.isdisjoint(ts.split.train)
    trained = ts.bank[np.unique(np.concatenate([ts.train_sampler.sample(epoch).query for epoch in range(2)]))]
    validated = ts.bank[[i for i, _ in ts.val_queries]]
    photos = {s.scene: load_image(s.image) for s in cat.scenes}

    def among(crop: np.ndarray, images: np.ndarray) -> bool:
        return bool((images == crop).all(axis=(1, 2, 3)).any())

    for pair in cat.pairs:
        crop = query_crop(photos[pair.scene], pair.box, 48, cfg.crop_padding)
        held = pair.scene in val_scenes
        side = "validation" if held else "training"
        assert among(crop, trained) is not held, f"a pair of {side} scene {pair.scene}: wrongly {'in' if held else 'not in'} the training triplets"
        assert among(crop, validated) is held, f"a pair of {side} scene {pair.scene}: wrongly {'not in' if held else 'in'} the validation queries"


def test_augmentation_changes_pixels_not_shapes(tiny_catalog: Path):
    cat = load_catalog(tiny_catalog)
    ts = build_training_set(cat, TrainConfig(in_class_negatives=1, out_class_negatives=1), 48)
    trip = ts.train_sampler.sample(0)
    plain = next(triplet_dataset(ts.bank, [trip], batch_size=16, augment=False, seed=0).as_numpy_iterator())
    aug = next(triplet_dataset(ts.bank, [trip], batch_size=16, augment=True, seed=0).as_numpy_iterator())
    assert aug["query"].shape == plain["query"].shape
    assert np.abs(aug["query"] - plain["query"]).mean() > 1.0
    sheet = triplet_sheet(ts.bank, trip, ts.product_ids, rows=4)
    assert sheet.shape == (4 * (48 + 18), 3 * 48, 3)


def test_augmentation_is_seeded_by_the_batch_whatever_thread_takes_it(tiny_catalog: Path):
    """Each batch is augmented by its own number: the stream repeats exactly, batch after batch,
    however tf.data's parallel calls happen to be scheduled (they race for threads)."""
    cat = load_catalog(tiny_catalog)
    ts = build_training_set(cat, TrainConfig(in_class_negatives=1, out_class_negatives=1), 48)
    epochs = [ts.train_sampler.sample(0), ts.train_sampler.sample(1)]

    def stream(seed: int) -> list[np.ndarray]:
        return [b["query"] for b in triplet_dataset(ts.bank, epochs, batch_size=4, augment=True, seed=seed).as_numpy_iterator()]

    first, again, other = stream(3), stream(3), stream(4)
    assert len(first) == len(again) > 4
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
