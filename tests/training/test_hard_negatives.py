"""Hard-negative pools against a brute-force reference, and near-duplicate exclusion."""

from __future__ import annotations

import numpy as np

from training.hard_negatives import HardNegativeConfig, hard_negative_pools


def reference_pool(query, pos, image_emb, image_products, types, pool):
    """Every other product's nearest image distance, category first, with plain loops."""
    best: dict[str, float] = {}
    for row, pid in zip(image_emb, image_products):
        if pid == pos:
            continue
        d = float(np.sqrt(((row - query) ** 2).sum()))
        best[pid] = min(d, best.get(pid, np.inf))
    return [p for p, _ in sorted(best.items(), key=lambda t: (types[t[0]] != types[pos], t[1]))][:pool]


def test_pools_match_brute_force_reference():
    rng = np.random.default_rng(0)
    products = [f"p{i}" for i in range(40)]
    types = {p: "AB"[i % 2] for i, p in enumerate(products)}
    image_products = products + products[:10]  # some products have two images
    image_emb = rng.normal(size=(len(image_products), 6)).astype(np.float32)
    hashes = [f"h{i}" for i in range(len(image_products))]
    queries = rng.normal(size=(12, 6)).astype(np.float32)
    positives = [products[i] for i in rng.integers(0, 40, 12)]
    cfg = HardNegativeConfig(pool=7, search_k=len(image_products), dup_distance=0.0)
    pools = hard_negative_pools(queries, positives, image_emb, image_products, hashes, types, cfg)
    for q, pos, pool in zip(queries, positives, pools):
        assert [p for p, _ in pool] == reference_pool(q, pos, image_emb, image_products, types, 7)
        assert pos not in [p for p, _ in pool]
        assert all(types[p] == types[pos] for p, _ in pool)  # 19 other in-class products > pool of 7


def test_near_duplicates_are_excluded():
    image_products = ["pos", "copy", "twin", "far"]
    types = dict.fromkeys(image_products, "T")
    image_emb = np.array([[0, 0], [5, 5], [0.01, 0], [3, 0]], np.float32)
    hashes = ["a", "a", "b", "c"]  # "copy" is the same file as "pos"; "twin" embeds almost on top of it
    pools = hard_negative_pools(np.array([[0.0, 0.0]], np.float32), ["pos"], image_emb, image_products, hashes, types,
                                HardNegativeConfig(pool=10, dup_distance=0.05))
    assert [p for p, _ in pools[0]] == ["far"]
