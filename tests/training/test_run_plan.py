"""Run plans: a killed run's state.json (as written before the Trainer too) rebuilds the same plan; the Trainer's checks."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.config import ModelConfig, TrainConfig
from engine.data.catalog import CatalogError, load_catalog
from training import checkpoint
from training.run_plan import DataConfig, new_plan, resume_plan
from training.strategy import Cluster
from training.trainer import Trainer


def _killed_after_one_epoch(folder: Path, state: dict) -> None:
    checkpoint.write_run_state(folder, state)
    (folder / "backup").mkdir(parents=True)
    (folder / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 1}))


def test_a_state_json_of_the_fit_before_the_trainer_resumes(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    synthetic, held = tmp_path / "views" / "manifest.json", sorted(s.scene for s in catalog.scenes)[:2]
    # the keys training.fit wrote before the Trainer, an input file and held-out scenes included
    state = {"run_id": "r1", "model": asdict(ModelConfig(image_size=48, weights="none")), "train": asdict(TrainConfig(epochs=3)),
             "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint, "triplets": None,
             "synthetic": str(synthetic), "holdout_scenes": held, "init_from": "abc"}
    _killed_after_one_epoch(tmp_path / "run", state)
    plan = resume_plan(tmp_path / "run")
    assert plan.resume["epochs_done"] == 1 and plan.resume["run_id"] == "r1"
    assert plan.model == ModelConfig(image_size=48, weights="none") and plan.train == TrainConfig(epochs=3)
    assert plan.holdout == set(held) and plan.data.init_from == "abc"
    assert plan.data.input_files() == {"triplets": None, "synthetic": synthetic}
    assert plan.state("r1") == state  # and writes them back unchanged
    _killed_after_one_epoch(tmp_path / "changed", {**state, "catalog_fingerprint": "0" * 16})
    with pytest.raises(CatalogError, match="changed since run r1"):
        resume_plan(tmp_path / "changed")


def test_a_new_plan_keeps_the_flags_configs(tiny_catalog: Path, tmp_path: Path):
    plan = new_plan(ModelConfig(image_size=48), TrainConfig(), DataConfig(catalog=tiny_catalog), tmp_path)
    assert plan.catalog.root == load_catalog(tiny_catalog).root and not plan.holdout and plan.resume is None
    assert plan.state("x")["triplets"] is None  # the tiny catalog has boxes: nothing mined
    with pytest.raises(ValueError, match="unknown query source"):
        new_plan(ModelConfig(image_size=48), TrainConfig(mix="videos=1"), DataConfig(catalog=tiny_catalog), tmp_path)


def test_the_trainer_needs_a_global_batch_the_replicas_share(tiny_catalog: Path, tmp_path: Path):
    plan = new_plan(ModelConfig(image_size=48), TrainConfig(batch_size=8), DataConfig(catalog=tiny_catalog), tmp_path)
    with pytest.raises(ValueError, match="multiple of the 3 replicas"):
        Trainer(plan, Cluster(SimpleNamespace(num_replicas_in_sync=3)), tmp_path)


def test_a_model_started_from_is_fine_tuned_at_a_new_size(tiny_catalog: Path, tmp_path: Path):
    import keras
    import numpy as np

    from engine.config import Preprocessing
    from engine.model.embedder import save_embedder
    from engine.model.ensemble import at_input_size
    from engine.model.network import build_embedder

    keras.utils.set_random_seed(3)
    trained = save_embedder(build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=8)), tmp_path / "m48.keras",
                            Preprocessing(image_size=48))
    same = new_plan(ModelConfig(image_size=96), TrainConfig(), DataConfig(catalog=tiny_catalog, init_from=str(trained)), tmp_path)
    assert (same.model.image_size, same.model.embedding_dim) == (48, 8)  # without init_size: the model's own size and D
    assert "init_size" not in same.state("x")
    own = new_plan(ModelConfig(), TrainConfig(), DataConfig(catalog=tiny_catalog, init_from=str(trained), init_size=48), tmp_path)
    assert own.model.image_size == 48 and own.data.init_size == 0 and "init_size" not in own.state("x")  # its own size: as without

    plan = new_plan(ModelConfig(image_size=48), TrainConfig(),
                    DataConfig(catalog=tiny_catalog, init_from=str(trained), init_size=64), tmp_path)
    assert (plan.model.image_size, plan.model.embedding_dim, plan.preprocessing.image_size) == (64, 8, 64)
    assert plan.state("x")["init_size"] == 64
    # the network the Trainer builds for the plan takes the 48-px model's weights and embeds as that model read at 64 px
    network = build_embedder(plan.model)
    network.set_weights(plan.init_model.get_weights())
    batch = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(network.predict(batch, verbose=0), at_input_size(plan.init_model, 64).predict(batch, verbose=0),
                               atol=1e-5)
    _killed_after_one_epoch(tmp_path / "run", plan.state("r2"))
    assert resume_plan(tmp_path / "run").data.init_size == 64
    with pytest.raises(ValueError, match="at least 32 px"):
        new_plan(ModelConfig(image_size=48), TrainConfig(), DataConfig(catalog=tiny_catalog, init_from=str(trained), init_size=16),
                 tmp_path)
