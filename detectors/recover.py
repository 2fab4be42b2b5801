"""Recover a trainable Ultralytics YOLOv8 checkpoint (``.pt``) from its TFLite export.

    python -m detectors.recover --tflite ../shared/weights/yolov8n_coco_int8.tflite --out yolov8n_coco.pt \
        --calibration-images ../shared/data/ikea/images/scenes

An Ultralytics ``.tflite`` export keeps every convolution of the network with Conv+BatchNorm
fused into one kernel and bias (int8 weights in a dynamic-range export, float otherwise). Here
each ``CONV_2D`` of the file is read and dequantised, matched to the convolution of Ultralytics'
YOLOv8 architecture of the same shape and output size (in execution order), and loaded:
the kernel as is, and each BatchNorm made identity-plus-bias (running mean 0, running variance 1,
gamma = sqrt(1 + eps), beta = the fused bias), so the model computes what the file computes and
is trainable with its BatchNorms. The DFL kernel and the anchors/strides are Ultralytics' own
(checked against the file). ``calibrate_batchnorm`` then gives each BatchNorm the running
statistics of real images and the matching gamma and beta, leaving eval-mode outputs unchanged
while making train mode (batch statistics) behave like eval mode from the first step.

The only module besides ``detectors/yolo.py`` that imports torch (tests/test_layout.py): the
weight surgery works on torch tensors; the Ultralytics model is built and saved by ``yolo.py``.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detectors.litert import read_class_names
from detectors.postprocess import letterbox
from engine.data.detection import DetectorError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SCALES = {16: "n", 32: "s", 48: "m", 64: "l", 80: "x"}  # YOLOv8's first conv width -> model scale
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class FusedConv:
    """One ``CONV_2D`` of a TFLite graph: a Conv+BatchNorm (or a plain conv) with BN folded in.

    ``weight``: float32 ``(O, I, kh, kw)`` (PyTorch layout), dequantised; ``bias``: float32 ``(O,)``;
    ``out_hw``: its output's height and width at the file's input size; ``quantized``: int8 in the file.
    """

    weight: np.ndarray
    bias: np.ndarray
    out_hw: tuple[int, int]
    quantized: bool


def dequantize(values: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, axis: int) -> np.ndarray:
    """``scale * (q - zero_point)`` as float32, per channel along ``axis`` (or per tensor: one scale)."""
    scales = np.asarray(scales, np.float32)
    zero_points = np.asarray(zero_points, np.float32)
    if scales.size == 1:
        return (values.astype(np.float32) - zero_points.reshape(())) * scales.reshape(())
    shape = [1] * values.ndim
    shape[axis] = -1
    if zero_points.size == 1:
        zero_points = np.full_like(scales, zero_points.reshape(()))
    return (values.astype(np.float32) - zero_points.reshape(shape)) * scales.reshape(shape)


def _interpreter(path: Path):
    """A LiteRT interpreter on the built-in kernels (no delegate takes the weights over), allocated."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise DetectorError(f"cannot read {path} with LiteRT: {exc}") from None
    return interpreter


def read_fused_convs(path: str | Path) -> tuple[list[FusedConv], int]:
    """Every ``CONV_2D`` of a ``.tflite`` in execution order, dequantised, and the file's input size."""
    path = Path(path)
    if path.suffix.lower() != ".tflite" or not path.is_file():
        raise DetectorError(f"{path}: expected an existing .tflite file")
    interpreter = _interpreter(path)
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    inp = interpreter.get_input_details()[0]
    if len(inp["shape"]) != 4 or inp["shape"][1] != inp["shape"][2]:
        raise DetectorError(f"{path}: input {inp['shape']} is not a square image batch")
    convs = []
    # _get_ops_details is LiteRT's (and tf.lite's) own listing of the graph, in execution order.
    for op in interpreter._get_ops_details():
        if op["op_name"] != "CONV_2D":
            continue
        _, w, b = op["inputs"][:3]
        raw = interpreter.get_tensor(w)
        quantized = raw.dtype == np.int8
        if quantized:
            q = tensors[w]["quantization_parameters"]
            kernel = dequantize(raw, q["scales"], q["zero_points"], q["quantized_dimension"])
        else:
            kernel = raw.astype(np.float32)
        bias = interpreter.get_tensor(b).astype(np.float32) if b >= 0 else np.zeros(kernel.shape[0], np.float32)
        out = tensors[op["outputs"][0]]["shape"]
        convs.append(FusedConv(np.ascontiguousarray(kernel.transpose(0, 3, 1, 2)), bias, (int(out[1]), int(out[2])), quantized))
    if not convs:
        raise DetectorError(f"{path}: no convolutions; not a YOLO export")
    return convs, int(inp["shape"][1])


def _conv_order(model: torch.nn.Module, imgsz: int) -> list[tuple[str, torch.nn.Conv2d, tuple[int, int]]]:
    """(name, module, output (H, W)) of every ``Conv2d`` of ``model`` in the order one forward runs them."""
    import torch

    order: list[tuple[str, torch.nn.Conv2d, tuple[int, int]]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: order.append((name, mod, (int(o.shape[2]), int(o.shape[3])))))
             for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for h in hooks:
            h.remove()
    return order


def load_fused_convs(model: torch.nn.Module, convs: Sequence[FusedConv], imgsz: int) -> None:
    """Load ``convs`` into an Ultralytics YOLOv8 ``DetectionModel`` in place.

    Each torch convolution takes the next unused file convolution with its kernel shape and output
    size. A ``Conv`` (conv + BatchNorm) gets the kernel, and its BatchNorm becomes identity plus the
    fused bias; a plain ``Conv2d`` (the head's last layers) gets kernel and bias; the DFL
    convolution must already hold what the file holds (0..reg_max-1, no bias).
    """
    import torch

    pool: dict[tuple, list[FusedConv]] = defaultdict(list)
    for c in convs:
        pool[(c.weight.shape, c.out_hw)].append(c)
    modules = dict(model.named_modules())
    for name, conv, hw in _conv_order(model, imgsz):
        candidates = pool.get((tuple(conv.weight.shape), hw))
        if not candidates:
            raise DetectorError(f"the file has no convolution {tuple(conv.weight.shape)} with output {hw} for {name}: not this architecture")
        fused = candidates.pop(0)
        with torch.no_grad():
            if name.endswith(".dfl.conv"):
                if not (np.array_equal(fused.weight, conv.weight.numpy()) and not fused.bias.any()):
                    raise DetectorError(f"the file's DFL kernel {fused.weight.ravel()} is not Ultralytics' 0..{conv.in_channels - 1}")
                continue
            conv.weight.copy_(torch.from_numpy(fused.weight))
            bn = modules.get(name.rsplit(".", 1)[0] + ".bn") if name.endswith(".conv") else None
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0)
                bn.weight.fill_(float(np.sqrt(1.0 + bn.eps)))
                bn.bias.copy_(torch.from_numpy(fused.bias))
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(fused.bias))
            else:
                raise DetectorError(f"{name}: a convolution with neither BatchNorm nor bias; not a YOLOv8 layout")
    left = sum(len(v) for v in pool.values())
    if left:
        raise DetectorError(f"{left} convolutions of the file have no place in the model: not this architecture")


def _batches(images: Sequence[np.ndarray], imgsz: int, batch: int):
    """Letterboxed ``float32 (B, 3, imgsz, imgsz)`` tensors in [0, 1], ``batch`` images at a time."""
    import torch

    for start in range(0, len(images), batch):
        boxed = np.stack([letterbox(im, imgsz)[0] for im in images[start:start + batch]]).astype(np.float32) / 255.0
        yield torch.from_numpy(boxed).permute(0, 3, 1, 2).contiguous()


def calibrate_batchnorm(model: torch.nn.Module, images: Sequence[np.ndarray], imgsz: int, *, batch: int = 8) -> None:
    """Give every BatchNorm the running mean/variance of its input on ``images`` (``uint8 (H, W, 3)``
    RGB, letterboxed to ``imgsz``), and gamma = sqrt(var + eps), beta = old beta + mean.

    Eval mode computes the same function as before (up to float rounding); train mode, which
    normalises with batch statistics, now starts near it too (with identity BatchNorms, train mode
    rescales every channel to unit variance and the first steps destroy the pretrained detector).
    """
    import torch

    if not images:
        raise ValueError("calibrate_batchnorm needs at least one image")
    norms = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    sums: dict[str, list] = {name: [0, 0.0, 0.0] for name in norms}

    def hook(name: str):
        def record(module, inputs, output):
            x = inputs[0].detach().double()
            s = sums[name]
            s[0] += x.shape[0] * x.shape[2] * x.shape[3]
            s[1] = s[1] + x.sum((0, 2, 3))
            s[2] = s[2] + (x * x).sum((0, 2, 3))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in norms.items()]
    try:
        with torch.no_grad():
            model.eval()
            for x in _batches(images, imgsz, batch):
                model(x)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for name, bn in norms.items():
            n, s1, s2 = sums[name]
            mean = s1 / n
            var = (s2 / n - mean * mean).clamp_min(0.0)
            # eval BN is y -> a * y + c; keep a and c with the new statistics (m, v):
            # gamma = a * sqrt(v + eps), beta = c + a * m
            a = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            c = bn.bias.double() - bn.running_mean.double() * a
            bn.weight.copy_((a * torch.sqrt(var + bn.eps)).float())
            bn.bias.copy_((c + a * mean).float())
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
    logger.info("calibrated %d BatchNorms on %d images", len(norms), len(images))


def raw_predictions(model: torch.nn.Module, image: np.ndarray, imgsz: int) -> np.ndarray:
    """The model's output for ``uint8 (H, W, 3)`` RGB letterboxed to ``imgsz``, in the TFLite export's
    layout: ``float32 (4 + C, A)``, boxes as centre x/y and width/height divided by ``imgsz``, scores in [0, 1]."""
    import torch

    with torch.no_grad():
        out = model.eval()(next(_batches([image], imgsz, 1)))
    out = (out[0] if isinstance(out, (tuple, list)) else out)[0].numpy().copy()
    out[:4] /= imgsz
    return out


def recover_yolov8(tflite: str | Path, *, calibration: Sequence[np.ndarray] = (), batch: int = 8) -> tuple[torch.nn.Module, int]:
    """An Ultralytics YOLOv8 ``DetectionModel`` (float32, eval mode) holding the weights of a YOLOv8
    detection ``.tflite``, with the file's class names; and the file's input size.

    ``calibration``: ``uint8 (H, W, 3)`` RGB images for ``calibrate_batchnorm`` (recommended before
    fine-tuning; without them the BatchNorms stay identity-plus-bias).
    """
    from detectors.yolo import build_detection_model

    path = Path(tflite)
    convs, imgsz = read_fused_convs(path)
    names = read_class_names(path)
    scale = SCALES.get(convs[0].weight.shape[0])
    if scale is None:
        raise DetectorError(f"{path}: first convolution has {convs[0].weight.shape[0]} filters; not a YOLOv8 n/s/m/l/x export")
    model = build_detection_model(f"yolov8{scale}.yaml", names)
    load_fused_convs(model, convs, imgsz)
    quantized = sum(c.quantized for c in convs)
    logger.info("recovered YOLOv8%s (%d classes) from %s: %d convolutions (%d int8), input %d", scale, len(names), path.name, len(convs), quantized, imgsz)
    if calibration:
        calibrate_batchnorm(model, calibration, imgsz, batch=batch)
    return model.eval(), imgsz


def _images(folder: Path, limit: int) -> list[np.ndarray]:
    from engine.data.images import load_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit] if folder.is_dir() else []
    if not files:
        raise DetectorError(f"--calibration-images {folder}: no {'/'.join(IMAGE_SUFFIXES)} images there")
    return [load_image(p) for p in files]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detectors.recover", description=__doc__.splitlines()[0])
    p.add_argument("--tflite", type=Path, required=True, help="an Ultralytics YOLOv8 detection .tflite export (int8 or float weights)")
    p.add_argument("--out", type=Path, required=True, help="where to write the .pt checkpoint (YOLO(path) loads it, .train() fine-tunes it)")
    p.add_argument("--calibration-images", type=Path, help="a folder of photos like those the detector will see: BatchNorm statistics "
                   "are measured on them so training starts from the recovered detector (recommended before fine-tuning)")
    p.add_argument("--max-images", type=int, default=64, help="use at most this many calibration photos (sorted by name); default 64")
    p.add_argument("--check", type=int, default=4, help="after writing, compare the .pt's boxes with the .tflite's on this many "
                   "calibration photos and log the agreement (0: skip); default 4")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from engine.runtime import run_cli

    args = build_parser().parse_args(argv)

    def run(_home: Path) -> int:
        from detectors.yolo import save_checkpoint

        if args.out.suffix != ".pt":
            raise DetectorError(f"--out {args.out}: the checkpoint must end in .pt")
        images = _images(args.calibration_images, args.max_images) if args.calibration_images else []
        if not images:
            logger.warning("no --calibration-images: BatchNorms stay identity-plus-bias; fine-tuning will start far from the detector")
        model, imgsz = recover_yolov8(args.tflite, calibration=images)
        out = save_checkpoint(model, args.out, imgsz=imgsz)
        if images and args.check:
            from detectors.agreement import compare_detectors
            from detectors.litert import LiteRTDetector
            from detectors.yolo import YoloDetector

            a = compare_detectors(LiteRTDetector(args.tflite), YoloDetector(out, imgsz=imgsz), images[: args.check])
            logger.info("boxes of the .pt against the .tflite on %d photos: %s", min(args.check, len(images)), a.summary())
        print(out)
        return 0

    return run_cli(run, verbose=args.verbose, logger_name="detectors.recover")


if __name__ == "__main__":
    raise SystemExit(main())
