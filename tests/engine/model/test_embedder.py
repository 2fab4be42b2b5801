"""The read-ahead stream that feeds decoded images to the model."""

from __future__ import annotations

import threading
import time

import pytest

from engine.model.embedder import read_ahead


def test_read_ahead_keeps_order_and_runs_on_another_thread():
    producers: set[int] = set()

    def items():
        for i in range(500):
            producers.add(threading.get_ident())
            yield i

    assert list(read_ahead(items(), depth=7)) == list(range(500))
    assert producers and threading.get_ident() not in producers
    assert list(read_ahead(iter(()))) == []


def test_read_ahead_raises_the_producers_error_after_the_items_before_it():
    def items():
        yield from range(3)
        raise ValueError("photo 3 is damaged")

    got = []
    with pytest.raises(ValueError, match="photo 3 is damaged"):
        for x in read_ahead(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2]


def test_read_ahead_stops_its_producer_when_the_consumer_stops():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    stream = read_ahead(items(), depth=4)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # joins the producer
    n = len(produced)
    time.sleep(0.05)
    assert len(produced) == n < 10  # at most depth ahead, and nothing after the close
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_saved_preprocessing_keeps_its_catalog_decode_and_older_files_read_full(tmp_path):
    import json
    import zipfile

    from engine.config import ModelConfig, Preprocessing
    from engine.model.embedder import PREPROCESSING_MEMBER, load_preprocessing, save_embedder
    from engine.model.network import build_embedder

    model = build_embedder(ModelConfig(weights="none", image_size=64, embedding_dim=32))
    new = save_embedder(model, tmp_path / "new.keras", Preprocessing(image_size=64))
    assert load_preprocessing(new).catalog_decode == "reduced"  # what training with today's code saw
    assert load_preprocessing(save_embedder(model, tmp_path / "f.keras", Preprocessing(image_size=64, catalog_decode="full"))).catalog_decode == "full"

    old = tmp_path / "old.keras"  # a model saved before the field existed was trained on full decodes
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == PREPROCESSING_MEMBER:
                record = json.loads(data)
                del record["preprocessing"]["catalog_decode"]
                data = json.dumps(record).encode()
            dst.writestr(info, data)
    assert load_preprocessing(old) == Preprocessing(image_size=64, catalog_decode="full")
    with pytest.raises(ValueError, match="catalog_decode"):
        Preprocessing(catalog_decode="fast")
