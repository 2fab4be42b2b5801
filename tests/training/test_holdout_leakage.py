"""A hold-out scene reaches nothing a model learns or is tuned from: not mining, not the synthetic
views (the proxies' training views), not the training or validation queries, not the development
folds where settings are chosen. Each stage is fed input that would leak if it did not filter."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from detectors.category_map import DEFAULT_MAP, load_category_map
from engine.config import ModelConfig, TrainConfig
from engine.data.catalog import CatalogError, load_catalog
from engine.data.detection import Detection
from engine.data.splits import dev_folds, read_product_list, restrict_products, write_scene_list
from evaluation import holdout as holdout_cli
from training import trainer
from training.manifest import Manifest, Positive, save_manifest
from training.mining import MiningConfig, mine_catalog
from training.run_plan import DataConfig, new_plan
from training.synthesis import SyntheticManifest, SyntheticView, save_synthetic_manifest


class NoDetector:
    """The tiny catalog's pairs carry boxes: mining needs no detection."""

    class_names = tuple(load_category_map(DEFAULT_MAP).classes)
    fingerprint = "none:1"

    def detect(self, image) -> list[Detection]:
        return []


def test_a_held_out_scene_reaches_no_training_input_and_no_fold(tiny_catalog: Path, tmp_path: Path, monkeypatch):
    catalog = load_catalog(tiny_catalog)
    with_pairs = sorted({p.scene for p in catalog.pairs})
    held = set(with_pairs[:3])
    held_file = write_scene_list(held, tmp_path / "holdout.txt")

    # mining: no positive from a held-out scene, and the manifest says which scenes it kept out
    mined, _ = mine_catalog(catalog, NoDetector(), load_category_map(DEFAULT_MAP), MiningConfig(), embedder=None, cache_dir=None,
                            holdout=sorted(held))
    assert mined.positives and not {p.scene for p in mined.positives} & held
    assert set(mined.producer["holdout_scenes"]) == held

    # inputs made carelessly, without the hold-out: positives of every pair, views pasted into every scene
    scenes = {s.scene: s for s in catalog.scenes}
    leaky = [Positive(p.product_id, catalog.types[p.product_id], p.scene, str(scenes[p.scene].image), p.box, "catalog_box")
             for p in catalog.pairs]
    save_manifest(Manifest(str(catalog.root), catalog.fingerprint, leaky), tmp_path / "leaky.json")
    views = [SyntheticView(p.product_id, p.type, bg, str(p.image), (1, 1, 20, 20), seed=i)
             for i, (p, bg) in enumerate(zip(catalog.products, itertools.cycle(with_pairs)))]
    assert {v.background for v in views} & held
    save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, views), tmp_path / "leaky-synthetic.json")

    # the run's queries (train and validation; real, lifestyle and synthetic) as the trainer builds them
    seen: list = []
    real_build = trainer.build_training_set

    def spy(train_catalog, cfg, image_size, queries):
        seen.extend(queries)
        assert not {s.scene for s in train_catalog.scenes} & held
        return real_build(train_catalog, cfg, image_size, queries)

    monkeypatch.setattr(trainer, "build_training_set", spy)
    plan = new_plan(ModelConfig(weights="none", image_size=32, embedding_dim=8), TrainConfig(epochs=1, batch_size=4),
                    DataConfig(catalog=tiny_catalog, triplets=tmp_path / "leaky.json", synthetic=tmp_path / "leaky-synthetic.json",
                               holdout_scenes=held_file), tmp_path / "home")
    ts = trainer.training_set(plan)
    assert {q.source for q in seen} == {"real", "synthetic"}
    assert not {q.scene for q in seen} & held and not {q.background for q in seen} & held
    assert not (set(ts.split.train) | set(ts.split.val)) & held  # neither trained nor validated on

    # development folds: every other scene with pairs in exactly one fold, no hold-out scene in any
    folds = dev_folds(catalog, 3, seed=0, exclude=held)
    dealt = list(itertools.chain(*folds))
    assert sorted(dealt) == sorted(set(with_pairs) - held) and len(dealt) == len(set(dealt))
    assert dev_folds(catalog, 3, seed=0, exclude=held) == folds and dev_folds(catalog, 3, seed=1, exclude=held) != folds

    # the CLI writes them, and each fold's training exclusion holds the hold-out too
    assert holdout_cli.main(["--catalog", str(tiny_catalog), "--folds", "3", "--exclude", str(held_file), "--out", str(tmp_path / "f")]) == 0
    for i, fold in enumerate(folds):
        listed = {line for line in (tmp_path / "f" / f"fold{i}.txt").read_text().splitlines() if not line.startswith("#")}
        excluded = {line for line in (tmp_path / "f" / f"fold{i}-exclude.txt").read_text().splitlines() if not line.startswith("#")}
        assert listed == set(fold) and excluded == held | set(fold)
    with pytest.raises(ValueError, match="at least 2"):
        dev_folds(catalog, 1, seed=0)


def test_a_new_product_reaches_no_proxy_image_query_negative_or_view(tiny_catalog: Path, tmp_path: Path):
    """The new-products protocol: a product on the list does not exist for training, though the
    inputs name it everywhere (its positives, as others' negatives, its synthetic views)."""
    catalog = load_catalog(tiny_catalog)
    assert holdout_cli.main(["--catalog", str(tiny_catalog), "--new-products", "0.2", "--seed", "0", "--out", str(tmp_path / "new.txt")]) == 0
    new = set(read_product_list(tmp_path / "new.txt"))
    assert len(new) == round(0.2 * len(catalog.types)) and new < set(catalog.types)
    scenes = {s.scene: s for s in catalog.scenes}
    every = sorted(catalog.types)
    leaky = [Positive(p.product_id, catalog.types[p.product_id], p.scene, str(scenes[p.scene].image), p.box, "catalog_box",
                      negatives=tuple(every)) for p in catalog.pairs]
    assert {p.product_id for p in leaky} & new
    save_manifest(Manifest(str(catalog.root), catalog.fingerprint, leaky), tmp_path / "leaky.json")
    with_pairs = sorted({p.scene for p in catalog.pairs})
    views = [SyntheticView(p.product_id, p.type, bg, str(p.image), (1, 1, 20, 20), seed=i)
             for i, (p, bg) in enumerate(zip(catalog.products, itertools.cycle(with_pairs)))]
    save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, views), tmp_path / "leaky-synthetic.json")

    plan = new_plan(ModelConfig(weights="none", image_size=32, embedding_dim=8), TrainConfig(epochs=1, batch_size=4),
                    DataConfig(catalog=tiny_catalog, triplets=tmp_path / "leaky.json", synthetic=tmp_path / "leaky-synthetic.json",
                               holdout_products=tmp_path / "new.txt"), tmp_path / "home")
    assert plan.held_products == new and plan.state("r")["holdout_products"] == sorted(new)
    ts = trainer.training_set(plan)
    assert not set(ts.product_ids) & new and not set(ts.types) & new  # no proxy (one per product id), no class
    assert not set(ts.product_bank) & new
    assert len({i for rows in ts.product_bank.values() for i in rows}) == sum(p.product_id not in new for p in catalog.products)
    assert not {p for _, p in ts.train_queries + ts.val_queries} & new  # neither trained nor validated on
    assert any(ts.train_sampler.candidates) and not {n for negs in ts.train_sampler.candidates for n in negs} & new
    triplets = ts.train_sampler.sample(0)
    assert len(triplets) and not {ts.product_ids[i] for i in triplets.label_n} & new

    # a manifest refreshed with --holdout-products carries them: a later run holds them out without the flag
    refreshed = Manifest(str(catalog.root), catalog.fingerprint, [p for p in leaky if p.product_id not in new],
                         producer={"tool": "training.mine_hard_negatives", "holdout_products": sorted(new), "parent": {}})
    save_manifest(refreshed, tmp_path / "refreshed.json")
    later = new_plan(ModelConfig(weights="none", image_size=32, embedding_dim=8), TrainConfig(epochs=1, batch_size=4),
                     DataConfig(catalog=tiny_catalog, triplets=tmp_path / "refreshed.json"), tmp_path / "home")
    assert later.held_products == new
    with pytest.raises(CatalogError, match="does not have"):
        restrict_products(catalog, {"no-such-product"})
