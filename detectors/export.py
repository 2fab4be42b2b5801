"""Export a trained Ultralytics YOLOv8 ``.pt`` to the float32 ``.tflite`` the server runs on LiteRT, class names inside.

    python -m detectors.export --weights runs/detect/train/weights/best.pt --out detector.tflite [--imgsz 640]

The network is rebuilt in TensorFlow from the checkpoint's folded weights (``YoloGraph``, read by
``detectors.yolo``) and converted with TensorFlow's own TFLite converter: no ONNX, onnx2tf or
litert-torch (Ultralytics' own TFLite export needs those, and they do not install beside the
pinned TensorFlow/NumPy). The file is what Ultralytics' TFLite exports are: input ``float32
(1, S, S, 3)`` in [0, 1], output ``float32 (1, 4 + C, A)`` with boxes as centre/size divided by S
and class scores, and its metadata (class names, imgsz, stride) zipped onto the end, so
``LiteRTDetector`` (and Ultralytics) run it. The rebuilt network is checked against the checkpoint
on a probe input before and after conversion.
"""

from __future__ import annotations

import argparse
import json
import logging
import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from detectors.yolo_graph import C2f, SPPF, Concat, Conv, ConvLayer, Detect, Upsample, YoloGraph
from engine.data.detection import DetectorError

logger = logging.getLogger(__name__)

MAX_PROBE_ERROR = 1e-3  # largest |difference| allowed between the checkpoint's output and the export's on the probe


def _conv(tf, x, c: Conv):
    """PyTorch's zero padding then convolution (stride 1 with half-kernel padding is TensorFlow's "SAME")."""
    kh, kw = c.weight.shape[:2]
    if c.stride == 1 and kh == kw and kh % 2 and c.padding == kh // 2:
        padding = "SAME"
    else:
        padding = "VALID"
        if c.padding:
            x = tf.pad(x, [[0, 0], [c.padding, c.padding], [c.padding, c.padding], [0, 0]])
    y = tf.nn.conv2d(x, tf.constant(c.weight), strides=c.stride, padding=padding) + tf.constant(c.bias)
    return y * tf.sigmoid(y) if c.silu else y


def _anchors(shapes: Sequence[tuple[int, int]], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres ``float32 (A, 2)`` in grid units and their strides ``float32 (A, 1)``, level by
    level, rows then columns (Ultralytics' ``make_anchors`` with offset 0.5)."""
    points, sizes = [], []
    for (h, w), s in zip(shapes, strides):
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        sizes.append(np.full((h * w, 1), s, np.float32))
    return np.concatenate(points), np.concatenate(sizes)


def _detect(tf, feats, head: Detect, imgsz: int):
    """``(1, 4 + C, A)``: DFL-decoded boxes (centre x/y, width, height, divided by ``imgsz``) and sigmoid scores."""
    boxes, scores, shapes = [], [], []
    for x, box, cls in zip(feats, head.box, head.cls):
        b, c = x, x
        for conv in box:
            b = _conv(tf, b, conv)
        for conv in cls:
            c = _conv(tf, c, conv)
        h, w = int(x.shape[1]), int(x.shape[2])
        shapes.append((h, w))
        boxes.append(tf.reshape(b, [1, h * w, 4 * head.reg_max]))
        scores.append(tf.reshape(c, [1, h * w, int(c.shape[-1])]))
    boxes, scores = tf.concat(boxes, axis=1), tf.concat(scores, axis=1)
    n = int(boxes.shape[1])
    bins = tf.nn.softmax(tf.reshape(boxes, [1, n, 4, head.reg_max]), axis=-1)
    dist = tf.reduce_sum(bins * tf.constant(np.arange(head.reg_max, dtype=np.float32)), axis=-1)  # (1, A, 4): l, t, r, b
    points, strides = _anchors(shapes, head.strides)
    lt, rb = dist[..., :2], dist[..., 2:]
    x1y1, x2y2 = points - lt, points + rb
    xywh = tf.concat([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1) * (strides / imgsz)
    return tf.transpose(tf.concat([xywh, tf.sigmoid(scores)], axis=-1), [0, 2, 1])


def build_function(graph: YoloGraph):
    """A ``tf.function`` computing ``graph``: ``float32 (1, S, S, 3)`` in [0, 1] -> ``float32 (1, 4 + C, A)``."""
    import tensorflow as tf

    imgsz = graph.imgsz

    @tf.function(input_signature=[tf.TensorSpec([1, imgsz, imgsz, 3], tf.float32, name="images")])
    def yolo(images):
        outputs = []
        for layer in graph.layers:
            ins = [outputs[i] if outputs else images for i in layer.sources]
            x = ins[0]
            if isinstance(layer, ConvLayer):
                y = _conv(tf, x, layer.conv)
            elif isinstance(layer, C2f):
                parts = tf.split(_conv(tf, x, layer.cv1), 2, axis=-1)
                for a, b in layer.bottlenecks:
                    z = _conv(tf, _conv(tf, parts[-1], a), b)
                    parts.append(parts[-1] + z if layer.shortcut else z)
                y = _conv(tf, tf.concat(parts, axis=-1), layer.cv2)
            elif isinstance(layer, SPPF):
                parts = [_conv(tf, x, layer.cv1)]
                for _ in range(layer.repeats):
                    parts.append(tf.nn.max_pool2d(parts[-1], layer.kernel, 1, "SAME"))
                y = _conv(tf, tf.concat(parts, axis=-1), layer.cv2)
            elif isinstance(layer, Upsample):
                y = tf.image.resize(x, [int(x.shape[1]) * layer.factor, int(x.shape[2]) * layer.factor], method="nearest")
            elif isinstance(layer, Concat):
                y = tf.concat(ins, axis=-1)
            elif isinstance(layer, Detect):
                y = _detect(tf, ins, layer, imgsz)
            else:  # pragma: no cover - YoloGraph holds only the kinds above
                raise DetectorError(f"unknown layer {type(layer).__name__}")
            outputs.append(y)
        return outputs[-1]

    return yolo


def _check(what: str, out: np.ndarray, graph: YoloGraph) -> float:
    err = float(np.abs(out - graph.probe_output).max())
    logger.info("%s vs the checkpoint on the probe input: max |difference| %.2e", what, err)
    if not err <= MAX_PROBE_ERROR:
        raise DetectorError(f"{what} differs from the checkpoint by {err:.3g} (> {MAX_PROBE_ERROR}): the rebuild is wrong")
    return err


def metadata(graph: YoloGraph, source: Path) -> dict:
    """What Ultralytics writes into its exports, for ``read_class_names`` and Ultralytics' own loader."""
    return {"description": f"YOLOv8 detector exported from {source.name}", "author": "Showroom", "date": datetime.now().astimezone().isoformat(),
            "stride": int(max(graph.layers[-1].strides)), "task": "detect", "batch": 1, "imgsz": [graph.imgsz, graph.imgsz],
            "names": {str(i): n for i, n in enumerate(graph.names)}, "channels": 3}


def export_tflite(weights: str | Path, out: str | Path, *, imgsz: int | None = None) -> Path:
    """Write the YOLOv8 ``.pt`` at ``weights`` as a float32 ``.tflite`` at ``out`` (see the module
    docstring); ``imgsz``: its fixed input size (default: the size the checkpoint was trained at)."""
    from detectors.yolo import read_yolov8_graph

    weights, out = Path(weights), Path(out)
    if out.suffix != ".tflite":
        raise DetectorError(f"--out {out}: the export must end in .tflite")
    graph = read_yolov8_graph(weights, imgsz=imgsz)
    import tensorflow as tf

    fn = build_function(graph)
    _check("TensorFlow rebuild", fn(tf.constant(graph.probe_input)).numpy()[0], graph)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    flatbuffer = converter.convert()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(flatbuffer)
    with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as zf:  # appended after the flatbuffer, as Ultralytics does
        zf.writestr("metadata.json", json.dumps(metadata(graph, weights)))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], graph.probe_input)
    interpreter.invoke()
    _check("TFLite file", interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0], graph)
    tmp.replace(out)
    logger.info("wrote %s: %d classes, input %d, %.1f MB", out, len(graph.names), graph.imgsz, out.stat().st_size / 1e6)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detectors.export", description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True, help="a trained Ultralytics YOLOv8 detection checkpoint (.pt)")
    p.add_argument("--out", type=Path, required=True, help="where to write the .tflite (open_detector runs it on LiteRT)")
    p.add_argument("--imgsz", type=int, help="the export's fixed square input size, a multiple of 32 (default: the size it was trained at)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from engine.runtime import run_cli

    args = build_parser().parse_args(argv)

    def run(_home: Path) -> int:
        print(export_tflite(args.weights, args.out, imgsz=args.imgsz))
        return 0

    return run_cli(run, verbose=args.verbose, logger_name="detectors.export")


if __name__ == "__main__":
    raise SystemExit(main())
