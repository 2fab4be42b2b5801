"""Hand-drawn boxes standing in for a detector of the product groups.

``DrawnBoxes`` proposes exactly the boxes of one or more ``showroom.boxes`` files (``engine.data.boxes``):
every box of a scene, sure (confidence 1.0), labelled by its group, as a detector that found exactly
them would propose it. Two uses:

- ``evaluation.evaluate --proposals``: the whole-room scores on perfect proposals, and a real
  detector's cost read as the paired difference against them;
- ``training.mine_triplets --proposals``: real training pairs mined through the same boxes, so an
  embedder's recipe can be trained and judged on a catalog's scenes with no trained detector at all
  (the detector factored out of an embedder comparison, on every product group at once).

A drawn box belongs to a scene photo, not to its pixels: ``detect_at(path, image)`` answers, and
``detect(image)`` is refused. ``detectors.cache.DetectionCache`` passes a photo's path through to it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.boxes import BoxesFileError, RelativeBox, read_boxes_files, to_pixels
from engine.data.catalog import Catalog
from engine.data.detection import Detection
from engine.files import file_sha256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrawnBoxes:
    """Hand-drawn boxes as a detector. ``boxes``: each scene photo's path → its ``(group, relative
    box)`` rows; ``class_names``: every product group (so the groups map applies); ``fingerprint``:
    ``drawn-boxes:`` and a digest of the files' contents, in the order given."""

    boxes: dict[str, tuple[tuple[str, RelativeBox], ...]]
    class_names: tuple[str, ...]
    fingerprint: str

    @classmethod
    def for_catalog(cls, paths: str | Path | Sequence[str | Path], catalog: Catalog, groups: Collection[str], *,
                    every_scene: bool = True) -> DrawnBoxes:
        """The boxes of ``paths`` (one or more ``showroom.boxes`` files, no scene in two of them) on
        ``catalog``'s scenes. Refused (``BoxesFileError``) when a box names no group of ``groups``,
        or, with ``every_scene``, when a scene has no boxes: an evaluated scene must be drawn, or its
        products would count as missed by the detector (and a scene without pairs would lose its
        crops, the other products' distractors). Without it (mining) an undrawn scene proposes
        nothing, and the count of those with pairs is logged: their pairs give no positives."""
        paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        rows = read_boxes_files(paths)
        unknown = sorted({g for boxes in rows.values() for g, _ in boxes} - set(groups))
        if unknown:
            raise BoxesFileError(f"boxes files {', '.join(map(str, paths))}: groups {unknown[:5]} are not product groups "
                                 f"({', '.join(sorted(groups))})")
        missing = [s.scene for s in catalog.scenes if not rows.get(s.scene)]
        if missing and every_scene:
            raise BoxesFileError(f"boxes files {', '.join(map(str, paths))} have no boxes for {len(missing)} of the "
                                 f"{len(catalog.scenes)} evaluated scenes, e.g. {missing[:3]}: evaluate only the scenes they cover (--scenes)")
        with_pairs = {p.scene for p in catalog.pairs}
        unmined = [name for name in missing if name in with_pairs]
        if unmined:
            logger.warning("%d of the %d scenes with pairs have no drawn boxes (e.g. %s): their pairs are proposed nothing",
                           len(unmined), len(with_pairs), unmined[:3])
        digest = "+".join(file_sha256(p)[:16] for p in paths)
        return cls({str(s.image): tuple(rows.get(s.scene, ())) for s in catalog.scenes}, tuple(sorted(groups)), f"drawn-boxes:{digest}")

    def detect(self, image: np.ndarray) -> list[Detection]:
        raise TypeError("drawn boxes belong to a scene photo, not to its pixels: use detect_at(path, image)")

    def detect_at(self, path: str | Path, image: np.ndarray) -> list[Detection]:
        """The drawn boxes of the photo at ``path`` (``uint8 (H, W, 3)``), in pixels, most confident
        (all 1.0) in file order; none for a photo the files do not draw."""
        h, w = image.shape[:2]
        return [Detection(to_pixels(box, w, h), group, 1.0) for group, box in self.boxes.get(str(path), ())]
