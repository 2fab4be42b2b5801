"""``python -m training.distill``: an ensemble of seeds as one model of one seed's cost (the "student").

The student (``engine.model.distill``) is member 0's network with the members' averaged backbone
and a small head fitted to the ensemble's embeddings of unlabelled images: the room crops of the
catalog's scenes (its ``pairs.csv`` boxes, else the detector's confident boxes) and its catalog
photos, each also as its mirror image. Held-out scenes (``--holdout-scenes``) are never read. The output is an
ordinary ``.keras`` embedder with the ensemble's preprocessing and D::

    python -m training.ensemble --models H2.keras H2-s2.keras H2-s3.keras --out E3.keras
    python -m training.distill --teacher E3.keras --catalog ../shared/data/ikea --holdout-scenes holdout.txt \\
        --out E3-one.keras
    python -m evaluation.evaluate --model E3-one.keras --versus E3.keras ...

One tenth of the images (every tenth room crop and catalog photo) is first kept out of the fit to
report how closely the student follows the ensemble on images it was not fitted on; the saved head
is then fitted on all of them. Room crops and catalog photos weigh the same in the fit, however
many of each there are.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.runtime import run_cli

logger = logging.getLogger("training.distill")
ASIDE = 10  # every ASIDE-th image is kept out of the fidelity fit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.distill",
        description="Save an ensemble of seeds (python -m training.ensemble) as one model of one seed's cost: the members' "
                    "averaged backbone and a small head fitted to the ensemble's embeddings of unlabelled room crops and "
                    "catalog photos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--teacher", required=True, help="the ensemble: a .keras path, an MLflow run id or models:/NAME@ALIAS")
    p.add_argument("--catalog", type=Path, required=True, help="catalog directory (products.csv, scenes.csv, pairs.csv)")
    p.add_argument("--holdout-scenes", type=Path, default=None, metavar="FILE",
                   help="scene list (python -m evaluation.holdout) never read here: the scenes the student will be judged on")
    p.add_argument("--detector-weights", default=None,
                   help="(default: $SHOWROOM_DETECTOR_WEIGHTS, else yolo11n.pt) proposes the room crops of scenes whose "
                        "pairs have no box")
    p.add_argument("--epochs", type=int, default=40, help="passes of the head's fit over the cached features")
    p.add_argument("--seed", type=int, default=0, help="seed of the head's initialisation and batch order")
    p.add_argument("--out", type=Path, required=True, help="the student's .keras file")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.suffix != ".keras":
        parser.error(f"--out must end in .keras (Keras saves only that format), got {args.out}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    return run_cli(lambda home: _run(args, home), verbose=args.verbose, logger_name=logger.name)


def _room_crops(catalog, prep, detector_weights: str | None, home: Path) -> np.ndarray:
    """uint8 (R, S, S, 3): every proposed crop of ``catalog``'s scenes, cut as a query is."""
    from engine.data.images import query_crop
    from engine.data.proposals import catalog_proposals, needs_detection

    detect = None
    if needs_detection(catalog.pairs):
        from detectors.cache import DetectionCache
        from detectors.open import open_detector
        from detectors.yolo import default_weights

        detector = open_detector(detector_weights or default_weights(), conf=prep.detector_confidence)
        detect = DetectionCache(detector, home / "cache" / "detections").detect
    crops = [query_crop(p.image, c.box, prep.image_size, prep.crop_padding)
             for p in catalog_proposals(catalog, detect, prep) if p.image is not None for c in p.crops]
    if not crops:
        raise ValueError(f"{catalog.root}: no room crop in the scenes left to fit on")
    return np.stack(crops)


def _run(args: argparse.Namespace, home: Path) -> int:
    # these load TensorFlow: imported here, once run_cli has set the environment
    from engine.data.catalog import load_catalog
    from engine.data.images import load_square
    from engine.data.splits import read_scene_list, restrict_scenes
    from engine.model.distill import backbone_spread, build_student, ensemble_parts, fit_head, student_trunk
    from engine.model.embedder import Embedder, embed_images, model_fingerprint, save_embedder
    from engine.model.ensemble import IMAGENET_MEMBER, ensemble_members
    from training.model_ref import resolve_model

    path = resolve_model(args.teacher).path
    recorded = ensemble_members(path)
    if not recorded:
        raise ValueError(f"{args.teacher} is not an ensemble (python -m training.ensemble): a student learns from several seeds")
    if any(m.model == IMAGENET_MEMBER for m in recorded):
        raise ValueError(f"{args.teacher} has ImageNet features as a member (training.ensemble --imagenet): a student averages "
                         "the backbones of seeds of one recipe; distil the seeds' ensemble, then add the ImageNet features to it")
    teacher = Embedder.load(path, shared_trunk=False)  # its members as saved: the student averages their backbones
    members = ensemble_parts(teacher.model)
    trunk = student_trunk(members)
    catalog = load_catalog(args.catalog)
    held = read_scene_list(args.holdout_scenes) if args.holdout_scenes else ()
    rooms = restrict_scenes(catalog, drop=held)
    if not held:
        logger.warning("no --holdout-scenes: the head is fitted on every scene's crops, so no scene of this catalog judges it fairly")
    prep = teacher.preprocessing
    crops = _room_crops(rooms, prep, args.detector_weights, home)
    photos = np.stack([load_square(p.image, prep.image_size, reduced=prep.catalog_decode == "reduced") for p in catalog.products])
    images = np.concatenate([crops, photos])
    logger.info("fitting on %d room crops of %d scenes and %d catalog photos (%d scenes held out)",
                len(crops), len(rooms.scenes), len(photos), len(held))
    mirrored = images[:, :, ::-1]
    features = np.concatenate([embed_images(trunk, images), embed_images(trunk, mirrored)])
    targets = np.concatenate([teacher(images), teacher(mirrored)])
    per_image = np.concatenate([np.full(len(crops), 1.0 / len(crops)), np.full(len(photos), 1.0 / len(photos))])
    weights = np.concatenate([per_image, per_image])
    aside = np.zeros(len(images), bool)
    aside[np.arange(0, len(crops), ASIDE)] = True
    aside[len(crops) + np.arange(0, len(photos), ASIDE)] = True
    both = np.concatenate([aside, aside])  # an image and its mirror are kept out together
    head = fit_head(features[~both], targets[~both], weights=weights[~both], epochs=args.epochs, seed=args.seed)
    fidelity = _fidelity(features[: len(images)], targets[: len(images)], head, aside, len(crops))
    head = fit_head(features, targets, weights=weights, epochs=args.epochs, seed=args.seed)
    student = build_student(trunk, head)
    record = {"distilled": {"teacher": Path(path).name, "teacher_fingerprint": model_fingerprint(path),
                            "members": [m.__dict__ for m in ensemble_members(path)], "epochs": args.epochs, "seed": args.seed,
                            "backbone_spread": backbone_spread(members), "room_crops": len(crops), "catalog_photos": len(photos),
                            "held_out_scenes": len(held), **fidelity}}
    out = save_embedder(student, args.out, prep, record)
    print(f"student of {len(members)} members (D={student.output_shape[-1]}) -> {out}\n"
          f"on images kept out of the fit: cosine to the ensemble {fidelity['cosine']:.3f}, "
          f"nearest-10 catalog photos shared with it {fidelity['top10_overlap']:.2f} (room crops)")
    return 0


def _fidelity(features: np.ndarray, targets: np.ndarray, head, aside: np.ndarray, n_crops: int) -> dict:
    """How ``head``, fitted without the ``aside`` rows, follows the ensemble on them: the mean cosine
    of student and ensemble embeddings, and for the aside room crops the share of their 10 nearest
    catalog photos (among every photo) the two agree on. ``features`` float (N, F), ``targets``
    float (N, D): the room crops first (``n_crops``), then the catalog photos."""
    pred = np.asarray(head.predict(features, batch_size=1024, verbose=0), np.float32)
    cosine = float(np.mean(np.sum(pred[aside] * targets[aside], axis=1)))
    queries = np.flatnonzero(aside[:n_crops])
    photos = np.arange(n_crops, len(features))
    k = min(10, len(photos))
    near = lambda e: np.argsort(-(e[queries] @ e[photos].T), axis=1)[:, :k]  # noqa: E731
    ours, theirs = near(pred), near(targets)
    overlap = float(np.mean([len(set(a) & set(t)) / k for a, t in zip(ours, theirs)])) if len(queries) else float("nan")
    return {"cosine": cosine, "top10_overlap": overlap, "aside_rows": int(aside.sum())}


if __name__ == "__main__":
    raise SystemExit(main())
