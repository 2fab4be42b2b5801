"""``python -m training.ensemble``: several trained embedders (e.g. seeds of one recipe) saved as one.

The ensemble's embedding is the members' L2-normalised embeddings concatenated and scaled by
1/sqrt(n) (``engine.model.ensemble``): its squared distance is the mean of theirs. The output is
an ordinary ``.keras`` embedder (D = the members' dims summed, the members' preprocessing), so
``serving.build_index``, ``evaluation.evaluate`` and the service take it like any trained model::

    python -m training.ensemble --models H2-s1234.keras H2-s2.keras H2-s3.keras --out H2x3.keras
    python -m serving.build_index --catalog DIR --model H2x3.keras --out serve
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from engine.runtime import run_cli

logger = logging.getLogger("training.ensemble")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.ensemble",
        description="Save several trained embedders as one whose distance is the mean of theirs (an ensemble of seeds).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="two or more trained embedders: .keras paths, MLflow run ids of training.fit or models:/NAME@ALIAS; "
                        "the same input size and preprocessing")
    p.add_argument("--out", type=Path, required=True, help="the ensemble's .keras file")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("--models needs at least two embedders")
    if args.out.suffix != ".keras":
        parser.error(f"--out must end in .keras (Keras saves only that format), got {args.out}")
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.model.ensemble import save_ensemble
    from training.model_ref import resolve_model

    paths = [resolve_model(ref).path for ref in args.models]
    out, members = save_ensemble(paths, args.out)
    for ref, m in zip(args.models, members):
        logger.info("member %s: %s, D=%d, sha256 %s", m.name, ref, m.dim, m.fingerprint[:12])
    print(f"ensemble of {len(members)} embedders (D={sum(m.dim for m in members)}) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
