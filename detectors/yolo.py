"""Ultralytics YOLO behind the ``Detector`` protocol, and the Ultralytics side of recovering and
exporting YOLOv8 weights (building a model, writing a checkpoint, reading one as a ``YoloGraph``);
the only module that imports ``ultralytics``.

Results are converted to ``Detection`` at once: no torch object leaves ``detectors/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from detectors.yolo_graph import C2f, SPPF, Concat, Conv, ConvLayer, Detect, Upsample, YoloGraph
from engine.config import DEFAULT_MIN_CONFIDENCE
from engine.data.detection import Detection, DetectorError

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "yolo11n.pt"  # Ultralytics downloads it on first use (needs internet)
WEIGHTS_ENV = "SHOWROOM_DETECTOR_WEIGHTS"


def default_weights() -> str:
    """``$SHOWROOM_DETECTOR_WEIGHTS`` (e.g. an offline copy) or ``yolo11n.pt`` (downloaded by Ultralytics)."""
    return os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS


SUFFIXES = (".pt", ".onnx", ".tflite")


# Ultralytics training arguments that keep a CPU run offline: no plots (they fetch Arial.ttf from
# GitHub) and no AMP check (it downloads a yolo11n.pt; AMP is off on CPU anyway).
OFFLINE_TRAIN_ARGS = {"plots": False, "amp": False, "device": "cpu"}


def _local_font(font: str = "Arial.ttf") -> Path | None:
    """Ultralytics' ``check_font`` without its download: the font from its config folder or matplotlib's
    list, else None (its dataset check only warms the font up for plots)."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    name = Path(font).name
    if (USER_CONFIG_DIR / name).exists():
        return USER_CONFIG_DIR / name
    return next((Path(f.fname) for f in font_manager.fontManager.ttflist if font in f.fname and os.path.exists(f.fname)), None)


def _configure_ultralytics() -> None:
    """No analytics sync, MLflow autologging (it would hijack our runs) or Ray Tune reporting from
    Ultralytics, and no network from a training run's dataset check."""
    import PIL.Image
    from ultralytics import settings
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import patches

    # raytune: Ray is installed for the distributed runner; Ultralytics' Ray Tune callback would import it
    # into every training run and look for a Tune session.
    if settings.get("sync") or settings.get("mlflow") or settings.get("raytune"):
        settings.update({"sync": False, "mlflow": False, "raytune": False})
    # Ultralytics replaces PIL.Image.open process-wide with a version that pip-installs a HEIF plugin
    # when Pillow cannot identify a file. We only pass decoded arrays to YOLO, so put Pillow's own
    # back: a bad catalog image must fail with our message, never trigger an install.
    original = getattr(patches, "_image_open", None)
    if original is not None and PIL.Image.open is not original:
        PIL.Image.open = original
    # check_det_dataset asks GitHub for Arial.ttf when matplotlib has none (even with plots=False):
    # a request that waits for its timeout offline. Look locally only.
    if getattr(data_utils, "check_font", None) is not _local_font:
        data_utils.check_font = _local_font


def build_detection_model(cfg: str, names: Sequence[str]) -> Any:
    """An untrained Ultralytics ``DetectionModel`` (float32, torch) from a model yaml that ships inside
    Ultralytics (``yolov8n.yaml``: no download), with ``len(names)`` classes called ``names``."""
    _configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg, nc=len(names), verbose=False)
    model.names = {i: str(n) for i, n in enumerate(names)}
    return model


def save_checkpoint(model: Any, path: str | Path, *, imgsz: int) -> Path:
    """Write ``model`` (a ``DetectionModel``, unfused) as an Ultralytics checkpoint: ``YOLO(path)``
    predicts with it and ``YOLO(path).train(data=...)`` fine-tunes it (for a new class count the
    matching tensors transfer). Float32, no optimizer state; ``imgsz`` is recorded as its train size."""
    _configure_ultralytics()
    from ultralytics import __version__
    from ultralytics.utils.patches import torch_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.args = {"task": "detect", "imgsz": imgsz}
    checkpoint = {
        "date": datetime.now().astimezone().isoformat(),
        "version": __version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": model.float().eval(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": imgsz},
        "train_metrics": None,
        "train_results": None,
    }
    torch_save(checkpoint, path)
    logger.info("wrote %s (%d classes, imgsz %d)", path, len(model.names), imgsz)
    return path


def _fold(module: Any) -> Conv:
    """A ``Conv`` module (conv + BatchNorm + SiLU/identity) or a plain ``Conv2d`` as one folded ``Conv``."""
    conv, bn = (module.conv, getattr(module, "bn", None)) if hasattr(module, "conv") else (module, None)
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1]:
        raise DetectorError(f"{type(module).__name__}: grouped, dilated or anisotropic convolutions are not supported")
    weight = conv.weight.detach().double().numpy()  # (O, I, kh, kw)
    bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(weight.shape[0])
    if bn is not None:
        scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
        weight = weight * scale[:, None, None, None]
        bias = (bias - bn.running_mean.detach().double().numpy()) * scale + bn.bias.detach().double().numpy()
    act = type(getattr(module, "act", None)).__name__
    if act not in ("SiLU", "Identity", "NoneType"):
        raise DetectorError(f"activation {act} is not supported (YOLOv8 uses SiLU)")
    return Conv(weight.transpose(2, 3, 1, 0).astype(np.float32), bias.astype(np.float32), int(conv.stride[0]), int(conv.padding[0]), act == "SiLU")


def read_yolov8_graph(weights: str | Path, *, imgsz: int | None = None, seed: int = 0) -> YoloGraph:
    """The YOLOv8 detector of an Ultralytics ``.pt`` checkpoint as a ``YoloGraph`` (numpy, BatchNorms
    folded), with a probe input of ``imgsz`` (default: the size it was trained at) and the
    checkpoint's own output for it. Other architectures (YOLO11's attention blocks, ...) raise ``DetectorError``."""
    _configure_ultralytics()
    import torch
    from ultralytics.nn.modules import C2f as UltralyticsC2f
    from ultralytics.nn.modules import SPPF as UltralyticsSPPF
    from ultralytics.nn.modules import Concat as UltralyticsConcat
    from ultralytics.nn.modules import Conv as UltralyticsConv
    from ultralytics.nn.modules import Detect as UltralyticsDetect
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(weights)
    if path.suffix != ".pt" or not path.is_file():
        raise DetectorError(f"{path}: expected an existing Ultralytics .pt checkpoint")
    try:
        model, _ = load_checkpoint(str(path))
    except Exception as exc:  # Ultralytics raises many kinds for a bad file
        raise DetectorError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    model = model.float().eval()
    imgsz = int(imgsz or model.args.get("imgsz") or 640)
    stride = int(max(model.stride))
    if imgsz % stride:
        raise DetectorError(f"imgsz {imgsz} must be a multiple of the model's stride {stride}")
    layers: list = []
    for m in model.model:
        sources = tuple(m.f) if isinstance(m.f, (list, tuple)) else (m.f,)
        if type(m) is UltralyticsConv:
            layers.append(ConvLayer(sources, _fold(m)))
        elif type(m) is UltralyticsC2f:
            bottlenecks = tuple((_fold(b.cv1), _fold(b.cv2)) for b in m.m)
            adds = {bool(b.add) for b in m.m}
            if len(adds) > 1:
                raise DetectorError("a C2f whose bottlenecks mix shortcuts is not supported")
            layers.append(C2f(sources, _fold(m.cv1), _fold(m.cv2), bottlenecks, adds.pop() if adds else False))
        elif type(m) is UltralyticsSPPF:
            if getattr(m, "add", False):
                raise DetectorError("an SPPF with a shortcut (YOLO26) is not supported")
            layers.append(SPPF(sources, _fold(m.cv1), _fold(m.cv2), int(m.m.kernel_size), int(getattr(m, "n", 3))))
        elif type(m).__name__ == "Upsample" and m.mode == "nearest":
            layers.append(Upsample(sources, int(m.scale_factor)))
        elif type(m) is UltralyticsConcat:
            if m.d != 1:
                raise DetectorError("only channel concatenation is supported")
            layers.append(Concat(sources))
        elif type(m) is UltralyticsDetect and not m.end2end and m.reg_max > 1 and not getattr(m, "xyxy", False) and all(
                type(c) is UltralyticsConv or type(c).__name__ == "Conv2d" for branch in (*m.cv2, *m.cv3) for c in branch):
            # YOLOv8's head: plain convolution chains (YOLO11's class branch has depthwise blocks)
            box = tuple(tuple(_fold(c) for c in branch) for branch in m.cv2)
            cls = tuple(tuple(_fold(c) for c in branch) for branch in m.cv3)
            layers.append(Detect(sources, box, cls, int(m.reg_max), tuple(int(s) for s in m.stride)))
        else:
            raise DetectorError(f"{path}: layer {m.i} ({type(m).__name__}) is not part of YOLOv8's detection architecture")
    probe = np.random.default_rng(seed).random((1, imgsz, imgsz, 3), dtype=np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(probe).permute(0, 3, 1, 2).contiguous())
    out = (out[0] if isinstance(out, (tuple, list)) else out)[0].numpy().copy()
    out[:4] /= imgsz
    names = tuple(str(model.names[i]) for i in sorted(model.names))
    return YoloGraph(tuple(layers), names, probe, out)


EpochHook = Callable[[int, dict[str, float]], None]  # (epoch, its metrics): called after each epoch's validation


SAFE_LAST = "last.safe.pt"  # a whole copy of last.pt, replaced atomically after each save


def _keep_safe_copy(trainer) -> None:
    """After Ultralytics saved ``last.pt`` (which it overwrites in place: a kill mid-write leaves it
    truncated), copy it beside itself atomically, so a killed run always has a whole checkpoint."""
    last = Path(trainer.last)
    tmp = last.with_name(SAFE_LAST + ".tmp")
    tmp.write_bytes(last.read_bytes())
    os.replace(tmp, last.with_name(SAFE_LAST))


def _resume_checkpoint(folder: Path) -> dict:
    """The checkpoint a killed run in ``folder`` continues from: ``weights/last.pt``, or, when the kill
    cut its writing short, the whole copy of the epoch before (put back as ``last.pt``)."""
    import torch

    last, safe = folder / "weights" / "last.pt", folder / "weights" / SAFE_LAST
    if not last.is_file() and not safe.is_file():
        raise DetectorError(f"nothing to resume in {folder}: no weights/last.pt (the run never finished an epoch)")
    try:
        return torch.load(last, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        if not safe.is_file():
            raise DetectorError(f"cannot resume {folder}: weights/last.pt is unreadable ({exc}) and there is no {SAFE_LAST}") from None
        logger.warning("%s is unreadable (a kill while it was written): resuming from %s, the epoch before", last, safe)
        shutil.copyfile(safe, last)
        return torch.load(last, map_location="cpu", weights_only=False)


def resume_progress(folder: str | Path) -> tuple[int, int]:
    """(epochs done, epochs planned) of the training run in ``folder`` (its ``weights/last.pt``)."""
    ckpt = _resume_checkpoint(Path(folder))
    return int(ckpt["epoch"]) + 1, int(ckpt["train_args"]["epochs"])


def train_yolo(init: str | Path, data: Path, folder: Path, *, epochs: int | None, imgsz: int, batch: int, freeze: int, seed: int,
               patience: int = 100, close_mosaic: int = 2, on_epoch: EpochHook | None = None, resume: bool = False) -> Path:
    """Fine-tune a YOLO checkpoint on a YOLO dataset (``data``: its ``data.yaml``) into ``folder``
    (``weights/last.pt`` after every epoch, ``weights/best.pt``); returns ``best.pt``.

    ``freeze``: the first N layers stay fixed (10: YOLOv8's backbone); ``resume``: continue the run
    whose ``weights/last.pt`` is in ``folder`` (its epoch, optimizer and settings), as Ultralytics
    resumes: to its planned epochs (``epochs`` None), or re-planned to ``epochs`` in all (they must
    leave an epoch to train; the learning-rate schedule follows the new plan). ``on_epoch(epoch, metrics)`` gets the epoch's training losses (``train/box_loss`` ...)
    and validation metrics (``metrics/mAP50(B)`` ...), and at the end, at the last epoch, those of
    ``best.pt`` prefixed ``best/``. Offline on a CPU (``OFFLINE_TRAIN_ARGS``);
    on a GPU Ultralytics' own device choice is used.
    """
    _configure_ultralytics()
    import torch
    from ultralytics import YOLO

    folder = Path(folder)
    last = folder / "weights" / "last.pt"
    if resume:
        ckpt = _resume_checkpoint(folder)
        if ckpt.get("optimizer") is None:
            raise DetectorError(f"nothing to resume in {folder}: its training finished (weights/last.pt keeps no optimizer state)")
        planned, done = int(ckpt["train_args"]["epochs"]), int(ckpt["epoch"]) + 1
        if epochs is not None and epochs != planned:  # a new plan for the rest of the run (the learning-rate schedule follows it)
            if epochs <= done:
                raise DetectorError(f"cannot re-plan {folder} to {epochs} epochs: it has trained {done} of {planned} already")
            logger.info("re-planning %s from %d to %d epochs (%d done)", folder, planned, epochs, done)
            ckpt["train_args"]["epochs"] = epochs
            torch.save(ckpt, last)
    model = YOLO(str(last if resume else init), task="detect")

    def hook(trainer) -> None:
        if on_epoch is None:
            return
        if trainer.epoch >= trainer.epochs:  # Ultralytics' final evaluation of best.pt, one step past the last epoch
            on_epoch(int(trainer.epochs), {f"best/{k}": float(v) for k, v in trainer.metrics.items()})
            return
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        values = {**losses, **trainer.metrics, "lr": float(trainer.optimizer.param_groups[0]["lr"])}
        on_epoch(int(trainer.epoch) + 1, {k: float(v) for k, v in values.items()})

    model.add_callback("on_fit_epoch_end", hook)
    model.add_callback("on_model_save", _keep_safe_copy)
    offline = {} if torch.cuda.is_available() else OFFLINE_TRAIN_ARGS
    if resume:
        model.train(resume=True, **offline)
    else:
        if epochs is None:
            raise DetectorError("a new detector training needs its number of epochs")
        model.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, freeze=freeze or None, seed=seed, patience=patience,
                    close_mosaic=close_mosaic, workers=0, project=str(folder.parent), name=folder.name, exist_ok=True, verbose=False,
                    **offline)
    best = folder / "weights" / "best.pt"
    return best if best.is_file() else last


def validate_yolo(weights: str | Path, data: Path, *, split: str, imgsz: int, batch: int = 16, conf: float = 0.001) -> dict[str, object]:
    """mAP@0.5 and mAP@0.5:0.95 of a checkpoint on one split of a YOLO dataset, overall and per class
    present in that split's labels (Ultralytics' validator; a class with no label there has no AP)."""
    _configure_ultralytics()
    import torch
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    offline = {} if torch.cuda.is_available() else OFFLINE_TRAIN_ARGS
    result = model.val(data=str(data), split=split, imgsz=imgsz, batch=batch, conf=conf, verbose=False, workers=0, **offline)
    names = result.names
    per_class = {names[int(c)]: {"ap50": float(result.box.ap50[i]), "ap50_95": float(result.box.ap[i])}
                 for i, c in enumerate(result.box.ap_class_index)}
    return {"map50": float(result.box.map50), "map50_95": float(result.box.map), "per_class": per_class}


class YoloDetector:
    """YOLO detector from a ``.pt``, ``.onnx`` or ``.tflite`` file, or a bare Ultralytics model name.

    A bare name such as ``yolo11n.pt`` (no folder) is downloaded by Ultralytics; a path must exist.
    ``conf``: minimum confidence kept; ``imgsz``: inference size; ``iou``: NMS threshold.
    """

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, *, conf: float = DEFAULT_MIN_CONFIDENCE, iou: float = 0.7, imgsz: int = 640) -> None:
        weights = str(weights)
        path = Path(weights)
        if path.suffix.lower() not in SUFFIXES:
            raise DetectorError(f"detector weights {weights!r}: expected a {', '.join(SUFFIXES)} file")
        is_bare_name = path.name == weights and not path.exists()
        if not is_bare_name and not path.is_file():
            raise DetectorError(f"detector weights {path} not found; pass an existing .pt/.onnx/.tflite file or a bare name like {DEFAULT_WEIGHTS} to download")
        if path.suffix.lower() == ".onnx" and importlib.util.find_spec("onnxruntime") is None:
            # Ultralytics would pip-install it at the first detection, in the middle of serving
            raise DetectorError(f"detector weights {path.name}: an .onnx detector needs onnxruntime, which Showroom does not "
                                "install (pip install onnxruntime); or use the .tflite export (python -m detectors.export)")
        if not 0.0 <= conf <= 1.0:
            raise DetectorError(f"conf must be in [0, 1], got {conf}")
        self.weights, self.conf, self.iou, self.imgsz = weights, conf, iou, imgsz
        self._model = None
        self._names: tuple[str, ...] = ()
        self._lock = threading.Lock()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else weights
        self._fingerprint = f"yolo:{digest}:conf{conf}:iou{iou}:sz{imgsz}"

    def _load(self):
        if self._model is None:
            _configure_ultralytics()
            from ultralytics import YOLO

            try:
                model = YOLO(self.weights, task="detect")
                names = model.names
            except Exception as exc:  # Ultralytics raises many kinds for a bad file
                raise DetectorError(f"cannot load detector weights {self.weights}: {type(exc).__name__}: {exc}") from None
            if not names:
                # Exported formats load their class names lazily; one tiny prediction fills them in.
                model.predict(np.zeros((32, 32, 3), np.uint8), imgsz=self.imgsz, verbose=False, device="cpu")
                names = model.names
            self._names = tuple(names[i] for i in sorted(names))
            self._model = model
        return self._model

    @property
    def class_names(self) -> tuple[str, ...]:
        self._load()
        return self._names

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``uint8 (H, W, 3)`` RGB, highest confidence first; boxes clipped to the image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        model = self._load()
        h, w = image.shape[:2]
        with self._lock:  # Ultralytics predictors are not thread-safe
            result = model.predict(image[..., ::-1], conf=self.conf, iou=self.iou, imgsz=self.imgsz, verbose=False, device="cpu")[0]
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4))
        confs = boxes.conf.cpu().numpy() if len(boxes) else np.zeros(0)
        classes = boxes.cls.cpu().numpy().astype(int) if len(boxes) else np.zeros(0, int)
        out = []
        for (x1, y1, x2, y2), c, k in zip(xyxy, confs, classes):
            bx = (int(max(0, np.floor(x1))), int(max(0, np.floor(y1))), int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2))))
            if bx[2] > bx[0] and bx[3] > bx[1]:
                out.append(Detection(bx, str(result.names[int(k)]), float(c)))
        return sorted(out, key=lambda d: -d.confidence)
