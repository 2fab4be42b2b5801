"""ScaNN against exact brute force, side by side in one run: build time, single-thread QPS, recall@10.

    python -m benchmarks.scann_vs_bruteforce --n 1000000 --dim 256        # clustered synthetic vectors
    python -m benchmarks.scann_vs_bruteforce --index-folder OUT/products   # a real catalog's embeddings

Clustered data: N points around N/1000 Gaussian centres with unit-norm embeddings, like a trained
embedder's output (random uniform vectors would make every method look bad and tell nothing).
Queries are held-out points from the same clusters. Prints ratios, asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from engine.ann import BruteForceIndex, ScannIndex, ScannParams


def clustered(n: int, dim: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, n // 1000), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 100_000):
            k = min(100_000, m - s)
            v = centres[rng.integers(0, len(centres), k)] + rng.normal(scale=0.35 / np.sqrt(dim), size=(k, dim)).astype(np.float32) * np.sqrt(dim) * 0.1
            out[s : s + k] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="database size (synthetic)")
    p.add_argument("--dim", type=int, default=256, help="embedding dimension (synthetic)")
    p.add_argument("--queries", type=int, default=1000, help="number of queries")
    p.add_argument("--index-folder", default=None, help="use the vectors of a saved CatalogIndex folder instead (queries: a held-out 10%%)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--leaves", type=int, default=0)
    p.add_argument("--leaves-to-search", type=int, default=0)
    p.add_argument("--reorder", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.index_folder:
        vectors = np.load(Path(args.index_folder) / "vectors.npy")
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(vectors))
        n_q = max(1, min(args.queries, len(vectors) // 10))
        queries, db = vectors[order[:n_q]], vectors[order[n_q:]]
        source = f"{args.index_folder} ({len(db)} items, D={db.shape[1]})"
    else:
        t = time.perf_counter()
        db, queries = clustered(args.n, args.dim, args.queries, args.seed)
        source = f"clustered synthetic {args.n} x {args.dim} (made in {time.perf_counter() - t:.1f}s)"

    exact = BruteForceIndex(db)
    truth = exact.search(queries, args.k)  # batched ground truth
    bf_build = 0.0
    with threadpool_limits(limits=1):  # single-threaded, like ScaNN below
        t = time.perf_counter()
        for q in queries[:200]:
            exact.search(q[None], args.k)
        bf_qps = 200 / (time.perf_counter() - t)

    params = ScannParams(brute_force_below=0, leaves=args.leaves, leaves_to_search=args.leaves_to_search, reorder=args.reorder)
    t = time.perf_counter()
    ann = ScannIndex(db, params)
    build = time.perf_counter() - t
    ann._searcher.set_num_threads(1)
    t = time.perf_counter()
    approx = [ann.search(q[None], args.k).indices[0] for q in queries]
    scann_qps = len(queries) / (time.perf_counter() - t)
    recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(approx, truth.indices)]))

    print(f"data: {source}; {len(queries)} queries, k={args.k}")
    print(f"ScaNN params: {ann.params}")
    print(f"{'method':<12}{'build s':>10}{'QPS (1 thread)':>18}{'recall@' + str(args.k):>12}")
    print(f"{'brute force':<12}{bf_build:>10.1f}{bf_qps:>18.1f}{1.0:>12.4f}")
    print(f"{'ScaNN':<12}{build:>10.1f}{scann_qps:>18.1f}{recall:>12.4f}")
    print(f"ScaNN / brute force QPS: {scann_qps / bf_qps:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
