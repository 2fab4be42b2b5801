"""``decode_ahead``: results in order, at most ``ahead`` in flight, errors raised where they belong."""

from __future__ import annotations

import threading

import pytest

from engine.embed import decode_ahead


def test_order_and_bounded_lookahead():
    started, lock = [], threading.Lock()

    def load(i: int) -> int:
        with lock:
            started.append(i)
        return i * i

    stream = decode_ahead(load, range(100), workers=2, ahead=5)
    assert next(stream) == 0
    assert max(started) <= 5  # only `ahead` items (and the one replacing the consumed) were started
    assert list(stream) == [i * i for i in range(1, 100)]


def test_an_error_surfaces_at_its_item():
    def load(i: int) -> int:
        if i == 3:
            raise ValueError("bad photo 3")
        return i

    stream = decode_ahead(load, range(10), ahead=4)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad photo 3"):
        next(stream)
