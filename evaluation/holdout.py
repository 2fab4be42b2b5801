"""``python -m evaluation.holdout``: write a seeded list of scenes to keep out of all training.

Pass the file to ``training.mine_triplets --holdout-scenes`` (or ``training.fit --holdout-scenes``)
and to ``evaluation.evaluate --scenes``: the evaluation then runs on scenes no model has seen.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from engine.data.catalog import load_catalog
from engine.runtime import run_cli
from engine.data.splits import holdout_scenes, write_scene_list

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
    p.add_argument("--out", type=Path, required=True, help="scene list to write (one scene name per line)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    names = holdout_scenes(catalog, args.fraction, args.seed)
    held = set(names)
    pairs = sum(p.scene in held for p in catalog.pairs)
    write_scene_list(names, args.out, f"held-out scenes of {catalog.root} (fingerprint {catalog.fingerprint})\n"
                                      f"python -m evaluation.holdout --fraction {args.fraction} --seed {args.seed}")
    print(f"{len(names)} of {len({p.scene for p in catalog.pairs})} scenes with pairs held out ({pairs} of {len(catalog.pairs)} pairs) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
