"""Nearest-neighbour engines side by side on the same data, in one process: exact numpy, Showroom's
tuned ScaNN index, faiss (flat, IVF-PQ fast scan with exact re-rank, HNSW) and hnswlib.

    python -m benchmarks.ann --n 100000                       # quick: 100k x 256 clustered synthetic
    python -m benchmarks.ann --n 1000000 --dim 256            # headline: 1M x 256
    python -m benchmarks.ann --serving-folder SERVE_FOLDER    # a real catalog: products searched with scene crops

Every system gets its settings chosen the same way: on *tuning* queries, the setting with the
highest single-thread throughput (one query per call) among those reaching recall@k >= the target;
the table then reports that setting on separate *test* queries: recall@k against exact search,
single-thread queries per second one query per call and in one batch, build seconds (on all
cores), index size, and each row's ratio to the best other row. Recall counts ties: an item as near
as the k-th exact neighbour is a hit (the IKEA catalog has one photo under several product ids). ScaNN's settings are chosen by
Showroom's own tuner (``engine.index.tuning``), exactly as ``serving.build_index`` does.

Synthetic data: N unit vectors around N/1000 random unit centres with isotropic Gaussian noise
scaled so that two items of a cluster have cosine 0.65 on average (measured and printed), like a
trained embedder's near-duplicates; tuning and test queries are further draws from the same
clusters, not in the index. Real data (``--serving-folder``): the ``products`` index's vectors are
the database and the ``scenes`` crops' embeddings the queries (half tuning, half test).

faiss-cpu and hnswlib come from requirements-bench.txt; a system whose package is missing is
reported as skipped. Prints the table (and ``--json`` writes it); asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from engine.index.brute_force import BruteForceIndex
from engine.index.scann_backend import ScannParams
from engine.index.tuning import TuningConfig, recall_at_k, tune_index
from engine.runtime import configure_runtime

logger = logging.getLogger("benchmarks.ann")

SYSTEMS = ("numpy", "scann", "faiss-flat", "faiss-ivfpq", "faiss-hnsw", "hnswlib")
Search = Callable[[np.ndarray, int], np.ndarray]  # (Q, D) queries, k -> int (Q, k) neighbour rows


@dataclass
class Row:
    """One system's line of the table."""

    system: str
    setting: str = ""
    recall: float = float("nan")
    qps_one: float = float("nan")
    qps_batched: float = float("nan")
    build_s: float = float("nan")
    index_mb: float = float("nan")
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    name: str
    db: np.ndarray
    tune_q: np.ndarray
    test_q: np.ndarray
    description: str


def clustered(n: int, dim: int, n_queries: int, seed: int, cosine: float = 0.65, per_cluster: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` database and ``n_queries`` query unit vectors float32 (·, dim) around n/per_cluster centres;
    noise per dimension sigma = sqrt((1/cosine - 1)/dim), so two members of a cluster have cosine ~``cosine``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, n // per_cluster), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = math.sqrt((1.0 / cosine - 1.0) / dim)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        out, labels = np.empty((m, dim), np.float32), rng.integers(0, len(centres), m)
        for s in range(0, m, 100_000):
            v = centres[labels[s : s + 100_000]] + rng.normal(scale=sigma, size=(len(labels[s : s + 100_000]), dim)).astype(np.float32)
            out[s : s + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out, labels

    db, labels = draw(n)
    same = [np.flatnonzero(labels == c)[:2] for c in range(min(len(centres), 500))]
    pairs = np.array([p for p in same if len(p) == 2])
    logger.info("within-cluster cosine: %.3f (mean over %d pairs)", float(np.mean(np.sum(db[pairs[:, 0]] * db[pairs[:, 1]], 1))), len(pairs))
    return db, draw(n_queries)[0]


def synthetic(n: int, dim: int, n_queries: int, seed: int) -> Data:
    db, q = clustered(n, dim, 2 * n_queries, seed)
    return Data(f"synthetic {n:,} x {dim}", db, q[:n_queries], q[n_queries:],
                f"clustered synthetic: {n:,} unit vectors x {dim}, {max(10, n // 1000)} clusters, within-cluster cosine 0.65; "
                f"{n_queries} tuning + {n_queries} test queries drawn from the same clusters (not indexed)")


def serving_data(folder: Path, seed: int) -> Data:
    """Products as the database, scene-crop embeddings as queries (shuffled, half tuning, half test)."""
    folder = Path(folder)
    if (folder / "CURRENT").is_file():
        folder = folder / (folder / "CURRENT").read_text().strip()
    db = np.load(folder / "products" / "vectors.npy")
    q = np.load(folder / "scenes" / "vectors.npy")
    q = q[np.random.default_rng(seed).permutation(len(q))]
    half = len(q) // 2
    return Data(f"IKEA {len(db):,} x {db.shape[1]}", db, q[:half], q[half:],
                f"{folder}: {len(db):,} product embeddings x {db.shape[1]} as the database; {len(q):,} scene-crop embeddings as "
                f"queries ({half} tuning, {len(q) - half} test)")


# ---------------------------------------------------------------- measuring


def qps_one(search: Search, q: np.ndarray, k: int, repeats: int = 3, budget_s: float = 2.0) -> float:
    """Queries per second, one query per call: best of ``repeats`` passes over up to all of ``q``
    (fewer for slow systems, about ``budget_s`` a pass)."""
    t = time.perf_counter()
    search(q[:1], k)
    m = int(max(5, min(len(q), budget_s / max(time.perf_counter() - t, 1e-6))))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(m):
            search(q[i : i + 1], k)
        best = min(best, time.perf_counter() - t)
    return m / best


def qps_batched(search: Search, q: np.ndarray, k: int, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        search(q, k)
        best = min(best, time.perf_counter() - t)
    return len(q) / best


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def choose(grid_a: Sequence, grid_b: Sequence, recall_of: Callable[[object, object], float], speed_of: Callable[[object, object], float],
           target: float) -> tuple[object, object, float] | None:
    """The fastest (a, b) reaching ``target``: for each a (ascending cost), the smallest b that does
    (recall grows with b), then the candidates timed. ``None`` if nothing reaches it."""
    cands, hi, stalled = [], len(grid_b) - 1, 0
    for a in grid_a:
        if recall_of(a, grid_b[hi]) < target:
            continue
        lo, top = 0, hi
        while lo < top:
            mid = (lo + top) // 2
            if recall_of(a, grid_b[mid]) >= target:
                top = mid
            else:
                lo = mid + 1
        stalled = stalled + 1 if cands and lo == hi else 0
        hi = lo
        cands.append((a, grid_b[hi]))
        if hi == 0 or stalled >= 2:
            break
    if not cands:
        return None
    timed = [(speed_of(a, b), a, b) for a, b in cands]
    best = max(timed, key=lambda t: t[0])
    return best[1], best[2], best[0]


# ---------------------------------------------------------------- systems


def run_numpy(data: Data, k: int, truth: np.ndarray, args) -> Row:
    t = time.perf_counter()
    index = BruteForceIndex(data.db)
    build = time.perf_counter() - t
    with threadpool_limits(limits=1):
        search = lambda q, kk: index.search(q, kk).indices
        row = Row("numpy exact", "float32 BLAS, 1 thread", _recall(data, search(data.test_q, k), data.test_q, truth),
                  qps_one(search, data.test_q, k), qps_batched(search, data.test_q[: min(len(data.test_q), 256)], k, repeats=1),
                  build, data.db.nbytes / 2**20)
    return row


def run_scann(data: Data, k: int, truth: np.ndarray, args) -> Row:
    cfg = TuningConfig(target_recall=args.target_recall, k=k, n_queries=len(data.tune_q), budget_s=args.scann_budget, allow_exact=False,
                       seed=args.seed)
    t = time.perf_counter()
    index, tuning = tune_index(data.db, data.tune_q, cfg, ScannParams(brute_force_below=0))
    tuning_s = time.perf_counter() - t
    if tuning.chosen != "scann":
        return Row("Showroom ScaNN (tuned)", note=tuning.reason, extra={"tuning": asdict(tuning)})
    p = index.params
    chosen_tree = next(tr for tr in tuning.trees if tr["leaves"] == p.leaves and tr["dims_per_block"] == p.dims_per_block
                       and tr["anisotropic_threshold"] == p.anisotropic_threshold)
    index.set_threads(1)
    search = lambda q, kk: index.search(q, kk).indices  # through the project's SearchIndex
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp))
        size = folder_mb(Path(tmp))
    row = Row("Showroom ScaNN (tuned)", f"{p.leaves} leaves, AH {p.dims_per_block} dims/block thr {p.anisotropic_threshold}, "
              f"search {p.leaves_to_search}, reorder {p.reorder}, {p.metric}", _recall(data, search(data.test_q, k), data.test_q, truth),
              qps_one(search, data.test_q, k), qps_batched(search, data.test_q, k), chosen_tree["build_s"], size,
              f"tuner: {len(tuning.trees)} trees in {tuning_s:.0f}s, tuning recall {tuning.recall:.3f}",
              {"tuning": asdict(tuning), "tuning_s": round(tuning_s, 1)})
    return row


def run_faiss_flat(data: Data, k: int, truth: np.ndarray, args) -> Row:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index = faiss.IndexFlatL2(data.db.shape[1])
    index.add(data.db)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    search = lambda q, kk: index.search(q, kk)[1]
    return Row("faiss Flat", "IndexFlatL2", _recall(data, search(data.test_q, k), data.test_q, truth), qps_one(search, data.test_q, k),
               qps_batched(search, data.test_q, k, repeats=1), build, len(faiss.serialize_index(index)) / 2**20)


def run_faiss_ivfpq(data: Data, k: int, truth: np.ndarray, tune_truth: np.ndarray, args) -> Row:
    """IVF lists about 1, 2 and 4 x sqrt(N) (powers of two), 4-bit fast-scan PQ of 2 dims per code,
    exact re-rank from the stored vectors; each built, swept (nprobe x re-rank depth), the fastest kept."""
    import faiss

    n = len(data.db)
    nlists = sorted({int(2 ** round(math.log2(max(16, m * math.sqrt(n))))) for m in (1, 2, 4)})  # 1024..4096 at 1M
    best_row, tried = None, []
    for nlist in nlists:
        row, qps_tune = _faiss_ivfpq_one(faiss, data, k, truth, tune_truth, nlist, args)
        tried.append(f"IVF{nlist}: " + (f"{qps_tune:,.0f} q/s on the tuning queries" if row.setting else "target not reached"))
        if row.setting and (best_row is None or qps_tune > best_row[1]):
            best_row = (row, qps_tune)
        elif best_row is None and nlist == nlists[-1]:
            best_row = (row, 0.0)
        gc.collect()
    row = best_row[0]
    row.note = "tried " + "; ".join(tried)
    return row


def _faiss_ivfpq_one(faiss, data: Data, k: int, truth: np.ndarray, tune_truth: np.ndarray, nlist: int, args) -> tuple[Row, float]:
    n, d = data.db.shape
    key = f"IVF{nlist},PQ{d // 2}x4fs,RFlat"
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index = faiss.index_factory(d, key)
    sample = data.db[np.random.default_rng(args.seed).choice(n, min(n, 64 * nlist), replace=False)]
    index.train(sample)
    index.add(data.db)
    build = time.perf_counter() - t
    ivf = faiss.extract_index_ivf(index)

    def at(nprobe: int, k_factor: float) -> Search:
        def search(q: np.ndarray, kk: int) -> np.ndarray:
            ivf.nprobe = nprobe
            index.k_factor = k_factor
            return index.search(q, kk)[1]
        return search

    grid_p = [p for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if p <= nlist]
    grid_f = [f / k for f in (20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)]
    best = choose(grid_p, grid_f, lambda p, f: _recall(data, at(p, f)(data.tune_q, k), data.tune_q, tune_truth),  # recall sweeps on all cores
                  lambda p, f: _one_thread(faiss, lambda: qps_one(at(p, f), data.tune_q, k, budget_s=0.5)), args.target_recall)
    faiss.omp_set_num_threads(1)
    size = len(faiss.serialize_index(index)) / 2**20
    if best is None:
        return Row("faiss IVF-PQfs+rerank", "", note=f"{key}: target not reached", build_s=build, index_mb=size), 0.0
    p, f, qps_tune = best
    search = at(p, f)
    row = Row("faiss IVF-PQfs+rerank", f"{key}, nprobe {p}, re-rank {round(f * k)}", _recall(data, search(data.test_q, k), data.test_q, truth),
              qps_one(search, data.test_q, k), qps_batched(search, data.test_q, k), build, size)
    return row, qps_tune


def run_faiss_hnsw(data: Data, k: int, truth: np.ndarray, tune_truth: np.ndarray, args) -> Row:
    import faiss

    d = data.db.shape[1]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(d, args.hnsw_m)
    index.hnsw.efConstruction = args.hnsw_ef_construction
    index.add(data.db)
    build = time.perf_counter() - t

    def at(ef: int, _: object = None) -> Search:
        def search(q: np.ndarray, kk: int) -> np.ndarray:
            index.hnsw.efSearch = ef
            return index.search(q, kk)[1]
        return search

    best = choose(EF_GRID, [None], lambda ef, _: _recall(data, at(ef)(data.tune_q, k), data.tune_q, tune_truth),
                  lambda ef, _: _one_thread(faiss, lambda: qps_one(at(ef), data.tune_q, k, budget_s=0.5)), args.target_recall)
    faiss.omp_set_num_threads(1)
    size = len(faiss.serialize_index(index)) / 2**20
    name = f"faiss HNSW{args.hnsw_m}"
    if best is None:
        return Row(name, note="target not reached", build_s=build, index_mb=size)
    search = at(best[0])
    row = Row(name, f"efConstruction {args.hnsw_ef_construction}, efSearch {best[0]}", _recall(data, search(data.test_q, k), data.test_q, truth),
              qps_one(search, data.test_q, k), qps_batched(search, data.test_q, k), build, size)
    return row


def run_hnswlib(data: Data, k: int, truth: np.ndarray, tune_truth: np.ndarray, args) -> Row:
    import hnswlib

    n, d = data.db.shape
    t = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=d)
    index.init_index(max_elements=n, M=args.hnsw_m, ef_construction=args.hnsw_ef_construction, random_seed=args.seed)
    index.add_items(data.db, num_threads=os.cpu_count() or 1)
    build = time.perf_counter() - t

    def at(ef: int, _: object = None) -> Search:
        def search(q: np.ndarray, kk: int) -> np.ndarray:
            index.set_ef(max(ef, kk))
            return index.knn_query(q, k=kk, num_threads=1)[0]
        return search

    best = choose(EF_GRID, [None], lambda ef, _: _recall(data, at(ef)(data.tune_q, k), data.tune_q, tune_truth),
                  lambda ef, _: qps_one(at(ef), data.tune_q, k, budget_s=0.5), args.target_recall)
    with tempfile.TemporaryDirectory() as tmp:
        index.save_index(str(Path(tmp) / "h.bin"))
        size = folder_mb(Path(tmp))
    name = f"hnswlib M{args.hnsw_m}"
    if best is None:
        return Row(name, note="target not reached", build_s=build, index_mb=size)
    search = at(best[0])
    row = Row(name, f"ef_construction {args.hnsw_ef_construction}, ef {best[0]}", _recall(data, search(data.test_q, k), data.test_q, truth),
              qps_one(search, data.test_q, k), qps_batched(search, data.test_q, k), build, size)
    return row


def _recall(data: Data, ids: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
    return recall_at_k(ids, truth, queries=queries, vectors=data.db)


EF_GRID = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def _one_thread(faiss, fn: Callable[[], float]) -> float:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return fn()
    finally:
        faiss.omp_set_num_threads(threads)


# ---------------------------------------------------------------- table


def table(rows: list[Row], k: int) -> str:
    def ratio(r: Row, attr: str) -> str:
        others = [getattr(o, attr) for o in rows if o is not r and np.isfinite(getattr(o, attr))]
        v = getattr(r, attr)
        return f"{v / max(others):.2f}x" if others and np.isfinite(v) else "-"

    head = (f"| system | setting | recall@{k} | q/s 1-by-1 | q/s batched | build s | index MB | 1-by-1 ÷ best peer | "
            f"batched ÷ best peer |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if not np.isfinite(r.recall):
            lines.append(f"| {r.system} | {r.setting} | - | - | - | {_f(r.build_s, 1)} | {_f(r.index_mb, 0)} | - | - |  *{r.note}*")
            continue
        lines.append(f"| {r.system} | {r.setting} | {r.recall:.4f} | {r.qps_one:,.0f} | {r.qps_batched:,.0f} | {_f(r.build_s, 1)} | "
                     f"{_f(r.index_mb, 0)} | {ratio(r, 'qps_one')} | {ratio(r, 'qps_batched')} |")
    return "\n".join(lines)


def _f(v: float, digits: int) -> str:
    return f"{v:,.{digits}f}" if np.isfinite(v) else "-"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ann", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="synthetic database size (100k: quick; 1000000: the headline)")
    p.add_argument("--dim", type=int, default=256, help="synthetic embedding dimension")
    p.add_argument("--queries", type=int, default=1000, help="synthetic queries: this many for tuning and as many again for the test")
    p.add_argument("--serving-folder", type=Path, default=None, help="benchmark a serving folder's real embeddings instead (products as "
                   "the database, scene crops as queries)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@k every system's setting must reach on the tuning queries")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    p.add_argument("--scann-budget", type=float, default=300.0, help="seconds the ScaNN tuner may spend building trees")
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node (faiss and hnswlib)")
    p.add_argument("--hnsw-ef-construction", type=int, default=64, help="HNSW build beam (faiss and hnswlib)")
    p.add_argument("--seed", type=int, default=0, help="data, query split and samples")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the ScaNN tuning log here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure_runtime()  # before ScaNN (and TensorFlow) load
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {','.join(SYSTEMS)}")

    t0 = time.perf_counter()
    data = serving_data(args.serving_folder, args.seed) if args.serving_folder else synthetic(args.n, args.dim, args.queries, args.seed)
    logger.info("data: %s (%.0fs)", data.description, time.perf_counter() - t0)
    exact = BruteForceIndex(data.db)
    nn = exact.search(data.test_q, args.k)
    truth, tune_truth = nn.indices, exact.search(data.tune_q, args.k).indices
    cos = 1 - nn.distances**2 / 2
    logger.info("exact neighbours computed (%.0fs); test queries' cosine to their 1st / 10th neighbour: %.3f / %.3f",
                time.perf_counter() - t0, float(cos[:, 0].mean()), float(cos[:, -1].mean()))
    del exact
    runners = {"numpy": lambda: run_numpy(data, args.k, truth, args), "scann": lambda: run_scann(data, args.k, truth, args),
               "faiss-flat": lambda: run_faiss_flat(data, args.k, truth, args),
               "faiss-ivfpq": lambda: run_faiss_ivfpq(data, args.k, truth, tune_truth, args),
               "faiss-hnsw": lambda: run_faiss_hnsw(data, args.k, truth, tune_truth, args),
               "hnswlib": lambda: run_hnswlib(data, args.k, truth, tune_truth, args)}
    rows = []
    for name in systems:
        t = time.perf_counter()
        try:
            row = runners[name]()
        except ImportError as exc:
            row = Row(name, note=f"skipped: {exc} (pip install -r requirements-bench.txt)")
        rows.append(row)
        gc.collect()
        logger.info("%s: %s (%.0fs)", name, {k: v for k, v in asdict(row).items() if k != "extra"}, time.perf_counter() - t)

    print(f"\n{data.description}\ntarget recall@{args.k} >= {args.target_recall} (settings chosen on the tuning queries, "
          f"measured on the test queries); single thread for queries, {os.cpu_count()} cores for builds; "
          f"index MB = serialised size\n")
    print(table(rows, args.k))
    for r in rows:
        if r.note:
            print(f"- {r.system}: {r.note}")
    scann = next((r for r in rows if "tuning" in r.extra), None)
    if scann:
        tn = scann.extra["tuning"]
        print(f"\nScaNN tuner: {tn['reason']}; chose {tn['params']}; measured recall@{tn['k']} {tn['recall']} on {tn['queries']}")
        for tr in tn["trees"]:
            b = tr["best"]
            print(f"  tree {tr['leaves']} leaves, {tr['dims_per_block']} dims/block, threshold {tr['anisotropic_threshold']}: "
                  f"build {tr['build_s']}s; " + (f"best: search {b['leaves_to_search']}, reorder {b['reorder']}, recall {b['recall']}, "
                                                 f"{b['qps_one']:.0f} q/s 1-by-1" if b else "target not reached"))
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; peak memory {_peak_rss_gb():.1f} GB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": data.description, "target_recall": args.target_recall, "k": args.k,
                                         "rows": [asdict(r) for r in rows]}, indent=1, default=float))
    return 0


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


if __name__ == "__main__":
    raise SystemExit(main())
