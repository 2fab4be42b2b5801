"""The soak CLI against a live app: it counts answers, reloads on schedule, samples memory and fails on a 5xx."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest
from werkzeug.serving import make_server

from benchmarks.soak import main, server_memory
from tests.serving.conftest import index_folder  # noqa: F401  (the served test index, a session fixture)


@pytest.fixture()
def live(index_folder, tmp_path):
    from serving import create_app

    app = create_app({"SHOWROOM_INDEX": str(index_folder), "TESTING": True, "SHOWROOM_RATE_LIMIT": "", "SHOWROOM_RELOAD_TOKEN": "s3cret"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    yield f"http://127.0.0.1:{server.server_port}", photo, app
    server.shutdown()
    thread.join()


def test_a_short_soak_with_a_reload_passes_and_reports(live, capsys):
    url, photo, app = live
    code = main(["--url", url, "--image", str(photo), "--token", "s3cret", "--clients", "2", "--minutes", "0.05",
                 "--reload-every", "1", "--rss-every", "1", "--pids", str(os.getpid())])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "5xx 0, failures (no answer) 0" in out and "p99" in out
    assert app.extensions["showroom"].served.generation >= 2  # the scheduled reload happened
    assert "reloads (s, status, generation): [(1, 200, 2)" in out
    assert out.count(" MB ") >= 2  # memory sampled every second


def test_a_5xx_fails_the_soak(live, capsys, monkeypatch):
    url, photo, app = live
    engine = app.extensions["showroom"].current.engine

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(engine), "search", broken)
    assert main(["--url", url, "--image", str(photo), "--clients", "1", "--minutes", "0.02"]) == 1
    assert "5xx " in capsys.readouterr().out


def test_server_memory_counts_a_process_and_its_children():
    size, count = server_memory([os.getpid()])
    assert size > 10 * 2 ** 20 and count >= 1
    assert server_memory([2 ** 22 + 12345]) == (0, 0)  # no such process
