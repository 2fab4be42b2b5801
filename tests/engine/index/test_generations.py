"""Versioned serving folders: a build becomes current in one step, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.index.generations import (
    POINTER,
    ServingFolderError,
    current_generation,
    generations,
    publish_generation,
    resolve_serving_folder,
)


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
