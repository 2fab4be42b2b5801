"""Helpers of the catalog-delta tests: photo files and a stand-in model that embeds them by colour."""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np
from PIL import Image

from engine.files import file_sha256
from engine.index.items import ItemTable


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


def as_version_1(folder: Path) -> None:
    """Rewrite a saved flat index folder as Showroom wrote it before items were stored by column:
    ``items.json`` one record per row, manifest version 1 (checksums and sizes kept true)."""
    table = ItemTable.from_json(json.loads((folder / "items.json").read_text()))
    (folder / "items.json").write_text(json.dumps([it.to_dict() for it in table]))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = 1
    manifest["checksums"]["items.json"] = file_sha256(folder / "items.json")
    manifest["sizes"]["items.json"] = (folder / "items.json").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
