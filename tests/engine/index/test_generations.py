"""Versioned serving folders: a build becomes current in one step, or not at all."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from engine.index.generations import (
    PHOTO_GRACE_SECONDS,
    PHOTOS,
    POINTER,
    ServingFolderError,
    current_generation,
    generations,
    publish_generation,
    resolve_serving_folder,
)
from engine.index.items import Item, ItemTable


def writer(tag: str):
    def write(folder: Path) -> None:
        (folder / "model.keras").write_text(tag)
        (folder / "products").mkdir()
        (folder / "products" / "vectors.npy").write_text(tag)
    return write


def test_publish_resolves_to_the_newest_complete_generation(tmp_path: Path):
    out = tmp_path / "serve"
    first = publish_generation(out, writer("a"))
    assert resolve_serving_folder(out) == first and (first / "model.keras").read_text() == "a"
    second = publish_generation(out, writer("b"))
    assert resolve_serving_folder(out) == second != first and current_generation(out) == second.name
    assert first.is_dir()  # the previous one stays for servers that have not reloaded yet
    assert not [p for p in out.iterdir() if p.name.startswith(".build-")]


def test_a_failed_build_leaves_the_current_generation_and_no_debris(tmp_path: Path):
    out = tmp_path / "serve"
    first = publish_generation(out, writer("a"))

    def fails(folder: Path) -> None:
        (folder / "model.keras").write_text("half")
        raise RuntimeError("killed while embedding")

    with pytest.raises(RuntimeError):
        publish_generation(out, fails)
    assert resolve_serving_folder(out) == first and (first / "model.keras").read_text() == "a"
    assert generations(out) == [first] and not [p for p in out.iterdir() if p.name.startswith(".build-")]
    with pytest.raises(ServingFolderError, match="no model.keras"):
        publish_generation(out, lambda folder: None)
    assert resolve_serving_folder(out) == first


def test_debris_of_a_killed_build_is_removed_by_the_next(tmp_path: Path):
    out = tmp_path / "serve"
    publish_generation(out, writer("a"))
    (out / ".build-g-20260101T000000000000Z-abcdef" / "products").mkdir(parents=True)  # what a SIGKILL leaves
    newest = publish_generation(out, writer("b"))
    assert resolve_serving_folder(out) == newest
    assert not [p for p in out.iterdir() if p.name.startswith(".build-")]


def test_keep_prunes_old_generations_but_never_the_current(tmp_path: Path):
    out = tmp_path / "serve"
    made = [publish_generation(out, writer(str(i)), keep=2) for i in range(4)]
    assert generations(out) == made[-2:]
    only = publish_generation(out, writer("x"), keep=1)
    assert generations(out) == [only]
    with pytest.raises(ValueError, match="keep"):
        publish_generation(out, writer("y"), keep=0)


def naming(*photos: str):
    """A generation whose products index names these photos of the store (segmented: base and a segment)."""
    def write(folder: Path) -> None:
        writer("p")(folder)
        base = ItemTable.from_items([Item(f"{n}#0", n, "", "t", f"/srv/showroom/photos/{n}") for n in photos[:1]])
        (folder / "products" / "base").mkdir()
        (folder / "products" / "base" / "items.json").write_text(json.dumps(base.to_json()))  # a flat index's, by column
        (folder / "products" / "seg-1").mkdir()
        (folder / "products" / "seg-1" / "items.json").write_text(json.dumps(  # a delta segment's, one record a row
            [{"product_id": n, "image": f"/srv/showroom/photos/{n}"} for n in photos[1:]]))
    return write


def test_photos_no_remaining_generation_names_are_collected_once_old(tmp_path: Path):
    out = tmp_path / "serve"
    store = out / PHOTOS
    store.mkdir(parents=True)
    old = time.time() - 2 * PHOTO_GRACE_SECONDS
    for name in ("a.png", "b.png", "c.png", "gone.png", "fresh.png"):
        (store / name).write_bytes(b"x")
        if name != "fresh.png":  # fresh: just stored for a delta not yet published
            os.utime(store / name, (old, old))
    publish_generation(out, naming("a.png", "gone.png"), keep=2)
    assert sorted(p.name for p in store.iterdir()) == ["a.png", "fresh.png", "gone.png"]  # b, c: named by none
    publish_generation(out, naming("a.png", "c.png"), keep=2)  # the first generation is still kept: gone stays
    assert sorted(p.name for p in store.iterdir()) == ["a.png", "fresh.png", "gone.png"]
    publish_generation(out, naming("a.png"), keep=2)  # now no remaining generation names gone.png
    assert sorted(p.name for p in store.iterdir()) == ["a.png", "fresh.png"]
    (out / generations(out)[0].name / "products" / "base" / "items.json").write_text("{broken")
    os.utime(store / "fresh.png", (old, old))
    publish_generation(out, naming("a.png"), keep=3)  # an unreadable record: nothing collected, still published
    assert sorted(p.name for p in store.iterdir()) == ["a.png", "fresh.png"] and len(generations(out)) == 3


def test_a_flat_folder_resolves_to_itself_and_is_upgraded_in_place(tmp_path: Path):
    flat = tmp_path / "flat"
    writer("old")(flat.mkdir() or flat)
    assert resolve_serving_folder(flat) == flat
    new = publish_generation(flat, writer("new"))
    assert resolve_serving_folder(flat) == new and not (flat / "model.keras").exists() and not (flat / "products").exists()


@pytest.mark.parametrize("setup,words", [
    (lambda d: None, "is not a folder"),
    (lambda d: d.mkdir(), "neither a CURRENT pointer nor a model.keras"),
    (lambda d: (d.mkdir(), (d / POINTER).write_text("../../etc")), "not a generation"),
    (lambda d: (d.mkdir(), (d / POINTER).write_text("g-20260101T000000000000Z-abcdef")), "missing or incomplete"),
])
def test_resolve_says_what_is_wrong(tmp_path: Path, setup, words):
    folder = tmp_path / "idx"
    setup(folder)
    with pytest.raises(ServingFolderError, match=words):
        resolve_serving_folder(folder)
