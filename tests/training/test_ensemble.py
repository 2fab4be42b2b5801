"""``python -m training.ensemble``: saved embedders in, one loadable ensemble out; bad input refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import ModelConfig, Preprocessing
from engine.model.embedder import Embedder, save_embedder
from engine.model.ensemble import ensemble_members, scales_record
from engine.model.network import build_embedder
from training.ensemble import main


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("seeds")
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        paths.append(save_embedder(build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=8)),
                                   folder / f"seed{seed}.keras", Preprocessing(image_size=48)))
    return paths


def test_the_cli_saves_an_ensemble_that_embeds(two_models, tmp_path, capsys):
    out = tmp_path / "both.keras"
    assert main(["--models", *map(str, two_models), "--out", str(out)]) == 0
    assert "ensemble of 2 embedders (D=16)" in capsys.readouterr().out
    ens = Embedder.load(out)
    v = ens(np.full((2, 48, 48, 3), 128, np.uint8))
    assert v.shape == (2, 16)
    assert [m.name for m in ensemble_members(out)] == ["seed1", "seed2"]


def test_the_cli_refuses_bad_input(two_models, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--models", str(two_models[0]), "--out", str(tmp_path / "one.keras")])
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--models", *map(str, two_models), "--scales", "48", "64", "--out", str(tmp_path / "both.keras")])
    assert "make the ensemble first" in capsys.readouterr().err
    assert main(["--models", str(two_models[0]), "--scales", "64", "64", "--out", str(tmp_path / "twice.keras")]) == 2
    assert not (tmp_path / "twice.keras").exists()
    with pytest.raises(SystemExit):
        main(["--models", *map(str, two_models), "--out", str(tmp_path / "e.h5")])
    assert "must end in .keras" in capsys.readouterr().err
    assert main(["--models", str(two_models[0]), str(tmp_path / "missing.keras"), "--out", str(tmp_path / "e.keras")]) == 2
    assert not (tmp_path / "e.keras").exists()


def test_the_cli_adds_imagenet_features_to_one_model(two_models, tmp_path, capsys, caplog):
    bb = tmp_path / "bb.weights.h5"
    build_embedder(ModelConfig(weights="none", image_size=48)).get_layer("backbone").save_weights(bb)
    out = tmp_path / "fused.keras"
    assert main(["--models", str(two_models[0]), "--imagenet", "0.25", "--weights", str(bb), "--out", str(out)]) == 0
    assert "ImageNet features mobilenet_v2 at 0.25 of the distance" in capsys.readouterr().out
    fused = Embedder.load(out)
    assert fused(np.full((2, 48, 48, 3), 128, np.uint8)).shape == (2, fused.dim) and fused.dim > 8
    assert [(m.name, m.share) for m in ensemble_members(out)] == [("seed1", 0.75), ("imagenet-mobilenet_v2", 0.25)]
    for flags, reason in ((["--imagenet", "1.5"], "in (0, 1)"), (["--imagenet", "0.25", "--scales", "48", "64"], "different embedders")):
        with pytest.raises(SystemExit):
            main(["--models", str(two_models[0]), *flags, "--out", str(tmp_path / "bad.keras")])
        assert reason in capsys.readouterr().err
    assert main(["--models", str(two_models[0]), "--imagenet", "0.25", "--weights", str(tmp_path / "nope.weights.h5"),
                 "--out", str(tmp_path / "bad.keras")]) == 2
    assert "not found" in caplog.text and not (tmp_path / "bad.keras").exists()


def test_the_cli_saves_one_model_read_at_two_sizes(two_models, tmp_path, capsys):
    out = tmp_path / "ms.keras"
    assert main(["--models", str(two_models[0]), "--scales", "48", "64", "--out", str(out)]) == 0
    assert "read at 48 px, 64 px (crops cut at 64 px)" in capsys.readouterr().out
    ms = Embedder.load(out)
    assert ms.size == 64 and ms(np.full((2, 64, 64, 3), 128, np.uint8)).shape == (2, 8)
    assert scales_record(out)["sizes"] == [48, 64]
