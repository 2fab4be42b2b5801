"""Query sources: one registry, each input's order kept, held-out scenes left out, mix names checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import TrainConfig
from engine.data.catalog import CatalogError, load_catalog
from engine.data.splits import restrict_scenes
from training.manifest import Manifest, Positive, save_manifest
from training.query_sources import (
    INPUT_NAMES,
    SOURCE_NAMES,
    SOURCES,
    QueryContext,
    QueryItem,
    QuerySource,
    RunInputs,
    catalog_of_inputs,
    check_mix,
    gather_queries,
    held_out_by_inputs,
)
from training.run_plan import DataConfig
from training.synthesis import SyntheticManifest, SyntheticView, save_synthetic_manifest


def test_one_registry_names_the_sources_and_their_inputs():
    assert SOURCE_NAMES == ("real", "synthetic", "lifestyle")
    assert INPUT_NAMES == ("triplets", "synthetic")
    assert len(set(SOURCE_NAMES)) == len(SOURCES)
    assert set(DataConfig().input_files()) == set(INPUT_NAMES)  # every input has its DataConfig field


def _mined(tmp_path: Path, catalog, held: str) -> Path:
    """Room positives of every pair with a lifestyle photo after every third one; ``held`` held out by the miner."""
    scenes = {s.scene: s for s in catalog.scenes}
    positives = []
    for i, p in enumerate(catalog.pairs):
        positives.append(Positive(p.product_id, catalog.types[p.product_id], p.scene, str(scenes[p.scene].image), p.box, "catalog_box"))
        if i % 3 == 0:
            prod = catalog.products[i % len(catalog.products)]
            positives.append(Positive(prod.product_id, prod.type, None, str(prod.image), None, "product_lifestyle"))
    path = tmp_path / "mined.json"
    save_manifest(Manifest(str(catalog.root), catalog.fingerprint, positives, producer={"holdout_scenes": [held]}), path)
    return path


def _synthetic(tmp_path: Path, catalog, backgrounds: list[str]) -> Path:
    views = [SyntheticView(p.product_id, p.type, bg, str(p.image), (1, 1, 20, 20), seed=i)
             for i, (p, bg) in enumerate(zip(catalog.products, backgrounds))]
    return save_synthetic_manifest(SyntheticManifest(str(catalog.root), catalog.fingerprint, views), tmp_path / "synthetic.json")


def _context(catalog, inputs: RunInputs, holdout: set[str]) -> QueryContext:
    holdout = frozenset(holdout | held_out_by_inputs(inputs))
    return QueryContext(catalog, restrict_scenes(catalog, drop=holdout), holdout, inputs)


def test_mined_and_synthetic_queries_keep_their_input_order_without_held_out_scenes(tiny_catalog: Path, tmp_path: Path):
    catalog = load_catalog(tiny_catalog)
    names = sorted(s.scene for s in catalog.scenes)
    mined = _mined(tmp_path, catalog, held=names[0])
    synthetic = _synthetic(tmp_path, catalog, [names[i % 3] for i in range(6)])
    inputs = RunInputs({"triplets": mined, "synthetic": synthetic})
    ctx = _context(catalog, inputs, {names[1]})
    assert ctx.holdout == {names[0], names[1]}  # the user's and the miner's
    queries = gather_queries(ctx)
    kinds = [q.source for q in queries]
    # the manifest's rows in its own order (real and lifestyle interleaved), then the synthetic views
    expected = []
    for i, p in enumerate(catalog.pairs):
        if p.scene not in ctx.holdout:
            expected.append(("real", p.product_id, p.scene))
        if i % 3 == 0:
            expected.append(("lifestyle", catalog.products[i % len(catalog.products)].product_id, None))
    n_mined = len(expected)
    assert [(q.source, q.product_id, q.scene) for q in queries[:n_mined]] == expected
    assert kinds[n_mined:] == ["synthetic"] * 2  # views pasted into the two held-out scenes are left out
    assert all(q.background == names[2] for q in queries[n_mined:])
    assert catalog_of_inputs(inputs) == catalog.root


def test_without_a_manifest_real_queries_are_the_pairs(tiny_catalog: Path):
    catalog = load_catalog(tiny_catalog)
    held = catalog.pairs[0].scene
    queries = gather_queries(_context(catalog, RunInputs({}), {held}))
    assert [(q.product_id, q.scene, q.box) for q in queries] == [(p.product_id, p.scene, p.box) for p in catalog.pairs if p.scene != held]
    assert {q.source for q in queries} == {"real"}
    no_pairs = restrict_scenes(catalog, keep=[])
    with pytest.raises(CatalogError, match="no pairs.csv rows"):
        gather_queries(QueryContext(catalog, no_pairs, frozenset(), RunInputs({})))


class Frames(QuerySource):
    """A made-up source with its own input: one query per product, in reverse order."""

    name, input = "frames", "frames"

    def rows(self, ctx: QueryContext) -> list[tuple[int, QueryItem]]:
        products = list(reversed(ctx.catalog.products))
        return [(i, QueryItem(p.product_id, None, p.image, None, source=self.name)) for i, p in enumerate(products)]

    def catalog_of(self, path: Path) -> Path:
        return path.parent  # its frames file sits in the catalog folder


def test_a_new_source_plugs_in_after_the_others(tiny_catalog: Path):
    catalog = load_catalog(tiny_catalog)
    queries = gather_queries(_context(catalog, RunInputs({}), set()), (*SOURCES, Frames()))
    frames = [q for q in queries if q.source == "frames"]
    assert queries[-len(frames):] == frames and len(frames) == len(catalog.products)
    assert frames[0].product_id == catalog.products[-1].product_id


def test_mix_names_are_checked_against_the_sources():
    check_mix(TrainConfig(mix="real=1,synthetic=2,lifestyle=0.05").mix_weights())
    check_mix(None)
    unknown = TrainConfig(mix="real=1,videos=1")  # engine checks the shape only
    with pytest.raises(ValueError, match="unknown query source"):
        check_mix(unknown.mix_weights())
    with pytest.raises(ValueError, match="must look like"):
        TrainConfig(mix="real:1")
