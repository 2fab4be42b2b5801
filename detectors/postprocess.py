"""The numpy halves of running a YOLO export directly: letterbox in; box decoding and class-aware NMS out.

Done the way Ultralytics does them, so a runtime that only computes the network (LiteRT, ONNX
Runtime, a recovered torch model) gives the boxes Ultralytics gives on the same file.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.data.detection import Detection

LETTERBOX_FILL = 114
MAX_WH = 7680  # class offset for class-aware NMS, as Ultralytics
MAX_DET = 300


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping aspect into ``size`` x ``size`` with grey padding, centred (Ultralytics' LetterBox);
    returns the image, the scale and the (left, top) padding."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3)
    return out, r, (left, top)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first. ``boxes`` float (N, 4) xyxy."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def decode(y: np.ndarray, *, box_scale: float, scale: float, pad: tuple[int, int], image_hw: tuple[int, int],
           names: tuple[str, ...], conf: float, iou: float) -> list[Detection]:
    """Detections from one raw YOLO output ``float32 (4 + C, A)`` (centre x/y, width, height, then C class
    scores in [0, 1]), highest confidence first, boxes clipped to the image.

    ``box_scale``: multiplies the box rows into letterboxed pixels (the input size for exports that
    divide by it, such as TFLite; 1 for pixel outputs such as ONNX); ``scale``/``pad``: the letterbox's;
    ``image_hw``: the original image's height and width.
    """
    h, w = image_hw
    scores = y[4:]
    cls = scores.argmax(0)
    best = scores[cls, np.arange(scores.shape[1])]
    keep = best > conf
    if not keep.any():
        return []
    xywh, best, cls = y[:4, keep].T * box_scale, best[keep], cls[keep]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    kept = nms(xyxy + cls[:, None] * MAX_WH, best, iou)[:MAX_DET]
    left, top = pad
    boxes = (xyxy[kept] - [left, top, left, top]) / scale
    out = []
    for (x1, y1, x2, y2), c, k in zip(boxes, best[kept], cls[kept]):
        bx = (int(max(0, np.floor(x1))), int(max(0, np.floor(y1))), int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2))))
        if bx[2] > bx[0] and bx[3] > bx[1]:
            out.append(Detection(bx, names[int(k)], float(c)))
    return sorted(out, key=lambda d: -d.confidence)
