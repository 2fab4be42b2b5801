"""A products index changed in place (``engine.index.delta``) against a full rebuild, side by side in one run.

    python -m benchmarks.catalog_update --n 1000000 --dim 256 --share 0.01     # synthetic, ScaNN
    python -m benchmarks.catalog_update --serving-folder OUT --catalog DIR      # a real serving folder, through the CLI

Synthetic (``benchmarks.ann``'s clustered generator): a ScaNN index of N vectors (settings derived
from N, as an untuned build) is saved; then each of three deltas is applied to it as
``serving.build_index`` does (``engine.index.delta.write_delta_folder``: a segmented folder, the
base hard-linked): **add** ``share`` x N new products (each a photo file whose vector the stand-in
model returns), **remove** as many, **update** as many with new photos; and the add once more with
``compact=True``, the way every delta ran before segments (the whole folder loaded and verified,
ScaNN changed in place and its recall checked on 200 queries, the whole folder written). Beside
them, a **full rebuild** builds and saves the index of the post-add vectors from scratch (no
embedding counted: the rebuild's real cost is higher). For every row: seconds by stage, the ratio
to the full rebuild, the time a starting worker then takes to load the result (every file hashed) and
a serving worker to reload it (a segment's base reused from memory when it is the one it serves), the
median time of one query through it and through the index served before (alternated, 200 queries), and
recall@10 against exact search on test queries drawn from the same clusters, before and after
(measured outside the timing).

Real folder (``--serving-folder``): a copy of its current generation (hard links) gets
``--remove`` of ``share`` of its products, then ``--add`` of them back (their photos embedded again),
each a ``python -m serving.build_index`` process, timed beside a full ``build_index --model
<the generation's model> --catalog DIR`` into another folder; the products' vectors after the round
trip are compared with the original ones. ``--views MANIFEST`` (for a folder built with those
views): the add and the full build blend them too, so the round trip checks that a delta's blend is
the full build's.

Prints the table (``--json`` writes it); asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.ann import clustered
from engine.data.catalog import ProductImage
from engine.index.backends import BackendSpec
from engine.index.brute_force import BruteForceIndex
from engine.index.catalog_index import CatalogIndex, Item
from engine.index.delta import CatalogDelta, write_delta_folder
from engine.index.scann_backend import ScannIndex, ScannParams
from engine.index.tuning import recall_at_k
from engine.runtime import configure_runtime

logger = logging.getLogger("benchmarks.catalog_update")
ROOT = Path(__file__).resolve().parents[1]


def _recall(index: CatalogIndex, queries: np.ndarray, k: int) -> float:
    exact = BruteForceIndex(index.vectors).search(queries, k).indices
    return float(recall_at_k(index.index.search(queries, k).indices, exact, queries=queries, vectors=index.vectors))


def _latency(index: CatalogIndex, base: CatalogIndex, queries: np.ndarray, k: int) -> tuple[float, float]:
    """Median ms of one query through ``index``'s search index and through ``base``'s, alternated query by query."""
    a, b = [], []
    for q in queries:
        for out, idx in ((a, index.index), (b, base.index)):
            t = time.perf_counter()
            idx.search(q[None], k)
            out.append(time.perf_counter() - t)
    return 1000 * float(np.median(a)), 1000 * float(np.median(b))


def synthetic(args: argparse.Namespace) -> list[dict]:
    """The three deltas and the full rebuild on clustered synthetic vectors (see the module docstring)."""
    m = max(1, round(args.share * args.n))
    db, queries = clustered(args.n + 2 * m, args.dim, args.queries, args.seed)
    base, fresh = db[: args.n], db[args.n:]
    items = [Item(f"p{i}#{i}", f"p{i}", "", f"t{i % 50}", f"p{i}.jpg") for i in range(args.n)]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        index = CatalogIndex.from_vectors(base, items, "bench", BackendSpec("scann", ScannParams(brute_force_below=0)), catalog_root=str(tmp))
        index.photo_hashes = [f"{i:064x}" for i in range(args.n)]
        index.save(tmp / "base")
        logger.info("base index of %d built and saved in %.1fs", args.n, time.perf_counter() - t)
        before = _recall(index, queries, args.k)
        del index
        photos = tmp / "photos"
        photos.mkdir()
        by_path: dict[Path, np.ndarray] = {}
        for j, v in enumerate(fresh):
            path = photos / f"new{j}.jpg"
            path.write_bytes(f"photo {j}".encode())
            by_path[path.resolve()] = v

        def embed(paths: Sequence[Path]) -> np.ndarray:
            return np.stack([by_path[Path(p).resolve()] for p in paths])

        rng = np.random.default_rng(args.seed)
        picked = rng.choice(args.n, 2 * m, replace=False)
        deltas = {
            "add": CatalogDelta(add=tuple(ProductImage(f"new{j}", "", "t0", photos / f"new{j}.jpg", 2) for j in range(m))),
            "remove": CatalogDelta(remove=tuple(f"p{i}" for i in picked[:m])),
            "update": CatalogDelta(update=tuple(ProductImage(f"p{i}", "", f"t{i % 50}", photos / f"new{m + j}.jpg", 2)
                                                for j, i in enumerate(picked[m:]))),
        }
        served = CatalogIndex.load(tmp / "base", model_fingerprint="bench")  # what a running server holds
        runs = [(name, delta, False) for name, delta in deltas.items()] + [("add", deltas["add"], True)]
        for name, delta, compact in runs:
            label = f"{name} {m:,} products" + (", compacting (the whole index loaded, changed and rewritten)" if compact else "")
            t0 = time.perf_counter()
            # what build_index runs: segmented unless compacting (its own recall check on 200 of the queries when it compacts)
            report = write_delta_folder(tmp / "base", tmp / name, delta, embed, model_fingerprint="bench", queries=queries,
                                        target_recall=args.target_recall, k=args.k, seed=args.seed, compact=compact)
            t1 = time.perf_counter()
            updated = CatalogIndex.load(tmp / name, model_fingerprint="bench")  # as a starting worker loads it: every file hashed
            t2 = time.perf_counter()
            reloaded = CatalogIndex.load(tmp / name, model_fingerprint="bench", reuse=served)  # as a serving worker reloads it
            t3 = time.perf_counter()
            assert reloaded.items == updated.items
            del reloaded
            latency = _latency(updated, served, queries[:200], args.k)
            rows.append({"row": label, "rows": len(updated), "total_s": t1 - t0, "serve_load_s": t2 - t1, "reload_s": t3 - t2,
                         "recall_before": before, "query_ms": latency,
                         "recall_after": _recall(updated, queries, args.k), "method": report.method, "stages": report.seconds,
                         "embedded": report.embedded})
            if name == "add":
                post_add = updated.vectors, updated.items
            del updated
            shutil.rmtree(tmp / name)
        t0 = time.perf_counter()
        full = CatalogIndex.from_vectors(post_add[0], list(post_add[1]), "bench", BackendSpec("scann", ScannParams(brute_force_below=0)))
        full.save(tmp / "full")
        t1 = time.perf_counter()
        rows.append({"row": f"full rebuild of {len(full):,} (after add)", "rows": len(full), "total_s": t1 - t0, "recall_before": before, "recall_after": _recall(full, queries, args.k),
                     "method": f"ScaNN built from the vectors, {full.index.params.leaves} leaves", "stages": {}, "embedded": 0})
    return rows


def real_folder(args: argparse.Namespace) -> list[dict]:
    """``--remove`` then ``--add`` of ``share`` of a serving folder's products, beside a full build (see the module docstring)."""
    src = Path(args.serving_folder)
    generation = (src / "CURRENT").read_text().strip()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        work = tmp / "served"
        work.mkdir()
        shutil.copytree(src / generation, work / generation, copy_function=os.link)
        (work / "CURRENT").write_text(generation + "\n")
        original = CatalogIndex.load(work / generation / "products")
        with open(Path(args.catalog) / "products.csv", newline="", encoding="utf-8-sig") as fh:
            table = list(csv.DictReader(fh))
        ids = sorted({r["product_id"] for r in table})
        rng = np.random.default_rng(args.seed)
        chosen = set(rng.choice(ids, max(1, round(args.share * len(ids))), replace=False).tolist())
        with open(tmp / "add.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(r for r in table if r["product_id"] in chosen)
        (tmp / "remove.txt").write_text("".join(f"{p}\n" for p in sorted(chosen)))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "serving.build_index"]
        views = ["--views", str(args.views)] if args.views else []
        steps = [(f"remove {len(chosen)} products", cli + ["--out", str(work), "--remove", f"@{tmp / 'remove.txt'}"]),
                 (f"add them back ({len(chosen)} products{', with their views' if args.views else ''})",
                  cli + ["--out", str(work), "--catalog", str(args.catalog), "--add", str(tmp / "add.csv")] + views),
                 ("full build", cli + ["--model", str(work / generation / "model.keras"), "--catalog", str(args.catalog),
                                       "--out", str(tmp / "full")] + (["--detector-weights", args.detector_weights] if args.detector_weights else [])
                  + views)]
        for name, cmd in steps:
            t = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
            rows.append({"row": name, "total_s": time.perf_counter() - t, "printed": done.stdout.strip().splitlines()[-2:]})
        after = CatalogIndex.load(work / (work / "CURRENT").read_text().strip() / "products")
        va = {it.product_id: v for it, v in zip(original.items, original.vectors)}
        diff = max(float(np.abs(va[it.product_id] - v).max()) for it, v in zip(after.items, after.vectors) if it.product_id in chosen)
        rows.append({"row": "round trip", "products": len(after), "same_products": sorted(va) == sorted(it.product_id for it in after.items),
                     "max_abs_vector_difference_of_re_added": diff})
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.catalog_update", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="synthetic: vectors in the index")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--share", type=float, default=0.01, help="share of the index each delta adds, removes or updates")
    p.add_argument("--queries", type=int, default=1000, help="synthetic: test queries for recall")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target-recall", type=float, default=0.95, help="a delta below it rebuilds the ANN index from the vectors")
    p.add_argument("--serving-folder", type=Path, default=None, help="a real serving folder instead of synthetic vectors")
    p.add_argument("--catalog", type=Path, default=None, help="with --serving-folder: its catalog")
    p.add_argument("--detector-weights", default=None, help="with --serving-folder: the detector of its full build")
    p.add_argument("--views", type=Path, default=None, help="with --serving-folder: the in-room views it was built with (build_index --views)")
    p.add_argument("--tmp", type=Path, default=None, help="where the temporary indexes go (default: the system's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_runtime()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.serving_folder is not None and args.catalog is None:
        raise SystemExit("--serving-folder needs --catalog")
    rows = real_folder(args) if args.serving_folder else synthetic(args)
    full = next((r["total_s"] for r in rows if r["row"].startswith("full")), None)
    for r in rows:
        if "total_s" in r and full:
            r["share_of_full"] = r["total_s"] / full
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


def _table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        parts = [r["row"]]
        if "total_s" in r:
            parts.append(f"{r['total_s']:.1f}s" + (f" ({r['share_of_full']:.1%} of the full rebuild)" if "share_of_full" in r else ""))
        if r.get("serve_load_s"):
            parts.append(f"then loaded by a starting worker in {r['serve_load_s']:.1f}s, reloaded by a serving one in {r['reload_s']:.1f}s")
        if r.get("query_ms"):
            parts.append(f"one query {r['query_ms'][0]:.3f} ms (the served index before: {r['query_ms'][1]:.3f} ms)")
        if r.get("stages"):
            parts.append("delta stages " + ", ".join(f"{k} {v:.1f}s" for k, v in r["stages"].items() if k != "total"))
        if r.get("recall_after") is not None:
            parts.append(f"recall@10 {r['recall_before']:.3f} -> {r['recall_after']:.3f}")
        for key in ("method", "printed", "same_products", "max_abs_vector_difference_of_re_added"):
            if key in r:
                parts.append(f"{key}: {r[key]}")
        lines.append(" | ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
