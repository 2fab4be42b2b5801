"""A real browser: headless Chromium loads the page, uploads a photo, clicks a detected box, sees results."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from engine.catalog import load_catalog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.mark.slow
def test_upload_pick_a_box_and_see_results(live_server: str, tiny_catalog: Path, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); .ci/run installs it")
    scene = load_catalog(tiny_catalog).scenes[0].image
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(live_server + "/")
            page.set_input_files("#file", str(scene))
            page.wait_for_selector("#stage:not([hidden])")
            page.wait_for_function("document.getElementById('status').textContent.includes('objects found')")
            # Click the middle of the first detected box (the fake detector's chair box).
            box = page.locator("#canvas").bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector("#results .result")
            cards = page.locator("#results .result")
            assert cards.count() == 12
            assert "d=" in cards.first.inner_text()
            page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
            # A result links to its product page, which lists the scenes it is used in.
            cards.first.click()
            page.wait_for_selector("#scenes .card")
            assert "Where is it used?" in page.content()
        finally:
            browser.close()
    assert (tmp_path / "results.png").stat().st_size > 10_000
