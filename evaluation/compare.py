"""``python -m evaluation.compare``: two recipes paired pair by pair, over folds and seeds, from saved evaluations.

    python -m evaluation.compare --a ev/H-fold0-s1 ev/H-fold1-s1 ev/H-fold0-s2 ... --b ev/F-fold0-s1 ev/F-fold1-s1 ...

Each argument is an ``evaluation.evaluate`` output folder (its ``metrics.json`` and ``pairs.csv``).
The folders are grouped by the scenes they evaluated (a development fold); within a fold, several
folders of one side are its seeds, and each pair's hit is their mean. Every fold must be evaluated by
both sides, on the same catalog, by the same proposer (detector or drawn boxes) with the same query
box for every pair: the comparison is then of the embedders alone. The folds' pairs are pooled and
each recall is printed for both sides with the paired difference A − B and its 95 % interval,
resampling whole scenes (the pairs of one photo are not independent): s2p recall@k over all pairs
(the query box of the product's group; a pair with none is a miss), the same ranked within the
product's group, room recall@k (the engine's own room list, no label), and product → scene
recall@k (the product's photo searching the scenes' crops: the rank of the pair's scene).

``--products FILE`` (a product list, e.g. ``evaluation.holdout --new-products``'s) keeps only the
pairs of those products, ``--other-products FILE`` only the others: the new-products protocol's two
halves, compared apart.

When every fold of a side has the same number n ≥ 2 of seeds, that side's recall is also given with
its seed spread: the j-th folder given for each fold makes seed run j (pass the folders of each
seed in the same order on every fold), and the spread is the standard deviation (ddof 1) of the n
runs' pooled recalls; their mean is the recall printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.splits import read_product_list
from engine.files import write_json_atomic
from engine.metrics import bootstrap_mean
from engine.runtime import run_cli

logger = logging.getLogger("evaluation.compare")

MEASURES = (("s2p", "group_rank"), ("in_group", "in_group_rank"), ("room", "room_rank"),
            ("p2s", "scene_rank"))  # measure -> pairs.csv column


class CompareError(ValueError):
    """Evaluations that cannot be paired: unreadable, of other pairs, catalogs, proposers or query boxes."""


@dataclass(frozen=True)
class Evaluation:
    """One evaluation folder: the fold it scored (``scenes_sha``), ``catalog`` and ``proposer``
    fingerprints, and per pair ``(product_id, scene)`` its query box and its ranks by column."""

    path: Path
    scenes_sha: str
    catalog: str
    proposer: str
    rows: dict[tuple[str, str], dict[str, str]]

    @classmethod
    def read(cls, path: str | Path) -> Evaluation:
        path = Path(path)
        try:
            metrics = json.loads((path / "metrics.json").read_text())
            with open(path / "pairs.csv", newline="") as fh:
                rows = {(r["product_id"], r["scene"]): r for r in csv.DictReader(fh)}
            proposer = metrics["summary"]["protocol"].get("detector") or "pairs.csv boxes"
            return cls(path, metrics["scenes_sha"], metrics["catalog_fingerprint"], proposer, rows)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CompareError(f"{path}: not an evaluation folder of evaluation.evaluate (metrics.json and pairs.csv): {exc}") from None

    def hits(self, keys: Sequence[tuple[str, str]], column: str, k: int) -> np.ndarray:
        """float (len(keys),): 1 where the pair's rank in ``column`` is at most ``k`` (an empty rank is a miss)."""
        if keys and column not in self.rows[keys[0]]:
            raise CompareError(f"{self.path}/pairs.csv has no {column} column: evaluate it again with this version")
        return np.array([float(self.rows[q][column] != "" and float(self.rows[q][column]) <= k) for q in keys])


def pair_up(a: Sequence[Evaluation], b: Sequence[Evaluation]) -> list[tuple[list[tuple[str, str]], list[Evaluation], list[Evaluation]]]:
    """Per fold (in ``a``'s order): its pairs (sorted) and the evaluations of each side, checked to be
    comparable; ``CompareError`` says which folder breaks what."""
    folds: dict[str, tuple[list[Evaluation], list[Evaluation]]] = defaultdict(lambda: ([], []))
    for side, evals in enumerate((a, b)):
        for e in evals:
            folds[e.scenes_sha][side].append(e)
    out = []
    for sha, (ea, eb) in folds.items():
        if not ea or not eb:
            only = (ea or eb)[0].path
            raise CompareError(f"{only} scored scenes (sha {sha}) that the other side never evaluated: give both sides every fold")
        first = ea[0]
        keys = sorted(first.rows)
        for e in ea[1:] + eb:
            if e.catalog != first.catalog:
                raise CompareError(f"{e.path} and {first.path} evaluated different catalogs ({e.catalog} / {first.catalog})")
            if e.proposer != first.proposer:
                raise CompareError(f"{e.path} and {first.path} had their crops proposed by different detectors ({e.proposer} / "
                                   f"{first.proposer}): compare embedders on the same proposals (evaluate --versus-detector compares detectors)")
            if sorted(e.rows) != keys:
                raise CompareError(f"{e.path} and {first.path} scored different pairs of the same scenes")
            moved = [q for q in keys if e.rows[q].get("query_box") != first.rows[q].get("query_box")]
            if moved:
                raise CompareError(f"{e.path} and {first.path} queried {len(moved)} pairs from different boxes (e.g. {moved[0]}): "
                                   "keep --crop-choice and the proposals the same on both sides")
        out.append((keys, ea, eb))
    return out


def compare(a: Sequence[Evaluation], b: Sequence[Evaluation], ks: Sequence[int], *, n: int = 2000, seed: int = 0,
            products: Callable[[str], bool] | None = None) -> dict:
    """Recall of each side (seed means per pair, folds pooled) and A − B with its 95 % scene-bootstrap
    interval, for each measure of ``MEASURES`` and each k: ``{measure: {k: {"a", "b", "difference", "ci95"}}}``
    plus ``pairs``, ``scenes``, ``folds`` and the seeds per fold of each side. ``products``: which
    products' pairs count (None: every pair); ``CompareError`` when no pair is left."""
    folds = pair_up(a, b)
    if products is not None:
        folds = [([q for q in keys if products(q[0])], ea, eb) for keys, ea, eb in folds]
        folds = [f for f in folds if f[0]]
        if not folds:
            raise CompareError("no pair of the products asked for in these evaluations")
    scenes = [s for keys, _, _ in folds for _, s in keys]
    if len(set(zip(scenes, [p for keys, _, _ in folds for p, _ in keys]))) != len(scenes):
        raise CompareError("two folds share a pair: give each fold once per seed")
    out: dict = {"pairs": len(scenes), "scenes": len(set(scenes)), "folds": len(folds),
                 "seeds_a": [len(ea) for _, ea, _ in folds], "seeds_b": [len(eb) for _, _, eb in folds]}
    for measure, column in MEASURES:
        # per side and fold: float (seeds, pairs, len(ks)), every evaluation's hits read once
        hits_a = [np.stack([np.stack([e.hits(keys, column, k) for k in ks], axis=1) for e in ea]) for keys, ea, _ in folds]
        hits_b = [np.stack([np.stack([e.hits(keys, column, k) for k in ks], axis=1) for e in eb]) for keys, _, eb in folds]
        ha = np.concatenate([h.mean(axis=0) for h in hits_a])  # (pairs, len(ks)): seed means per pair, folds pooled
        hb = np.concatenate([h.mean(axis=0) for h in hits_b])
        lo, hi = bootstrap_mean(ha - hb, scenes, n=n, seed=seed)
        sd_a, sd_b = seed_spread(hits_a), seed_spread(hits_b)
        out[measure] = {int(k): {"a": float(ha[:, i].mean()), "b": float(hb[:, i].mean()), "difference": float((ha - hb)[:, i].mean()),
                                 "ci95": [float(lo[i]), float(hi[i])],
                                 "a_seed_sd": None if sd_a is None else float(sd_a[i]),
                                 "b_seed_sd": None if sd_b is None else float(sd_b[i])} for i, k in enumerate(ks)}
    return out


def seed_spread(hits: Sequence[np.ndarray]) -> np.ndarray | None:
    """float (K,): the standard deviation (ddof 1) over seed runs of one side's pooled recall, given its
    hits per fold as float (seeds, pairs, K), seed run j being the j-th evaluation of every fold; None
    unless every fold has the same number n >= 2 of seeds."""
    counts = {h.shape[0] for h in hits}
    if len(counts) != 1 or counts.pop() < 2:
        return None
    runs = np.concatenate(hits, axis=1).mean(axis=1)  # (seeds, K): each seed run's recall, folds pooled
    return runs.std(axis=0, ddof=1)


def table(result: dict, ks: Sequence[int]) -> str:
    """The printed comparison: one line per measure and k."""
    lines = [f"{result['pairs']} pairs, {result['scenes']} scenes, {result['folds']} folds; seeds per fold A {result['seeds_a']}, "
             f"B {result['seeds_b']}" + ("; ± the seed runs' standard deviation" if _spread(result) else ""),
             f"{'measure':<18}{'A':>15}{'B':>15}   A - B [95% scene bootstrap]"]
    names = {"s2p": "s2p R@{k}", "in_group": "in-group R@{k}", "room": "room R@{k}", "p2s": "p2s R@{k}"}
    for measure, _ in MEASURES:
        for k in ks:
            r = result[measure][int(k)]
            lo, hi = r["ci95"]
            a, b = (f"{r[s]:.3f}" + ("" if r[s + "_seed_sd"] is None else f" ± {r[s + '_seed_sd']:.3f}") for s in ("a", "b"))
            lines.append(f"{names[measure].format(k=k):<18}{a:>15}{b:>15}   {r['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return "\n".join(lines)


def _spread(result: dict) -> bool:
    return any(r["a_seed_sd"] is not None or r["b_seed_sd"] is not None for m, _ in MEASURES for r in result[m].values())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.compare",
        description="Pair two recipes' saved evaluations pair by pair (folds pooled, seeds averaged): recall of each and "
                    "A - B with 95%% scene-bootstrap intervals.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--a", type=Path, nargs="+", required=True, metavar="EVAL", help="evaluation folders of recipe A (every fold, every seed)")
    p.add_argument("--b", type=Path, nargs="+", required=True, metavar="EVAL", help="evaluation folders of recipe B, the same folds")
    p.add_argument("--ks", default="1,10,20,50", help="comma-separated k of recall@k")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--products", type=Path, default=None, metavar="FILE",
                      help="a product list (e.g. python -m evaluation.holdout --new-products): only their pairs")
    only.add_argument("--other-products", type=Path, default=None, metavar="FILE", help="a product list: only the pairs of the other products")
    p.add_argument("--bootstrap", type=int, default=2000, help="scene resamples of the intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON here")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--ks {args.ks!r}: give whole numbers separated by commas, e.g. 1,10,50") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"--ks {args.ks!r}: give at least one k >= 1")
    listed = args.products or args.other_products
    products = None
    if listed is not None:
        ids = frozenset(read_product_list(listed))
        products = ids.__contains__ if args.products else (lambda p: p not in ids)
    result = compare([Evaluation.read(p) for p in args.a], [Evaluation.read(p) for p in args.b], ks, n=args.bootstrap, seed=args.seed,
                     products=products)
    result["a"], result["b"] = [str(p) for p in args.a], [str(p) for p in args.b]
    if listed is not None:
        result["products"] = {"file": str(listed), "only": "listed" if args.products else "others"}
    if args.out:
        write_json_atomic(args.out, result)
    print(table(result, ks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
