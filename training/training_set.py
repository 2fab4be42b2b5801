"""From a validated catalog to a training set: scene split, image bank, triplet samplers, probes.

Train and validation are split by scene (no scene in both). Every positive pair becomes a query:
the padded crop of its box, or the whole scene when the pair has no box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engine.data.catalog import Catalog, CatalogError
from engine.config import TrainConfig
from engine.metrics import distance_accuracy, euclidean_distances
from training.input_pipeline import ImageSpec, build_bank
from training.query_sources import SOURCE_NAMES, QueryItem, queries_from_pairs
from training.tracking import metric_key
from training.triplets import TripletSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Scene names of each side of the split."""

    train: tuple[str, ...]
    val: tuple[str, ...]


@dataclass
class TrainingSet:
    """Everything the fit loop needs, built once per run.

    bank: uint8 (N, S, S, 3): product images first (``product_bank``), then train queries, then
    validation queries.
    """

    bank: np.ndarray
    product_ids: list[str]  # sorted; label of a product = its index here
    product_types: list[str]
    types: dict[str, str]  # product id -> type
    product_bank: dict[str, list[int]]
    train_queries: list[tuple[int, str]]  # (bank index, product id)
    val_queries: list[tuple[int, str]]
    train_sources: list[str]  # source of each train query: a name of training.query_sources.SOURCE_NAMES
    train_sampler: TripletSampler
    val_sampler: TripletSampler
    split: Split
    whole_scene_queries: int

    dropped_synthetic: int = 0  # synthetic views left out: their background is a validation scene

    def first_image(self, product_id: str) -> int:
        return self.product_bank[product_id][0]

    @property
    def real_train_queries(self) -> list[tuple[int, str]]:
        """The train queries cut from room photos (no product photos, no synthetic views)."""
        return [q for q, s in zip(self.train_queries, self.train_sources) if s == "real"]

    @property
    def seen_products(self) -> list[str]:
        """Products of the real training pairs: the "seen" side of the evaluation's split."""
        return sorted({p for _, p in self.real_train_queries})

    def source_counts(self) -> dict[str, int]:
        """Train queries per source."""
        return {s: self.train_sources.count(s) for s in SOURCE_NAMES}


def split_queries(queries: list[QueryItem], val_fraction: float, seed: int) -> Split:
    """Seeded split of the queries' scenes; at least one scene on each side. Scene-less queries train."""
    scenes = sorted({q.scene for q in queries if q.scene is not None})
    if len(scenes) < 2:
        raise CatalogError(
            f"training needs queries from at least 2 scenes (one for validation), found {len(scenes)}. Add pairs.csv rows."
        )
    order = np.random.default_rng(seed).permutation(len(scenes))
    n_val = min(len(scenes) - 1, max(1, round(val_fraction * len(scenes))))
    return Split(tuple(sorted(scenes[i] for i in order[n_val:])), tuple(sorted(scenes[i] for i in order[:n_val])))


@dataclass
class _Sides:
    """Queries as (bank index, product id) on each side of the split, with the train side's listed
    negatives and sources; the number of whole-scene queries."""

    train: list[tuple[int, str]]
    val: list[tuple[int, str]]
    negatives: list[tuple[str, ...]]
    sources: list[str]
    whole_scene: int


def _assign(queries: list[QueryItem], val_names: set[str], specs: list[ImageSpec]) -> _Sides:
    """Put each query on its side of the split, adding each distinct crop to ``specs`` once."""
    sides = _Sides([], [], [], [], 0)
    seen: dict[tuple, int] = {}
    for q in queries:
        key = (q.image, q.box)
        if key not in seen:
            seen[key] = len(specs)
            specs.append(ImageSpec(q.image, q.box, is_query=True))
        sides.whole_scene += q.box is None and q.scene is not None
        if q.scene in val_names:
            sides.val.append((seen[key], q.product_id))
        else:
            sides.train.append((seen[key], q.product_id))
            sides.negatives.append(q.negatives)
            sides.sources.append(q.source)
    if sides.whole_scene:
        logger.warning("%d of %d queries have no box: their query is the whole scene image", sides.whole_scene, len(queries))
    return sides


def build_training_set(catalog: Catalog, cfg: TrainConfig, image_size: int, queries: list[QueryItem] | None = None) -> TrainingSet:
    """Split, decode the bank and make the samplers for one run (queries default to pairs.csv)."""
    if queries is None:
        if not catalog.pairs:
            raise CatalogError(
                f"{catalog.root}: no pairs.csv rows. Training needs (product_id, scene) pairs: "
                "the scene photo is the query, the product image the positive."
            )
        queries = queries_from_pairs(catalog)
    split = split_queries(queries, cfg.val_fraction, cfg.seed)
    specs: list[ImageSpec] = []
    product_bank: dict[str, list[int]] = {}
    for p in catalog.products:
        product_bank.setdefault(p.product_id, []).append(len(specs))
        specs.append(ImageSpec(p.image))
    val_names = set(split.val)
    dropped = sum(q.background in val_names for q in queries)
    if dropped:
        logger.info("%d synthetic views are pasted into validation scenes: left out, validation scenes never train", dropped)
        queries = [q for q in queries if q.background not in val_names]
    sides = _assign(queries, val_names, specs)
    train_q, val_q, train_neg, train_src = sides.train, sides.val, sides.negatives, sides.sources
    whole = sides.whole_scene
    bank = build_bank(specs, image_size, cfg.crop_padding)
    types = catalog.types

    def sampler(items: list[tuple[int, str]], max_triplets: int, candidates=None, sources=None, mix=None) -> TripletSampler:
        return TripletSampler(
            [p for _, p in items], product_bank, types,
            in_class=cfg.in_class_negatives, out_class=cfg.out_class_negatives, max_triplets=max_triplets,
            query_index=[i for i, _ in items], candidates=candidates, sources=sources, mix=mix,
            queries_per_epoch=cfg.queries_per_epoch if mix else 0,
            batch_products=cfg.batch_products if sources is not None else 0, batch_size=cfg.batch_size,
        )

    ids = sorted(product_bank)
    ts = TrainingSet(
        bank=bank,
        product_ids=ids,
        product_types=[types[p] for p in ids],
        types=types,
        product_bank=product_bank,
        train_queries=train_q,
        val_queries=val_q,
        train_sources=train_src,
        train_sampler=sampler(train_q, cfg.max_triplets_per_epoch, train_neg if any(train_neg) else None, train_src, cfg.mix_weights()),
        val_sampler=sampler(val_q, 0),  # validation always uses random negatives, comparable across rounds
        split=split,
        whole_scene_queries=whole,
        dropped_synthetic=dropped,
    )
    logger.info(
        "split by scene: %d train scenes (%d queries: %s), %d validation scenes (%d queries); %d products; %s negatives",
        len(split.train), len(train_q), ts.source_counts(), len(split.val), len(val_q), len(ids),
        "listed" if any(train_neg) else "random",
    )
    return ts


def probe_metrics(
    embed, ts: TrainingSet, queries: list[tuple[int, str]], prefix: str, *, max_queries: int = 400, seed: int = 0
) -> dict[str, float]:
    """distance_accuracy(_top_3) per category and macro, plus collapse watch, on up to ``max_queries``.

    ``embed``: callable uint8 (N, S, S, 3) → float32 (N, D). Products are embedded from their first image.
    """
    rng = np.random.default_rng(seed)
    if len(queries) > max_queries:
        queries = [queries[i] for i in sorted(rng.choice(len(queries), max_queries, replace=False))]
    if not queries:
        return {}
    q_types = {ts.types[p] for _, p in queries}
    prods = [p for p, t in zip(ts.product_ids, ts.product_types) if t in q_types]
    q_unique = sorted({i for i, _ in queries})
    q_emb_u = embed(ts.bank[q_unique])
    row = {b: r for r, b in enumerate(q_unique)}
    q_emb = q_emb_u[[row[i] for i, _ in queries]]
    p_emb = embed(ts.bank[[ts.first_image(p) for p in prods]])
    acc = distance_accuracy(q_emb, [p for _, p in queries], p_emb, prods, [ts.types[p] for p in prods])
    out = {f"{prefix}distance_accuracy": acc.top1, f"{prefix}distance_accuracy_top_3": acc.top3}
    for t, (top1, top3, _, _) in acc.per_category.items():
        out[f"{prefix}distance_accuracy/{metric_key(t)}"] = top1
    # Collapse watch: the typical distance between unrelated embeddings shrinks to 0 on collapse.
    if len(p_emb) >= 2:
        d = euclidean_distances(p_emb, p_emb)
        iu = np.triu_indices(len(p_emb), 1)
        out[f"{prefix}mean_product_distance"] = float(d[iu].mean())
    out[f"{prefix}embedding_std"] = float(np.concatenate([q_emb, p_emb]).std(0).mean())
    return out
