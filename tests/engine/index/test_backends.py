"""The backend registry: a backend defined and registered here (one class, one registry line) is built,
saved and loaded through ``CatalogIndex`` with no other change; specs are checked; tuners are used when asked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.index.backends import BACKENDS, Backend, BackendSpec
from engine.index.base import BuildRequest, IndexBackendError, Neighbors
from engine.index.brute_force import BruteForceIndex
from engine.index.catalog_index import CatalogIndex, IndexFolderError, Item
from engine.index.milvus import MilvusSettings
from engine.index.scann_backend import ScannParams
from engine.index.tuning import Tuning, TuningConfig


@dataclass(frozen=True)
class ShardSettings:
    shards: int = 2


class ShardedIndex:
    """A backend for this test: exact search over the vectors split into shards, each shard saved as its
    own file and read back from those files (not from the index folder's vectors) on load."""

    kind = "sharded_exact"

    def __init__(self, shards: list[np.ndarray], model_fingerprint: str) -> None:
        self.shards = shards
        self.model_fingerprint = model_fingerprint
        self._exact = BruteForceIndex(np.concatenate(shards))

    @classmethod
    def build(cls, settings: ShardSettings, request: BuildRequest) -> tuple[ShardedIndex, dict]:
        index = cls(np.array_split(np.asarray(request.vectors, np.float32), settings.shards), request.model_fingerprint)
        return index, {"chosen": cls.kind, "reason": f"{settings.shards} shards"}

    def save(self, folder: Path) -> None:
        for i, shard in enumerate(self.shards):
            np.save(folder / f"shard{i}.npy", shard)

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, params: dict, *, model_fingerprint: str = "") -> ShardedIndex:
        if model_fingerprint != params["model"]:
            raise IndexBackendError(f"its shards were written for model {params['model']}, not {model_fingerprint}")
        return cls([np.load(folder / f"shard{i}.npy") for i in range(params["shards"])], model_fingerprint)

    def describe(self) -> dict:
        return {"shards": len(self.shards), "model": self.model_fingerprint}

    @property
    def size(self) -> int:
        return self._exact.size

    @property
    def dim(self) -> int:
        return self._exact.dim

    def search(self, queries: np.ndarray, k: int) -> Neighbors:
        return self._exact.search(queries, k)


REGISTRY = {**BACKENDS, ShardedIndex.kind: Backend(ShardedIndex, ShardSettings)}  # the one registry line


def catalog(n: int = 300, d: int = 8, seed: int = 0) -> tuple[np.ndarray, list[Item]]:
    vectors = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return vectors, [Item(f"i{k}", f"p{k}", f"name {k}", "AB"[k % 2], f"img/{k}.jpg") for k in range(n)]


def test_a_backend_registered_in_a_test_is_built_saved_and_loaded_through_catalog_index(tmp_path: Path):
    vectors, items = catalog()
    built = CatalogIndex.from_vectors(vectors, items, "model-A", BackendSpec(ShardedIndex.kind, ShardSettings(3)), backends=REGISTRY)
    built.save(tmp_path / "idx")
    loaded = CatalogIndex.load(tmp_path / "idx", model_fingerprint="model-A", backends=REGISTRY)

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["index_kind"] == "sharded_exact" and manifest["index_params"] == {"shards": 3, "model": "model-A"}
    assert {"index/shard0.npy", "index/shard1.npy", "index/shard2.npy"} <= manifest["checksums"].keys()
    assert isinstance(loaded.index, ShardedIndex) and [len(s) for s in loaded.index.shards] == [100, 100, 100]
    assert loaded.tuning == {"chosen": "sharded_exact", "reason": "3 shards"}
    q = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    want = BruteForceIndex(vectors).search(q, 4).indices
    assert [[m.item.item_id for m in r] for r in loaded.search(q, 4)] == [[f"i{j}" for j in row] for row in want]
    # without settings the spec gets the backend's defaults
    assert len(CatalogIndex.from_vectors(vectors, items, "m", BackendSpec(ShardedIndex.kind), backends=REGISTRY).index.shards) == 2


def test_an_unregistered_backend_or_data_it_refuses_is_an_index_folder_error(tmp_path: Path):
    vectors, items = catalog(n=40)
    CatalogIndex.from_vectors(vectors, items, "model-A", BackendSpec(ShardedIndex.kind), backends=REGISTRY).save(tmp_path / "idx")
    with pytest.raises(IndexFolderError, match="'sharded_exact' is not a registered backend .*rebuild it with python -m serving.build_index"):
        CatalogIndex.load(tmp_path / "idx")
    path = tmp_path / "idx" / "manifest.json"
    path.write_text(path.read_text().replace('"model_fingerprint": "model-A"', '"model_fingerprint": "model-B"'))
    with pytest.raises(IndexFolderError, match="idx: its shards were written for model model-A, not model-B"):
        CatalogIndex.load(tmp_path / "idx", backends=REGISTRY)


def test_a_tuned_build_goes_through_the_backends_tuner_and_an_untuned_one_through_its_class():
    calls = []

    def tune(vectors, queries, config, settings, *, queries_label):
        calls.append((len(vectors), config.target_recall, settings, queries_label))
        return BruteForceIndex(vectors), Tuning("brute_force", "fake tuner", config.target_recall, config.k, 1.0, 0.0, 0.0, 0.0,
                                                queries_label, 0, config.seed, 0.0)

    registry = {ShardedIndex.kind: Backend(ShardedIndex, ShardSettings, tune=tune)}
    vectors, _ = catalog(n=30)
    spec = BackendSpec(ShardedIndex.kind, ShardSettings(5))
    index, record = spec.build(BuildRequest(vectors, queries_label="crops"), TuningConfig(target_recall=0.9), backends=registry)
    assert calls == [(30, 0.9, ShardSettings(5), "crops")] and isinstance(index, BruteForceIndex)
    assert record["reason"] == "fake tuner" and record["target_recall"] == 0.9
    index, record = spec.build(BuildRequest(vectors), None, backends=registry)
    assert len(calls) == 1 and isinstance(index, ShardedIndex) and record == {"chosen": "sharded_exact", "reason": "5 shards"}


def test_specs_are_checked_and_named_per_index():
    request = BuildRequest(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="unknown index backend 'faiss': registered are brute_force, milvus, scann"):
        BackendSpec("faiss").build(request)
    with pytest.raises(ValueError, match="the scann backend takes ScannParams, not MilvusSettings"):
        BackendSpec("scann", MilvusSettings("x.db")).build(request)
    with pytest.raises(ValueError, match="the milvus backend has no default settings: give it a MilvusSettings"):
        BackendSpec("milvus").build(request)
    with pytest.raises(ValueError, match="registry key"):
        BackendSpec("")
    milvus = BackendSpec("milvus", MilvusSettings("x.db", "build1"))
    assert milvus.named("products") == BackendSpec("milvus", MilvusSettings("x.db", "build1_products"))
    assert BackendSpec("scann", ScannParams(leaves=4)).named("products") == BackendSpec("scann", ScannParams(leaves=4))


def test_the_registry_is_keyed_by_each_class_kind_and_read_only():
    assert set(BACKENDS) == {"brute_force", "scann", "milvus"}
    assert all(entry.index.kind == kind for kind, entry in BACKENDS.items())
    with pytest.raises(TypeError):
        BACKENDS["faiss"] = BACKENDS["scann"]  # registered by a line in engine/index/backends.py, or a registry passed in
