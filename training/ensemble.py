"""``python -m training.ensemble``: several trained embedders (e.g. seeds of one recipe) saved as one,
or one embedder saved to read its crops at several sizes, or trained embedders with the backbone's
pooled ImageNet features beside them (a frozen ImageNet branch, no training).

The ensemble's embedding is the members' L2-normalised embeddings concatenated and scaled by
1/sqrt(n) (``engine.model.ensemble``): its squared distance is the mean of theirs. With
``--scales``, one embedder (a single model or an ensemble) reads each crop cut at the largest size
and resized to every size given, and its embedding is the normalised sum of theirs. The output is
an ordinary ``.keras`` embedder, so ``serving.build_index``, ``evaluation.evaluate`` and the
service take it like any trained model::

    python -m training.ensemble --models H2-s1234.keras H2-s2.keras H2-s3.keras --out H2x3.keras
    python -m serving.build_index --catalog DIR --model H2x3.keras --out serve
    python -m training.ensemble --models H2x3.keras --scales 224 288 --out H2x3-ms.keras   # measured, not kept on IKEA
    python -m training.ensemble --models H.keras --imagenet 0.25 --out H+imagenet.keras    # ImageNet features: 1/4 of the distance
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from engine.config import ModelConfig
from engine.runtime import run_cli

logger = logging.getLogger("training.ensemble")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.ensemble",
        description="Save several trained embedders as one whose distance is the mean of theirs (an ensemble of seeds), "
                    "one embedder reading its crops at several sizes (--scales), or trained embedders with the "
                    "backbone's pooled ImageNet features beside them (--imagenet).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="two or more trained embedders: .keras paths, MLflow run ids of training.fit or models:/NAME@ALIAS; "
                        "the same input size and preprocessing; with --scales, exactly one (a model or an ensemble); "
                        "with --imagenet, one or more")
    p.add_argument("--scales", type=int, nargs="+", default=None, metavar="PX",
                   help="read the one model at these input sizes (e.g. 224 288): crops are cut at the largest, "
                        "and the embedding is the normalised sum of the sizes' unit embeddings")
    p.add_argument("--imagenet", type=float, default=None, metavar="SHARE",
                   help="add the backbone's pooled ImageNet features (no training) as a member with this share of the "
                        "squared distance, in (0, 1); the models share the rest equally (IKEA's development folds: 0.25)")
    p.add_argument("--backbone", default=None,
                   help="backbone of the ImageNet features (default: the first model's recorded backbone, else mobilenet_v2)")
    p.add_argument("--alpha", type=float, default=ModelConfig().alpha, help="width multiplier of mobilenet_v2's ImageNet features")
    p.add_argument("--weights", default="imagenet",
                   help="the ImageNet weights of that backbone: 'imagenet' (Keras download or $SHOWROOM_WEIGHTS_DIR) "
                        "or a .weights.h5 path")
    p.add_argument("--out", type=Path, required=True, help="the ensemble's .keras file")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scales is None and args.imagenet is None and len(args.models) < 2:
        parser.error("--models needs at least two embedders (or one with --scales or --imagenet)")
    if args.scales is not None and len(args.models) != 1:
        parser.error("--scales reads one embedder at several sizes: make the ensemble first, then give it alone with --scales")
    if args.scales is not None and args.imagenet is not None:
        parser.error("--scales and --imagenet make different embedders: make the one with --imagenet first, then read it at several sizes")
    if args.imagenet is not None and not 0.0 < args.imagenet < 1.0:
        parser.error(f"--imagenet is the ImageNet features' share of the distance, in (0, 1); got {args.imagenet:g}")
    if args.out.suffix != ".keras":
        parser.error(f"--out must end in .keras (Keras saves only that format), got {args.out}")
    return run_cli(lambda home: _run(args), verbose=args.verbose, logger_name=logger.name)


def _run(args: argparse.Namespace) -> int:
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.model.embedder import backbone_record
    from engine.model.ensemble import save_ensemble
    from training.model_ref import resolve_model

    paths = [resolve_model(ref).path for ref in args.models]
    if args.scales is not None:
        from engine.model.ensemble import save_multiscale

        out = save_multiscale(paths[0], args.scales, args.out)
        print(f"{args.models[0]} read at {', '.join(f'{s} px' for s in args.scales)} (crops cut at {max(args.scales)} px) -> {out}")
        return 0
    imagenet = None
    if args.imagenet is not None:
        backbone = args.backbone or (backbone_record(paths[0]) or {}).get("backbone") or ModelConfig().backbone
        imagenet = ModelConfig(backbone=backbone, weights=args.weights, alpha=args.alpha)
    out, members = save_ensemble(paths, args.out, imagenet, args.imagenet or 0.0)
    for ref, m in zip([*args.models, "ImageNet features"], members):
        logger.info("member %s: %s, D=%d, share %.3f, sha256 %s", m.name, ref, m.dim, m.share, m.fingerprint[:12])
    shares = "" if imagenet is None else f", ImageNet features {imagenet.backbone} at {args.imagenet:g} of the distance"
    print(f"ensemble of {len(members)} embedders (D={sum(m.dim for m in members)}{shares}) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
