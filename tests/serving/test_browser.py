"""A real browser: headless Chromium at laptop and phone sizes uploads a photo, sees every object
labelled (the less sure one dashed, "Potted plant?"), picks one, taps where no box is, or draws a
box, lists the whole room ("Shop this room"), filters by type, opens a product page; a
sideways-stored phone JPEG (EXIF orientation 6) is shown upright and a box drawn on it is accepted."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from werkzeug.serving import make_server

from engine.data.catalog import load_catalog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DESKTOP = {"viewport": {"width": 1366, "height": 768}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
SETTLED = '#app[aria-busy="false"] #results .result'  # results shown, nothing in flight

pytestmark = pytest.mark.slow


@pytest.fixture()
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); .ci/run installs it")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def scene(tiny_catalog: Path) -> Path:
    return load_catalog(tiny_catalog).scenes[0].image


def open_page(browser, **context):
    """A fresh page; its console errors (CSP violations among them) are collected in ``page.errors``."""
    page = browser.new_context(**context).new_page()
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def upload(page, path: Path) -> dict:
    """Choose ``path`` in the photo picker; the room's answer once the first results are shown."""
    with page.expect_response("**/api/room") as detected:
        page.set_input_files("#file", str(path))
    page.wait_for_selector(SETTLED)
    return detected.value.json()


def image_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the pixel (x, y) given as fractions of the displayed photo."""
    b = page.locator("#canvas").bounding_box()
    return b["x"] + x * b["width"], b["y"] + y * b["height"]


def search_after(page, action) -> dict:
    with page.expect_response("**/api/search") as searched:
        action()
    response = searched.value
    assert response.status == 200, response.text()
    page.wait_for_selector(SETTLED)
    return response.json()


def no_console_errors(page):
    """Nothing failed in the page: no script error, no resource refused by the CSP, no missing file."""
    assert page.errors == []


def test_desktop_labels_pick_results_in_view_filter_and_product_page(browser, live_server: str, scene: Path, tmp_path: Path):
    page = open_page(browser, **DESKTOP)
    page.goto(live_server + "/")
    assert page.get_attribute("#file", "accept") == "image/*"
    assert page.get_attribute("#camera", "accept") == "image/*" and page.get_attribute("#camera", "capture") == "environment"

    detected = upload(page, scene)
    w, h = detected["width"], detected["height"]
    # The detected objects are labelled on the photo: dark chips with white text, inside the canvas.
    assert page.locator("#objects .object-chip").all_inner_texts() == ["Chair", "Couch", "Potted plant?"]
    assert page.locator("#objects .object-chip.unsure").count() == 1  # the fill-in: shown, marked less sure
    labels = json.loads(page.get_attribute("#canvas", "data-labels"))
    assert {lb["text"] for lb in labels} == {"Chair", "Couch", "Potted plant?"}
    box = page.locator("#canvas").bounding_box()
    for lb in labels:
        assert lb["x"] >= 0 and lb["y"] >= 0 and lb["x"] + lb["w"] <= box["width"] + 0.5 and lb["y"] + lb["h"] <= box["height"] + 0.5
        assert lb["h"] >= 16  # readable: at least 11 px text
        dark, white = page.evaluate("""(lb) => {
            const c = document.getElementById('canvas'), k = c.width / c.getBoundingClientRect().width;
            const d = c.getContext('2d').getImageData(lb.x * k, lb.y * k, lb.w * k, lb.h * k).data;
            let dark = 0, white = 0;
            for (let i = 0; i < d.length; i += 4) {
                const m = Math.max(d[i], d[i + 1], d[i + 2]), n = Math.min(d[i], d[i + 1], d[i + 2]);
                if (m < 60) dark++; else if (n > 225) white++;
            }
            return [dark / (d.length / 4), white];
        }""", lb)
        assert dark > 0.4 and white > 10, (lb, dark, white)
    # The most prominent object (the chair) is searched at once; clicking the couch searches the couch.
    assert "chair" in page.inner_text("#results-title")
    body = search_after(page, lambda: page.mouse.click(*image_point(page, 0.1, 0.12)))
    assert body["box"] == [0, 0, w // 3, h // 3]
    assert "couch" in page.inner_text("#results-title")
    cards = page.locator("#results .result")
    # a proposed object is searched within its product group (the tiny catalog holds 3 sofas); one click
    # searches the whole catalog instead, and another goes back
    assert body["in_group"] == "sofa" and cards.count() == 3 and "Sofa only" in page.inner_text("#results-meta")
    body = search_after(page, lambda: page.click("#results-meta .scope"))
    assert body["in_group"] is None and cards.count() == 12 and page.inner_text("#results-meta .scope") == "Only sofa"
    # On a laptop screen the first results are visible without scrolling.
    assert page.evaluate("window.scrollY") == 0
    first = cards.first.bounding_box()
    assert first["y"] >= 0 and first["y"] + first["height"] <= 768 and first["x"] + first["width"] <= 1366
    text = page.inner_text("#results")
    assert re.search(r"\b\d{1,3}% match\b", cards.first.inner_text()) and "d=" not in text
    page.screenshot(path=str(tmp_path / "desktop.png"))
    page.set_viewport_size({"width": 1280, "height": 800})  # the other common laptop screen
    page.wait_for_timeout(300)  # the photo is laid out again after a resize
    first = cards.first.bounding_box()
    assert first["y"] + first["height"] <= 800 and first["x"] + first["width"] <= 1280
    photo = page.locator("#canvas").bounding_box()
    assert photo["y"] + photo["height"] <= 800 and photo["x"] + photo["width"] <= first["x"]  # beside the results

    # The type filter: a searchable list of the catalog's types; choosing one narrows the results.
    page.fill("#type-input", "lam")
    assert page.locator("#type-options .combo-option").first.inner_text() == "Lamp"
    body = search_after(page, lambda: page.keyboard.press("Enter"))
    assert body["types"] == ["Lamp"]
    assert page.locator("#type-chips .chip").all_inner_texts()[0].startswith("Lamp")
    assert set(page.locator("#results .result .type").all_inner_texts()) == {"Lamp"} and cards.count() == 3
    search_after(page, lambda: page.click("#type-chips .chip"))
    assert cards.count() == 12

    # Shop this room: one tap lists every object with its closest products (no new request), each
    # object opens its own results.
    page.click("#room")
    assert page.get_attribute("#room", "aria-pressed") == "true" and page.inner_text("#results-title") == "In this room"
    sections = page.locator("#results .room-object")
    assert sections.count() == 3 and page.locator("#results .room-object.unsure").count() == 1
    # up to 4 matches each, searched within the object's group: the tiny catalog holds 3 products of a type
    assert [s.count() for s in (sections.nth(i).locator(".result") for i in range(3))] == [3, 3, 3]
    assert "less sure" in sections.nth(2).inner_text()
    # the list takes the results pane's whole width, not one cell of the product grid
    assert page.locator("#results .room-list").bounding_box()["width"] > 0.95 * page.locator("#results").bounding_box()["width"]
    page.screenshot(path=str(tmp_path / "desktop-room.png"))
    in_room = sections.nth(2).locator(".result .name").all_inner_texts()
    body = search_after(page, lambda: sections.nth(2).locator(".room-pick").click())
    # "See all" keeps to the object's group, as the room list did: its first results are the room row's
    assert "potted plant" in page.inner_text("#results-title") and body["in_group"] == "vase" and cards.count() == 3
    assert page.locator("#results .result .name").all_inner_texts()[:3] == in_room

    # A result opens its product page: the catalog's fields and the scenes it is used in.
    cards.first.click()
    page.wait_for_selector("#product-name")
    details = page.inner_text("#details")
    assert "Colour" in details and "Pattern" in details  # the tiny catalog's extra columns
    assert page.inner_text("#where-title") == "Where is it used?"
    titles = page.locator("#scenes .scene-title").all_inner_texts()
    assert titles and all(t and "__" not in t for t in titles)
    assert "Living room" in page.inner_text("#scenes") and "% match" in page.inner_text("#scenes")
    page.wait_for_selector("#scenes .scene-box", state="attached")  # the product's box drawn on its scene
    no_console_errors(page)

    # A browser asking for a missing page gets the styled error page.
    response = page.goto(live_server + "/products/no-such-product")
    assert response.status == 404 and page.inner_text(".error-code") == "404" and "no-such-product" in page.inner_text(".message")
    page.context.close()


def test_phone_take_or_choose_a_photo_tap_an_object_and_see_results(browser, live_server: str, scene: Path):
    page = open_page(browser, **PHONE)
    page.goto(live_server + "/")
    assert page.is_visible("#camera-button") and page.is_visible("#file-button")  # a phone offers the camera
    assert page.get_attribute("#camera", "capture") == "environment"
    fits = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(fits)
    detected = upload(page, scene)
    w, h = detected["width"], detected["height"]
    cards = page.locator("#results .result")
    assert cards.count() == 3  # the chair, searched within its group: the tiny catalog's 3 chairs
    a, b = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert a["y"] == b["y"] and a["width"] < 195  # two columns below the photo
    assert a["y"] > page.locator("#canvas").bounding_box()["y"]
    assert page.evaluate(fits)
    # A tap (touch, not mouse) on the couch searches it.
    body = search_after(page, lambda: page.touchscreen.tap(*image_point(page, 0.1, 0.12)))
    assert body["box"] == [0, 0, w // 3, h // 3]
    assert "% match" in cards.first.inner_text()
    # A tap where no object is outlined searches the region the engine proposes there.
    page.locator("#canvas").scroll_into_view_if_needed()  # the results scrolled into view on a phone
    body = search_after(page, lambda: page.touchscreen.tap(*image_point(page, 0.9, 0.9)))
    assert body["label"] == "" and body["box"][2] > 0.8 * w and body["box"][3] > 0.8 * h
    assert page.inner_text("#results-title") == "Products like your box" and cards.count() == 12
    # On a touch screen a box is drawn in "Draw a box" mode (otherwise a drag scrolls the page).
    page.click("#draw")
    assert page.get_attribute("#draw", "aria-pressed") == "true"
    cdp = page.context.new_cdp_session(page)
    (x0, y0), (x1, y1) = image_point(page, 0.5, 0.5), image_point(page, 0.95, 0.95)

    def drag():
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
        for t in (0.25, 0.5, 0.75, 1.0):
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x0 + t * (x1 - x0), "y": y0 + t * (y1 - y0)}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    body = search_after(page, drag)
    assert body["box"] == pytest.approx([0.5 * w, 0.5 * h, 0.95 * w, 0.95 * h], abs=4)
    assert page.get_attribute("#draw", "aria-pressed") == "false"
    # Without a photo at hand: one of the catalog's room photos.
    page.goto(page.url)
    with page.expect_response("**/api/room"):
        page.locator(".example").first.click()
    page.wait_for_selector(SETTLED)
    assert cards.count() == 3
    no_console_errors(page)
    page.context.close()


def test_rotated_phone_jpeg_is_upright_and_a_drawn_box_is_accepted(browser, live_server: str, scene: Path, tmp_path: Path):
    upright = Image.open(scene).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": what phones write for a portrait-held shot
    photo = tmp_path / "phone.jpg"
    upright.rotate(90, expand=True).save(photo, "JPEG", quality=95, exif=exif)  # pixels stored sideways
    stored = Image.open(photo)
    assert stored.size == (upright.height, upright.width) and ImageOps.exif_transpose(stored).size == upright.size

    page = open_page(browser, **PHONE)
    page.goto(live_server + "/")
    detected = upload(page, photo)
    assert (detected["width"], detected["height"]) == upright.size
    box = page.locator("#canvas").bounding_box()
    assert box["width"] / box["height"] == pytest.approx(upright.width / upright.height, rel=0.01)
    assert page.evaluate("(() => { const c = document.getElementById('canvas'); return c.width / c.height; })()") == \
        pytest.approx(upright.width / upright.height, rel=0.01)
    # The canvas shows the photo upright: inside the selected (undimmed) chair box it matches the
    # upright picture, not the sideways one.
    grid = 12
    shown = np.array(page.evaluate("""(n) => {
        const c = document.getElementById('canvas'), ctx = c.getContext('2d'), out = [];
        for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) {
            const x = c.width * (0.3 + 0.4 * (i + 0.5) / n), y = c.height * (0.3 + 0.4 * (j + 0.5) / n);
            const d = ctx.getImageData(x - 2, y - 2, 4, 4).data;
            let s = 0; for (let k = 0; k < d.length; k += 4) s += d[k] + d[k + 1] + d[k + 2];
            out.push(s / (d.length / 4 * 3));
        }
        return out; }""", grid), dtype=float)

    def expected(img: Image.Image) -> np.ndarray:
        g = np.asarray(img.convert("L").resize(upright.size), dtype=float)
        H, W = g.shape
        return np.array([g[int(H * (0.3 + 0.4 * (j + 0.5) / grid)), int(W * (0.3 + 0.4 * (i + 0.5) / grid))]
                         for j in range(grid) for i in range(grid)])

    right = np.corrcoef(shown, expected(upright))[0, 1]
    sideways = np.corrcoef(shown, expected(Image.open(photo)))[0, 1]  # stored pixels, ignoring EXIF
    assert right > 0.8 and right > sideways + 0.2, (right, sideways)

    # A box dragged with the mouse on the displayed photo is in the server's (upright) pixels.
    page.mouse.move(*image_point(page, 0.55, 0.5))
    page.mouse.down()
    page.mouse.move(*image_point(page, 0.9, 0.9), steps=6)
    body = search_after(page, page.mouse.up)
    x1, y1, x2, y2 = body["box"]
    W, H = upright.size
    assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
    assert (x1, y1, x2, y2) == pytest.approx((0.55 * W, 0.5 * H, 0.9 * W, 0.9 * H), abs=4)
    assert page.inner_text("#results-title") == "Products like your box"
    assert page.locator("#results .result").count() == 12
    no_console_errors(page)
    page.context.close()


def test_a_catalog_without_the_product_says_no_close_match_at_both_sizes(browser, index_folder: Path, scene: Path, tmp_path: Path):
    """A generation whose calibrator finds no result close enough (threshold 1): the search says so above
    the results, which are marked similar, and the room list tags every object."""
    from engine.calibration import FILE, MatchCalibrator
    from engine.model.embedder import model_fingerprint
    from serving import create_app
    from tests.serving.conftest import BoxDetector

    folder = tmp_path / "calibrated"
    shutil.copytree(index_folder, folder)
    MatchCalibrator((3.0, -4.0, 0.0), 1.0, model_fingerprint(folder / "model.keras")).save(folder / FILE)
    app = create_app({"SHOWROOM_INDEX": str(folder), "SHOWROOM_DETECTOR": BoxDetector(), "TESTING": True, "SHOWROOM_RATE_LIMIT": ""})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for context in (DESKTOP, PHONE):
            page = open_page(browser, **context)
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            room = upload(page, scene)
            assert all(o["close_match"] is False for o in room["objects"])
            page.wait_for_selector("#results .notice.no-match")
            assert page.inner_text("#results-title") == "No close match in the catalog"
            assert "don't seem to carry" in page.inner_text("#results .notice.no-match")
            badges = page.locator("#results .result .match").all_inner_texts()
            assert badges and set(badges) == {"Similar"}
            page.click("#room")
            page.wait_for_selector("#results .room-object")
            assert page.locator("#results .room-object .no-close").count() == len([o for o in room["objects"] if o["results"]])
            no_console_errors(page)
    finally:
        server.shutdown()
        thread.join()


def test_choosing_a_file_that_is_not_a_photo_says_so_where_it_is_seen(browser, live_server: str, tmp_path: Path):
    page = open_page(browser, **PHONE)
    page.goto(live_server)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.set_input_files("#file", str(notes))
    message = page.locator("#results .notice.error")
    message.wait_for(state="visible", timeout=10_000)
    assert "notes.txt" in message.inner_text() and "not a photo" in message.inner_text()
    assert page.locator("#drop").is_visible()  # still on the landing page, ready for another file
    no_console_errors(page)
