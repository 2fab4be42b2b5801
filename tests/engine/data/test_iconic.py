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


def test_white_share_counts_the_border_strip_by_hand():
    image = np.full((10, 12, 3), 255, np.uint8)  # border 0.04 x 10 rounds to 0: a strip 1 px wide, 2 x 12 + 2 x 8 = 40 pixels
    image[0, :4] = (250, 250, 250)               # near white: still white
    image[9, :5] = (255, 220, 255)               # one channel under 225: not white (5 pixels)
    image[3:6, 0] = (255, 255, 228)              # every channel >= 225 but spread 27 > 25: not white (3 pixels)
    image[2:8, 2:10] = 0                         # the product, inside the strip: never counted
    assert IconicTest().white_share(image) == pytest.approx(32 / 40)
    assert IconicTest(max_spread=30).white_share(image) == pytest.approx(35 / 40)
