"""Atomic writes leave the old file or folder, or the new one, never half of either nor any debris; hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from engine.files import atomic_file, atomic_folder, file_sha256, write_bytes_atomic, write_json_atomic, write_text_atomic


class Crash(Exception):
    """Raised by a test in the middle of a write."""


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path: Path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert file_sha256(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2's example
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    big = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # read in several 1 MB chunks
    (tmp_path / "big").write_bytes(big)
    assert file_sha256(tmp_path / "big") == hashlib.sha256(big).hexdigest()


def test_writes_replace_the_file_and_make_its_folder(tmp_path: Path):
    path = tmp_path / "new" / "folder" / "a.json"
    assert write_json_atomic(path, {"k": [1, 2]}) == path
    assert json.loads(path.read_text()) == {"k": [1, 2]}
    write_text_atomic(path, "é\n")
    assert path.read_bytes() == "é\n".encode("utf-8")
    write_bytes_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]  # no temporary file left


def test_atomic_file_gives_a_sibling_and_renames_it_only_on_success(tmp_path: Path):
    path = tmp_path / "weights.npy"
    path.write_bytes(b"old")
    with atomic_file(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path and tmp.name.endswith(".npy")  # the suffix writers key on is kept
        np.save(tmp, np.arange(3))
        assert path.read_bytes() == b"old"  # not replaced until the body ends
    np.testing.assert_array_equal(np.load(path), [0, 1, 2])

    with pytest.raises(Crash), atomic_file(path) as tmp:
        tmp.write_bytes(b"half")
        raise Crash
    np.testing.assert_array_equal(np.load(path), [0, 1, 2])  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["weights.npy"]  # the temporary file is gone


def test_atomic_folder_replaces_the_whole_folder_or_nothing(tmp_path: Path):
    folder = tmp_path / "index"
    with atomic_folder(folder) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == tmp_path
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]

    with atomic_folder(folder) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in folder.iterdir()) == ["b.txt"]  # replaced, not merged

    with pytest.raises(Crash), atomic_folder(folder) as tmp:
        (tmp / "c.txt").write_text("3")
        raise Crash
    assert sorted(p.name for p in folder.iterdir()) == ["b.txt"] and (folder / "b.txt").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temporary or old folder left
