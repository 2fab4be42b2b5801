"""Triplet sampling: (query crop of product i, iconic image of i, iconic image of another product).

Pure numpy. Images are referred to by their index in an image bank; products by id.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Triplets:
    """T triplets as parallel int arrays (bank indices and product labels)."""

    query: np.ndarray  # int64 (T,) query bank index
    positive: np.ndarray  # int64 (T,) product bank index of the query's product
    negative: np.ndarray  # int64 (T,) product bank index of another product
    label_p: np.ndarray  # int32 (T,) label of the positive product
    label_n: np.ndarray  # int32 (T,) label of the negative product
    in_class: np.ndarray  # bool (T,) the negative shares the positive's category

    def __len__(self) -> int:
        return len(self.query)

    def subset(self, idx: np.ndarray) -> Triplets:
        return Triplets(*(getattr(self, f)[idx] for f in ("query", "positive", "negative", "label_p", "label_n", "in_class")))


class NegativeSampler:
    """Draws negative products for a positive product: some of its own type (in-class, the hard
    ones for Bell & Bala) and some of other types; never the product itself.

    product_types: product id → category, for every product that may be drawn.
    """

    def __init__(self, product_types: Mapping[str, str]) -> None:
        self.types = dict(product_types)
        self.products = np.array(sorted(self.types))
        by_type: dict[str, list[str]] = {}
        for p in self.products:
            by_type.setdefault(self.types[p], []).append(str(p))
        self.by_type = {t: np.array(v) for t, v in by_type.items()}
        self._other: dict[str, np.ndarray] = {}

    def draw(self, product: str, rng: np.random.Generator, in_class: int, out_class: int) -> tuple[list[str], list[str]]:
        """(in-class, out-of-class) negative ids for ``product``, without replacement; fewer when a
        pool is smaller than asked."""
        ptype = self.types[product]
        same = self.by_type[ptype]
        same = same[same != product]
        if ptype not in self._other:
            self._other[ptype] = self.products[np.array([self.types[p] != ptype for p in self.products])]
        other = self._other[ptype]
        k_in, k_out = min(in_class, len(same)), min(out_class, len(other))
        return (
            rng.choice(same, size=k_in, replace=False).tolist() if k_in else [],
            rng.choice(other, size=k_out, replace=False).tolist() if k_out else [],
        )


class TripletSampler:
    """Samples, per positive pair, in-class and out-of-class negative products, with a seed.

    query_products: product id of each query.
    query_index: bank index of each query (default: query i at index i).
    product_images: product id → bank indices of its iconic images.
    product_types: product id → category.
    candidates: optional per-query negative product lists (e.g. mined hard negatives); a query with
        a non-empty list draws ``in_class + out_class`` negatives from it instead of the category pools.
    sources, mix, queries_per_epoch: each query's source and the share of an epoch's queries each
        source gets (``TrainConfig.mix``); without ``mix`` every query is used once per epoch.
    batch_products, batch_size: P > 0 orders each epoch in class-balanced batches of P products x
        (batch_size / P) triplets.
    A negative is never the positive product. When a category has fewer other products than
    ``in_class``, all of them are used; same for ``out_class``.
    """

    def __init__(
        self,
        query_products: Sequence[str],
        product_images: Mapping[str, Sequence[int]],
        product_types: Mapping[str, str],
        *,
        in_class: int = 10,
        out_class: int = 2,
        max_triplets: int = 0,
        query_index: Sequence[int] | None = None,
        candidates: Sequence[Sequence[str]] | None = None,
        sources: Sequence[str] | None = None,
        mix: Mapping[str, float] | None = None,
        queries_per_epoch: int = 0,
        batch_products: int = 0,
        batch_size: int = 32,
    ) -> None:
        missing = sorted({p for p in query_products if p not in product_images})
        if missing:
            raise ValueError(f"queries show products without images: {missing[:5]}")
        self.query_products = list(query_products)
        self.products = sorted(product_images)
        self.label = {p: i for i, p in enumerate(self.products)}
        self.product_images = {p: np.asarray(v, np.int64) for p, v in product_images.items()}
        self.types = dict(product_types)
        self.in_class, self.out_class = in_class, out_class
        self.max_triplets = max_triplets
        self.query_index = np.arange(len(self.query_products)) if query_index is None else np.asarray(query_index, np.int64)
        if len(self.query_index) != len(self.query_products):
            raise ValueError("query_index and query_products differ in length")
        self.candidates = [list(c) for c in candidates] if candidates is not None else [[] for _ in self.query_products]
        if len(self.candidates) != len(self.query_products):
            raise ValueError("candidates and query_products differ in length")
        self.negatives = NegativeSampler({p: self.types[p] for p in self.products})
        self.sources = list(sources) if sources is not None else ["real"] * len(self.query_products)
        if len(self.sources) != len(self.query_products):
            raise ValueError("sources and query_products differ in length")
        self.mix = dict(mix) if mix else None
        self.queries_per_epoch = queries_per_epoch
        self.batch_products, self.batch_size = batch_products, batch_size

    def epoch_queries(self, rng: np.random.Generator) -> np.ndarray:
        """Positions of the queries of one epoch: all once, or drawn per source by ``mix``."""
        n = len(self.query_products)
        if not self.mix:
            return np.arange(n)
        by_source: dict[str, np.ndarray] = {}
        for name in sorted(set(self.sources)):
            by_source[name] = np.flatnonzero(np.array(self.sources) == name)
        weights = {k: w for k, w in self.mix.items() if w > 0 and k in by_source}
        if not weights:
            raise ValueError(f"mix {self.mix} gives weight only to sources with no queries (have {sorted(by_source)})")
        total = self.queries_per_epoch or n
        out = []
        for name, w in sorted(weights.items()):
            pool, want = by_source[name], int(round(total * w / sum(weights.values())))
            repeats, rest = divmod(want, len(pool))
            out += [pool] * repeats + [rng.choice(pool, size=rest, replace=False)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def epoch_counts(self, seed: int) -> dict[str, int]:
        """Queries per source in the epoch ``sample(seed)`` draws."""
        picked = [self.sources[i] for i in self.epoch_queries(np.random.default_rng(seed))]
        return {name: picked.count(name) for name in sorted(set(self.sources))}

    def sample(self, seed: int) -> Triplets:
        """All triplets of one epoch, shuffled, capped at ``max_triplets`` (0 = no cap)."""
        rng = np.random.default_rng(seed)
        cols: dict[str, list] = {k: [] for k in ("query", "positive", "negative", "label_p", "label_n", "in_class")}
        for qi in self.epoch_queries(rng):
            product = self.query_products[qi]
            pool = [c for c in self.candidates[qi] if c != product and c in self.product_images]
            if pool:
                k = min(len(pool), self.in_class + self.out_class)
                picked = rng.choice(np.array(pool), size=k, replace=False).tolist()
                negs = [(n, self.types[n] == self.types[product]) for n in picked]
            else:
                in_neg, out_neg = self.negatives.draw(product, rng, self.in_class, self.out_class)
                negs = [(n, True) for n in in_neg] + [(n, False) for n in out_neg]
            for neg, same in negs:
                cols["query"].append(self.query_index[qi])
                cols["positive"].append(rng.choice(self.product_images[product]))
                cols["negative"].append(rng.choice(self.product_images[neg]))
                cols["label_p"].append(self.label[product])
                cols["label_n"].append(self.label[neg])
                cols["in_class"].append(same)
        trip = Triplets(
            np.array(cols["query"], np.int64), np.array(cols["positive"], np.int64), np.array(cols["negative"], np.int64),
            np.array(cols["label_p"], np.int32), np.array(cols["label_n"], np.int32), np.array(cols["in_class"], bool),
        )
        order = rng.permutation(len(trip))
        if self.max_triplets and len(order) > self.max_triplets:
            order = order[: self.max_triplets]
        if self.batch_products:
            order = balanced_order(trip.label_p[order], self.batch_products, self.batch_size // self.batch_products, rng, order)
        return trip.subset(order)


def balanced_order(labels: np.ndarray, products: int, per_product: int, rng: np.random.Generator,
                   index: np.ndarray | None = None) -> np.ndarray:
    """Reorder rows into batches of ``products`` distinct labels x ``per_product`` rows each.

    labels: int (T,) label of each row; index: the row ids to return (default ``arange(T)``). Each
    label's rows are cut into groups of ``per_product``; groups are shuffled and dealt into batches
    with distinct labels. Leftovers (a label's last short group, and groups no batch could take)
    go at the end, so every batch but the last few is exactly balanced.
    """
    index = np.arange(len(labels)) if index is None else np.asarray(index)
    full, short = [], []
    for label in np.unique(labels):
        rows = index[labels == label]
        for start in range(0, len(rows), per_product):
            group = rows[start : start + per_product]
            (full if len(group) == per_product else short).append((int(label), group))
    pending = deque(full[i] for i in rng.permutation(len(full)))
    batches = []
    while len(pending) >= products:
        batch, used, skipped = [], set(), []
        while pending and len(batch) < products:
            label, group = pending.popleft()
            if label in used:
                skipped.append((label, group))
            else:
                batch.append(group)
                used.add(label)
        pending.extendleft(reversed(skipped))
        if len(batch) < products:  # the labels left cannot fill a batch: leftovers
            pending.extendleft(zip([-1] * len(batch), batch))
            break
        batches.append(np.concatenate(batch))
    short += list(pending)
    tail = [g for _, g in short]
    return np.concatenate(batches + tail) if batches or tail else index[:0]
