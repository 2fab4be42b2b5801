"""Hand-drawn boxes of product groups on catalog scenes: the ``showroom.boxes`` v1 file.

The file holds, per scene name, ``[group, x1, y1, x2, y2]`` rows with coordinates as fractions of
the photo's width and height (``0 <= x1 < x2 <= 1``, same for y). Used as real boxes to measure a
detector on (``python -m evaluation.detector_boxes``) and as labels of what a background photo
already holds when rooms are synthesised (``python -m training.synthesize_rooms --background-boxes``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

FORMAT, VERSION = "showroom.boxes", 1
RelativeBox = tuple[float, float, float, float]


class BoxesFileError(ValueError):
    """A boxes file that cannot be read, or a box in it that is not a box."""


def read_boxes(path: str | Path) -> dict[str, list[tuple[str, RelativeBox]]]:
    """Scene -> ``[(group, (x1, y1, x2, y2))]`` with coordinates as fractions of the photo, in file order."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BoxesFileError(f"boxes file {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION or not isinstance(data.get("boxes"), dict):
        raise BoxesFileError(f"boxes file {path}: expected a {FORMAT} v{VERSION} file with a 'boxes' object of scene -> rows")
    out = {}
    for scene, rows in data["boxes"].items():
        boxes = []
        for row in rows:
            try:
                group, *box = row
                box = [float(v) for v in box]
            except (TypeError, ValueError):
                raise BoxesFileError(f"boxes file {path}: {scene}: row {row!r} must be [group, x1, y1, x2, y2]") from None
            if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise BoxesFileError(f"boxes file {path}: {scene}: box {row} must be group, x1 < x2, y1 < y2 as fractions in [0, 1]")
            boxes.append((str(group), (box[0], box[1], box[2], box[3])))
        out[str(scene)] = boxes
    return out


def read_boxes_files(paths: Sequence[str | Path]) -> dict[str, list[tuple[str, RelativeBox]]]:
    """``read_boxes`` of several files as one: scene -> rows. A scene drawn in two of them is refused
    (``BoxesFileError``): which drawing counts would be a silent choice."""
    out: dict[str, list[tuple[str, RelativeBox]]] = {}
    where: dict[str, Path] = {}
    for path in map(Path, paths):
        for scene, rows in read_boxes(path).items():
            if scene in out:
                raise BoxesFileError(f"boxes files {where[scene]} and {path} both draw scene {scene}: give each scene's boxes once")
            out[scene], where[scene] = rows, path
    return out


def to_pixels(box: RelativeBox, width: int, height: int) -> tuple[int, int, int, int]:
    """A relative box on a ``width`` x ``height`` photo in whole pixels (rounded, inside the photo)."""
    x1, y1, x2, y2 = box
    return (max(0, round(x1 * width)), max(0, round(y1 * height)), min(width, round(x2 * width)), min(height, round(y2 * height)))
