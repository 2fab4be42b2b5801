"""An ensemble of saved embedders is one embedder whose squared distance is the mean of its members'."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import ModelConfig, Preprocessing
from engine.model.embedder import Embedder, ModelError, backbone_record, save_embedder
from engine.model.ensemble import build_ensemble, ensemble_members, save_ensemble
from engine.model.network import build_embedder


def _saved(path, *, size=48, dim=16, seed=0, l2=True, padding=None):
    """An untrained embedder saved at ``path``; ``seed`` gives it its own random projection."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_embedder(ModelConfig(weights="none", image_size=size, embedding_dim=dim, l2_normalize=l2))
    prep = Preprocessing(image_size=size) if padding is None else Preprocessing(image_size=size, crop_padding=padding)
    return save_embedder(model, path, prep)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [_saved(folder / "a.keras", seed=1), _saved(folder / "b.keras", seed=2, dim=8, l2=False)]


def test_the_ensemble_distance_is_the_mean_of_the_members_squared_distances(members, tmp_path):
    out, recorded = save_ensemble(members, tmp_path / "e.keras")
    ens = Embedder.load(out)
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    got = ens(images)
    singles = [Embedder.load(p)(images) for p in members]
    assert got.shape == (6, 16 + 8) and ens.dim == 24
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # unit norm, whatever the members'

    def sq(v):
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return ((v[:, None] - v[None]) ** 2).sum(-1)

    np.testing.assert_allclose(sq(got), (sq(singles[0]) + sq(singles[1])) / 2, atol=1e-5)
    # the member without its own normalisation is normalised inside the ensemble, not skipped
    assert not np.allclose(np.linalg.norm(singles[1], axis=1), 1.0)
    assert ens.preprocessing == Preprocessing(image_size=48)
    assert [m.name for m in recorded] == ["a", "b"] and [m.dim for m in recorded] == [16, 8]
    assert {m.model for m in recorded} == {"showroom_mobilenet_v2"} and ens.model.name == "ensemble"
    assert ensemble_members(out) == recorded
    assert all(len(m.fingerprint) == 64 for m in recorded) and recorded[0].fingerprint != recorded[1].fingerprint
    assert backbone_record(out) is None  # its members' backbones are in the members' records
    assert ensemble_members(members[0]) == []


def test_an_ensemble_refuses_members_that_see_different_crops(tmp_path, members):
    other_size = _saved(tmp_path / "s.keras", size=64)
    with pytest.raises(ModelError, match="prepares its inputs differently"):
        save_ensemble([members[0], other_size], tmp_path / "e1.keras")
    with pytest.raises(ModelError, match="same input size"):
        build_ensemble([Embedder.load(members[0]).model, Embedder.load(other_size).model])
    other_padding = _saved(tmp_path / "p.keras", padding=0.2)
    with pytest.raises(ModelError, match="prepares its inputs differently"):
        save_ensemble([members[0], other_padding], tmp_path / "e2.keras")
    with pytest.raises(ModelError, match="listed twice"):
        save_ensemble([members[0], members[0]], tmp_path / "e3.keras")
    copy = tmp_path / "copy.keras"
    copy.write_bytes(members[0].read_bytes())
    with pytest.raises(ModelError, match="listed twice"):
        save_ensemble([members[0], copy], tmp_path / "e4.keras")
    with pytest.raises(ModelError, match="at least two"):
        build_ensemble([Embedder.load(members[0]).model])
    assert not list(tmp_path.glob("e*.keras"))  # nothing half-written
