"""``python -m benchmarks.embedders``: two saved embedders timed in turn, a row each with its ratio to the first."""

from __future__ import annotations

import pytest

from benchmarks.embedders import main
from engine.config import ModelConfig, Preprocessing
from engine.model.embedder import save_embedder
from engine.model.network import build_embedder


def _saved(path, size=48, dim=8):
    return save_embedder(build_embedder(ModelConfig(weights="none", image_size=size, embedding_dim=dim)), path, Preprocessing(image_size=size))


def test_two_models_are_timed_side_by_side(tmp_path, capsys):
    a, b = _saved(tmp_path / "a.keras"), _saved(tmp_path / "b.keras", dim=16)
    assert main(["--models", str(a), str(b), "--batch", "3", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| a.keras") or line.startswith("| b.keras")]
    assert len(rows) == 2 and rows[0].endswith("| 1.00 |")
    assert rows[1].split("|")[2].strip() == "16"


def test_bad_input_is_refused(tmp_path, capsys, caplog):
    a, c = _saved(tmp_path / "a.keras"), _saved(tmp_path / "c.keras", size=64)
    assert main(["--models", str(a), str(c), "--repeats", "1"]) == 2
    assert "different input sizes" in caplog.text
    with pytest.raises(SystemExit):
        main(["--models", str(a), "--batch", "0"])
    assert "--batch and --repeats must be >= 1" in capsys.readouterr().err


def test_an_ensemble_that_shares_its_trunk_is_also_timed_with_its_members_apart(tmp_path, capsys):
    import keras

    from engine.model.ensemble import save_ensemble

    keras.utils.set_random_seed(0)
    first = build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=8))
    second = build_embedder(ModelConfig(weights="none", image_size=48, embedding_dim=8))
    second.get_layer("backbone").set_weights(first.get_layer("backbone").get_weights())  # one backbone, two heads
    paths = [save_embedder(m, tmp_path / f"m{i}.keras", Preprocessing(image_size=48)) for i, m in enumerate((first, second))]
    ens, _ = save_ensemble(paths, tmp_path / "e.keras")
    assert main(["--models", str(paths[0]), str(ens), "--batch", "2", "--repeats", "1", "--members-apart"]) == 0
    names = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and ".keras" in line]
    assert names == ["m0.keras", "e.keras", "e.keras, members apart"]  # a single embedder gets no second row
