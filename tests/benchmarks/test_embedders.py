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
