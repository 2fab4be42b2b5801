"""Where training queries come from: one registered ``QuerySource`` per kind of query, named as in ``--mix``.

A source reads the catalog or one of the run's input files (``--triplets``, ``--synthetic``), leaves
out the held-out scenes, and returns its queries with their row in what it read. ``SOURCES`` is the
one list: ``SOURCE_NAMES`` (the ``--mix`` names, the ``train_queries_<name>`` params) and
``INPUT_NAMES`` (the input files a run records in its state, params and artifacts) come from it.

To add a source: subclass ``QuerySource``, append an instance to ``SOURCES``; when it reads a new
input file, also add a field of that name to ``training.run_plan.DataConfig`` and a flag to
``training.fit``'s parser.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from engine.data.catalog import Box, Catalog, CatalogError
from training.manifest import Manifest, ManifestError, check_fits, load_manifest
from training.synthesis import SyntheticManifest, SyntheticManifestError, load_synthetic_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryItem:
    """One positive pair as a query: ``box`` in ``image`` (None = whole image), from ``scene`` (None = a
    product photo or a synthetic view), with optional negative product ids to draw from (hard
    negatives). ``source``: the ``QuerySource`` name: "real" (a room photo), "lifestyle" (a product
    photo that is not on white) or "synthetic" (pasted into ``background``, a room photo of the catalog)."""

    product_id: str
    scene: str | None
    image: Path
    box: Box | None
    negatives: tuple[str, ...] = ()
    source: str = "real"
    background: str | None = None


def queries_from_pairs(catalog: Catalog) -> list[QueryItem]:
    """Every pairs.csv row as a query (its box, or the whole scene)."""
    scenes = {s.scene: s for s in catalog.scenes}
    return [QueryItem(p.product_id, p.scene, scenes[p.scene].image, p.box) for p in catalog.pairs]


def queries_from_manifest(manifest: Manifest, catalog: Catalog) -> list[QueryItem]:
    """The mined positives of a manifest, checked against the catalog they were mined from."""
    check_fits(catalog, manifest.catalog_fingerprint, [p.product_id for p in manifest.positives], ManifestError,
                "the manifest was mined from", "mine it again for this catalog")
    return [QueryItem(p.product_id, p.scene, manifest.image_path(p), p.box, p.negatives,
                      "lifestyle" if p.source == "product_lifestyle" else "real") for p in manifest.positives]


def queries_from_synthetic(manifest: SyntheticManifest, catalog: Catalog) -> list[QueryItem]:
    """The synthetic views of a manifest as training queries, checked against the catalog."""
    check_fits(catalog, manifest.catalog_fingerprint, [v.product_id for v in manifest.views], SyntheticManifestError,
                "the synthetic views were made from", "synthesize them again for this catalog")
    return [QueryItem(v.product_id, None, manifest.image_path(v), v.box, source="synthetic", background=v.background)
            for v in manifest.views]


@dataclass
class RunInputs:
    """The run's input files by input name (``{"triplets": Path, "synthetic": None}``), each read once."""

    files: Mapping[str, Path | None]
    _read: dict[str, Any] = field(default_factory=dict, repr=False)

    def path(self, name: str) -> Path | None:
        return self.files.get(name)

    def read(self, name: str, load: Callable[[Path], Any]) -> Any:
        """``load(path)`` of input ``name``, read the first time only; None when the run has no such file."""
        if self.path(name) is None:
            return None
        if name not in self._read:
            self._read[name] = load(self.path(name))
        return self._read[name]


@dataclass(frozen=True)
class QueryContext:
    """What the sources read. ``catalog``: the run's whole catalog; ``train_catalog``: without the
    held-out scenes; ``holdout``: scenes never trained or validated on; ``inputs``: the input files."""

    catalog: Catalog
    train_catalog: Catalog
    holdout: frozenset[str]
    inputs: RunInputs


class QuerySource(ABC):
    """One kind of training query.

    ``name``: the ``QueryItem.source`` of its queries and its ``--mix`` name. ``input``: the run input
    file it reads (a ``DataConfig`` field and ``training.fit`` flag of that name; recorded in the
    run's state.json and params and logged as an artifact under that name); sources may share one.
    """

    name: ClassVar[str]
    input: ClassVar[str]

    @abstractmethod
    def rows(self, ctx: QueryContext) -> list[tuple[int, QueryItem]]:
        """Its queries without the held-out scenes, each with its row in what it read (sources
        reading one input are merged in that input's order)."""

    def held_out(self, inputs: RunInputs) -> set[str]:
        """Scenes its input file was made without: held out of the whole run."""
        return set()

    @abstractmethod
    def catalog_of(self, path: Path) -> Path:
        """The catalog folder its input file was made from (the run's catalog when --catalog is omitted)."""


class _MinedSource(QuerySource):
    """The positives of a mined triplet manifest (``--triplets``) of one kind."""

    input = "triplets"

    def _mined(self, ctx: QueryContext) -> list[QueryItem] | None:
        manifest = ctx.inputs.read(self.input, load_manifest)
        return None if manifest is None else queries_from_manifest(manifest, ctx.catalog)

    def _own(self, items: list[QueryItem], ctx: QueryContext) -> list[tuple[int, QueryItem]]:
        return [(i, q) for i, q in enumerate(items) if q.source == self.name and q.scene not in ctx.holdout]

    def held_out(self, inputs: RunInputs) -> set[str]:
        manifest = inputs.read(self.input, load_manifest)
        return set(manifest.holdout_scenes) if manifest is not None else set()

    def catalog_of(self, path: Path) -> Path:
        return Path(load_manifest(path).catalog)


class RealQueries(_MinedSource):
    """Crops of room photos: the manifest's detector (or catalog-box) positives, else every pairs.csv row."""

    name = "real"

    def rows(self, ctx: QueryContext) -> list[tuple[int, QueryItem]]:
        mined = self._mined(ctx)
        if mined is not None:
            return self._own(mined, ctx)
        if not ctx.train_catalog.pairs:
            raise CatalogError(
                f"{ctx.catalog.root}: no pairs.csv rows. Training needs (product_id, scene) pairs: "
                "the scene photo is the query, the product image the positive."
            )
        return list(enumerate(queries_from_pairs(ctx.train_catalog)))


class LifestyleQueries(_MinedSource):
    """Catalog product photos that are not on white, found by the miner (none without a manifest)."""

    name = "lifestyle"

    def rows(self, ctx: QueryContext) -> list[tuple[int, QueryItem]]:
        mined = self._mined(ctx)
        return self._own(mined, ctx) if mined is not None else []


class SyntheticQueries(QuerySource):
    """Catalog products pasted into the catalog's room photos (``--synthetic``, ``training.synthesize``);
    views pasted into held-out scenes are left out."""

    name = "synthetic"
    input = "synthetic"

    def rows(self, ctx: QueryContext) -> list[tuple[int, QueryItem]]:
        manifest = ctx.inputs.read(self.input, load_synthetic_manifest)
        if manifest is None:
            return []
        views = queries_from_synthetic(manifest, ctx.catalog)
        leaked = sum(v.background in ctx.holdout for v in views)
        if leaked:
            logger.warning("%d synthetic views are pasted into held-out scenes: left out (synthesize with the same --holdout-scenes)", leaked)
        return [(i, v) for i, v in enumerate(views) if v.background not in ctx.holdout]

    def catalog_of(self, path: Path) -> Path:
        return Path(load_synthetic_manifest(path).catalog)


SOURCES: tuple[QuerySource, ...] = (RealQueries(), SyntheticQueries(), LifestyleQueries())
SOURCE_NAMES: tuple[str, ...] = tuple(s.name for s in SOURCES)
INPUT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(s.input for s in SOURCES))  # in order: the order their queries enter the bank


def gather_queries(ctx: QueryContext, sources: tuple[QuerySource, ...] = SOURCES) -> list[QueryItem]:
    """Every source's queries: input by input (``INPUT_NAMES`` order), each input's rows in its own order."""
    inputs = list(dict.fromkeys(s.input for s in sources))
    keyed = [((inputs.index(s.input), row), q) for s in sources for row, q in s.rows(ctx)]
    return [q for _, q in sorted(keyed, key=lambda kq: kq[0])]


def without_products(queries: list[QueryItem], drop: frozenset[str] | set[str]) -> list[QueryItem]:
    """``queries`` as if the products in ``drop`` did not exist: their queries removed, and removed
    from every other query's listed negatives."""
    if not drop:
        return list(queries)
    return [replace(q, negatives=tuple(n for n in q.negatives if n not in drop)) if any(n in drop for n in q.negatives) else q
            for q in queries if q.product_id not in drop]


def held_out_products_by_inputs(inputs: RunInputs) -> set[str]:
    """Products the ``--triplets`` manifest (or one it was refreshed from) was made without."""
    manifest = inputs.read("triplets", load_manifest)
    return set(manifest.holdout_products) if manifest is not None else set()


def held_out_by_inputs(inputs: RunInputs, sources: tuple[QuerySource, ...] = SOURCES) -> set[str]:
    """Scenes some input file was made without."""
    return set().union(*(s.held_out(inputs) for s in sources))


def catalog_of_inputs(inputs: RunInputs, sources: tuple[QuerySource, ...] = SOURCES) -> Path | None:
    """The catalog the first given input file (in ``SOURCES`` order) was made from; None without one."""
    for s in sources:
        path = inputs.path(s.input)
        if path is not None:
            return s.catalog_of(path)
    return None


def check_mix(mix: Mapping[str, float] | None) -> None:
    """``TrainConfig.mix_weights()`` names only registered sources (engine checks the shape, not the names)."""
    unknown = sorted(set(mix or {}) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(f"--mix names unknown query source(s) {unknown}; the sources are {SOURCE_NAMES}")
