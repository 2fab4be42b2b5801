"""Hard-negative selection: the products a trained embedder confuses most with each positive.

For each query (embedded crop of product p): search the catalog's product images, collapse to
products (best image per product), drop p itself and near-duplicates of p (a product sharing an
image file's bytes with p, or whose nearest image lies within ``dup_distance`` of p's own image
embedding), keep the ``pool`` nearest, p's category first (Bell & Bala's in-class negatives are the
hard ones), then the rest by distance. Candidates are the products among the ``search_k`` nearest
images, so a far-away in-class product can be left out in favour of close out-of-class ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from engine.index.base import SearchIndex
from engine.index.brute_force import BruteForceIndex
from training.manifest import Positive
from training.triplets import NegativeSampler


@dataclass(frozen=True)
class HardNegativeConfig:
    """pool: confusable products kept per positive (100-1000 on a real catalog); search_k: image
    neighbours fetched before collapsing to products; dup_distance: embedding distance under which a
    product counts as the same item photographed again."""

    pool: int = 100
    search_k: int = 0  # 0 = automatic: 4 x pool
    dup_distance: float = 0.05

    def __post_init__(self) -> None:
        if self.pool < 1:
            raise ValueError(f"pool must be >= 1, got {self.pool}")
        if self.dup_distance < 0:
            raise ValueError("dup_distance must be >= 0")


def hard_negative_pools(
    query_emb: np.ndarray,
    query_products: Sequence[str],
    image_emb: np.ndarray,
    image_products: Sequence[str],
    image_hashes: Sequence[str],
    types: Mapping[str, str],
    cfg: HardNegativeConfig = HardNegativeConfig(),
    index: SearchIndex | None = None,
) -> list[list[tuple[str, float]]]:
    """Per query, its pool of (product id, distance), category-first then nearest-first.

    query_emb: float32 (Q, D); image_emb: float32 (M, D), one row per catalog image, with the
    product id and content hash of each row.
    """
    image_products = np.asarray(image_products)
    index = index or BruteForceIndex(image_emb)
    k = min(len(image_products), cfg.search_k or 4 * cfg.pool)
    nn = index.search(query_emb, k)
    hashes_of: dict[str, set[str]] = {}
    rows_of: dict[str, list[int]] = {}
    for i, (pid, h) in enumerate(zip(image_products, image_hashes)):
        hashes_of.setdefault(pid, set()).add(h)
        rows_of.setdefault(pid, []).append(i)
    pools = []
    for qi, pos in enumerate(query_products):
        pos_hashes = hashes_of.get(pos, set())
        pos_rows = rows_of.get(pos, [])
        best: dict[str, float] = {}
        for j, d in zip(nn.indices[qi], nn.distances[qi]):
            pid = str(image_products[j])
            if pid == pos or pid in best:
                continue
            best[pid] = float(d)
        keep = []
        for pid, d in best.items():
            if hashes_of[pid] & pos_hashes:
                continue  # the same photo filed under another id
            if pos_rows:
                dd = np.linalg.norm(image_emb[rows_of[pid]][:, None, :] - image_emb[pos_rows][None, :, :], axis=-1).min()
                if dd < cfg.dup_distance:
                    continue  # the same item photographed again
            keep.append((pid, d))
        ptype = types[pos]
        keep.sort(key=lambda t: (types[t[0]] != ptype, t[1]))
        pools.append(keep[: cfg.pool])
    return pools


def refresh_negatives(
    positives: Sequence[Positive],
    query_emb: np.ndarray,
    pools: Sequence[Sequence[tuple[str, float]]],
    image_emb: np.ndarray,
    image_products: Sequence[str],
    types: Mapping[str, str],
    *,
    n_hard: int,
    n_random: int,
    margin: float,
    rng: np.random.Generator,
) -> tuple[list[Positive], dict[str, float]]:
    """New negatives per positive: ``n_hard`` sampled from its pool and ``n_random`` random ones
    of its category; and stats comparing the two (mean d(q, n), share violating the margin).

    query_emb: float32 (Q, D), one row per positive; image_emb: float32 (M, D) with its products.
    """
    sampler = NegativeSampler(types)
    first_row: dict[str, int] = {}
    for i, pid in enumerate(image_products):
        first_row.setdefault(pid, i)
    out, d_hard, d_rand, v_hard, v_rand = [], [], [], [], []
    for pos, q_emb, pool in zip(positives, query_emb, pools):
        hard = [pid for pid, _ in pool]
        hard = rng.choice(np.array(hard), size=min(n_hard, len(hard)), replace=False).tolist() if hard else []
        rand_in, _ = sampler.draw(pos.product_id, rng, n_random, 0)
        rand = [p for p in rand_in if p not in hard][:n_random]
        d_pos = float(np.linalg.norm(q_emb - image_emb[first_row[pos.product_id]]))
        for group, dists, viol in ((hard, d_hard, v_hard), (rand, d_rand, v_rand)):
            for pid in group:
                d = float(np.linalg.norm(q_emb - image_emb[first_row[pid]]))
                dists.append(d)
                viol.append(d_pos + margin > d)
        out.append(replace(pos, negatives=tuple(hard + rand), negative_kinds=tuple(["hard"] * len(hard) + ["random"] * len(rand))))

    def mean(values: list) -> float:
        return float(np.mean(values)) if values else float("nan")

    stats = {
        "positives": len(out), "hard_negatives": len(d_hard), "random_negatives": len(d_rand),
        "mean_d_hard": mean(d_hard), "mean_d_random": mean(d_rand),
        "margin_violations_hard": mean(v_hard), "margin_violations_random": mean(v_rand),
        "mean_pool_size": float(np.mean([len(p) for p in pools])) if len(pools) else 0.0,
    }
    return out, stats
