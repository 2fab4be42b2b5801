"""``python -m training.distill``: an ensemble in, a loadable one-pass student out, fitted without
reading a held-out scene; bad input refused with a reason and no file left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.config import ModelConfig, Preprocessing
from engine.data.catalog import load_catalog
from engine.data.splits import write_scene_list
from engine.model.distill import BACKBONE_LAYER
from engine.model.embedder import Embedder, save_embedder, saved_record
from engine.model.ensemble import save_ensemble
from engine.model.network import build_embedder
from training.distill import main


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> tuple[Path, Path]:
    """An ensemble of two 'seeds' sharing a backbone start (48 px, D = 8 each), and one member alone."""
    import keras

    folder = tmp_path_factory.mktemp("seeds")
    models = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        models.append(build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=8)))
    start = models[0].get_layer(BACKBONE_LAYER).get_weights()
    models[1].get_layer(BACKBONE_LAYER).set_weights([w * 1.01 for w in start])
    paths = [save_embedder(m, folder / f"s{i}.keras", Preprocessing(image_size=48)) for i, m in enumerate(models)]
    out, _ = save_ensemble(paths, folder / "ens.keras")
    return out, paths[0]


def test_the_student_follows_the_ensemble_and_never_reads_a_held_out_scene(ensemble, tiny_catalog, tmp_path, monkeypatch, capsys):
    import engine.data.proposals as proposals

    catalog = load_catalog(tiny_catalog)
    held = sorted({p.scene for p in catalog.pairs})[:4]
    held_images = {str(s.image) for s in catalog.scenes if s.scene in held}
    read = []
    original = proposals.load_image
    monkeypatch.setattr(proposals, "load_image", lambda path, *a, **k: read.append(str(path)) or original(path, *a, **k))
    out = tmp_path / "student.keras"
    assert main(["--teacher", str(ensemble[0]), "--catalog", str(tiny_catalog), "--holdout-scenes",
                 str(write_scene_list(held, tmp_path / "held.txt")), "--epochs", "3", "--out", str(out)]) == 0
    assert "student of 2 members (D=16)" in capsys.readouterr().out
    assert read and not held_images & set(read)
    assert len(read) == len(catalog.scenes) - len(held)
    student, teacher = Embedder.load(out), Embedder.load(ensemble[0])
    images = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 3), dtype=np.uint8)
    got, want = student(images), teacher(images)
    assert got.shape == want.shape == (8, 16) and student.preprocessing == teacher.preprocessing
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    record = saved_record(out, "distilled")
    assert record["held_out_scenes"] == 4 and record["catalog_photos"] == len(catalog.products)
    assert record["room_crops"] > 0 and -1.0 <= record["cosine"] <= 1.0 and 0.0 <= record["top10_overlap"] <= 1.0
    assert [m["name"] for m in record["members"]] == ["s0", "s1"]


def test_bad_input_is_refused(ensemble, tiny_catalog, tmp_path, capsys, caplog):
    out = tmp_path / "student.keras"
    assert main(["--teacher", str(ensemble[1]), "--catalog", str(tiny_catalog), "--out", str(out)]) == 2
    assert "is not an ensemble" in caplog.text
    assert main(["--teacher", str(tmp_path / "missing.keras"), "--catalog", str(tiny_catalog), "--out", str(out)]) == 2
    assert not out.exists()
    bb = tmp_path / "bb.weights.h5"
    build_embedder(ModelConfig(weights="none", image_size=48)).get_layer(BACKBONE_LAYER).save_weights(bb)
    fused, _ = save_ensemble([ensemble[1]], tmp_path / "fused.keras", ModelConfig(weights=str(bb)), 0.25)
    assert main(["--teacher", str(fused), "--catalog", str(tiny_catalog), "--out", str(out)]) == 2
    assert "ImageNet features as a member" in caplog.text and not out.exists()
    with pytest.raises(SystemExit):
        main(["--teacher", str(ensemble[0]), "--catalog", str(tiny_catalog), "--out", str(tmp_path / "s.h5")])
    assert "must end in .keras" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--teacher", str(ensemble[0]), "--catalog", str(tiny_catalog), "--epochs", "0", "--out", str(out)])
    assert "--epochs must be >= 1" in capsys.readouterr().err
