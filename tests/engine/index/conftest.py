"""Helpers of the catalog-delta tests: photo files and a stand-in model that embeds them by colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(root: Path, name: str, colour: tuple[int, int, int]) -> Path:
    """An 8 x 8 PNG of one colour, ``root/<name>.png``."""
    path = root / f"{name}.png"
    Image.new("RGB", (8, 8), colour).save(path)
    return path


class ColourEmbed:
    """Embeds a photo as its mean colour (unit norm, padded to D = 4) and records every path it embeds."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, paths) -> np.ndarray:
        self.paths += list(paths)
        out = []
        for p in paths:
            rgb = np.asarray(Image.open(p).convert("RGB"), np.float32).reshape(-1, 3).mean(0) + 1.0
            v = np.concatenate([rgb, [1.0]])
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)
