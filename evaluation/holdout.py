"""``python -m evaluation.holdout``: write a seeded list of scenes to keep out of all training.

Pass the file to ``training.mine_triplets --holdout-scenes`` (or ``training.fit --holdout-scenes``)
and to ``evaluation.evaluate --scenes``: the evaluation then runs on scenes no model has seen.

With ``--folds K --exclude HOLDOUT`` it writes instead K seeded cross-validation folds over the
other scenes, where settings are chosen: ``fold<i>.txt`` (fold i's validation scenes, for
``evaluate --scenes``), ``fold<i>-exclude.txt`` (the hold-out plus fold i, for training's
``--holdout-scenes``) and ``folds.json`` (the seed, the hold-out's hash and every fold).

With ``--new-products FRACTION`` it writes instead a seeded, type-stratified list of products, the
*new products* of the new-products protocol: pass it to ``training.mine_hard_negatives`` and
``training.fit --holdout-products`` (they do not exist for training) and to ``evaluation.evaluate
--new-products`` (their pairs are scored apart from the known products').
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from engine.data.catalog import load_catalog
from engine.runtime import run_cli
from engine.data.splits import dev_folds, holdout_scenes, new_products, read_scene_list, write_scene_list
from engine.files import write_json_atomic

logger = logging.getLogger("evaluation.holdout")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.holdout",
        description="Choose a seeded, room-type-stratified share of a catalog's scenes (those with pairs) as the evaluation split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory")
    p.add_argument("--fraction", type=float, default=0.2, help="share of the scenes with pairs to hold out")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice")
    p.add_argument("--folds", type=int, default=0, help="write this many development folds over the scenes outside --exclude instead")
    p.add_argument("--exclude", type=Path, default=None, help="with --folds: the hold-out scene list, in no fold and excluded from every fold's training")
    p.add_argument("--new-products", type=float, default=0.0, metavar="FRACTION",
                   help="write instead a product list: this share of the catalog's products, stratified by type (the new-products protocol)")
    p.add_argument("--out", type=Path, required=True, help="scene list to write (one scene name per line); with --folds, a folder; "
                                                           "with --new-products, a product list")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    if args.new_products and (args.folds or args.exclude):
        raise ValueError("--new-products writes a product list; it does not go with --folds or --exclude")
    if args.new_products:
        return _new_products(args, catalog)
    if args.folds:
        return _folds(args, catalog)
    if args.exclude:
        raise ValueError("--exclude goes with --folds (a hold-out is drawn from every scene)")
    names = holdout_scenes(catalog, args.fraction, args.seed)
    held = set(names)
    pairs = sum(p.scene in held for p in catalog.pairs)
    write_scene_list(names, args.out, f"held-out scenes of {catalog.root} (fingerprint {catalog.fingerprint})\n"
                                      f"python -m evaluation.holdout --fraction {args.fraction} --seed {args.seed}")
    print(f"{len(names)} of {len({p.scene for p in catalog.pairs})} scenes with pairs held out ({pairs} of {len(catalog.pairs)} pairs) -> {args.out}")
    return 0


def _new_products(args: argparse.Namespace, catalog) -> int:
    ids = new_products(catalog, args.new_products, args.seed)
    held = set(ids)
    pairs = sum(p.product_id in held for p in catalog.pairs)
    write_scene_list(ids, args.out, f"new products of {catalog.root} (fingerprint {catalog.fingerprint}): held out of training, "
                                    f"added to the index after it\npython -m evaluation.holdout --new-products {args.new_products} --seed {args.seed}")
    print(f"{len(ids)} of {len(catalog.types)} products are new ({pairs} of {len(catalog.pairs)} pairs are theirs) -> {args.out}")
    return 0


def _folds(args: argparse.Namespace, catalog) -> int:
    held = read_scene_list(args.exclude) if args.exclude else ()
    folds = dev_folds(catalog, args.folds, args.seed, held)
    args.out.mkdir(parents=True, exist_ok=True)
    how = f"python -m evaluation.holdout --folds {args.folds} --seed {args.seed} --exclude {args.exclude}"
    lines = []
    for i, fold in enumerate(folds):
        write_scene_list(fold, args.out / f"fold{i}.txt", f"development fold {i} of {args.folds} of {catalog.root}\n{how}")
        write_scene_list({*held, *fold}, args.out / f"fold{i}-exclude.txt",
                         f"the hold-out plus development fold {i}: pass to training --holdout-scenes\n{how}")
        pairs = sum(p.scene in set(fold) for p in catalog.pairs)
        lines.append(f"fold {i}: {len(fold)} scenes, {pairs} pairs -> {args.out / f'fold{i}.txt'}")
    write_json_atomic(args.out / "folds.json", {
        "catalog": str(catalog.root), "catalog_fingerprint": catalog.fingerprint, "seed": args.seed, "k": args.folds,
        "holdout": str(args.exclude) if args.exclude else None, "holdout_scenes": len(held),
        "holdout_sha": hashlib.sha256("\n".join(held).encode()).hexdigest()[:16], "folds": [list(f) for f in folds]})
    print("\n".join(lines + [f"{len(held)} hold-out scenes in no fold; record -> {args.out / 'folds.json'}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
