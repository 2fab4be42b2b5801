"""Versioned serving folders: every build is a new generation, switched in by one atomic rename.

Layout of a serving folder ``OUT`` written by ``python -m serving.build_index --out OUT``::

    OUT/CURRENT            one line: the name of the served generation (replaced with os.replace)
    OUT/g-<utc>-<hex>/     a complete generation: model.keras, products/, scenes/
    OUT/.build-<name>/     a build in progress (renamed to g-... only when complete)
    OUT/.lock              held by a builder (one build at a time per folder)
    OUT/photos/            photos added through the API, ``<sha256>.<ext>``, outside every generation

A reader resolves ``CURRENT`` once and then reads only that generation's folder, which no builder
ever writes into. A build killed at any moment leaves ``CURRENT`` naming the previous, complete
generation; the next build removes its ``.build-*`` debris (a complete generation never made
current is pruned with the old ones). A photo of ``photos/`` that no remaining generation names is
removed with them, once it is older than ``PHOTO_GRACE_SECONDS`` (a photo just stored for a delta
not yet published is not named yet). A flat folder (``model.keras`` directly inside, as ``training.fit`` logs its
``index/`` artifact and as indexes were built before generations) still resolves to itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from engine.files import write_text_atomic
from engine.index.items import item_images

logger = logging.getLogger(__name__)

POINTER = "CURRENT"
MODEL_FILE = "model.keras"
_NAME = re.compile(r"^g-\d{8}T\d{6}\d{6}Z-[0-9a-f]{6}$")
_LEGACY = (MODEL_FILE, "products", "scenes")
PHOTOS = "photos"  # a serving folder's store of photos added through the API, named by their sha256
PHOTO_GRACE_SECONDS = 3600.0  # an unnamed photo younger than this may belong to a delta being published


class ServingFolderError(ValueError):
    """A folder that is not a (complete) serving folder; the message says how to build one."""


def resolve_serving_folder(folder: str | Path) -> Path:
    """The folder holding ``model.keras`` and the indexes: ``folder/<CURRENT>``, or ``folder`` itself
    when it is flat. Raises ``ServingFolderError`` naming what is missing."""
    folder = Path(folder)
    build = f"build one with `python -m serving.build_index --model MODEL --catalog DIR --out {folder}`"
    if not folder.is_dir():
        raise ServingFolderError(f"{folder} is not a folder; {build}")
    pointer = folder / POINTER
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not _NAME.match(name):
            raise ServingFolderError(f"{pointer} names {name[:80]!r}, which is not a generation; {build}")
        generation = folder / name
        if not (generation / MODEL_FILE).is_file():
            raise ServingFolderError(f"{pointer} names {name}, which is missing or incomplete; {build}")
        return generation
    if (folder / MODEL_FILE).is_file():
        return folder
    raise ServingFolderError(f"{folder} holds neither a {POINTER} pointer nor a {MODEL_FILE}: it is not a serving folder; {build}")


def generations(folder: str | Path) -> list[Path]:
    """Complete generation folders of ``folder``, oldest first."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name)) if folder.is_dir() else []


def current_generation(folder: str | Path) -> str | None:
    """The name in ``folder/CURRENT``, or None for a flat or missing folder."""
    pointer = Path(folder) / POINTER
    return pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else None


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """One builder per serving folder (an advisory ``flock``, released if the builder dies)."""
    with open(folder / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServingFolderError(f"another build is writing {folder}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def new_generation_name(now: datetime | None = None) -> str:
    """``g-<UTC timestamp to the microsecond>-<6 hex>``: sorts by creation time."""
    now = now or datetime.now(timezone.utc)
    return f"g-{now.strftime('%Y%m%dT%H%M%S%f')}Z-{secrets.token_hex(3)}"


def publish_generation(folder: str | Path, write: Callable[[Path], object], *, keep: int = 3) -> Path:
    """Build a new generation of ``folder`` with ``write(tmp_dir)`` and make it current atomically.

    ``write`` fills an empty folder (model.keras and the indexes). Only after it returns is the
    folder renamed to its generation name and ``CURRENT`` replaced. Then all but the ``keep``
    newest generations (never the current one) and a flat layout's old files are removed.
    Returns the new generation's folder.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder):
        _remove_debris(folder)
        name = new_generation_name()
        tmp = folder / f".build-{name}"
        tmp.mkdir()
        try:
            write(tmp)
            if not (tmp / MODEL_FILE).is_file():
                raise ServingFolderError(f"the build wrote no {MODEL_FILE} into {tmp}")
            _fsync_tree(tmp)
            os.rename(tmp, folder / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_text_atomic(folder / POINTER, name + "\n")
        _fsync_dir(folder)
        logger.info("%s now serves generation %s", folder, name)
        _prune(folder, name, keep)
        _collect_photos(folder)
        return folder / name


def _remove_debris(folder: Path) -> None:
    """Builds that died before finishing (``.build-*``); a dead builder's temporary files."""
    for p in folder.iterdir():
        if p.name.startswith(".build-") and p.is_dir():
            logger.warning("removing %s, left by a build that did not finish", p)
            shutil.rmtree(p, ignore_errors=True)


def _prune(folder: Path, current: str, keep: int) -> None:
    """Keep the ``keep`` newest generations (the current one always); drop a flat layout's files."""
    old = [g for g in generations(folder) if g.name != current]
    for g in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(g, ignore_errors=True)
        logger.info("removed old generation %s", g)
    for name in _LEGACY:  # a flat folder upgraded in place: CURRENT now wins, its old files go
        p = folder / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def _named_photos(generation: Path) -> set[str]:
    """File names of the images every ``items.json`` under ``generation`` names (products and scenes)."""
    names: set[str] = set()
    for items in generation.rglob("items.json"):
        names.update(Path(image).name for image in item_images(json.loads(items.read_text())))
    return names


def _collect_photos(folder: Path, grace: float = PHOTO_GRACE_SECONDS) -> list[Path]:
    """Remove the photos of ``folder/photos`` that no remaining generation names and that are older
    than ``grace`` seconds; returns them. A failure is logged, never raised: the new generation is
    already published, and a photo left behind costs only disk."""
    store = folder / PHOTOS
    if not store.is_dir():
        return []
    removed: list[Path] = []
    try:
        cutoff = time.time() - grace
        old = [p for p in store.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
        named = set().union(*(_named_photos(g) for g in generations(folder))) if old else set()
        for photo in old:
            if photo.name not in named:
                photo.unlink()
                removed.append(photo)
    except (OSError, ValueError) as exc:  # ValueError: an unreadable items.json
        logger.warning("photos of %s not collected: %s", store, exc)
        return removed
    if removed:
        logger.info("removed %d photos of %s that no generation names", len(removed), store)
    return removed


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk before it is renamed into place."""
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        elif p.is_dir():
            _fsync_dir(p)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
