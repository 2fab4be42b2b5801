"""What one embedder costs beside another: the embedding of a room call's crops, models interleaved.

    python -m benchmarks.embedders --models E3.keras E3-student.keras [--batch 24] [--repeats 30] [--members-apart]

Each round embeds one batch of ``--batch`` crops (a "shop this room" call embeds every object of
the photo at once; 24 is the IKEA photos' median) with every model in turn, after one warm-up batch
each (graph tracing), so that both see the same machine load. Prints each model's median and p90
milliseconds per batch and its ratio to the first model's median; asserts nothing. The pixels are
seeded noise: a convolutional network's cost does not depend on them. An ensemble runs as it is
served, the backbone layers its members share run once (``engine.model.trunk``); ``--members-apart``
adds a row of each such ensemble with every member run whole, as saved.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.runtime import run_cli

logger = logging.getLogger("benchmarks.embedders")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.embedders", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=Path, nargs="+", required=True, help="saved .keras embedders, the first the reference")
    p.add_argument("--batch", type=int, default=24, help="crops embedded together (one room call)")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds")
    p.add_argument("--members-apart", action="store_true",
                   help="also time each ensemble whose members share backbone layers with every member run whole")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error(f"--batch and --repeats must be >= 1, got {args.batch} and {args.repeats}")
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    from engine.model.embedder import Embedder
    from engine.model.trunk import has_shared_trunk

    names, models = [], []
    for path in args.models:
        names.append(path.name)
        models.append(Embedder.load(path))
        if args.members_apart and has_shared_trunk(models[-1].model):
            names.append(f"{path.name}, members apart")
            models.append(Embedder.load(path, shared_trunk=False))
    sizes = {m.size for m in models}
    if len(sizes) != 1:
        raise ValueError(f"the models take different input sizes ({sorted(sizes)} px): compare models of one size")
    size = sizes.pop()
    crops = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    for m in models:
        m(crops, batch_size=args.batch)  # warm-up: traces the graph for this batch size
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.repeats):
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            m(crops, batch_size=args.batch)
            times[i].append((time.perf_counter() - t0) * 1e3)
    ref = float(np.median(times[0]))
    print(f"{args.batch} crops a batch, {args.repeats} rounds, models interleaved")
    print("| model | D | ms p50 | ms p90 | p50 / first |\n|---|---|---|---|---|")
    for name, m, t in zip(names, models, times):
        p50, p90 = float(np.median(t)), float(np.percentile(t, 90))
        print(f"| {name} | {m.dim} | {p50:.1f} | {p90:.1f} | {p50 / ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
