"""A YOLOv8 detection network as plain numpy: the layers, their wiring and folded weights.

``detectors.yolo.read_yolov8_graph`` reads it from an Ultralytics checkpoint (torch stays there);
``detectors.export`` builds the same network in TensorFlow from it. Tensors are NHWC here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Conv:
    """A convolution with its BatchNorm folded in, then SiLU if ``silu``.

    ``weight``: float32 ``(kh, kw, in, out)``; ``bias``: float32 ``(out,)``; ``padding``: zeros on
    every side before a "valid" convolution (PyTorch's semantics).
    """

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    silu: bool


@dataclass(frozen=True)
class ConvLayer:
    """One ``Conv`` module."""

    sources: tuple[int, ...]
    conv: Conv


@dataclass(frozen=True)
class C2f:
    """CSP block: ``cv1``, split in two halves, a chain of bottlenecks (``conv a -> conv b``, plus
    their input when ``shortcut``), everything concatenated, ``cv2``."""

    sources: tuple[int, ...]
    cv1: Conv
    cv2: Conv
    bottlenecks: tuple[tuple[Conv, Conv], ...]
    shortcut: bool


@dataclass(frozen=True)
class SPPF:
    """``cv1``, ``repeats`` max-pools (``kernel``, stride 1, same size) chained, concatenated, ``cv2``."""

    sources: tuple[int, ...]
    cv1: Conv
    cv2: Conv
    kernel: int
    repeats: int


@dataclass(frozen=True)
class Upsample:
    """Nearest-neighbour upsampling by ``factor``."""

    sources: tuple[int, ...]
    factor: int


@dataclass(frozen=True)
class Concat:
    """Channel concatenation of the sources."""

    sources: tuple[int, ...]


@dataclass(frozen=True)
class Detect:
    """YOLOv8's anchor-free head: per level a box branch (``4 * reg_max`` DFL logits) and a class
    branch (``nc`` logits), each a chain of convolutions; ``strides``: per level, in pixels."""

    sources: tuple[int, ...]
    box: tuple[tuple[Conv, ...], ...]
    cls: tuple[tuple[Conv, ...], ...]
    reg_max: int
    strides: tuple[int, ...]


Layer = ConvLayer | C2f | SPPF | Upsample | Concat | Detect


@dataclass(frozen=True)
class YoloGraph:
    """A whole YOLOv8 detector: ``layers`` in order (source -1 is the previous layer), class ``names``,
    and one input ``float32 (1, S, S, 3)`` in [0, 1] with the checkpoint's own output for it, ``float32
    (4 + C, A)``, boxes as centre/size divided by S, to check any rebuild against."""

    layers: tuple[Layer, ...]
    names: tuple[str, ...]
    probe_input: np.ndarray
    probe_output: np.ndarray

    @property
    def imgsz(self) -> int:
        return int(self.probe_input.shape[1])
