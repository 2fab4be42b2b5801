"""``python -m training.fit_detector``: train a YOLO detector of the catalog's product groups, tracked in MLflow.

From a dataset of ``python -m training.synthesize_rooms`` (rooms filled with pasted products, every
box labelled with its group). It starts from pretrained detector weights: ``--init`` (a YOLO ``.pt``;
Ultralytics downloads a bare name such as ``yolov8n.pt``), or ``--init-tflite`` (a YOLOv8 ``.tflite``
export, recovered into a trainable checkpoint by ``detectors.recover``, its BatchNorm statistics
measured on training images). One MLflow run per call: params, per-epoch losses and mAP on the
validation rooms, per-group mAP@0.5 on those and on the real validation photos (the groups a COCO
class reaches), artifacts ``detector/best.pt`` and ``detector/detector.tflite`` (float32, class names
inside: what the server runs on LiteRT). A killed run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.runtime import run_cli

logger = logging.getLogger("training.fit_detector")


@dataclass(frozen=True)
class DetectorTrainConfig:
    """epochs / imgsz (training input side) / batch / freeze (first N layers fixed; 10 = YOLOv8's
    backbone) / patience (epochs without improvement before stopping) / close_mosaic (last N epochs
    without mosaic) / seed; export_imgsz: the input side of the exported ``.tflite``;
    calibration_images: training images the recovered BatchNorms are measured on."""

    epochs: int = 10
    imgsz: int = 416
    batch: int = 16
    freeze: int = 10
    patience: int = 100
    close_mosaic: int = 2
    seed: int = 0
    export_imgsz: int = 640
    calibration_images: int = 64

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.freeze < 0 or self.patience < 1 or self.close_mosaic < 0:
            raise ValueError(f"epochs, batch and patience must be >= 1, freeze and close_mosaic >= 0: {self}")
        for name in ("imgsz", "export_imgsz"):
            if getattr(self, name) < 32 or getattr(self, name) % 32:
                raise ValueError(f"{name} must be a multiple of 32 (YOLO's stride), at least 32, got {getattr(self, name)}")


def build_parser() -> argparse.ArgumentParser:
    d = DetectorTrainConfig()
    p = argparse.ArgumentParser(prog="python -m training.fit_detector", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="data.yaml of a python -m training.synthesize_rooms dataset (not with --resume)")
    p.add_argument("--init", default="yolov8n.pt", help="pretrained YOLO weights to start from (.pt; a bare name is downloaded by Ultralytics)")
    p.add_argument("--init-tflite", type=Path, default=None,
                   help="instead, a YOLOv8 .tflite export to recover into a trainable checkpoint first (offline: "
                        "../shared/weights/yolov8n_coco_int8.tflite)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default {d.epochs}); with --resume, a new total for the run (more than it has done)")
    p.add_argument("--imgsz", type=int, default=d.imgsz, help="training input side (a multiple of 32; 640 suits a GPU)")
    p.add_argument("--batch", type=int, default=d.batch, help="images per step")
    p.add_argument("--freeze", type=int, default=d.freeze, help="the first N layers stay fixed (10 = YOLOv8's backbone, 0 = train all)")
    p.add_argument("--patience", type=int, default=d.patience, help="stop after this many epochs without a better validation mAP")
    p.add_argument("--close-mosaic", type=int, default=d.close_mosaic, help="the last N epochs train without mosaic")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of Ultralytics' sampling and augmentation")
    p.add_argument("--export-imgsz", type=int, default=d.export_imgsz, help="input side of the exported .tflite the server runs")
    p.add_argument("--out", type=Path, default=None, help="also copy the exported detector .tflite here")
    p.add_argument("--run-name", default=None, help="MLflow run name")
    p.add_argument("--experiment", default="showroom", help="MLflow experiment")
    p.add_argument("--resume", default=None, metavar="RUN_ID", help="continue a killed run ('last' = the most recent) from its last epoch")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.data is None) == (args.resume is None):
        parser.error("give --data for a new run, or --resume RUN_ID to continue one")
    try:
        cfg = DetectorTrainConfig(epochs=args.epochs or DetectorTrainConfig().epochs, imgsz=args.imgsz, batch=args.batch, freeze=args.freeze, patience=args.patience,
                                  close_mosaic=args.close_mosaic, seed=args.seed, export_imgsz=args.export_imgsz)
    except ValueError as exc:
        parser.error(str(exc))
    return run_cli(lambda home: _run(args, cfg, home), verbose=args.verbose, logger_name=logger.name)


def _base_weights(args: argparse.Namespace, data: Path, cfg: DetectorTrainConfig, home: Path) -> str:
    """The checkpoint to start from: ``--init``, or ``--init-tflite`` recovered once (cached by the file's
    hash and the calibration images) with BatchNorm statistics of the dataset's first training images."""
    if args.init_tflite is None:
        return args.init
    from detectors.recover import recover_yolov8
    from detectors.yolo import save_checkpoint
    from engine.data.images import load_image

    images = sorted((data.parent / "images" / "train").glob("*.jpg"))[: cfg.calibration_images]
    if not images:
        raise ValueError(f"{data}: no training images under images/train to calibrate the recovered detector on")
    key = hashlib.sha256(Path(args.init_tflite).read_bytes() + "|".join(p.name for p in images).encode()).hexdigest()[:12]
    out = home / "detectors" / f"recovered-{Path(args.init_tflite).stem}-{key}.pt"
    if out.is_file():
        logger.info("using the checkpoint recovered earlier from %s: %s", args.init_tflite, out)
        return str(out)
    model, imgsz = recover_yolov8(args.init_tflite, calibration=[load_image(p) for p in images])
    return str(save_checkpoint(model, out, imgsz=imgsz))


def _run(args: argparse.Namespace, cfg: DetectorTrainConfig, home: Path) -> int:
    import os
    import shutil

    from detectors.export import export_tflite
    from detectors.yolo import resume_progress, train_yolo, validate_yolo
    from training.tracking import git_commit, mlflow_run, run_metrics

    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks or DNS probes while training (downloads of --init still work)
    state = _resume_state(args, home) if args.resume else None
    done = 0  # epochs the resumed run's checkpoint holds
    if state is not None:
        cfg = DetectorTrainConfig(**state["config"])
        if (home / "detectors" / state["run_id"] / "detector.tflite").is_file():
            raise ValueError(f"detector run {state['run_id']} finished (its detector.tflite is written): nothing to resume")
        done, planned = resume_progress(home / "detectors" / state["run_id"] / "train")
        if args.epochs is not None and args.epochs <= done:
            raise ValueError(f"--epochs {args.epochs}: detector run {state['run_id']} has trained {done} of its {planned} epochs; "
                             "give more to re-plan it, or leave --epochs out to finish its plan")
    data = Path(state["data"] if state else args.data).resolve()
    if not data.is_file():
        raise ValueError(f"--data {data}: no such data.yaml; make one with python -m training.synthesize_rooms")
    names = _names(data)
    run_kwargs = {"run_id": state["run_id"]} if state else {"run_name": args.run_name, "experiment": args.experiment}
    with mlflow_run(**run_kwargs) as tracker:
        folder = home / "detectors" / tracker.run_id
        if state is None:
            init = _base_weights(args, data, cfg, home)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "state.json").write_text(json.dumps({"run_id": tracker.run_id, "data": str(data), "config": asdict(cfg), "init": init}))
            tracker.set_tags({"showroom.kind": "fit_detector"})
            tracker.log_params({**{f"detector.{k}": v for k, v in asdict(cfg).items()}, "data": str(data), "init": init,
                                "init_tflite": str(args.init_tflite or ""), "classes": len(names), "git_commit": git_commit(),
                                **_dataset_params(data)})
        else:
            init = state["init"]
            logger.info("resuming detector run %s from %s", tracker.run_id, folder / "train" / "weights" / "last.pt")
            logged = {step for step, _ in run_metrics(tracker.run_id).get("train/box_loss", [])}
            backfill_epochs(tracker, folder / "train", logged, done)
        best = train_yolo(init, data, folder / "train", epochs=args.epochs if state else cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, freeze=cfg.freeze, seed=cfg.seed,
                          patience=cfg.patience, close_mosaic=cfg.close_mosaic, resume=state is not None,
                          on_epoch=lambda epoch, m: tracker.log_metrics({_metric(k): v for k, v in m.items()}, step=epoch))
        if state is not None and args.epochs is not None and args.epochs != cfg.epochs:  # the run was re-planned
            tracker.set_tags({"detector.epochs_replanned": f"{cfg.epochs} -> {args.epochs}"})
            cfg = DetectorTrainConfig(**{**asdict(cfg), "epochs": args.epochs})
            (folder / "state.json").write_text(json.dumps({**state, "config": asdict(cfg)}))
        lines = [f"run {tracker.run_id}: {best}"]
        for split, prefix in (("val", "val_rooms"), ("test", "real_val")):
            if split == "test" and "test:" not in data.read_text():
                continue
            result = validate_yolo(best, data, split=split, imgsz=cfg.imgsz)
            tracker.log_metrics({f"{prefix}/map50": result["map50"], f"{prefix}/map50_95": result["map50_95"],
                                 **{f"{prefix}/map50/{g}": v["ap50"] for g, v in result["per_class"].items()}}, step=cfg.epochs)
            (folder / f"{prefix}.json").write_text(json.dumps(result, indent=1))
            tracker.log_artifact(folder / f"{prefix}.json", "detector")
            lines.append(f"{prefix}: mAP@0.5 {result['map50']:.3f} (0.5:0.95 {result['map50_95']:.3f}); per group: "
                         + ", ".join(f"{g} {v['ap50']:.2f}" for g, v in result["per_class"].items()))
        exported = export_tflite(best, folder / "detector.tflite", imgsz=cfg.export_imgsz)
        tracker.log_artifact(best, "detector")
        tracker.log_artifact(exported, "detector")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(exported, args.out)
    lines.append(f"detector: {exported}  (MLflow artifact detector/detector.tflite of run {tracker.run_id}); serve it with "
                 f"SHOWROOM_DETECTOR_WEIGHTS={args.out or exported}")
    print("\n".join(lines))
    return 0


def _names(data: Path) -> list[str]:
    import yaml

    names = (yaml.safe_load(data.read_text()) or {}).get("names") or {}
    if not names:
        raise ValueError(f"{data}: no class names; make the dataset with python -m training.synthesize_rooms")
    return [names[i] for i in sorted(names)]


def _dataset_params(data: Path) -> dict:
    """What the run trains on, from the dataset's manifest (when it has one)."""
    manifest = data.parent / "manifest.json"
    if not manifest.is_file():
        return {}
    stats = json.loads(manifest.read_text()).get("stats", {})
    out = {}
    for split in ("train", "val", "test"):
        s = stats.get(split) or {}
        out.update({f"{split}_images": s.get("images", 0), f"{split}_boxes_pasted": s.get("boxes_pasted", 0),
                    f"{split}_boxes_detected": s.get("boxes_detected", 0)})
    return out


def backfill_epochs(tracker, train_folder: Path, logged: set[int], done: int) -> list[int]:
    """Log to ``tracker`` the metrics of the epochs up to ``done`` (the checkpoint's) that are not in
    ``logged`` (steps already in the run), from Ultralytics' ``results.csv`` in ``train_folder``;
    returns those epochs. Ultralytics writes an epoch's row, then its checkpoint, and only then calls
    the hook that logs it: a run killed in between resumes after an epoch MLflow never heard of."""
    results = train_folder / "results.csv"
    if not results.is_file():
        return []
    filled = []
    with results.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row = {k.strip(): v.strip() for k, v in raw.items() if k}
            epoch = int(float(row["epoch"]))
            if epoch > done or epoch in logged:
                continue
            values = {_metric(k): float(v) for k, v in row.items() if k.startswith(("train/", "metrics/", "val/")) and v}
            if row.get("lr/pg0"):
                values["lr"] = float(row["lr/pg0"])
            tracker.log_metrics(values, step=epoch)
            filled.append(epoch)
    if filled:
        logger.warning("epochs %s of %s finished but were not logged (the run was killed before): logged now from %s",
                       filled, train_folder.parent.name, results)
    return filled


def _metric(name: str) -> str:
    """Ultralytics' metric names as MLflow accepts them: ``metrics/mAP50(B)`` -> ``metrics/mAP50_B``."""
    return name.replace("(", "_").replace(")", "")


def _resume_state(args: argparse.Namespace, home: Path) -> dict:
    root = home / "detectors"
    if args.resume == "last":
        runs = sorted((p for p in root.glob("*/state.json")), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if not runs:
            raise ValueError(f"--resume last: no detector run under {root}")
        return json.loads(runs[-1].read_text())
    path = root / args.resume / "state.json"
    if not path.is_file():
        raise ValueError(f"--resume {args.resume}: no detector run {path.parent}; give a run id of python -m training.fit_detector")
    return json.loads(path.read_text())


if __name__ == "__main__":
    raise SystemExit(main())
