"""How two detectors' boxes agree: one-to-one twins of the same class, their IoU and score difference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.data.detection import Detection, Detector, box_iou


@dataclass(frozen=True)
class Agreement:
    """Twins between a reference detector's boxes and another's (summed over images with ``+``).

    ``ious``/``score_diffs``: per twin, its IoU and ``|confidence difference|``; ``unmatched_reference``
    / ``unmatched_other``: boxes of either side without a twin.
    """

    ious: tuple[float, ...] = ()
    score_diffs: tuple[float, ...] = ()
    unmatched_reference: int = 0
    unmatched_other: int = 0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.ious + other.ious, self.score_diffs + other.score_diffs,
                         self.unmatched_reference + other.unmatched_reference, self.unmatched_other + other.unmatched_other)

    @property
    def matched(self) -> int:
        return len(self.ious)

    def summary(self) -> str:
        """One line: twins, boxes without one, IoU (min/median) and score difference (median/max)."""
        if not self.ious:
            return f"no twins; unmatched {self.unmatched_reference} reference, {self.unmatched_other} other"
        ious, diffs = np.asarray(self.ious), np.asarray(self.score_diffs)
        return (f"{self.matched} twins, unmatched {self.unmatched_reference} reference / {self.unmatched_other} other; "
                f"IoU min {ious.min():.3f} median {np.median(ious):.3f}; |score diff| median {np.median(diffs):.4f} max {diffs.max():.4f}")


def agreement(reference: Sequence[Detection], other: Sequence[Detection], *, min_iou: float = 0.5) -> Agreement:
    """Pair each reference box, highest confidence first, with the unpaired ``other`` box of the same
    label that overlaps it most, if that IoU is at least ``min_iou``."""
    free = list(other)
    ious, diffs, missing = [], [], 0
    for d in sorted(reference, key=lambda x: -x.confidence):
        scored = [(box_iou(d.box, o.box), i) for i, o in enumerate(free) if o.label == d.label]
        best = max(scored, default=(0.0, -1))
        if best[0] < min_iou or best[1] < 0:
            missing += 1
            continue
        twin = free.pop(best[1])
        ious.append(best[0])
        diffs.append(abs(d.confidence - twin.confidence))
    return Agreement(tuple(ious), tuple(diffs), missing, len(free))


def compare_detectors(reference: Detector, other: Detector, images: Sequence[np.ndarray], *, min_iou: float = 0.5) -> Agreement:
    """``agreement`` of the two detectors summed over ``images`` (``uint8 (H, W, 3)`` RGB)."""
    total = Agreement()
    for image in images:
        total = total + agreement(reference.detect(image), other.detect(image), min_iou=min_iou)
    return total
