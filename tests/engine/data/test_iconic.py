"""White-background test on made-up images."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.iconic import IconicTest


def product_on_white(touch_border: bool = False) -> np.ndarray:
    img = np.full((200, 160, 3), 252, np.uint8)
    img[30:170, 40:120] = (120, 60, 30)  # a brown product in the middle
    if touch_border:
        img[:, 40:120] = (120, 60, 30)  # a tall product touching top and bottom edges
    return img


def room() -> np.ndarray:
    img = np.empty((200, 300, 3), np.uint8)
    img[:120] = (200, 190, 170)  # beige wall
    img[120:] = (110, 80, 50)  # wooden floor
    img[20:70, 30:90] = (250, 250, 250)  # a white window
    return img


def test_iconic_vs_lifestyle():
    t = IconicTest()
    assert t.is_iconic(product_on_white())
    assert t.white_share(product_on_white()) == pytest.approx(1.0)
    assert not t.is_iconic(room())
    assert t.is_iconic(product_on_white(touch_border=True))  # most of the border is still white


def test_tinted_or_noisy_white_and_threshold():
    rng = np.random.default_rng(0)
    noisy = np.clip(product_on_white().astype(int) + rng.integers(-4, 5, (200, 160, 3)), 0, 255).astype(np.uint8)
    assert IconicTest().is_iconic(noisy)
    grey = np.full((100, 100, 3), 200, np.uint8)  # a grey studio backdrop is not white
    assert not IconicTest().is_iconic(grey)
    assert IconicTest(white_level=190).is_iconic(grey)
    pastel = np.full((100, 100, 3), (255, 230, 200), np.uint8)  # saturated: a wall, not a backdrop
    assert not IconicTest().is_iconic(pastel)


def test_config_validation():
    with pytest.raises(ValueError):
        IconicTest(border=0)
    with pytest.raises(ValueError):
        IconicTest(min_white_share=1.5)
